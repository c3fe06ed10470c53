"""The momentum (EMA) branch: schedule and update."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine_momentum(base: float, progress: float) -> float:
    r"""EMA momentum rising from ``base`` to 1 along a half cosine.

    .. math:: m = 1 - (1 - m_0)\,\frac{1 + \cos(\pi e / E)}{2}

    ``progress`` is ``e / E`` (fractional epoch over max epochs), clamped to [0, 1].
    """
    p = min(max(progress, 0.0), 1.0)
    return 1.0 - (1.0 - base) * (1.0 + math.cos(math.pi * p)) / 2.0


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    r"""``θ_target ← m θ_target + (1 - m) θ_online`` for every parameter (buffers are the target's own).

    The two modules must have the same parameter names in the same order.
    """
    t_params = [p for _, p in target.named_parameters()]
    o_params = [p for _, p in online.named_parameters()]
    if len(t_params) != len(o_params):
        raise ValueError(f"momentum branch has {len(t_params)} parameters, online branch {len(o_params)}")
    if t_params:
        torch._foreach_lerp_(t_params, [p.detach() for p in o_params], 1.0 - momentum)


def make_momentum_copy(online: nn.Module) -> nn.Module:
    """A deep copy of ``online`` that receives no gradients."""
    import copy

    target = copy.deepcopy(online)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


__all__ = ["cosine_momentum", "ema_update", "make_momentum_copy"]
