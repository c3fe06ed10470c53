"""Reading and writing the outputs of runs: stage results to resume from, the best kept checkpoint, per-epoch
logger curves, JSON reports, a study's stage run as a logged subprocess.

Shared by the pipeline (:mod:`smartpretrain.runs.pipeline`: the demo, the studies) and the benchmark scripts
(``scripts/bench_*.py``) so a resumed stage, a validation curve and a benchmark report mean the same thing
everywhere.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from smartpretrain.io.atomic import atomic_write_text
from smartpretrain.io.checkpoints import load_checkpoint


def load_stage_result(path: Path) -> dict[str, Any] | None:
    """The JSON a finished stage wrote (e.g. ``final_metrics.json``), or ``None`` when the stage has to run.

    Drivers resume by skipping every stage whose result file exists; those files are written atomically, so one
    that exists is complete.
    """
    return json.loads(path.read_text()) if path.exists() else None


def best_checkpoint(run_dir: Path) -> Path:
    """The kept checkpoint with the best monitored value of a finished training run in ``run_dir``, as its best-k
    ``ModelCheckpoint`` recorded it in ``checkpoints/last.ckpt`` (found by name in ``run_dir/checkpoints``, so a
    moved run folder still works).

    Raises:
        FileNotFoundError: no checkpoint callback with a ``monitor`` recorded a best checkpoint.
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    for key, state in (load_checkpoint(last).get("callbacks") or {}).items():
        if key.startswith("ModelCheckpoint") and state.get("monitor") and state.get("best_model_path"):
            return run_dir / "checkpoints" / Path(state["best_model_path"]).name
    raise FileNotFoundError(f"{last}: no checkpoint callback recorded a best checkpoint (no monitor?)")


def epoch_metrics(
    run_dir: Path, columns: Sequence[str], prefix: str = "", trigger: str | None = None
) -> list[dict[str, float]]:
    """Per-epoch values of ``prefix + column`` from the newest CSV logger file ``run_dir/logs/version_*/metrics.csv``.

    Every row adds the columns it has to its epoch (later rows win); an epoch is kept when it has
    ``prefix + trigger`` (default: the first column), so train-only epochs drop out. Keys of the returned dicts are
    ``"epoch"`` and the columns without the prefix. No logger file: ``[]``.
    """
    paths = sorted(run_dir.glob("logs/version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[-1]))
    if not paths:
        return []
    rows: dict[int, dict[str, float]] = {}
    with paths[-1].open() as f:
        for row in csv.DictReader(f):
            values = {c: float(row[prefix + c]) for c in columns if row.get(prefix + c)}
            if values:
                epoch = int(row["epoch"])
                rows.setdefault(epoch, {"epoch": epoch}).update(values)
    key = trigger or columns[0]
    return [rows[e] for e in sorted(rows) if key in rows[e]]


def machine_info() -> dict[str, Any]:
    """Where a figure was measured: CPU count, processor, Python and platform."""
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write a JSON report atomically (parents created), with the machine it was measured on unless given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"machine": machine_info(), **report}, indent=2))
    print(f"wrote {path}")


def run_logged(command: Sequence[str], log: Path, cwd: Path | None = None) -> None:
    """Run one stage of a study as a subprocess, its stdout and stderr in ``log`` (parents created).

    Raises:
        SystemExit: the stage failed, with one line naming it and its log.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(list(command), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed (exit {done.returncode}); see {log}")


def write_study_outputs(out: Path, result: dict[str, Any], table: str) -> None:
    """A study's ``results.json`` (with the machine it ran on, :func:`write_report`) and ``results.md`` (its
    table), both atomic; then the table on stdout."""
    write_report(out / "results.json", result)
    atomic_write_text(out / "results.md", table + "\n")
    print("\n" + table)
