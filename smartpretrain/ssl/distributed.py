"""Collectives the SSL objectives need, as no-ops in a single process.

Losses are normalised by *global* counts so that DDP (which averages gradients over ranks) reproduces the
gradient of one process over the whole global batch: rank r returns ``W * sum_r / N`` where ``N`` is the
global count, so the mean over ranks of the returned values (what ``sync_dist`` logs) is the global mean loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def global_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over ranks, not differentiable (counts, normalisers)."""
    if not is_distributed():
        return x
    x = x.detach().clone()
    dist.all_reduce(x)
    return x


class _AllReduceSum(torch.autograd.Function):
    """``y = sum_r x_r`` on every rank; the gradient of every ``x_r`` is ``sum_r dL/dy_r`` (each rank's
    ``y`` feeds that rank's loss, and every ``x_r`` feeds every ``y``)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def differentiable_sum(x: Tensor) -> Tensor:
    """Sum of ``x`` over ranks; gradients flow back to every rank's input (global BatchNorm statistics)."""
    if not is_distributed():
        return x
    return _AllReduceSum.apply(x.contiguous())


def gather_rows(x: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``x [n_r, ...]`` of every rank in rank order (ranks may hold different ``n_r``).

    Not differentiable (used for momentum keys). Returns the gathered tensor and this rank's row offset in it.
    """
    if not is_distributed():
        return x, 0
    w = dist.get_world_size()
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(w)]
    dist.all_gather(sizes, torch.tensor([x.size(0)], dtype=torch.long, device=x.device))
    counts = [int(s.item()) for s in sizes]
    pad = max(counts)
    padded = x.new_zeros((pad, *x.shape[1:]))
    padded[: x.size(0)] = x
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded.contiguous())
    offset = sum(counts[: dist.get_rank()])
    return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)]), offset


__all__ = ["differentiable_sum", "gather_rows", "global_sum", "is_distributed", "rank", "world_size"]
