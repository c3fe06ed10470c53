"""QCNet decoder: K mode queries attend to the agent's history, the map and the other agents; a recurrent
*propose* stage, then a *refine* stage anchored on the (detached) proposals."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from smartpretrain.backbones.graph import radius, radius_graph, relative_polar, wrap_angle
from smartpretrain.backbones.qcnet.config import QCNetConfig
from smartpretrain.backbones.qcnet.layers import AttentionLayer, FourierEmbedding, MLPLayer, init_weights
from smartpretrain.backbones.qcnet.layers.attention_layer import edge_slots
from smartpretrain.backbones.qcnet.map_encoder import batch_vector, node_field

_KINDS = ("t2m", "pl2m", "a2m")


@dataclass
class DecoderContext:
    """What the query rows attend to, built once per forward (independent of the queries).

    Rows: the ``num_queries`` query agents (in agent order), then one context-free row for all other agents.
    ``row_of_agent [A]`` maps each agent to its output row.
    """

    agents: Tensor
    """``[Q]`` the query agents' indices"""
    row_of_agent: Tensor
    """``[A]`` output row of each agent: its query row, or ``Q`` (the context-free row)"""
    sources: dict[str, Tensor]
    """per kind (t2m, pl2m, a2m): the source node features ``[Ns, D]``"""
    edges: dict[str, Tensor]
    """per kind: ``[2, E]``, row 0 the source node, row 1 the query row"""
    r: dict[str, Tensor]
    """per kind: the embedded edge features ``[E, D]``"""
    active: Tensor
    """``[Q + 1]`` rows whose modes attend to each other (m2m): all but the context-free row"""
    slots: dict[str, tuple[Tensor, int]]
    """per kind: :func:`edge_slots` of the edges' query rows (shared by every layer)"""

    @property
    def num_rows(self) -> int:
        return int(self.active.numel())


