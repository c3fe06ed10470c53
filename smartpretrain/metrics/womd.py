"""Forecasting metrics with the Waymo Open Motion Dataset (WOMD) challenge's definitions: minADE, minFDE and miss
rate at 3, 5 and 8 s.

Definitions (per agent, at each horizon t; ``s_t`` = the future step at t seconds, ``round(t / dt) - 1``, i.e. steps
29 / 49 / 79 of WOMD's 80 future steps at 10 Hz; at most ``max_predictions`` = 6 modes are scored, the most
probable ones when the forecast has more):

* ``minADE@t`` = min over modes k of ``mean_{i in S_t, valid} ||pred_k[i] - gt[i]||``, where ``S_t`` are the
  future steps up to ``s_t`` on the challenge's 2 Hz prediction grid (every 5th 10 Hz step: 0.5 s, 1.0 s, ..., t;
  ``prediction_hz=None`` averages over every step instead). **This is the minimum ADE over the modes**, unlike
  AV2's minADE (:mod:`smartpretrain.metrics.forecasting`), which is the ADE of the mode with the best endpoint.
  Scored when at least one step of ``S_t`` is valid.
* ``minFDE@t`` = min over modes of ``||pred_k[s_t] - gt[s_t]||``. Scored only when step ``s_t`` is valid (an agent
  not observed at the horizon is not scored at that horizon, whatever its other steps).
* ``MR@t``: the error ``pred_k[s_t] - gt[s_t]`` is rotated into the ground truth's heading frame at ``s_t``
  (``lon = cos(h) dx + sin(h) dy``, ``lat = -sin(h) dx + cos(h) dy``); mode k hits when
  ``|lat| / scale <= lat_t`` and ``|lon| / scale <= lon_t``; the agent is a miss (1) when **no** scored mode hits,
  else 0. ``(lat_t, lon_t)`` = (1, 2) m at 3 s, (1.8, 3.6) m at 5 s, (3, 6) m at 8 s;
  ``scale = 0.5`` for ``v < 1.4`` m/s, ``1`` for ``v > 11`` m/s and
  ``0.5 + 0.5 (v - 1.4) / (11 - 1.4)`` in between, ``v`` the agent's speed at the **current** (last observed)
  step. Scored like minFDE.

Every value is the mean over the agents scored for it (float64). The challenge's per-object-type breakdown
(vehicle / pedestrian / cyclist, whose mean is the leaderboard number) is not reproduced: the overall value is
the mean over agents. mAP / soft-mAP and the overlap rate are out of scope.

Sources of the constants (read for the facts; this is our own code): waymo-research/waymo-open-dataset,
``waymo_open_dataset/metrics/motion_metrics.cc`` (``src/`` prefix in newer releases) —
``GetChallengeConfig()`` for ``track_steps_per_second: 10``, ``prediction_steps_per_second: 2``,
``track_history_samples: 10``, ``track_future_samples: 80``, ``speed_lower_bound: 1.4``, ``speed_upper_bound: 11.0``,
``speed_scale_lower: 0.5``, ``speed_scale_upper: 1.0``, ``max_predictions: 6`` and the three
``step_configurations`` (``measurement_step`` 5 / 9 / 15 of the 2 Hz grid = track steps 40 / 60 / 90 = future
steps 29 / 49 / 79; ``lateral_miss_threshold`` 1.0 / 1.8 / 3.0; ``longitudinal_miss_threshold`` 2.0 / 3.6 / 6.0);
``SpeedScaleFactor`` (speed from the velocity at track step ``track_history_samples``, the linear ramp);
``GetDisplacementAtStep`` (rotation by minus the ground-truth heading at the measurement step, lateral = y,
longitudinal = x); ``IsTruePositive`` (displacements divided by the scale, miss when either exceeds its
threshold); ``AverageDisplacement`` / ``ComputeMinAverageDisplacement`` (the mean over the valid grid steps up to
the measurement step, min over the trajectories; FDE only where the measurement step is valid) and
``ComputeMissRate`` (0 as soon as one trajectory is a true positive). The same configuration appears in the
repository's motion tutorial.

:class:`WaymoMotionMetrics` accumulates the three metrics at every horizon, overall and per dataset group, in one
float64 sum state (``"sum"`` reduction: DDP and ``merge_state`` give the single-process result).
:func:`waymo_errors` gives the per-agent values behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from smartpretrain.metrics.forecasting import _check_inputs, top_k_modes
from smartpretrain.metrics.grouped import GroupedSumMetric, mean_or_nan


@dataclass(frozen=True)
class HorizonThresholds:
    """One evaluation horizon of the challenge: ``seconds`` after the current step, with the miss box's half
    sizes (metres, before the speed scale): ``lateral`` across and ``longitudinal`` along the ground-truth heading.
    """

    seconds: float
    lateral: float
    longitudinal: float

    @property
    def label(self) -> str:
        """``"3s"``: the horizon as it appears in output keys (``minFDE@3s``)."""
        return f"{self.seconds:g}s"


#: the challenge's horizons and miss thresholds (``GetChallengeConfig``: measurement steps 5 / 9 / 15 at 2 Hz)
CHALLENGE_HORIZONS: tuple[HorizonThresholds, ...] = (
    HorizonThresholds(3.0, lateral=1.0, longitudinal=2.0),
    HorizonThresholds(5.0, lateral=1.8, longitudinal=3.6),
    HorizonThresholds(8.0, lateral=3.0, longitudinal=6.0),
)
#: speed (m/s) at or below which the thresholds are scaled by ``SPEED_SCALE_LOWER``
SPEED_LOWER_BOUND: float = 1.4
#: speed (m/s) at or above which the thresholds are scaled by ``SPEED_SCALE_UPPER``
SPEED_UPPER_BOUND: float = 11.0
SPEED_SCALE_LOWER: float = 0.5
SPEED_SCALE_UPPER: float = 1.0
#: modes scored per agent
MAX_PREDICTIONS: int = 6
#: the rate (Hz) of the trajectory points the challenge scores (``prediction_steps_per_second``)
PREDICTION_HZ: float = 2.0
#: WOMD's step (s): 10 Hz tracks
WOMD_DT: float = 0.1

#: the metrics computed per horizon, in output order (the key is ``f"{name}@{horizon.label}"``)
METRIC_NAMES: tuple[str, ...] = ("minADE", "minFDE", "MR")
# columns of the sum state per horizon
_ADE, _ADE_N, _FDE, _FDE_N, _MISS = range(5)
_COLUMNS = 5


def speed_scale(
    speed: Tensor,
    lower: float = SPEED_LOWER_BOUND,
    upper: float = SPEED_UPPER_BOUND,
    scale_lower: float = SPEED_SCALE_LOWER,
    scale_upper: float = SPEED_SCALE_UPPER,
) -> Tensor:
    """The miss thresholds' scale for a speed:
    ``scale_lower + (scale_upper - scale_lower) * clamp((v - lower) / (upper - lower), 0, 1)``
    (``scale_lower`` below ``lower``, ``scale_upper`` above ``upper``, linear in between)."""
    if not upper > lower:
        raise ValueError(f"speed bounds must satisfy upper > lower, got lower={lower}, upper={upper}")
    fraction = ((speed - lower) / (upper - lower)).clamp(0.0, 1.0)
    return scale_lower + (scale_upper - scale_lower) * fraction


def _whole(x: float, what: str) -> int:
    n = round(x)
    if abs(x - n) > 1e-6:
        raise ValueError(f"{what} = {x:g} is not a whole number of steps")
    return n


def horizon_step(seconds: float, dt: float) -> int:
    """The future step (0-based, step 0 = ``dt`` after the current step) at ``seconds``: ``round(seconds / dt) - 1``
    (3 s at 10 Hz: 29)."""
    step = _whole(seconds / dt, f"horizon {seconds:g} s / dt {dt:g} s") - 1
    if step < 0:
        raise ValueError(f"horizon {seconds:g} s is before the first future step (dt {dt:g} s)")
    return step


def grid_stride(dt: float, prediction_hz: float | None) -> int:
    """Future steps per scored point: ``1 / (dt * prediction_hz)`` (5 for 10 Hz tracks scored at 2 Hz; 1 with
    ``prediction_hz=None``, every step)."""
    if prediction_hz is None:
        return 1
    stride = _whole(1.0 / (dt * prediction_hz), f"1 / (dt {dt:g} s * {prediction_hz:g} Hz)")
    if stride < 1:
        raise ValueError(f"prediction_hz {prediction_hz:g} is faster than the tracks (dt {dt:g} s)")
    return stride


def heading_from_displacement(target: Tensor, valid: Tensor) -> Tensor:
    """``[N, F]`` ground-truth headings estimated from the positions, for when no heading is given:
    ``atan2`` of ``target[i] - target[i - 1]`` where both steps are valid, else of ``target[i + 1] - target[i]``
    where both are valid, else 0 (a stationary agent, or an isolated step: the x axis)."""
    target = target.double()
    valid = valid.bool()
    zero = torch.zeros_like(target[:, :1])
    back = torch.cat([zero, target[:, 1:] - target[:, :-1]], dim=1)
    fwd = torch.cat([target[:, 1:] - target[:, :-1], zero], dim=1)
    false = torch.zeros_like(valid[:, :1])
    back_ok = torch.cat([false, valid[:, 1:] & valid[:, :-1]], dim=1)
    fwd_ok = torch.cat([valid[:, 1:] & valid[:, :-1], false], dim=1)
    step = torch.where(back_ok[..., None], back, torch.where(fwd_ok[..., None], fwd, torch.zeros_like(back)))
    step = torch.nan_to_num(step)
    return torch.atan2(step[..., 1], step[..., 0])


@dataclass
class WaymoErrors:
    """Per-agent values at each horizon (all ``[N, H]``, H horizons); NaN / False where not scored.

    Attributes:
        ade: minADE (min over modes of the mean error over the scored grid steps up to the horizon).
        fde: minFDE (min over modes of the error at the horizon step).
        missed: no mode inside the speed-scaled box at the horizon step.
        ade_scored: at least one grid step up to the horizon is valid.
        fde_scored: the horizon step is valid (minFDE and MR are scored).
    """

    ade: Tensor
    fde: Tensor
    missed: Tensor
    ade_scored: Tensor
    fde_scored: Tensor


def waymo_errors(
    pred: Tensor,
    prob: Tensor,
    target: Tensor,
    valid: Tensor,
    speed: Tensor,
    heading: Tensor | None = None,
    dt: float = WOMD_DT,
    horizons: Sequence[HorizonThresholds] = CHALLENGE_HORIZONS,
    max_predictions: int = MAX_PREDICTIONS,
    prediction_hz: float | None = PREDICTION_HZ,
    speed_bounds: tuple[float, float] = (SPEED_LOWER_BOUND, SPEED_UPPER_BOUND),
    speed_scales: tuple[float, float] = (SPEED_SCALE_LOWER, SPEED_SCALE_UPPER),
) -> WaymoErrors:
    """Per-agent minADE / minFDE / miss at each horizon, with the definitions of the module doc (float64).

    Args:
        pred: ``[N, M, F, 2]`` predicted trajectories (any frame shared with ``target`` and ``heading``).
        prob: ``[N, M]`` mode probabilities: the ``max_predictions`` most probable modes are scored when M is larger.
        target: ``[N, F, 2]`` ground truth; values at invalid steps are ignored (may be NaN).
        valid: ``[N, F]`` valid future steps.
        speed: ``[N]`` speed (m/s) or ``[N, 2]`` velocity at the current step.
        heading: ``[N, F]`` ground-truth headings (radians, same frame); None: :func:`heading_from_displacement`.
        dt: seconds per future step; horizons: the horizons and thresholds; prediction_hz: the rate of the points
            minADE averages over (None: every step); speed_bounds / speed_scales: see :func:`speed_scale`.

    Raises:
        ValueError: inconsistent shapes, a horizon not a whole number of steps or beyond the F predicted steps.
    """
    _check_inputs(pred, prob, target, valid)
    n, m, f, _ = pred.shape
    if speed.dim() == 2:
        speed = torch.linalg.norm(speed.double(), dim=-1)
    if tuple(speed.shape) != (n,):
        raise ValueError(f"speed must be [N] speeds or [N, 2] velocities with N = {n}, got {tuple(speed.shape)}")
    if heading is not None and tuple(heading.shape) != (n, f):
        raise ValueError(f"heading must be [N, F] = {(n, f)}, got {tuple(heading.shape)}")
    steps = [horizon_step(h.seconds, dt) for h in horizons]
    stride = grid_stride(dt, prediction_hz)
    for h, s in zip(horizons, steps, strict=True):
        if s >= f:
            raise ValueError(f"horizon {h.label} is future step {s}, but the forecast has {f} steps")
        if (s + 1) % stride:
            raise ValueError(f"horizon {h.label} (step {s}) is not on the {prediction_hz:g} Hz grid")
    valid = valid.bool()
    pred_k, _, _ = top_k_modes(pred.double(), prob.double(), min(int(max_predictions), m))
    target = target.double()
    zero = torch.zeros((), dtype=torch.float64, device=pred.device)
    dist = torch.where(valid[:, None], torch.linalg.norm(pred_k - target[:, None], dim=-1), zero)  # [N, K, F]
    heading = heading_from_displacement(target, valid) if heading is None else heading.double()
    scale = speed_scale(speed.double().to(pred.device), *speed_bounds, *speed_scales)  # [N]
    on_grid = (torch.arange(f, device=pred.device) + 1) % stride == 0  # [F]
    nan = torch.full((n,), float("nan"), dtype=torch.float64, device=pred.device)
    ade, fde, missed, ade_scored, fde_scored = [], [], [], [], []
    for h, s in zip(horizons, steps, strict=True):
        counted = valid[:, : s + 1] & on_grid[None, : s + 1]  # [N, s + 1]
        num = counted.sum(dim=1)
        mode_ade = (dist[:, :, : s + 1] * counted[:, None]).sum(dim=2) / num.clamp_min(1)[:, None].double()
        ok = num > 0
        ade.append(torch.where(ok, mode_ade.min(dim=1).values, nan))
        ade_scored.append(ok)
        at = valid[:, s]
        fde.append(torch.where(at, dist[:, :, s].min(dim=1).values, nan))
        fde_scored.append(at)
        error = pred_k[:, :, s] - target[:, None, s]  # [N, K, 2]
        cos, sin = torch.cos(heading[:, s])[:, None], torch.sin(heading[:, s])[:, None]
        lon = (cos * error[..., 0] + sin * error[..., 1]) / scale[:, None]
        lat = (-sin * error[..., 0] + cos * error[..., 1]) / scale[:, None]
        hit = (lat.abs() <= h.lateral) & (lon.abs() <= h.longitudinal)  # NaN (invalid step) compares False
        missed.append(at & ~hit.any(dim=1))
    return WaymoErrors(
        ade=torch.stack(ade, dim=1),
        fde=torch.stack(fde, dim=1),
        missed=torch.stack(missed, dim=1),
        ade_scored=torch.stack(ade_scored, dim=1),
        fde_scored=torch.stack(fde_scored, dim=1),
    )


class WaymoMotionMetrics(GroupedSumMetric):
    """WOMD challenge minADE / minFDE / MR at each horizon, overall and per dataset group.

    ``update(pred [N, M, F, 2], prob [N, M], target [N, F, 2], valid [N, F], speed [N] | [N, 2],
    heading [N, F] | None = None, group=None)``; ``group`` is one group name per agent (or one for all, or None).
    ``compute()`` returns float64 scalars::

        {"minADE@3s": ..., "minFDE@3s": ..., "MR@3s": ..., "minADE@5s": ..., ..., "MR@8s": ...,
         "womd/minADE@3s": ..., ...}

    The overall keys are always present (NaN while nothing is scored); a group's key only once that group has an
    agent scored for it (counts synchronised across processes before ``compute``, so every rank has the same keys).

    Args:
        dt: seconds per future step of the inputs (0.1 for WOMD); the horizon steps are derived from it.
        horizons: the horizons and their miss thresholds (default: the challenge's 3 / 5 / 8 s).
        max_predictions: modes scored per agent (the most probable ones; 6 in the challenge).
        prediction_hz: rate of the points minADE averages over (the challenge's 2 Hz; None: every step).
        datasets: the groups of the per-group breakdown.
        kwargs: passed to :class:`torchmetrics.Metric`.

    State: ``totals [1 + len(datasets), 5 * H]`` float64; per horizon i, columns ``5 i + (0..4)`` = sum of minADE,
    agents scored for minADE, sum of minFDE, agents scored for minFDE / MR, misses.
    """

    def __init__(
        self,
        dt: float = WOMD_DT,
        horizons: Sequence[HorizonThresholds] = CHALLENGE_HORIZONS,
        max_predictions: int = MAX_PREDICTIONS,
        prediction_hz: float | None = PREDICTION_HZ,
        datasets: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        horizons = tuple(horizons)
        if not horizons or len({h.label for h in horizons}) != len(horizons):
            raise ValueError(f"horizons must be distinct and at least one, got {horizons}")
        if max_predictions < 1:
            raise ValueError(f"max_predictions must be positive, got {max_predictions}")
        stride = grid_stride(dt, prediction_hz)
        for h in horizons:
            if (horizon_step(h.seconds, dt) + 1) % stride or not (h.lateral > 0 and h.longitudinal > 0):
                raise ValueError(f"bad horizon {h}: off the {prediction_hz} Hz grid or non-positive thresholds")
        super().__init__(num_columns=_COLUMNS * len(horizons), datasets=datasets, **kwargs)
        self.dt = float(dt)
        self.horizons = horizons
        self.max_predictions = int(max_predictions)
        self.prediction_hz = None if prediction_hz is None else float(prediction_hz)
        self.steps = tuple(horizon_step(h.seconds, dt) for h in horizons)

    @property
    def metric_names(self) -> list[str]:
        """The overall output keys, in output order."""
        return [f"{name}@{h.label}" for h in self.horizons for name in METRIC_NAMES]

    def update(
        self,
        pred: Tensor,
        prob: Tensor,
        target: Tensor,
        valid: Tensor,
        speed: Tensor,
        heading: Tensor | None = None,
        group: str | Sequence[str] | None = None,
    ) -> None:
        """Accumulate a batch of N agents (an agent counts for each value it is scored for)."""
        _check_inputs(pred, prob, target, valid)
        group_index = self._group_index(group, pred.shape[0])
        if pred.shape[0] == 0:
            return
        err = waymo_errors(
            pred, prob, target, valid, speed, heading, self.dt, self.horizons, self.max_predictions, self.prediction_hz
        )
        zero = torch.zeros((), dtype=torch.float64, device=err.ade.device)
        columns = []
        for i in range(len(self.horizons)):
            columns += [
                torch.where(err.ade_scored[:, i], err.ade[:, i], zero),
                err.ade_scored[:, i].double(),
                torch.where(err.fde_scored[:, i], err.fde[:, i], zero),
                err.fde_scored[:, i].double(),
                err.missed[:, i].double(),
            ]
        self._accumulate(torch.stack(columns, dim=1), group_index)

    def _row_values(self, row: Tensor, prefix: str, keep_empty: bool) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for i, h in enumerate(self.horizons):
            c = _COLUMNS * i
            values = {
                "minADE": (row[c + _ADE], row[c + _ADE_N]),
                "minFDE": (row[c + _FDE], row[c + _FDE_N]),
                "MR": (row[c + _MISS], row[c + _FDE_N]),
            }
            for name in METRIC_NAMES:
                total, count = values[name]
                if keep_empty or bool(count > 0):
                    out[f"{prefix}{name}@{h.label}"] = mean_or_nan(total, count)
        return out

    def counts(self) -> dict[str, int]:
        """Agents scored for minFDE / MR at the last horizon: ``{"all": n, group: n_g, ...}``."""
        c = _COLUMNS * (len(self.horizons) - 1) + _FDE_N
        out = {"all": int(self.totals[0, c].item())}
        out.update({name: int(self.totals[1 + d, c].item()) for d, name in enumerate(self.datasets)})
        return out


__all__ = [
    "CHALLENGE_HORIZONS",
    "MAX_PREDICTIONS",
    "PREDICTION_HZ",
    "SPEED_LOWER_BOUND",
    "SPEED_SCALE_LOWER",
    "SPEED_SCALE_UPPER",
    "SPEED_UPPER_BOUND",
    "WOMD_DT",
    "HorizonThresholds",
    "WaymoErrors",
    "WaymoMotionMetrics",
    "grid_stride",
    "heading_from_displacement",
    "horizon_step",
    "speed_scale",
    "waymo_errors",
]
