"""The datamodule serves cached scenes, concatenates caches, and shards cleanly under a DistributedSampler."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch.utils.data import DistributedSampler

from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.data.datamodule import SceneDataModule, SceneDataset
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
