"""The pre-train -> fine-tune -> evaluate chain as one function, for the demo, the studies and the scripts.

A pipeline is an optional pre-training (:class:`PretrainSpec`) and a list of **arms** (:class:`ArmSpec`): each arm
is fine-tuned (:class:`FinetuneSpec`: from the pre-trained weights or from scratch; or not at all, for a
parameter-free baseline) and evaluated (:class:`EvaluateSpec`). Each stage is given as Hydra overrides of its
entry point's config (``configs/pretrain.yaml``, ``configs/train.yaml``, ``configs/evaluate.yaml``) and a run
folder, so a stage run here is the very run ``train_ssl.sh`` / ``train.sh`` / ``val.sh`` would make with those
overrides. The pipeline adds one override per link: ``pretrained_ckpt=<pre-trained last.ckpt>`` to an arm that
starts from the pre-training, and ``ckpt_path=<fine-tuned checkpoint>`` to its evaluation.

Order: the pre-training, every arm's fine-tuning, every arm's evaluation. Resuming: a stage whose result file
exists (``final_metrics.json`` of a training run, ``metrics.json`` of an evaluation; both written atomically, so
one that exists is complete) is reused, not run; a missing stage runs only when a later one needs it (an
evaluated arm needs no fine-tuning, an arm already fine-tuned no pre-training), so a finished study does not
need its pre-training folders any more. A pre-training is only reused for the pool it was asked for: its
``final_metrics.json`` records ``train_fraction`` (runs from before the field: 1.0), and a finished run folder of
another fraction is refused rather than silently fine-tuned from.

``on_stage`` sees a :class:`StageEvent` before each stage the pipeline visits (run or reused) and after it, so a
driver can print its own progress lines between stages.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from smartpretrain.config import compose_config
from smartpretrain.io.run_outputs import best_checkpoint, load_stage_result
from smartpretrain.runs import finetuning, pretraining
from smartpretrain.runs.evaluation import evaluate

__all__ = [
    "ArmResult",
    "ArmSpec",
    "EvaluateSpec",
    "FinetuneSpec",
    "PipelineResult",
    "PretrainSpec",
    "Stage",
    "StageEvent",
    "StageResult",
    "Weights",
    "run_pipeline",
]


class Stage(str, Enum):
    """A stage of the pipeline, named like its run folder's usual prefix."""

    PRETRAIN = "pretrain"
    FINETUNE = "finetune"
    EVALUATE = "evaluate"


class Weights(str, Enum):
    """Which checkpoint of an arm's fine-tuning its evaluation loads."""

    LAST = "last"  # checkpoints/last.ckpt: the end of training (no checkpoint picked on val)
    BEST = "best"  # the kept checkpoint with the best monitored value (``monitor`` of train.yaml)


#: the file whose existence marks a stage as finished
RESULT_FILES: dict[Stage, str] = {
    Stage.PRETRAIN: "final_metrics.json",
    Stage.FINETUNE: "final_metrics.json",
    Stage.EVALUATE: "metrics.json",
}


@dataclass(frozen=True)
class PretrainSpec:
    """Self-supervised pre-training: overrides of ``configs/pretrain.yaml`` and the run folder.

    ``train_fraction`` is the pool pre-trained on (``train_fraction=`` of ``configs/pretrain.yaml``: a fixed random
    fraction of the train scenes, drawn with ``train_subset_seed``, nested across fractions). It is a field, not an
    override, because it is part of the stage's identity: the pipeline passes it to the run and checks it against a
    finished run folder before reusing that (:func:`run_pipeline`).
    """

    run_dir: Path
    overrides: Sequence[str] = ()
    train_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < float(self.train_fraction) <= 1.0:
            raise ValueError(f"PretrainSpec.train_fraction must be in (0, 1], got {self.train_fraction}")
        if any(_override_key(item) == "train_fraction" for item in self.overrides):
            raise ValueError("give the pre-training pool as PretrainSpec.train_fraction, not as an override")

    @property
    def config_overrides(self) -> list[str]:
        """What the pre-training is composed with: the overrides, then ``train_fraction=``."""
        return [*self.overrides, f"train_fraction={float(self.train_fraction)!r}"]


