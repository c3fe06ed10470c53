"""Forecasting metrics: agreement with the av2 package's reference functions, masking, top-K, DDP reduction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from av2.datasets.motion_forecasting.eval.metrics import (
    compute_ade,
    compute_brier_fde,
    compute_fde,
    compute_is_missed_prediction,
)

from smartpretrain.backbones.base import EvalTargets
from smartpretrain.data.taxonomy import AgentRole
from smartpretrain.metrics.forecasting import (
    BrierMinFDE,
    ForecastingMetrics,
    MinADE,
    MinFDE,
    MissRate,
    agent_datasets,
    forecast_errors,
    select_agents,
    top_k_modes,
)

TOL = 1e-6


def random_inputs(n: int = 64, k: int = 6, f: int = 60, seed: int = 0, spread: float = 3.0):
    """float64 predictions scattered around a random-walk ground truth, and softmax probabilities."""
    g = torch.Generator().manual_seed(seed)
    target = torch.cumsum(torch.randn(n, f, 2, generator=g, dtype=torch.float64), dim=1)
    pred = target[:, None] + spread * torch.randn(n, k, f, 2, generator=g, dtype=torch.float64)
    prob = torch.softmax(2.0 * torch.randn(n, k, generator=g, dtype=torch.float64), dim=-1)
    valid = torch.ones(n, f, dtype=torch.bool)
    return pred, prob, target, valid


def av2_reference(pred: torch.Tensor, prob: torch.Tensor, target: torch.Tensor, k: int) -> dict[str, float]:
    """Per-agent av2 functions on the K most probable modes (fully valid futures), averaged over agents."""
    values: dict[str, list[float]] = {"minADE": [], "minFDE": [], "MR": [], "brier-minFDE": []}
    for p_traj, p_prob, gt in zip(pred.numpy(), prob.numpy(), target.numpy(), strict=True):
        keep = np.argsort(-p_prob, kind="stable")[:k] if k < len(p_prob) else np.arange(len(p_prob))
        traj, pr = p_traj[keep], p_prob[keep]
        fde = compute_fde(traj, gt)
        best = int(np.argmin(fde))
        values["minADE"].append(compute_ade(traj, gt)[best])
        values["minFDE"].append(fde[best])
        values["MR"].append(float(compute_is_missed_prediction(traj, gt, 2.0)[best]))
        values["brier-minFDE"].append(compute_brier_fde(traj, gt, pr, normalize=True)[best])
    return {f"{name}_{k}": float(np.mean(v)) for name, v in values.items()}


def numpy_reference(pred, prob, target, valid, k: int, threshold: float = 2.0) -> dict[str, float]:
    """Plain-loop reference with masked futures: last valid step, FDE-best mode, ADE over valid steps."""
    pred, prob, target, valid = (np.asarray(x) for x in (pred, prob, target, valid))
    values: dict[str, list[float]] = {"minADE": [], "minFDE": [], "MR": [], "brier-minFDE": []}
    for a in range(len(pred)):
        steps = np.flatnonzero(valid[a])
        if len(steps) == 0:
            continue
        order = sorted(range(pred.shape[1]), key=lambda m: -prob[a, m])
        modes = order[:k] if k < pred.shape[1] else list(range(pred.shape[1]))
        p = prob[a, modes] / prob[a, modes].sum()
        last = steps[-1]
        fdes = [np.hypot(*(pred[a, m, last] - target[a, last])) for m in modes]
        best = int(np.argmin(fdes))
        m = modes[best]
        ade = np.mean([np.hypot(*(pred[a, m, t] - target[a, t])) for t in steps])
        values["minADE"].append(ade)
        values["minFDE"].append(fdes[best])
        values["MR"].append(float(fdes[best] > threshold))
        values["brier-minFDE"].append(fdes[best] + (1 - p[best]) ** 2)
    return {f"{name}_{k}": float(np.mean(v)) for name, v in values.items()}


def assert_close(got: dict[str, torch.Tensor], want: dict[str, float], tol: float = TOL) -> None:
    for key, value in want.items():
        assert key in got, f"missing {key}"
        assert abs(float(got[key]) - value) <= tol * max(1.0, abs(value)), f"{key}: {float(got[key])} != {value}"


# ----------------------------------------------------------------------------------------------- av2 agreement


@pytest.mark.parametrize("k", [1, 2, 6])
def test_matches_av2_functions_fully_valid(k):
    pred, prob, target, valid = random_inputs(n=80, seed=k)
    metric = ForecastingMetrics(ks=(k,))
    metric.update(pred, prob, target, valid)
    out = metric.compute()
    assert set(out) == {f"minADE_{k}", f"minFDE_{k}", f"MR_{k}", f"brier-minFDE_{k}"}
    want = av2_reference(pred, prob, target, k)
    assert 0.0 < want[f"MR_{k}"] < 1.0  # the test data exercises both outcomes of the miss threshold
    assert_close(out, want)


def test_per_agent_errors_match_av2():
    pred, prob, target, valid = random_inputs(n=20, seed=3)
    err = forecast_errors(pred, prob, target, valid, k=6)
    for a in range(20):
        traj, gt, pr = pred[a].numpy(), target[a].numpy(), prob[a].numpy()
        fde = compute_fde(traj, gt)
        best = int(np.argmin(fde))
        assert int(err.best_mode[a]) == best
        assert float(err.fde[a]) == pytest.approx(fde.min(), abs=TOL)
        assert float(err.ade[a]) == pytest.approx(compute_ade(traj, gt)[best], abs=TOL)
        assert bool(err.missed[a]) == bool(compute_is_missed_prediction(traj, gt)[best])
        assert float(err.brier_fde[a]) == pytest.approx(compute_brier_fde(traj, gt, pr)[best], abs=TOL)


def test_min_ade_uses_fde_best_mode_not_min_ade():
    # mode 0: perfect except a 3 m endpoint error; mode 1: 1 m off everywhere -> FDE picks mode 1.
    f = 10
    target = torch.zeros(1, f, 2, dtype=torch.float64)
    pred = torch.zeros(1, 2, f, 2, dtype=torch.float64)
    pred[0, 0, -1, 0] = 3.0
    pred[0, 1, :, 1] = 1.0
    prob = torch.tensor([[0.25, 0.75]], dtype=torch.float64)
    metric = ForecastingMetrics(ks=(2,))
    metric.update(pred, prob, target, torch.ones(1, f, dtype=torch.bool))
    out = metric.compute()
    assert float(out["minFDE_2"]) == pytest.approx(1.0)
    assert float(out["minADE_2"]) == pytest.approx(1.0)  # min ADE over modes would be 0.3
    assert float(out["MR_2"]) == 0.0
    assert float(out["brier-minFDE_2"]) == pytest.approx(1.0 + 0.25**2)


def test_k1_selects_most_probable_mode():
    pred, prob, target, valid = random_inputs(n=30, seed=5)
    metric = ForecastingMetrics(ks=(1, 6))
    metric.update(pred, prob, target, valid)
    out = metric.compute()
    top = prob.argmax(dim=1)
    chosen = pred[torch.arange(30), top]  # [N, F, 2]
    dist = torch.linalg.norm(chosen - target, dim=-1)
    assert float(out["minFDE_1"]) == pytest.approx(float(dist[:, -1].mean()), abs=TOL)
    assert float(out["minADE_1"]) == pytest.approx(float(dist.mean()), abs=TOL)
    assert float(out["brier-minFDE_1"]) == pytest.approx(float(out["minFDE_1"]), abs=TOL)  # p renormalised to 1
    assert float(out["minFDE_6"]) <= float(out["minFDE_1"])
    _, _, index = top_k_modes(pred, prob, 1)
    assert torch.equal(index[:, 0], top)
    errors = forecast_errors(pred, prob, target, valid, k=1)
    assert torch.equal(errors.best_mode, top)


def test_top_k_renormalises_and_orders():
    pred, prob, _, _ = random_inputs(n=10, seed=6)
    pred_k, prob_k, index = top_k_modes(pred, prob, 3)
    assert pred_k.shape == (10, 3, 60, 2)
    torch.testing.assert_close(prob_k.sum(dim=1), torch.ones(10, dtype=torch.float64))
    assert (prob_k[:, :-1] >= prob_k[:, 1:]).all()
    expected = torch.sort(prob, dim=1, descending=True).indices[:, :3]
    assert torch.equal(index, expected)
    torch.testing.assert_close(pred_k, pred[torch.arange(10)[:, None], index])
    with pytest.raises(ValueError, match="K=7"):
        top_k_modes(pred, prob, 7)


# ----------------------------------------------------------------------------------------------- masking


def masked_inputs(seed: int = 0):
    pred, prob, target, valid = random_inputs(n=60, f=30, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    valid = torch.rand(60, 30, generator=g) > 0.3
    valid[:5] = False  # no valid step: skipped
    valid[5:10] = True
    valid[10, :] = False
    valid[10, 0] = True  # a single valid step, the first
    target = target.masked_fill(~valid[..., None], float("nan"))  # padding must not leak into the metrics
    return pred, prob, target, valid


@pytest.mark.parametrize("k", [1, 3, 6])
def test_masked_futures_match_numpy_reference(k):
    pred, prob, target, valid = masked_inputs(seed=k)
    metric = ForecastingMetrics(ks=(k,))
    metric.update(pred, prob, target, valid)
    out = metric.compute()
    assert_close(out, numpy_reference(pred, prob, target, valid, k))
    assert metric.counts()["all"] == int(valid.any(dim=1).sum())


def test_agents_without_valid_steps_are_ignored():
    pred, prob, target, valid = random_inputs(n=20, seed=8)
    extra_pred = torch.full((4, 6, 60, 2), 1e6, dtype=torch.float64)
    extra_target = torch.full((4, 60, 2), float("nan"), dtype=torch.float64)
    extra_prob = torch.full((4, 6), 1 / 6, dtype=torch.float64)
    extra_valid = torch.zeros(4, 60, dtype=torch.bool)

    clean = ForecastingMetrics(ks=(1, 6), datasets=("av2", "womd"))
    clean.update(pred, prob, target, valid, group="av2")
    mixed = ForecastingMetrics(ks=(1, 6), datasets=("av2", "womd"))
    mixed.update(
        torch.cat([extra_pred[:2], pred, extra_pred[2:]]),
        torch.cat([extra_prob[:2], prob, extra_prob[2:]]),
        torch.cat([extra_target[:2], target, extra_target[2:]]),
        torch.cat([extra_valid[:2], valid, extra_valid[2:]]),
        group=["womd", "womd"] + ["av2"] * 20 + ["womd", "womd"],
    )
    mixed.update(extra_pred, extra_prob, extra_target, extra_valid)  # nothing to score at all
    a, b = clean.compute(), mixed.compute()
    assert a.keys() == b.keys()
    assert "womd/minFDE_6" not in b  # womd only had unscorable agents
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-12)
    assert mixed.counts() == {"all": 20, "av2": 20, "womd": 0}

    err = forecast_errors(extra_pred, extra_prob, extra_target, extra_valid, k=6)
    assert not err.scored.any() and torch.isnan(err.fde).all() and (err.best_mode == -1).all()


def test_empty_metric_returns_nan():
    metric = ForecastingMetrics(ks=(6,), datasets=("av2",))
    with pytest.warns(UserWarning):  # torchmetrics: compute before update
        out = metric.compute()
    assert set(out) == {"minADE_6", "minFDE_6", "MR_6", "brier-minFDE_6"}
    assert all(torch.isnan(v) for v in out.values())


def test_float32_inputs():
    pred, prob, target, valid = random_inputs(n=40, seed=9)
    m64, m32 = ForecastingMetrics(ks=(1, 6)), ForecastingMetrics(ks=(1, 6))
    m64.update(pred, prob, target, valid)
    m32.update(pred.float(), prob.float(), target.float(), valid)
    a, b = m64.compute(), m32.compute()
    for key in a:
        assert b[key].dtype == torch.float64
        assert float(b[key]) == pytest.approx(float(a[key]), rel=1e-5, abs=1e-5)


# ----------------------------------------------------------------------------------------------- breakdown, DDP


def test_per_dataset_breakdown():
    pred, prob, target, valid = masked_inputs(seed=11)
    names = ("av1", "av2", "womd", "eth_ucy")
    rng = np.random.default_rng(0)
    group = [str(x) for x in rng.choice(["av1", "av2", "womd"], size=len(pred))]
    metric = ForecastingMetrics(ks=(1, 6), datasets=names)
    metric.update(pred, prob, target, valid, group)
    out = metric.compute()
    counts = metric.counts()
    assert "eth_ucy/minADE_6" not in out and counts["eth_ucy"] == 0
    assert sum(counts[d] for d in ("av1", "av2", "womd")) == counts["all"]
    for dataset in ("av1", "av2", "womd"):
        rows = torch.tensor([g == dataset for g in group])
        for k in (1, 6):
            want = numpy_reference(pred[rows], prob[rows], target[rows], valid[rows], k)
            assert_close({key.split("/", 1)[1]: v for key, v in out.items() if key.startswith(f"{dataset}/")}, want)
    for name in metric.metric_names:  # count-weighted dataset means give the overall mean
        weighted = sum(counts[d] * float(out[f"{d}/{name}"]) for d in ("av1", "av2", "womd")) / counts["all"]
        assert weighted == pytest.approx(float(out[name]), abs=1e-9)


def test_unknown_dataset_and_bad_inputs_raise():
    pred, prob, target, valid = random_inputs(n=4, seed=12)
    metric = ForecastingMetrics(ks=(6,), datasets=("av2",))
    with pytest.raises(ValueError, match="'womd' is not one of"):
        metric.update(pred, prob, target, valid, ["av2", "av2", "womd", "av2"])
    with pytest.raises(ValueError, match="3 names for 4 agents"):
        metric.update(pred, prob, target, valid, ["av2"] * 3)
    with pytest.raises(ValueError, match="prob must be"):
        metric.update(pred, prob[:, :5], target, valid)
    with pytest.raises(ValueError, match="target must be"):
        metric.update(pred, prob, target[:, :10], valid)
    with pytest.raises(ValueError, match="K=6"):
        metric.update(pred[:, :3], prob[:, :3], target, valid)
    with pytest.raises(ValueError, match="distinct positive"):
        ForecastingMetrics(ks=(6, 6))
    assert metric.counts()["all"] == 0  # failed updates left no trace
    # without a dataset list the group is not needed and ignored
    plain = ForecastingMetrics(ks=(6,))
    plain.update(pred, prob, target, valid, ["anything"] * 4)
    assert set(plain.compute()) == set(plain.metric_names)


def test_merge_state_equals_single_instance():
    pred, prob, target, valid = masked_inputs(seed=13)
    group = ["av2" if i % 3 else "womd" for i in range(len(pred))]
    full = ForecastingMetrics(ks=(1, 6), datasets=("av2", "womd"))
    full.update(pred, prob, target, valid, group)
    half = len(pred) // 2
    first, second = (ForecastingMetrics(ks=(1, 6), datasets=("av2", "womd")) for _ in range(2))
    first.update(pred[:half], prob[:half], target[:half], valid[:half], group[:half])
    second.update(pred[half:], prob[half:], target[half:], valid[half:], group[half:])
    manual = first.totals + second.totals
    first.merge_state(second)
    torch.testing.assert_close(first.totals, manual)
    a, b = full.compute(), first.compute()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-12)


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        pred, prob, target, valid = masked_inputs(seed=14)
        group = ["av2" if i % 3 else "womd" for i in range(len(pred))]
        rows = list(range(rank, len(pred), world_size))
        metric = ForecastingMetrics(ks=(1, 6), datasets=("av2", "womd", "av1"))
        metric.update(pred[rows], prob[rows], target[rows], valid[rows], [group[i] for i in rows])
        torch.save({k: v.clone() for k, v in metric.compute().items()}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_sync_equals_single_process(tmp_path):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo not available")
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    pred, prob, target, valid = masked_inputs(seed=14)
    group = ["av2" if i % 3 else "womd" for i in range(len(pred))]
    full = ForecastingMetrics(ks=(1, 6), datasets=("av2", "womd", "av1"))
    full.update(pred, prob, target, valid, group)
    want = full.compute()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got.keys() == want.keys()
        for key in want:
            torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------------- single metrics


def test_single_value_metrics_equal_collection():
    pred, prob, target, valid = masked_inputs(seed=15)
    collection = ForecastingMetrics(ks=(1, 6), miss_threshold=1.5)
    collection.update(pred, prob, target, valid)
    out = collection.compute()
    for k in (1, 6):
        for cls, name in ((MinADE, "minADE"), (MinFDE, "minFDE"), (BrierMinFDE, "brier-minFDE")):
            metric = cls(k)
            metric.update(pred, prob, target, valid)
            value = metric.compute()
            assert value.ndim == 0
            torch.testing.assert_close(value, out[f"{name}_{k}"])
        mr = MissRate(k, threshold=1.5)
        mr.update(pred, prob, target, valid)
        torch.testing.assert_close(mr.compute(), out[f"MR_{k}"])
    assert MinFDE(6).higher_is_better is False


# ----------------------------------------------------------------------------------------------- agent selection


def test_select_agents_and_datasets():
    roles = torch.tensor(
        [AgentRole.FOCAL, AgentRole.SCORED, AgentRole.UNSCORED, AgentRole.FRAGMENT, AgentRole.FOCAL, AgentRole.SCORED]
    )
    targets = EvalTargets(
        target=torch.zeros(6, 60, 2),
        valid=torch.ones(6, 60, dtype=torch.bool),
        role=roles,
        scene_index=torch.tensor([0, 0, 0, 0, 1, 1]),
        dataset=["av2", "womd"],
    )
    assert select_agents(targets, "focal").tolist() == [True, False, False, False, True, False]
    assert select_agents(targets).tolist() == [True, False, False, False, True, False]
    assert select_agents(targets, "scored").tolist() == [True, True, False, False, True, True]
    with pytest.raises(ValueError, match="unknown agent scope"):
        select_agents(targets, "all")
    assert agent_datasets(targets) == ["av2"] * 4 + ["womd"] * 2
    assert agent_datasets(targets, select_agents(targets, "scored")) == ["av2", "av2", "womd", "womd"]
