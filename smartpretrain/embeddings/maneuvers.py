"""Coarse maneuver labels of short trajectories in the agent frame: what a retrieved neighbour is compared by.

A trajectory is ``positions [B, T, 2]`` (metres, origin at its first point, x along the heading there, y to
the left) with ``valid [B, T]``; invalid steps are ignored wherever they are. Per row:

* **extent** ``e = max_t |p_t - p_first|`` over the valid steps: how far the agent ever gets from where it
  started. Not the path length: the 0.3 m detection jitter of a parked agent sums to metres of path over 50
  steps, but never takes it far from its first point.
* **start direction** ``s = p_a - p_first``, ``p_a`` the first valid point at least ``r = min(direction_m, e)``
  from ``p_first``; **end direction** ``u = p_last - p_b``, ``p_b`` the last valid point at least ``min
  (direction_m, max_t |p_last - p_t|)`` before ``p_last``. A chord of ``direction_m`` metres, not one step:
  at walking speed one 0.1 s step is a few cm, the size of the position noise, so its direction is noise.
* **heading change** ``dpsi = atan2(s x u, s . u)`` in degrees, in (-180, 180], positive = counter-clockwise
  (left).
* **lateral offset** ``l = (s / |s|) x (p_last - p_first)``: the end point's y in the start frame (positive =
  left of the start line).

The first rule that holds gives the label (:class:`ManeuverThresholds`, defaults):

===============  ===========================  =======  ===========================================================
label            rule                         default  meaning
===============  ===========================  =======  ===========================================================
``stationary``   ``e < stationary_m``         2 m      never gets further than this from its start (also: a row
                                                       with fewer than 2 valid steps)
``u_turn``       ``|dpsi| >= u_turn_deg``     150°     reverses its direction of travel
``left``         ``dpsi >= turn_deg``         30°      turns left
``right``        ``dpsi <= -turn_deg``        30°      turns right
``lane_change``  ``|l| >= lateral_m``         1.5 m    ends beside its start line without turning (an S-shift:
                                                       a lane change, a swerve, a merge)
``straight``     otherwise
===============  ===========================  =======  ===========================================================

``direction_m`` (1 m) is the chord length of the start and end directions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum

import torch
from torch import Tensor

__all__ = ["Maneuver", "ManeuverThresholds", "classify_maneuvers"]


class Maneuver(IntEnum):
    """Maneuver label of a trajectory (the values :func:`classify_maneuvers` returns)."""

    STATIONARY = 0
    STRAIGHT = 1
    LEFT = 2
    RIGHT = 3
    U_TURN = 4
    LANE_CHANGE = 5  #: a lateral offset of the end point without a turn

    @property
    def label(self) -> str:
        """The lower-case name (``"u_turn"``, ``"lane_change"``)."""
        return self.name.lower()


@dataclass(frozen=True)
class ManeuverThresholds:
    """The thresholds of :func:`classify_maneuvers` (see the module docstring's table).

    Attributes:
        stationary_m: extent (largest distance of a valid point from the first one, m) below which the agent is
            stationary.
        turn_deg: |heading change| (degrees) from which the agent turns.
        u_turn_deg: |heading change| (degrees) from which the turn is a U-turn.
        lateral_m: |lateral offset| of the end point in the start frame (m) from which a trajectory that does not
            turn is a lane change.
        direction_m: chord length (m) over which the start and end directions are measured.
    """

    stationary_m: float = 2.0
    turn_deg: float = 30.0
    u_turn_deg: float = 150.0
    lateral_m: float = 1.5
    direction_m: float = 1.0

    def __post_init__(self) -> None:
        values = (self.stationary_m, self.turn_deg, self.u_turn_deg, self.lateral_m, self.direction_m)
        if not all(math.isfinite(v) and v > 0 for v in values):
            raise ValueError(f"maneuver thresholds must all be finite and > 0, got {self}")
        if not self.turn_deg < self.u_turn_deg <= 180.0:
            raise ValueError(
                f"maneuver thresholds need turn_deg < u_turn_deg <= 180, got {self.turn_deg} and {self.u_turn_deg}"
            )


def _cross(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _take(positions: Tensor, index: Tensor) -> Tensor:
    """``positions[b, index[b]]``: ``[B, T, 2], [B] -> [B, 2]``."""
    # rows without a valid step ask for index -1 or T: any in-range step does (they are labelled stationary)
    index = index.clamp(0, positions.shape[1] - 1)
    return positions.gather(1, index[:, None, None].expand(-1, 1, 2)).squeeze(1)


def classify_maneuvers(positions: Tensor, valid: Tensor, thresholds: ManeuverThresholds | None = None) -> Tensor:
    """The :class:`Maneuver` of each trajectory (rules of the module docstring).

    Args:
        positions: ``[B, T, 2]`` positions in the agent frame (m).
        valid: ``[B, T] bool``; the positions of invalid steps are never read.
        thresholds: the rules' thresholds (default :class:`ManeuverThresholds`).

    Returns:
        ``[B] int64`` :class:`Maneuver` values.
    """
    thresholds = thresholds or ManeuverThresholds()
    if positions.dim() != 3 or positions.shape[-1] != 2 or valid.shape != positions.shape[:2]:
        raise ValueError(
            f"expected positions [B, T, 2] and valid [B, T], got {tuple(positions.shape)} and {tuple(valid.shape)}"
        )
    positions, valid = positions.float(), valid.bool()
    b, t = valid.shape
    if t < 2:
        return torch.full((b,), int(Maneuver.STATIONARY), dtype=torch.long, device=valid.device)
    steps = torch.arange(t, device=valid.device).expand(b, t)
    first = torch.where(valid, steps, t).amin(dim=1)
    last = torch.where(valid, steps, -1).amax(dim=1)
    p_first, p_last = _take(positions, first), _take(positions, last)

    # distances from the first / to the last point; -1 at invalid steps, so no invalid step is ever selected
    from_first = torch.where(valid, (positions - p_first[:, None]).norm(dim=-1), -1.0)
    to_last = torch.where(valid, (p_last[:, None] - positions).norm(dim=-1), -1.0)
    extent = from_first.amax(dim=1)
    # the reach is at most the farthest distance, so some valid step always attains it
    reach_start = extent.clamp(max=thresholds.direction_m)
    reach_end = to_last.amax(dim=1).clamp(max=thresholds.direction_m)
    start_idx = torch.where(from_first >= reach_start[:, None], steps, t).amin(dim=1)
    end_idx = torch.where(to_last >= reach_end[:, None], steps, -1).amax(dim=1)
    start_dir = _take(positions, start_idx) - p_first
    end_dir = p_last - _take(positions, end_idx)

    heading_change = torch.rad2deg(torch.atan2(_cross(start_dir, end_dir), (start_dir * end_dir).sum(dim=-1)))
    start_unit = start_dir / start_dir.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    lateral = _cross(start_unit, p_last - p_first)

    # rules applied from the last to the first, so that the first one that holds is written last
    labels = torch.full((b,), int(Maneuver.STRAIGHT), dtype=torch.long, device=valid.device)
    labels[lateral.abs() >= thresholds.lateral_m] = int(Maneuver.LANE_CHANGE)
    labels[heading_change <= -thresholds.turn_deg] = int(Maneuver.RIGHT)
    labels[heading_change >= thresholds.turn_deg] = int(Maneuver.LEFT)
    labels[heading_change.abs() >= thresholds.u_turn_deg] = int(Maneuver.U_TURN)
    labels[(extent < thresholds.stationary_m) | (valid.sum(dim=1) < 2)] = int(Maneuver.STATIONARY)
    return labels
