"""Pedestrian best-of-K ADE / FDE: hand-computed cases, independent minima, top-K, K selection, groups, merge."""

from __future__ import annotations

import math

import pytest
import torch

from smartpretrain.metrics.forecasting import ForecastingMetrics
from smartpretrain.metrics.pedestrian import PedestrianMetrics, best_of_k_errors, field_ks

F = 12  # ETH/UCY: 12 future frames at 2.5 Hz


def walk(f: int = F) -> torch.Tensor:
    """``[f, 2]`` a pedestrian walking 0.5 m per frame along x."""
    return torch.stack([0.5 * torch.arange(1, f + 1, dtype=torch.float64), torch.zeros(f, dtype=torch.float64)], -1)


def offset(gt: torch.Tensor, dy: float) -> torch.Tensor:
    return gt + torch.tensor([0.0, dy], dtype=torch.float64)


def computed(pred, prob, target, valid, ks=(1,), **kwargs) -> dict[str, float]:
    metric = PedestrianMetrics(ks=ks, **kwargs)
    metric.update(pred, prob, target, valid)
    return {k: float(v) for k, v in metric.compute().items()}


def test_field_ks_follow_the_number_of_modes() -> None:
    assert field_ks(1) == (1,)
    assert field_ks(6) == (1, 6)
    assert field_ks(19) == (1, 6)
    assert field_ks(20) == (1, 6, 20)
    assert field_ks(None) == (1, 6)


def test_constant_offset() -> None:
    gt = walk()
    values = computed(offset(gt, 0.7)[None, None], torch.ones(1, 1), gt[None], torch.ones(1, F, dtype=torch.bool))
    assert values == {"ADE_1": pytest.approx(0.7), "FDE_1": pytest.approx(0.7)}


def test_ade_and_fde_minima_are_taken_independently() -> None:
    gt = walk()
    close = offset(gt, 1.0)  # ADE 1, FDE 1
    ends_right = offset(gt, 3.0)
    ends_right[-1] = gt[-1]  # ADE 3 * 11 / 12, FDE 0
    pred = torch.stack([close, ends_right])[None]
    prob = torch.tensor([[0.5, 0.5]])
    valid = torch.ones(1, F, dtype=torch.bool)
    values = computed(pred, prob, gt[None], valid, ks=(2,))
    assert values["ADE_2"] == pytest.approx(1.0)
    assert values["FDE_2"] == pytest.approx(0.0)
    # AV2's minADE takes the ADE of the FDE-best mode instead
    av2 = ForecastingMetrics(ks=(2,))
    av2.update(pred, prob, gt[None], valid)
    assert float(av2.compute()["minADE_2"]) == pytest.approx(3.0 * 11 / 12)


def test_k_most_probable_modes_are_scored() -> None:
    gt = walk()
    # 20 modes: mode j is off by 1 + j / 10 m, except the least probable one, which is exact
    pred = torch.stack([offset(gt, 1.0 + j / 10) for j in range(20)])
    pred[19] = gt
    logits = torch.linspace(3.0, 0.0, 20)  # mode 0 most probable, mode 19 least
    prob = torch.softmax(logits, dim=0)[None]
    values = computed(pred[None], prob, gt[None], torch.ones(1, F, dtype=torch.bool), ks=field_ks(20))
    assert values["ADE_1"] == pytest.approx(1.0) and values["FDE_1"] == pytest.approx(1.0)
    assert values["ADE_6"] == pytest.approx(1.0)  # modes 0-5: the best is still mode 0
    assert values["ADE_20"] == pytest.approx(0.0) and values["FDE_20"] == pytest.approx(0.0)
    # the most probable mode is K = 1's, wherever it is
    prob = torch.softmax(torch.linspace(0.0, 3.0, 20), dim=0)[None]  # now mode 19 is the most probable
    assert computed(pred[None], prob, gt[None], torch.ones(1, F, dtype=torch.bool))["ADE_1"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="cannot score K=20"):
        computed(pred[None, :6], prob[:, :6], gt[None], torch.ones(1, F, dtype=torch.bool), ks=(20,))


