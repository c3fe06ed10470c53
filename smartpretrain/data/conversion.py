"""Parallel, sharded, resumable conversion of one raw dataset split into a :class:`SceneCache` folder.

The split's raw items (sorted) are cut into work units of ``scenes_per_part`` consecutive items; unit ``u``
becomes ``part-{u:06d}.spc``, written atomically. Machines converting different shards (``shard="i/n"`` takes the
units with ``u % n == i``) of one split write into one folder at once, or produce parts that merge by copying
(as long as their raw files agree in size and mtime, e.g. shared storage or copies made with ``rsync -a``; with
``fingerprint="content"`` only the bytes must agree).

Every part's footer records what it was made from: its raw items, a fingerprint of the converter settings
(:meth:`~smartpretrain.data.converters.base.SceneConverter.settings` plus the converter and schema versions),
a fingerprint of its raw inputs (the files :meth:`~SceneConverter.item_files` names, as size + mtime, and with
``fingerprint="content"`` also as sha256) and the crc32 of every record. A re-run skips exactly the units whose
part still matches (all records verified) and redoes the others, one log line per reason.

After the units of this run, under the exclusive lock ``.lock-index``, parts that no longer belong to any unit
(orphans, e.g. after a change of ``scenes_per_part``) are removed and ``index.parquet`` and ``manifest.json`` are
rebuilt from the parts on disk that match the current settings and raw inputs; parts of other shards that do not
(not redone yet) are left out of the index and listed as ``stale_units`` (``complete: false``). When nothing
changed, nothing is written (a finished cache can be re-checked on read-only storage).

Concurrency: a process converting shard ``i/n`` holds ``.lock-shard-{i}-of-{n}`` (a second one fails at once,
naming the holder); temp files are named ``.{name}.tmp.{host}.{pid}.{random}`` and only those of dead processes
of this host are cleaned up at start.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import multiprocessing as mp
import operator
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from smartpretrain.data.cache import (
    INDEX_NAME,
    MANIFEST_NAME,
    PART_SUFFIX,
    SCHEMA_VERSION,
    ZSTD_LEVEL,
    CacheError,
    SchemaVersionError,
    check_part_records,
    encode_scene,
    footer_records,
    part_name,
    part_unit,
    read_part_footer,
    update_index,
    write_failure,
    write_part,
)
from smartpretrain.data.converters.base import DroppedItem, SceneConverter
from smartpretrain.data.converters.base import StrictModeError as StrictModeError  # raised by convert_split
from smartpretrain.io.atomic import atomic_write_text, host_name, pid_alive, remove_stale_temps

CONVERTER_VERSION = "1.0"
FINGERPRINT_MODES = ("stat", "content")
INDEX_LOCK = ".lock-index"
log = logging.getLogger(__name__)

# why a part on disk is not used (the log says "N parts redone: <reason>")
DAMAGED = "part file damaged"
BAD_RECORD = "record checksum mismatch"
OTHER_ITEMS = "made from other raw items"
OTHER_VERSION = "written by another converter version"
NO_FINGERPRINT = "written without fingerprints (older code)"
SETTINGS_CHANGED = "converter settings changed"
INPUTS_CHANGED = "raw inputs changed"
OTHER_SCHEMA = "written with another cache schema version"
MODE_CHANGED = "raw inputs not fingerprinted by content"


class ConversionLockedError(CacheError):
    """Another process is converting the same shard of the same split."""


@dataclass(frozen=True)
class ConversionSettings:
    """How to run a conversion (the dataset-specific part lives in the converter).

    ``fingerprint``: how a part's raw inputs are fingerprinted: ``"stat"`` (size + mtime of every file, cheap) or
    ``"content"`` (also the sha256 of every file: reads all raw data on every run, for storage whose mtimes are
    not reliable). Every option is checked here, before any work.
    """

    num_workers: int = 1
    scenes_per_part: int = 64
    shard: str = "0/1"
    strict: bool = False
    overwrite: bool = False
    progress: bool = True
    compression_level: int = ZSTD_LEVEL
    fingerprint: str = "stat"

    def __post_init__(self) -> None:
        for name, low in (("scenes_per_part", 1), ("num_workers", 0)):
            value = getattr(self, name)
            try:
                number = operator.index(value)
            except TypeError:
                number = None
            if isinstance(value, bool) or number is None or number < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        level = self.compression_level
        if isinstance(level, bool) or not isinstance(level, int) or not -7 <= level <= 22:
            raise ValueError(f"compression_level must be an integer zstd level in [-7, 22], got {level!r}")
        if self.fingerprint not in FINGERPRINT_MODES:
            raise ValueError(f"fingerprint must be one of {', '.join(FINGERPRINT_MODES)}, got {self.fingerprint!r}")
        self.shard_pair()

    def shard_pair(self) -> tuple[int, int]:
        try:
            index, count = (int(x) for x in str(self.shard).split("/"))
        except ValueError:
            raise ValueError(f"shard must look like 'i/n' (e.g. 0/4), got {self.shard!r}") from None
        if not 0 <= index < count:
            raise ValueError(f"shard {self.shard!r}: need 0 <= i < n")
        return index, count


# ---------------------------------------------------------------------------------------------------------------
# Fingerprints


def settings_fingerprint(converter: SceneConverter) -> str:
    """Fingerprint of everything besides the raw inputs that determines a part: converter settings and versions."""
    blob = json.dumps(
        {
            "converter": converter.settings_fingerprint(),
            "converter_version": CONVERTER_VERSION,
            "schema_version": SCHEMA_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def inputs_fingerprint(
    converter: SceneConverter, items: list[str], mode: str, memo: dict[Any, Any] | None = None
) -> dict[str, str]:
    """Fingerprint of the raw files ``items`` read: ``{"stat": ..}`` (size, mtime_ns) and, for ``mode="content"``,
    ``{"content": ..}`` (sha256). Paths enter relative to ``raw_root`` so that mounts elsewhere agree; a missing or
    unreadable file enters as such. ``memo`` caches per-file results within one run."""
    memo = {} if memo is None else memo
    root = Path(os.path.abspath(converter.raw_root))
    base = root.parent if root.is_file() else root
    stat_h = hashlib.sha256()
    content_h = hashlib.sha256() if mode == "content" else None
    for item in items:
        try:
            files = converter.item_files(item)
        except OSError as exc:
            files, listing_error = [], f"unlistable: {exc.errno}"
        else:
            listing_error = None
        stat_rows: list[Any] = [item, listing_error]
        content_rows: list[Any] = [item, listing_error]
        for path in files:
            absolute = Path(os.path.abspath(path))
            try:
                name = absolute.relative_to(base).as_posix()
            except ValueError:
                name = str(absolute)
            key = ("stat", str(absolute))
            if key not in memo:
                try:
                    st = os.stat(absolute)
                    memo[key] = [st.st_size, st.st_mtime_ns]
                except FileNotFoundError:
                    memo[key] = "missing"
                except OSError as exc:
                    memo[key] = f"unreadable: {exc.errno}"
            state = memo[key]
            stat_rows.append([name, state])
            if content_h is not None:
                ckey = ("content", str(absolute), json.dumps(state))
                if ckey not in memo:
                    try:
                        memo[ckey] = _sha256_file(absolute) if isinstance(state, list) else state
                    except OSError as exc:
                        memo[ckey] = f"unreadable: {exc.errno}"
                content_rows.append([name, memo[ckey]])
        stat_h.update(json.dumps(stat_rows).encode() + b"\n")
        if content_h is not None:
            content_h.update(json.dumps(content_rows).encode() + b"\n")
    out = {"stat": stat_h.hexdigest()[:32]}
    if content_h is not None:
        out["content"] = content_h.hexdigest()[:32]
    return out


@dataclass(frozen=True)
class _Expected:
    """What a part must have been made with to be used as it is."""

    settings: str
    mode: str


def _check_part(
    path: Path,
    items: list[str],
    converter: SceneConverter,
    expected: _Expected,
    memo: dict[Any, Any],
    verify_records: bool,
    strict_schema: bool = True,
) -> tuple[dict[str, Any] | None, str | None, str]:
    """``(footer, None, "")`` for a part that can be used as it is, else ``(None, reason, detail)``; reason None
    when there is no part file at all."""
    if not path.exists():
        return None, None, ""
    try:
        footer = read_part_footer(path)
    except SchemaVersionError as exc:
        if strict_schema:
            raise
        return None, OTHER_SCHEMA, str(exc)
    except CacheError as exc:
        return None, DAMAGED, str(exc)
    if footer.get("items") != items:
        return None, OTHER_ITEMS, path.name
    if footer.get("converter_version") != CONVERTER_VERSION:
        return None, OTHER_VERSION, f"{path.name}: {footer.get('converter_version')}"
    if "settings_fingerprint" not in footer or "inputs" not in footer:
        return None, NO_FINGERPRINT, path.name
    if footer["settings_fingerprint"] != expected.settings:
        return None, SETTINGS_CHANGED, path.name
    stored = footer["inputs"]
    if expected.mode == "content" and "content" not in stored:
        return None, MODE_CHANGED, path.name
    current = inputs_fingerprint(converter, items, expected.mode, memo)
    if stored.get(expected.mode) != current[expected.mode]:  # content mode: an identical rewrite is no change
        return None, INPUTS_CHANGED, path.name
    if verify_records:
        try:
            check_part_records(path, footer)
        except CacheError as exc:
            return None, BAD_RECORD, str(exc)
    return footer, None, ""


# ---------------------------------------------------------------------------------------------------------------
# Locks


def _open_lock_file(path: Path) -> tuple[int | None, bool]:
    """``(fd, writable)``; fd None where the lock file cannot be opened at all (read-only storage without it)."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o666), True
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise
    try:
        return os.open(path, os.O_RDONLY), False
    except OSError:
        return None, False


