"""Decay / no-decay parameter groups and the warm-up + cosine schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from smartpretrain.tasks.optim import decay_groups, warmup_cosine


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.lin = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.gru = nn.GRU(4, 4)
        self.h0 = nn.Parameter(torch.zeros(1, 4))
        self.tied = self.norm  # the same module twice must not duplicate its parameters


def test_decay_groups_split_and_cover_every_parameter() -> None:
    model = _Toy()
    decay, no_decay = decay_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert sorted(names[id(p)] for p in decay["params"]) == ["gru.weight_hh_l0", "gru.weight_ih_l0", "lin.weight"]
    assert sorted(names[id(p)] for p in no_decay["params"]) == [
        "emb.weight", "gru.bias_hh_l0", "gru.bias_ih_l0", "h0", "lin.bias", "norm.bias", "norm.weight",
    ]  # fmt: skip
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    torch.optim.AdamW([decay, no_decay])  # accepted as is (no parameter in two groups)


def test_frozen_parameters_are_left_out() -> None:
    model = _Toy()
    model.lin.weight.requires_grad_(False)
    decay, _ = decay_groups(model, 0.1)
    assert all(p is not model.lin.weight for p in decay["params"])


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1e-4), (7.5, (1e-4 + 1.5e-3) / 2), (15, 1.5e-3), (23.5, 1e-6 + 0.5 * (1.5e-3 - 1e-6)), (32, 1e-6), (40, 1e-6)],
)
def test_warmup_cosine_release_schedule(step: float, expected: float) -> None:
    assert math.isclose(warmup_cosine(step, 15, 32, 1e-4, 1.5e-3, 1e-6), expected, rel_tol=1e-9)
