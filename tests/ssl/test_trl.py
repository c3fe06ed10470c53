"""Trajectory reconstruction learning: chunking, prediction (cumulative displacements), masked SmoothL1."""

from __future__ import annotations

import pytest
import torch

from smartpretrain.ssl.objective import ONLINE_A, SSLInputs
from smartpretrain.ssl.trl import TrajectoryReconstructionLoss, chunk_bounds
from tests.ssl.inputs import query_inputs

C, W = 8, 10  # projection size, window


def _inputs(z_a, target=None, target_valid=None, full_b=None, start_a=None, start_b=None, window=W) -> SSLInputs:
    p = z_a.size(0)
    tv = torch.ones(p, window, dtype=torch.bool) if target_valid is None else target_valid
    return query_inputs(
        {ONLINE_A: z_a},
        full_b=tv.all(dim=1) if full_b is None else full_b,
        start_a=torch.arange(p) % 5 if start_a is None else start_a,
        start_b=torch.arange(p) % 5 + window + 2 if start_b is None else start_b,
        window=window,
        target=torch.zeros(p, window, 2) if target is None else target,
        target_valid=tv,
    )


def _smooth_l1(d: float, beta: float = 1.0) -> float:
    return 0.5 * d * d / beta if abs(d) < beta else abs(d) - 0.5 * beta


def _hand_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """Per step: mean over observed agents of SmoothL1 summed over x, y; then mean over steps with any agent."""
    step_losses = []
    for t in range(pred.size(1)):
        rows = [i for i in range(pred.size(0)) if bool(mask[i, t])]
        if not rows:
            continue
        per_agent = [sum(_smooth_l1(float(pred[i, t, k] - target[i, t, k])) for k in range(2)) for i in rows]
        step_losses.append(sum(per_agent) / len(rows))
    return sum(step_losses) / len(step_losses)


# --- chunk_bounds -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("window", "q", "fractions", "expected"),
    [
        (50, 3, [0.2, 0.4, 0.4], [0, 10, 30, 50]),
        (50, 1, None, [0, 50]),
        (50, 2, None, [0, 25, 50]),
        (20, 3, None, [0, 7, 13, 20]),
        (10, 3, (0.5, 0.3, 0.2), [0, 5, 8, 10]),
    ],
)
def test_chunk_bounds(window: int, q: int, fractions, expected: list[int]) -> None:
    assert chunk_bounds(window, q, fractions) == expected


