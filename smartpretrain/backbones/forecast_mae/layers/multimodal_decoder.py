"""Forecast-MAE's multimodal trajectory head."""

from __future__ import annotations

from torch import Tensor, nn


class MultimodalDecoder(nn.Module):
    r"""Decode an agent embedding into ``K`` trajectories and their logits:

    .. math::
        m_k = (W x + b)_{k} \in \mathbb{R}^{D}, \qquad
        \hat{Y}_k = \mathrm{MLP}_{loc}(m_k) \in \mathbb{R}^{F \times 2}, \qquad
        \pi_k = \mathrm{MLP}_{\pi}(m_k) \in \mathbb{R}

    with both MLPs Linear(D, 256), ReLU, Linear(256, D), ReLU, Linear(D, out).

    Modules: ``multimodal_proj``, ``loc.{0,2,4}``, ``pi.{0,2,4}`` (246,521 parameters with the defaults).

    Args:
        embed_dim: embedding width :math:`D`.
        future_steps: predicted steps :math:`F`.
        num_modes: modes :math:`K`.
    """

    def __init__(self, embed_dim: int = 128, future_steps: int = 60, num_modes: int = 6) -> None:
        super().__init__()
        self.embed_dim, self.future_steps, self.num_modes = embed_dim, future_steps, num_modes
        self.multimodal_proj = nn.Linear(embed_dim, num_modes * embed_dim)
        self.loc = nn.Sequential(
            nn.Linear(embed_dim, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, embed_dim),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dim, future_steps * 2),
        )
        self.pi = nn.Sequential(
            nn.Linear(embed_dim, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, embed_dim),
            nn.ReLU(inplace=True),
            nn.Linear(embed_dim, 1),
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x [B, D]`` -> (``loc [B, K, F, 2]``, ``pi [B, K]``)."""
        m = self.multimodal_proj(x).view(-1, self.num_modes, self.embed_dim)
        loc = self.loc(m).view(-1, self.num_modes, self.future_steps, 2)
        pi = self.pi(m).squeeze(-1)
        return loc, pi
