"""Maneuver labels of hand-made trajectories in the agent frame."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from smartpretrain.embeddings.maneuvers import Maneuver, ManeuverThresholds, classify_maneuvers

T = 50


def _label(points: Tensor, valid: Tensor | None = None) -> Maneuver:
    valid = torch.ones(points.shape[0], dtype=torch.bool) if valid is None else valid
    return Maneuver(int(classify_maneuvers(points[None], valid[None])[0]))


def straight(length: float = 20.0) -> Tensor:
    return torch.stack([torch.linspace(0, length, T), torch.zeros(T)], dim=-1)


def arc(degrees: float, radius: float = 15.0, left: bool = True) -> Tensor:
    theta = torch.linspace(0, math.radians(degrees), T)
    y = radius * (1 - torch.cos(theta))
    return torch.stack([radius * torch.sin(theta), y if left else -y], dim=-1)


def u_turn(radius: float = 4.0, leg: float = 10.0) -> Tensor:
    # a straight leg east, a half circle to the left, a straight leg back west
    n_leg, n_arc = 15, T - 30
    out_leg = torch.stack([torch.linspace(0, leg, n_leg), torch.zeros(n_leg)], dim=-1)
    theta = torch.linspace(0, math.pi, n_arc + 2)[1:-1]
    half = torch.stack([leg + radius * torch.sin(theta), radius * (1 - torch.cos(theta))], dim=-1)
    back = torch.stack([torch.linspace(leg, 0, n_leg), torch.full((n_leg,), 2 * radius)], dim=-1)
    return torch.cat([out_leg, half, back])


def s_shift(offset: float = 3.5, length: float = 40.0) -> Tensor:
    # y = offset (1 - cos(pi x / L)) / 2: level at both ends, so start and end heading are both along x
    x = torch.linspace(0, length, T)
    return torch.stack([x, offset * (1 - torch.cos(math.pi * x / length)) / 2], dim=-1)


def parked(jitter: float = 0.3, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    points = (torch.rand(T, 2, generator=g) * 2 - 1) * jitter
    points[0] = 0.0  # the agent frame's origin
    return points


def test_labels_and_names() -> None:
    assert [m.label for m in Maneuver] == ["stationary", "straight", "left", "right", "u_turn", "lane_change"]
    assert [int(m) for m in Maneuver] == list(range(6))


def test_hand_made_maneuvers() -> None:
    assert _label(straight()) is Maneuver.STRAIGHT
    assert _label(parked()) is Maneuver.STATIONARY
    assert _label(arc(90.0)) is Maneuver.LEFT
    assert _label(arc(90.0, left=False)) is Maneuver.RIGHT
    assert _label(u_turn()) is Maneuver.U_TURN
    assert _label(s_shift()) is Maneuver.LANE_CHANGE
    # a small drift sideways is not a lane change, a gentle bend is not a turn
    assert _label(s_shift(offset=0.5)) is Maneuver.STRAIGHT
    assert _label(arc(10.0, radius=40.0)) is Maneuver.STRAIGHT  # ends 0.6 m to the left


def test_parked_path_is_long_but_stationary() -> None:
    # the jitter's path length is metres: the rule must not read it as motion
    points = parked()
    assert (points[1:] - points[:-1]).norm(dim=-1).sum() > 5.0
    assert _label(points) is Maneuver.STATIONARY


def test_batched_rows_are_independent() -> None:
    rows = [straight(), parked(), arc(90.0), arc(90.0, left=False), u_turn(), s_shift()]
    labels = classify_maneuvers(torch.stack(rows), torch.ones(len(rows), T, dtype=torch.bool))
    assert labels.dtype == torch.long
    assert labels.tolist() == [1, 0, 2, 3, 4, 5]


def test_invalid_steps_do_not_change_the_label() -> None:
    valid = torch.ones(T, dtype=torch.bool)
    valid[10:30] = False
    for points, want in ((straight(), Maneuver.STRAIGHT), (arc(90.0), Maneuver.LEFT)):
        garbage = points.clone()
        garbage[~valid] = torch.tensor([-40.0, 25.0])  # far off the path: it would read as a U-turn or a swerve
        assert _label(garbage, valid) is want
        zeroed = points.clone()
        zeroed[~valid] = 0.0  # the convention of the windows
        assert _label(zeroed, valid) is want
    # a straight line whose invalid tail is zero must not read as coming back to the origin
    tail = straight()
    tail_valid = torch.ones(T, dtype=torch.bool)
    tail_valid[40:] = False
    tail[40:] = 0.0
    assert _label(tail, tail_valid) is Maneuver.STRAIGHT


def test_fewer_than_two_valid_steps_are_stationary() -> None:
    points = straight(100.0)
    one = torch.zeros(T, dtype=torch.bool)
    one[25] = True
    assert _label(points, one) is Maneuver.STATIONARY
    assert _label(points, torch.zeros(T, dtype=torch.bool)) is Maneuver.STATIONARY
    two = one.clone()
    two[40] = True
    assert _label(points, two) is Maneuver.STRAIGHT
    # T < 2: nothing to classify
    assert classify_maneuvers(torch.zeros(3, 1, 2), torch.ones(3, 1, dtype=torch.bool)).tolist() == [0, 0, 0]


def test_thresholds_apply() -> None:
    # the same 40° arc: a turn at the default, straight with a 60° turn threshold
    points = arc(40.0, radius=20.0)
    assert _label(points) is Maneuver.LEFT
    relaxed = ManeuverThresholds(turn_deg=60.0)
    label = classify_maneuvers(points[None], torch.ones(1, T, dtype=torch.bool), relaxed)
    # ... which the lateral rule then reads as an offset of its end point (y = 4.7 m)
    assert Maneuver(int(label[0])) is Maneuver.LANE_CHANGE
    # a 20 m line is stationary for a threshold beyond 20 m
    far = classify_maneuvers(straight()[None], torch.ones(1, T, dtype=torch.bool), ManeuverThresholds(25.0))
    assert int(far[0]) == Maneuver.STATIONARY


@pytest.mark.parametrize(
    "kwargs",
    [
        {"stationary_m": 0.0},
        {"turn_deg": -1.0},
        {"lateral_m": 0.0},
        {"direction_m": float("nan")},
        {"turn_deg": 150.0, "u_turn_deg": 150.0},
        {"turn_deg": 90.0, "u_turn_deg": 60.0},
        {"u_turn_deg": 200.0},
    ],
)
def test_thresholds_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ManeuverThresholds(**kwargs)


def test_shape_refused() -> None:
    with pytest.raises(ValueError, match="positions"):
        classify_maneuvers(torch.zeros(2, T, 3), torch.ones(2, T, dtype=torch.bool))