class _FileLock:
    """An ``flock`` on a lock file in the split folder (per open file, so it also excludes within one process).

    On storage where the lock file can neither be created nor locked (read-only), no lock is taken: nothing can be
    written there anyway, and a run that would write fails at its first write with a clear error.
    """

    def __init__(self, path: Path, blocking: bool) -> None:
        self.path = path
        self.fd, self.writable = _open_lock_file(path)
        self.announced = False
        if self.fd is None:
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = self.holder()
            os.close(self.fd)
            self.fd = None
            raise _HeldError(holder) from None
        except OSError as exc:  # e.g. locks not supported on a read-only network mount
            log.debug("%s: not locked (%s)", path, exc)
            os.close(self.fd)
            self.fd = None

    def holder(self) -> str:
        """Who holds the lock, as recorded in the lock file."""
        try:
            info = json.loads(os.pread(self.fd, 4096, 0).decode() or "{}") if self.fd is not None else {}
        except (OSError, ValueError):
            info = {}
        pid, host, started = info.get("pid"), info.get("host"), info.get("started")
        if pid is None or (host == host_name() and not pid_alive(int(pid))):
            return "holder not recorded yet: it is still checking the parts"
        return f"pid {pid}, host {host}, started {started}"

    def announce(self) -> None:
        """Record this process as the holder (done only before the first write, so a run that finds nothing to do
        writes nothing)."""
        if self.fd is None or not self.writable or self.announced:
            return
        info = {"pid": os.getpid(), "host": host_name(), "started": datetime.now().isoformat(timespec="seconds")}
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, json.dumps(info).encode(), 0)
        self.announced = True

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> _FileLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class _HeldError(Exception):
    """A non-blocking lock attempt found the lock taken (carries the holder text)."""


