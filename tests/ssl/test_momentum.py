"""The momentum branch: cosine schedule, EMA update, frozen copy; and the pre-training task's schedules/groups."""

from __future__ import annotations

import copy
import itertools
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from smartpretrain.ssl.momentum import cosine_momentum, ema_update, make_momentum_copy


def _net() -> nn.Module:
    net = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        for p in net.parameters():  # BatchNorm's ones/zeros too: every parameter differs between two nets
            p.normal_()
    return net


# --- schedule -----------------------------------------------------------------------------------------------------
def test_cosine_momentum_values() -> None:
    assert cosine_momentum(0.996, 0.0) == pytest.approx(0.996, abs=1e-15)
    assert cosine_momentum(0.996, 1.0) == 1.0
    assert cosine_momentum(0.996, 0.5) == pytest.approx(0.998, abs=1e-12)
    assert cosine_momentum(0.99, 0.25) == pytest.approx(1 - 0.01 * (1 + math.cos(math.pi / 4)) / 2, abs=1e-15)
    assert cosine_momentum(0.996, -0.3) == pytest.approx(0.996, abs=1e-15)  # clamped
    assert cosine_momentum(0.996, 1.7) == 1.0


def test_cosine_momentum_is_monotone() -> None:
    values = [cosine_momentum(0.996, i / 200) for i in range(-10, 211)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert all(0.996 - 1e-15 <= v <= 1.0 for v in values)


# --- EMA ----------------------------------------------------------------------------------------------------------
def test_ema_update_is_exact_and_leaves_buffers_alone() -> None:
    torch.manual_seed(0)
    online, target = _net().double(), _net().double()  # different initial weights
    online[1].running_mean.fill_(5.0)
    target[1].running_mean.fill_(-2.0)
    target[1].num_batches_tracked.fill_(3)
    old_target = {k: v.clone() for k, v in target.state_dict().items()}
    old_online = {k: v.clone() for k, v in online.state_dict().items()}
    m = 0.9
    ema_update(target, online, m)
    params = dict(online.named_parameters())
    for name, p in target.named_parameters():
        expected = m * old_target[name] + (1 - m) * old_online[name]
        torch.testing.assert_close(p.data, expected, atol=1e-12, rtol=0)
        assert not torch.equal(p.data, old_target[name])
        assert torch.equal(params[name].data, old_online[name])  # the online branch is untouched
    for name, b in target.named_buffers():
        assert torch.equal(b, old_target[name])


def test_ema_update_does_not_track_gradients() -> None:
    online = _net()
    target = make_momentum_copy(online)
    with torch.enable_grad():
        ema_update(target, online, 0.5)
    assert all(p.grad_fn is None and not p.requires_grad for p in target.parameters())


def test_ema_update_extremes_and_mismatch() -> None:
    torch.manual_seed(1)
    online, target = _net(), _net()
    before = copy.deepcopy(target)
    ema_update(target, online, 1.0)
    for a, b in zip(target.parameters(), before.parameters(), strict=True):
        assert torch.equal(a, b)
    ema_update(target, online, 0.0)
    for a, b in zip(target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    with pytest.raises(ValueError, match="parameters"):
        ema_update(nn.Linear(4, 6), online, 0.9)


def test_momentum_copy_is_frozen_and_gets_no_gradient() -> None:
    torch.manual_seed(2)
    online = _net()
    target = make_momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(p.requires_grad for p in online.parameters())
    for (n1, a), (n2, b) in zip(online.named_parameters(), target.named_parameters(), strict=True):
        assert n1 == n2 and torch.equal(a, b) and a.data_ptr() != b.data_ptr()  # same values, own storage
    x = torch.randn(5, 4)
    loss = (online(x) * target(x)).sum() + target(x).pow(2).sum()
    loss.backward()
    assert all(p.grad is None for p in target.parameters())
    assert all(p.grad is not None for p in online.parameters())
    with torch.no_grad():
        online[0].weight.add_(1.0)
    assert not torch.equal(online[0].weight, target[0].weight)


# --- through the pre-training task --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task():
    from smartpretrain.backbones.qcnet import QCNet
    from smartpretrain.ssl.tcl import TrajectoryContrastiveLoss
    from smartpretrain.ssl.trl import TrajectoryReconstructionLoss
    from smartpretrain.tasks.pretrain import PretrainTask

    torch.manual_seed(0)
    backbone = QCNet(
        hidden_dim=32, num_heads=2, head_dim=16, num_freq_bands=16, num_agent_layers=1, num_dec_layers=1,
        num_historical_steps=20, num_future_steps=30, num_t2m_steps=20, time_span=5, dropout=0.0, num_modes=1,
        propose_stack_only=True,
    )  # fmt: skip
    objectives = {
        "tcl": TrajectoryContrastiveLoss(dim=64, hidden_dim=128),
        "trl": TrajectoryReconstructionLoss(dim=64, hidden_dim=128, window=20),
    }
    return PretrainTask(
        backbone, objectives, proj_dim=64, proj_hidden_dim=128, window=20,
        lr_start=2e-4, lr_peak=1e-3, lr_end=1e-5, warmup_epochs=4, max_epochs=20,
        weight_decay_start=0.02, weight_decay_end=0.2, momentum_base=0.99,
    )  # fmt: skip


def _expected_schedule(e: float) -> dict[str, float]:
    if e < 4:
        lr = 2e-4 + (1e-3 - 2e-4) * e / 4
    else:
        lr = 1e-5 + (1e-3 - 1e-5) * (1 + math.cos(math.pi * min((e - 4) / 16, 1.0))) / 2
    ramp = min(max(e / 20, 0.0), 1.0)
    return {
        "lr": lr,
        "weight_decay": 0.02 + 0.18 * ramp,
        "momentum": 1 - 0.01 * (1 + math.cos(math.pi * ramp)) / 2,
    }


@pytest.mark.parametrize("epoch", [0.0, 1.0, 2.5, 4.0, 7.3, 12.0, 20.0, 25.0])
def test_task_schedule(task, epoch: float) -> None:
    got = task.schedule(epoch)
    expected = _expected_schedule(epoch)
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-15), key


def test_task_schedule_landmarks(task) -> None:
    assert task.schedule(0.0) == pytest.approx({"lr": 2e-4, "weight_decay": 0.02, "momentum": 0.99})
    assert task.schedule(4.0)["lr"] == pytest.approx(1e-3)
    assert task.schedule(12.0)["lr"] == pytest.approx((1e-3 + 1e-5) / 2)
    assert task.schedule(10.0)["momentum"] == pytest.approx(0.995)
    assert task.schedule(20.0) == pytest.approx({"lr": 1e-5, "weight_decay": 0.2, "momentum": 1.0})


def test_task_momentum_branch_is_frozen_and_not_optimised(task) -> None:
    momentum_params = list(task.momentum_branch.parameters())
    assert momentum_params and all(not p.requires_grad for p in momentum_params)
    assert all(p.requires_grad for p in task.branch.parameters())
    opt = task.configure_optimizers()
    assert isinstance(opt, torch.optim.AdamW)
    in_groups = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(in_groups) == len(set(in_groups))
    assert not {id(p) for p in momentum_params} & set(in_groups)
    trainable = {id(p) for n, p in task.named_parameters() if not n.startswith("momentum_branch.")}
    assert set(in_groups) == trainable  # online branch + objectives' heads, all of them

    names = {id(p): n for n, p in task.named_parameters()}
    decayed = [g for g in opt.param_groups if g.get("decayed", False)]
    assert len(decayed) == 1 and decayed[0]["weight_decay"] == pytest.approx(0.02)
    decayed_names = [names[id(p)] for p in decayed[0]["params"]]
    assert decayed_names and all(n.endswith("weight") for n in decayed_names)
    assert all(p.dim() == 2 for p in decayed[0]["params"])
    assert "branch.projector.0.weight" in decayed_names and "objectives.tcl.predictor.3.weight" in decayed_names
    assert "objectives.trl.head.0.weight" in decayed_names
    others = [names[id(p)] for g in opt.param_groups if not g.get("decayed", False) for p in g["params"]]
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups if not g.get("decayed", False))
    for n in ("branch.projector.1.weight", "branch.projector.0.bias", "objectives.trl.offset_embedding.weight"):
        assert n in others


def test_on_train_batch_start_applies_the_schedule_and_the_ema(task) -> None:
    task = copy.deepcopy(task)
    opt = task.configure_optimizers()
    with torch.no_grad():
        for p in task.branch.parameters():
            p.add_(0.01)
    online = {n: p.detach().clone() for n, p in task.branch.named_parameters()}
    before = {n: p.detach().clone() for n, p in task.momentum_branch.named_parameters()}
    task.trainer = SimpleNamespace(global_step=30, num_training_batches=10, optimizers=[opt])
    try:
        assert task.fractional_epoch() == pytest.approx(3.0)
        task.on_train_batch_start(None, 0)
    finally:
        task.trainer = None
    expected = _expected_schedule(3.0)
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(expected["lr"])
        wd = expected["weight_decay"] if group.get("decayed", False) else 0.0
        assert group["weight_decay"] == pytest.approx(wd)
    m = expected["momentum"]
    for n, p in task.momentum_branch.named_parameters():
        torch.testing.assert_close(p.detach(), m * before[n] + (1 - m) * online[n], atol=1e-7, rtol=1e-6)
