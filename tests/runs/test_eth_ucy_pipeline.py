"""ETH/UCY end to end on generated recordings: both backbones pre-train (TCL + TRL, MAE, the control-centric
objectives on the 0.4 s timeline), fine-tune with 20 modes and report the pedestrian metrics on a fold's held-out
scene; the constant-velocity baseline extrapolates the last 0.4 s."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smartpretrain.config import compose_config
from smartpretrain.data.cache import SceneCache
from smartpretrain.data.formats import eth_ucy as fmt
from smartpretrain.data.taxonomy import AgentRole
from smartpretrain.runs import conversion
from smartpretrain.runs.pipeline import ArmSpec, EvaluateSpec, FinetuneSpec, PretrainSpec, run_pipeline
from tests.runs.test_guards import QUIET


def write_recordings(root: Path, seed: int = 0, num_slots: int = 120, num_pedestrians: int = 16) -> Path:
    """Every recording of the release, each with pedestrians walking straight lines at 0.8-1.6 m/s, entering at
    random slots and staying 20-40 slots (so windows have complete and partial tracks)."""
    rng = np.random.default_rng(seed)
    for stem in fmt.RECORDINGS:
        frames, ids, xy = [], [], []
        for ped in range(1, num_pedestrians + 1):
            first, length = int(rng.integers(0, num_slots - 20)), int(rng.integers(20, 41))
            slots = np.arange(first, min(first + length, num_slots))
            start, angle, speed = rng.uniform(-8, 8, 2), rng.uniform(-np.pi, np.pi), rng.uniform(0.8, 1.6)
            step = fmt.DT * speed * np.array([np.cos(angle), np.sin(angle)])
            frames.append(slots * fmt.FRAME_STEP)
            ids.append(np.full(len(slots), ped))
            xy.append(start + (slots - first)[:, None] * step + rng.normal(0, 0.02, (len(slots), 2)))
        annotations = fmt.Annotations(np.concatenate(frames), np.concatenate(ids), np.concatenate(xy))
        fmt.write_annotations(root / f"{stem}{fmt.FILE_SUFFIX}", annotations)
    return root


@pytest.fixture(scope="module")
def eth_ucy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("eth_ucy")
    raw = write_recordings(root / "raw")
    cache = root / "cache"
    for part in fmt.PARTS:
        overrides = ["data=eth_ucy", f"data.raw_root={raw}", f"data.split=zara1_{part}", f"cache_root={cache}"]
        cfg = compose_config("convert", [*overrides, "progress=false", f"hydra.run.dir={root}/h"])
        assert conversion.run(cfg)["num_scenes"] > 0
    return cache


@pytest.mark.parametrize(
    ("model", "experiment", "objectives"),
    [
        ("qcnet_small", "control_cpu_small", ["ssl.objectives.tcl.weight=1", "ssl.objectives.trl.weight=1"]),
        pytest.param(
            "forecast_mae",
            "smartpretrain_forecast_mae_cpu_small",
            ["ssl.objectives.mae.weight=1"],
            marks=pytest.mark.slow,
        ),
    ],
)
def test_pretrain_finetune_evaluate_on_a_fold(
    eth_ucy_cache: Path, tmp_path: Path, model: str, experiment: str, objectives: list[str]
) -> None:
    common = [f"cache_root={eth_ucy_cache}", "num_workers=0", "batch_size=4", f"model={model}", "model.num_modes=20"]
    fold = ["data=eth_ucy", "train_split=zara1_train", "val_split=zara1_val"]
    limits = ["+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", *QUIET]
    pretrain = PretrainSpec(
        tmp_path / "pretrain", [f"experiment={experiment}", *fold, *common, "max_epochs=1", *objectives, *limits]
    )
    test = ["data=eth_ucy", "split=zara1_test", *common]
    arms = [
        ArmSpec(
            name,
            EvaluateSpec(tmp_path / f"eval_{name}", test),
            FinetuneSpec(tmp_path / f"ft_{name}", [*fold, *common, "max_epochs=1", *limits], name == "pretrained"),
        )
        for name in ("pretrained", "scratch")
    ]
    arms.append(
        ArmSpec(
            "cv",
            EvaluateSpec(
                tmp_path / "eval_cv",
                [
                    "data=eth_ucy",
                    "split=zara1_test",
                    "num_workers=0",
                    f"cache_root={eth_ucy_cache}",
                    "model=constant_velocity",
                    "ckpt_path=null",
                ],
            ),
        )
    )
    result = run_pipeline(arms, pretrain=pretrain)
    cache = SceneCache(eth_ucy_cache / "eth_ucy" / "zara1_test")
    num_scored = sum(int((cache.get(i).agents.role >= AgentRole.SCORED).sum()) for i in cache.ids())
    assert result.pretrain is not None
    pre = result.pretrain.values
    losses = {
        "control_cpu_small": ("val_tcl", "val_trl", "val_forward_dynamics"),
        "smartpretrain_forecast_mae_cpu_small": ("val_mae",),
    }[experiment]
    assert all(np.isfinite(pre[k]) for k in losses), pre
    for name in ("pretrained", "scratch"):
        metrics = result.arms[name].metrics
        # every complete pedestrian of the held-out scene (eth_ucy's eval_scope: scored), best-of-20 and of 1
        assert {"eth_ucy/ADE_20", "eth_ucy/FDE_20", "eth_ucy/ADE_1", "eth_ucy/FDE_1"} <= set(metrics)
        assert metrics["eth_ucy/ADE_20"] <= metrics["eth_ucy/ADE_1"] + 1e-9
        assert result.arms[name].evaluation.values["num_agents"] == num_scored
    cv = result.arms["cv"].metrics
    # straight walkers with 2 cm noise: the last displacement extrapolates them within centimetres to decimetres
    assert cv["eth_ucy/ADE_1"] < 0.3 and "eth_ucy/ADE_20" not in cv
