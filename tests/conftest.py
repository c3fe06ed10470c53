"""Shared test fixtures: where the real data lives, and skips when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
AV2_FIXTURE_ROOT = SHARED / "fixtures" / "av2"
AV2_FIXTURE_ID = "0a1e6f0a-1817-4a98-b02e-db8c9327d151"
AV1_VAL = SHARED / "data" / "av1"


def require_shared(path: Path) -> Path:
    """Skip the calling test when the shared real data (../shared beside the repository) is absent."""
    if not path.exists():
        pytest.skip(f"real data not available: {path} (../shared is not beside this checkout)")
    return path


@pytest.fixture
def av2_fixture_dir() -> Path:
    return require_shared(AV2_FIXTURE_ROOT / "val" / AV2_FIXTURE_ID)
