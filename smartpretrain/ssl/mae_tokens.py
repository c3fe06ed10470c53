"""What a backbone implements to be pre-trained by masked auto-encoding (:mod:`smartpretrain.ssl.mae`).

The contract between the MAE objective and a backbone, kept beside the objective that needs it rather than in
the generic backbone interface: a backbone opts in by implementing :class:`MaskedAutoencoding` (Forecast-MAE
does; QCNet's scene graph has no token sequence and does not). This module depends on torch only, so a backbone
can import it without importing the objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ["MAETokens", "MaskedAutoencoding"]


@dataclass
class MAETokens:
    """What a :class:`MaskedAutoencoding` backbone gives the objective for a batch in its forecasting format.
    B scenes, N actors, M lanes, D dims.

    Attributes:
        history: ``[B, N, D]`` actor-history tokens (type and position embeddings added).
        lanes: ``[B, M, D]`` lane tokens (type and position embeddings added).
        future_input: ``[B, N, F, C]`` per-step future features for a future tokenizer (MAE's masked targets
            must not leak: they are only embedded for the actors whose future stays visible).
        actor_pos, lane_pos: ``[B, N, 4]`` / ``[B, M, 4]`` positional features (decoder position embedding).
        actor_type: ``[B, N] long`` the backbone's actor-type index (embedding of future tokens).
        actor_padding, lane_padding: ``[B, N]`` / ``[B, M]`` True = no such token.
        history_target, history_valid: ``[B, N, H, 2]`` / ``[B, N, H]`` history to reconstruct.
        future_target, future_valid: ``[B, N, F, 2]`` / ``[B, N, F]`` future to reconstruct.
        lane_target, lane_valid: ``[B, M, P, 2]`` / ``[B, M, P]`` lane points to reconstruct.
    """

    history: Tensor
    lanes: Tensor
    future_input: Tensor
    actor_pos: Tensor
    lane_pos: Tensor
    actor_type: Tensor
    actor_padding: Tensor
    lane_padding: Tensor
    history_target: Tensor
    history_valid: Tensor
    future_target: Tensor
    future_valid: Tensor
    lane_target: Tensor
    lane_valid: Tensor


@runtime_checkable
class MaskedAutoencoding(Protocol):
    """The backbone capability masked auto-encoding needs (checked when the objective is built)."""

    embedding_dim: int
    num_historical_steps: int
    num_future_steps: int

    def mae_tokens(self, batch: Any) -> MAETokens:
        """Tokens, future features and reconstruction targets of a batch in the backbone's forecasting format."""
        ...

    def encode_tokens(self, tokens: Tensor, key_padding_mask: Tensor) -> Tensor:
        """The backbone's transformer encoder on any token sequence ``[B, S, D]`` (True in the mask = padding)."""
        ...

    def make_future_tokenizer(self) -> nn.Module:
        """A fresh module embedding :attr:`MAETokens.future_input` of one actor into a ``[D]`` token."""
        ...

    def embed_actor_type(self, actor_type: Tensor) -> Tensor:
        """The backbone's actor-type embedding of :attr:`MAETokens.actor_type`."""
        ...

    def embed_position(self, features: Tensor) -> Tensor:
        """The backbone's position embedding of ``[..., 4]`` positional features."""
        ...
