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

    Mixed precision: statistics and normalisation are computed in float32 with autocast off, from the input upcast
    (under ``bf16-mixed`` the preceding ``Linear`` hands over bfloat16), so the running statistics are those of an
    fp32 run. Under autocast the output is float32 (the next layer casts it as it needs); without autocast it has
    the input's dtype, as ``BatchNorm1d``'s (a model converted to bfloat16 as a whole keeps computing in bfloat16).
    """

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() != 2:
            raise ValueError(f"GlobalBatchNorm1d expects [N, C], got {tuple(input.shape)}")

    def forward(self, x: Tensor) -> Tensor:
        self._check_input_dim(x)
        device_type = x.device.type
        autocast = torch.is_autocast_enabled(device_type)
        with torch.autocast(device_type=device_type, enabled=False):
            y = self._normalise(x.float() if x.dtype in (torch.float16, torch.bfloat16) else x)
        return y if autocast else y.to(x.dtype)

    def _normalise(self, x: Tensor) -> Tensor:
        """The normalisation of ``x`` (float32 or float64, autocast off), updating the running statistics."""
        if not self.training and self.running_mean is not None:
            return self._with_running_stats(x)
        count = global_sum(torch.tensor(float(x.size(0)), device=x.device))
        n = float(count.item())
        if n < 2:
            if self.running_mean is None:
                raise ValueError(f"GlobalBatchNorm1d without running statistics needs >= 2 rows, got {int(n)}")
            return self._with_running_stats(x)
        mean = differentiable_sum(x.sum(dim=0)) / n
        centred = x - mean
        var = differentiable_sum((centred * centred).sum(dim=0)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_((var.detach() * n / (n - 1)).to(self.running_var.dtype), momentum)
        y = centred * torch.rsqrt(var + self.eps)
        if self.affine:
            y = y * self.weight.to(y.dtype) + self.bias.to(y.dtype)
        return y

    def _with_running_stats(self, x: Tensor) -> Tensor:
        """Normalisation by the running statistics (evaluation, or fewer than two rows), in ``x``'s dtype."""
        assert self.running_mean is not None and self.running_var is not None
        weight = None if self.weight is None else self.weight.to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        mean, var = self.running_mean.to(x.dtype), self.running_var.to(x.dtype)
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, self.eps)


__all__ = ["GlobalBatchNorm1d"]
