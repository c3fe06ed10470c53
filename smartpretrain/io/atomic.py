"""The one atomic-write utility: every file the framework writes goes to a temp file beside it, is fsynced, and
is renamed into place, so a reader never sees a partial file and a failure leaves only the old one.

* :func:`atomic_output` — a context manager yielding the temp path for writers that need a path (parquet,
  matplotlib, torch); :func:`atomic_write_bytes` / :func:`atomic_write_text` / :func:`atomic_write_json` on top;
* temp names are ``.{name}.tmp.{host}.{pid}.{random}`` (:func:`temp_path`), so a cleanup can tell the temps of
  dead local processes (:func:`remove_stale_temps`) from those of live or remote writers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "host_name",
    "pid_alive",
    "remove_stale_temps",
    "temp_owner",
    "temp_path",
]

_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname() or "host")
# ".{name}.tmp.{host}.{pid}.{random}"; the host has no dots (sanitised above), so the pattern parses back
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.(?P<rand>[0-9a-f]+)$")
_LEGACY_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.tmp\.(?P<pid>\d+)$")  # ".{name}.tmp.{pid}" of older code


def fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (best effort: not every platform / file system opens a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def host_name() -> str:
    """This machine's name as it appears in temp-file names and lock holders."""
    return _HOST


def temp_path(path: Path) -> Path:
    """A unique temp name beside ``path``: ``.{name}.tmp.{host}.{pid}.{random}`` (who wrote it, for the cleanup)."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}")


def temp_owner(name: str) -> tuple[str | None, int] | None:
    """``(host, pid)`` of a temp file name made by :func:`temp_path` (host None for the older ``.x.tmp.{pid}``)."""
    m = _TEMP_RE.match(name)
    if m:
        return m["host"], int(m["pid"])
    m = _LEGACY_TEMP_RE.match(name)
    return (None, int(m["pid"])) if m else None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: Path) -> int:
    """Remove temp files left in ``folder`` by dead processes of THIS host; returns how many were removed.

    Temp files of live processes (another converter or shard writing into the same folder right now) and of
    other hosts (whose processes cannot be checked from here) are left alone.
    """
    removed = 0
    for tmp in Path(folder).glob(".*.tmp.*"):
        owner = temp_owner(tmp.name)
        if owner is None:
            continue
        host, pid = owner
        if host not in (None, _HOST) or pid_alive(pid):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed += 1
    return removed


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block exits normally, fsync it and rename it to ``path``.

    On any error (or ``KeyboardInterrupt``) inside the block the temp file is removed and the error re-raised;
    ``path`` is then untouched. The writer may open the temp path itself (e.g. ``pq.write_table(t, tmp)``).
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], chunks: bytes | Sequence[bytes]) -> None:
    """Write ``chunks`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    if isinstance(chunks, (bytes, bytearray, memoryview)):
        chunks = [chunks]
    with atomic_output(path, make_parents=False) as tmp, open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, [text.encode()])


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent))