def shard_lock_path(out_dir: Path, index: int, count: int) -> Path:
    return Path(out_dir) / f".lock-shard-{index}-of-{count}"


def _lock_shard(out_dir: Path, index: int, count: int, label: str) -> _FileLock:
    path = shard_lock_path(out_dir, index, count)
    try:
        return _FileLock(path, blocking=False)
    except _HeldError as held:
        raise ConversionLockedError(
            f"{path}: shard {index}/{count} of {label} is already being converted by another process "
            f"({held}); wait for it to finish or stop it"
        ) from None


# ---------------------------------------------------------------------------------------------------------------
# Work units


_Task = tuple[SceneConverter, int, list[str], Path, bool, int, str, str]


def _convert_unit(task: _Task) -> dict[str, Any]:
    """Worker: convert one unit's items and write its part file. Returns the part footer (as written)."""
    converter, unit, items, out_dir, strict, level, settings_fp, mode = task
    start = time.process_time()
    inputs = inputs_fingerprint(converter, items, mode)  # before reading: a file changed meanwhile is redone later
    records: list[tuple[str, bytes, int, int, int]] = []
    dropped: list[dict[str, str]] = []
    repairs: list[dict[str, Any]] = []
    for item in items:
        result = converter.convert_or_drop(item, strict)
        if isinstance(result, DroppedItem):
            dropped.append(result.record())
            continue
        repairs += [r.record() for r in result.repairs]
        scene = result.scene
        blob = encode_scene(scene, level)
        records.append((scene.scenario_id, blob, scene.agents.num_agents, scene.num_steps, scene.current_step))
    footer = {
        "unit": unit,
        "items": items,
        "dataset": converter.dataset.value,
        "split": converter.split,
        "converter_version": CONVERTER_VERSION,
        "settings_fingerprint": settings_fp,
        "converter": converter.describe(),
        "converter_settings": converter.settings(),
        "inputs": {"mode": mode, **inputs},
        "dropped": dropped,
        "repairs": repairs,
        "cpu_seconds": time.process_time() - start,
    }
    path = out_dir / part_name(unit)
    try:
        return write_part(path, records, footer)
    except OSError as exc:
        raise write_failure(path, exc) from None


