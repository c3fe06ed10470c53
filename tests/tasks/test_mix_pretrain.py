"""Pre-training QCNet on a weighted mixture of AV1, AV2 and WOMD caches: each dataset with its own view length,
batches that mix datasets, per-dataset SSL losses in the logs; and the per-query window logic of TRL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av1 import Av1Converter
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.data.converters.womd import WomdConverter
from smartpretrain.data.sampler import MixtureSampler
from smartpretrain.data.sources import data_sources, mixture_spec
from smartpretrain.data.synthetic import generate_av1, generate_av2
from smartpretrain.data.tfrecord import write_records
from smartpretrain.runs.pretraining import build_datamodule, build_task, run
from smartpretrain.ssl.objective import ONLINE_A
from smartpretrain.ssl.trl import TrajectoryReconstructionLoss
from tests.conftest import REPO
from tests.data import womd_builders as wb
from tests.ssl.inputs import query_inputs


def _cfg(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(config_name="pretrain", overrides=overrides)


@pytest.fixture(scope="module")
def mix_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    cache = tmp_path_factory.mktemp("cache")
    settings = ConversionSettings(progress=False)
    generate_av1(raw / "av1", "train", 6, seed=0)
    generate_av1(raw / "av1", "val", 2, seed=0, start_index=100)
    generate_av2(raw / "av2", "train", 3, seed=1)
    generate_av2(raw / "av2", "val", 2, seed=1, start_index=100)
    for split, count, first in (("training", 4, 0), ("validation", 2, 50)):
        protos = [wb.make_scenario(f"womd-{first + i}", num_tracks=5, seed=first + i) for i in range(count)]
        (raw / "womd" / split).mkdir(parents=True)
        records = [p.SerializeToString() for p in protos]
        write_records(raw / "womd" / split / f"{split}.tfrecord-00000-of-00001", records)
    for split in ("train", "val"):
        for converter, name in (
            (Av1Converter(raw / "av1", split, num_steps=50, current_step=19), "av1"),
            (Av2Converter(raw / "av2", split), "av2"),
            (WomdConverter(raw / "womd", split), "womd"),
        ):
            manifest = convert_split(converter, cache / name / split, settings)
            assert manifest["num_dropped"] == 0, manifest["dropped"]
    return cache


def _mix_overrides(cache: Path) -> list[str]:
    return [
        "experiment=smartpretrain_cpu_small", "data=mix_av1_av2_womd", f"cache_root={cache}", "num_workers=0",
        "+trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
    ]  # fmt: skip


def test_mix_config_sources_and_weights(mix_cache: Path) -> None:
    cfg = _cfg(_mix_overrides(mix_cache))
    sources = data_sources(cfg, "train")
    assert [(s.name, s.view_window, s.path) for s in sources] == [
        ("av1", 20, mix_cache / "av1" / "train"),
        ("av2", 50, mix_cache / "av2" / "train"),
        ("womd", 40, mix_cache / "womd" / "train"),
    ]
    assert mixture_spec(cfg, sources).weights is None  # by scene count
    given = _cfg([*_mix_overrides(mix_cache), "data.components.av1.weight=1", "data.components.av2.weight=0",
                  "data.components.womd.weight=3"])  # fmt: skip
    sources = data_sources(given, "train")
    assert [s.name for s in sources] == ["av1", "womd"] and mixture_spec(given, sources).weights == [1.0, 3.0]
    half = _cfg([*_mix_overrides(mix_cache), "data.components.av1.weight=1"])
    with pytest.raises(ValueError, match="every component a weight or none"):
        mixture_spec(half, data_sources(half, "train"))


def test_mix_datamodule_batches_mix_datasets_and_view_lengths(mix_cache: Path) -> None:
    cfg = _cfg([*_mix_overrides(mix_cache), "batch_size=13"])
    task = build_task(cfg)
    assert task.window == 50 and task.sources == ["av1", "av2", "womd"]
    dm = build_datamodule(cfg, task.backbone)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, MixtureSampler) and not dm.use_distributed_sampler
    batch = next(iter(loader))
    assert sorted(set(batch.datasets)) == ["av1", "av2", "womd"]
    windows = {d: int(w) for d, w in zip(batch.datasets, batch.window, strict=True)}
    assert windows == {"av1": 20, "av2": 50, "womd": 40}
    assert batch.target.shape[1] == 50
    av1_queries = torch.tensor([batch.datasets[s] == "av1" for s in batch.query_scene.tolist()])
    assert not batch.target_valid[av1_queries, 20:].any()  # padding after a 20-step view is never a target
    out = task.losses(batch, "train")
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    sums = task._source_sums[("train", "tcl")]
    assert (sums[:, 1] > 0).all()  # every dataset contributed queries


def test_mix_pretrain_end_to_end_logs_per_dataset_losses(mix_cache: Path, tmp_path: Path) -> None:
    cfg = _cfg([*_mix_overrides(mix_cache), "max_epochs=1", "batch_size=4"])
    out = tmp_path / "pretrain"
    run(cfg, out)
    (log,) = (out / "logs").glob("version_*/metrics.csv")
    with log.open() as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0])
    for stage in ("train", "val"):
        for objective in ("tcl", "trl"):
            for source in ("av1", "av2", "womd"):
                name = f"{stage}_{objective}/{source}"
                assert name in columns, name
                values = [float(r[name]) for r in rows if r.get(name)]
                assert values and all(v == v and v >= 0 for v in values), name
    assert (out / "checkpoints" / "last.ckpt").is_file()


def test_trl_per_query_windows_match_separate_heads() -> None:
    """A mixed batch gives each query exactly the loss terms it gets in a batch of its own window length."""
    torch.manual_seed(0)
    trl = TrajectoryReconstructionLoss(dim=8, hidden_dim=16, window=10, chunk_fractions=[0.2, 0.4, 0.4])
    p, q_steps = 6, 3
    windows = torch.tensor([10, 10, 10, 6, 6, 6])
    target = torch.randn(p, 10, 2)
    valid = torch.arange(10)[None, :] < windows[:, None]
    inputs = query_inputs(
        {ONLINE_A: torch.randn(p, q_steps, 8)}, full_b=torch.ones(p, dtype=torch.bool),
        start_a=torch.zeros(p, dtype=torch.long), start_b=torch.full((p,), 12), window=10,
        target=target * valid[..., None], target_valid=valid, query_window=windows,
    )  # fmt: skip
    pred = trl.predict(inputs)
    torch.testing.assert_close(pred[3:, 6:], pred[3:, 5:6].expand(-1, 4, -1))  # no displacement after 6 steps
    # a 6-step query: chunks (0.2, 0.4, 0.4) of 6 steps -> bounds [0, round(1.2), round(3.6), 6] = [0, 1, 4, 6]
    z_a, start_a = inputs.encoding(ONLINE_A), inputs.queries.start_a
    disp = trl.head(torch.cat([z_a, trl.offset_embedding(start_a)[:, None].expand(-1, 3, -1)], -1))
    disp = disp.view(p, q_steps, 10, 2)
    src = [0] * 1 + [1] * 3 + [2] * 2
    manual = torch.cumsum(torch.stack([disp[3, src[t], t] for t in range(6)]), 0)
    torch.testing.assert_close(pred[3, :6], manual)
    src10 = [0] * 2 + [1] * 4 + [2] * 4
    manual10 = torch.cumsum(torch.stack([disp[0, src10[t], t] for t in range(10)]), 0)
    torch.testing.assert_close(pred[0], manual10)
    per_query = trl.compute(inputs).per_query
    assert torch.isfinite(per_query).all()


def test_womd_pretraining_sees_whole_views() -> None:
    cfg = _cfg(["experiment=smartpretrain_cpu_small", "data=womd", "ssl.objectives.trl.chunk_fractions=null"])
    assert cfg.data.num_historical_steps == 11 and cfg.ssl.window == cfg.data.view_window == 40
    assert cfg.model.num_recurrent_steps == 4 and cfg.model.num_future_steps == 80
    backbone = build_task(cfg).backbone
    assert backbone.make_adapter().num_historical_steps == 40  # fine-tuning keeps 11 (cfg.model)
    with pytest.raises(ValueError, match="3 chunk fractions for 4 query steps"):
        from smartpretrain.ssl.trl import chunk_bounds

        chunk_bounds(40, 4, [0.2, 0.4, 0.4])


def test_finetune_on_a_mixture(mix_cache: Path, tmp_path: Path) -> None:
    from smartpretrain.runs.finetuning import run as finetune

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[
                "data=mix_av1_av2_womd", "model=qcnet_small", f"cache_root={mix_cache}", "num_workers=0",
                "max_epochs=1", "batch_size=4", "data.components.womd.weight=2", "data.components.av1.weight=1",
                "data.components.av2.weight=1", "+trainer.enable_progress_bar=false",
            ],
        )  # fmt: skip
    metrics = finetune(cfg, tmp_path / "finetune")
    assert metrics["val_minFDE_6"] == metrics["val_minFDE_6"]  # finite (not NaN)
    assert (tmp_path / "finetune" / "checkpoints" / "last.ckpt").is_file()
