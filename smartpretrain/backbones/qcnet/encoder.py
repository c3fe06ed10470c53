"""QCNet encoder = map encoder + agent encoder."""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.data import HeteroData

from smartpretrain.backbones.qcnet.agent_encoder import QCNetAgentEncoder
from smartpretrain.backbones.qcnet.map_encoder import QCNetMapEncoder


class QCNetEncoder(nn.Module):
    """Encode the map (``x_pl [P, D]``), then the agents' histories in its context (``x_a [A, H, D]``)."""

    def __init__(
        self,
        input_dim: int = 2,
        hidden_dim: int = 128,
        num_historical_steps: int = 50,
        pl2pl_radius: float = 150.0,
        time_span: int | None = 10,
        pl2a_radius: float = 50.0,
        a2a_radius: float = 50.0,
        num_freq_bands: int = 64,
        num_map_layers: int = 1,
        num_agent_layers: int = 2,
        num_heads: int = 8,
        head_dim: int = 16,
        dropout: float = 0.1,
        num_agent_types: int = 10,
        num_point_types: int = 17,
        num_polygon_types: int = 4,
        max_num_neighbors: int = 300,
    ) -> None:
        super().__init__()
        self.map_encoder = QCNetMapEncoder(
            input_dim=input_dim,
            hidden_dim=hidden_dim,
            num_historical_steps=num_historical_steps,
            pl2pl_radius=pl2pl_radius,
            num_freq_bands=num_freq_bands,
            num_layers=num_map_layers,
            num_heads=num_heads,
            head_dim=head_dim,
            dropout=dropout,
            num_point_types=num_point_types,
            num_polygon_types=num_polygon_types,
            max_num_neighbors=max_num_neighbors,
        )
        self.agent_encoder = QCNetAgentEncoder(
            input_dim=input_dim,
            hidden_dim=hidden_dim,
            num_historical_steps=num_historical_steps,
            time_span=time_span,
            pl2a_radius=pl2a_radius,
            a2a_radius=a2a_radius,
            num_freq_bands=num_freq_bands,
            num_layers=num_agent_layers,
            num_heads=num_heads,
            head_dim=head_dim,
            dropout=dropout,
            num_agent_types=num_agent_types,
            max_num_neighbors=max_num_neighbors,
        )

    def forward(self, data: HeteroData) -> dict[str, Tensor]:
        """``{"x_pl": [P, D], "x_a": [A, H, D]}``."""
        map_enc = self.map_encoder(data)
        return {**map_enc, **self.agent_encoder(data, map_enc)}
