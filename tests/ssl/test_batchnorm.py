"""GlobalBatchNorm1d in one process is BatchNorm1d; the projector MLP built on it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from smartpretrain.ssl.batchnorm import GlobalBatchNorm1d
from smartpretrain.ssl.heads import ProjectionMLP


def _pair(c: int, momentum: float | None) -> tuple[GlobalBatchNorm1d, nn.BatchNorm1d]:
    ours, ref = GlobalBatchNorm1d(c, momentum=momentum), nn.BatchNorm1d(c, momentum=momentum)
    with torch.no_grad():
        ref.weight.normal_()
        ref.bias.normal_()
    ours.load_state_dict(ref.state_dict())
    return ours, ref


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_matches_batchnorm1d_in_one_process(momentum: float | None) -> None:
    torch.manual_seed(0)
    ours, ref = _pair(5, momentum)
    for step, n in enumerate((7, 2, 16)):
        x = (3.0 * torch.randn(n, 5) + torch.arange(5.0)).requires_grad_(True)
        x_ref = x.detach().clone().requires_grad_(True)
        w = torch.randn(n, 5)
        y, y_ref = ours(x), ref(x_ref)
        torch.testing.assert_close(y, y_ref, atol=1e-5, rtol=1e-5)
        (y * w).sum().backward()
        (y_ref * w).sum().backward()
        torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.bias.grad, ref.bias.grad, atol=1e-5, rtol=1e-5)
        ours.zero_grad()
        ref.zero_grad()
        torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-5, rtol=1e-5)
        assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == step + 1
    assert not torch.allclose(ours.running_mean, torch.zeros(5))  # the statistics really moved
    ours.eval()
    ref.eval()
    x = torch.randn(4, 5)
    torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_without_affine_or_running_stats() -> None:
    torch.manual_seed(1)
    x = torch.randn(6, 3)
    for kw in ({"affine": False}, {"track_running_stats": False}):
        ours, ref = GlobalBatchNorm1d(3, **kw), nn.BatchNorm1d(3, **kw)
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=1e-5)


def test_state_dict_keys_equal_batchnorm1d() -> None:
    assert list(GlobalBatchNorm1d(4).state_dict()) == list(nn.BatchNorm1d(4).state_dict())
    ref = nn.BatchNorm1d(4)
    ref.running_mean.fill_(2.0)
    ours = GlobalBatchNorm1d(4)
    ours.load_state_dict(ref.state_dict())  # strict
    assert torch.equal(ours.running_mean, ref.running_mean)


@pytest.mark.parametrize("rows", [0, 1])
def test_fewer_than_two_rows_use_running_stats_without_updating_them(rows: int) -> None:
    torch.manual_seed(2)
    bn = GlobalBatchNorm1d(3)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([1.0, -2.0, 0.5]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25, 1.0]))
        bn.weight.copy_(torch.tensor([2.0, 1.0, -1.0]))
        bn.bias.copy_(torch.tensor([0.0, 3.0, 1.0]))
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    assert bn.training
    x = torch.randn(rows, 3, requires_grad=True)
    y = bn(x)
    assert y.shape == (rows, 3)
    expected = (x.detach() - state["running_mean"]) / torch.sqrt(state["running_var"] + bn.eps) * state[
        "weight"
    ] + state["bias"]
    torch.testing.assert_close(y.detach(), expected, atol=1e-6, rtol=1e-6)
    for k, v in bn.state_dict().items():
        assert torch.equal(v, state[k]), k
    y.sum().backward()
    assert x.grad is not None


def test_rejects_non_2d_input() -> None:
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        GlobalBatchNorm1d(3)(torch.randn(2, 3, 4))


def test_not_converted_to_sync_batchnorm() -> None:
    model = nn.Sequential(nn.Linear(3, 4), GlobalBatchNorm1d(4), nn.BatchNorm1d(4), ProjectionMLP(4, 8, 2))
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert type(converted[1]) is GlobalBatchNorm1d
    assert type(converted[3][1]) is GlobalBatchNorm1d
    assert isinstance(converted[2], nn.SyncBatchNorm)  # the conversion did run
    assert not isinstance(GlobalBatchNorm1d(4), nn.modules.batchnorm._BatchNorm)


# --- ProjectionMLP ------------------------------------------------------------------------------------------------
def test_projection_mlp_layout_and_names() -> None:
    mlp = ProjectionMLP(6, 10, 4)
    assert [n for n, _ in mlp.named_children()] == ["0", "1", "2", "3"]
    assert isinstance(mlp[0], nn.Linear) and (mlp[0].in_features, mlp[0].out_features) == (6, 10)
    assert isinstance(mlp[1], GlobalBatchNorm1d) and mlp[1].num_features == 10
    assert isinstance(mlp[2], nn.ReLU)
    assert isinstance(mlp[3], nn.Linear) and (mlp[3].in_features, mlp[3].out_features) == (10, 4)
    assert set(mlp.state_dict()) == {
        "0.weight", "0.bias",
        "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked",
        "3.weight", "3.bias",
    }  # fmt: skip
    assert (mlp.in_dim, mlp.out_dim) == (6, 4)


@pytest.mark.parametrize("train", [True, False])
def test_projection_mlp_on_leading_dims_equals_flattened(train: bool) -> None:
    torch.manual_seed(3)
    mlp = ProjectionMLP(6, 10, 4).train(train)
    x = torch.randn(5, 3, 6)
    y = mlp(x)
    assert y.shape == (5, 3, 4)
    flat = mlp(x.reshape(15, 6)).reshape(5, 3, 4)
    torch.testing.assert_close(y, flat, atol=1e-6, rtol=1e-6)
    if train:  # the statistics are over all P x Q rows: not the same as per query step
        per_step = torch.stack([mlp(x[:, q]) for q in range(3)], dim=1)
        assert not torch.allclose(y, per_step, atol=1e-3)
        manual = torch.relu(
            nn.functional.batch_norm(
                mlp[0](x.reshape(15, 6)), None, None, mlp[1].weight, mlp[1].bias, True, 0.0, mlp[1].eps
            )
        )
        torch.testing.assert_close(y.reshape(15, 4), mlp[3](manual), atol=1e-5, rtol=1e-5)


# --- mixed precision -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.1, None])
def test_under_bf16_autocast_statistics_and_output_are_float32(momentum: float | None) -> None:
    """Under CPU bf16 autocast (the step of ``trainer.precision=bf16-mixed``) the input is bfloat16, as the Linear
    before it hands it over; the output and the running statistics equal ``BatchNorm1d``'s float32 computation on
    the same values (a bfloat16 computation is off by ~1e-3), in training and in evaluation."""
    torch.manual_seed(4)
    ours, ref = _pair(6, momentum)
    for n in (9, 17):
        x = (2.0 * torch.randn(n, 6) + torch.arange(6.0)).to(torch.bfloat16)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = ours(x)
        assert y.dtype == torch.float32
        torch.testing.assert_close(y, ref(x.float()), atol=2e-6, rtol=1e-6)
        torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-6, rtol=1e-6)
        assert ours.running_mean.dtype == ours.running_var.dtype == torch.float32
    ours.eval()
    ref.eval()
    x = torch.randn(4, 6).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref(x.float()), atol=2e-6, rtol=1e-6)


def test_projector_under_bf16_autocast_normalises_in_float32() -> None:
    """In the projector the BatchNorm's input comes from a bfloat16 Linear; its output is float32."""
    torch.manual_seed(5)
    mlp = ProjectionMLP(6, 10, 4)
    x = torch.randn(12, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = mlp[0](x)
        normalised = mlp[1](hidden)
    assert hidden.dtype == torch.bfloat16 and normalised.dtype == torch.float32
    expected = nn.functional.batch_norm(hidden.float(), None, None, mlp[1].weight, mlp[1].bias, True, 0.0, mlp[1].eps)
    torch.testing.assert_close(normalised, expected, atol=2e-6, rtol=1e-6)


def test_a_bfloat16_model_without_autocast_stays_in_bfloat16() -> None:
    """A model converted to bfloat16 as a whole (``bf16-true``): the output keeps the input's dtype, as
    ``BatchNorm1d``'s, and the bfloat16 running statistics are updated."""
    torch.manual_seed(6)
    bn = GlobalBatchNorm1d(3).to(torch.bfloat16)
    y = bn(torch.randn(8, 3, dtype=torch.bfloat16) + 2.0)
    assert y.dtype == torch.bfloat16 and bn.running_mean.dtype == torch.bfloat16
    assert float(bn.running_mean.float().abs().sum()) > 0