def test_missing_future_steps() -> None:
    gt = walk()
    pred = offset(gt, 1.0)
    pred[7:] += torch.tensor([0.0, 1.0], dtype=torch.float64)  # 2 m off from frame 8 on
    valid = torch.ones(2, F, dtype=torch.bool)
    valid[0, 9:] = False  # observed for 9 frames: its final step is frame 9
    valid[1] = False  # never observed: not scored
    target = torch.stack([gt, gt])
    target[0, 9:] = float("nan")
    err = best_of_k_errors(torch.stack([pred, pred])[:, None], torch.ones(2, 1), target, valid, k=1)
    assert float(err.ade[0]) == pytest.approx((7 * 1.0 + 2 * 2.0) / 9)
    assert float(err.fde[0]) == pytest.approx(2.0)
    assert bool(err.scored[0]) and not bool(err.scored[1]) and math.isnan(float(err.ade[1]))
    values = computed(torch.stack([pred, pred])[:, None], torch.ones(2, 1), target, valid)
    assert values["ADE_1"] == pytest.approx((7 * 1.0 + 2 * 2.0) / 9)


def random_agents(n: int = 30, m: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = torch.cumsum(0.4 * torch.randn(n, F, 2, generator=g, dtype=torch.float64), dim=1)
    pred = target[:, None] + torch.randn(n, m, F, 2, generator=g, dtype=torch.float64)
    prob = torch.softmax(torch.randn(n, m, generator=g, dtype=torch.float64), dim=-1)
    valid = torch.rand(n, F, generator=g) > 0.1
    return pred, prob, target, valid


def test_groups_and_merge_state() -> None:
    pred, prob, target, valid = random_agents()
    group = ["eth_ucy" if i % 2 else "other" for i in range(len(pred))]
    ks = (1, 6, 20)
    full = PedestrianMetrics(ks=ks, datasets=("eth_ucy", "other", "unused"))
    full.update(pred, prob, target, valid, group)
    first, second = (PedestrianMetrics(ks=ks, datasets=("eth_ucy", "other", "unused")) for _ in range(2))
    first.update(pred[:13], prob[:13], target[:13], valid[:13], group[:13])
    second.update(pred[13:], prob[13:], target[13:], valid[13:], group[13:])
    summed = first.totals + second.totals
    first.merge_state(second)
    torch.testing.assert_close(first.totals, summed)
    a, b = full.compute(), first.compute()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-12)
    assert {k for k in a if k.startswith("eth_ucy/")} == {f"eth_ucy/{m}_{k}" for k in ks for m in ("ADE", "FDE")}
    assert not any(k.startswith("unused/") for k in a)  # no agent: no keys
    assert full.counts() == {"all": 30, "eth_ucy": 15, "other": 15, "unused": 0}
    # per-group values are the metric over that group's agents alone
    rows = [i for i, g in enumerate(group) if g == "eth_ucy"]
    alone = PedestrianMetrics(ks=ks)
    alone.update(pred[rows], prob[rows], target[rows], valid[rows])
    for key, value in alone.compute().items():
        torch.testing.assert_close(a[f"eth_ucy/{key}"], value, rtol=0, atol=1e-12)


def test_values_match_a_plain_loop() -> None:
    pred, prob, target, valid = random_agents(n=8, seed=4)
    values = computed(pred, prob, target, valid, ks=(6,))
    ades, fdes = [], []
    for i in range(len(pred)):
        keep = torch.argsort(prob[i], descending=True)[:6].tolist()
        steps = [j for j in range(F) if valid[i, j]]
        ades.append(min(sum(float((pred[i, k, j] - target[i, j]).norm()) for j in steps) / len(steps) for k in keep))
        fdes.append(min(float((pred[i, k, steps[-1]] - target[i, steps[-1]]).norm()) for k in keep))
    assert values["ADE_6"] == pytest.approx(sum(ades) / len(ades), abs=1e-9)
    assert values["FDE_6"] == pytest.approx(sum(fdes) / len(fdes), abs=1e-9)
