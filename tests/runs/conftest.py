"""Fixtures of the run-layer tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av1 import Av1Converter
from smartpretrain.data.synthetic import generate_av1


@pytest.fixture(scope="session")
def av1_cache_odd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic AV1 without maps: 4 train + 3 val scenes (an odd val split: 2 DDP ranks cannot split it evenly)."""
    raw = tmp_path_factory.mktemp("raw-odd")
    generate_av1(raw, "train", 4, seed=1)
    generate_av1(raw, "val", 3, seed=1, start_index=100)
    root = tmp_path_factory.mktemp("cache-odd")
    for split in ("train", "val"):
        convert_split(Av1Converter(raw, split, num_steps=50, current_step=19), root / "av1" / split,
                      ConversionSettings(progress=False))  # fmt: skip
    return root
