"""The pre-training data-scaling study (``scripts/study_scale.py``, docs/results.md): how much pre-training data
buys how much fine-tuned accuracy.

* :func:`plan_pretraining`: per pool fraction, the nested pool's size and the pre-training budget: ``epochs``
  (the same epochs at every fraction: compute grows with the data) or ``steps`` (the same optimizer steps, warm-up
  and number of validations as the whole pool's run: smaller pools are repeated, compute is fixed);
* :func:`fit_power_law`: ``L(n) = a · n^(−b) + c`` through the fine-tuned minFDE_6 per pool size;
* :func:`summarise_arms`, :func:`scaling_table`, :func:`plot_scaling`: the per-arm summary, results.md table and
  figure.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from smartpretrain.data.datamodule import labelled_subset
from smartpretrain.io.atomic import atomic_output
from smartpretrain.runs.comparison import STUDY_METRICS, summarise

__all__ = [
    "BUDGETS",
    "MIN_FIT_POINTS",
    "PoolPlan",
    "describe_fit",
    "fit_power_law",
    "plan_pretraining",
    "plot_scaling",
    "pool_scenes",
    "power_law",
    "scaling_table",
    "summarise_arms",
]

#: ``--budget`` of the study: what is held fixed across pool fractions
BUDGETS: tuple[str, ...] = ("epochs", "steps")
#: a three-parameter law needs at least this many pool sizes (fewer: the fit is refused, not made up)
MIN_FIT_POINTS = 3
SCRATCH = "scratch"


@dataclass(frozen=True)
class PoolPlan:
    """The pre-training of one pool fraction.

    Attributes:
        fraction: of the train scenes (``train_fraction`` of configs/pretrain.yaml).
        scenes: in the pool (:func:`pool_scenes`).
        steps_per_epoch: optimizer steps per epoch (one process; the last, incomplete batch is dropped).
        epochs: ``max_epochs`` of the run.
        warmup_epochs: ``ssl.warmup_epochs`` of the run (the preset's, or in ``steps`` mode rescaled so the
            warm-up lasts as many steps as the whole pool's).
        val_every: ``trainer.check_val_every_n_epoch`` (``steps`` mode: about as many validations as the whole
            pool's run, so a small pool does not pay dozens of validations).
    """

    fraction: float
    scenes: int
    steps_per_epoch: int
    epochs: int
    warmup_epochs: float
    val_every: int

    @property
    def steps(self) -> int:
        """Optimizer steps of the whole run."""
        return self.steps_per_epoch * self.epochs

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": self.steps}


def pool_scenes(num_scenes: int, fraction: float, seed: int = 0) -> list[int]:
    """The train-scene indices of the pool of ``fraction``: the fine-tuning subset draw itself
    (:func:`~smartpretrain.data.datamodule.labelled_subset`, a prefix of one seeded permutation), so the pools of
    one ``seed`` are nested (the 10 % pool lies inside the 25 % one); ``fraction`` 1: every scene."""
    return list(range(num_scenes)) if fraction >= 1.0 else labelled_subset(num_scenes, fraction, seed)


def plan_pretraining(
    num_scenes: int,
    fractions: Sequence[float],
    batch_size: int,
    epochs: int,
    budget: str,
    warmup_epochs: float,
    subset_seed: int = 0,
) -> list[PoolPlan]:
    """The pre-training of each pool fraction under ``budget``.

    ``epochs``: ``epochs`` epochs and the preset's warm-up at every fraction. ``steps``: the step budget is
    ``epochs`` epochs of the whole train split; each pool trains ``round(budget / steps_per_epoch)`` epochs (its
    steps match the budget to within half an epoch of that pool), with the warm-up rescaled to the same number of
    steps and a validation every ``round(epochs_of_pool / epochs)`` epochs.

    Raises:
        ValueError: an unknown budget, or a pool smaller than one batch (no optimizer step at all).
    """
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    full_steps = num_scenes // batch_size
    plans = []
    for fraction in fractions:
        scenes = len(pool_scenes(num_scenes, fraction, subset_seed))
        per_epoch = scenes // batch_size
        if per_epoch == 0:
            raise ValueError(
                f"the pool of fraction {fraction:g} has {scenes} scenes, fewer than one batch of {batch_size}: "
                "no optimizer step; raise the fraction or lower the batch size"
            )
        if budget == "epochs":
            plans.append(PoolPlan(fraction, scenes, per_epoch, epochs, float(warmup_epochs), 1))
            continue
        pool_epochs = max(1, round(epochs * full_steps / per_epoch))
        warmup = min(float(warmup_epochs) * full_steps / per_epoch, float(pool_epochs))
        val_every = max(1, round(pool_epochs / epochs))
        plans.append(PoolPlan(fraction, scenes, per_epoch, pool_epochs, round(warmup, 6), val_every))
    return plans


def power_law(n: np.ndarray | float, a: float, b: float, c: float) -> np.ndarray | float:
    """``a · n^(−b) + c``."""
    return a * np.power(n, -b) + c


def _scipy_available() -> bool:
    try:
        import scipy.optimize  # noqa: F401
    except ImportError:
        return False
    return True


def fit_power_law(scenes: Sequence[float], losses: Sequence[float], method: str | None = None) -> dict[str, Any]:
    """Fit ``L(n) = a · n^(−b) + c`` through (pool size, fine-tuned minFDE_6) points, unweighted.

    ``method``: ``"curve_fit"`` (:func:`scipy.optimize.curve_fit`, bounds ``a >= 0``, ``0 <= b <= 5``,
    ``0 <= c <= min L``), ``"loglog"`` (least squares of ``log L`` on ``log n``: the law with ``c = 0``), or None:
    ``curve_fit`` when scipy is installed, else ``loglog``. A ``curve_fit`` that does not converge falls back to
    ``loglog`` and says so (``note``). With fewer than :data:`MIN_FIT_POINTS` points nothing is fitted: the
    result is ``{"refused": <why>, ...}``.

    Returns:
        ``method``, ``method_label`` (for a legend), ``formula``, ``a``, ``b``, ``c``, ``points``, ``dof``
        (points − fitted parameters), ``rmse`` (m), ``n`` and ``L``; or ``refused``, ``points``, ``n``, ``L``.
    """
    n = np.asarray(scenes, dtype=np.float64)
    loss = np.asarray(losses, dtype=np.float64)
    base: dict[str, Any] = {"points": len(n), "n": n.tolist(), "L": loss.tolist()}
    if len(n) < MIN_FIT_POINTS:
        return {
            "refused": f"a power law a*n^(-b)+c needs at least {MIN_FIT_POINTS} pre-training pool sizes, got "
            f"{len(n)}: not fitted",
            **base,
        }
    if np.any(n <= 0) or np.any(loss <= 0):
        return {"refused": "pool sizes and losses must be positive for a power law: not fitted", **base}
    chosen = method or ("curve_fit" if _scipy_available() else "loglog")
    if chosen not in ("curve_fit", "loglog"):
        raise ValueError(f"method must be curve_fit, loglog or None, got {method!r}")
    note = None
    if chosen == "curve_fit":
        try:
            a, b, c = _curve_fit(n, loss)
        except (RuntimeError, ValueError) as exc:
            note, chosen = f"curve_fit failed ({exc}); fitted log-log with c = 0 instead", "loglog"
    if chosen == "loglog":
        slope, intercept = np.polyfit(np.log(n), np.log(loss), 1)
        a, b, c = float(math.exp(intercept)), float(-slope), 0.0
    fitted = power_law(n, a, b, c)
    out = {
        "method": chosen,
        "method_label": "scipy curve_fit" if chosen == "curve_fit" else "log-log least squares, c = 0",
        "formula": "L(n) = a * n^(-b) + c",
        "a": float(a),
        "b": float(b),
        "c": float(c),
        "dof": len(n) - (3 if chosen == "curve_fit" else 2),
        "rmse": float(np.sqrt(np.mean((fitted - loss) ** 2))),
        **base,
    }
    if note:
        out["note"] = note
    return out


def _curve_fit(n: np.ndarray, loss: np.ndarray) -> tuple[float, float, float]:
    """The bounded three-parameter fit, started from a log-log fit of ``L − c0`` with ``c0`` half the lowest loss."""
    from scipy.optimize import OptimizeWarning, curve_fit

    c0 = 0.5 * float(loss.min())
    slope, intercept = np.polyfit(np.log(n), np.log(loss - c0), 1)
    b0 = float(np.clip(-slope, 1e-3, 4.9))
    a0 = float(max(math.exp(intercept), 1e-6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)  # no covariance with as many points as parameters
        params, _ = curve_fit(
            lambda x, a, b, c: a * np.power(x, -b) + c,
            n,
            loss,
            p0=[a0, b0, c0],
            bounds=([0.0, 0.0, 0.0], [np.inf, 5.0, float(loss.min())]),
            maxfev=20_000,
        )
    return float(params[0]), float(params[1]), float(params[2])


def summarise_arms(
    runs: list[dict[str, Any]], arms: list[str], label_fraction: float, plans: dict[str, PoolPlan]
) -> dict[str, dict[str, Any]]:
    """Per arm: mean ± std over seeds of the study metrics (:func:`~smartpretrain.runs.comparison.summarise`),
    the change of mean minFDE_6 vs scratch, the pool size (0 for scratch), its pre-training plan, and how many
    seeds beat scratch's run of the same seed."""
    per_arm = summarise(runs, arms, [label_fraction]).get(f"{label_fraction:g}", {})
    scratch = {r["seed"]: r["metrics"]["minFDE_6"] for r in runs if r["arm"] == SCRATCH}
    for arm, entry in per_arm.items():
        plan = plans.get(arm)
        entry["pretrain_scenes"] = 0 if plan is None else plan.scenes
        if plan is not None:
            entry["pretrain"] = plan.as_dict()
            paired = [
                r["metrics"]["minFDE_6"] < scratch[r["seed"]] for r in runs if r["arm"] == arm and r["seed"] in scratch
            ]
            entry["seeds_better_than_scratch"] = [sum(paired), len(paired)]
    return per_arm


def scaling_table(arms: dict[str, dict[str, Any]], fit: dict[str, Any], num_train: int) -> str:
    """The results.md table: one row per arm (scratch first), mean ± std over seeds, then the fit."""
    head = (
        "| pre-training pool | steps (epochs) | seeds | "
        + " | ".join(STUDY_METRICS)
        + " | minFDE_6 vs scratch | seeds better |"
    )
    lines = [head, "|" + "---|" * (len(STUDY_METRICS) + 5)]
    for entry in arms.values():
        plan = entry.get("pretrain")
        if plan is None:
            pool, budget = "none (scratch)", "—"
        else:
            pool = f"{plan['fraction'] * 100:g} % ({entry['pretrain_scenes']} of {num_train})"
            budget = f"{plan['steps']} ({plan['epochs']})"
        cells = [f"{entry[m]['mean']:.3f} ± {entry[m]['std']:.3f}" for m in STUDY_METRICS]
        change = entry.get("minFDE_6_change_pct")
        better = entry.get("seeds_better_than_scratch")
        vs_scratch = "—" if change is None else f"{change:+.1f} %"
        seeds_better = "—" if not better else f"{better[0]} of {better[1]}"
        lines.append(
            f"| {pool} | {budget} | {len(entry['seeds'])} | "
            + " | ".join(cells)
            + f" | {vs_scratch} | {seeds_better} |"
        )
    lines.append("")
    lines.append(f"Fit of mean minFDE_6 vs pre-training scenes n: {describe_fit(fit)}")
    return "\n".join(lines)


def describe_fit(fit: dict[str, Any]) -> str:
    """One line: the fitted law and how, or why there is none."""
    if "refused" in fit:
        return fit["refused"]
    text = (
        f"L(n) = {fit['a']:.3g} · n^(−{fit['b']:.3g}) + {fit['c']:.3g} ({fit['method_label']}; {fit['points']} "
        f"points, rmse {fit['rmse']:.3f} m)"
    )
    return text + (f"; {fit['note']}" if fit.get("note") else "")


def plot_scaling(arms: dict[str, dict[str, Any]], fit: dict[str, Any], path: Path, title: str) -> None:
    """Fine-tuned minFDE_6 (mean ± std over seeds) vs pre-training scenes on a log x-axis, scratch as a horizontal
    band (mean ± std), and the fitted power law (legend: the law and how it was fitted, or that it was refused)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    pre = sorted((e for a, e in arms.items() if a != SCRATCH), key=lambda e: e["pretrain_scenes"])
    xs = [e["pretrain_scenes"] for e in pre]
    if SCRATCH in arms:
        mean, std = arms[SCRATCH]["minFDE_6"]["mean"], arms[SCRATCH]["minFDE_6"]["std"]
        ax.axhspan(mean - std, mean + std, color="0.6", alpha=0.25, lw=0)
        ax.axhline(mean, color="0.35", ls="--", lw=1.2, label=f"scratch (0 scenes): {mean:.3f} ± {std:.3f}")
    if pre:
        ax.errorbar(xs, [e["minFDE_6"]["mean"] for e in pre], yerr=[e["minFDE_6"]["std"] for e in pre], fmt="o",
                    capsize=4, color="C0", label="pre-trained, fine-tuned (mean ± std over seeds)")  # fmt: skip
    if "refused" not in fit and xs:
        grid = np.geomspace(min(xs), max(xs), 100)
        ax.plot(grid, power_law(grid, fit["a"], fit["b"], fit["c"]), color="C1",
                label=f"{fit['a']:.3g}·n$^{{-{fit['b']:.3g}}}$ + {fit['c']:.3g} ({fit['method_label']})")  # fmt: skip
    elif xs:
        few = fit.get("points", 0) < MIN_FIT_POINTS
        ax.plot([], [], " ", label=f"no fit: {f'fewer than {MIN_FIT_POINTS} pool sizes' if few else 'refused'}")
    ax.set_xscale("log")
    if xs:  # the pool sizes themselves as ticks (a study spans about one decade)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("pre-training scenes (log scale)")
    ax.set_ylabel("fine-tuned val minFDE$_6$ (m)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
