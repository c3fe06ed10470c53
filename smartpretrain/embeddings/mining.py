"""Triplet mining and the triplet loss of the trajectory encoder (:mod:`~smartpretrain.embeddings.
trajectory_encoder`), after "Contrast & Compress" (arXiv 2506.02571).

Within a batch, for each anchor ``i`` (``s`` the ``[B, B]`` trajectory similarity of :mod:`~smartpretrain.
embeddings.similarity`, ``q_i(x)`` the x-quantile of row i without ``s_ii``, ``d`` the Euclidean distance of the
embeddings):

* **positive** ``p = argmax_{j != i} s_ij``, the most similar other trajectory (first index on ties), provided
  ``s_ip >= q_i(positive_quantile)`` (it is, unless the row holds NaN);
* **negative candidates** ``N_i = {j != i : s_ij <= q_i(negative_quantile), s_ij < s_ip}``: the less similar
  half of the row (default), never as similar as the positive, so a batch of equally similar trajectories mines
  nothing;
* **negative** by :class:`MiningStrategy`:

  =============  ===================================================================================
  ``hard``       ``argmin_{n in N_i} d(a, n)``: the candidate the encoder confuses most
  ``semi_hard``  ``argmin d(a, n)`` over ``n in N_i`` with ``d(a, p) < d(a, n) < d(a, p) + margin``
                 (FaceNet): farther than the positive yet inside the margin; ``hard`` when there is none
  ``random``     uniform over ``N_i``
  =============  ===================================================================================

An anchor without a positive or without a negative candidate gives no triplet. Mining reads detached
embeddings under ``no_grad``: it chooses indices, the gradient flows through :func:`triplet_loss` only,

.. math::
    L = \\frac{1}{M} \\sum_{m} \\max(0,\\ d(a_m, p_m) - d(a_m, n_m) + \\text{margin})

on Euclidean (not squared) distances: with L2-normalised embeddings they lie in [0, 2], on the scale of the
margin. :class:`MiningSchedule` moves from hard to semi-hard to random negatives as training proceeds: hard
negatives early sort the coarse structure out, random ones late keep the whole space in view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import Tensor

__all__ = ["MiningSchedule", "MiningStrategy", "Triplets", "mine_triplets", "triplet_loss"]


class MiningStrategy(StrEnum):
    """How the negative of an anchor is chosen among its candidates (see the module docstring)."""

    HARD = "hard"
    SEMI_HARD = "semi_hard"
    RANDOM = "random"


@dataclass(frozen=True)
class MiningSchedule:
    """The strategy by training progress ``p`` in [0, 1]: ``hard`` for ``p < hard_until``, ``semi_hard`` for
    ``p < semi_hard_until``, ``random`` after; ``fixed`` (when set) at every ``p``.

    Attributes:
        hard_until: progress (fraction of training) until which negatives are hard.
        semi_hard_until: progress until which they are semi-hard.
        fixed: a strategy for all of training instead (tests, ablations).
    """

    hard_until: float = 0.3
    semi_hard_until: float = 0.7
    fixed: MiningStrategy | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.hard_until <= self.semi_hard_until <= 1.0:
            raise ValueError(
                f"mining schedule needs 0 <= hard_until <= semi_hard_until <= 1, got {self.hard_until} and "
                f"{self.semi_hard_until}"
            )
        if self.fixed is not None:
            object.__setattr__(self, "fixed", MiningStrategy(self.fixed))

    def strategy(self, progress: float) -> MiningStrategy:
        """The strategy at ``progress`` (fraction of training done, in [0, 1])."""
        if not 0.0 <= progress <= 1.0:
            raise ValueError(f"training progress must be in [0, 1], got {progress}")
        if self.fixed is not None:
            return self.fixed
        if progress < self.hard_until:
            return MiningStrategy.HARD
        if progress < self.semi_hard_until:
            return MiningStrategy.SEMI_HARD
        return MiningStrategy.RANDOM


@dataclass(frozen=True)
class Triplets:
    """M triplets of batch indices, ``[M] int64`` each, in increasing anchor order."""

    anchor: Tensor
    positive: Tensor
    negative: Tensor

    def __post_init__(self) -> None:
        shapes = {tuple(self.anchor.shape), tuple(self.positive.shape), tuple(self.negative.shape)}
        if len(shapes) != 1 or self.anchor.dim() != 1:
            raise ValueError(f"triplet indices must be three [M] tensors, got shapes {sorted(shapes)}")

    def __len__(self) -> int:
        return int(self.anchor.shape[0])


def _empty(device: torch.device) -> Triplets:
    none = torch.zeros(0, dtype=torch.long, device=device)
    return Triplets(none, none.clone(), none.clone())


def mine_triplets(
    similarity: Tensor,
    embeddings: Tensor,
    strategy: MiningStrategy | str,
    margin: float,
    positive_quantile: float = 0.9,
    negative_quantile: float = 0.5,
    generator: torch.Generator | None = None,
) -> Triplets:
    """At most one triplet per anchor of the batch (see the module docstring).

    Args:
        similarity: ``[B, B]`` trajectory similarity (larger = more alike).
        embeddings: ``[B, D]``; read detached.
        strategy: how negatives are chosen.
        margin: the triplet margin (>= 0; bounds the semi-hard band).
        positive_quantile: a positive's similarity is at least this quantile of the anchor's row.
        negative_quantile: a negative candidate's similarity is at most this quantile of the anchor's row.
        generator: the random source of ``random`` (on the similarity's device; None: the global one).
    """
    strategy = MiningStrategy(strategy)
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be finite and >= 0, got {margin}")
    if not (0.0 <= negative_quantile <= 1.0 and 0.0 <= positive_quantile <= 1.0):
        raise ValueError(f"quantiles must be in [0, 1], got {positive_quantile} and {negative_quantile}")
    b = similarity.shape[0]
    if similarity.shape != (b, b) or embeddings.dim() != 2 or embeddings.shape[0] != b:
        raise ValueError(
            f"expected similarity [B, B] and embeddings [B, D], got {tuple(similarity.shape)} and "
            f"{tuple(embeddings.shape)}"
        )
    device = similarity.device
    if b < 3:  # an anchor needs a positive and a different negative
        return _empty(device)
    with torch.no_grad():
        sim = similarity.detach().float()
        emb = embeddings.detach().float().to(device)
        eye = torch.eye(b, dtype=torch.bool, device=device)
        off_diagonal = sim[~eye].view(b, b - 1)
        levels = torch.tensor([negative_quantile, positive_quantile], device=device)
        q_negative, q_positive = torch.quantile(off_diagonal, levels, dim=1)

        positive = sim.masked_fill(eye, -math.inf).argmax(dim=1)
        positive_sim = sim.gather(1, positive[:, None]).squeeze(1)
        has_positive = positive_sim >= q_positive
        candidate = (sim <= q_negative[:, None]) & (sim < positive_sim[:, None]) & ~eye
        keep = has_positive & candidate.any(dim=1)

        # exact differences, not the matmul expansion, whose rounding can reorder nearly equal distances
        distance = torch.cdist(emb, emb, compute_mode="donot_use_mm_for_euclid_dist")
        to_positive = distance.gather(1, positive[:, None])
        hard = distance.masked_fill(~candidate, math.inf).argmin(dim=1)
        if strategy is MiningStrategy.HARD:
            negative = hard
        elif strategy is MiningStrategy.SEMI_HARD:
            band = candidate & (distance > to_positive) & (distance < to_positive + margin)
            semi_hard = distance.masked_fill(~band, math.inf).argmin(dim=1)
            negative = torch.where(band.any(dim=1), semi_hard, hard)
        else:
            # the largest of iid uniform scores is uniform over the candidates
            scores = torch.rand(b, b, generator=generator, device=generator.device if generator else device)
            negative = scores.to(device).masked_fill(~candidate, -1.0).argmax(dim=1)
        anchor = keep.nonzero().squeeze(1)
        return Triplets(anchor, positive[anchor], negative[anchor])


def triplet_loss(embeddings: Tensor, triplets: Triplets, margin: float) -> Tensor:
    """Mean hinge ``max(0, d(a, p) - d(a, n) + margin)`` on Euclidean distances (the module docstring's ``L``);
    a zero that keeps the graph (``requires_grad`` as ``embeddings``) when there is no triplet."""
    if len(triplets) == 0:
        return embeddings.sum() * 0.0
    anchor = embeddings[triplets.anchor]
    to_positive = torch.linalg.vector_norm(anchor - embeddings[triplets.positive], dim=-1)
    to_negative = torch.linalg.vector_norm(anchor - embeddings[triplets.negative], dim=-1)
    return torch.relu(to_positive - to_negative + margin).mean()
