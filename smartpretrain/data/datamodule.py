"""Serve cached scenes to Lightning: a map-style dataset over one or more caches and a LightningDataModule.

The per-sample ``transform`` is where the next stages plug in (view sampler, then a backbone adapter); this
module knows neither. A transform may be given per cache (e.g. a view length per dataset).

Sampling: without a mixture, Lightning wraps the map-style datasets in a ``DistributedSampler`` under DDP, which
works because a :class:`~smartpretrain.data.cache.SceneCache` has random access by index. With a
:class:`MixtureSpec` the train loader draws from the caches with explicit weights through
:class:`~smartpretrain.data.sampler.MixtureSampler`, which shards across ranks itself: build the Trainer with
``use_distributed_sampler=False`` (see :attr:`SceneDataModule.use_distributed_sampler`); evaluation loaders then
get a ``DistributedSampler`` from this module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from smartpretrain.data.cache import SceneCache
from smartpretrain.data.sampler import MixtureSampler
from smartpretrain.data.scene import Scene
from smartpretrain.data.worker_transfer import worker_collate

SceneTransform = Callable[[Scene], Any]
PathLike = str | Path


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

    def __getitem__(self, index: int) -> Any:
        which, local = self.locate(index)
        scene = self.caches[which][local]
        transform = self.transforms[which]
        return transform(scene) if transform is not None else scene


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
        train_transform / eval_transform: per-scene callables (view sampler + backbone adapter), or one per cache.
        collate_fn: batch collation; default keeps a list.
        mixture: draw train scenes from the caches with explicit weights (:class:`MixtureSpec`).
        train_fraction: fine-tune on this fixed fraction of the train scenes (:func:`labelled_subset`).
        subset_seed: seed of that draw (kept apart from the training seed).
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
        train_transform: SceneTransform | Sequence[SceneTransform | None] | None = None,
        eval_transform: SceneTransform | Sequence[SceneTransform | None] | None = None,
        collate_fn: Callable[[list[Any]], Any] = collate_as_list,
        mixture: MixtureSpec | None = None,
        train_fraction: float = 1.0,
        subset_seed: int = 0,
    ) -> None:
        super().__init__()
        if mixture is not None and train_fraction < 1.0:
            raise ValueError("train_fraction < 1 with a mixture: give the mixture's num_samples instead")
        self.paths = {"train": _as_list(train), "val": _as_list(val), "test": _as_list(test)}
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.collate_fn = collate_fn
        self.mixture = mixture
        self.train_fraction = float(train_fraction)
        self.subset_seed = int(subset_seed)
        self.datasets: dict[str, SceneDataset] = {}
        self.train_indices: list[int] | None = None

    @property
    def use_distributed_sampler(self) -> bool:
        """The value for ``Trainer(use_distributed_sampler=...)``: False when this module shards itself."""
        return self.mixture is None

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", ("train", "val", "test")):
            if self.paths[split] and split not in self.datasets:
                transform = self.train_transform if split == "train" else self.eval_transform
                self.datasets[split] = SceneDataset(self.paths[split], transform)
                if split == "train" and self.train_fraction < 1.0:
                    self.train_indices = labelled_subset(
                        len(self.datasets[split]), self.train_fraction, self.subset_seed
                    )

    def train_sampler(self) -> MixtureSampler | None:
        """The mixture sampler of the train split (None without a mixture)."""
        if self.mixture is None:
            return None
        m = self.mixture
        return MixtureSampler(
            self.datasets["train"].sizes, m.weights, m.num_samples, replacement=m.replacement, seed=m.seed
        )

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} cache configured (got paths {self.paths[split]}); call setup() first")
        sampler: Sampler[int] | None = None
        if self.mixture is not None:
            if split == "train":
                sampler, shuffle = self.train_sampler(), False
            elif dist.is_available() and dist.is_initialized():  # Lightning does not shard when told not to
                sampler = DistributedSampler(self.datasets[split], shuffle=False)
        dataset: Dataset = self.datasets[split]
        if split == "train" and self.train_indices is not None:
            dataset = Subset(dataset, self.train_indices)
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=worker_collate(self.collate_fn, self.num_workers),
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.val_batch_size)