def _remove_parts(paths: list[Path]) -> None:
    for p in paths:
        try:
            p.unlink(missing_ok=True)
        except OSError as exc:
            raise write_failure(p, exc) from None


def _check_existing(out_dir: Path, settings: ConversionSettings, lock: _FileLock) -> None:
    index, count = settings.shard_pair()
    manifest = out_dir / MANIFEST_NAME
    if settings.overwrite:
        # this shard's parts only: other shards may be converting into the same folder right now
        lock.announce()
        units = [(p, part_unit(p.name)) for p in out_dir.glob(f"part-*{PART_SUFFIX}")]
        mine = [p for p, u in units if u is not None and u % count == index]
        _remove_parts(mine)
        with _FileLock(out_dir / INDEX_LOCK, blocking=True):
            _remove_parts([out_dir / INDEX_NAME, manifest])
        remove_stale_temps(out_dir)
        return
    if manifest.exists():
        version = json.loads(manifest.read_text()).get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{out_dir}: existing cache has schema version {version}, this code writes version "
                f"{SCHEMA_VERSION}; pass overwrite=true to rebuild it"
            )
    removed = remove_stale_temps(out_dir)  # leftovers of killed runs on this host; their units are simply redone
    if removed:
        log.info("%s: removed %d temp files of dead processes", out_dir, removed)


def _run_units(tasks: list[_Task], num_workers: int, bar: tqdm) -> Iterator[dict[str, Any]]:
    if num_workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield _convert_unit(task)
            bar.update(len(task[2]))
        return
    ctx = mp.get_context("spawn")  # no fork: pyarrow's thread pools do not survive it
    with ctx.Pool(min(num_workers, len(tasks))) as pool:
        for footer in pool.imap_unordered(_convert_unit, tasks):
            yield footer
            bar.update(len(footer["items"]))


def _log_reasons(reasons: dict[str, list[tuple[int, str]]], what: str) -> None:
    for reason, entries in reasons.items():
        units = ", ".join(str(u) for u, _ in entries[:8]) + (", ..." if len(entries) > 8 else "")
        detail = entries[0][1]
        extra = f"; e.g. {detail}" if detail and detail != part_name(entries[0][0]) else ""
        log.warning("%d parts %s: %s (units %s%s)", len(entries), what, reason, units, extra)


