"""Trajectory Reconstructive Learning (SmartPretrain, ICLR 2025): from an agent's embedding in window A,
regress its trajectory in window B (not masking, and not its own history)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smartpretrain.ssl.distributed import global_sum, world_size
from smartpretrain.ssl.objective import ONLINE_A, ObjectiveNeeds, ObjectiveOutput, Queries, SSLInputs, SSLObjective

OFFSET_SOURCES = ("start_a", "gap")


def chunk_bounds(window: int, num_query_steps: int, fractions: Sequence[float] | None) -> list[int]:
    """Window steps supplied by each query step: ``[0, b_1, ..., window]``.

    Even split by default; ``fractions`` (one per query step, summing to 1) gives e.g. the release's QCNet split
    ``(0.2, 0.4, 0.4)`` = steps 0-9, 10-29, 30-49 of a 50-step window.
    """
    if fractions is None:
        fractions = [1.0 / num_query_steps] * num_query_steps
    if len(fractions) != num_query_steps:
        raise ValueError(f"{len(fractions)} chunk fractions for {num_query_steps} query steps")
    if abs(sum(fractions) - 1.0) > 1e-6 or min(fractions) <= 0:
        raise ValueError(f"chunk fractions must be positive and sum to 1, got {list(fractions)}")
    cum, bounds = 0.0, [0]
    for f in fractions[:-1]:
        cum += f
        bounds.append(round(cum * window))
    bounds.append(window)
    if any(b1 <= b0 for b0, b1 in itertools.pairwise(bounds)):
        raise ValueError(f"window {window} too short for {num_query_steps} chunks {list(fractions)}")
    return bounds


class TrajectoryReconstructionLoss(SSLObjective):
    r"""TRL: ``head([z_a ; e(s)])`` gives per-step displacements; their cumulative sum is the window-B trajectory
    in the query's frame at the end of window A.

    .. math::
        \hat{y}_{i,t} = \sum_{u \le t} \Delta_{i,u}, \qquad
        \mathcal{L}_{TRL} = \frac{1}{|T^{+}|} \sum_{t \in T^{+}} \frac{1}{n_t} \sum_{i : m_{i,t}}
            \mathrm{SmoothL1}_\beta(\hat{y}_{i,t} - y_{i,t})

    summed over x, y; ``n_t`` is the global number of queries observed at step t, ``T⁺`` the steps with any.
    With Q query steps, step q's embedding supplies the displacements of its chunk of the window
    (:func:`chunk_bounds`; with mixed view lengths, the chunks of each query's own length, its steps after that
    length unused). ``e`` is a learned table (zero-initialised) indexed by the window-A start
    (``offset_source="start_a"``, release) or by the gap between the windows (``"gap"``).

    Args:
        dim: projection size C. head: ``Linear(2C, hidden) -> LayerNorm -> ReLU -> Linear(hidden, 2 window)``.
        window: H.
        num_offsets: rows of the offset table (offsets must be below it).
        chunk_fractions: see :func:`chunk_bounds`.
        require_full_target: only queries observed at every step of window B (release); False also uses
            partially observed ones, masked per step.
        beta: SmoothL1's β.
    """

    #: online view A only; ``require_full_target=False`` also takes the queries partially observed in window B
    needs: ClassVar[ObjectiveNeeds] = ObjectiveNeeds(encodes={ONLINE_A})

    def __init__(
        self,
        dim: int = 256,
        hidden_dim: int = 1024,
        window: int = 50,
        num_offsets: int = 64,
        offset_source: str = "start_a",
        chunk_fractions: Sequence[float] | None = None,
        require_full_target: bool = True,
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if offset_source not in OFFSET_SOURCES:
            raise ValueError(f"offset_source must be one of {OFFSET_SOURCES}, got {offset_source!r}")
        self.window, self.num_offsets, self.offset_source = int(window), int(num_offsets), offset_source
        self.chunk_fractions = None if chunk_fractions is None else [float(f) for f in chunk_fractions]
        self.require_full_target, self.beta = bool(require_full_target), float(beta)
        self.offset_embedding = nn.Embedding(num_offsets, dim)
        nn.init.zeros_(self.offset_embedding.weight)
        self.head = nn.Sequential(
            nn.Linear(2 * dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, 2 * self.window),
        )  # fmt: skip

    def declared_needs(self) -> ObjectiveNeeds:
        return replace(self.needs, partial_queries=not self.require_full_target)

    @staticmethod
    def _queries(inputs: SSLInputs) -> Queries:
        if inputs.queries is None:
            raise ValueError("TrajectoryReconstructionLoss needs the queries of the views")
        return inputs.queries

    def offsets(self, inputs: SSLInputs) -> Tensor:
        queries = self._queries(inputs)
        if self.offset_source == "start_a":
            off = queries.start_a
        else:
            off = queries.start_b - queries.start_a - queries.windows()
        if off.numel() and (int(off.min()) < 0 or int(off.max()) >= self.num_offsets):
            raise ValueError(
                f"TRL {self.offset_source} offsets span [{int(off.min())}, {int(off.max())}] but the table has "
                f"{self.num_offsets} rows; raise num_offsets"
            )
        return off

    def step_sources(self, windows: Tensor, num_query_steps: int) -> Tensor:
        """``[P, H] long``: the query step whose output supplies each window step (0 after a query's window)."""
        out = windows.new_zeros((windows.size(0), self.window))
        for w in torch.unique(windows).tolist():
            if not 0 < w <= self.window:
                raise ValueError(f"TRL head was built for windows up to {self.window} steps, got {w}")
            bounds = chunk_bounds(int(w), num_query_steps, self.chunk_fractions)
            src = torch.repeat_interleave(
                torch.arange(num_query_steps, device=windows.device),
                torch.tensor([b1 - b0 for b0, b1 in itertools.pairwise(bounds)], device=windows.device),
            )
            out[windows == w, : int(w)] = src
        return out

    def predict(self, inputs: SSLInputs) -> Tensor:
        """``[P, H, 2]`` predicted window-B positions (constant after a shorter query's window, never a target)."""
        queries = self._queries(inputs)
        z = inputs.encoding(ONLINE_A)
        p, q_steps, _ = z.shape
        if queries.window != self.window:
            raise ValueError(f"TRL head was built for a {self.window}-step window, got {queries.window}")
        windows = queries.windows()
        e = self.offset_embedding(self.offsets(inputs)).unsqueeze(1).expand(-1, q_steps, -1)
        disp = self.head(torch.cat([z, e], dim=-1)).view(p, q_steps, self.window, 2)
        src = self.step_sources(windows, q_steps)  # [P, H]
        disp = disp.gather(1, src[:, None, :, None].expand(-1, 1, -1, 2)).squeeze(1)  # [P, H, 2]
        inside = torch.arange(self.window, device=z.device)[None, :] < windows[:, None]
        disp = disp * inside.unsqueeze(-1).to(disp.dtype)
        return torch.cumsum(disp, dim=1)

    def compute(self, inputs: SSLInputs) -> ObjectiveOutput:
        pred = self.predict(inputs)
        queries = self._queries(inputs)
        mask = queries.target_valid
        if self.require_full_target:  # the task passes full rows only then; inputs built by hand may hold others
            mask = mask & queries.full_b.unsqueeze(1)
        per = F.smooth_l1_loss(pred, queries.target, beta=self.beta, reduction="none").sum(-1)  # [P, H]
        per = torch.where(mask, per, torch.zeros_like(per))
        with torch.no_grad():
            steps_per_query = mask.sum(dim=1)
            per_query = per.detach().sum(dim=1) / steps_per_query.clamp(min=1)
            per_query[steps_per_query == 0] = float("nan")
        counts = global_sum(mask.sum(dim=0).to(per.dtype))  # [H] queries per step, global
        steps = counts > 0
        num_steps = int(steps.sum())
        if num_steps == 0:
            return ObjectiveOutput(pred.sum() * 0.0, per_query)
        per_step = per.sum(dim=0)[steps] / counts[steps]
        return ObjectiveOutput(per_step.sum() * world_size() / num_steps, per_query)


__all__ = ["TrajectoryReconstructionLoss", "chunk_bounds"]
