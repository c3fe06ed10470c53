"""``python -m smartpretrain.embed`` (``embed.sh``) on the synthetic AV1 cache: the file, its run records, weights
from a forecasting or an SSL checkpoint (either branch), and the refusals before any work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from smartpretrain.backbones.base import Backbone
from smartpretrain.data.cache import SceneCache
from smartpretrain.embeddings.extract import ExtractSettings, cache_fingerprint, iter_cache_embeddings
from smartpretrain.embeddings.records import CacheSplit, EmbeddingRecords, read_embeddings
from smartpretrain.io.checkpoint_sources import sha256_file
from smartpretrain.runs.embedding import EmbedError, embed
from smartpretrain.runs.guards import RunConfigError
from smartpretrain.runs.trainer import build_backbone
from tests.conftest import REPO

#: a Forecast-MAE small enough for a few seconds on a CPU
TINY_MAE = ["model=forecast_mae", "model.embed_dim=16", "model.encoder_depth=1", "model.num_heads=2"]


def _cfg(cache_root: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(
            config_name="embed",
            overrides=["data=av1", f"cache_root={cache_root}", "num_workers=0", "batch_size=2", *overrides],
        )


def _vectors(backbone: Backbone, split: Path) -> np.ndarray:
    parts = iter_cache_embeddings(backbone, split, ExtractSettings(batch_size=2), progress=False)
    return EmbeddingRecords.concat(list(parts), backbone.embedding_dim).vector


def test_writes_the_file_config_and_seed(av1_cache: Path, tmp_path: Path) -> None:
    written = embed(_cfg(av1_cache, *TINY_MAE), tmp_path)
    split = av1_cache / "av1" / "val"
    assert written.path == tmp_path / "embeddings.parquet"
    assert (tmp_path / "config.yaml").is_file() and (tmp_path / "seed.json").read_text() == '{"seed": 2023}'
    got = read_embeddings(
        written.path,
        expected={
            "model": "smartpretrain.backbones.forecast_mae.model.ForecastMAE", "embedding_dim": 16,
            "agents": "focal", "reduction": "last",
        },
    )  # fmt: skip
    cache = SceneCache(split)
    assert got.records.scenario_id == cache.ids() and written.num_records == len(cache)
    assert got.records.track_id == [s.agents.ids[s.focal_index] for s in cache]
    assert set(got.records.dataset) == {"av1"} and set(got.records.step.tolist()) == {19}
    meta = got.metadata
    assert (meta.checkpoint, meta.checkpoint_sha256, meta.branch, meta.seed) == (None, None, None, 2023)
    assert meta.model_config["embed_dim"] == 16 and meta.num_scenes == len(cache)
    assert meta.single_cache() == CacheSplit(str(split.resolve()), cache_fingerprint(split), len(cache))
    # no checkpoint: the model as seeded, so the same seed gives the same vectors
    again = embed(_cfg(av1_cache, *TINY_MAE, f"output={tmp_path / 'again.parquet'}"), tmp_path / "again")
    np.testing.assert_array_equal(read_embeddings(again.path).records.vector, got.records.vector)


def test_weights_from_a_forecasting_checkpoint(av1_cache: Path, tmp_path: Path) -> None:
    torch.manual_seed(5)
    trained = build_backbone(_cfg(av1_cache, *TINY_MAE))
    ckpt = tmp_path / "model.ckpt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in trained.state_dict().items()}}, ckpt)
    written = embed(_cfg(av1_cache, *TINY_MAE, f"ckpt_path={ckpt}", "agents=all"), tmp_path / "run")
    meta = read_embeddings(written.path).metadata
    assert meta.checkpoint == str(ckpt) and meta.checkpoint_sha256 == sha256_file(ckpt) and meta.branch is None
    got = read_embeddings(written.path, expected={"checkpoint_sha256": sha256_file(ckpt)}).records
    settings = ExtractSettings(agents="all", batch_size=2)
    direct = EmbeddingRecords.concat(
        list(iter_cache_embeddings(trained, av1_cache / "av1" / "val", settings, False)), 16
    )
    np.testing.assert_array_equal(got.vector, direct.vector)
    assert got.track_id == direct.track_id


@pytest.mark.parametrize("branch", ["online", "momentum"])
def test_weights_from_either_branch_of_an_ssl_checkpoint(av1_cache: Path, tmp_path: Path, branch: str) -> None:
    models = {}
    for name, seed in (("online", 1), ("momentum", 2)):
        torch.manual_seed(seed)
        models[name] = build_backbone(_cfg(av1_cache, *TINY_MAE))
    state = {f"branch.backbone.{k}": v for k, v in models["online"].state_dict().items()}
    state |= {f"momentum_branch.backbone.{k}": v for k, v in models["momentum"].state_dict().items()}
    state["branch.projector.0.weight"] = torch.zeros(2, 16)  # SSL heads are not part of the backbone
    ckpt = tmp_path / "ssl.ckpt"
    torch.save({"state_dict": state}, ckpt)
    written = embed(
        _cfg(av1_cache, *TINY_MAE, f"pretrained_ckpt={ckpt}", f"pretrained_branch={branch}"), tmp_path / branch
    )
    got = read_embeddings(written.path, expected={"branch": branch, "checkpoint_sha256": sha256_file(ckpt)})
    np.testing.assert_array_equal(got.records.vector, _vectors(models[branch], av1_cache / "av1" / "val"))


def test_qcnet_as_its_ssl_branch_was_built(av1_cache: Path) -> None:
    """The documented overrides give QCNet's single-mode propose stack: vectors of ``hidden_dim``."""
    cfg = _cfg(av1_cache, "model=qcnet_small", "model.num_modes=1", "+model.propose_stack_only=true")
    backbone = build_backbone(cfg)
    assert backbone.embedding_dim == cfg.model.hidden_dim
    assert not [k for k in backbone.state_dict() if "refine" in k]  # the propose stack only


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        (["agents=everyone"], EmbedError, "agents='everyone' is not one of: focal, scored, all"),
        (["reduction=first"], EmbedError, "reduction='first' is not one of: last, mean"),
        (["limit_scenes=0"], EmbedError, "limit_scenes must be >= 1"),
        (["ckpt_path=a.ckpt", "pretrained_ckpt=b.ckpt"], EmbedError, "both ckpt_path and pretrained_ckpt are set"),
        (["split=nope"], RunConfigError, "not a converted cache split"),
        (["model=constant_velocity"], EmbedError, "ConstantVelocity: .*has no agent embeddings"),
    ],
)
def test_refused_before_any_work(av1_cache: Path, tmp_path: Path, overrides, error, message) -> None:
    with pytest.raises(error, match=message):
        model = [] if any(o.startswith("model=") for o in overrides) else TINY_MAE
        embed(_cfg(av1_cache, *model, *overrides), tmp_path)
    assert not (tmp_path / "embeddings.parquet").exists()


def test_embed_sh_reports_one_line_and_exit_status_2(av1_cache: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        ["bash", str(REPO / "embed.sh"), "data=av1", f"cache_root={av1_cache}", "agents=everyone",
         f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines == ["smartpretrain.embed: error: agents='everyone' is not one of: focal, scored, all"]
