"""Resumable, rank-sharded, optionally size-aware batching of cached scenes, with per-sample seeds.

Why this exists: a multi-day run that is killed must resume to the same result as an uninterrupted one. That
needs three things the stock ``DataLoader(shuffle=True)`` + ``DistributedSampler`` pair does not give:

* **The order is a pure function of (seed, epoch, rank)**, never of a global RNG, so an epoch can be rebuilt
  after a restart; :class:`EpochBatchSampler` also remembers how many batches of its epoch were trained
  (``state_dict``) and skips them when it is restored (Lightning restores a DataLoader that has
  ``state_dict`` / ``load_state_dict``, see :class:`ResumableDataLoader`).
* **Per-sample randomness is a pure function of (seed, epoch, scene)**: every batch element is a
  :class:`SampleKey` whose ``seed`` :class:`~smartpretrain.data.datamodule.SceneDataset` uses to seed numpy,
  ``random`` and torch's CPU generator around that scene's transform (views, augmentations), restoring the
  caller's generators afterwards. The data stream therefore does not depend on which worker loads a scene, on
  ``num_workers``, or on the workers' RNG state at a restart — nothing per worker needs saving.
* **A per-batch budget** (``max_cost``, e.g. agents per batch): batches are closed before their summed cost
  would exceed it, so one 2,000-agent scene does not share a batch with three others. Every rank gets the same
  number of batches (ranks with fewer repeat their first ones), so DDP never waits on a missing batch.

Evaluation uses :class:`ShardSampler`: contiguous-free ``range(rank, n, world)`` shards without padding, so a
validation scene is never counted twice under DDP (``DistributedSampler`` pads with repeats).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Sampler

__all__ = [
    "EpochBatchSampler",
    "IndexOrder",
    "ResumableDataLoader",
    "SampleKey",
    "ShardSampler",
    "ShuffledOrder",
    "dist_world",
    "sample_seed",
]


class SampleKey(NamedTuple):
    """One element of a batch: the dataset index and the seed of that scene's transforms."""

    index: int
    seed: int


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one scene of one epoch (``np.random.SeedSequence`` of the three words)."""
    words = [int(seed) % 2**64, int(epoch) % 2**64, int(index) % 2**64]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def dist_world(num_replicas: int | None = None, rank: int | None = None) -> tuple[int, int]:
    """``(world size, rank)``: the given values, else the initialised process group's, else ``(1, 0)``."""
    initialised = dist.is_available() and dist.is_initialized()
    world = int(num_replicas) if num_replicas is not None else (dist.get_world_size() if initialised else 1)
    me = int(rank) if rank is not None else (dist.get_rank() if initialised else 0)
    if world < 1 or not 0 <= me < world:
        raise ValueError(f"rank {me} out of range for {world} replicas")
    return world, me


class IndexOrder(Protocol):
    """Where an epoch's indices come from: the indices rank ``rank`` of ``world`` draws in ``epoch``."""

    def indices(self, epoch: int, rank: int, world: int) -> np.ndarray: ...


class ShuffledOrder:
    """A permutation of ``pool`` (dataset indices) seeded by ``(seed, epoch)``, padded by wrap-around to a
    multiple of the world size and sharded ``perm[rank::world]`` (the same split as ``DistributedSampler``)."""

    def __init__(self, pool: Sequence[int], seed: int = 0, shuffle: bool = True) -> None:
        self.pool = np.asarray(list(pool), dtype=np.int64)
        if self.pool.size == 0:
            raise ValueError("no scenes to sample from (the split is empty)")
        self.seed = int(seed)
        self.shuffle = bool(shuffle)

    def indices(self, epoch: int, rank: int, world: int) -> np.ndarray:
        if self.shuffle:
            g = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
            order = self.pool[torch.randperm(len(self.pool), generator=g).numpy()]
        else:
            order = self.pool
        total = math.ceil(len(order) / world) * world
        if total > len(order):
            order = np.concatenate([order, np.resize(order, total - len(order))])
        return order[rank::world]


class MixtureOrder:
    """The indices of a :class:`~smartpretrain.data.sampler.MixtureSampler` (already sharded per rank)."""

    def __init__(self, make_sampler: Any) -> None:
        self.make_sampler = make_sampler  # (rank, world) -> MixtureSampler

    def indices(self, epoch: int, rank: int, world: int) -> np.ndarray:
        sampler = self.make_sampler(rank, world)
        sampler.set_epoch(epoch)
        return np.fromiter(iter(sampler), dtype=np.int64)


