"""Trajectory contrastive learning: the InfoNCE over own/positive key blocks and the TCL objective."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from smartpretrain.ssl.objective import MOMENTUM_A, MOMENTUM_B, ONLINE_A, ONLINE_B, SSLInputs
from smartpretrain.ssl.tcl import TrajectoryContrastiveLoss, info_nce
from tests.ssl.inputs import query_inputs


def _analytic(n: int, tau: float) -> float:
    """Loss of a query equal to its positive when the 2N - 2 other candidate keys are orthogonal to it.

    The own view-A key is excluded; the positive has logit 1/τ; the N - 1 other own-block keys and the N - 1
    other positive-block keys have logit 0.
    """
    return -math.log(math.exp(1.0 / tau) / (math.exp(1.0 / tau) + (2 * n - 2) * math.exp(0.0)))


def _reference_info_nce(query, own, positive, offset, tau):
    """The documented formula, term by term."""
    out = []
    for i in range(query.size(0)):
        o = offset + i
        num = math.exp(float(query[i] @ positive[o]) / tau)
        den = sum(math.exp(float(query[i] @ own[j]) / tau) for j in range(own.size(0)) if j != o)
        den += sum(math.exp(float(query[i] @ positive[j]) / tau) for j in range(positive.size(0)))
        out.append(-math.log(num / den))
    return torch.tensor(out, dtype=torch.float64)


def _inputs(z_a, key_a=None, key_b=None, full_b=None, z_b=None) -> SSLInputs:
    p = z_a.size(0)
    return query_inputs(
        {ONLINE_A: z_a, MOMENTUM_A: key_a, MOMENTUM_B: key_b, ONLINE_B: z_b},
        full_b=torch.ones(p, dtype=torch.bool) if full_b is None else full_b,
        start_a=torch.zeros(p, dtype=torch.long),
        start_b=torch.full((p,), 10, dtype=torch.long),
        window=10,
        target=torch.zeros(p, 10, 2),
        target_valid=torch.ones(p, 10, dtype=torch.bool),
    )


def _unit(*shape: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=dtype), dim=-1)


# --- info_nce -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.07, 0.5, 1.0])
@pytest.mark.parametrize("n", [2, 5])
def test_info_nce_analytic_value(n: int, tau: float) -> None:
    e = torch.eye(n + 2, dtype=torch.float64)[:n]  # dim > N
    loss = info_nce(e, e.clone(), e.clone(), 0, tau)
    assert loss.shape == (n,)
    torch.testing.assert_close(loss, torch.full((n,), _analytic(n, tau), dtype=torch.float64), atol=1e-6, rtol=0)
    assert _analytic(n, tau) == pytest.approx(math.log1p((2 * n - 2) * math.exp(-1.0 / tau)))


def test_info_nce_offset_picks_global_rows() -> None:
    n, tau = 6, 0.5
    e = torch.eye(n, dtype=torch.float64)
    loss = info_nce(e[2:4], e, e, 2, tau)  # this "rank" holds global rows 2 and 3
    torch.testing.assert_close(loss, torch.full((2,), _analytic(n, tau), dtype=torch.float64), atol=1e-6, rtol=0)
    # with a wrong offset, the positive is a different (orthogonal) key: much larger loss
    assert (info_nce(e[2:4], e, e, 0, tau) > loss + 1.0).all()


def test_info_nce_matches_the_formula_on_random_inputs() -> None:
    n, tau = 7, 0.2
    own, positive = _unit(n, 5, seed=1), _unit(n, 5, seed=2)
    query = _unit(3, 5, seed=3)
    got = info_nce(query, own, positive, 4, tau)
    torch.testing.assert_close(got, _reference_info_nce(query, own, positive, 4, tau), atol=1e-10, rtol=1e-10)


def test_the_positive_is_a_minimum() -> None:
    """Negatives in ± pairs orthogonal to the positive: q = positive minimises the loss on the unit sphere."""
    tau = 0.5
    e = torch.eye(4, dtype=torch.float64)
    own = torch.stack([torch.zeros(4, dtype=torch.float64), e[1], e[2], e[3]])  # row 0 is excluded anyway
    positive = torch.stack([e[0], -e[1], -e[2], -e[3]])
    best = info_nce(e[:1], own, positive, 0, tau)
    assert float(best) == pytest.approx(_analytic(4, tau), abs=1e-12)
    g = torch.Generator().manual_seed(0)
    for scale in (1e-2, 0.1, 0.5, 2.0):
        for _ in range(20):
            q = F.normalize(e[:1] + scale * torch.randn(1, 4, generator=g, dtype=torch.float64), dim=-1)
            assert float(info_nce(q, own, positive, 0, tau)) > float(best)


def test_own_view_a_key_is_excluded() -> None:
    n, tau = 5, 0.1
    own, positive = _unit(n, 8, seed=4), _unit(n, 8, seed=5)
    query = _unit(2, 8, seed=6)
    offset = 3
    base = info_nce(query, own, positive, offset, tau)
    for i in range(2):
        for replacement in (query[i], -query[i], 10.0 * positive[offset + i]):
            own_hard = own.clone()
            own_hard[offset + i] = replacement  # query[i] would be its hardest negative if it counted
            torch.testing.assert_close(info_nce(query, own_hard, positive, offset, tau)[i], base[i], atol=1e-12, rtol=0)
    own_other = own.clone()
    own_other[0] = query[0]  # another agent's view-A key equal to the query is a (hard) negative
    assert float(info_nce(query, own_other, positive, offset, tau)[0]) > float(base[0]) + 1.0


# --- TrajectoryContrastiveLoss ------------------------------------------------------------------------------------
def _identity_tcl(tau: float, **kw) -> TrajectoryContrastiveLoss:
    loss = TrajectoryContrastiveLoss(dim=8, hidden_dim=16, temperature=tau, **kw)
    loss.predictor = torch.nn.Identity()
    return loss


@pytest.mark.parametrize("scale", [True, False])
def test_tcl_orthonormal_rows_give_the_analytic_value(scale: bool) -> None:
    p, tau = 5, 0.5
    e = torch.eye(8)[:p].unsqueeze(1)  # [P, 1, C]
    loss = _identity_tcl(tau, scale_by_2tau=scale)(_inputs(3.0 * e, key_a=2.0 * e, key_b=0.5 * e))  # normalised
    expected = _analytic(p, tau) * (2 * tau if scale else 1.0)
    assert loss.dim() == 0
    assert float(loss) == pytest.approx(expected, abs=1e-6)


def test_tcl_over_query_steps_is_the_mean_of_single_step_losses() -> None:
    p, q_steps, c, tau = 6, 3, 8, 0.2
    z, ka, kb = _unit(p, q_steps, c, seed=1), _unit(p, q_steps, c, seed=2), _unit(p, q_steps, c, seed=3)
    loss = _identity_tcl(tau, scale_by_2tau=False)
    total = loss(_inputs(z, key_a=ka, key_b=kb))
    singles = [loss(_inputs(z[:, s : s + 1], key_a=ka[:, s : s + 1], key_b=kb[:, s : s + 1])) for s in range(q_steps)]
    by_hand = [float(info_nce(z[:, s], ka[:, s], kb[:, s], 0, tau).mean()) for s in range(q_steps)]
    assert len({round(float(x), 6) for x in singles}) == q_steps  # the steps really differ
    torch.testing.assert_close(total, torch.stack(singles).mean(), atol=1e-10, rtol=0)
    assert float(total) == pytest.approx(sum(by_hand) / q_steps, abs=1e-10)


def test_tcl_applies_the_predictor_to_the_query_only() -> None:
    p, q_steps, c, tau = 5, 2, 8, 0.3
    loss = TrajectoryContrastiveLoss(dim=c, hidden_dim=16, temperature=tau, scale_by_2tau=False).double().eval()
    z, ka, kb = _unit(p, q_steps, c, seed=7), _unit(p, q_steps, c, seed=8), _unit(p, q_steps, c, seed=9)
    with torch.no_grad():
        got = loss(_inputs(z, key_a=ka, key_b=kb))
        q = F.normalize(loss.predictor(z), dim=-1)
    expected = sum(float(info_nce(q[:, s], ka[:, s], kb[:, s], 0, tau).mean()) for s in range(q_steps)) / q_steps
    assert float(got) == pytest.approx(expected, abs=1e-10)


def test_rows_not_full_in_window_b_never_enter() -> None:
    torch.manual_seed(0)
    p, q_steps, c, tau = 7, 2, 8, 0.1
    full = torch.tensor([True, False, True, True, False, True, False])
    loss = TrajectoryContrastiveLoss(dim=c, hidden_dim=16, temperature=tau).double()  # train mode, real predictor
    z, ka, kb = _unit(p, q_steps, c, seed=1), _unit(p, q_steps, c, seed=2), _unit(p, q_steps, c, seed=3)

    z1 = z.clone().requires_grad_(True)
    masked = loss(_inputs(z1, key_a=ka, key_b=kb, full_b=full))
    subset = loss(_inputs(z[full], key_a=ka[full], key_b=kb[full]))
    torch.testing.assert_close(masked, subset, atol=1e-12, rtol=0)

    z2, ka2, kb2 = z.clone(), ka.clone(), kb.clone()
    z2[~full], ka2[~full], kb2[~full] = 1e6, -3e7, torch.nan
    z2.requires_grad_(True)
    garbage = loss(_inputs(z2, key_a=ka2, key_b=kb2, full_b=full))
    torch.testing.assert_close(garbage, masked, atol=1e-12, rtol=0)

    masked.backward()
    assert (z1.grad[~full] == 0).all()
    assert (z1.grad[full] != 0).any()
    garbage.backward()
    assert (z2.grad[~full] == 0).all()


def test_symmetric_tcl_averages_both_directions() -> None:
    p, q_steps, c, tau = 5, 2, 8, 0.25
    loss = _identity_tcl(tau, symmetric=True, scale_by_2tau=False)
    assert {ONLINE_B, MOMENTUM_A, MOMENTUM_B} <= loss.declared_needs().encodes
    assert ONLINE_B not in _identity_tcl(tau).declared_needs().encodes
    z_a, z_b = _unit(p, q_steps, c, seed=1), _unit(p, q_steps, c, seed=2)
    ka, kb = _unit(p, q_steps, c, seed=3), _unit(p, q_steps, c, seed=4)
    with pytest.raises(ValueError, match="view B"):
        loss(_inputs(z_a, key_a=ka, key_b=kb))
    got = loss(_inputs(z_a, key_a=ka, key_b=kb, z_b=z_b))
    a_to_b = sum(float(info_nce(z_a[:, s], ka[:, s], kb[:, s], 0, tau).mean()) for s in range(q_steps)) / q_steps
    b_to_a = sum(float(info_nce(z_b[:, s], kb[:, s], ka[:, s], 0, tau).mean()) for s in range(q_steps)) / q_steps
    assert abs(a_to_b - b_to_a) > 1e-3
    assert float(got) == pytest.approx((a_to_b + b_to_a) / 2, abs=1e-10)
    scaled = _identity_tcl(tau, symmetric=True)(_inputs(z_a, key_a=ka, key_b=kb, z_b=z_b))
    assert float(scaled) == pytest.approx(2 * tau * (a_to_b + b_to_a) / 2, abs=1e-10)


def test_no_valid_query_gives_a_differentiable_zero() -> None:
    loss = TrajectoryContrastiveLoss(dim=8, hidden_dim=16)
    z = torch.randn(3, 2, 8, requires_grad=True)
    out = loss(_inputs(z, key_a=torch.randn(3, 2, 8), key_b=torch.randn(3, 2, 8), full_b=torch.zeros(3, dtype=bool)))
    assert float(out.detach()) == 0.0 and out.requires_grad
    out.backward()
    assert z.grad is not None and (z.grad == 0).all()
    assert all(p.grad is not None and (p.grad == 0).all() for p in loss.predictor.parameters())


def test_tcl_argument_checks() -> None:
    with pytest.raises(ValueError, match="temperature"):
        TrajectoryContrastiveLoss(dim=4, hidden_dim=8, temperature=0.0)
    loss = TrajectoryContrastiveLoss(dim=4, hidden_dim=8)
    with pytest.raises(ValueError, match="momentum keys"):
        loss(_inputs(torch.randn(3, 1, 4), key_a=torch.randn(3, 1, 4)))
