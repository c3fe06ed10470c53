"""Comparing the arms of pipelines: the side-by-side metric table (the demo, ``scripts/av1_ssl_run.py``) and the
label-efficiency study's arms, aggregation and markdown table (``scripts/study_av1.py``, docs/results.md).
"""

from __future__ import annotations

import statistics
from typing import Any

__all__ = [
    "ARM_LABELS",
    "PRETRAIN_ARMS",
    "STUDY_METRICS",
    "TABLE_METRICS",
    "markdown_table",
    "paired_table",
    "parse_epochs",
    "side_by_side",
    "summarise",
]

#: the rows of :func:`side_by_side` (when every run has them)
TABLE_METRICS: tuple[str, ...] = ("minADE_6", "minFDE_6", "MR_6", "brier-minFDE_6", "minADE_1", "minFDE_1", "MR_1")
#: the metrics the study aggregates
STUDY_METRICS: tuple[str, ...] = ("minADE_6", "minFDE_6", "MR_6", "brier-minFDE_6")

_NO_TCL_TRL = ["ssl.objectives.tcl.weight=0", "ssl.objectives.trl.weight=0"]
_CONTROL_TERMS = ("forward_dynamics", "inverse_dynamics", "masked_hindsight")
_CONTROL = [f"ssl.objectives.{name}.weight=1" for name in _CONTROL_TERMS]

#: study arm -> (pre-training overrides, branch to transfer); ``scratch`` has no pre-training. SmartPretrain arms
#: transfer the momentum branch (the release), MAE the online weights (the reference has no momentum branch); the
#: control-centric arms (their targets are momentum latents, as TCL's keys) the momentum branch
PRETRAIN_ARMS: dict[str, tuple[list[str], str]] = {
    "tcl": (["ssl.objectives.trl.weight=0"], "momentum"),
    "trl": (["ssl.objectives.tcl.weight=0"], "momentum"),
    "tcl_trl": ([], "momentum"),
    "mae": (["ssl.objectives.mae.weight=1", *_NO_TCL_TRL], "online"),
    "all": (["ssl.objectives.mae.weight=1"], "momentum"),
    "control": ([*_NO_TCL_TRL, *_CONTROL], "momentum"),
    "fd": ([*_NO_TCL_TRL, "ssl.objectives.forward_dynamics.weight=1"], "momentum"),
    "id": ([*_NO_TCL_TRL, "ssl.objectives.inverse_dynamics.weight=1"], "momentum"),
    "mhc": ([*_NO_TCL_TRL, "ssl.objectives.masked_hindsight.weight=1"], "momentum"),
    "tcl_trl_control": (list(_CONTROL), "momentum"),
}
ARM_LABELS = {"scratch": "scratch", "tcl": "TCL", "trl": "TRL", "tcl_trl": "TCL + TRL", "mae": "MAE",
              "all": "TCL + TRL + MAE", "control": "control (FD + ID + MHC)", "fd": "FD", "id": "ID",
              "mhc": "MHC", "tcl_trl_control": "TCL + TRL + control"}  # fmt: skip


