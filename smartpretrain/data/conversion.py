"""Parallel, sharded, resumable conversion of one raw dataset split into a :class:`SceneCache` folder.

The split's raw items (sorted) are cut into work units of ``scenes_per_part`` consecutive items; unit ``u``
becomes ``part-{u:06d}.spc``, written atomically. A re-run skips every unit whose part file is complete and
lists the same items, so a killed conversion resumes where it stopped and machines converting different shards
(``shard="i/n"`` takes the units with ``u % n == i``) of one split produce parts that merge by copying. After
the units of this run, the index and ``manifest.json`` are rebuilt from every valid part present.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
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
    atomic_write_text,
    encode_scene,
    part_name,
    read_part_footer,
    write_index,
    write_part,
)
from smartpretrain.data.converters.base import ConversionError, DropReason, SceneConverter

CONVERTER_VERSION = "1.0"
log = logging.getLogger(__name__)


class StrictModeError(RuntimeError):
    """Raised under ``strict=true`` at the first dropped or repaired scene."""


@dataclass(frozen=True)
class ConversionSettings:
    """How to run a conversion (the dataset-specific part lives in the converter)."""

    num_workers: int = 1
    scenes_per_part: int = 64
    shard: str = "0/1"
    strict: bool = False
    overwrite: bool = False
    progress: bool = True
    compression_level: int = ZSTD_LEVEL

    def shard_pair(self) -> tuple[int, int]:
        try:
            index, count = (int(x) for x in str(self.shard).split("/"))
        except ValueError:
            raise ValueError(f"shard must look like 'i/n' (e.g. 0/4), got {self.shard!r}") from None
        if not 0 <= index < count:
            raise ValueError(f"shard {self.shard!r}: need 0 <= i < n")
        return index, count


def _convert_unit(task: tuple[SceneConverter, int, list[str], Path, bool, int]) -> dict[str, Any]:
    """Worker: convert one unit's items and write its part file. Returns the part footer."""
    converter, unit, items, out_dir, strict, level = task
    start = time.process_time()
    records: list[tuple[str, bytes]] = []
    dropped: list[dict[str, str]] = []
    repairs: list[dict[str, Any]] = []
    for item in items:
        try:
            result = converter.convert(item)
        except ConversionError as exc:
            if strict:
                raise StrictModeError(f"strict=true: {exc}") from exc
            dropped.append({"item": item, "file": exc.path, "reason": exc.reason.value, "message": exc.detail})
            continue
        except Exception as exc:
            if strict:
                raise
            path = str(converter.item_path(item))
            reason = DropReason.UNEXPECTED_ERROR.value
            dropped.append({"item": item, "file": path, "reason": reason, "message": repr(exc)})
            continue
        if result.repairs and strict:
            r = result.repairs[0]
            raise StrictModeError(f"strict=true: {r.path}: {r.kind.value}: {r.detail}")
        repairs += [
            {"kind": r.kind.value, "file": r.path, "detail": r.detail, "count": r.count} for r in result.repairs
        ]
        records.append((result.scene.scenario_id, encode_scene(result.scene, level)))
    footer = {
        "unit": unit,
        "items": items,
        "dataset": converter.dataset.value,
        "split": converter.split,
        "converter_version": CONVERTER_VERSION,
        "dropped": dropped,
        "repairs": repairs,
        "cpu_seconds": time.process_time() - start,
    }
    write_part(out_dir / part_name(unit), records, footer)
    footer["num_scenes"] = len(records)
    footer["bytes"] = sum(len(b) for _, b in records)
    return footer


def _valid_footer(path: Path, items: list[str]) -> dict[str, Any] | None:
    """The footer of a finished part matching ``items``; None when absent, stale or damaged (it is redone)."""
    if not path.exists():
        return None
    try:
        footer = read_part_footer(path)
    except SchemaVersionError:
        raise
    except CacheError as exc:
        log.warning("%s; converting that unit again", exc)
        return None
    if footer.get("items") != items or footer.get("converter_version") != CONVERTER_VERSION:
        log.warning("%s: made from other raw items or converter version; converting that unit again", path)
        return None
    return footer


def _check_existing(out_dir: Path, overwrite: bool) -> None:
    manifest = out_dir / MANIFEST_NAME
    if overwrite:
        for p in out_dir.glob(f"part-*{PART_SUFFIX}"):
            p.unlink()
        for name in (INDEX_NAME, MANIFEST_NAME):
            (out_dir / name).unlink(missing_ok=True)
        return
    if manifest.exists():
        version = json.loads(manifest.read_text()).get("schema_version")
        if version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{out_dir}: existing cache has schema version {version}, this code writes version "
                f"{SCHEMA_VERSION}; pass overwrite=true to rebuild it"
            )
    for tmp in out_dir.glob(".*.tmp.*"):  # leftovers of a killed run; their units are simply redone
        tmp.unlink()


def _run_units(
    tasks: list[tuple[SceneConverter, int, list[str], Path, bool, int]], num_workers: int, bar: tqdm
) -> Iterator[dict[str, Any]]:
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


