"""Forecast-MAE's lane encoder: a mini-PointNet over the points of a lane segment."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LaneEmbeddingLayer(nn.Module):
    r"""Encode a polyline of :math:`P` points ``[B, P, in_channels]`` into one vector ``[B, out_channels]``:

    .. math::
        f = \phi_1(x) \in \mathbb{R}^{256 \times P}, \quad g = \max_p f_{:,p}, \quad
        y = \max_p \phi_2([g, f_{:,p}])

    with point-wise (kernel-1 conv) MLPs :math:`\phi_1` = Conv(in, 128), BN, ReLU, Conv(128, 256) and
    :math:`\phi_2` = Conv(512, 256), BN, ReLU, Conv(256, out). The global feature :math:`g` comes first in
    the concatenation.

    Modules: ``first_conv.{0,1,3}``, ``second_conv.{0,1,3}`` (198,528 parameters with the defaults).

    Args:
        in_channels: features per point.
        out_channels: output size.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 128) -> None:
        super().__init__()
        self.first_conv = nn.Sequential(
            nn.Conv1d(in_channels, 128, 1),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Conv1d(128, 256, 1),
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(512, 256, 1),
            nn.BatchNorm1d(256),
            nn.ReLU(inplace=True),
            nn.Conv1d(256, out_channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, P, in_channels]`` -> ``[B, out_channels]``."""
        num_points = x.shape[1]
        f = self.first_conv(x.transpose(1, 2))  # [B, 256, P]
        g = f.max(dim=-1, keepdim=True).values
        f = torch.cat([g.expand(-1, -1, num_points), f], dim=1)  # [B, 512, P]
        f = self.second_conv(f)
        return f.max(dim=-1).values
