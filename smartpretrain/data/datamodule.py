"""Serve cached scenes to Lightning: a map-style dataset over one or more caches and a LightningDataModule.

The per-sample ``transform`` is where the next stages plug in (view sampler, then a backbone adapter); this
module knows neither. A transform may be given per cache (e.g. a view length per dataset).

Sampling (:mod:`smartpretrain.data.batching`): this module shards across DDP ranks itself, so the Trainer is
built with ``use_distributed_sampler=False`` (:attr:`SceneDataModule.use_distributed_sampler`). The train loader
is a :class:`~smartpretrain.data.batching.ResumableDataLoader` over an
:class:`~smartpretrain.data.batching.EpochBatchSampler`: a seeded permutation of the (labelled) train scenes, or
a :class:`~smartpretrain.data.sampler.MixtureSampler` draw with a :class:`MixtureSpec`; optionally closed by an
agent budget per batch. Its position is saved in checkpoints. Each scene is transformed under a seed of its own
(:class:`~smartpretrain.data.batching.SampleKey`). Evaluation loaders shard without padding
(:class:`~smartpretrain.data.batching.ShardSampler`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from smartpretrain.data.agent_cap import count_capped
from smartpretrain.data.batching import (
    EpochBatchSampler,
    MixtureOrder,
    ResumableDataLoader,
    SampleKey,
    ShardSampler,
    ShuffledOrder,
    dist_world,
)
from smartpretrain.data.cache import SceneCache
from smartpretrain.data.sampler import MixtureSampler
from smartpretrain.data.scene import Scene
from smartpretrain.data.transforms import SceneTransform
from smartpretrain.data.worker_transfer import worker_collate

PathLike = str | Path
log = logging.getLogger(__name__)


def _as_list(paths: PathLike | Sequence[PathLike] | None) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    return [Path(p) for p in paths]


class SceneDataset(Dataset):
    """The scenes of several cache splits, concatenated in the given order, each passed through its transform.

    Args:
        caches: cache split folders.
        transform: one callable for every cache, or a sequence with one per cache (None: return the Scene).
    """

    def __init__(
        self,
        caches: PathLike | Sequence[PathLike],
        transform: SceneTransform | Sequence[SceneTransform | None] | None = None,
    ) -> None:
        self.caches = [SceneCache(p) for p in _as_list(caches)]
        if not self.caches:
            raise ValueError("SceneDataset needs at least one cache folder")
        if transform is None or callable(transform):
            self.transforms: list[SceneTransform | None] = [transform] * len(self.caches)
        else:
            self.transforms = list(transform)
            if len(self.transforms) != len(self.caches):
                raise ValueError(f"{len(self.transforms)} transforms for {len(self.caches)} caches")
        self._ends = np.cumsum([len(c) for c in self.caches])

    @property
    def sizes(self) -> list[int]:
        """Scenes per cache, in concatenation order."""
        return [len(c) for c in self.caches]

    def __len__(self) -> int:
        return int(self._ends[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """``(cache number, index inside that cache)`` of a global index."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} scenes")
        which = int(np.searchsorted(self._ends, index, side="right"))
        start = int(self._ends[which - 1]) if which else 0
        return which, index - start

    def scene(self, index: int) -> Scene:
        which, local = self.locate(index)
        return self.caches[which][local]

    def __getitem__(self, index: int | SampleKey) -> Any:
        """The transformed scene; for a :class:`SampleKey`, the transform runs with numpy, ``random`` and torch's
        CPU generator seeded from the key (the caller's generator states are restored afterwards)."""
        if isinstance(index, SampleKey):
            return _with_seed(index.seed, self._load, index.index)
        return self._load(index)

    def _load(self, index: int) -> Any:
        which, local = self.locate(int(index))
        scene = self.caches[which][local]
        transform = self.transforms[which]
        return transform(scene) if transform is not None else scene


