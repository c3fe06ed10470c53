"""Fixtures of the checkpoint tests: a download cache folder and what it holds."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def cached_files(cache: Path) -> list[Path]:
    """Every file in the cache, hidden temporary ``.part`` files included."""
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
