"""QCNet's graph attention layer (pre/post "sandwich" norms, gated update, relative positional embeddings)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.utils import softmax

if TYPE_CHECKING:
    from smartpretrain.backbones.qcnet.config import QCNetConfig


def edge_slots(dst: Tensor, num_dst: int) -> tuple[Tensor, int]:
    """Each edge's position among the edges of its target (in edge order), and the largest count ``width``."""
    if dst.numel() == 0:
        return dst.new_zeros(0), 0
    counts = torch.bincount(dst, minlength=num_dst)
    order = torch.argsort(dst, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(dst)
    slot[order] = torch.arange(dst.numel(), device=dst.device) - starts[dst[order]]
    return slot, int(counts.max())


class AttentionLayer(nn.Module):
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

    The work is split in two so that callers can share it (the formula is unchanged):

    - :meth:`source_messages` computes :math:`k_{ij}, v_{ij}` per edge from the sources and the edge features; it
      does not depend on the targets, so a decoder whose queries attend to the same context several times
      (QCNet's recurrent propose stage) computes it once. Sources may be given untiled, with ``src`` indexing them.
    - :meth:`attend` updates targets ``[N, D]`` or *groups* of targets ``[N, G, D]`` that share the same incoming
      edges (QCNet's K mode queries of one agent): :math:`k_{ij}, v_{ij}` are computed once per edge, not per mode.
    - :meth:`attend_within_groups` is the all-pairs self-attention inside each group (QCNet's mode-to-mode
      attention), computed densely.

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
        super().__init__()
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
            x_normed = self.attn_prenorm_x_src(x)
            k, v = self._project_sources(x_normed, r, edge_index[0])
            return self._update(x, x_normed, k, v, edge_index[1])
        x_src, x_dst = x
        k, v = self.source_messages(x_src, r, edge_index[0])
        return self.attend(x_dst, k, v, edge_index[1])

    def source_messages(self, x_src: Tensor, r: Tensor | None, src: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of the edges, ``([E, heads, head_dim], [E, heads, head_dim])``.

        ``x_src [Ns, D]``: source nodes (each projected once, then gathered by ``src [E]``); ``r [E, D]`` or None.
        """
        return self._project_sources(self.attn_prenorm_x_src(x_src), r, src)

    def _project_sources(self, x_src_normed: Tensor, r: Tensor | None, src: Tensor) -> tuple[Tensor, Tensor]:
        # keys and values side by side, [.., 2 * inner]: one projection of the sources, one gather, one edge product
        w_kv = torch.cat([self.to_k.weight, self.to_v.weight])
        b_v = self.to_v.bias
        with_r = self.has_pos_emb and r is not None
        if with_r:
            b_v = b_v + self.to_v_r.bias  # both value biases, added once per source node instead of once per edge
        b_kv = torch.cat([torch.zeros_like(b_v), b_v])
        # index_select (not advanced indexing): its backward is an index_add, much cheaper than an index_put
        kv = F.linear(x_src_normed, w_kv, b_kv).index_select(0, src)
        if with_r:
            w_kv_r = torch.cat([self.to_k_r.weight, self.to_v_r.weight])
            kv = torch.addmm(kv, self.attn_prenorm_r(r), w_kv_r.t())  # += r-terms in the product (no extra pass)
        # unbind (not two slices): its backward is one stack, not a zero-filled full-size gradient per slice
        k, v = kv.view(-1, 2, self.num_heads, self.head_dim).unbind(1)
        return k, v

    def attend(
        self, x_dst: Tensor, k: Tensor, v: Tensor, dst: Tensor, slots: tuple[Tensor, int] | None = None
    ) -> Tensor:
        """Update ``x_dst [N, D]`` or ``[N, G, D]`` with the edge keys / values of :meth:`source_messages`.

        ``dst [E]`` indexes the first dim of ``x_dst``; with groups, every member of group ``i`` receives all edges
        ``e`` with ``dst[e] = i`` (the softmax runs per member). A target without edges keeps only the gated self
        term (its aggregate is zero).

        Groups are computed densely: each target's edges are laid out in a padded ``[N, width]`` table (the
        ``slots`` of :func:`edge_slots`, computed here when not given), so that scores and sums are batched
        matrix products over the members instead of per-(edge, member) gathers and scatters.
        """
        x_dst_normed = self.attn_prenorm_x_dst(x_dst)
        if x_dst.dim() == 3:
            return self._update_groups(x_dst, x_dst_normed, k, v, dst, slots or edge_slots(dst, x_dst.size(0)))
        return self._update(x_dst, x_dst_normed, k, v, dst)

    def _update_groups(
        self, x_dst: Tensor, x_dst_normed: Tensor, k: Tensor, v: Tensor, dst: Tensor, slots: tuple[Tensor, int]
    ) -> Tensor:
        num, group = x_dst.size(0), x_dst.size(1)
        slot, width = slots
        heads, dim = self.num_heads, self.head_dim
        # [N, width, h, d] tables of each target's edges (zero rows where a target has fewer than width)
        table_k = k.new_zeros(num, width, heads, dim).index_put((dst, slot), k)
        table_v = v.new_zeros(num, width, heads, dim).index_put((dst, slot), v)
        present = torch.zeros(num, width, dtype=torch.bool, device=k.device).index_put(
            (dst, slot), torch.ones_like(dst, dtype=torch.bool)
        )
        q = self.to_q(x_dst_normed).view(num, group, heads, dim).transpose(1, 2)  # [N, h, G, d]
        sim = q @ table_k.permute(0, 2, 3, 1) * self.scale  # [N, h, G, width]
        # padding gets the lowest finite score (not -inf: a target without edges would give NaN), then weight 0
        sim = sim.masked_fill(~present[:, None, None, :], torch.finfo(sim.dtype).min)
        attn = torch.softmax(sim, dim=-1).masked_fill(~present[:, None, None, :], 0.0)
        attn = self.attn_drop(attn)
        agg = (attn @ table_v.transpose(1, 2)).transpose(1, 2).reshape(num, group, heads * dim)  # [N, G, h*d]
        return self._residual_blocks(x_dst, x_dst_normed, agg)

    def _update(self, x_dst: Tensor, x_dst_normed: Tensor, k: Tensor, v: Tensor, dst: Tensor) -> Tensor:
        grouped = x_dst.dim() == 3
        num_dst = x_dst.size(0)
        group = x_dst.size(1) if grouped else 1
        q = self.to_q(x_dst_normed).view(num_dst, group, self.num_heads, self.head_dim).index_select(0, dst)
        sim = (q * k.unsqueeze(1)).sum(dim=-1) * self.scale  # [E, G, h]
        attn = self.attn_drop(softmax(sim, dst, num_nodes=num_dst, dim=0))
        msg = v.unsqueeze(1) * attn.unsqueeze(-1)  # [E, G, h, d]
        agg = msg.new_zeros((num_dst, *msg.shape[1:])).index_add_(0, dst, msg)
        inner = self.num_heads * self.head_dim
        agg = agg.view(num_dst, group, inner) if grouped else agg.view(num_dst, inner)
        return self._residual_blocks(x_dst, x_dst_normed, agg)

    def attend_within_groups(self, x: Tensor, active: Tensor | None = None) -> Tensor:
        """Self-attention among the members of each group, all pairs (self included): ``x [N, G, D]``.

        ``active [N] bool``: groups whose members attend to each other; the others receive no message (as if they
        had no edges). Needs a layer without positional embedding on a single node set (``bipartite=False``).
        """
        num, group = x.size(0), x.size(1)
        xn = self.attn_prenorm_x_src(x)
        shape = (num, group, self.num_heads, self.head_dim)
        q = self.to_q(xn).view(shape).transpose(1, 2)  # [N, h, G, d]
        k = self.to_k(xn).view(shape).transpose(1, 2)
        v = self.to_v(xn).view(shape).transpose(1, 2)
        attn = self.attn_drop(torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1))  # [N, h, G(dst), G(src)]
        agg = (attn @ v).transpose(1, 2).reshape(num, group, self.num_heads * self.head_dim)
        if active is not None:
            agg = agg * active.view(-1, 1, 1).to(agg.dtype)
        return self._residual_blocks(x, xn, agg)

    def _residual_blocks(self, x_dst: Tensor, x_dst_normed: Tensor, agg: Tensor) -> Tensor:
        g = torch.sigmoid(self.to_g(torch.cat([agg, x_dst_normed], dim=-1)))
        out = self.to_out(agg + g * (self.to_s(x_dst_normed) - agg))
        x_dst = x_dst + self.attn_postnorm(out)
        return x_dst + self.ff_postnorm(self.ff_mlp(self.ff_prenorm(x_dst)))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}(heads={self.num_heads}, head_dim={self.head_dim}, "
            f"bipartite={self.bipartite}, has_pos_emb={self.has_pos_emb})"
        )
