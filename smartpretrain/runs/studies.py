"""What the study scripts share (``scripts/study_av1.py``, ``scripts/study_scale.py``): the converted real AV1 cache,
the runs that earlier ``results.json`` files recorded (``--reuse-results``), and the timing of pre-trainings.

Scripts do not import one another; what two of them need lives here so both run the same code.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

from smartpretrain.io.run_outputs import load_stage_result
from smartpretrain.runs.pipeline import Stage, StageEvent

__all__ = ["AV1_RAW", "prepare_av1_cache", "pretraining_timer", "recorded_runs"]

#: the real Argoverse 1 sample beside the repository (``../shared/data/av1``)
AV1_RAW = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "av1"


def prepare_av1_cache(cache: Path, workers: int = 1, raw: Path = AV1_RAW) -> int:
    """Convert ``raw`` {train, val} into ``cache/av1/{train,val}`` unless already converted; the number of train
    scenes (from the train manifest).

    Raises:
        SystemExit: a split needs converting and ``raw`` is absent (one line naming it).
    """
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.av1 import Av1Converter

    for split in ("train", "val"):
        if not (cache / "av1" / split / "manifest.json").exists():
            if not raw.exists():
                raise SystemExit(f"{raw} not found: the study needs ../shared beside the repository")
            convert_split(Av1Converter(raw, split), cache / "av1" / split,
                          ConversionSettings(num_workers=max(1, workers)))  # fmt: skip
    return int(json.loads((cache / "av1" / "train" / "manifest.json").read_text())["num_scenes"])


def recorded_runs(
    paths: Sequence[Path], key: Callable[[dict[str, Any]], Hashable]
) -> tuple[dict[Hashable, dict[str, Any]], dict[str, float]]:
    """The runs of earlier ``results.json`` files of a study, by ``key(run)`` (later files win), and their stage
    wall times (``seconds``): a study split over machines or sessions does not repeat them.

    Raises:
        SystemExit: a path is not a readable results file.
    """
    recorded: dict[Hashable, dict[str, Any]] = {}
    timings: dict[str, float] = {}
    for path in paths:
        earlier = load_stage_result(path)
        if earlier is None:
            raise SystemExit(f"--reuse-results {path}: not a readable results.json")
        for run in earlier["runs"]:
            recorded[key(run)] = run
        timings.update(earlier.get("seconds", {}))
    return recorded, timings


def pretraining_timer(timings: dict[str, float], label: str) -> Callable[[StageEvent], None]:
    """An ``on_stage`` callback of :func:`~smartpretrain.runs.pipeline.run_pipeline` that records the wall time of a
    pre-training that ran (under its run folder's name) and announces it before its fine-tuning starts."""

    def note(event: StageEvent) -> None:
        if event.stage is Stage.PRETRAIN and event.result is not None and event.result.seconds is not None:
            timings[event.run_dir.name] = round(event.result.seconds, 1)
            print(f"pre-trained {label} in {timings[event.run_dir.name]:.0f} s", flush=True)

    return note
