"""A DDP-aware sampler drawing from a weighted mixture of datasets concatenated in one map-style dataset.

:class:`~smartpretrain.data.datamodule.SceneDataset` concatenates several caches: the global index of a scene is
the offset of its component (cache) plus its index inside that component. :class:`MixtureSampler` yields such
global indices so that each component makes up a chosen share of an epoch, whatever its size (e.g. oversample a
small dataset, undersample a large one).

Sharding across DDP ranks is disjoint by construction: each epoch, every component ``c`` is permuted with a
generator seeded from ``(seed, epoch, c)`` only, so all ranks compute the same permutation, and rank ``r`` owns
the slice ``perm_c[r::num_replicas]``. Two ranks therefore never yield the same index within an epoch, with or
without replacement. Every rank yields the same number of indices, ``ceil(num_samples / num_replicas)``, so no
rank waits on another at the end of an epoch.

Seeds: a generator for ``(seed, epoch, c)`` (component permutations) or ``(seed, epoch, rank)`` (label shuffle and
draws of one rank) is seeded with ``np.random.SeedSequence([seed, epoch, tag, c_or_rank]).generate_state(1,
np.uint64)``, where ``tag`` is 0 for component permutations and 1 for the per-rank stream (so the two families
never share a seed). Each word is taken modulo 2**64, so any Python ``int`` (negative ones included) is accepted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["MixtureSampler", "mixture_weights"]

_COMPONENT_STREAM = 0
_RANK_STREAM = 1


def _check_sizes(sizes: Sequence[int]) -> list[int]:
    out = []
    for i, s in enumerate(sizes):
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0:
            raise ValueError(f"component {i}: size must be a non-negative integer, got {s!r}")
        out.append(int(s))
    if not out:
        raise ValueError("a mixture needs at least one component (sizes is empty)")
    return out


def mixture_weights(sizes: Sequence[int], weights: Sequence[float] | None = None) -> np.ndarray:
    """Normalised mixture probabilities of the components.

    Args:
        sizes: number of scenes of each component, in concatenation order.
        weights: relative (unnormalised) weight of each component; ``None`` weighs by scene count (proportional to
            ``sizes``).

    Returns:
        ``float64`` array of ``len(sizes)`` probabilities summing to 1.

    Raises:
        ValueError: sizes empty or not non-negative integers; ``weights`` of another length than ``sizes``; a
            negative or non-finite weight; all weights zero (or all components empty when ``weights`` is
            ``None``); a positive weight on an empty component.
    """
    sizes = _check_sizes(sizes)
    if weights is None:
        total = sum(sizes)
        if total == 0:
            raise ValueError(f"cannot weigh by scene count: all components are empty (sizes {sizes})")
        return np.asarray(sizes, dtype=np.float64) / total
    w = np.asarray(list(weights), dtype=np.float64)
    if w.ndim != 1 or len(w) != len(sizes):
        raise ValueError(f"got {len(sizes)} sizes but {w.size} weights; give one weight per component")
    for i, x in enumerate(w):
        if not np.isfinite(x):
            raise ValueError(f"component {i}: weight must be finite, got {x}")
        if x < 0:
            raise ValueError(f"component {i}: weight must be non-negative, got {x}")
    total = float(w.sum())
    if total == 0:
        raise ValueError(f"all mixture weights are zero ({w.tolist()}); at least one must be positive")
    if not math.isfinite(total):
        raise ValueError(f"mixture weights overflow when summed ({w.tolist()}); rescale them")
    for i, (s, x) in enumerate(zip(sizes, w, strict=True)):
        if s == 0 and x > 0:
            raise ValueError(f"component {i} is empty (size 0) but has positive weight {x}")
    return w / total


def _largest_remainder(probabilities: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` into integer counts proportional to ``probabilities`` (Hamilton / largest remainder).

    Counts are the floors of the quotas, and the seats left go one each to the largest fractional parts, ties to
    the lower component number. Components with probability 0 get 0.
    """
    quotas = probabilities * total
    counts = np.floor(quotas).astype(np.int64)
    left = total - int(counts.sum())
    if left > 0:
        frac = np.where(probabilities > 0, quotas - counts, -1.0)
        order = np.argsort(-frac, kind="stable")
        counts[order[:left]] += 1
    return counts


