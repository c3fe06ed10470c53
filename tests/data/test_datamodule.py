"""The datamodule serves cached scenes, concatenates caches, and shards cleanly under a DistributedSampler; its
loader options (pinned memory, persistent workers, prefetching), and persistent workers change no sample."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.data.datamodule import MixtureSpec, SceneDataModule, SceneDataset, labelled_subset
from smartpretrain.data.replicate import replicate_av2_scenario
from smartpretrain.data.scene import Scene
from tests.conftest import AV2_FIXTURE_ID, AV2_FIXTURE_ROOT


@pytest.fixture(scope="module")
def two_caches(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not AV2_FIXTURE_ROOT.exists():
        pytest.skip(f"real data not available: {AV2_FIXTURE_ROOT}")
    tmp = tmp_path_factory.mktemp("dm")
    src = AV2_FIXTURE_ROOT / "val" / AV2_FIXTURE_ID
    replicate_av2_scenario(src, tmp / "raw", "train", 7)
    replicate_av2_scenario(src, tmp / "raw", "val", 1)
    settings = ConversionSettings(scenes_per_part=3, progress=False)
    convert_split(Av2Converter(tmp / "raw", "train"), tmp / "c" / "train", settings)
    convert_split(Av2Converter(AV2_FIXTURE_ROOT, "val"), tmp / "c" / "val", settings)
    return tmp / "c" / "train", tmp / "c" / "val"


def test_dataset_concatenates_and_transforms(two_caches: tuple[Path, Path]) -> None:
    train, val = two_caches
    ds = SceneDataset([train, val], transform=lambda s: (s.scenario_id, s.agents.num_agents))
    assert len(ds) == 8
    assert ds[7] == (AV2_FIXTURE_ID, 58)
    assert ds.locate(6) == (0, 6) and ds.locate(7) == (1, 0)
    with pytest.raises(IndexError):
        ds.locate(8)


def test_datamodule_loaders(two_caches: tuple[Path, Path]) -> None:
    train, val = two_caches
    dm = SceneDataModule(train=train, val=val, batch_size=3, num_workers=0)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert [len(b) for b in batches] == [3, 3]  # drop_last in training
    assert all(isinstance(s, Scene) for b in batches for s in b)
    (val_batch,) = list(dm.val_dataloader())
    assert [s.scenario_id for s in val_batch] == [AV2_FIXTURE_ID]
    with pytest.raises(RuntimeError, match="no test cache"):
        dm.test_dataloader()


def test_distributed_sampler_partitions_the_cache(two_caches: tuple[Path, Path]) -> None:
    ds = SceneDataset(two_caches[0], transform=lambda s: s.scenario_id)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3, drop_last=True)
        seen.append([ds[i] for i in sampler])
    assert len(seen[0]) == len(seen[1]) == 3
    assert not set(seen[0]) & set(seen[1])


def test_labelled_subset_is_fixed_nested_and_independent_of_training_seed() -> None:
    ten = labelled_subset(1956, 0.1, seed=0)
    assert len(ten) == 196 and ten == sorted(set(ten)) and all(0 <= i < 1956 for i in ten)
    assert labelled_subset(1956, 0.1, seed=0) == ten  # same draw every call (every arm, every training seed)
    assert set(ten) <= set(labelled_subset(1956, 0.5, seed=0))  # nested fractions
    assert labelled_subset(1956, 0.1, seed=1) != ten
    assert labelled_subset(1956, 1.0) == list(range(1956))
    assert labelled_subset(5, 0.01) == labelled_subset(5, 0.01) and len(labelled_subset(5, 0.01)) == 1
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="train fraction"):
            labelled_subset(10, bad)


def test_datamodule_train_fraction(two_caches: tuple[Path, Path]) -> None:
    train, val = two_caches
    dm = SceneDataModule(train=train, val=val, batch_size=1, num_workers=0, train_fraction=3 / 7, subset_seed=4)
    dm.setup("fit")
    ids = [b[0].scenario_id for b in dm.train_dataloader()]
    full = [dm.datasets["train"].scene(i).scenario_id for i in range(7)]
    assert len(ids) == 3 and sorted(ids) == sorted(full[i] for i in labelled_subset(7, 3 / 7, seed=4))
    assert len(list(dm.val_dataloader())) == 1  # evaluation keeps every scene
    with pytest.raises(ValueError, match="mixture"):
        SceneDataModule(train=[train, val], mixture=MixtureSpec(), train_fraction=0.5)


def test_loader_options_reach_the_loaders_only_where_dataloader_takes_them() -> None:
    main = SceneDataModule(num_workers=0, pin_memory=True, persistent_workers=True, prefetch_factor=4)
    kwargs = main._loader_kwargs()
    assert kwargs["pin_memory"] is True
    assert "persistent_workers" not in kwargs and "prefetch_factor" not in kwargs  # DataLoader refuses them here
    workers = SceneDataModule(num_workers=2, persistent_workers=False, prefetch_factor=4)._loader_kwargs()
    assert (workers["pin_memory"], workers["persistent_workers"], workers["prefetch_factor"]) == (False, False, 4)
    default = SceneDataModule(num_workers=2)._loader_kwargs()
    assert default["persistent_workers"] is True and "prefetch_factor" not in default  # as before the options
    with pytest.raises(ValueError, match="prefetch_factor must be >= 1 or null, got 0"):
        SceneDataModule(prefetch_factor=0)


class _RandomDraws:
    """A transform that draws from every generator a real one may use (numpy, random, torch)."""

    def __call__(self, scene: Scene) -> tuple[str, float, float, float]:
        return scene.scenario_id, float(np.random.rand()), random.random(), float(torch.rand(()))


def _two_epochs(dm: SceneDataModule) -> tuple[list[list[Any]], list[int]]:
    """Every sample of epochs 0 and 1 of one train loader, moved between epochs as Lightning moves it, and the
    identity of the loader's worker iterator after each epoch."""
    loader = dm.train_dataloader()
    samples, iterators = [], []
    for epoch in range(2):
        loader.batch_sampler.sampler.set_epoch(epoch)
        samples.append([sample for batch in loader for sample in batch])
        iterators.append(id(loader._iterator))
    return samples, iterators


def test_persistent_workers_change_no_sample_of_any_epoch(av1_cache: Path) -> None:
    """The order and every scene's seed come from the main process's batch sampler, per (seed, epoch, scene): a
    worker kept alive across epochs draws what the main process draws."""
    common = {"train": av1_cache / "av1" / "train", "batch_size": 2, "train_transform": _RandomDraws(), "seed": 3}
    in_main = SceneDataModule(num_workers=0, **common)
    kept = SceneDataModule(num_workers=1, persistent_workers=True, prefetch_factor=1, **common)
    for dm in (in_main, kept):
        dm.setup("fit")
    expected, _ = _two_epochs(in_main)
    got, iterators = _two_epochs(kept)
    assert iterators[0] == iterators[1] != id(None)  # the same worker served both epochs
    assert got == expected
    assert expected[0] != expected[1] and len(expected[0]) == 8  # a new order and new draws per epoch
