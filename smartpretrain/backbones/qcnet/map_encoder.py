"""QCNet map encoder: map points -> polygons (pt2pl), then polygon <-> polygon (pl2pl)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.utils import coalesce

from smartpretrain.backbones.graph import radius_graph, relative_polar, wrap_angle
from smartpretrain.backbones.qcnet.config import QCNetConfig
from smartpretrain.backbones.qcnet.layers import AttentionLayer, FourierEmbedding, init_weights


def node_field(data: HeteroData, node_type: str, key: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """``data[node_type][key]``, or an empty ``[0, *shape]`` tensor when the store or field is absent."""
    if node_type in data.node_types and key in data[node_type]:
        return data[node_type][key]
    device = data["agent"]["position"].device if "agent" in data.node_types else None
    return torch.zeros((0, *shape), dtype=dtype, device=device)


def batch_vector(data: HeteroData, node_type: str, num_nodes: int, device: torch.device) -> Tensor:
    """``data[node_type].batch`` of a Batch; zeros for a single HeteroData."""
    if node_type in data.node_types and "batch" in data[node_type]:
        return data[node_type]["batch"]
    return torch.zeros(num_nodes, dtype=torch.long, device=device)


class QCNetMapEncoder(nn.Module):
    """Embed map points and polygons, then ``num_map_layers`` x (pt2pl attention, pl2pl attention).

    Polygons get categorical features only (type, intersection); points their vector length (and height with
    ``input_dim = 3``) plus type and side. Edge features (:func:`relative_polar` in the target polygon's frame):
    pt2pl ``[d, angle, wrap(theta_pt - theta_pl)]``; pl2pl the same plus the topology type (NONE for pairs that
    are only within ``pl2pl_radius``). Map-less scenes (no polygons / points) give ``x_pl`` of shape ``[0, D]``.

    Returns ``x_pl [P, D]`` (the reference tiles it over the history steps; consumers do that themselves).
    """

    def __init__(self, config: QCNetConfig) -> None:
        super().__init__()
        self.config = config
        d, bands = config.hidden_dim, config.num_freq_bands
        self.type_pt_emb = nn.Embedding(config.num_point_types, d)
        self.side_pt_emb = nn.Embedding(config.num_point_sides, d)
        self.type_pl_emb = nn.Embedding(config.num_polygon_types, d)
        self.int_pl_emb = nn.Embedding(config.num_intersection_types, d)
        self.type_pl2pl_emb = nn.Embedding(config.num_pl2pl_types, d)
        extra = config.input_dim - 2  # height / relative z with input_dim 3
        self.x_pt_emb = FourierEmbedding(1 + extra, d, bands)
        self.x_pl_emb = FourierEmbedding(extra, d, bands)
        self.r_pt2pl_emb = FourierEmbedding(3 + extra, d, bands)
        self.r_pl2pl_emb = FourierEmbedding(3 + extra, d, bands)
        layers = range(config.num_map_layers)
        self.pt2pl_layers = nn.ModuleList(
            AttentionLayer.from_config(config, bipartite=True, has_pos_emb=True) for _ in layers
        )
        self.pl2pl_layers = nn.ModuleList(
            AttentionLayer.from_config(config, bipartite=False, has_pos_emb=True) for _ in layers
        )
        self.apply(init_weights)

    def _edge_attr(self, pos_src: Tensor, pos_dst: Tensor, theta_src: Tensor, theta_dst: Tensor) -> Tensor:
        polar = relative_polar(pos_src, pos_dst, theta_dst)  # [E, 2]: d, angle
        feats = [polar[:, 0], polar[:, 1]]
        if self.config.input_dim == 3:
            feats.append(pos_src[:, 2] - pos_dst[:, 2])
        feats.append(wrap_angle(theta_src - theta_dst))
        return torch.stack(feats, dim=-1)

    def build_graphs(self, data: HeteroData) -> dict[str, Tensor]:
        """pt2pl and pl2pl edges (``[2, E]``, row 0 source), pl2pl types and raw edge features."""
        device = data["agent"]["position"].device
        pos_pt = node_field(data, "map_point", "position", (3,), torch.float)[:, : self.config.input_dim]
        orient_pt = node_field(data, "map_point", "orientation", (), torch.float)
        pos_pl = node_field(data, "map_polygon", "position", (3,), torch.float)[:, : self.config.input_dim]
        orient_pl = node_field(data, "map_polygon", "orientation", (), torch.float)
        num_pl = pos_pl.size(0)
        out: dict[str, Tensor] = {}

        # pt2pl: each point to its own polygon
        pt2pl = ("map_point", "to", "map_polygon")
        if pt2pl in data.edge_types and "edge_index" in data[pt2pl]:
            out["edge_index_pt2pl"] = data[pt2pl]["edge_index"]
        else:
            out["edge_index_pt2pl"] = torch.empty(2, 0, dtype=torch.long, device=device)
        src, dst = out["edge_index_pt2pl"]
        out["r_pt2pl"] = self._edge_attr(pos_pt[src], pos_pl[dst], orient_pt[src], orient_pl[dst])

        # pl2pl: radius graph U topology (topology types win over the radius-only type 0)
        batch_pl = batch_vector(data, "map_polygon", num_pl, device)
        edge_index_radius = radius_graph(
            pos_pl[:, :2],
            self.config.pl2pl_radius,
            batch=batch_pl,
            loop=False,
            max_num_neighbors=self.config.max_num_neighbors,
        )
        pl2pl = ("map_polygon", "to", "map_polygon")
        if pl2pl in data.edge_types and "edge_index" in data[pl2pl]:
            edge_index_topo = data[pl2pl]["edge_index"]
            type_topo = data[pl2pl]["type"].long()
        else:
            edge_index_topo = torch.empty(2, 0, dtype=torch.long, device=device)
            type_topo = torch.empty(0, dtype=torch.long, device=device)
        out["edge_index_pl2pl"], out["type_pl2pl"] = coalesce(
            torch.cat([edge_index_radius, edge_index_topo], dim=1),
            torch.cat([type_topo.new_zeros(edge_index_radius.size(1)), type_topo]),
            num_nodes=num_pl,
            reduce="max",
        )
        src, dst = out["edge_index_pl2pl"]
        out["r_pl2pl"] = self._edge_attr(pos_pl[src], pos_pl[dst], orient_pl[src], orient_pl[dst])
        return out

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        """Returns ``{"x_pl": [P, D]}``."""
        num_pl = node_field(data, "map_polygon", "orientation", (), torch.float).size(0)
        magnitude = node_field(data, "map_point", "magnitude", (), torch.float)
        if self.config.input_dim == 2:
            x_pt = magnitude.unsqueeze(-1)
            x_pl = None
        else:
            height_pt = node_field(data, "map_point", "height", (), torch.float)
            x_pt = torch.stack([magnitude, height_pt], dim=-1)
            # polygons carry no height field in the adapter's format: fall back to the z of their position
            height_pl = node_field(data, "map_polygon", "height", (), torch.float)
            pos_pl = node_field(data, "map_polygon", "position", (3,), torch.float)
            x_pl = (height_pl if height_pl.numel() == num_pl else pos_pl[:, 2]).unsqueeze(-1)
        pt_emb = [
            self.type_pt_emb(node_field(data, "map_point", "type", (), torch.long).long()),
            self.side_pt_emb(node_field(data, "map_point", "side", (), torch.long).long()),
        ]
        pl_emb = [
            self.type_pl_emb(node_field(data, "map_polygon", "type", (), torch.long).long()),
            self.int_pl_emb(node_field(data, "map_polygon", "is_intersection", (), torch.long).long()),
        ]
        x_pt = self.x_pt_emb(continuous_inputs=x_pt, categorical_embs=pt_emb)
        x_pl = self.x_pl_emb(continuous_inputs=x_pl, categorical_embs=pl_emb)

        g = self.build_graphs(data)
        r_pt2pl = self.r_pt2pl_emb(continuous_inputs=g["r_pt2pl"], categorical_embs=None)
        r_pl2pl = self.r_pl2pl_emb(
            continuous_inputs=g["r_pl2pl"], categorical_embs=[self.type_pl2pl_emb(g["type_pl2pl"])]
        )
        for i in range(self.config.num_map_layers):
            x_pl = self.pt2pl_layers[i]((x_pt, x_pl), r_pt2pl, g["edge_index_pt2pl"])
            x_pl = self.pl2pl_layers[i](x_pl, r_pl2pl, g["edge_index_pl2pl"])
        return {"x_pl": x_pl}
