"""Parameter groups and schedules shared by the tasks."""

from __future__ import annotations

import math

from torch import nn

# Modules whose `weight` is a matrix that weight decay should shrink; everything else (biases, norms,
# embeddings, learned initial states, frequencies) is left undecayed.
_DECAYED_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.MultiheadAttention, nn.RNNBase)


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups: decay for the weight matrices of Linear/Conv/MHA/RNN layers, none for the rest.

    Every trainable parameter lands in exactly one group (asserted), tied parameters once.
    """
    decay: dict[int, nn.Parameter] = {}
    no_decay: dict[int, nn.Parameter] = {}
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            is_matrix = isinstance(module, _DECAYED_MODULES) and "weight" in name
            (decay if is_matrix else no_decay)[id(param)] = param
    for key in decay:
        no_decay.pop(key, None)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == set(decay) | set(no_decay), "a parameter fell through the decay grouping"
    return [
        {"params": list(decay.values()), "weight_decay": weight_decay},
        {"params": list(no_decay.values()), "weight_decay": 0.0},
    ]


def warmup_cosine(step: float, warmup: float, total: float, lr_start: float, lr_peak: float, lr_end: float) -> float:
    """Linear warm-up ``lr_start -> lr_peak`` over ``warmup``, then half-cosine to ``lr_end`` at ``total``."""
    if step < warmup:
        return lr_start + (lr_peak - lr_start) * step / max(warmup, 1e-12)
    progress = min((step - warmup) / max(total - warmup, 1e-12), 1.0)
    return lr_end + 0.5 * (lr_peak - lr_end) * (1.0 + math.cos(math.pi * progress))