def _override_key(item: str) -> str:
    """The config key of a Hydra override (``++trainer.x=1`` -> ``trainer.x``)."""
    return item.split("=", 1)[0].lstrip("+~")


@dataclass(frozen=True)
class FinetuneSpec:
    """Fine-tuning: overrides of ``configs/train.yaml`` and the run folder; ``from_pretrained`` adds
    ``pretrained_ckpt=`` the pipeline's pre-trained checkpoint (its branch: ``pretrained_branch=`` here)."""

    run_dir: Path
    overrides: Sequence[str] = ()
    from_pretrained: bool = False


@dataclass(frozen=True)
class EvaluateSpec:
    """Evaluation: overrides of ``configs/evaluate.yaml`` and the run folder. After a fine-tuning stage the
    pipeline adds ``ckpt_path=`` its ``weights`` checkpoint; without one the overrides name the weights (or
    ``ckpt_path=null`` for a parameter-free baseline)."""

    run_dir: Path
    overrides: Sequence[str] = ()
    weights: Weights = Weights.LAST


@dataclass(frozen=True)
class ArmSpec:
    """One compared model: an optional fine-tuning, then an evaluation."""

    name: str
    evaluate: EvaluateSpec
    finetune: FinetuneSpec | None = None


@dataclass(frozen=True)
class StageResult:
    """What a stage wrote: ``final_metrics.json`` of a training run, the summary (``metrics.json``) of an
    evaluation."""

    stage: Stage
    run_dir: Path
    values: dict[str, Any]
    #: wall time of the stage; None when it was reused
    seconds: float | None

    @property
    def reused(self) -> bool:
        return self.seconds is None

    @property
    def last_checkpoint(self) -> str:
        """A training stage's ``last.ckpt``: in its run folder when it is there (outputs moved since: the run
        folder is the truth), else where the run recorded it."""
        moved = self.run_dir / "checkpoints" / "last.ckpt"
        return str(moved if moved.exists() else self.values["last_checkpoint"])


@dataclass(frozen=True)
class StageEvent:
    """Before a stage (``result`` None) and after it, ran or reused."""

    stage: Stage
    run_dir: Path
    #: the arm; None for the pre-training
    arm: str | None
    result: StageResult | None = None


@dataclass(frozen=True)
class ArmResult:
    name: str
    evaluation: StageResult
    #: None without a fine-tuning stage, or when the arm was evaluated before and its fine-tuning was not needed
    finetune: StageResult | None

    @property
    def metrics(self) -> dict[str, float]:
        """The val metrics of the evaluation (``mode=val``)."""
        return self.evaluation.values["metrics"]

    @property
    def checkpoint(self) -> str | None:
        """The weights the evaluation loaded (``ckpt_path``)."""
        return self.evaluation.values.get("ckpt_path")

    @property
    def seconds(self) -> float:
        """Wall time of the stages of this arm that ran (0 when all were reused)."""
        return sum(r.seconds or 0.0 for r in (self.finetune, self.evaluation) if r is not None)


@dataclass(frozen=True)
class PipelineResult:
    #: None without a pre-training, or when it was not needed and had not run
    pretrain: StageResult | None
    #: the checkpoint fine-tuning starts from (``pretrained_ckpt``), when the pre-training is known
    pretrained_checkpoint: str | None
    arms: dict[str, ArmResult]

    def metrics(self) -> dict[str, dict[str, float]]:
        """Arm -> val metrics, in arm order (the input of a side-by-side table)."""
        return {name: arm.metrics for name, arm in self.arms.items()}


Notify = Callable[[StageEvent], None]


def _stage(
    stage: Stage, run_dir: Path, arm: str | None, needed: bool, work: Callable[[], dict[str, Any]], notify: Notify
) -> StageResult | None:
    """Reuse the stage's result file, else run ``work`` when ``needed``; None when neither."""
    done = load_stage_result(run_dir / RESULT_FILES[stage])
    if done is None and not needed:
        return None
    notify(StageEvent(stage, run_dir, arm))
    seconds = None
    if done is None:
        start = time.perf_counter()
        done = work()
        seconds = time.perf_counter() - start
    result = StageResult(stage, run_dir, done, seconds)
    notify(StageEvent(stage, run_dir, arm, result))
    return result


