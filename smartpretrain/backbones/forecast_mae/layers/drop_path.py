"""Stochastic depth (drop path) per sample."""

from __future__ import annotations

from torch import Tensor, nn


class DropPath(nn.Module):
    r"""Drop the whole residual branch of a sample with probability :math:`p` (stochastic depth).

    In training, for each sample :math:`b` (first dimension) independently

    .. math::
        y_b = \frac{m_b}{1 - p}\, x_b, \qquad m_b \sim \mathrm{Bernoulli}(1 - p),

    so that :math:`\mathbb{E}[y] = x` (with :math:`p = 1` the output is all zeros). In eval mode, or with
    :math:`p = 0`, it is the identity.

    Args:
        p: drop probability in ``[0, 1]``.
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop probability must lie in [0, 1], got {p}")
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        if keep > 0.0:
            mask = mask / keep
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
