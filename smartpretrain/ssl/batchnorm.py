"""BatchNorm over the global batch of all ranks (SmartPretrain's heads use SyncBatchNorm under DDP)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.modules.batchnorm import _NormBase

from smartpretrain.ssl.distributed import differentiable_sum, global_sum


class GlobalBatchNorm1d(_NormBase):
    r"""``BatchNorm1d`` on ``[N, C]`` whose training statistics are those of the rows of every rank.

    .. math::
        \mu = \frac{1}{N}\sum_{r}\sum_{i} x^{(r)}_i, \qquad
        \sigma^2 = \frac{1}{N}\sum_{r}\sum_{i} (x^{(r)}_i - \mu)^2, \qquad
        y = \gamma \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta

    with ``N`` the global row count. The sums are differentiable all-reduces, so gradients are those of a single
    process holding the whole global batch. Unlike ``torch.nn.SyncBatchNorm`` it runs on any backend (gloo on
    CPU included) and needs no conversion step; in one process it is an ordinary BatchNorm. Ranks may hold
    different numbers of rows, zero included, but every rank must call it (it runs collectives). With fewer than
    two rows globally the running statistics are used and not updated. State-dict keys equal ``BatchNorm1d``'s;
    it is deliberately not a ``_BatchNorm``, so Lightning's ``sync_batchnorm`` leaves it alone.
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 2:
            raise ValueError(f"GlobalBatchNorm1d expects [N, C], got {tuple(input.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        if not self.training and self.running_mean is not None:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        count = global_sum(torch.tensor(float(x.size(0)), device=x.device))
        n = float(count.item())
        if n < 2:
            if self.running_mean is None:
                raise ValueError(f"GlobalBatchNorm1d without running statistics needs >= 2 rows, got {int(n)}")
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        # statistics in float32 (bf16/fp16 inputs under autocast); the output keeps the input's dtype, as BatchNorm1d
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        mean = differentiable_sum(xf.sum(dim=0)) / n
        centred = xf - mean
        var = differentiable_sum((centred * centred).sum(dim=0)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), momentum)
        y = centred * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight + self.bias
        return y.to(x.dtype)


__all__ = ["GlobalBatchNorm1d"]
