"""Waymo Open Motion challenge metrics: hand-computed cases (speed-scaled miss box, min-over-modes ADE, 2 Hz grid,
invalid horizons, top-K), per-group keys and the sum state's merge."""

from __future__ import annotations

import math

import pytest
import torch

from smartpretrain.metrics.forecasting import ForecastingMetrics
from smartpretrain.metrics.womd import (
    CHALLENGE_HORIZONS,
    HorizonThresholds,
    WaymoMotionMetrics,
    grid_stride,
    heading_from_displacement,
    horizon_step,
    speed_scale,
    waymo_errors,
)

F = 80  # WOMD: 8 s at 10 Hz
DT = 0.1
THETA = math.radians(30.0)
ALONG = torch.tensor([math.cos(THETA), math.sin(THETA)], dtype=torch.float64)  # unit vector of the heading
ACROSS = torch.tensor([-math.sin(THETA), math.cos(THETA)], dtype=torch.float64)  # left of the heading


def straight(speed: float = 20.0, f: int = F) -> torch.Tensor:
    """``[f, 2]`` ground truth: constant speed along heading 30 degrees, from the origin."""
    t = torch.arange(1, f + 1, dtype=torch.float64) * DT
    return speed * t[:, None] * ALONG


def one_agent(offsets: list[tuple[float, float]], speed: float = 20.0, with_heading: bool = True) -> dict:
    """One agent on :func:`straight`, one mode per ``(lateral, longitudinal)`` offset (constant over the future)."""
    gt = straight(speed)
    modes = torch.stack([gt + lat * ACROSS + lon * ALONG for lat, lon in offsets])
    return {
        "pred": modes[None],
        "prob": torch.full((1, len(offsets)), 1.0 / len(offsets), dtype=torch.float64),
        "target": gt[None],
        "valid": torch.ones(1, F, dtype=torch.bool),
        "speed": torch.tensor([speed], dtype=torch.float64),
        "heading": torch.full((1, F), THETA, dtype=torch.float64) if with_heading else None,
    }


def computed(inputs: dict, **kwargs) -> dict[str, float]:
    metric = WaymoMotionMetrics(**kwargs)
    metric.update(**inputs)
    return {k: float(v) for k, v in metric.compute().items()}


# ----------------------------------------------------------------------------------------------- constants


def test_horizon_steps_come_from_dt() -> None:
    assert [horizon_step(h.seconds, 0.1) for h in CHALLENGE_HORIZONS] == [29, 49, 79]
    assert horizon_step(8.0, 0.4) == 19  # ETH/UCY's step: the same horizons land elsewhere
    assert grid_stride(0.1, 2.0) == 5 and grid_stride(0.1, None) == 1
    with pytest.raises(ValueError, match="whole number"):
        horizon_step(3.0, 0.7)
    with pytest.raises(ValueError, match="whole number"):
        grid_stride(0.3, 2.0)


def test_challenge_thresholds() -> None:
    table = [(h.seconds, h.lateral, h.longitudinal) for h in CHALLENGE_HORIZONS]
    assert table == [(3.0, 1.0, 2.0), (5.0, 1.8, 3.6), (8.0, 3.0, 6.0)]
    assert [h.label for h in CHALLENGE_HORIZONS] == ["3s", "5s", "8s"]


