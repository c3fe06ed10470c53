"""The batch loop over a cache: ids equal the cache's, vectors equal the backbone's own, runs are reproducible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from smartpretrain.backbones.base import Backbone
from smartpretrain.data.cache import SceneCache
from smartpretrain.embeddings.extract import (
    ExtractSettings,
    WeightsProvenance,
    cache_fingerprint,
    embed_cache,
    iter_cache_embeddings,
    model_name,
)
from smartpretrain.embeddings.records import (
    AgentSelection,
    CacheSplit,
    EmbeddingRecords,
    QueryReduction,
    read_embeddings,
    role_name,
)
from tests.embeddings.conftest import NUM_SCENES, make_backbone
from tests.helpers import TINY_AGENT_IDS


def _all(backbone: Backbone, split: Path, **settings) -> EmbeddingRecords:
    parts = list(iter_cache_embeddings(backbone, split, ExtractSettings(**settings), progress=False))
    return EmbeddingRecords.concat(parts, backbone.embedding_dim)


def _direct(backbone: Backbone, split: Path, batch_size: int) -> list[torch.Tensor]:
    """``agent_embeddings(encode(batch))`` of the cache's scenes, collated by hand in the same batches."""
    cache, adapter = SceneCache(split), backbone.make_adapter()
    backbone.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(cache), batch_size):
            batch = adapter.collate([adapter(cache[i]) for i in range(start, min(start + batch_size, len(cache)))])
            out.append(backbone.agent_embeddings(batch, backbone.encode(batch)).embeddings)
    return out


def test_ids_are_the_caches_scenario_and_track_ids(backbone: Backbone, tiny_split: Path) -> None:
    records = _all(backbone, tiny_split, agents="all", batch_size=2)
    cache = SceneCache(tiny_split)
    # the tiny scenes' agents (focal, AV, ped): QCNet embeds all three (the pedestrian is observed in the
    # history), Forecast-MAE the two observed at the present
    tracks = TINY_AGENT_IDS if type(backbone).__name__ == "QCNet" else TINY_AGENT_IDS[:2]
    expected = [(sid, t) for sid in cache.ids() for t in tracks]
    assert list(zip(records.scenario_id, records.track_id, strict=True)) == expected
    for sid, tid, dataset, role, step in zip(
        records.scenario_id, records.track_id, records.dataset, records.role, records.step, strict=True
    ):
        scene = cache.get(sid)
        i = scene.agents.ids.index(tid)
        assert (dataset, role, int(step)) == (str(scene.dataset), role_name(scene.agents.role[i]), scene.current_step)
    assert set(records.role) == ({"focal", "unscored", "fragment"} if len(tracks) == 3 else {"focal", "unscored"})


def test_focal_and_scored_selection(backbone: Backbone, tiny_split: Path) -> None:
    focal = _all(backbone, tiny_split, agents="focal", batch_size=3)
    assert focal.scenario_id == SceneCache(tiny_split).ids() and set(focal.track_id) == {"focal"}
    assert set(focal.role) == {"focal"}
    scored = _all(backbone, tiny_split, agents="scored", batch_size=3)  # the tiny scenes have no SCORED agent
    np.testing.assert_array_equal(scored.vector, focal.vector)


def test_vectors_are_the_backbones_own(backbone: Backbone, tiny_split: Path) -> None:
    direct = torch.cat(_direct(backbone, tiny_split, batch_size=2))
    last = _all(backbone, tiny_split, agents="all", batch_size=2)
    np.testing.assert_array_equal(last.vector, direct[:, -1].numpy())
    mean = _all(backbone, tiny_split, agents="all", batch_size=2, reduction="mean")
    np.testing.assert_allclose(mean.vector, direct.mean(dim=1).numpy(), rtol=0, atol=0)
    assert last.dim == backbone.embedding_dim


def test_qcnet_query_steps_are_reduced_as_asked(tiny_split: Path) -> None:
    qcnet = make_backbone("qcnet")
    direct = torch.cat(_direct(qcnet, tiny_split, batch_size=5))
    assert direct.shape[1] == 2  # two propose recurrences: last and mean differ
    last = _all(qcnet, tiny_split, agents="all", batch_size=5, reduction=QueryReduction.LAST)
    mean = _all(qcnet, tiny_split, agents="all", batch_size=5, reduction=QueryReduction.MEAN)
    assert not np.allclose(last.vector, mean.vector)
    np.testing.assert_array_equal(last.vector, direct[:, 1].numpy())


def test_reproducible_with_workers_and_the_mode_is_restored(backbone: Backbone, tiny_split: Path) -> None:
    backbone.train()
    first = _all(backbone, tiny_split, agents="all", batch_size=2)
    assert backbone.training  # eval only while embedding
    again = _all(backbone, tiny_split, agents="all", batch_size=2, num_workers=1)  # across the worker hand-over
    np.testing.assert_array_equal(first.vector, again.vector)
    assert (first.scenario_id, first.track_id) == (again.scenario_id, again.track_id)


def test_embed_cache_writes_the_file_with_its_metadata(backbone: Backbone, tiny_split: Path, tmp_path: Path) -> None:
    settings = ExtractSettings(agents=AgentSelection.ALL, batch_size=2, limit_scenes=3)
    weights = WeightsProvenance(model_config={"tiny": True}, checkpoint="x.ckpt", checkpoint_sha256="c" * 64, seed=3)
    written = embed_cache(backbone, tiny_split, tmp_path / "e.parquet", settings, weights, progress=False)
    got = read_embeddings(
        written.path,
        expected={
            "model": model_name(backbone), "embedding_dim": backbone.embedding_dim,
            "caches": (CacheSplit(str(tiny_split.resolve()), cache_fingerprint(tiny_split), 3),),
            "agents": "all", "checkpoint_sha256": "c" * 64,
        },
    )  # fmt: skip
    assert got.metadata == written.metadata and written.num_records == len(got.records)
    assert got.metadata.num_scenes == 3 and got.metadata.single_cache().path == str(tiny_split.resolve())
    assert got.metadata.model_config == {"tiny": True} and got.metadata.seed == 3
    assert got.records.scenario_id[-1] == SceneCache(tiny_split).ids()[2]
    np.testing.assert_array_equal(
        got.records.vector, _all(backbone, tiny_split, agents="all", batch_size=2, limit_scenes=3).vector
    )


def test_cache_fingerprint_follows_the_scenes(tiny_split: Path, tmp_path: Path) -> None:
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from tests.helpers import TinyConverter

    other = tmp_path / "synthetic" / "val"
    convert_split(TinyConverter(NUM_SCENES - 1), other, ConversionSettings(progress=False))
    assert cache_fingerprint(other) != cache_fingerprint(tiny_split)
    assert len(cache_fingerprint(tiny_split)) == 64


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        ExtractSettings(batch_size=0)
    with pytest.raises(ValueError, match="limit_scenes must be >= 1"):
        ExtractSettings(limit_scenes=0)
    with pytest.raises(ValueError, match="'first' is not a valid QueryReduction"):
        ExtractSettings(reduction="first")
