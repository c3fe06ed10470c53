"""Trajectory Contrastive Learning (SmartPretrain, ICLR 2025): the same agent in another time window is the
positive; every other agent of the global batch, in either window, is a negative."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from smartpretrain.ssl.distributed import gather_rows, global_sum, world_size
from smartpretrain.ssl.heads import ProjectionMLP
from smartpretrain.ssl.objective import (
    MOMENTUM_A,
    MOMENTUM_B,
    ONLINE_A,
    ONLINE_B,
    ObjectiveNeeds,
    ObjectiveOutput,
    SSLInputs,
    SSLObjective,
)


def info_nce(query: Tensor, own_keys: Tensor, positive_keys: Tensor, offset: int, temperature: float) -> Tensor:
    r"""Per-query InfoNCE over a key bank made of two blocks, ``own_keys`` then ``positive_keys`` (N rows each).

    Query ``i`` (global row ``offset + i``) has its positive at ``positive_keys[offset + i]``; its own
    ``own_keys[offset + i]`` is excluded; every other key of both blocks is a negative:

    .. math::
        \ell_i = -\log \frac{\exp(q_i \cdot k^{+}_{o+i} / \tau)}
                           {\sum_{j \ne o+i} \exp(q_i \cdot k^{own}_j / \tau) + \sum_j \exp(q_i \cdot k^{+}_j / \tau)}

    All inputs are expected L2-normalised. Returns ``[P]``.
    """
    n, p = own_keys.size(0), query.size(0)
    logits = query @ torch.cat([own_keys, positive_keys]).T / temperature  # [P, 2N]
    rows = torch.arange(p, device=query.device)
    own = offset + rows
    logits = logits.index_put((rows, own), torch.tensor(float("-inf"), device=logits.device, dtype=logits.dtype))
    return F.cross_entropy(logits, n + own, reduction="none")


class TrajectoryContrastiveLoss(SSLObjective):
    r"""TCL: ``predictor(z_a)`` against momentum keys of both views of all queries of the global batch.

    Only queries observed at every step of both windows enter (as queries and as keys). Keys are gathered from
    every rank (negatives from the whole global batch). With Q query steps the loss is computed per step and
    averaged. The loss is scaled by ``2 τ`` (release); ``symmetric=True`` adds the direction view B -> view A
    (needs the online branch on view B) and averages both.

    .. math:: \mathcal{L}_{TCL} = 2\tau \cdot \frac{1}{Q} \sum_{q} \frac{1}{N} \sum_{i} \ell_{i,q}

    Args:
        dim: projection size C; ``predictor`` is ``Linear(C, hidden) -> BN -> ReLU -> Linear(hidden, C)``.
        temperature: τ.
        symmetric: also contrast online(view B) queries against keys with positives in view A.
        scale_by_2tau: multiply by ``2 τ`` (release); off gives the plain InfoNCE value.
    """

    #: online view A (queries) against momentum keys of both views; ``symmetric`` adds online view B
    needs: ClassVar[ObjectiveNeeds] = ObjectiveNeeds(encodes={ONLINE_A, MOMENTUM_A, MOMENTUM_B})

    def __init__(
        self,
        dim: int = 256,
        hidden_dim: int = 1024,
        temperature: float = 0.07,
        symmetric: bool = False,
        scale_by_2tau: bool = True,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.predictor = ProjectionMLP(dim, hidden_dim, dim)
        self.temperature, self.symmetric, self.scale_by_2tau = float(temperature), bool(symmetric), scale_by_2tau

    def declared_needs(self) -> ObjectiveNeeds:
        if self.symmetric:
            return replace(self.needs, encodes=self.needs.encodes | {ONLINE_B})
        return self.needs

    def _direction(self, z: Tensor, own: Tensor, positive: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Summed loss over local queries and steps, the per-query sum over steps, and the global query count."""
        q = F.normalize(self.predictor(z), dim=-1)  # every rank runs the predictor (global BatchNorm)
        own_all, offset = gather_rows(F.normalize(own, dim=-1).detach())
        pos_all, _ = gather_rows(F.normalize(positive, dim=-1).detach())
        count = global_sum(torch.tensor(float(z.size(0)), device=z.device))
        per_query = z.new_zeros(z.size(0))
        for step in range(z.size(1)):
            per_query = per_query + info_nce(q[:, step], own_all[:, step], pos_all[:, step], offset, self.temperature)
        total = per_query.sum() + 0.0 * q.sum()  # keeps the predictor in the graph when this rank has no query
        return total, per_query.detach(), count

    def compute(self, inputs: SSLInputs) -> ObjectiveOutput:
        queries = inputs.queries
        if queries is None or not {MOMENTUM_A, MOMENTUM_B} <= set(inputs.encodings):
            raise ValueError("TrajectoryContrastiveLoss needs the momentum keys of both views")
        # rows not full in window B never enter (the task passes none; inputs built by hand may hold some)
        sel = queries.full_b
        z_a_all = inputs.encoding(ONLINE_A)
        z_a, key_a, key_b = z_a_all[sel], inputs.encoding(MOMENTUM_A)[sel], inputs.encoding(MOMENTUM_B)[sel]
        q_steps = z_a.size(1)
        total, per_query, count = self._direction(z_a, key_a, key_b)
        directions = 1
        if self.symmetric:
            if ONLINE_B not in inputs.encodings:
                raise ValueError("symmetric TCL needs the online projection of view B")
            total_b, per_query_b, _ = self._direction(inputs.encoding(ONLINE_B)[sel], key_b, key_a)
            total, per_query, directions = total + total_b, per_query + per_query_b, 2
        scale = 2.0 * self.temperature if self.scale_by_2tau else 1.0
        values = z_a_all.new_full((z_a_all.size(0),), float("nan"))
        values[sel] = per_query * (scale / (q_steps * directions))
        if float(count) == 0:
            return ObjectiveOutput(total * 0.0, values)
        return ObjectiveOutput(total * world_size() / (count * q_steps * directions) * scale, values)


__all__ = ["TrajectoryContrastiveLoss", "info_nce"]
