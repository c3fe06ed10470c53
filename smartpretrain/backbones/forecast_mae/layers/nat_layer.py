"""Pre-norm transformer layer with 1-D neighborhood attention (Forecast-MAE's agent-history encoder)."""

from __future__ import annotations

from torch import Tensor, nn

from smartpretrain.backbones.forecast_mae.layers.drop_path import DropPath
from smartpretrain.backbones.forecast_mae.layers.mlp import Mlp
from smartpretrain.backbones.forecast_mae.layers.neighborhood_attention import NeighborhoodAttention1D


class NATLayer(nn.Module):
    r"""Neighborhood-attention transformer layer, pre-norm:

    .. math::
        x \leftarrow x + \mathrm{DropPath}(\mathrm{NA}(\mathrm{LN}_1(x))), \qquad
        x \leftarrow x + \mathrm{DropPath}(\mathrm{MLP}(\mathrm{LN}_2(x)))

    with :class:`NeighborhoodAttention1D` and a GELU :class:`Mlp` of hidden size ``int(dim * mlp_ratio)``.

    Modules: ``norm1``, ``attn``, ``drop_path``, ``norm2``, ``mlp`` (``mlp.fc1``, ``mlp.fc2``).

    Args:
        dim: channels.
        num_heads: attention heads.
        kernel_size: neighborhood size (odd).
        mlp_ratio: MLP hidden size / ``dim``.
        qkv_bias: whether the attention's ``qkv`` projection has a bias.
        drop_path: stochastic-depth probability of both residual branches.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = NeighborhoodAttention1D(dim, num_heads, kernel_size, qkv_bias=qkv_bias)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=nn.GELU)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, L, dim]`` -> ``[B, L, dim]``."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))
