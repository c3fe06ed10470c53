"""Forecast-MAE's agent-history encoder: a 3-level neighborhood-attention pyramid with a 1-D FPN."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smartpretrain.backbones.forecast_mae.layers.init import init_weights
from smartpretrain.backbones.forecast_mae.layers.nat_layer import NATLayer


class ConvTokenizer(nn.Module):
    r"""Per-step tokens :math:`y = \mathrm{Conv1d}_{k=3, s=1, p=1}(x)`, ``[B, C_in, T] -> [B, D, T]``.

    Module: ``proj`` (with bias).
    """

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv1d(in_chans, embed_dim, kernel_size=3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class ConvDownsampler(nn.Module):
    r"""Halve the sequence and double the channels, channels-last ``[B, L, d] -> [B, \lceil L/2 \rceil, 2d]``:

    .. math::
        y = \mathrm{LN}(\mathrm{Conv1d}_{k=3, s=2, p=1}(x^\top)^\top)

    Modules: ``reduction`` (no bias), ``norm``.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Conv1d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.reduction(x.transpose(1, 2)).transpose(1, 2)
        return self.norm(x)


class NATBlock(nn.Module):
    r"""One pyramid level: ``depth`` :class:`NATLayer` s (``blocks.{j}``), then an optional
    :class:`ConvDownsampler` (``downsample``, ``None`` on the last level).

    :meth:`forward` returns the features before and after the downsampling (the same tensor without it).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        kernel_size: int,
        mlp_ratio: float = 3.0,
        qkv_bias: bool = True,
        drop_path: Sequence[float] | float = 0.0,
        downsample: bool = True,
    ) -> None:
        super().__init__()
        rates = list(drop_path) if isinstance(drop_path, Sequence) else [float(drop_path)] * depth
        if len(rates) != depth:
            raise ValueError(f"expected {depth} drop-path rates, got {len(rates)}")
        self.blocks = nn.ModuleList(
            NATLayer(dim, num_heads, kernel_size, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=rates[j])
            for j in range(depth)
        )
        self.downsample = ConvDownsampler(dim) if downsample else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        for block in self.blocks:
            x = block(x)
        return x, (self.downsample(x) if self.downsample is not None else x)


class AgentEmbeddingLayer(nn.Module):
    r"""Encode an agent's history ``[B, in_chans, T]`` into one vector ``[B, 4 * embed_dim]``.

    .. math::
        h^{(0)} = \mathrm{Conv1d}(x)^\top, \quad
        f_i = \mathrm{LN}_i(\mathrm{NAT}_i(h^{(i)})), \quad
        h^{(i+1)} = \mathrm{Down}_i(\mathrm{NAT}_i(h^{(i)})),

    with level :math:`i` at width :math:`d_i = \text{embed\_dim} \cdot 2^i` and length :math:`T_i =
    \lceil T / 2^i \rceil` (e.g. 50 -> 25 -> 13, 11 -> 6 -> 3). A 1-D feature pyramid then merges the levels
    top-down:

    .. math::
        l_i = \mathrm{Conv1d}_i(f_i^\top), \quad
        l_{i-1} \leftarrow l_{i-1} + \mathrm{interp}_{\text{linear}}(l_i, T_{i-1}) \ (i = n-1, \ldots, 1), \quad
        y = \mathrm{Conv1d}_{fpn}(l_0)[\ldots, -1],

    i.e. the output is the FPN feature at the last (current) time step. The output width, that of every
    lateral conv and of ``fpn_conv``, is fixed to ``4 * embed_dim`` (128 with the defaults, the width of the
    last level of the 3-level pyramid).

    Module tree (state-dict names of the reference): ``embed.proj``; ``levels.{i}.blocks.{j}`` (:class:`NATLayer`)
    and ``levels.{i}.downsample.{reduction,norm}`` for all but the last level; ``norm{i}`` for ``i`` in
    ``out_indices``; ``lateral_convs.{i}``; ``fpn_conv``. 603,308 parameters with the defaults (603,212 with
    ``in_chans=3``).

    Stochastic depth: rates ``linspace(0, drop_path_rate, sum(depths))`` over the NAT layers in order.
    Initialisation: :func:`~smartpretrain.backbones.forecast_mae.layers.init_weights` (Linear xavier-uniform /
    zero bias, LayerNorm 1 / 0); Conv1d keeps torch's default; the relative position biases are truncated
    normal with std 0.02.

    Args:
        in_chans: input channels per time step.
        embed_dim: width of the first level.
        mlp_ratio: MLP hidden size / width in the NAT layers.
        kernel_size: neighborhood size per level.
        depths: NAT layers per level.
        num_heads: attention heads per level.
        out_indices: levels fed to the FPN (each gets a ``norm{i}`` and a lateral conv).
        drop_path_rate: largest stochastic-depth rate.
    """

    def __init__(
        self,
        in_chans: int = 4,
        embed_dim: int = 32,
        mlp_ratio: float = 3.0,
        kernel_size: Sequence[int] = (3, 3, 5),
        depths: Sequence[int] = (2, 2, 2),
        num_heads: Sequence[int] = (2, 4, 8),
        out_indices: Sequence[int] = (0, 1, 2),
        drop_path_rate: float = 0.2,
    ) -> None:
        super().__init__()
        num_levels = len(depths)
        if not len(kernel_size) == len(num_heads) == num_levels:
            raise ValueError("kernel_size, depths and num_heads must have one entry per level")
        if not out_indices or any(not 0 <= i < num_levels for i in out_indices):
            raise ValueError(f"out_indices must be a non-empty subset of range({num_levels}), got {out_indices}")
        self.out_indices = tuple(sorted(out_indices))
        self.out_dim = embed_dim * 4
        self.embed = ConvTokenizer(in_chans, embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        dims = [embed_dim * 2**i for i in range(num_levels)]
        self.levels = nn.ModuleList()
        for i in range(num_levels):
            start = sum(depths[:i])
            self.levels.append(
                NATBlock(
                    dims[i],
                    depths[i],
                    num_heads[i],
                    kernel_size[i],
                    mlp_ratio=mlp_ratio,
                    drop_path=rates[start : start + depths[i]],
                    downsample=i < num_levels - 1,
                )
            )
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(dims[i]))
        self.lateral_convs = nn.ModuleList(
            nn.Conv1d(dims[i], self.out_dim, kernel_size=3, padding=1) for i in self.out_indices
        )
        self.fpn_conv = nn.Conv1d(self.out_dim, self.out_dim, kernel_size=3, padding=1)
        self.apply(init_weights)

    def forward(self, x: Tensor) -> Tensor:
        """``x [B, in_chans, T]`` -> ``[B, 4 * embed_dim]``."""
        x = self.embed(x).transpose(1, 2)  # [B, T, D]
        feats: list[Tensor] = []
        for i, level in enumerate(self.levels):
            out, x = level(x)
            if i in self.out_indices:
                feats.append(getattr(self, f"norm{i}")(out))
        laterals = [conv(f.transpose(1, 2)) for conv, f in zip(self.lateral_convs, feats, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-1], mode="linear", align_corners=False
            )
        return self.fpn_conv(laterals[0])[..., -1]