def _pack(order: np.ndarray, batch_size: int, costs: np.ndarray | None, max_cost: float | None) -> list[np.ndarray]:
    """Consecutive batches of at most ``batch_size`` scenes whose summed cost stays within ``max_cost`` (a scene
    costlier than the budget on its own gets a batch of its own)."""
    if costs is None or max_cost is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[np.ndarray] = []
    start, used = 0, 0.0
    for i, index in enumerate(order.tolist()):
        cost = float(costs[index])
        if i > start and (i - start >= batch_size or used + cost > max_cost):
            batches.append(order[start:i])
            start, used = i, 0.0
        used += cost
    if start < len(order):
        batches.append(order[start:])
    return batches


class EpochBatchSampler(Sampler[list[SampleKey]]):
    """Batches of :class:`SampleKey` for one rank; deterministic per ``(seed, epoch, rank)``; resumable.

    Args:
        order: the epoch's indices per rank (:class:`ShuffledOrder`, :class:`MixtureOrder`).
        batch_size: scenes per batch at most.
        seed: base of the per-sample seeds.
        drop_last: drop a last batch smaller than ``batch_size`` (not with a cost budget).
        costs: cost per dataset index (e.g. agents per scene) and ``max_cost`` per batch; both or neither.
        num_replicas, rank: DDP world (defaults: the process group).
    """

    def __init__(
        self,
        order: IndexOrder,
        batch_size: int,
        seed: int = 0,
        drop_last: bool = False,
        costs: np.ndarray | None = None,
        max_cost: float | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if (costs is None) != (max_cost is None):
            raise ValueError("give both costs and max_cost (a per-batch budget), or neither")
        if max_cost is not None and max_cost <= 0:
            raise ValueError(f"the per-batch budget must be positive, got {max_cost}")
        self.order = order
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = bool(drop_last) and max_cost is None
        self.costs = None if costs is None else np.asarray(costs, dtype=np.float64)
        self.max_cost = None if max_cost is None else float(max_cost)
        self.world, self.rank = dist_world(num_replicas, rank)
        self.epoch = 0
        self.batches_done = 0  # batches of `epoch` already trained (set by the resume callback)
        self._skip = 0  # batches to skip at the next __iter__ (a restored position)
        self._cache: tuple[int, list[np.ndarray]] | None = None

    @property
    def sampler(self) -> EpochBatchSampler:
        """This batch sampler itself: Lightning moves a loader to each new epoch through
        ``loader.batch_sampler.sampler.set_epoch`` and never calls the batch sampler's own, so without this the
        epoch stayed 0 and every epoch repeated epoch 0's order and per-scene seeds."""
        return self

    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self.epoch, self.batches_done, self._skip = int(epoch), 0, 0

    def batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches of ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        packed = [
            _pack(self.order.indices(epoch, r, self.world), self.batch_size, self.costs, self.max_cost)
            for r in (range(self.world) if self.max_cost is not None else [self.rank])
        ]
        mine = packed[self.rank if self.max_cost is not None else 0]
        if self.max_cost is not None:  # equal counts on every rank: repeat this rank's first batches
            most = max(len(p) for p in packed)
            mine = mine + [mine[i % len(mine)] for i in range(most - len(mine))] if mine else mine
        if self.drop_last and mine and len(mine[-1]) < self.batch_size:
            mine = mine[:-1]
        self._cache = (epoch, mine)
        return mine

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self) -> Iterator[list[SampleKey]]:
        skip, self._skip = self._skip, 0
        epoch = self.epoch
        for batch in self.batches(epoch)[skip:]:
            yield [SampleKey(int(i), sample_seed(self.seed, epoch, int(i))) for i in batch.tolist()]

    # --- resume -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batches_done": self.batches_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= len(self.batches(epoch)):  # saved at the end of an epoch: the next one starts afresh
            epoch, done = epoch + 1, 0
        self.epoch, self.batches_done, self._skip, self._cache = epoch, done, done, None


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position Lightning saves in checkpoints and restores before iterating (its batch
    sampler's :meth:`EpochBatchSampler.state_dict`)."""

    def state_dict(self) -> dict[str, int]:
        return self.batch_sampler.state_dict()  # type: ignore[union-attr]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batch_sampler.load_state_dict(state)  # type: ignore[union-attr]


class ShardSampler(Sampler[SampleKey]):
    """Evaluation order: ``indices[rank::world]`` without padding (every scene is seen exactly once over the
    ranks), each with a fixed per-scene seed (epoch 0)."""

    def __init__(
        self, indices: Sequence[int], seed: int = 0, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        self.indices = [int(i) for i in indices]
        self.seed = int(seed)
        self.world, self.rank = dist_world(num_replicas, rank)

    def __iter__(self) -> Iterator[SampleKey]:
        for i in self.indices[self.rank :: self.world]:
            yield SampleKey(i, sample_seed(self.seed, 0, i))

    def __len__(self) -> int:
        return len(self.indices[self.rank :: self.world])
