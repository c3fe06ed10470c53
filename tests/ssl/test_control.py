"""The control-centric objectives (forward dynamics, inverse dynamics, masked hindsight control): no information
from the target reaches a prediction, only masked controls enter the hindsight loss, and a perfect predictor
reaches each loss's analytic minimum (0)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from smartpretrain.ssl.forward_dynamics import ForwardDynamicsLoss
from smartpretrain.ssl.hindsight import HindsightMasks, MaskedHindsightControlLoss
from smartpretrain.ssl.inverse_dynamics import InverseDynamicsLoss
from smartpretrain.ssl.objective import (
    MOMENTUM_B,
    ONLINE_A,
    ONLINE_B,
    Controls,
    Form,
    ObjectiveNeeds,
    SSLInputs,
)
from smartpretrain.tasks.pretrain import PretrainTask
from tests.ssl.inputs import FakeBackbone, fake_batch, query_inputs

C, P, K, H = 8, 6, 7, 4


def _controls(seed: int = 0) -> Controls:
    g = torch.Generator().manual_seed(seed)
    length = torch.tensor([7, 5, 6, 7, 4, 7])
    inside = torch.arange(K)[None] < length[:, None]
    valid = inside & (torch.rand(P, K, generator=g) > 0.2)
    values = torch.randn(P, K, 2, generator=g) * torch.tensor([1.5, 0.3])
    values = torch.where(valid[..., None], values, torch.zeros_like(values))
    return Controls(values=values, valid=valid, length=length, draws=torch.rand(P, K + 2, generator=g))


def _inputs(
    z_a: Tensor | None = None, z_b: Tensor | None = None, controls: Controls | None = None, second: str = "momentum"
) -> SSLInputs:
    g = torch.Generator().manual_seed(3)
    z_a = torch.randn(P, C, generator=g) if z_a is None else z_a
    z_b = torch.randn(P, C, generator=g) if z_b is None else z_b
    encodings = {ONLINE_A: z_a, MOMENTUM_B if second == "momentum" else ONLINE_B: z_b}
    return query_inputs(
        encodings,
        full_b=torch.ones(P, dtype=torch.bool),
        start_a=torch.zeros(P, dtype=torch.long),
        start_b=_controls().length if controls is None else controls.length,
        window=H,
        target=torch.zeros(P, H, 2),
        target_valid=torch.ones(P, H, dtype=torch.bool),
        controls=_controls() if controls is None else controls,
        form=Form.VECTOR,
    )


def _with_values(controls: Controls, values: Tensor) -> Controls:
    return Controls(values=values, valid=controls.valid, length=controls.length, draws=controls.draws)


def _scaled(controls: Controls) -> Tensor:
    return controls.values / torch.tensor([1.0, 0.2])


# --- forward dynamics -----------------------------------------------------------------------------------------
def test_forward_dynamics_prediction_never_sees_the_target() -> None:
    torch.manual_seed(0)
    objective = ForwardDynamicsLoss(dim=C, hidden_dim=16, control_dim=8).eval()
    base = _inputs()
    other_target = _inputs(z_b=torch.randn(P, C) * 5.0)  # view B's latent (the target) perturbed
    assert torch.equal(objective.predict(base), objective.predict(other_target))
    assert not torch.allclose(objective.compute(base).loss, objective.compute(other_target).loss)


def test_forward_dynamics_reads_the_controls_up_to_each_query_length_only() -> None:
    torch.manual_seed(0)
    objective = ForwardDynamicsLoss(dim=C, hidden_dim=16, control_dim=8).eval()
    controls = _controls()
    beyond = ~controls.inside()
    noise = torch.randn(P, K, 2) * 3.0
    padded = Controls(controls.values + noise * beyond[..., None], controls.valid, controls.length, controls.draws)
    assert torch.equal(objective.predict(_inputs(controls=controls)), objective.predict(_inputs(controls=padded)))
    moved = _with_values(controls, controls.values + noise * controls.valid[..., None])  # the controls matter
    assert not torch.allclose(objective.predict(_inputs(controls=controls)), objective.predict(_inputs(controls=moved)))


def test_forward_dynamics_perfect_predictor_reaches_zero() -> None:
    objective = ForwardDynamicsLoss(dim=C, hidden_dim=16, control_dim=8)
    inputs = _inputs()
    target = inputs.encoding(MOMENTUM_B)
    perfect = objective.loss_of(target * 3.0, inputs)  # any positive multiple: the loss compares directions
    assert abs(float(perfect.loss)) < 1e-6 and perfect.per_query.abs().max() < 1e-6
    off = objective.loss_of(target + torch.randn(P, C), inputs)
    assert float(off.loss) > 1e-3
    opposite = objective.loss_of(-target, inputs)  # the maximum: 4
    assert float(opposite.loss) == pytest.approx(4.0, abs=1e-5)


def test_forward_dynamics_sends_no_gradient_into_the_target() -> None:
    objective = ForwardDynamicsLoss(dim=C, hidden_dim=16, control_dim=8)
    z_a, z_b = torch.randn(P, C, requires_grad=True), torch.randn(P, C, requires_grad=True)
    objective(_inputs(z_a=z_a, z_b=z_b)).backward()
    assert z_a.grad is not None and float(z_a.grad.abs().sum()) > 0 and z_b.grad is None


# --- inverse dynamics -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("second", ["momentum", "online"])
def test_inverse_dynamics_prediction_never_sees_the_controls(second: str) -> None:
    torch.manual_seed(0)
    objective = InverseDynamicsLoss(dim=C, hidden_dim=16, max_steps=16, second_view=second)
    controls = _controls()
    other = _with_values(controls, torch.randn(P, K, 2) * 4.0)  # the targets perturbed
    a, b = _inputs(controls=controls, second=second), _inputs(controls=other, second=second)
    assert torch.equal(objective.predict(a), objective.predict(b))
    assert not torch.allclose(objective.compute(a).loss, objective.compute(b).loss)
    assert objective.declared_needs().encodes == {ONLINE_A, MOMENTUM_B if second == "momentum" else ONLINE_B}


def test_inverse_dynamics_perfect_predictor_reaches_zero_and_invalid_controls_never_enter() -> None:
    objective = InverseDynamicsLoss(dim=C, hidden_dim=16, max_steps=16)
    controls = _controls()
    inputs = _inputs(controls=controls)
    perfect = objective.loss_of(_scaled(controls), inputs)
    assert float(perfect.loss) == 0.0
    wrong_where_unobserved = _scaled(controls) + 9.0 * (~controls.valid)[..., None]
    assert float(objective.loss_of(wrong_where_unobserved, inputs).loss) == 0.0
    assert float(objective.loss_of(_scaled(controls) + 0.5, inputs).loss) > 0.1


def test_inverse_dynamics_refuses_a_transition_longer_than_its_table() -> None:
    objective = InverseDynamicsLoss(dim=C, hidden_dim=16, max_steps=5)
    with pytest.raises(ValueError, match="max_steps"):
        objective(_inputs())


# --- masked hindsight control ---------------------------------------------------------------------------------
def _hindsight(**kwargs: object) -> MaskedHindsightControlLoss:
    torch.manual_seed(0)
    return MaskedHindsightControlLoss(dim=C, model_dim=16, depth=2, num_heads=2, max_steps=16, **kwargs).eval()


def test_hindsight_masks_come_from_the_draws() -> None:
    controls = _controls()
    masks = HindsightMasks.from_draws(controls, control_ratio=0.5, observation_ratio=0.15)
    assert torch.equal(masks.controls, (controls.draws[:, 2:] < 0.5) & controls.inside())
    assert torch.equal(masks.observation_a, controls.draws[:, 0] < 0.15)
    assert torch.equal(masks.observation_b, controls.draws[:, 1] < 0.15)
    assert masks.controls.any() and (~masks.controls & controls.inside()).any()


def test_a_masked_control_never_reaches_any_prediction() -> None:
    objective = _hindsight()
    controls = _controls()
    masks = objective.masks(_inputs(controls=controls))
    noise = torch.randn(P, K, 2) * 5.0
    hidden = _with_values(controls, controls.values + noise * masks.controls[..., None])
    a = objective.predict(_inputs(controls=controls))
    assert torch.allclose(a, objective.predict(_inputs(controls=hidden)), atol=1e-6)
    shown = _with_values(controls, controls.values + noise * (~masks.controls & controls.valid)[..., None])
    assert not torch.allclose(a, objective.predict(_inputs(controls=shown)), atol=1e-4)  # the rest is read


def test_a_masked_observation_never_reaches_any_prediction() -> None:
    objective = _hindsight(observation_mask_ratio=1.0)  # both observations masked
    a = objective.predict(_inputs())
    assert torch.allclose(a, objective.predict(_inputs(z_a=torch.randn(P, C), z_b=torch.randn(P, C))), atol=1e-6)
    shown = _hindsight(observation_mask_ratio=0.0)
    assert not torch.allclose(shown.predict(_inputs()), shown.predict(_inputs(z_b=torch.randn(P, C))), atol=1e-4)


def test_only_masked_controls_enter_the_hindsight_loss() -> None:
    objective = _hindsight()
    controls = _controls()
    inputs = _inputs(controls=controls)
    masks = objective.masks(inputs)
    prediction = objective.predict(inputs, masks)
    loss = objective.loss_of(prediction, inputs, masks).loss
    unmasked = ~masks.controls
    moved = _with_values(controls, controls.values + 3.0 * (unmasked & controls.valid)[..., None])
    assert torch.equal(loss, objective.loss_of(prediction, _inputs(controls=moved), masks).loss)
    assert torch.equal(loss, objective.loss_of(prediction + 7.0 * unmasked[..., None], inputs, masks).loss)
    entering = masks.controls & controls.valid
    assert entering.any()
    assert not torch.equal(loss, objective.loss_of(prediction + 1.0 * entering[..., None], inputs, masks).loss)


def test_hindsight_perfect_predictor_reaches_zero() -> None:
    objective = _hindsight()
    controls = _controls()
    inputs = _inputs(controls=controls)
    masks = objective.masks(inputs)
    assert float(objective.loss_of(_scaled(controls), inputs, masks).loss) == 0.0
    assert float(objective.compute(inputs).loss.detach()) > 0


def test_hindsight_loss_by_hand() -> None:
    objective = _hindsight()
    controls = _controls()
    inputs = _inputs(controls=controls)
    masks = objective.masks(inputs)
    prediction = objective.predict(inputs, masks)
    target = _scaled(controls)
    terms = [
        F.smooth_l1_loss(prediction[i, j], target[i, j], reduction="sum")
        for i in range(P)
        for j in range(K)
        if masks.controls[i, j] and controls.valid[i, j]
    ]
    expected = torch.stack(terms).mean()
    assert torch.allclose(objective.loss_of(prediction, inputs, masks).loss, expected, atol=1e-6)


# --- in the pre-train task ------------------------------------------------------------------------------------
def _task(**objectives: object) -> PretrainTask:
    torch.manual_seed(0)
    return PretrainTask(FakeBackbone(), objectives, window=5, proj_hidden_dim=8, proj_dim=4).eval()


def test_the_task_hands_the_controls_to_their_readers_only() -> None:
    from tests.ssl.inputs import recording

    reader, other = recording(ObjectiveNeeds(encodes={ONLINE_A}, controls=True)), recording(ObjectiveNeeds({ONLINE_A}))
    task = _task(reader=reader, other=other)
    assert task.needs.controls
    task.losses(fake_batch(controls=True))
    (got,), (plain,) = reader.received, other.received
    assert got.queries.controls is not None and plain.queries.controls is None
    batch = fake_batch(controls=True)
    keep = torch.tensor([True, False, True, True, True])  # the queries full in window B (view B not encoded)
    assert torch.equal(got.queries.controls.values, batch.controls[keep])
    assert got.queries.controls.length.tolist() == [5, 5, 6, 6]
    with pytest.raises(ValueError, match="transition controls"):
        task.losses(fake_batch())


@pytest.mark.parametrize("second", ["momentum", "online"])
def test_in_the_task_view_b_never_reaches_the_forward_prediction(second: str) -> None:
    fd = ForwardDynamicsLoss(dim=4, hidden_dim=8, control_dim=4)
    task = _task(fd=fd, idm=InverseDynamicsLoss(dim=4, hidden_dim=8, max_steps=8, second_view=second))
    predictions = []
    for scale in (1.0, 10.0):
        batch = fake_batch(controls=True)
        batch.view_b.x = batch.view_b.x * scale  # the target view's inputs perturbed
        collected = task._collect(batch)
        inputs, _ = collected.inputs.restrict(task.objective_needs["fd"])
        predictions.append(fd.predict(inputs))
    assert torch.equal(predictions[0], predictions[1])


def test_the_three_terms_run_together_with_tcl_and_trl() -> None:
    from smartpretrain.ssl.tcl import TrajectoryContrastiveLoss
    from smartpretrain.ssl.trl import TrajectoryReconstructionLoss

    task = _task(
        tcl=TrajectoryContrastiveLoss(dim=4, hidden_dim=8),
        trl=TrajectoryReconstructionLoss(dim=4, hidden_dim=8, window=5),
        forward_dynamics=ForwardDynamicsLoss(dim=4, hidden_dim=8, control_dim=4),
        inverse_dynamics=InverseDynamicsLoss(dim=4, hidden_dim=8, max_steps=8),
        masked_hindsight=MaskedHindsightControlLoss(dim=4, model_dim=8, num_heads=2, max_steps=8),
    ).train()
    out = task.losses(fake_batch(controls=True))
    out["loss"].backward()
    for name in ("tcl", "trl", "forward_dynamics", "inverse_dynamics", "masked_hindsight"):
        value = float(out[name].detach())
        assert math.isfinite(value) and value > 0, name
    for name, objective in task.objectives.items():
        grads = [p.grad for p in objective.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads), name
    assert all(p.grad is not None for p in task.branch.parameters() if p.requires_grad)


def test_hindsight_refuses_a_transition_longer_than_its_positions() -> None:
    objective = MaskedHindsightControlLoss(dim=C, model_dim=16, num_heads=2, max_steps=5)
    with pytest.raises(ValueError, match="MaskedHindsightControlLoss: a transition of 7 steps, but max_steps is 5"):
        objective(_inputs())