class Chain:
    """Scene transforms applied in order (e.g. an agent cap, then a backbone adapter or view sampler); ``collate``
    is the last one's. Picklable when its parts are (DataLoader workers)."""

    def __init__(self, *transforms: Callable[[Any], Any]) -> None:
        if not transforms:
            raise ValueError("Chain needs at least one transform")
        self.transforms = transforms

    def __call__(self, scene: Scene) -> Any:
        out: Any = scene
        for transform in self.transforms:
            out = transform(out)
        return out

    def collate(self, samples: list[Any]) -> Any:
        return self.transforms[-1].collate(samples)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"Chain({', '.join(repr(t) for t in self.transforms)})"


def _with_seed(seed: int, fn: Callable[[int], Any], arg: int) -> Any:
    """``fn(arg)`` under seeded global generators, leaving the caller's generators as they were (the main
    process's training RNG must not depend on data loading, or a resumed run would diverge)."""
    np_state, py_state, torch_state = np.random.get_state(), random.getstate(), torch.random.get_rng_state()
    np.random.seed(seed % 2**32)
    random.seed(seed)
    torch.random.default_generator.manual_seed(seed)
    try:
        return fn(arg)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch.random.set_rng_state(torch_state)


def labelled_subset(num_scenes: int, fraction: float, seed: int = 0) -> list[int]:
    """Indices of a fixed random ``fraction`` of ``num_scenes`` scenes (at least one), sorted.

    The draw depends only on ``(num_scenes, fraction, seed)``, not on the training seed, so every arm and seed of a
    label-efficiency study fine-tunes on the same labelled scenes; a smaller fraction is a subset of a larger one.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"train fraction must be in (0, 1], got {fraction}")
    count = max(1, round(num_scenes * fraction))
    order = np.random.default_rng(seed).permutation(num_scenes)
    return sorted(int(i) for i in order[:count])


def collate_as_list(batch: list[Any]) -> list[Any]:
    """Default collate: keep samples as a list (Scenes have ragged sizes; adapters bring their own collate)."""
    return batch


@dataclass(frozen=True)
class MixtureSpec:
    """How the train loader mixes its caches (see :class:`~smartpretrain.data.sampler.MixtureSampler`).

    Attributes:
        weights: relative weight per train cache; None weighs by scene count.
        num_samples: scenes per epoch over all ranks (None: the total number of train scenes).
        replacement: draw with replacement inside each cache.
        seed: sampler seed (the epoch is mixed in by ``set_epoch``).
    """

    weights: Sequence[float] | None = None
    num_samples: int | None = None
    replacement: bool = False
    seed: int = 0


class SceneDataModule(pl.LightningDataModule):
    """Train / val / test dataloaders over cached scenes.

    Args:
        train, val, test: cache split folders (``{cache_root}/{dataset}/{split}``), one or a list each.
        batch_size: scenes per batch and per process (DDP multiplies by the world size).
        val_batch_size: defaults to ``batch_size``.
        num_workers: DataLoader worker processes.
        pin_memory: the loaders put batches in page-locked host memory (faster copies to the GPU).
        persistent_workers: with ``num_workers > 0``, keep the workers alive from one epoch to the next (no
            restart cost per epoch). It changes no batch: the order and every scene's seed come from the main
            process's batch sampler (``(seed, epoch, scene)``, :mod:`~smartpretrain.data.batching`); the workers
            hold no state of their own that an epoch or a resume would have to reset.
        prefetch_factor: batches each worker loads ahead (None: PyTorch's default, 2); only with workers.
        train_transform / eval_transform: per-scene callables (view sampler + backbone adapter), or one per cache.
        collate_fn: batch collation; default keeps a list.
        mixture: draw train scenes from the caches with explicit weights (:class:`MixtureSpec`).
        train_fraction: fine-tune on this fixed fraction of the train scenes (:func:`labelled_subset`).
        subset_seed: seed of that draw (kept apart from the training seed).
        seed: seed of the train order and of the per-scene transform seeds.
        max_agents_per_batch: close a train batch before its agents (from the cache index, after
            ``max_agents_per_scene``) would exceed this budget (None: batches of ``batch_size`` scenes).
        max_agents_per_scene: the per-scene cap applied in training (only used here to count the agents of a
            capped scene; the cap itself is a transform, :class:`~smartpretrain.data.agent_cap.AgentCap`).
    """

    def __init__(
        self,
        train: PathLike | Sequence[PathLike] | None = None,
        val: PathLike | Sequence[PathLike] | None = None,
        test: PathLike | Sequence[PathLike] | None = None,
        batch_size: int = 4,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        prefetch_factor: int | None = None,
        train_transform: SceneTransform | Sequence[SceneTransform | None] | None = None,
        eval_transform: SceneTransform | Sequence[SceneTransform | None] | None = None,
        collate_fn: Callable[[list[Any]], Any] = collate_as_list,
        mixture: MixtureSpec | None = None,
        train_fraction: float = 1.0,
        subset_seed: int = 0,
        seed: int = 0,
        max_agents_per_batch: int | None = None,
        max_agents_per_scene: int | None = None,
    ) -> None:
        super().__init__()
        if mixture is not None and train_fraction < 1.0:
            raise ValueError("train_fraction < 1 with a mixture: give the mixture's num_samples instead")
        if not 0.0 < float(train_fraction) <= 1.0:
            raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if prefetch_factor is not None and int(prefetch_factor) < 1:
            raise ValueError(f"prefetch_factor must be >= 1 or null, got {prefetch_factor}")
        for name, value in (
            ("max_agents_per_batch", max_agents_per_batch),
            ("max_agents_per_scene", max_agents_per_scene),
        ):
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be a positive number of agents or null, got {value}")
        self.paths = {"train": _as_list(train), "val": _as_list(val), "test": _as_list(test)}
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.prefetch_factor = None if prefetch_factor is None else int(prefetch_factor)
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.collate_fn = collate_fn
        self.mixture = mixture
        self.train_fraction = float(train_fraction)
        self.subset_seed = int(subset_seed)
        self.seed = int(seed)
        self.max_agents_per_batch = None if max_agents_per_batch is None else int(max_agents_per_batch)
        self.max_agents_per_scene = None if max_agents_per_scene is None else int(max_agents_per_scene)
        self.datasets: dict[str, SceneDataset] = {}
        self.train_indices: list[int] | None = None

    @property
    def use_distributed_sampler(self) -> bool:
        """The value for ``Trainer(use_distributed_sampler=...)``: always False, this module shards itself."""
        return False

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", ("train", "val", "test")):
            if self.paths[split] and split not in self.datasets:
                transform = self.train_transform if split == "train" else self.eval_transform
                dataset = SceneDataset(self.paths[split], transform)
                empty = [str(c.path) for c in dataset.caches if len(c) == 0]
                if empty and (split != "train" or self.mixture is None):
                    raise ValueError(f"{split} split has no scenes: {', '.join(empty)}")
                self.datasets[split] = dataset
                if split == "train" and self.train_fraction < 1.0:
                    self.train_indices = labelled_subset(len(dataset), self.train_fraction, self.subset_seed)
                if split == "train":
                    self._log_agent_cap()
                    if self.max_agents_per_batch is not None and self.train_costs() is None:
                        raise ValueError(
                            "batching.max_agents_per_batch needs agent counts in the cache index; re-run the "
                            f"conversion of {', '.join(str(p) for p in self.paths['train'])} to add them"
                        )

    def train_sampler(self) -> MixtureSampler | None:
        """The mixture sampler of the train split for this rank (None without a mixture)."""
        if self.mixture is None:
            return None
        return self._mixture_sampler(*reversed(dist_world()))

    def _mixture_sampler(self, rank: int, world: int) -> MixtureSampler:
        m = self.mixture
        assert m is not None
        return MixtureSampler(
            self.datasets["train"].sizes,
            m.weights,
            m.num_samples,
            replacement=m.replacement,
            seed=m.seed,
            num_replicas=world,
            rank=rank,
        )

    def train_costs(self) -> np.ndarray | None:
        """Agents per train scene (capped at ``max_agents_per_scene``) from the cache index, or None."""
        counts = []
        for cache in self.datasets["train"].caches:
            per_scene = cache.num_agents()
            if per_scene is None:
                return None
            counts.append(np.asarray(per_scene, dtype=np.int64))
        costs = np.concatenate(counts) if counts else np.zeros(0, np.int64)
        if self.max_agents_per_scene is not None:
            costs = np.minimum(costs, self.max_agents_per_scene)
        return costs

    def _log_agent_cap(self) -> None:
        """How many train scenes the per-scene cap shortens (from the index counts; at most, see count_capped)."""
        if self.max_agents_per_scene is None:
            return
        counts = [c.num_agents() for c in self.datasets["train"].caches]
        if any(c is None for c in counts):
            log.info("agent cap %d: the cache index has no agent counts to report", self.max_agents_per_scene)
            return
        per_scene = np.concatenate([np.asarray(c, np.int64) for c in counts])
        if self.train_indices is not None:
            per_scene = per_scene[self.train_indices]
        scenes, agents = count_capped(per_scene, self.max_agents_per_scene)
        log.info(
            "agent cap %d: %d of %d train scenes capped, up to %d agents left out",
            self.max_agents_per_scene, scenes, len(per_scene), agents,
        )  # fmt: skip

    def train_batch_sampler(self) -> EpochBatchSampler:
        """The resumable batch sampler of the train split (its epoch follows the attached trainer's)."""
        if "train" not in self.datasets:
            raise RuntimeError(f"no train cache configured (got paths {self.paths['train']}); call setup() first")
        if self.mixture is not None:
            order: Any = MixtureOrder(self._mixture_sampler)
        else:
            pool = self.train_indices if self.train_indices is not None else range(len(self.datasets["train"]))
            order = ShuffledOrder(pool, seed=self.seed)
        costs = None
        if self.max_agents_per_batch is not None:
            costs = self.train_costs()  # present: setup() refuses a budget without agent counts
        sampler = EpochBatchSampler(
            order,
            self.batch_size,
            seed=self.seed,
            drop_last=self.mixture is None,
            costs=costs,
            max_cost=self.max_agents_per_batch,
        )
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            sampler.set_epoch(int(trainer.current_epoch))
        return sampler

    def _loader_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "collate_fn": worker_collate(self.collate_fn, self.num_workers),
            # the workers' base seed comes from here, not from the global generator the training step uses
            "generator": torch.Generator().manual_seed(self.seed),
        }
        if self.num_workers > 0:  # DataLoader refuses both without workers
            kwargs["persistent_workers"] = self.persistent_workers
            if self.prefetch_factor is not None:
                kwargs["prefetch_factor"] = self.prefetch_factor
        return kwargs

    def train_dataloader(self) -> DataLoader:
        batch_sampler = self.train_batch_sampler()
        loader = ResumableDataLoader(self.datasets["train"], batch_sampler=batch_sampler, **self._loader_kwargs())
        if self.mixture is not None:  # the index sampler behind the batches, for introspection
            object.__setattr__(loader, "sampler", self.train_sampler())
        return loader

    def _eval_loader(self, split: str) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} cache configured (got paths {self.paths[split]}); call setup() first")
        dataset = self.datasets[split]
        world, _ = dist_world()
        if len(dataset) < world:
            raise ValueError(f"{split} split has {len(dataset)} scenes, fewer than the {world} DDP processes")
        sampler = ShardSampler(range(len(dataset)), seed=self.seed)
        return DataLoader(dataset, batch_size=self.val_batch_size, sampler=sampler, **self._loader_kwargs())

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")
