"""Serve cached scenes to Lightning: a map-style dataset over one or more caches and a LightningDataModule.

The per-sample ``transform`` is where the next stages plug in (view sampler, then a backbone adapter); this
module knows neither. Under DDP, Lightning wraps the map-style datasets in a ``DistributedSampler``, which
works because a :class:`~smartpretrain.data.cache.SceneCache` has random access by index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from torch.utils.data import DataLoader, Dataset

from smartpretrain.data.cache import SceneCache
from smartpretrain.data.scene import Scene

SceneTransform = Callable[[Scene], Any]
PathLike = str | Path


def _as_list(paths: PathLike | Sequence[PathLike] | None) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    return [Path(p) for p in paths]


class SceneDataset(Dataset):
    """The scenes of several cache splits, concatenated in the given order, each passed through ``transform``."""

    def __init__(self, caches: PathLike | Sequence[PathLike], transform: SceneTransform | None = None) -> None:
        self.caches = [SceneCache(p) for p in _as_list(caches)]
        if not self.caches:
            raise ValueError("SceneDataset needs at least one cache folder")
        self.transform = transform
        self._ends = np.cumsum([len(c) for c in self.caches])

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
        scene = self.scene(index)
        return self.transform(scene) if self.transform is not None else scene


def collate_as_list(batch: list[Any]) -> list[Any]:
    """Default collate: keep samples as a list (Scenes have ragged sizes; adapters bring their own collate)."""
    return batch


class SceneDataModule(pl.LightningDataModule):
    """Train / val / test dataloaders over cached scenes.

    Args:
        train, val, test: cache split folders (``{cache_root}/{dataset}/{split}``), one or a list each.
        batch_size: scenes per batch and per process (DDP multiplies by the world size).
        val_batch_size: defaults to ``batch_size``.
        num_workers: DataLoader worker processes.
        train_transform / eval_transform: per-scene callables (view sampler + backbone adapter).
        collate_fn: batch collation; default keeps a list.
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
        train_transform: SceneTransform | None = None,
        eval_transform: SceneTransform | None = None,
        collate_fn: Callable[[list[Any]], Any] = collate_as_list,
    ) -> None:
        super().__init__()
        self.paths = {"train": _as_list(train), "val": _as_list(val), "test": _as_list(test)}
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.collate_fn = collate_fn
        self.datasets: dict[str, SceneDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
        for split in wanted.get(stage or "", ("train", "val", "test")):
            if self.paths[split] and split not in self.datasets:
                transform = self.train_transform if split == "train" else self.eval_transform
                self.datasets[split] = SceneDataset(self.paths[split], transform)

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        if split not in self.datasets:
            raise RuntimeError(f"no {split} cache configured (got paths {self.paths[split]}); call setup() first")
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=self.collate_fn,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.val_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.val_batch_size)