@pytest.mark.parametrize(
    ("window", "q", "fractions", "match"),
    [
        (50, 3, [0.5, 0.5], "3 query steps"),
        (50, 2, [0.5, 0.6], "sum to 1"),
        (50, 2, [1.2, -0.2], "positive"),
        (50, 2, [1.0, 0.0], "positive"),
        (2, 3, None, "too short"),
        (10, 2, [0.99, 0.01], "too short"),
    ],
)
def test_chunk_bounds_errors(window: int, q: int, fractions, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        chunk_bounds(window, q, fractions)


# --- prediction ---------------------------------------------------------------------------------------------------
def test_offset_table_starts_at_zero() -> None:
    trl = TrajectoryReconstructionLoss(dim=C, hidden_dim=16, window=W, num_offsets=12)
    assert trl.offset_embedding.weight.shape == (12, C)
    assert (trl.offset_embedding.weight == 0).all()
    z = torch.randn(4, 1, C)
    # with the zero table, the offset does not matter (yet)
    a = trl.predict(_inputs(z, start_a=torch.tensor([0, 1, 2, 3])))
    b = trl.predict(_inputs(z, start_a=torch.tensor([11, 5, 0, 7])))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    torch.nn.init.normal_(trl.offset_embedding.weight)
    c = trl.predict(_inputs(z, start_a=torch.tensor([11, 5, 0, 7])))
    assert not torch.allclose(a[:3], c[:3])


def test_prediction_is_the_cumsum_of_chunked_displacements() -> None:
    torch.manual_seed(0)
    q_steps, fractions = 3, [0.2, 0.4, 0.4]
    trl = TrajectoryReconstructionLoss(dim=C, hidden_dim=16, window=W, chunk_fractions=fractions)
    torch.nn.init.normal_(trl.offset_embedding.weight)
    z = torch.randn(4, q_steps, C)
    start_a = torch.tensor([0, 3, 3, 9])
    pred = trl.predict(_inputs(z, start_a=start_a))
    assert pred.shape == (4, W, 2)
    bounds = [0, 2, 6, 10]
    with torch.no_grad():
        e = trl.offset_embedding.weight[start_a]
        disp = torch.zeros(4, W, 2)
        for q in range(q_steps):
            all_steps = trl.head(torch.cat([z[:, q], e], dim=-1)).view(4, W, 2)
            disp[:, bounds[q] : bounds[q + 1]] = all_steps[:, bounds[q] : bounds[q + 1]]
        expected = torch.zeros(4, W, 2)
        running = torch.zeros(4, 2)
        for t in range(W):
            running = running + disp[:, t]
            expected[:, t] = running
    torch.testing.assert_close(pred, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("q", [0, 1, 2])
def test_query_step_q_only_drives_its_chunk_onwards(q: int) -> None:
    torch.manual_seed(1)
    trl = TrajectoryReconstructionLoss(dim=C, hidden_dim=16, window=W, chunk_fractions=[0.2, 0.4, 0.4])
    bounds = chunk_bounds(W, 3, [0.2, 0.4, 0.4])
    z = torch.randn(5, 3, C)
    base = trl.predict(_inputs(z))
    z2 = z.clone()
    z2[:, q] += torch.randn(5, C)
    moved = trl.predict(_inputs(z2))
    torch.testing.assert_close(moved[:, : bounds[q]], base[:, : bounds[q]], atol=0, rtol=0)
    changed = (moved - base).abs().amax(dim=-1) > 1e-6  # [P, W]
    assert changed[:, bounds[q] :].all()
    # inside its own chunk only q's embedding is used: the displacement outside it is unchanged
    step = torch.diff(moved - base, dim=1, prepend=torch.zeros(5, 1, 2)).abs().amax(dim=-1)
    assert (step[:, bounds[q + 1] :] < 1e-5).all()


def test_prediction_checks() -> None:
    trl = TrajectoryReconstructionLoss(dim=C, hidden_dim=16, window=W)
    with pytest.raises(ValueError, match="window"):
        trl.predict(_inputs(torch.randn(2, 1, C), window=W + 1))
    with pytest.raises(ValueError, match="offset_source"):
        TrajectoryReconstructionLoss(dim=C, window=W, offset_source="start_b")


# --- the loss -----------------------------------------------------------------------------------------------------
def test_loss_matches_a_hand_computation_with_a_partial_mask() -> None:
    torch.manual_seed(2)
    p = 5
    trl = TrajectoryReconstructionLoss(dim=C, hidden_dim=16, window=W, require_full_target=False)
    assert trl.declared_needs().partial_queries
    mask = torch.ones(p, W, dtype=torch.bool)
    mask[0, :3] = False
    mask[1, 2:6] = False
    mask[2, ::2] = False
    mask[3, 5:] = False
    mask[:, 7] = False  # a step nobody is observed at: left out of the mean over steps
    mask[4, 9] = False
    counts = mask.sum(dim=0).tolist()
    assert len(set(counts)) >= 3 and 0 in counts
    target = 3.0 * torch.randn(p, W, 2)  # errors on both sides of beta
    target[~mask] = 1e4  # must not matter
    inputs = _inputs(torch.randn(p, 1, C), target=target, target_valid=mask)
    loss = trl(inputs)
    pred = trl.predict(inputs).detach()
    err = (pred - target)[mask].abs()
    assert (err < 1).any() and (err > 1).any()
    assert loss.item() == pytest.approx(_hand_loss(pred, target, mask), rel=1e-5)


def test_loss_beta() -> None:
    torch.manual_seed(3)
    trl = TrajectoryReconstructionLoss(dim=C, hidden_dim=16, window=W, beta=2.0)
    inputs = _inputs(torch.randn(3, 1, C), target=2.0 * torch.randn(3, W, 2))
    pred = trl.predict(inputs).detach()
    d = pred - inputs.queries.target
    per = torch.where(d.abs() < 2.0, 0.25 * d * d, d.abs() - 1.0).sum(-1)  # [P, W]
    assert trl(inputs).item() == pytest.approx(float(per.mean(dim=0).mean()), rel=1e-5)


def test_require_full_target_ignores_partial_rows() -> None:
    torch.manual_seed(4)
    p = 6
    trl = TrajectoryReconstructionLoss(dim=C, hidden_dim=16, window=W)  # require_full_target=True (release)
    assert not trl.declared_needs().partial_queries
    mask = torch.ones(p, W, dtype=torch.bool)
    mask[1, 3] = False
    mask[4, 0:5] = False
    full = mask.all(dim=1)
    target = torch.randn(p, W, 2)
    z = torch.randn(p, 1, C, requires_grad=True)
    inputs = _inputs(z, target=target, target_valid=mask)
    loss = trl(inputs)
    pred = trl.predict(inputs).detach()
    assert loss.item() == pytest.approx(_hand_loss(pred[full], target[full], mask[full]), rel=1e-5)
    # their (partially valid) targets and their embeddings play no part
    target2, z2 = target.clone(), z.detach().clone()
    target2[~full] = 100.0 * torch.randn(int((~full).sum()), W, 2)
    z2[~full] = torch.randn(int((~full).sum()), 1, C)
    assert trl(_inputs(z2, target=target2, target_valid=mask)).item() == pytest.approx(loss.item(), rel=1e-6)
    loss.backward()
    assert (z.grad[~full] == 0).all() and (z.grad[full] != 0).any()
    # and full_b decides, not target_valid: flagging a full row as partial drops it
    full_b = full.clone()
    full_b[0] = False
    only = trl(_inputs(z.detach(), target=target, target_valid=mask, full_b=full_b))
    assert only.item() == pytest.approx(_hand_loss(pred[full_b], target[full_b], mask[full_b]), rel=1e-5)


def test_no_observed_step_gives_a_differentiable_zero() -> None:
    trl = TrajectoryReconstructionLoss(dim=C, hidden_dim=16, window=W, require_full_target=False)
    z = torch.randn(3, 1, C, requires_grad=True)
    out = trl(_inputs(z, target_valid=torch.zeros(3, W, dtype=torch.bool)))
    assert float(out.detach()) == 0.0 and out.requires_grad
    out.backward()
    assert (z.grad == 0).all()
    empty = trl(_inputs(torch.randn(0, 1, C, requires_grad=True)))
    assert float(empty.detach()) == 0.0


# --- offsets ------------------------------------------------------------------------------------------------------
def test_offsets_out_of_range_raise() -> None:
    trl = TrajectoryReconstructionLoss(dim=C, hidden_dim=16, window=W, num_offsets=8)
    z = torch.randn(2, 1, C)
    trl(_inputs(z, start_a=torch.tensor([0, 7])))  # the last row of the table is fine
    with pytest.raises(ValueError, match="num_offsets"):
        trl(_inputs(z, start_a=torch.tensor([0, 8])))
    with pytest.raises(ValueError, match="num_offsets"):
        trl.predict(_inputs(z, start_a=torch.tensor([-1, 0])))


def test_gap_offsets() -> None:
    trl = TrajectoryReconstructionLoss(dim=C, hidden_dim=16, window=W, num_offsets=6, offset_source="gap")
    z = torch.randn(3, 1, C)
    start_a, start_b = torch.tensor([0, 40, 100]), torch.tensor([10, 55, 112])
    inputs = _inputs(z, start_a=start_a, start_b=start_b)
    assert trl.offsets(inputs).tolist() == [0, 5, 2]  # start_b - start_a - window; start_a itself is out of range
    torch.nn.init.normal_(trl.offset_embedding.weight)
    pred = trl.predict(inputs)
    same_gap = trl.predict(_inputs(z, start_a=start_a + 3, start_b=start_b + 3))
    torch.testing.assert_close(pred, same_gap, atol=0, rtol=0)
    other_gap = trl.predict(_inputs(z, start_a=start_a, start_b=start_b + torch.tensor([1, 0, 1])))  # gaps 1, 5, 3
    torch.testing.assert_close(other_gap[1], pred[1], atol=0, rtol=0)
    assert not torch.allclose(pred[0], other_gap[0]) and not torch.allclose(pred[2], other_gap[2])
    with pytest.raises(ValueError, match="num_offsets"):
        trl(_inputs(z, start_a=start_a, start_b=start_b + 4))  # gap 9 > 5
