"""QCNet agent encoder: per (agent, history step) embeddings refined by temporal, map->agent and agent<->agent
attention, factorised over time and space."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from smartpretrain.backbones.graph import angle_between, radius, radius_graph, relative_polar
from smartpretrain.backbones.qcnet.config import QCNetConfig
from smartpretrain.backbones.qcnet.layers import AttentionLayer, FourierEmbedding, init_weights
from smartpretrain.backbones.qcnet.map_encoder import batch_vector, node_field


def num_scenes(data: HeteroData) -> int:
    """Number of scenes of a Batch (1 for a single HeteroData)."""
    return int(getattr(data, "num_graphs", 1) or 1)


def temporal_pairs(num_steps: int, time_span: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """All step pairs ``(s, t)`` with ``1 <= t - s <= time_span`` (source s, target t)."""
    steps = torch.arange(num_steps, device=device)
    gap = steps.unsqueeze(0) - steps.unsqueeze(1)  # [s, t] -> t - s
    s, t = ((gap >= 1) & (gap <= time_span)).nonzero(as_tuple=True)
    return s, t


class QCNetAgentEncoder(nn.Module):
    r"""Embed each agent at each history step, then ``num_agent_layers`` x (t2t, pl2a, a2a) attention.

    Node features per (agent a, step t), with :math:`\Delta p_t = p_t - p_{t-1}` (0 at t = 0) and :math:`e_t`
    the heading vector: :math:`[\lVert\Delta p_t\rVert, \angle(e_t, \Delta p_t), \lVert v_t\rVert,
    \angle(e_t, v_t)]` plus the agent-type embedding.

    Graphs (built on the fly, vectorised; only valid agent-steps take part, and for pl2a / a2a they are selected
    *before* the radius search, so invalid steps never take one of the ``max_num_neighbors`` slots):

    - t2t, agent-major nodes ``a*H + t``: ``s -> t`` of one agent with ``1 <= t - s <= time_span``;
      features :func:`relative_polar` in the frame at t, plus ``s - t``.
    - pl2a, time-major nodes ``t*A + a`` with the map tiled as ``t*P + p``: polygons within ``pl2a_radius`` of the
      agent at step t (same scene), at most ``max_num_neighbors`` agent-steps per polygon.
    - a2a, time-major: agent-steps of the same scene and step within ``a2a_radius`` (no self loops).

    Only xy enters (``input_dim = 3`` changes the map encoder only). Returns ``x_a [A, H, D]``.
    """

    def __init__(self, config: QCNetConfig) -> None:
        super().__init__()
        self.config = config
        d, bands = config.hidden_dim, config.num_freq_bands
        self.type_a_emb = nn.Embedding(config.num_agent_types, d)
        self.x_a_emb = FourierEmbedding(4, d, bands)
        self.r_t_emb = FourierEmbedding(4, d, bands)
        self.r_pl2a_emb = FourierEmbedding(3, d, bands)
        self.r_a2a_emb = FourierEmbedding(3, d, bands)
        layers = range(config.num_agent_layers)
        self.t_attn_layers = nn.ModuleList(
            AttentionLayer.from_config(config, bipartite=False, has_pos_emb=True) for _ in layers
        )
        self.pl2a_attn_layers = nn.ModuleList(
            AttentionLayer.from_config(config, bipartite=True, has_pos_emb=True) for _ in layers
        )
        self.a2a_attn_layers = nn.ModuleList(
            AttentionLayer.from_config(config, bipartite=False, has_pos_emb=True) for _ in layers
        )
        self.apply(init_weights)

    def build_graphs(self, data: HeteroData) -> dict[str, Tensor]:
        """The t2t, pl2a and a2a edges (``[2, E]``, row 0 source) and their raw features; weight-independent.

        t2t nodes are agent-major (``a*H + t``); pl2a / a2a nodes time-major (agent-step ``t*A + a``, polygon
        ``t*P + p``).
        """
        config = self.config
        h = config.num_historical_steps
        agent = data["agent"]
        pos_a = agent["position"][:, :h, :2]
        head_a = agent["heading"][:, :h]
        mask_a = agent["valid_mask"][:, :h]
        num_a, device = pos_a.size(0), pos_a.device
        out: dict[str, Tensor] = {}

        # t2t (agent-major nodes a*H + t)
        s, t = temporal_pairs(h, config.effective_time_span, device)
        base = (torch.arange(num_a, device=device) * h).unsqueeze(1)
        keep = mask_a[:, s] & mask_a[:, t]  # [A, pairs]
        src, dst = (base + s)[keep], (base + t)[keep]
        pos_t, head_t = pos_a.reshape(-1, 2), head_a.reshape(-1)
        out["edge_index_t"] = torch.stack([src, dst])
        out["r_t"] = torch.cat(
            [
                relative_polar(pos_t[src], pos_t[dst], head_t[dst], head_t[src]),
                (src - dst).to(pos_t.dtype).unsqueeze(-1),  # s - t (same agent)
            ],
            dim=-1,
        )

        # time-major agent-steps (t*A + a) and tiled polygons (t*P + p), batched per (scene, step)
        n_scenes = num_scenes(data)
        steps = torch.arange(h, device=device).unsqueeze(1) * n_scenes
        batch_a = batch_vector(data, "agent", num_a, device)
        pos_s = pos_a.transpose(0, 1).reshape(-1, 2)
        head_s = head_a.transpose(0, 1).reshape(-1)
        batch_s = (steps + batch_a).reshape(-1)
        valid_s = mask_a.transpose(0, 1).reshape(-1).nonzero().squeeze(1)
        pos_pl = node_field(data, "map_polygon", "position", (3,), torch.float)[:, :2]
        orient_pl = node_field(data, "map_polygon", "orientation", (), torch.float)
        batch_pl = batch_vector(data, "map_polygon", pos_pl.size(0), device)
        pos_pl_s = pos_pl.repeat(h, 1)
        orient_pl_s = orient_pl.repeat(h)
        batch_pl_s = (steps + batch_pl).reshape(-1)

        # pl2a: for each polygon at each step, the valid agent-steps within pl2a_radius
        pl_idx, a_idx = radius(
            pos_s[valid_s],
            pos_pl_s,
            config.pl2a_radius,
            batch_x=batch_s[valid_s],
            batch_y=batch_pl_s,
            max_num_neighbors=config.max_num_neighbors,
        )
        src, dst = pl_idx, valid_s[a_idx]
        out["edge_index_pl2a"] = torch.stack([src, dst])
        out["r_pl2a"] = relative_polar(pos_pl_s[src], pos_s[dst], head_s[dst], orient_pl_s[src])

        # a2a: valid agent-steps of the same scene and step within a2a_radius
        edge_index = radius_graph(
            pos_s[valid_s],
            config.a2a_radius,
            batch=batch_s[valid_s],
            loop=False,
            max_num_neighbors=config.max_num_neighbors,
        )
        src, dst = valid_s[edge_index]
        out["edge_index_a2a"] = torch.stack([src, dst])
        out["r_a2a"] = relative_polar(pos_s[src], pos_s[dst], head_s[dst], head_s[src])
        return out

    def first_steps(self) -> list[int]:
        """Per layer, the first history step whose output anything downstream may read.

        The decoder reads ``x_a`` at steps ``>= H - num_t2m_steps`` only (t2m; a2m reads step H-1), and a step's
        output in layer ``i`` reads layer ``i - 1`` at the same step (pl2a, a2a: same step) and at most
        ``time_span`` steps before it (t2t). So layer ``i`` need only update steps ``>= H - num_t2m_steps -
        (L - 1 - i) * time_span``: a bound on the rows of :meth:`updated_rows`, which prunes the edges first.
        """
        config = self.config
        h, layers = config.num_historical_steps, config.num_agent_layers
        last = h - config.effective_num_t2m_steps
        return [max(last - (layers - 1 - i) * config.effective_time_span, 0) for i in range(layers)]

    def read_rows(self, num_agents: int, agents: Tensor | None, device: torch.device) -> Tensor:
        """``[H*A] bool`` (time-major) the outputs the decoder reads: the selected ``agents`` (all when None) at
        steps ``>= H - num_t2m_steps`` (t2m), and every agent at step H-1 (a2m's sources)."""
        h = self.config.num_historical_steps
        read = torch.zeros(h, num_agents, dtype=torch.bool, device=device)
        read[h - self.config.effective_num_t2m_steps :] = True if agents is None else agents
        read[h - 1] = True
        return read.reshape(-1)

    def updated_rows(self, read: Tensor, edges: dict[str, tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        """Per layer, the rows whose update something reads: ``(t2t / pl2a targets, a2a targets)``, ``[H*A] bool``.

        Walked back from ``read`` (the last layer's a2a outputs): an a2a target reads its own row and its
        neighbours' rows after pl2a at the same step; pl2a reads the target's row after t2t (the polygons are
        the map encoder's); t2t reads the target's own row and its earlier steps from the layer before. Every
        other row keeps a stale value that no row read downstream depends on.
        """
        rows: list[tuple[Tensor, Tensor]] = []
        need = read
        for _ in range(self.config.num_agent_layers):
            src, dst = edges["a2a"]
            before_a2a = need.clone()
            before_a2a[src[need[dst]]] = True
            src, dst = edges["t"]
            before_t = before_a2a.clone()
            before_t[src[before_a2a[dst]]] = True
            rows.append((before_a2a, need))
            need = before_t
        return rows[::-1]

    def forward(self, data: HeteroData, map_enc: dict[str, Tensor], agents: Tensor | None = None) -> dict[str, Tensor]:
        """``map_enc["x_pl"] [P, D]`` -> ``{"x_a": [A, H, D]}``.

        Only the outputs the decoder reads are computed (:meth:`read_rows`; ``agents [A] bool``: the agents whose
        decoder queries are read, default all), and in each layer only the rows they depend on
        (:meth:`updated_rows`); ``x_a`` is zero everywhere else. The outputs read, and their gradients, are those
        of updating every step of every agent in every layer.
        """
        h, d = self.config.num_historical_steps, self.config.hidden_dim
        agent = data["agent"]
        pos_a = agent["position"][:, :h, :2]
        head_a = agent["heading"][:, :h]
        vel_a = agent["velocity"][:, :h, :2]
        num_a = pos_a.size(0)
        head_vec = torch.stack([head_a.cos(), head_a.sin()], dim=-1)  # [A, H, 2]
        motion = torch.cat([pos_a.new_zeros(num_a, 1, 2), pos_a[:, 1:] - pos_a[:, :-1]], dim=1)
        x_a = torch.stack(
            [
                torch.linalg.vector_norm(motion, dim=-1),
                angle_between(head_vec, motion),
                torch.linalg.vector_norm(vel_a, dim=-1),
                angle_between(head_vec, vel_a),
            ],
            dim=-1,
        )  # [A, H, 4]
        type_emb = self.type_a_emb(agent["type"].long()).repeat_interleave(h, dim=0)  # agent-major [A*H, D]
        x_a = self.x_a_emb(continuous_inputs=x_a.reshape(-1, 4), categorical_embs=[type_emb])
        # time-major nodes t*A + a from here on (pl2a and a2a connect rows of one step)
        x_a = x_a.view(num_a, h, d).transpose(0, 1).reshape(-1, d)

        g = self.build_graphs(data)
        # the edges into the steps of the first layer (a superset of every later layer's), t2t renumbered time-major
        start = self.first_steps()[0] * num_a
        src_t, dst_t = g["edge_index_t"]
        src_t, dst_t = (src_t % h) * num_a + src_t // h, (dst_t % h) * num_a + dst_t // h
        edges = {
            "t": (src_t, dst_t, g["r_t"]),
            "pl2a": (g["edge_index_pl2a"][0], g["edge_index_pl2a"][1], g["r_pl2a"]),
            "a2a": (g["edge_index_a2a"][0], g["edge_index_a2a"][1], g["r_a2a"]),
        }
        for kind, (src, dst, r) in edges.items():
            keep = dst >= start
            edges[kind] = (src[keep], dst[keep], r[keep])
        read = self.read_rows(num_a, agents, x_a.device)
        layer_rows = self.updated_rows(read, {kind: (src, dst) for kind, (src, dst, _) in edges.items()})
        # each edge's features embedded once, for the edges into some layer's updated rows
        embed = {"t": self.r_t_emb, "pl2a": self.r_pl2a_emb, "a2a": self.r_a2a_emb}
        targets = {"t": 0, "pl2a": 0, "a2a": 1}  # which of a layer's two row sets each kind updates
        for kind, (src, dst, r) in edges.items():
            used = torch.stack([rows[targets[kind]][dst] for rows in layer_rows]).any(dim=0)
            edges[kind] = (src[used], dst[used], embed[kind](continuous_inputs=r[used], categorical_embs=None))
        # the map is the same at every step: polygon t*P + p is polygon p, projected once (not once per step)
        x_pl = map_enc["x_pl"]
        num_pl = max(x_pl.size(0), 1)
        position = torch.empty(h * num_a, dtype=torch.long, device=x_a.device)
        for i, rows in enumerate(layer_rows):
            for kind in ("t", "pl2a", "a2a"):
                updated = rows[targets[kind]]
                index = updated.nonzero().squeeze(1)
                position[index] = torch.arange(index.numel(), device=x_a.device)
                src, dst, r = edges[kind]
                keep = updated[dst]
                src, dst, r = src[keep], position[dst[keep]], r[keep]
                if kind == "pl2a":
                    layer = self.pl2a_attn_layers[i]
                    out = layer.attend(x_a[index], *layer.source_messages(x_pl, r, src % num_pl), dst)
                else:
                    layer = (self.t_attn_layers if kind == "t" else self.a2a_attn_layers)[i]
                    out = layer((x_a, x_a[index]), r, torch.stack([src, dst]))
                x_a = x_a.index_copy(0, index, out)
        x_a = torch.where(read.unsqueeze(1), x_a, 0.0)  # rows nothing reads: zero (they hold stale values)
        return {"x_a": x_a.view(h, num_a, d).transpose(0, 1).contiguous()}
