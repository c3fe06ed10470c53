"""QCNet encoder = map encoder + agent encoder."""

from __future__ import annotations

from torch import Tensor, nn
from torch_geometric.data import HeteroData

from smartpretrain.backbones.qcnet.agent_encoder import QCNetAgentEncoder
from smartpretrain.backbones.qcnet.config import QCNetConfig
from smartpretrain.backbones.qcnet.map_encoder import QCNetMapEncoder


class QCNetEncoder(nn.Module):
    """Encode the map (``x_pl [P, D]``), then the agents' histories in its context (``x_a [A, H, D]``)."""

    def __init__(self, config: QCNetConfig) -> None:
        super().__init__()
        self.map_encoder = QCNetMapEncoder(config)
        self.agent_encoder = QCNetAgentEncoder(config)

    def forward(self, data: HeteroData, agents: Tensor | None = None) -> dict[str, Tensor]:
        """``{"x_pl": [P, D], "x_a": [A, H, D]}``; ``agents [A] bool``: those whose decoder queries are read
        (default all; see :meth:`QCNetAgentEncoder.forward`)."""
        map_enc = self.map_encoder(data)
        return {**map_enc, **self.agent_encoder(data, map_enc, agents)}
