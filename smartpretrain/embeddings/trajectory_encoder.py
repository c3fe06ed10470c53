"""A small Transformer that maps a short trajectory in the agent frame to one fixed-size embedding, trained with
the triplet loss of :mod:`~smartpretrain.embeddings.mining` ("Contrast & Compress", arXiv 2506.02571).

Per step t of ``positions [B, T, 2]`` with ``valid [B, T]``:

.. math::
    f_t = \\frac{1}{\\sigma} (x_t, y_t, x_t - x_{t'}, y_t - y_{t'}), \\qquad
    h^0_t = W f_t + P_t

with ``t'`` the previous valid step (the difference is 0 at the first valid step), ``sigma`` =
``position_scale`` metres and ``P`` a learned embedding of the step index; ``f_t = 0`` at invalid steps. A pre-norm
``nn.TransformerEncoder`` (GELU) attends over the valid steps only (``src_key_padding_mask = ~valid``), a masked
mean over them pools, and a two-layer MLP maps to ``embedding_dim``, L2-normalised by default (so L2 k-NN
retrieval ranks by cosine). The positions of invalid steps are never read: changing them changes nothing.

A row without any valid step keeps its first position unmasked: attention over no key at all is a softmax of
all ``-inf``, which is NaN, and would poison the whole batch's gradient. That row's embedding is the (finite)
embedding of a zero input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["TrajectoryEncoder", "TrajectoryEncoderConfig"]


@dataclass
class TrajectoryEncoderConfig:
    """Everything that shapes a :class:`TrajectoryEncoder` (one object, passed down).

    Attributes:
        num_steps: T, the trajectory length the encoder accepts (its positional embeddings).
        embedding_dim: width of the output embedding.
        hidden_dim: width of the Transformer (divisible by ``num_heads``; the feed-forward is 4x as wide).
        num_heads: attention heads.
        num_layers: Transformer layers.
        dropout: dropout of the Transformer layers.
        normalize: L2-normalise the output.
        position_scale: metres per input unit: keeps the features of a window tens of metres long O(1).
    """

    num_steps: int = 50
    embedding_dim: int = 16
    hidden_dim: int = 64
    num_heads: int = 4
    num_layers: int = 2
    dropout: float = 0.1
    normalize: bool = True
    position_scale: float = 10.0

    def __post_init__(self) -> None:
        for name in ("num_steps", "embedding_dim", "hidden_dim", "num_heads", "num_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrajectoryEncoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_dim % self.num_heads:
            raise ValueError(
                f"TrajectoryEncoderConfig.hidden_dim ({self.hidden_dim}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TrajectoryEncoderConfig.dropout must be in [0, 1), got {self.dropout}")
        if not (math.isfinite(self.position_scale) and self.position_scale > 0):
            raise ValueError(f"TrajectoryEncoderConfig.position_scale must be > 0, got {self.position_scale}")


def _step_features(positions: Tensor, valid: Tensor) -> Tensor:
    """``[B, T, 4]`` (x, y, dx, dy), (dx, dy) from the previous valid step; zeros at invalid steps."""
    b, t = valid.shape
    steps = torch.arange(t, device=valid.device).expand(b, t)
    # the last valid step strictly before t (-1: none)
    last_valid = torch.where(valid, steps, -1).cummax(dim=1).values
    previous = torch.cat([last_valid.new_full((b, 1), -1), last_valid[:, :-1]], dim=1)
    # torch.where, not a product: an invalid step's position may hold anything, inf and NaN included
    points = torch.where(valid[..., None], positions, 0.0)
    before = points.gather(1, previous.clamp_min(0)[..., None].expand(-1, -1, 2))
    delta = torch.where((valid & (previous >= 0))[..., None], points - before, 0.0)
    return torch.cat([points, delta], dim=-1)


class TrajectoryEncoder(nn.Module):
    """``positions [B, T, 2], valid [B, T] -> [B, embedding_dim]`` (see the module docstring)."""

    def __init__(self, config: TrajectoryEncoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or TrajectoryEncoderConfig()
        c = self.config
        self.input_proj = nn.Linear(4, c.hidden_dim)
        self.step_embedding = nn.Embedding(c.num_steps, c.hidden_dim)
        layer = nn.TransformerEncoderLayer(
            c.hidden_dim,
            c.num_heads,
            dim_feedforward=4 * c.hidden_dim,
            dropout=c.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # pre-norm layers leave the residual stream unnormalised: a final norm before pooling; nested tensors do
        # not support norm_first, so they are switched off rather than warned about
        self.encoder = nn.TransformerEncoder(
            layer, c.num_layers, norm=nn.LayerNorm(c.hidden_dim), enable_nested_tensor=False
        )
        self.head = nn.Sequential(
            nn.Linear(c.hidden_dim, c.hidden_dim), nn.GELU(), nn.Linear(c.hidden_dim, c.embedding_dim)
        )

    def forward(self, positions: Tensor, valid: Tensor) -> Tensor:
        c = self.config
        if positions.dim() != 3 or positions.shape[-1] != 2 or valid.shape != positions.shape[:2]:
            raise ValueError(
                f"expected positions [B, T, 2] and valid [B, T], got {tuple(positions.shape)} and {tuple(valid.shape)}"
            )
        if positions.shape[1] != c.num_steps:
            raise ValueError(
                f"trajectories have T={positions.shape[1]} steps, the encoder is configured for num_steps={c.num_steps}"
            )
        valid = valid.bool()
        features = _step_features(positions.float(), valid) / c.position_scale
        steps = torch.arange(c.num_steps, device=positions.device)
        hidden = self.input_proj(features) + self.step_embedding(steps)[None]
        attend = valid.clone()
        attend[:, 0] |= ~valid.any(dim=1)  # a row without valid steps attends to its (zero-input) first step
        hidden = self.encoder(hidden, src_key_padding_mask=~attend)
        count = attend.sum(dim=1, keepdim=True).clamp_min(1).to(hidden.dtype)
        pooled = torch.where(attend[..., None], hidden, 0.0).sum(dim=1) / count
        out = self.head(pooled)
        return F.normalize(out, dim=-1) if c.normalize else out