def convert_split(converter: SceneConverter, out_dir: str | Path, settings: ConversionSettings) -> dict[str, Any]:
    """Convert ``converter``'s split into ``out_dir``; returns the manifest (also written to ``manifest.json``
    when anything changed; ``manifest["last_run"]["cache_changed"]`` says whether this run wrote anything)."""
    out_dir = Path(out_dir)
    shard_index, shard_count = settings.shard_pair()
    if not out_dir.is_dir():
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_failure(out_dir, exc) from None
    label = f"{converter.dataset.value}/{converter.split}"
    wall_start = time.perf_counter()
    with _lock_shard(out_dir, shard_index, shard_count, label) as lock:
        _check_existing(out_dir, settings, lock)
        items = converter.list_items()
        size = settings.scenes_per_part
        units = [items[i : i + size] for i in range(0, len(items), size)]
        mine = [u for u in range(len(units)) if u % shard_count == shard_index]
        expected = _Expected(settings_fingerprint(converter), settings.fingerprint)
        memo: dict[Any, Any] = {}
        known: dict[int, dict[str, Any]] = {}
        todo: list[int] = []
        reasons: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for u in mine:
            footer, reason, detail = _check_part(
                out_dir / part_name(u), units[u], converter, expected, memo, verify_records=True
            )
            if footer is not None:
                known[u] = footer
                continue
            todo.append(u)
            if reason is not None:
                reasons[reason].append((u, detail))
        skipped = len(mine) - len(todo)
        log.info(
            "%s: %d raw items in %d units; shard %s has %d units, %d already done",
            label,
            len(items),
            len(units),
            settings.shard,
            len(mine),
            skipped,
        )
        _log_reasons(reasons, "redone")
        if todo:
            lock.announce()
        tasks: list[_Task] = [
            (converter, u, units[u], out_dir, settings.strict, settings.compression_level, expected.settings,
             settings.fingerprint)
            for u in todo
        ]  # fmt: skip
        total = sum(len(units[u]) for u in todo)
        run_cpu = 0.0
        with tqdm(total=total, unit="scene", disable=not settings.progress, desc=f"convert {label}") as bar:
            for footer in _run_units(tasks, settings.num_workers, bar):
                run_cpu += footer["cpu_seconds"]
                known[footer["unit"]] = footer
                for d in footer["dropped"]:
                    log.warning("dropped %s: %s: %s", d["file"], d["reason"], d["message"])
        run = {
            "shard": settings.shard,
            "units_converted": len(todo),
            "units_skipped": skipped,
            "scenes_attempted": total,
            "wall_seconds": 0.0,
            "cpu_seconds": round(run_cpu, 3),
            "num_workers": settings.num_workers,
            "redone_by_reason": {k: len(v) for k, v in sorted(reasons.items())},
        }
        return _finalize(out_dir, units, converter, settings, known, expected, memo, lock, run, wall_start)


