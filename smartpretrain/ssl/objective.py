"""What an SSL objective receives, and the interface a new objective implements.

The pre-training task runs the backbones and heads once and hands every objective the same
:class:`SSLInputs`; an objective returns its (globally normalised, see :mod:`.distributed`) loss. New
objectives subclass :class:`SSLObjective` and are listed under ``objectives`` in the pre-training config.
An objective may also report a per-query value (:meth:`SSLObjective.compute`), which the task averages per
data source (e.g. per dataset of a mixture) for logging.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

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
        window: H, the longest view length (the heads' size).
        target: ``[P, H, 2]`` window-B positions in the query's frame at the last step of window A.
        target_valid: ``[P, H] bool`` (False after a shorter query's own window).
        query_window: ``[P] long`` each query's view length when a batch mixes lengths (None: all ``window``).
        backbone: the online backbone (for objectives that work on its tokens, ``needs_full_scene``).
        full_batch: the whole scenes in the backbone's forecasting format (``needs_full_scene``).
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
    query_window: Tensor | None = None
    backbone: Any = None
    full_batch: Any = None

    def windows(self) -> Tensor:
        """``[P] long`` view length of every query."""
        if self.query_window is not None:
            return self.query_window
        return self.start_a.new_full(self.start_a.shape, self.window)


@dataclass
class ObjectiveOutput:
    """An objective's loss and, for logging, a detached per-query value (NaN where a query does not enter)."""

    loss: Tensor
    per_query: Tensor | None = None


class SSLObjective(nn.Module, abc.ABC):
    """An SSL loss on :class:`SSLInputs`; its own parameters (predictors, heads) live in the module."""

    #: the task must run the momentum branch on both views
    needs_momentum_keys: bool = False
    #: the task must also run the online branch on view B
    needs_online_view_b: bool = False
    #: queries that are not full in window B still enter this objective
    uses_partial_queries: bool = False
    #: the objective works on the whole scene in the backbone's own format (``SSLInputs.full_batch``)
    needs_full_scene: bool = False
    #: the objective uses the temporal views' query embeddings (``z_a``); if none does, views are not encoded
    uses_views: bool = True
    #: the objective is constructed with ``backbone=`` (to size its heads / build backbone-specific tokenizers)
    needs_backbone_at_init: bool = False

    @abc.abstractmethod
    def compute(self, inputs: SSLInputs) -> ObjectiveOutput:
        """The loss (scalar, normalised by global counts) and optionally per-query values for logging."""

    def forward(self, inputs: SSLInputs) -> Tensor:
        """The loss only."""
        return self.compute(inputs).loss


__all__ = ["ObjectiveOutput", "SSLInputs", "SSLObjective"]
