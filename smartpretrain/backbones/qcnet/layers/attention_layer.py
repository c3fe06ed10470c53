"""QCNet's graph attention layer (pre/post "sandwich" norms, gated update, relative positional embeddings)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch_geometric.nn.conv import MessagePassing
from torch_geometric.utils import softmax

if TYPE_CHECKING:
    from smartpretrain.backbones.qcnet.config import QCNetConfig


class AttentionLayer(MessagePassing):
    r"""Multi-head attention over the edges ``j -> i`` of a graph, followed by a feed-forward block.

    With :math:`\bar x = \mathrm{LN}(x)` (source, target and edge features normed separately; a non-bipartite
    layer uses one norm for source and target):

    .. math::
        q_i = W_q \bar x_i + b_q, \quad
        k_{ij} = W_k \bar x_j + W_{kr} \bar r_{ij}, \quad
        v_{ij} = W_v \bar x_j + b_v + W_{vr} \bar r_{ij} + b_{vr}

        \alpha_{ij} = \mathrm{softmax}_{j \in \mathcal{N}(i)}\big(q_i^\top k_{ij} / \sqrt{d_h}\big)
        \ \text{(per head, then dropout)}, \qquad a_i = \sum_j \alpha_{ij} v_{ij}

        g_i = \sigma(W_g [a_i, \bar x_i] + b_g), \qquad
        o_i = W_o\big(a_i + g_i \odot (W_s \bar x_i + b_s - a_i)\big) + b_o

        x_i \leftarrow x_i + \mathrm{LN}_{post}(o_i), \qquad
        x_i \leftarrow x_i + \mathrm{LN}_{ff,post}(\mathrm{FFN}(\mathrm{LN}_{ff,pre}(x_i)))

    The :math:`W_{kr}, W_{vr}` terms exist only with ``has_pos_emb``. FFN = Linear(D -> 4D), ReLU, Dropout,
    Linear(4D -> D). Only the targets are updated (and returned).

    Args:
        hidden_dim: feature size D of nodes and edges.
        num_heads, head_dim: attention heads and their size.
        dropout: on the attention weights and inside the FFN.
        bipartite: sources and targets are different node sets (separate input norms).
        has_pos_emb: the edges carry features ``r``.
    """

    def __init__(
        self,
        hidden_dim: int,
        num_heads: int,
        head_dim: int,
        dropout: float,
        bipartite: bool,
        has_pos_emb: bool,
    ) -> None:
        super().__init__(aggr="add", node_dim=0)
        self.num_heads, self.head_dim = num_heads, head_dim
        self.has_pos_emb, self.bipartite = has_pos_emb, bipartite
        self.scale = head_dim**-0.5
        inner = num_heads * head_dim
        self.to_q = nn.Linear(hidden_dim, inner)
        self.to_k = nn.Linear(hidden_dim, inner, bias=False)
        self.to_v = nn.Linear(hidden_dim, inner)
        if has_pos_emb:
            self.to_k_r = nn.Linear(hidden_dim, inner, bias=False)
            self.to_v_r = nn.Linear(hidden_dim, inner)
        self.to_s = nn.Linear(hidden_dim, inner)
        self.to_g = nn.Linear(inner + hidden_dim, inner)
        self.to_out = nn.Linear(inner, hidden_dim)
        self.attn_drop = nn.Dropout(dropout)
        self.ff_mlp = nn.Sequential(
            nn.Linear(hidden_dim, hidden_dim * 4),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim * 4, hidden_dim),
        )
        self.attn_prenorm_x_src = nn.LayerNorm(hidden_dim)
        # non-bipartite: one norm, registered under both names (two state_dict keys, one parameter)
        self.attn_prenorm_x_dst = nn.LayerNorm(hidden_dim) if bipartite else self.attn_prenorm_x_src
        if has_pos_emb:
            self.attn_prenorm_r = nn.LayerNorm(hidden_dim)
        self.attn_postnorm = nn.LayerNorm(hidden_dim)
        self.ff_prenorm = nn.LayerNorm(hidden_dim)
        self.ff_postnorm = nn.LayerNorm(hidden_dim)
        from smartpretrain.backbones.qcnet.layers import init_weights

        self.apply(init_weights)

    @classmethod
    def from_config(cls, config: QCNetConfig, *, bipartite: bool, has_pos_emb: bool) -> AttentionLayer:
        """A layer sized by ``config`` (``hidden_dim``, ``num_heads``, ``head_dim``, ``dropout``)."""
        return cls(config.hidden_dim, config.num_heads, config.head_dim, config.dropout, bipartite, has_pos_emb)

    def forward(self, x: Tensor | tuple[Tensor, Tensor], r: Tensor | None, edge_index: Tensor) -> Tensor:
        """``x``: node features ``[N, D]`` or ``(x_src [Ns, D], x_dst [Nt, D])``; ``r``: ``[E, D]`` or None;
        ``edge_index``: ``[2, E]`` (row 0 source, row 1 target). Returns the updated targets ``[Nt, D]``."""
        if isinstance(x, Tensor):
            x_dst = x
            x_src = x_dst_normed = self.attn_prenorm_x_src(x)
        else:
            x_src, x_dst = x
            x_src = self.attn_prenorm_x_src(x_src)
            x_dst_normed = self.attn_prenorm_x_dst(x_dst)
        if self.has_pos_emb and r is not None:
            r = self.attn_prenorm_r(r)
        else:
            r = None
        x_dst = x_dst + self.attn_postnorm(self._attn_block(x_src, x_dst_normed, r, edge_index))
        return x_dst + self.ff_postnorm(self.ff_mlp(self.ff_prenorm(x_dst)))

    def _attn_block(self, x_src: Tensor, x_dst: Tensor, r: Tensor | None, edge_index: Tensor) -> Tensor:
        shape = (-1, self.num_heads, self.head_dim)
        q = self.to_q(x_dst).view(shape)
        k = self.to_k(x_src).view(shape)
        v = self.to_v(x_src).view(shape)
        agg = self.propagate(edge_index, q=q, k=k, v=v, r=r, size=(x_src.size(0), x_dst.size(0)))
        return self.to_out(self._gated_update(agg, x_dst))

    def message(
        self,
        q_i: Tensor,
        k_j: Tensor,
        v_j: Tensor,
        r: Tensor | None,
        index: Tensor,
        ptr: Tensor | None,
        size_i: int | None,
    ) -> Tensor:
        if r is not None:
            shape = (-1, self.num_heads, self.head_dim)
            k_j = k_j + self.to_k_r(r).view(shape)
            v_j = v_j + self.to_v_r(r).view(shape)
        sim = (q_i * k_j).sum(dim=-1) * self.scale  # [E, heads]
        attn = self.attn_drop(softmax(sim, index, ptr, size_i))
        return v_j * attn.unsqueeze(-1)

    def _gated_update(self, agg: Tensor, x_dst: Tensor) -> Tensor:
        agg = agg.reshape(-1, self.num_heads * self.head_dim)
        g = torch.sigmoid(self.to_g(torch.cat([agg, x_dst], dim=-1)))
        return agg + g * (self.to_s(x_dst) - agg)

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(heads={self.num_heads}, head_dim={self.head_dim}, "
            f"bipartite={self.bipartite}, has_pos_emb={self.has_pos_emb})"
        )
