"""Shared test fixtures: where the real data lives, and skips when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
AV2_FIXTURE_ROOT = SHARED / "fixtures" / "av2"
AV2_FIXTURE_ID = "0a1e6f0a-1817-4a98-b02e-db8c9327d151"
AV1_VAL = SHARED / "data" / "av1"
ETH_UCY_RAW = SHARED / "data" / "eth_ucy"


def require_shared(path: Path) -> Path:
    """Skip the calling test when the shared real data (../shared beside the repository) is absent."""
    if not path.exists():
        pytest.skip(f"real data not available: {path} (../shared is not beside this checkout)")
    return path


@pytest.fixture
def av2_fixture_dir() -> Path:
    return require_shared(AV2_FIXTURE_ROOT / "val" / AV2_FIXTURE_ID)


def make_av1_cache(tmp_path_factory: pytest.TempPathFactory, num_train: int, num_val: int, seed: int) -> Path:
    """A synthetic AV1 cache with maps (map radius 40 m): ``{root}/av1/{train,val}``, val scenes numbered from 100."""
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.av1 import Av1Converter
    from smartpretrain.data.synthetic import generate_av1

    raw = tmp_path_factory.mktemp("raw")
    generate_av1(raw, "train", num_train, seed=seed, with_map=True)
    generate_av1(raw, "val", num_val, seed=seed, with_map=True, start_index=100)
    root = tmp_path_factory.mktemp("cache")
    for split in ("train", "val"):
        converter = Av1Converter(raw, split, num_steps=50, current_step=19, map_root=raw / "map_files", map_radius=40)
        convert_split(converter, root / "av1" / split, ConversionSettings(progress=False))
    return root


@pytest.fixture(scope="session")
def av1_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic AV1 cache with maps: ``{root}/av1/{train,val}`` (8 + 4 scenes; map radius 40 m)."""
    return make_av1_cache(tmp_path_factory, 8, 4, seed=0)