def _write_text(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise write_failure(path, exc) from None


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST_NAME
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        return {}


_RUN_KEYS = ("last_run", "wall_seconds_total", "settings")  # describe the last run that wrote, not the parts


def finalize(
    out_dir: Path, units: list[list[str]], converter: SceneConverter, settings: ConversionSettings
) -> dict[str, Any]:
    """Rebuild ``index.parquet`` from every part matching the current settings and raw inputs (removing orphan
    parts) and return the manifest describing the split; ``manifest.json`` is written by :func:`convert_split`."""
    expected = _Expected(settings_fingerprint(converter), settings.fingerprint)
    return _finalize(Path(out_dir), units, converter, settings, {}, expected, {}, None, None, time.perf_counter())


def _finalize(
    out_dir: Path,
    units: list[list[str]],
    converter: SceneConverter,
    settings: ConversionSettings,
    known: dict[int, dict[str, Any]],
    expected: _Expected,
    memo: dict[Any, Any],
    lock: _FileLock | None,
    run: dict[str, Any] | None,
    wall_start: float,
) -> dict[str, Any]:
    """Under ``.lock-index``: remove orphan parts, update the index and (with ``run``, the ``last_run`` record of
    :func:`convert_split`) the manifest, each only when it changed. ``known`` are the footers of this run's shard
    (verified or just written); other units are checked here (not their records: their shard does that)."""
    shard_index, shard_count = settings.shard_pair()
    with _FileLock(out_dir / INDEX_LOCK, blocking=True):
        parts: list[tuple[int, dict[str, Any]]] = []
        missing_units: list[int] = []
        stale: dict[str, list[int]] = defaultdict(list)
        orphans: list[Path] = []
        foreign: dict[int, list[Path]] = defaultdict(list)  # other shards' parts made from other raw items
        for u, unit_items in enumerate(units):
            footer = known.get(u)
            if footer is None:
                path = out_dir / part_name(u)
                footer, reason, _ = _check_part(
                    path, unit_items, converter, expected, memo, verify_records=False, strict_schema=False
                )
                if footer is None:
                    if reason == OTHER_ITEMS:
                        if u % shard_count == shard_index:
                            orphans.append(path)
                        else:
                            foreign[u % shard_count].append(path)
                        missing_units.append(u)
                    elif reason in (None, DAMAGED):
                        missing_units.append(u)
                    else:
                        stale[reason].append(u)
                    continue
            parts.append((u, footer))
        for p in out_dir.glob(f"part-*{PART_SUFFIX}"):
            unit = part_unit(p.name)
            if unit is not None and unit >= len(units):
                orphans.append(p)
        if orphans and lock is not None:
            lock.announce()
        _remove_parts(orphans)
        for other, paths in sorted(foreign.items()):
            try:  # only while nobody converts that shard: it may be rewriting these parts right now
                with _FileLock(shard_lock_path(out_dir, other, shard_count), blocking=False):
                    _remove_parts(paths)
                    orphans += paths
            except _HeldError:
                log.info("%d orphan parts of shard %d/%d left to that shard's run", len(paths), other, shard_count)
        if orphans:
            names = ", ".join(p.name for p in sorted(orphans)[:6]) + (", ..." if len(orphans) > 6 else "")
            log.warning(
                "removed %d orphan parts (beyond the %d units of this split or made from other raw items): %s",
                len(orphans),
                len(units),
                names,
            )
        try:
            num_scenes, changed = update_index(out_dir, parts)
        except OSError as exc:
            raise write_failure(out_dir / INDEX_NAME, exc) from None
        changed = changed or bool(orphans)
        manifest = _manifest(out_dir, units, converter, settings, parts, missing_units, stale, num_scenes)
        previous = _read_manifest(out_dir)
        if not changed:
            core = json.loads(json.dumps(manifest))
            changed = _without_run_keys(previous) != _without_run_keys(core)
        if run is None:
            return manifest
        changed = changed or run["units_converted"] > 0
        wall = time.perf_counter() - wall_start
        manifest["last_run"] = {
            **run,
            "wall_seconds": round(wall, 3),
            "orphans_removed": len(orphans),
            "cache_changed": changed,
        }
        if changed:
            manifest["wall_seconds_total"] = round(previous.get("wall_seconds_total", 0.0) + wall, 3)
            _write_text(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=2))
        else:  # nothing on disk changed: write nothing (the cache may be on read-only storage)
            manifest["wall_seconds_total"] = previous.get("wall_seconds_total", 0.0)
        return manifest


def _without_run_keys(manifest: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in manifest.items() if k not in _RUN_KEYS}


def _range(values: list[int]) -> dict[str, int] | None:
    return {"min": min(values), "max": max(values)} if values else None