def test_speed_scale_is_a_clamped_ramp() -> None:
    speeds = torch.tensor([0.0, 0.5, 1.4, 6.2, 11.0, 20.0], dtype=torch.float64)
    expected = torch.tensor([0.5, 0.5, 0.5, 0.75, 1.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(speed_scale(speeds), expected)


# ----------------------------------------------------------------------------------------------- miss rate


def test_lateral_offsets_at_highway_speed() -> None:
    # 20 m/s: scale 1, lateral half-widths 1 / 1.8 / 3 m
    hit = computed(one_agent([(0.9, 0.0)]))
    assert hit["MR@3s"] == hit["MR@5s"] == hit["MR@8s"] == 0.0
    assert hit["minFDE@8s"] == pytest.approx(0.9) and hit["minADE@8s"] == pytest.approx(0.9)
    miss = computed(one_agent([(3.1, 0.0)]))
    assert miss["MR@3s"] == miss["MR@5s"] == miss["MR@8s"] == 1.0
    between = computed(one_agent([(2.5, 0.0)]))  # inside the 8 s box only
    assert (between["MR@3s"], between["MR@5s"], between["MR@8s"]) == (1.0, 1.0, 0.0)


def test_slow_agents_get_half_size_boxes() -> None:
    # 0.5 m/s: scale 0.5, the 8 s lateral half-width is 1.5 m
    assert computed(one_agent([(0.9, 0.0)], speed=0.5))["MR@8s"] == 0.0
    assert computed(one_agent([(1.4, 0.0)], speed=0.5))["MR@8s"] == 0.0
    assert computed(one_agent([(1.6, 0.0)], speed=0.5))["MR@8s"] == 1.0  # a hit at 20 m/s
    assert computed(one_agent([(1.6, 0.0)], speed=20.0))["MR@8s"] == 0.0
    assert computed(one_agent([(3.1, 0.0)], speed=0.5))["MR@8s"] == 1.0
    # 6.2 m/s: scale 0.75, 8 s lateral half-width 2.25 m
    assert computed(one_agent([(2.0, 0.0)], speed=6.2))["MR@8s"] == 0.0
    assert computed(one_agent([(2.5, 0.0)], speed=6.2))["MR@8s"] == 1.0


def test_box_axes_follow_the_ground_truth_heading() -> None:
    # 4 m along the heading is inside the 8 s box (6 m), 4 m across is not (3 m)
    assert computed(one_agent([(0.0, 4.0)]))["MR@8s"] == 0.0
    assert computed(one_agent([(4.0, 0.0)]))["MR@8s"] == 1.0
    # a longitudinal error only: 5.5 m passes at 8 s (6 m), not at 0.5 m/s (3 m), nor at 3 s (2 m)
    long = computed(one_agent([(0.0, 5.5)]))
    assert (long["MR@3s"], long["MR@8s"]) == (1.0, 0.0)
    assert computed(one_agent([(0.0, 5.5)], speed=0.5))["MR@8s"] == 1.0


def test_one_mode_inside_is_enough_and_velocity_vectors_work() -> None:
    inputs = one_agent([(3.1, 0.0), (0.0, 4.0), (0.9, 0.0)])
    inputs["speed"] = (20.0 * ALONG)[None]  # [N, 2]: its norm is the speed
    values = computed(inputs)
    assert values["MR@8s"] == 0.0
    assert values["minFDE@8s"] == pytest.approx(0.9)


def test_heading_derived_from_the_target_when_not_given() -> None:
    gt = straight()[None]
    valid = torch.ones(1, F, dtype=torch.bool)
    torch.testing.assert_close(heading_from_displacement(gt, valid), torch.full((1, F), THETA, dtype=torch.float64))
    for lat in (0.9, 3.1, 2.5):
        assert computed(one_agent([(lat, 0.0)], with_heading=False)) == computed(one_agent([(lat, 0.0)]))


# ----------------------------------------------------------------------------------------------- ADE / FDE


def test_min_ade_is_over_modes_not_the_ade_of_the_fde_best_mode() -> None:
    gt = straight()
    close = gt + 1.0 * ACROSS  # 1 m off everywhere: ADE 1, FDE 1
    ends_right = gt + 3.0 * ACROSS
    ends_right[-1] = gt[-1]  # 3 m off except at 8 s: FDE@8s 0
    inputs = one_agent([(0.0, 0.0), (0.0, 0.0)])
    inputs["pred"] = torch.stack([close, ends_right])[None]
    values = computed(inputs)
    assert values["minADE@8s"] == pytest.approx(1.0)  # Waymo: the smaller ADE (mode 0)
    assert values["minFDE@8s"] == pytest.approx(0.0)  # taken independently (mode 1)
    assert values["minFDE@3s"] == pytest.approx(1.0)
    # AV2's minADE is the ADE of the FDE-best mode: (79 * 3 + 0) / 80
    av2 = ForecastingMetrics(ks=(2,))
    av2.update(inputs["pred"], inputs["prob"], inputs["target"], inputs["valid"])
    assert float(av2.compute()["minADE_2"]) == pytest.approx(79 * 3.0 / 80)


def test_min_ade_averages_the_2hz_grid() -> None:
    gt = straight()
    mode = gt.clone()
    mode[0] += 2.0 * ACROSS  # wrong at 0.1 s only: off the 0.5 s grid
    mode[4] += 1.5 * ACROSS  # wrong at 0.5 s: the first grid point
    inputs = one_agent([(0.0, 0.0)])
    inputs["pred"] = mode[None, None]
    grid = computed(inputs)
    assert grid["minADE@3s"] == pytest.approx(1.5 / 6)  # grid points 0.5, 1.0, ..., 3.0 s
    assert grid["minADE@8s"] == pytest.approx(1.5 / 16)
    every = computed(inputs, prediction_hz=None)
    assert every["minADE@3s"] == pytest.approx(3.5 / 30)
    assert every["minADE@8s"] == pytest.approx(3.5 / 80)


def test_invalid_horizon_steps_are_not_scored() -> None:
    gt = straight()
    target = torch.stack([gt, gt])
    pred = torch.stack([gt + 1.0 * ALONG, gt + 3.0 * ALONG])[:, None]  # 1 m / 3 m longitudinal errors
    valid = torch.ones(2, F, dtype=torch.bool)
    valid[1, 41:] = False  # the second agent is observed up to 4.2 s
    metric = WaymoMotionMetrics(datasets=("a", "b"))
    metric.update(pred, torch.ones(2, 1), target, valid, torch.tensor([20.0, 20.0]), None, ["a", "b"])
    values = {k: float(v) for k, v in metric.compute().items()}
    assert values["minFDE@3s"] == pytest.approx(2.0) and values["MR@3s"] == pytest.approx(0.5)
    assert values["minFDE@5s"] == pytest.approx(1.0) and values["MR@5s"] == 0.0  # agent 1 only
    assert values["minFDE@8s"] == pytest.approx(1.0)
    assert values["minADE@5s"] == pytest.approx(2.0)  # ADE needs a valid grid step, not the horizon
    assert values["minADE@8s"] == pytest.approx(2.0)
    # group b is scored for ADE at every horizon, for FDE / MR at 3 s only
    assert {k for k in values if k.startswith("b/")} == {
        "b/minADE@3s",
        "b/minFDE@3s",
        "b/MR@3s",
        "b/minADE@5s",
        "b/minADE@8s",
    }
    assert values["b/minFDE@3s"] == pytest.approx(3.0) and values["b/MR@3s"] == 1.0
    assert metric.counts() == {"all": 1, "a": 1, "b": 0}


def test_nan_targets_at_invalid_steps_are_ignored() -> None:
    inputs = one_agent([(0.9, 0.0)])
    inputs["valid"][0, 50:] = False
    inputs["target"][0, 50:] = float("nan")
    inputs["heading"][0, 50:] = float("nan")
    values = computed(inputs)
    assert values["minFDE@5s"] == pytest.approx(0.9) and values["MR@5s"] == 0.0
    assert values["minADE@8s"] == pytest.approx(0.9)
    assert math.isnan(values["minFDE@8s"]) and math.isnan(values["MR@8s"])  # overall keys stay, NaN


def test_top_six_modes_by_probability() -> None:
    offsets = [(2.0, 0.0)] * 6 + [(0.0, 0.0), (0.0, 0.0)]  # the two exact modes are the least probable
    inputs = one_agent(offsets)
    inputs["prob"] = torch.tensor([[0.15] * 6 + [0.05, 0.05]], dtype=torch.float64)
    assert computed(inputs)["minFDE@8s"] == pytest.approx(2.0)
    assert computed(inputs, max_predictions=8)["minFDE@8s"] == pytest.approx(0.0)
    inputs["prob"] = torch.tensor([[0.1] * 5 + [0.01, 0.3, 0.09]], dtype=torch.float64)  # one exact mode in the top 6
    assert computed(inputs)["minFDE@8s"] == pytest.approx(0.0)
    errors = waymo_errors(**{k: v for k, v in inputs.items()})
    assert errors.fde.shape == (1, 3) and not bool(errors.missed.any())


def test_horizon_beyond_the_forecast_is_an_error() -> None:
    inputs = one_agent([(0.0, 0.0)])
    inputs["pred"] = inputs["pred"][:, :, :60]  # 6 s of forecast
    for key in ("target", "valid", "heading"):
        inputs[key] = inputs[key][:, :60]
    with pytest.raises(ValueError, match="horizon 8s is future step 79"):
        computed(inputs)
    short = computed(inputs, horizons=CHALLENGE_HORIZONS[:2])
    assert set(short) == {"minADE@3s", "minFDE@3s", "MR@3s", "minADE@5s", "minFDE@5s", "MR@5s"}
    with pytest.raises(ValueError, match="grid"):
        WaymoMotionMetrics(horizons=(HorizonThresholds(3.2, 1.0, 2.0),))


# ----------------------------------------------------------------------------------------------- state


def random_agents(n: int = 40, m: int = 6, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(n, F, 2, generator=g, dtype=torch.float64) * 0.3 + torch.tensor([1.0, 0.0])
    target = torch.cumsum(steps, dim=1)
    pred = target[:, None] + 2.0 * torch.randn(n, m, F, 2, generator=g, dtype=torch.float64)
    prob = torch.softmax(torch.randn(n, m, generator=g, dtype=torch.float64), dim=-1)
    valid = torch.rand(n, F, generator=g) > 0.2
    valid[0] = False  # an agent without future
    speed = 15.0 * torch.rand(n, generator=g, dtype=torch.float64)
    heading = 0.3 * torch.randn(n, F, generator=g, dtype=torch.float64)
    return {"pred": pred, "prob": prob, "target": target, "valid": valid, "speed": speed, "heading": heading}


def test_merge_state_equals_single_instance_and_groups_partition() -> None:
    inputs = random_agents()
    n = len(inputs["pred"])
    group = ["womd" if i % 3 else "other" for i in range(n)]
    full = WaymoMotionMetrics(datasets=("womd", "other"))
    full.update(**inputs, group=group)
    half = n // 2
    first, second = (WaymoMotionMetrics(datasets=("womd", "other")) for _ in range(2))
    first.update(**{k: v[:half] for k, v in inputs.items()}, group=group[:half])
    second.update(**{k: v[half:] for k, v in inputs.items()}, group=group[half:])
    summed = first.totals + second.totals
    first.merge_state(second)
    torch.testing.assert_close(first.totals, summed)
    a, b = full.compute(), first.compute()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-12, equal_nan=True)
    # the group rows add up to the overall row
    torch.testing.assert_close(full.totals[1:].sum(dim=0), full.totals[0])
    assert full.totals.dtype == torch.float64
    assert {k.split("/")[0] for k in a if "/" in k} == {"womd", "other"}


def test_values_match_a_plain_loop() -> None:
    inputs = random_agents(n=12, seed=3)
    values = computed(inputs)
    pred, target, valid = inputs["pred"], inputs["target"], inputs["valid"]
    scale = speed_scale(inputs["speed"])
    for h in CHALLENGE_HORIZONS:
        s = horizon_step(h.seconds, DT)
        ades, fdes, misses = [], [], []
        for i in range(len(pred)):
            grid = [j for j in range(4, s + 1, 5) if valid[i, j]]
            if grid:
                ades.append(
                    min(
                        sum(float((pred[i, k, j] - target[i, j]).norm()) for j in grid) / len(grid)
                        for k in range(pred.shape[1])
                    )
                )
            if valid[i, s]:
                fdes.append(min(float((pred[i, k, s] - target[i, s]).norm()) for k in range(pred.shape[1])))
                c, sn = math.cos(float(inputs["heading"][i, s])), math.sin(float(inputs["heading"][i, s]))
                hit = False
                for k in range(pred.shape[1]):
                    dx, dy = (pred[i, k, s] - target[i, s]).tolist()
                    lon, lat = (c * dx + sn * dy) / float(scale[i]), (-sn * dx + c * dy) / float(scale[i])
                    hit |= abs(lat) <= h.lateral and abs(lon) <= h.longitudinal
                misses.append(0.0 if hit else 1.0)
        assert values[f"minADE@{h.label}"] == pytest.approx(sum(ades) / len(ades), abs=1e-9)
        assert values[f"minFDE@{h.label}"] == pytest.approx(sum(fdes) / len(fdes), abs=1e-9)
        assert values[f"MR@{h.label}"] == pytest.approx(sum(misses) / len(misses), abs=1e-12)


def test_bad_inputs_are_refused() -> None:
    inputs = one_agent([(0.0, 0.0)])
    with pytest.raises(ValueError, match="speed"):
        computed({**inputs, "speed": torch.ones(2)})
    with pytest.raises(ValueError, match="heading"):
        computed({**inputs, "heading": torch.zeros(1, F - 1)})
    with pytest.raises(ValueError, match="not one of the metric's datasets"):
        WaymoMotionMetrics(datasets=("womd",)).update(**inputs, group=["av2"])