def _check(arms: Sequence[ArmSpec], pretrain: PretrainSpec | None) -> None:
    names = [arm.name for arm in arms]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be unique, got {names}")
    if pretrain is None and any(arm.finetune is not None and arm.finetune.from_pretrained for arm in arms):
        raise ValueError("an arm fine-tunes from the pre-trained weights, but the pipeline has no pre-training")
    done = None if pretrain is None else load_stage_result(pretrain.run_dir / RESULT_FILES[Stage.PRETRAIN])
    if pretrain is not None and done is not None:  # a finished pre-training is reused only for its own pool
        recorded = float(done.get("train_fraction", 1.0))  # runs from before the field: the whole split
        if recorded != float(pretrain.train_fraction):
            raise ValueError(
                f"{pretrain.run_dir} was pre-trained on train_fraction={recorded:g} of the train scenes, the pipeline "
                f"asks for {float(pretrain.train_fraction):g}: give the pre-training another run folder"
            )


def run_pipeline(
    arms: Sequence[ArmSpec] = (), *, pretrain: PretrainSpec | None = None, on_stage: Notify | None = None
) -> PipelineResult:
    """Pre-train (optional), fine-tune and evaluate every arm, reusing finished stages (see the module docstring).

    Raises:
        ValueError: duplicate arm names, an arm ``from_pretrained`` without ``pretrain``, or a finished
            pre-training in ``pretrain.run_dir`` of another ``train_fraction``.
        RunConfigError and the other errors of the stages' ``run`` / ``evaluate``, as they happen.
    """
    _check(arms, pretrain)
    notify: Notify = on_stage or (lambda event: None)
    evaluated = {arm.name: (arm.evaluate.run_dir / RESULT_FILES[Stage.EVALUATE]).exists() for arm in arms}
    to_finetune = {
        arm.name: not evaluated[arm.name] and not (arm.finetune.run_dir / RESULT_FILES[Stage.FINETUNE]).exists()
        for arm in arms
        if arm.finetune is not None
    }

    pre: StageResult | None = None
    pretrained: str | None = None
    if pretrain is not None:
        needed = any(arm.finetune.from_pretrained and to_finetune[arm.name] for arm in arms if arm.finetune)
        pre = _stage(
            Stage.PRETRAIN,
            pretrain.run_dir,
            None,
            needed or not arms,
            lambda: pretraining.run(compose_config("pretrain", pretrain.config_overrides), pretrain.run_dir),
            notify,
        )
        pretrained = pre.last_checkpoint if pre is not None else None

    finetuned: dict[str, StageResult | None] = {}
    for arm in arms:
        if arm.finetune is None:
            continue
        finetuned[arm.name] = _stage(
            Stage.FINETUNE,
            arm.finetune.run_dir,
            arm.name,
            not evaluated[arm.name],
            lambda spec=arm.finetune: _finetune(spec, pretrained),
            notify,
        )

    results: dict[str, ArmResult] = {}
    for arm in arms:
        evaluation = _stage(
            Stage.EVALUATE, arm.evaluate.run_dir, arm.name, True, lambda arm=arm: _evaluate(arm), notify
        )
        assert evaluation is not None  # an evaluation is always needed
        results[arm.name] = ArmResult(arm.name, evaluation, finetuned.get(arm.name))
    return PipelineResult(pre, pretrained, results)


def _finetune(spec: FinetuneSpec, pretrained: str | None) -> dict[str, Any]:
    overrides = list(spec.overrides)
    if spec.from_pretrained:
        overrides.append(f"pretrained_ckpt={pretrained}")
    return finetuning.run(compose_config("train", overrides), spec.run_dir)


def _evaluate(arm: ArmSpec) -> dict[str, Any]:
    overrides = list(arm.evaluate.overrides)
    if arm.finetune is not None:
        run_dir = arm.finetune.run_dir
        best = arm.evaluate.weights is Weights.BEST
        overrides.append(f"ckpt_path={best_checkpoint(run_dir) if best else run_dir / 'checkpoints' / 'last.ckpt'}")
    return evaluate(compose_config("evaluate", overrides), arm.evaluate.run_dir)
