"""Fixtures of the checkpoint tests: a download cache folder and what it holds."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def cached_files(cache: Path) -> list[Path]:
    """Every file in the cache, hidden temporary files (``.{name}.tmp.{host}.{pid}.{random}``) included."""
    return [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []


@contextmanager
def serving(httpd, thread: threading.Thread, before_shutdown: Callable[[], None] | None = None) -> Iterator[None]:
    """Run a test HTTP server's thread for the duration of the block, then shut it down and join it."""
    thread.start()
    try:
        yield
    finally:
        if before_shutdown is not None:
            before_shutdown()
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