def side_by_side(results: dict[str, dict[str, float]], metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    """A metrics table with one column per run (first column = reference) and the relative change of the others."""
    names = list(results)
    rows = [m for m in metrics if all(m in results[n] for n in names)]
    head = f"{'metric':<16}" + "".join(f"{n:>16}" for n in names) + (f"{'change':>10}" if len(names) == 2 else "")
    lines = [head, "-" * len(head)]
    for m in rows:
        values = [results[n][m] for n in names]
        line = f"{m:<16}" + "".join(f"{v:>16.4f}" for v in values)
        if len(names) == 2 and values[1] != 0:
            line += f"{(values[0] - values[1]) / abs(values[1]) * 100:>+9.1f}%"
        lines.append(line)
    return "\n".join(lines)


def parse_epochs(items: list[str], fractions: list[float], flag: str = "--finetune-epochs") -> dict[float, int]:
    """``["0.1=24", "1.0=4"]`` -> ``{0.1: 24, 1.0: 4}``; every fraction needs a value."""
    budget = {float(k): int(v) for k, v in (item.split("=", 1) for item in items)}
    missing = [f for f in fractions if f not in budget]
    if missing:
        raise SystemExit(f"{flag} has no budget for fraction(s) {missing} (give e.g. {missing[0]}=10)")
    return budget


def summarise(runs: list[dict[str, Any]], arms: list[str], fractions: list[float]) -> dict[str, Any]:
    """Mean ± std (sample, over seeds) per (fraction, arm) and the change of the mean minFDE_6 vs scratch."""
    table: dict[str, dict[str, Any]] = {}
    for fraction in fractions:
        per_arm: dict[str, Any] = {}
        for arm in arms:
            chosen = [r for r in runs if r["arm"] == arm and r["fraction"] == fraction]
            if not chosen:
                continue
            entry: dict[str, Any] = {"seeds": [r["seed"] for r in chosen]}
            for m in STUDY_METRICS:
                values = [r["metrics"][m] for r in chosen]
                entry[m] = {
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values,
                }
            per_arm[arm] = entry
        scratch = per_arm.get("scratch", {}).get("minFDE_6", {}).get("mean")
        for arm, entry in per_arm.items():
            if scratch and arm != "scratch":
                entry["minFDE_6_change_pct"] = (entry["minFDE_6"]["mean"] - scratch) / scratch * 100.0
        table[f"{fraction:g}"] = per_arm
    return table


def markdown_table(summary: dict[str, Any], num_train: int) -> str:
    """The study table of docs/results.md: one row per (label fraction, arm), mean ± std over seeds."""
    head = "| labels | arm | seeds | " + " | ".join(STUDY_METRICS) + " | minFDE_6 vs scratch |"
    lines = [head, "|" + "---|" * (len(STUDY_METRICS) + 4)]
    for fraction, per_arm in summary.items():
        labelled = max(1, round(num_train * float(fraction)))
        for arm, entry in per_arm.items():
            cells = [f"{entry[m]['mean']:.3f} ± {entry[m]['std']:.3f}" for m in STUDY_METRICS]
            change = entry.get("minFDE_6_change_pct")
            lines.append(
                f"| {float(fraction) * 100:g} % ({labelled}) | {ARM_LABELS.get(arm, arm)} | {len(entry['seeds'])} | "
                + " | ".join(cells)
                + f" | {'—' if change is None else f'{change:+.1f} %'} |"
            )
    return "\n".join(lines)


def paired_table(
    runs: list[dict[str, Any]], pairs: list[tuple[str, str]], fractions: list[float], metric: str = "minFDE_6"
) -> str:
    """Per (label fraction, arm, reference arm): the change of ``metric`` seed by seed (same fine-tuning seed: same
    head initialisation, labelled subset and batch order), its mean and spread, and how many seeds improve."""
    head = f"| labels | arm | vs | {metric} change per seed | mean ± std | seeds better |"
    lines = [head, "|---|---|---|---|---|---|"]
    for fraction in fractions:
        values = {(r["arm"], r["seed"]): r["metrics"][metric] for r in runs if r["fraction"] == fraction}
        for arm, reference in pairs:
            seeds = sorted(seed for a, seed in values if a == arm and (reference, seed) in values)
            if not seeds:
                continue
            changes = [(values[(arm, s)] - values[(reference, s)]) / values[(reference, s)] * 100.0 for s in seeds]
            spread = statistics.stdev(changes) if len(changes) > 1 else 0.0
            per_seed = " / ".join(f"{c:+.1f} %" for c in changes)
            better = sum(c < 0 for c in changes)
            lines.append(
                f"| {float(fraction) * 100:g} % | {ARM_LABELS.get(arm, arm)} | {ARM_LABELS.get(reference, reference)} "
                f"| {per_seed} | {statistics.fmean(changes):+.1f} ± {spread:.1f} % | {better} of {len(seeds)} |"
            )
    return "\n".join(lines)
