"""What an SSL objective receives, and the interface a new objective implements.

The pre-training task runs the backbones and heads once and hands every objective the same
:class:`SSLInputs`; an objective returns its (globally normalised, see :mod:`.distributed`) loss. New
objectives subclass :class:`SSLObjective` and are listed under ``objectives`` in the pre-training config.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class SSLInputs:
    """Per-query tensors of one (local) batch; P queries, Q query steps, C projection dims, H window steps.

    Attributes:
        z_a: ``[P, Q, C]`` online projection of each query's view-A embedding.
        key_a, key_b: ``[P, Q, C]`` momentum projections of views A and B (None when no objective needs them).
        z_b: ``[P, Q, C]`` online projection of view B (only when an objective sets ``needs_online_view_b``).
        full_b: ``[P] bool`` the query is observed at every step of window B (a contrastive positive).
        start_a, start_b: ``[P] long`` window starts of each query's scene.
        window: H.
        target: ``[P, H, 2]`` window-B positions in the query's frame at the last step of window A.
        target_valid: ``[P, H] bool``.
    """

    z_a: Tensor
    full_b: Tensor
    start_a: Tensor
    start_b: Tensor
    window: int
    target: Tensor
    target_valid: Tensor
    key_a: Tensor | None = None
    key_b: Tensor | None = None
    z_b: Tensor | None = None


class SSLObjective(nn.Module, abc.ABC):
    """An SSL loss on :class:`SSLInputs`; its own parameters (predictors, heads) live in the module."""

    #: the task must run the momentum branch on both views
    needs_momentum_keys: bool = False
    #: the task must also run the online branch on view B
    needs_online_view_b: bool = False
    #: queries that are not full in window B still enter this objective
    uses_partial_queries: bool = False

    @abc.abstractmethod
    def forward(self, inputs: SSLInputs) -> Tensor:
        """The loss (scalar), normalised by global counts."""


__all__ = ["SSLInputs", "SSLObjective"]