def convert_split(converter: SceneConverter, out_dir: str | Path, settings: ConversionSettings) -> dict[str, Any]:
    """Convert ``converter``'s split into ``out_dir``; returns the manifest (also written to ``manifest.json``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shard_index, shard_count = settings.shard_pair()
    _check_existing(out_dir, settings.overwrite)
    wall_start = time.perf_counter()
    items = converter.list_items()
    size = settings.scenes_per_part
    units = [items[i : i + size] for i in range(0, len(items), size)]
    mine = [u for u in range(len(units)) if u % shard_count == shard_index]
    todo = [u for u in mine if _valid_footer(out_dir / part_name(u), units[u]) is None]
    skipped = len(mine) - len(todo)
    log.info(
        "%s/%s: %d raw items in %d units; shard %s has %d units, %d already done",
        converter.dataset.value,
        converter.split,
        len(items),
        len(units),
        settings.shard,
        len(mine),
        skipped,
    )
    tasks = [(converter, u, units[u], out_dir, settings.strict, settings.compression_level) for u in todo]
    total = sum(len(units[u]) for u in todo)
    run_cpu = 0.0
    with tqdm(
        total=total, unit="scene", disable=not settings.progress, desc=f"convert {converter.dataset.value}"
    ) as bar:
        for footer in _run_units(tasks, settings.num_workers, bar):
            run_cpu += footer["cpu_seconds"]
            for d in footer["dropped"]:
                log.warning("dropped %s: %s: %s", d["file"], d["reason"], d["message"])
    wall = time.perf_counter() - wall_start
    manifest = finalize(out_dir, units, converter, settings)
    manifest["last_run"] = {
        "shard": settings.shard,
        "units_converted": len(todo),
        "units_skipped": skipped,
        "scenes_attempted": total,
        "wall_seconds": round(wall, 3),
        "cpu_seconds": round(run_cpu, 3),
        "num_workers": settings.num_workers,
    }
    previous = _read_manifest(out_dir)
    manifest["wall_seconds_total"] = round(previous.get("wall_seconds_total", 0.0) + wall, 3)
    atomic_write_text(out_dir / MANIFEST_NAME, json.dumps(manifest, indent=2))
    return manifest


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST_NAME
    return json.loads(path.read_text()) if path.exists() else {}


def finalize(
    out_dir: Path, units: list[list[str]], converter: SceneConverter, settings: ConversionSettings
) -> dict[str, Any]:
    """Rebuild ``index.parquet`` from every valid part and return the manifest describing the split."""
    parts: list[tuple[int, dict[str, Any]]] = []
    missing_units: list[int] = []
    for u, unit_items in enumerate(units):
        footer = _valid_footer(out_dir / part_name(u), unit_items)
        if footer is None:
            missing_units.append(u)
        else:
            parts.append((u, footer))
    num_scenes = write_index(out_dir, parts)
    dropped: dict[str, list[dict[str, str]]] = defaultdict(list)
    repairs: dict[str, dict[str, Any]] = {}
    cpu = 0.0
    for _, footer in parts:
        cpu += footer["cpu_seconds"]
        for d in footer["dropped"]:
            dropped[d["reason"]].append({"file": d["file"], "message": d["message"]})
        for r in footer["repairs"]:
            entry = repairs.setdefault(r["kind"], {"count": 0, "files": {}})
            entry["count"] += r["count"]
            entry["files"][r["file"]] = entry["files"].get(r["file"], 0) + r["count"]
    part_bytes = sum((out_dir / part_name(u)).stat().st_size for u, _ in parts)
    num_items = sum(len(units[u]) for u, _ in parts)
    num_dropped = sum(len(v) for v in dropped.values())
    return {
        "dataset": converter.dataset.value,
        "split": converter.split,
        "schema_version": SCHEMA_VERSION,
        "converter_version": CONVERTER_VERSION,
        "converter": converter.describe(),
        "complete": not missing_units,
        "num_raw_items": sum(len(x) for x in units),
        "num_items_processed": num_items,
        "num_scenes": num_scenes,
        "num_dropped": num_dropped,
        "dropped_by_reason": {k: len(v) for k, v in sorted(dropped.items())},
        "dropped": dict(sorted(dropped.items())),
        "repairs": dict(sorted(repairs.items())),
        "num_parts": len(parts),
        "missing_units": missing_units,
        "scenes_per_part": settings.scenes_per_part,
        "bytes_total": part_bytes,
        "bytes_per_scene": round(part_bytes / max(num_scenes, 1), 1),
        "cpu_seconds_total": round(cpu, 3),
        "cpu_ms_per_item": round(1e3 * cpu / max(num_items, 1), 3),
        "settings": asdict(settings),
    }


def summary_line(manifest: dict[str, Any], out_dir: Path) -> str:
    """One line for the end of a conversion."""
    run = manifest.get("last_run", {})
    drops = ", ".join(f"{k} {v}" for k, v in manifest["dropped_by_reason"].items()) or "none"
    repairs = ", ".join(f"{k} {v['count']}" for k, v in manifest["repairs"].items()) or "none"
    state = "complete" if manifest["complete"] else f"{len(manifest['missing_units'])} units pending (other shards?)"
    return (
        f"{manifest['dataset']}/{manifest['split']}: {manifest['num_scenes']} scenes in cache "
        f"({manifest['num_items_processed']}/{manifest['num_raw_items']} raw items, {state}); dropped: {drops}; "
        f"repaired: {repairs}; {manifest['bytes_per_scene'] / 1024:.1f} KiB/scene; this run "
        f"{run.get('scenes_attempted', 0)} items in {run.get('wall_seconds', 0):.1f} s "
        f"with {run.get('num_workers', 1)} workers -> {out_dir}"
    )