class QCNetDecoder(nn.Module):
    r"""Query-centric multimodal decoder.

    Mode queries ``m`` (``mode_emb``, one per mode and agent) attend, ``num_dec_layers`` times in a row, to:

    - t2m: the agent's own valid history steps ``s >= H - num_t2m_steps`` (only agents with some true
      ``predict_mask``); features :func:`relative_polar` in the agent's frame at step H-1, plus ``s - (H-1)``.
      Mode nodes agent-major (``a*K + k``); the edge features are computed once and ``repeat_interleave``'d K x.
    - pl2m: polygons within ``pl2m_radius`` of the agent at step H-1 (same scene); tiled K x, mode-major
      (polygon ``k*P + p`` -> mode ``k*A + a``).
    - a2m: other agents (valid at H-1) within ``a2m_radius`` of a predicted agent at H-1; tiled K x, mode-major.

    then to each other (m2m: all K x K mode pairs of one agent, self included).

    Only the *query agents* (those with some true ``predict_mask``, as in the reference) receive messages: t2m,
    pl2m, a2m and m2m all end at their modes. Every other agent's queries see no edge at all, so they all follow
    the same context-free path from ``mode_emb``; the reference computes that path once per agent, here it is
    computed once (one extra row) and its outputs are copied to those agents: the outputs equal the reference's
    for every agent.

    How the work is shared (the same formula as the reference, less computation):

    - the K mode queries of an agent receive the same edges, so keys and values are computed once per untiled
      edge (:meth:`AttentionLayer.attend` with groups) instead of once per (edge, mode);
    - the propose stage's recurrences reuse each layer's keys and values (the context does not change between
      recurrences); the edge embeddings are computed once per forward;
    - each query row's edges are laid out densely (padded to the largest count), so scores and sums are batched
      matrix products over the K modes;
    - m2m is a dense K x K attention per agent (:meth:`AttentionLayer.attend_within_groups`).

    *Propose*: ``num_recurrent_steps`` recurrences of the attention stack (shared weights), each emitting
    ``F / num_recurrent_steps`` per-step displacements and scale increments; location = cumsum, scale =
    cumsum(ELU + 1) + 0.1. *Refine*: the detached proposal is embedded per step (``y_emb``), summarised by a GRU
    (``traj_emb``, initial state ``traj_emb_h0``) into new queries, which run the (refine) attention stack once;
    location = proposal + offset, scale = ELU + 1 + 0.1, and ``pi`` the mode logits. Heading (``output_head``):
    propose location cumsum(tanh * pi), concentration 1 / (cumsum(ELU + 1) + 0.02); refine tanh * pi + proposal,
    1 / (ELU + 1 + 0.02). All outputs are in each agent's frame at step H-1.

    Every size, radius and count comes from the :class:`QCNetConfig`. ``propose_stack_only=True`` builds only
    what SmartPretrain's SSL branch uses (``mode_emb``, the relative embeddings and the propose attention stack: the
    release's 281-key ``QCNetDecoder_ssl``); then only :meth:`propose_queries` is available.
    """

    def __init__(self, config: QCNetConfig) -> None:
        super().__init__()
        self.config = config
        d, bands = config.hidden_dim, config.num_freq_bands
        self.mode_emb = nn.Embedding(config.num_modes, d)
        self.r_t2m_emb = FourierEmbedding(4, d, bands)
        self.r_pl2m_emb = FourierEmbedding(3, d, bands)
        self.r_a2m_emb = FourierEmbedding(3, d, bands)
        if not config.propose_stack_only:
            self.y_emb = FourierEmbedding(config.output_dim + int(config.output_head), d, bands)
            self.traj_emb = nn.GRU(d, d, num_layers=1, bias=True, batch_first=False)
            self.traj_emb_h0 = nn.Parameter(torch.zeros(1, d))
        for stage in ("propose",) if config.propose_stack_only else ("propose", "refine"):
            for kind in ("t2m", "pl2m", "a2m"):
                stack = nn.ModuleList(
                    AttentionLayer.from_config(config, bipartite=True, has_pos_emb=True)
                    for _ in range(config.num_dec_layers)
                )
                setattr(self, f"{kind}_{stage}_attn_layers", stack)
            m2m = AttentionLayer.from_config(config, bipartite=False, has_pos_emb=False)
            setattr(self, f"m2m_{stage}_attn_layer", m2m)
        if not config.propose_stack_only:
            self._build_output_heads()
        self.apply(init_weights)

    def _build_output_heads(self) -> None:
        d, f, out = self.config.hidden_dim, self.config.num_future_steps, self.config.output_dim
        per_rec = self.config.steps_per_recurrence
        self.to_loc_propose_pos = MLPLayer(d, d, per_rec * out)
        self.to_scale_propose_pos = MLPLayer(d, d, per_rec * out)
        self.to_loc_refine_pos = MLPLayer(d, d, f * out)
        self.to_scale_refine_pos = MLPLayer(d, d, f * out)
        if self.config.output_head:
            self.to_loc_propose_head = MLPLayer(d, d, per_rec)
            self.to_conc_propose_head = MLPLayer(d, d, per_rec)
            self.to_loc_refine_head = MLPLayer(d, d, f)
            self.to_conc_refine_head = MLPLayer(d, d, f)
        self.to_pi = MLPLayer(d, d, 1)

    # ----------------------------------------------------------------------------------------------------------
    def build_graphs(self, data: HeteroData, query_mask: Tensor | None = None) -> dict[str, Tensor]:
        """Edge indices and raw edge features of t2m, pl2m and a2m (untiled, ending at query agents) and m2m;
        independent of the weights.

        ``query_mask [A]``: agents whose mode queries receive messages; default: agents with some future to
        predict (``predict_mask``), the reference's rule. ``m2m`` lists the mode pairs of the query agents
        (agent-major mode nodes ``a*K + k``), for reference: the forward pass computes it densely.
        """
        config = self.config
        h, k = config.num_historical_steps, config.num_modes
        agent = data["agent"]
        pos = agent["position"][:, :h, :2]
        head = agent["heading"][:, :h]
        num_a, device = pos.size(0), pos.device
        pos_m, head_m = pos[:, -1], head[:, -1]
        mask_dst = agent["predict_mask"].any(dim=-1) if query_mask is None else query_mask
        mask_src = agent["valid_mask"][:, :h].clone()
        mask_src[:, : h - config.effective_num_t2m_steps] = False
        out: dict[str, Tensor] = {"query_mask": mask_dst}

        # t2m: history step (a*H + s) -> agent a
        a_idx, s_idx = (mask_src & mask_dst.unsqueeze(1)).nonzero(as_tuple=True)
        out["t2m_src"], out["t2m_agent"] = a_idx * h + s_idx, a_idx
        out["r_t2m"] = torch.cat(
            [
                relative_polar(pos[a_idx, s_idx], pos_m[a_idx], head_m[a_idx], head[a_idx, s_idx]),
                (s_idx - (h - 1)).to(pos.dtype).unsqueeze(-1),
            ],
            dim=-1,
        )

        # pl2m: for each polygon, the agents within pl2m_radius of it at step H-1, then only query agents
        pos_pl = node_field(data, "map_polygon", "position", (3,), torch.float)[:, :2]
        orient_pl = node_field(data, "map_polygon", "orientation", (), torch.float)
        batch_a = batch_vector(data, "agent", num_a, device)
        batch_pl = batch_vector(data, "map_polygon", pos_pl.size(0), device)
        pl_idx, a_idx = radius(
            pos_m,
            pos_pl,
            config.pl2m_radius,
            batch_x=batch_a,
            batch_y=batch_pl,
            max_num_neighbors=config.max_num_neighbors,
        )
        keep = mask_dst[a_idx]
        pl_idx, a_idx = pl_idx[keep], a_idx[keep]
        out["pl2m"] = torch.stack([pl_idx, a_idx])
        out["r_pl2m"] = relative_polar(pos_pl[pl_idx], pos_m[a_idx], head_m[a_idx], orient_pl[pl_idx])

        # a2m: agents valid at H-1 -> query agents, within a2m_radius at H-1
        src, dst = radius_graph(
            pos_m, config.a2m_radius, batch=batch_a, loop=False, max_num_neighbors=config.max_num_neighbors
        )
        keep = agent["valid_mask"][src, h - 1] & mask_dst[dst]
        src, dst = src[keep], dst[keep]
        out["a2m"] = torch.stack([src, dst])
        out["r_a2m"] = relative_polar(pos_m[src], pos_m[dst], head_m[dst], head_m[src])

        # m2m: all mode pairs of one query agent (agent-major mode nodes)
        modes = torch.arange(k, device=device)
        base = (mask_dst.nonzero().squeeze(1) * k).unsqueeze(1)
        out["m2m"] = torch.stack(
            [(base + modes.repeat_interleave(k)).reshape(-1), (base + modes.repeat(k)).reshape(-1)]
        )
        return out

    def context(self, data: HeteroData, enc: dict[str, Tensor], query_mask: Tensor | None = None) -> DecoderContext:
        """The :class:`DecoderContext` of ``data`` and its encoding ``enc`` (``x_a [A, H, D]``, ``x_pl [P, D]``)."""
        x_a, x_pl = enc["x_a"], enc["x_pl"]
        num_a, d = x_a.size(0), self.config.hidden_dim
        g = self.build_graphs(data, query_mask)
        agents = g["query_mask"].nonzero().squeeze(1)
        row_of_agent = torch.full((num_a,), agents.numel(), dtype=torch.long, device=x_a.device)
        row_of_agent[agents] = torch.arange(agents.numel(), device=x_a.device)
        active = torch.ones(agents.numel() + 1, dtype=torch.bool, device=x_a.device)
        active[-1] = False
        edges = {
            "t2m": torch.stack([g["t2m_src"], row_of_agent[g["t2m_agent"]]]),
            "pl2m": torch.stack([g["pl2m"][0], row_of_agent[g["pl2m"][1]]]),
            "a2m": torch.stack([g["a2m"][0], row_of_agent[g["a2m"][1]]]),
        }
        return DecoderContext(
            agents=agents,
            row_of_agent=row_of_agent,
            sources={"t2m": x_a.reshape(-1, d), "pl2m": x_pl, "a2m": x_a[:, -1]},
            edges=edges,
            r={
                "t2m": self.r_t2m_emb(continuous_inputs=g["r_t2m"], categorical_embs=None),
                "pl2m": self.r_pl2m_emb(continuous_inputs=g["r_pl2m"], categorical_embs=None),
                "a2m": self.r_a2m_emb(continuous_inputs=g["r_a2m"], categorical_embs=None),
            },
            active=active,
            slots={kind: edge_slots(edge[1], active.numel()) for kind, edge in edges.items()},
        )

    def stage_messages(self, stage: str, ctx: DecoderContext) -> list[dict[str, tuple[Tensor, Tensor]]]:
        """Per decoder layer and kind, the edge keys and values of ``stage``'s attention stack (query-free)."""
        return [
            {
                kind: getattr(self, f"{kind}_{stage}_attn_layers")[i].source_messages(
                    ctx.sources[kind], ctx.r[kind], ctx.edges[kind][0]
                )
                for kind in _KINDS
            }
            for i in range(self.config.num_dec_layers)
        ]

    def _attend(
        self,
        stage: str,
        m: Tensor,
        ctx: DecoderContext,
        messages: list[dict[str, tuple[Tensor, Tensor]]],
    ) -> Tensor:
        """One pass of ``num_dec_layers`` x (t2m, pl2m, a2m) then m2m; ``m`` ``[rows, K, D]``."""
        for i, layer_messages in enumerate(messages):
            for kind in _KINDS:
                k, v = layer_messages[kind]
                layer = getattr(self, f"{kind}_{stage}_attn_layers")[i]
                m = layer.attend(m, k, v, ctx.edges[kind][1], ctx.slots[kind])
        return getattr(self, f"m2m_{stage}_attn_layer").attend_within_groups(m, ctx.active)

    def initial_queries(self, ctx: DecoderContext) -> Tensor:
        """``mode_emb`` for every row, ``[rows, K, D]``."""
        return self.mode_emb.weight.unsqueeze(0).expand(ctx.num_rows, -1, -1)

    def propose_queries(self, data: HeteroData, enc: dict[str, Tensor], agents: Tensor | None = None) -> Tensor:
        """The mode queries after each propose recurrence, ``[A, R, K*D]`` (SmartPretrain's SSL embedding; the
        release runs it with K = 1). Every agent observed at step H-1 is a query (views have no future); with
        ``agents [A] bool``, only those among them: the rows of the others are then the context-free row (not
        their embedding: the caller reads the selected rows only)."""
        num_a = enc["x_a"].size(0)
        query_mask = data["agent"]["valid_mask"][:, self.config.num_historical_steps - 1]
        if agents is not None:
            query_mask = query_mask & agents
        ctx = self.context(data, enc, query_mask)
        messages = self.stage_messages("propose", ctx)
        m = self.initial_queries(ctx)
        out = []
        for _ in range(self.config.num_recurrent_steps):
            m = self._attend("propose", m, ctx, messages)
            out.append(m.reshape(ctx.num_rows, -1))
        return torch.stack(out, dim=1)[ctx.row_of_agent].view(num_a, self.config.num_recurrent_steps, -1)

    def forward(self, data: HeteroData, enc: dict[str, Tensor]) -> dict[str, Tensor]:
        """``enc``: ``x_a [A, H, D]``, ``x_pl [P, D]``. Returns ``loc_{propose,refine}_pos [A, K, F, 2]``,
        ``scale_{propose,refine}_pos`` (Laplace scales), ``pi [A, K]`` (+ ``loc/conc_*_head [A, K, F, 1]``)."""
        config = self.config
        if config.propose_stack_only:
            raise RuntimeError("this QCNetDecoder was built with propose_stack_only=True: it cannot forecast")
        k, d, f = config.num_modes, config.hidden_dim, config.num_future_steps
        ctx = self.context(data, enc)
        rows = ctx.num_rows

        # propose
        messages = self.stage_messages("propose", ctx)
        m = self.initial_queries(ctx)  # [rows, K, D]
        locs, scales, locs_head, concs_head = [], [], [], []
        for _ in range(config.num_recurrent_steps):
            m = self._attend("propose", m, ctx, messages)
            locs.append(self.to_loc_propose_pos(m))
            scales.append(self.to_scale_propose_pos(m))
            if config.output_head:
                locs_head.append(self.to_loc_propose_head(m))
                concs_head.append(self.to_conc_propose_head(m))
        del messages
        shape = (rows, k, f, config.output_dim)
        loc_propose_pos = torch.cumsum(torch.cat(locs, dim=-1).view(shape), dim=-2)
        scale_propose_pos = torch.cumsum(F.elu(torch.cat(scales, dim=-1).view(shape), alpha=1.0) + 1.0, dim=-2) + 0.1
        out = {"loc_propose_pos": loc_propose_pos, "scale_propose_pos": scale_propose_pos}
        traj = loc_propose_pos.detach()
        if config.output_head:
            shape_h = (rows, k, f, 1)
            loc_propose_head = torch.cumsum(torch.tanh(torch.cat(locs_head, dim=-1).view(shape_h)) * math.pi, dim=-2)
            conc_propose_head = 1.0 / (
                torch.cumsum(F.elu(torch.cat(concs_head, dim=-1).view(shape_h), alpha=1.0) + 1.0, dim=-2) + 0.02
            )
            out |= {"loc_propose_head": loc_propose_head, "conc_propose_head": conc_propose_head}
            # the refine stage embeds the proposed heading wrapped to [-pi, pi), as the reference does
            traj = torch.cat([traj, wrap_angle(loc_propose_head.detach())], dim=-1)

        # refine
        y = self.y_emb(continuous_inputs=traj.reshape(-1, traj.size(-1)), categorical_embs=None)
        y = y.view(rows * k, f, d).transpose(0, 1)  # [F, rows*K, D]
        h0 = self.traj_emb_h0.unsqueeze(1).expand(1, rows * k, d).contiguous()
        m = self.traj_emb(y, h0)[1].view(rows, k, d)  # final hidden state
        m = self._attend("refine", m, ctx, self.stage_messages("refine", ctx))
        out["loc_refine_pos"] = self.to_loc_refine_pos(m).view(shape) + loc_propose_pos.detach()
        out["scale_refine_pos"] = F.elu(self.to_scale_refine_pos(m).view(shape), alpha=1.0) + 1.0 + 0.1
        if config.output_head:
            shape_h = (rows, k, f, 1)
            out["loc_refine_head"] = (
                torch.tanh(self.to_loc_refine_head(m).view(shape_h)) * math.pi + out["loc_propose_head"].detach()
            )
            out["conc_refine_head"] = 1.0 / (F.elu(self.to_conc_refine_head(m).view(shape_h), alpha=1.0) + 1.0 + 0.02)
        out["pi"] = self.to_pi(m).view(rows, k)
        # rows -> agents: query agents get their row, all others the context-free row
        return {key: value[ctx.row_of_agent] for key, value in out.items()}