def _manifest(
    out_dir: Path,
    units: list[list[str]],
    converter: SceneConverter,
    settings: ConversionSettings,
    parts: list[tuple[int, dict[str, Any]]],
    missing_units: list[int],
    stale: dict[str, list[int]],
    num_scenes: int,
) -> dict[str, Any]:
    dropped: dict[str, list[dict[str, str]]] = defaultdict(list)
    repairs: dict[str, dict[str, Any]] = {}
    cpu = 0.0
    steps: list[int] = []
    current: list[int] = []
    agents: list[int] = []
    describes: dict[str, dict[str, Any]] = {}
    fingerprints: set[str] = set()
    for _, footer in parts:
        cpu += footer["cpu_seconds"]
        for d in footer["dropped"]:
            dropped[d["reason"]].append({"file": d["file"], "message": d["message"]})
        for r in footer["repairs"]:
            entry = repairs.setdefault(r["kind"], {"count": 0, "files": {}})
            entry["count"] += r["count"]
            entry["files"][r["file"]] = entry["files"].get(r["file"], 0) + r["count"]
        for e in footer_records(footer):
            steps.append(e.num_steps)
            current.append(e.current_step)
            agents.append(e.num_agents)
        describes.setdefault(json.dumps(footer["converter"], sort_keys=True), footer["converter"])
        fingerprints.add(footer["settings_fingerprint"])
    part_bytes = sum((out_dir / part_name(u)).stat().st_size for u, _ in parts)
    num_items = sum(len(units[u]) for u, _ in parts)
    num_dropped = sum(len(v) for v in dropped.values())
    stale_units = sorted(u for v in stale.values() for u in v)
    converter_desc: Any = None
    if len(describes) == 1:
        converter_desc = next(iter(describes.values()))
    elif describes:  # same settings, e.g. raw data mounted at other paths on other machines
        converter_desc = list(describes.values())
    manifest = {
        "dataset": converter.dataset.value,
        "split": converter.split,
        "schema_version": SCHEMA_VERSION,
        "converter_version": CONVERTER_VERSION,
        "converter": converter_desc,
        "settings_fingerprint": next(iter(fingerprints)) if len(fingerprints) == 1 else sorted(fingerprints) or None,
        "complete": not missing_units and not stale_units,
        "num_raw_items": sum(len(x) for x in units),
        "num_items_processed": num_items,
        "num_scenes": num_scenes,
        "num_dropped": num_dropped,
        "dropped_by_reason": {k: len(v) for k, v in sorted(dropped.items())},
        "dropped": dict(sorted(dropped.items())),
        "repairs": dict(sorted(repairs.items())),
        "num_parts": len(parts),
        "missing_units": missing_units,
        "stale_units": stale_units,
        "stale_by_reason": {k: sorted(v) for k, v in sorted(stale.items())},
        "scenes_per_part": settings.scenes_per_part,
        "num_steps": _range(steps),
        "current_step": _range(current),
        "max_agents": max(agents) if agents else None,
        "bytes_total": part_bytes,
        "bytes_per_scene": round(part_bytes / max(num_scenes, 1), 1),
        "cpu_seconds_total": round(cpu, 3),
        "cpu_ms_per_item": round(1e3 * cpu / max(num_items, 1), 3),
        "settings": asdict(settings),
    }
    accounting = converter.accounting()
    if accounting is not None:
        manifest["accounting"] = accounting
    return manifest


def summary_line(manifest: dict[str, Any], out_dir: Path) -> str:
    """One line for the end of a conversion."""
    run = manifest.get("last_run", {})
    drops = ", ".join(f"{k} {v}" for k, v in manifest["dropped_by_reason"].items()) or "none"
    repairs = ", ".join(f"{k} {v['count']}" for k, v in manifest["repairs"].items()) or "none"
    missing, stale = len(manifest["missing_units"]), len(manifest.get("stale_units", []))
    if manifest["complete"]:
        state = "complete"
    elif stale:
        state = f"{missing} units pending, {stale} stale (other shards not redone yet?)"
    else:
        state = f"{missing} units pending (other shards?)"
    return (
        f"{manifest['dataset']}/{manifest['split']}: {manifest['num_scenes']} scenes in cache "
        f"({manifest['num_items_processed']}/{manifest['num_raw_items']} raw items, {state}); dropped: {drops}; "
        f"repaired: {repairs}; {manifest['bytes_per_scene'] / 1024:.1f} KiB/scene; this run "
        f"{run.get('scenes_attempted', 0)} items in {run.get('wall_seconds', 0):.1f} s "
        f"with {run.get('num_workers', 1)} workers -> {out_dir}"
    )
