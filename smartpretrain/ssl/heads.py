"""The MLP heads of SmartPretrain: projector (both branches) and the contrastive predictor."""

from __future__ import annotations

from torch import Tensor, nn

from smartpretrain.ssl.batchnorm import GlobalBatchNorm1d


class ProjectionMLP(nn.Sequential):
    r"""``Linear(d_in, d_hidden) -> BatchNorm -> ReLU -> Linear(d_hidden, d_out)`` on the last dim.

    .. math:: y = W_2\,\mathrm{ReLU}(\mathrm{BN}(W_1 x + b_1)) + b_2

    Leading dims are flattened for the BatchNorm (statistics over agents x query steps, of all ranks: see
    :class:`~smartpretrain.ssl.batchnorm.GlobalBatchNorm1d`). Child names ``0, 1, 3`` match the reference
    release's ``proj`` / ``contra_predictor``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int) -> None:
        super().__init__(
            nn.Linear(in_dim, hidden_dim),
            GlobalBatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim),
        )
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        return super().forward(x.reshape(-1, x.size(-1))).reshape(*lead, self.out_dim)


__all__ = ["ProjectionMLP"]
