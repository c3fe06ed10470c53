"""The pre-train -> fine-tune -> evaluate pipeline: stage order and links, reuse of finished stages, a stage run
only when a later one needs it, the best-checkpoint choice, and specs refused before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from smartpretrain.runs.pipeline import (
    ArmSpec,
    EvaluateSpec,
    FinetuneSpec,
    PretrainSpec,
    Stage,
    StageEvent,
    Weights,
    run_pipeline,
)
from tests.runs.test_guards import FINETUNE, PRETRAIN


def _arms(cache: Path, out: Path) -> list[ArmSpec]:
    data = ["data=av1", f"cache_root={cache}", "model=qcnet_small", "num_workers=0"]
    return [
        ArmSpec(
            name,
            EvaluateSpec(out / f"evaluate_{name}", data),
            FinetuneSpec(
                out / f"finetune_{name}", [*FINETUNE, f"cache_root={cache}"], from_pretrained=name != "scratch"
            ),
        )
        for name in ("pretrained", "scratch")
    ]


def _stamps(out: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in out.glob("*/checkpoints/last.ckpt")}


def test_pipeline_links_the_stages_and_reuses_finished_ones(av1_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    pretrain = PretrainSpec(out / "pretrain", [*PRETRAIN, f"cache_root={av1_cache}"])
    events: list[StageEvent] = []
    result = run_pipeline(_arms(av1_cache, out), pretrain=pretrain, on_stage=events.append)

    stages = [(e.stage, e.arm, e.result is not None) for e in events]
    expected = [(Stage.PRETRAIN, None)] + [
        (s, a) for s in (Stage.FINETUNE, Stage.EVALUATE) for a in ("pretrained", "scratch")
    ]
    assert stages == [(s, a, done) for s, a in expected for done in (False, True)]  # before and after each stage
    assert all(e.result.seconds is not None for e in events if e.result is not None)  # every stage ran

    last = out / "pretrain" / "checkpoints" / "last.ckpt"
    assert result.pretrain is not None and result.pretrained_checkpoint == str(last)
    config = yaml.safe_load((out / "finetune_pretrained" / "config.yaml").read_text())
    assert config["pretrained_ckpt"] == str(last) and config["seed"] == 2023
    assert json.loads((out / "finetune_pretrained" / "transfer_report.json").read_text())["strict_loaded"] > 0
    assert yaml.safe_load((out / "finetune_scratch" / "config.yaml").read_text())["pretrained_ckpt"] is None
    assert not (out / "finetune_scratch" / "transfer_report.json").exists()
    for name, arm in result.arms.items():
        assert arm.checkpoint == str(out / f"finetune_{name}" / "checkpoints" / "last.ckpt")  # the last, not a best
        assert arm.finetune is not None and arm.finetune.values == json.loads(
            (out / f"finetune_{name}" / "final_metrics.json").read_text()
        )
    metrics = result.metrics()
    assert (
        list(metrics) == ["pretrained", "scratch"]
        and metrics["pretrained"]["minFDE_6"] != metrics["scratch"]["minFDE_6"]
    )

    stamps = _stamps(out)
    assert len(stamps) == 3
    events.clear()
    again = run_pipeline(_arms(av1_cache, out), pretrain=pretrain, on_stage=events.append)
    assert [(e.stage, e.arm, e.result is not None) for e in events] == stages  # the same stages, all reused
    assert all(e.result.reused for e in events if e.result is not None) and _stamps(out) == stamps
    assert again.metrics() == metrics and again.pretrained_checkpoint == str(last)

    # an evaluated arm needs no fine-tuning and no pre-training: removing them does not re-run anything
    shutil.rmtree(out / "pretrain")
    shutil.rmtree(out / "finetune_pretrained")
    third = run_pipeline(_arms(av1_cache, out), pretrain=pretrain)
    assert third.pretrain is None and third.arms["pretrained"].finetune is None and third.metrics() == metrics
    assert not (out / "pretrain").exists() and not (out / "finetune_pretrained").exists()

    # a missing evaluation runs again from the fine-tuning it needs (reused), with the same numbers
    shutil.rmtree(out / "evaluate_scratch")
    fourth = run_pipeline(_arms(av1_cache, out), pretrain=pretrain).arms["scratch"]
    assert fourth.finetune is not None and fourth.finetune.reused and not fourth.evaluation.reused
    assert fourth.metrics == metrics["scratch"]


def test_best_weights_and_an_arm_without_fine_tuning(av1_cache: Path, tmp_path: Path) -> None:
    data = ["data=av1", f"cache_root={av1_cache}", "num_workers=0"]
    baseline = ArmSpec(
        "constant_velocity",
        EvaluateSpec(tmp_path / "eval_cv", [*data, "model=constant_velocity", "ckpt_path=null"]),
    )
    trained = ArmSpec(
        "qcnet",
        EvaluateSpec(tmp_path / "eval_qcnet", [*data, "model=qcnet_small"], weights=Weights.BEST),
        FinetuneSpec(tmp_path / "train", [*FINETUNE, f"cache_root={av1_cache}", "max_epochs=3", "save_top_k=2"]),
    )
    result = run_pipeline([baseline, trained])
    assert result.pretrain is None and result.arms["constant_velocity"].finetune is None
    assert result.arms["constant_velocity"].checkpoint is None and "minFDE_1" in result.metrics()["constant_velocity"]
    kept = sorted((tmp_path / "train" / "checkpoints").glob("epoch*.ckpt"))
    assert len(kept) == 2
    # the kept checkpoint with the lowest val minFDE_6 (its file name carries it)
    best = min(kept, key=lambda p: float(p.stem.split("minFDE")[1]))
    assert result.arms["qcnet"].checkpoint == str(best)


def test_specs_are_refused_before_any_work(tmp_path: Path) -> None:
    arm = ArmSpec("a", EvaluateSpec(tmp_path / "e"), FinetuneSpec(tmp_path / "f", from_pretrained=True))
    with pytest.raises(ValueError, match="no pre-training"):
        run_pipeline([arm])
    with pytest.raises(ValueError, match=r"arm names must be unique, got \['a', 'a'\]"):
        run_pipeline([arm, arm], pretrain=PretrainSpec(tmp_path / "p"))
    assert list(tmp_path.iterdir()) == []