def _generator(*words: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded deterministically from integer words (each taken modulo 2**64)."""
    entropy = [int(w) % 2**64 for w in words]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _dist_default(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    return int(num_replicas), int(rank)


class MixtureSampler(Sampler[int]):
    """Sample global indices of concatenated datasets by mixture weights, sharded disjointly across DDP ranks.

    Per epoch and per rank:

    1. For every component ``c``, ``perm_c`` is a permutation of ``range(size_c)`` from a generator seeded by
       ``(seed, epoch, c)`` (the same on all ranks); this rank's shard is ``perm_c[rank::num_replicas]``.
    2. ``num_local = ceil(num_samples / num_replicas)`` draws are split among the components by largest-remainder
       allocation of the probabilities (deterministic, the same on all ranks), and the resulting component labels
       are shuffled with a generator seeded by ``(seed, epoch, rank)``.
    3. The draws of a component come from this rank's shard: uniformly with ``replacement=True``; without
       replacement, the shard is walked in order and, once exhausted, walked again in a fresh permutation, so no
       index repeats before the whole shard has been used.

    The same generator (seeded by ``(seed, epoch, rank)``) drives steps 2 and 3, so the sequence is a deterministic
    function of ``(sizes, weights, num_samples, replacement, seed, epoch, rank, num_replicas)``. Call
    :meth:`set_epoch` at the start of each epoch (Lightning does so for samplers that have it) to get a new draw.

    Args:
        sizes: number of scenes per component, in concatenation order (e.g. ``len(c)`` for the caches of a
            :class:`~smartpretrain.data.datamodule.SceneDataset`).
        weights: relative weight per component, see :func:`mixture_weights`; ``None`` weighs by scene count.
        num_samples: global number of draws per epoch, over all ranks; defaults to ``sum(sizes)``.
        replacement: draw uniformly with replacement inside each shard instead of cycling through it.
        seed: base seed, shared by all ranks.
        num_replicas: number of DDP processes; defaults to the world size of an initialised
            ``torch.distributed`` process group, else 1.
        rank: this process's rank; defaults to the rank in an initialised process group, else 0.

    Raises:
        ValueError: bad sizes or weights (see :func:`mixture_weights`), ``num_samples < 1``, ``num_replicas < 1``,
            rank outside ``[0, num_replicas)``, or a component with a positive weight but fewer scenes than
            ``num_replicas`` (some rank would own no scene of it).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float] | None = None,
        num_samples: int | None = None,
        replacement: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self._sizes = _check_sizes(sizes)
        self._weights = None if weights is None else [float(w) for w in weights]
        self._probabilities = mixture_weights(self._sizes, weights)
        self._offsets = tuple(int(x) for x in np.concatenate([[0], np.cumsum(self._sizes)[:-1]]))
        self._total = int(sum(self._sizes))

        if num_samples is None:
            num_samples = self._total
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
        self.num_samples = int(num_samples)

        num_replicas, rank = _dist_default(num_replicas, rank)
        if num_replicas < 1:
            raise ValueError(f"num_replicas must be at least 1, got {num_replicas}")
        if not 0 <= rank < num_replicas:
            raise ValueError(
                f"rank {rank} out of range: must be in [0, {num_replicas - 1}] for {num_replicas} replicas"
            )
        self.num_replicas = num_replicas
        self.rank = rank

        for c, (size, p) in enumerate(zip(self._sizes, self._probabilities, strict=True)):
            if p > 0 and size < num_replicas:
                raise ValueError(
                    f"component {c} has {size} scenes, fewer than num_replicas={num_replicas}: some rank would "
                    f"own none of it; give it weight 0 or use fewer replicas"
                )

        self.replacement = bool(replacement)
        self.seed = int(seed)
        self.epoch = 0
        self.num_local = math.ceil(self.num_samples / self.num_replicas)
        self._counts = _largest_remainder(self._probabilities, self.num_local)

    # ------------------------------------------------------------------ properties

    @property
    def sizes(self) -> tuple[int, ...]:
        """Scenes per component, in concatenation order."""
        return tuple(self._sizes)

    @property
    def probabilities(self) -> np.ndarray:
        """Normalised mixture probabilities per component (a copy)."""
        return self._probabilities.copy()

    @property
    def offsets(self) -> tuple[int, ...]:
        """Global index of the first scene of each component (``offsets[c] + local index`` = global index)."""
        return self._offsets

    @property
    def counts(self) -> np.ndarray:
        """Draws per component on each rank and epoch (largest-remainder split of ``num_local``; a copy)."""
        return self._counts.copy()

    # ------------------------------------------------------------------ API

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch, which (with the seed) determines the permutations and draws of the next iteration."""
        self.epoch = int(epoch)

    def component_of(self, index: int) -> int:
        """Component number of a global index."""
        if not 0 <= index < self._total:
            raise IndexError(f"index {index} out of range for {self._total} scenes")
        return int(np.searchsorted(np.cumsum(self._sizes), index, side="right"))

    def shard_indices(self, component: int) -> np.ndarray:
        """Global indices of ``component`` owned by this rank in the current epoch, in walking order."""
        if not 0 <= component < len(self._sizes):
            raise IndexError(f"component {component} out of range for {len(self._sizes)} components")
        return self._shard(component).numpy() + self._offsets[component]

    def _shard(self, component: int) -> torch.Tensor:
        """Local indices (inside the component) owned by this rank this epoch."""
        g = _generator(self.seed, self.epoch, _COMPONENT_STREAM, component)
        perm = torch.randperm(self._sizes[component], generator=g)
        return perm[self.rank :: self.num_replicas]

    def _local_draws(self, shard: torch.Tensor, count: int, g: torch.Generator) -> torch.Tensor:
        if self.replacement:
            return shard[torch.randint(len(shard), (count,), generator=g)]
        parts, left = [], count
        order = shard
        while left > 0:
            take = min(left, len(order))
            parts.append(order[:take])
            left -= take
            if left > 0:
                order = shard[torch.randperm(len(shard), generator=g)]
        return torch.cat(parts) if parts else shard[:0]

    def __iter__(self) -> Iterator[int]:
        g = _generator(self.seed, self.epoch, _RANK_STREAM, self.rank)
        labels = torch.repeat_interleave(torch.arange(len(self._sizes)), torch.as_tensor(self._counts))
        labels = labels[torch.randperm(len(labels), generator=g)]
        out = torch.empty(self.num_local, dtype=torch.int64)
        for c, count in enumerate(self._counts.tolist()):
            if count == 0:
                continue
            draws = self._local_draws(self._shard(c), count, g) + self._offsets[c]
            out[labels == c] = draws
        return iter(out.tolist())

    def __len__(self) -> int:
        return self.num_local

    def __repr__(self) -> str:
        weights = "by size" if self._weights is None else self._weights
        probs = [round(float(p), 4) for p in self._probabilities]
        return (
            f"{type(self).__name__}(sizes={self._sizes}, weights={weights}, probabilities={probs}, "
            f"num_samples={self.num_samples}, replacement={self.replacement}, seed={self.seed}, "
            f"rank={self.rank}/{self.num_replicas}, epoch={self.epoch})"
        )
