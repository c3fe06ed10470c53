"""The pre-training data-scaling study: nested pools drawn by fine-tuning's subset code, the budget plans, the
power-law fit, the pool as part of a pre-training's identity, and a tiny end-to-end study on generated AV1-format
scenes that resumes without training again."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smartpretrain.config import compose_config
from smartpretrain.data.datamodule import labelled_subset
from smartpretrain.io.checkpoints import load_checkpoint
from smartpretrain.runs.guards import RunConfigError
from smartpretrain.runs.pipeline import PretrainSpec, run_pipeline
from smartpretrain.runs.pretraining import SUBSET_FILE, check_pretrain_config
from smartpretrain.runs.scaling import (
    describe_fit,
    fit_power_law,
    plan_pretraining,
    plot_scaling,
    pool_scenes,
    power_law,
    scaling_table,
)
from tests.conftest import REPO


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_pools_are_nested_fine_tuning_subsets(seed: int) -> None:
    fractions = [0.05, 0.1, 0.25, 0.5, 0.75, 1.0]
    pools = [pool_scenes(1956, f, seed) for f in fractions]
    assert [len(p) for p in pools] == [98, 196, 489, 978, 1467, 1956]
    for small, large in itertools.pairwise(pools):
        assert set(small) <= set(large)
    for fraction, pool in zip(fractions[:-1], pools, strict=False):  # the very draw fine-tuning uses
        assert pool == labelled_subset(1956, fraction, seed)


def test_step_budget_repeats_small_pools_and_epoch_budget_does_not() -> None:
    steps = plan_pretraining(1956, [0.1, 0.25, 0.5, 1.0], batch_size=16, epochs=10, budget="steps", warmup_epochs=1)
    assert [p.scenes for p in steps] == [196, 489, 978, 1956]
    assert [p.epochs for p in steps] == [102, 41, 20, 10]
    assert all(abs(p.steps - 1220) <= p.steps_per_epoch / 2 for p in steps)  # 1220 = 10 epochs of the split
    # the warm-up lasts as many steps as the whole split's (122), the validations are about as many (10)
    assert all(p.warmup_epochs * p.steps_per_epoch == pytest.approx(122) for p in steps)
    assert [p.epochs // p.val_every for p in steps] == [10, 10, 10, 10]
    epochs = plan_pretraining(1956, [0.1, 1.0], batch_size=16, epochs=10, budget="epochs", warmup_epochs=1)
    assert [(p.epochs, p.steps, p.warmup_epochs, p.val_every) for p in epochs] == [(10, 120, 1, 1), (10, 1220, 1, 1)]
    with pytest.raises(ValueError, match="fewer than one batch"):
        plan_pretraining(20, [0.1], batch_size=4, epochs=1, budget="steps", warmup_epochs=1)


def test_power_law_fit_recovers_known_parameters() -> None:
    n = np.array([100.0, 250.0, 500.0, 1000.0, 2000.0, 5000.0])
    fit = fit_power_law(n, power_law(n, 20.0, 0.5, 1.5))
    assert fit["method"] == "curve_fit" and fit["dof"] == 3
    assert (fit["a"], fit["b"], fit["c"]) == pytest.approx((20.0, 0.5, 1.5), rel=1e-4)
    loglog = fit_power_law(n, power_law(n, 3.0, 0.3, 0.0), method="loglog")  # the fallback without scipy: c = 0
    assert loglog["method_label"] == "log-log least squares, c = 0"
    assert (loglog["a"], loglog["b"], loglog["c"]) == pytest.approx((3.0, 0.3, 0.0), rel=1e-9)
    refused = fit_power_law([196, 1956], [4.0, 3.8])
    assert "needs at least 3" in refused["refused"] and "a" not in refused
    assert describe_fit(refused) == refused["refused"]


def test_table_and_plot_with_a_refused_fit(tmp_path: Path) -> None:
    def entry(fde: float, scenes: int, plan: dict | None) -> dict:
        stats = {m: {"mean": fde, "std": 0.1, "values": [fde]} for m in ("minADE_6", "minFDE_6", "MR_6")}
        out = {"seeds": [0, 1], **stats, "brier-minFDE_6": {"mean": fde + 0.5, "std": 0.1}, "pretrain_scenes": scenes}
        return out | (
            {"pretrain": plan, "minFDE_6_change_pct": -2.0, "seeds_better_than_scratch": [2, 2]} if plan else {}
        )

    arms = {"scratch": entry(4.1, 0, None), "p1": entry(4.0, 1956, {"fraction": 1.0, "steps": 1220, "epochs": 10})}
    fit = fit_power_law([1956], [4.0])
    table = scaling_table(arms, fit, 1956)
    assert "| none (scratch) | — | 2 |" in table and "| 100 % (1956 of 1956) | 1220 (10) | 2 |" in table
    assert "-2.0 % | 2 of 2 |" in table and table.endswith(fit["refused"])
    plot_scaling(arms, fit, tmp_path / "scaling.png", "refused fit")
    assert (tmp_path / "scaling.png").stat().st_size > 5_000


def test_a_pool_fraction_with_a_mixture_is_refused_in_one_line(tmp_path: Path) -> None:
    cfg = compose_config("pretrain", ["data=mix_av2_womd", "train_fraction=0.5", f"cache_root={tmp_path}"])
    with pytest.raises(RunConfigError, match=r"train_fraction=0.5 with a mixture \(data=mix_av2_womd\)"):
        check_pretrain_config(cfg)
    cmd = [sys.executable, "-m", "smartpretrain.pretrain", "data=mix_av2_womd", "train_fraction=0.5",
           f"cache_root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("smartpretrain.pretrain: error: train_fraction=0.5 with a mixture")


def test_the_pool_is_part_of_a_pretraining_identity(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not as an override"):
        PretrainSpec(tmp_path, ["train_fraction=0.5"])
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        PretrainSpec(tmp_path, train_fraction=0.0)
    assert PretrainSpec(tmp_path, ["seed=1"], 0.25).config_overrides == ["seed=1", "train_fraction=0.25"]
    run_dir = tmp_path / "pre"
    run_dir.mkdir()
    (run_dir / "final_metrics.json").write_text(json.dumps({"train_fraction": 0.5, "last_checkpoint": "x.ckpt"}))
    assert run_pipeline(pretrain=PretrainSpec(run_dir, train_fraction=0.5)).pretrain.reused
    with pytest.raises(ValueError, match=r"pre-trained on train_fraction=0.5 .* asks for 0.25"):
        run_pipeline(pretrain=PretrainSpec(run_dir, train_fraction=0.25))
    (run_dir / "final_metrics.json").write_text(json.dumps({"last_checkpoint": "x.ckpt"}))  # before the field: 1.0
    assert run_pipeline(pretrain=PretrainSpec(run_dir)).pretrain.reused


@pytest.mark.slow
def test_tiny_scaling_study_end_to_end_and_resume(tmp_path: Path) -> None:
    """Scratch + three nested pools (4, 8, 16 scenes) x two seeds, a step budget, on generated AV1-format scenes;
    a second call reuses every stage. About 1 min on 2 idle CPU cores."""
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.av1 import Av1Converter
    from smartpretrain.data.synthetic import generate_av1

    raw, cache = tmp_path / "raw", tmp_path / "cache"
    generate_av1(raw, "train", 16, seed=0)
    generate_av1(raw, "val", 6, seed=1)
    for split in ("train", "val"):
        convert_split(Av1Converter(raw, split), cache / "av1" / split, ConversionSettings(progress=False))
    out = tmp_path / "study"
    command = [
        sys.executable, str(REPO / "scripts" / "study_scale.py"), "--out", str(out), "--cache-root", str(cache),
        "--fractions", "0.25", "0.5", "1.0", "--budget", "steps", "--pretrain-epochs", "1", "--seeds", "0", "1",
        "--label-fraction", "0.25", "--finetune-epochs", "1", "--val-every", "1", "--batch-size", "4", "--workers", "0",
        "--model-overrides", "model.embed_dim=32", "model.encoder_depth=1", "model.num_heads=2",
        "--pretrain-overrides", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
        "--finetune-overrides", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
    ]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert first.returncode == 0, first.stderr[-3000:]
    result = json.loads((out / "results.json").read_text())

    # nested pools of the right sizes, each pre-trained for the same 4 steps (1 epoch of 16 scenes, batch 4)
    folders = {arm: out / record["run_dir"] for arm, record in result["pretraining"].items()}
    assert list(folders) == ["p0.25", "p0.5", "p1"]
    subsets = {arm: json.loads((folders[arm] / SUBSET_FILE).read_text())["indices"] for arm in ("p0.25", "p0.5")}
    assert [len(subsets["p0.25"]), len(subsets["p0.5"])] == [4, 8] and set(subsets["p0.25"]) <= set(subsets["p0.5"])
    assert not (folders["p1"] / SUBSET_FILE).exists()
    assert [json.loads((f / "final_metrics.json").read_text())["train_scenes"] for f in folders.values()] == [4, 8, 16]
    assert [result["pretraining"][a]["epochs"] for a in folders] == [4, 2, 1]
    for folder in folders.values():  # last.ckpt is the end of training, whatever the validation cadence
        assert load_checkpoint(folder / "checkpoints" / "last.ckpt")["global_step"] == 4

    # every arm and seed, the summary, the fit and the figure
    assert sorted((r["arm"], r["seed"]) for r in result["runs"]) == [
        (arm, seed) for arm in ("p0.25", "p0.5", "p1", "scratch") for seed in (0, 1)
    ]
    assert result["summary"]["scratch"]["pretrain_scenes"] == 0
    assert [result["summary"][a]["pretrain_scenes"] for a in ("p0.25", "p0.5", "p1")] == [4, 8, 16]
    assert result["protocol"]["budget"] == "steps" and result["protocol"]["step_budget"] == 4
    assert result["protocol"]["labelled_scenes"] == 4 and result["num_val_scenes"] == 6
    fit = result["fit"]
    assert fit["method"] == "curve_fit" and fit["points"] == 3 and {"a", "b", "c", "rmse"} <= set(fit)
    assert result["machine"]["cpu_count"] and "pretrain_tcl_trl_p1_e1_s0" in result["seconds"]
    assert (out / "scaling.png").stat().st_size > 10_000
    assert "| 25 % (4 of 16) | 4 (4) | 2 |" in (out / "results.md").read_text()
    config = (out / "finetune_l0.25_tcl_trl_p0.5_e2_s1" / "config.yaml").read_text()
    assert "train_fraction: 0.25" in config and "pretrained_ckpt:" in config and "max_epochs: 1" in config

    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/checkpoints/last.ckpt")}
    assert len(stamps) == 3 + 8  # the pre-trainings and every fine-tune
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing trained again
    assert "pre-trained" not in again.stdout and "p0.5 seed 1: minFDE_6" in again.stdout
    assert json.loads((out / "results.json").read_text())["summary"] == result["summary"]
