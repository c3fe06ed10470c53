"""Compact, versioned on-disk cache of converted scenes, with random access by index.

Layout of one dataset split (``{cache_root}/{dataset}/{split}/``)::

    part-000000.spc ...   scenes of one work unit (``scenes_per_part`` consecutive raw items), written atomically
    index.parquet         scenario_id, part, offset, length, crc32, num_agents of every scene (row order = cache
                          index order; crc32 / num_agents are absent in caches written before they were added)
    manifest.json         counts, dropped scenes by reason with file names, repairs, versions, fingerprints, wall time
    convert_config.yaml   the resolved configuration of the last conversion run that changed the split
    .lock-*               lock files of the conversion (see :mod:`smartpretrain.data.conversion`)

A part file is ``MAGIC | record ... | footer JSON | uint64 footer length | END_MAGIC``. The footer's ``records``
table holds ``[scenario_id, offset, length, crc32, num_agents, num_steps, current_step]`` per record (older parts:
only the first three). A record is one scene:
a small JSON header (meta data + array descriptors) followed by the raw array bytes, byte-shuffled per array
(the bytes of each float are regrouped by significance, which makes smooth float series compressible) and
compressed as one zstd frame with a content checksum. Why this format, with measurements: ``docs/data_format.md``.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from smartpretrain.data.scene import AgentTracks, MapData, Scene, TrafficSignals
from smartpretrain.data.taxonomy import Dataset
from smartpretrain.io.atomic import atomic_write_bytes

SCHEMA_VERSION = 1
PART_MAGIC = b"SPCPART\x01"
END_MAGIC = b"SPCEND\x00\x01"
PART_SUFFIX = ".spc"
INDEX_NAME = "index.parquet"
MANIFEST_NAME = "manifest.json"
ZSTD_LEVEL = 3

_AGENT_ARRAYS = (
    "type", "role", "is_sdc", "position", "heading", "velocity", "valid", "size", "difficulty", "of_interest",
)  # fmt: skip
_SIGNAL_ARRAYS = ("step", "lane_id", "state", "stop_point")
_MAP_ARRAYS = (
    "polygon_ids",
    "polygon_type",
    "polygon_is_intersection",
    "polyline_polygon",
    "polyline_side",
    "polyline_type",
    "polyline_offsets",
    "points",
    "edge_index",
    "edge_type",
)


class CacheError(RuntimeError):
    """The cache on disk is missing, corrupt, or of another schema version."""


class SchemaVersionError(CacheError):
    """The cache was written with a schema version this code does not read."""


class CacheWriteError(CacheError):
    """Writing a cache file failed (disk full, read-only storage, ...); the message names the file and the cause."""


def write_failure(path: Path | str, exc: BaseException) -> CacheWriteError:
    """The one-line error for a failed write of ``path``: ``"<cause> while writing <path>; ..."``."""
    cause = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    cause = cause[:1].lower() + cause[1:]
    return CacheWriteError(f"{cause} while writing {path}; parts already written are kept, re-run to resume")


# ---------------------------------------------------------------------------------------------------------------
# Scene <-> bytes


def _shuffle(raw: np.ndarray) -> bytes:
    """Regroup the bytes of a contiguous array by significance (like blosc's shuffle filter)."""
    item = raw.dtype.itemsize
    if item == 1 or raw.size == 0:
        return raw.tobytes()
    return raw.view(np.uint8).reshape(-1, item).T.tobytes()


def _unshuffle(buf: memoryview, dtype: np.dtype, count: int) -> np.ndarray:
    raw = np.frombuffer(buf, dtype=np.uint8)
    if dtype.itemsize > 1 and count:
        raw = np.ascontiguousarray(raw.reshape(dtype.itemsize, count).T)
    return raw.view(dtype)


def _delta_columns(arr: np.ndarray) -> np.ndarray:
    """Columns of a float32 ``[K, C]`` array as int32 bit patterns, differenced along K (exactly invertible).

    Consecutive samples of a smooth series share sign, exponent and high mantissa bits, so the differences of
    their bit patterns are small integers that compress far better than the floats themselves.
    """
    columns = int(np.prod(arr.shape[1:], dtype=np.int64))
    bits = np.ascontiguousarray(arr.reshape(len(arr), columns).T).view(np.int32)
    out = np.empty_like(bits)
    if bits.size:
        out[:, 0] = bits[:, 0]
        np.subtract(bits[:, 1:], bits[:, :-1], out=out[:, 1:])  # int32 wrap-around is undone by the cumsum
    return out


def _undelta_columns(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    columns = int(np.prod(shape[1:], dtype=np.int64))
    bits = np.cumsum(flat.reshape(columns, shape[0]), axis=1, dtype=np.int32)
    return np.ascontiguousarray(bits.view(np.float32).T).reshape(shape)


# Float arrays stored delta-coded; agent arrays are stored only at valid steps (scattered back on decode).
_VALID_PACKED = ("agents.position", "agents.heading", "agents.velocity")
_DELTA_CODED = (*_VALID_PACKED, "map.points")


def encode_scene(scene: Scene, level: int = ZSTD_LEVEL) -> bytes:
    """Serialise a scene to one compressed record."""
    valid = scene.agents.valid
    arrays: list[tuple[str, np.ndarray]] = []
    for name in _AGENT_ARRAYS:
        value = getattr(scene.agents, name)
        if value is not None:
            arrays.append((f"agents.{name}", value))
    arrays += [(f"map.{name}", getattr(scene.map, name)) for name in _MAP_ARRAYS]
    if scene.signals is not None:
        arrays += [(f"signals.{name}", getattr(scene.signals, name)) for name in _SIGNAL_ARRAYS]
    descriptors = []
    chunks = []
    for name, arr in arrays:
        stored = arr[valid] if name in _VALID_PACKED else arr
        if name in _DELTA_CODED:
            stored = _delta_columns(stored.astype(np.float32, copy=False))
        stored = np.ascontiguousarray(stored)
        descriptors.append([name, arr.dtype.str, list(arr.shape), stored.dtype.str, stored.size])
        chunks.append(_shuffle(stored))
    header = {
        "scenario_id": scene.scenario_id,
        "dataset": scene.dataset.value,
        "city": scene.city,
        "num_steps": scene.num_steps,
        "current_step": scene.current_step,
        "dt": scene.dt,
        "origin": [float(v) for v in scene.origin],
        "agent_ids": list(scene.agents.ids),
        "arrays": descriptors,
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    payload = b"".join([struct.pack("<I", len(head)), head, *chunks])
    return zstandard.ZstdCompressor(level=level, write_checksum=True).compress(payload)


_DCTX = threading.local()


def decode_scene(record: bytes | memoryview) -> Scene:
    """Inverse of :func:`encode_scene`."""
    dctx = getattr(_DCTX, "ctx", None)
    if dctx is None:
        dctx = _DCTX.ctx = zstandard.ZstdDecompressor()
    payload = memoryview(dctx.decompress(record))
    (head_len,) = struct.unpack_from("<I", payload, 0)
    header = json.loads(bytes(payload[4 : 4 + head_len]))
    pos = 4 + head_len
    stored: dict[str, tuple[np.ndarray, np.dtype, tuple[int, ...]]] = {}
    for name, dtype_str, shape, stored_dtype_str, count in header["arrays"]:
        stored_dtype = np.dtype(stored_dtype_str)
        nbytes = stored_dtype.itemsize * count
        stored[name] = (_unshuffle(payload[pos : pos + nbytes], stored_dtype, count), np.dtype(dtype_str), tuple(shape))
        pos += nbytes
    valid_flat, _, valid_shape = stored["agents.valid"]
    valid = valid_flat.reshape(valid_shape)
    values: dict[str, np.ndarray] = {}
    for name, (flat, dtype, shape) in stored.items():
        if name in _VALID_PACKED:
            packed_shape = (int(valid.sum()), *shape[2:])
            packed = _undelta_columns(flat, packed_shape)
            dense = np.zeros(shape, dtype)
            dense[valid] = packed
            values[name] = dense
        elif name in _DELTA_CODED:
            values[name] = _undelta_columns(flat, shape)
        else:
            values[name] = flat.reshape(shape)
    agents = AgentTracks(
        ids=list(header["agent_ids"]),
        **{n: values.get(f"agents.{n}") for n in _AGENT_ARRAYS},
    )
    map_data = MapData(**{n: values[f"map.{n}"] for n in _MAP_ARRAYS})
    signals = None
    if "signals.step" in values:
        signals = TrafficSignals(**{n: values[f"signals.{n}"] for n in _SIGNAL_ARRAYS})
    return Scene(
        scenario_id=header["scenario_id"],
        dataset=Dataset(header["dataset"]),
        city=header["city"],
        num_steps=header["num_steps"],
        current_step=header["current_step"],
        origin=np.asarray(header["origin"], dtype=np.float64),
        agents=agents,
        map=map_data,
        dt=header["dt"],
        signals=signals,
    )


# ---------------------------------------------------------------------------------------------------------------
# Part files


class RecordEntry(NamedTuple):
    """One row of a part footer's record table (the last four are None in parts written by older code)."""

    scenario_id: str
    offset: int
    length: int
    crc32: int | None = None
    num_agents: int | None = None
    num_steps: int | None = None
    current_step: int | None = None


def footer_records(footer: dict[str, Any]) -> list[RecordEntry]:
    """The record table of a part footer, old (3-field) or new (7-field) layout."""
    return [RecordEntry(*row[:7]) for row in footer["records"]]


def write_part(path: Path, records: Sequence[Sequence[Any]], footer: dict[str, Any]) -> dict[str, Any]:
    """Write one part file atomically; returns the footer as written.

    ``records`` are ``(scenario_id, encoded scene)`` or ``(scenario_id, encoded scene, num_agents, num_steps,
    current_step)``; the crc32 of every record is computed here and stored in the footer's record table.
    """
    offset = len(PART_MAGIC)
    table = []
    for scenario_id, blob, *meta in records:
        meta = [*meta, None, None, None][:3]
        table.append([scenario_id, offset, len(blob), zlib.crc32(blob), *meta])
        offset += len(blob)
    footer = {**footer, "schema_version": SCHEMA_VERSION, "records": table}
    foot = json.dumps(footer, separators=(",", ":")).encode()
    chunks = [PART_MAGIC, *(r[1] for r in records), foot, struct.pack("<Q", len(foot)), END_MAGIC]
    atomic_write_bytes(path, chunks)
    return footer


def read_part_footer(path: Path) -> dict[str, Any]:
    """Read and check a part file's footer; raises :class:`CacheError` naming the file when it is damaged."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            if f.read(len(PART_MAGIC)) != PART_MAGIC:
                raise CacheError(f"{path}: not a scene-cache part file (bad magic)")
            tail = len(END_MAGIC) + 8
            if size < len(PART_MAGIC) + tail:
                raise CacheError(f"{path}: truncated part file ({size} bytes)")
            f.seek(size - tail)
            (foot_len,) = struct.unpack("<Q", f.read(8))
            if f.read(len(END_MAGIC)) != END_MAGIC or foot_len > size - tail - len(PART_MAGIC):
                raise CacheError(f"{path}: truncated or corrupt part file (bad trailer)")
            f.seek(size - tail - foot_len)
            footer = json.loads(f.read(foot_len))
    except (OSError, ValueError) as exc:
        raise CacheError(f"{path}: unreadable part file: {exc}") from exc
    version = footer.get("schema_version")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: written with cache schema version {version}, this code reads version {SCHEMA_VERSION}; "
            "re-run the conversion with overwrite=true to rebuild the cache"
        )
    return footer


def check_part_records(path: Path, footer: dict[str, Any]) -> None:
    """Read every record of a part and compare it with the crc32 of its footer; raises :class:`CacheError`
    naming the part file and the scene (position in the part and scenario id) of the first bad record.
    Records of older parts (no crc32) are only checked for being inside the file."""
    entries = footer_records(footer)
    try:
        with open(path, "rb") as f:
            for i, e in enumerate(entries):
                f.seek(e.offset)
                blob = f.read(e.length)
                if len(blob) != e.length:
                    raise CacheError(f"{path}: truncated record {i} (scene {e.scenario_id}) at offset {e.offset}")
                if e.crc32 is not None and zlib.crc32(blob) != e.crc32:
                    raise CacheError(
                        f"{path}: corrupt record {i} (scene {e.scenario_id}): crc32 mismatch "
                        f"(footer {e.crc32:08x}, record {zlib.crc32(blob):08x})"
                    )
    except OSError as exc:
        raise CacheError(f"{path}: unreadable part file: {exc}") from exc


_PART_RE = re.compile(r"^part-(\d+)" + re.escape(PART_SUFFIX) + "$")


def part_name(unit: int) -> str:
    return f"part-{unit:06d}{PART_SUFFIX}"


def part_unit(name: str) -> int | None:
    """The unit number of a part file name (``part-000012.spc`` -> 12); None for other names."""
    m = _PART_RE.match(name)
    return int(m[1]) if m else None


# ---------------------------------------------------------------------------------------------------------------
# Index + reader


def index_table(parts: Sequence[tuple[int, dict[str, Any]]]) -> pa.Table:
    """The ``index.parquet`` table of ``(unit, footer)`` pairs (in unit order).

    Columns: scenario_id, part, offset, length, and (when every record has them) crc32 and num_agents.
    """
    ids: list[str] = []
    unit_col: list[int] = []
    offsets: list[int] = []
    lengths: list[int] = []
    crcs: list[int | None] = []
    agents: list[int | None] = []
    for unit, footer in parts:
        for e in footer_records(footer):
            ids.append(e.scenario_id)
            unit_col.append(unit)
            offsets.append(e.offset)
            lengths.append(e.length)
            crcs.append(e.crc32)
            agents.append(e.num_agents)
    columns = {
        "scenario_id": pa.array(ids, pa.string()),
        "part": pa.array(unit_col, pa.int32()),
        "offset": pa.array(offsets, pa.int64()),
        "length": pa.array(lengths, pa.int32()),
    }
    if None not in crcs:
        columns["crc32"] = pa.array(crcs, pa.uint32())
    if None not in agents:
        columns["num_agents"] = pa.array(agents, pa.int32())
    return pa.table(columns, metadata={"schema_version": str(SCHEMA_VERSION)})


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_index(split_dir: Path, parts: Sequence[tuple[int, dict[str, Any]]]) -> int:
    """Write ``index.parquet`` (atomically) from ``(unit, footer)`` pairs (in unit order); returns the number of
    scenes."""
    table = index_table(parts)
    atomic_write_bytes(Path(split_dir) / INDEX_NAME, [_table_bytes(table)])
    return table.num_rows


def update_index(split_dir: Path, parts: Sequence[tuple[int, dict[str, Any]]]) -> tuple[int, bool]:
    """Like :func:`write_index`, but leaves an ``index.parquet`` that already holds exactly this table untouched
    (a re-run that changed nothing writes nothing, so a finished cache can live on read-only storage).
    Returns ``(number of scenes, whether the file was written)``."""
    path = Path(split_dir) / INDEX_NAME
    table = index_table(parts)
    if path.exists():
        try:
            current = pq.read_table(path)
        except (OSError, pa.ArrowException):
            current = None
        if current is not None and current.equals(table) and current.schema.metadata == table.schema.metadata:
            return table.num_rows, False
    atomic_write_bytes(path, [_table_bytes(table)])
    return table.num_rows, True


@dataclass(frozen=True)
class _Index:
    scenario_ids: np.ndarray
    part: np.ndarray
    offset: np.ndarray
    length: np.ndarray
    crc32: np.ndarray | None = None
    num_agents: np.ndarray | None = None


class SceneCache(Sequence[Scene]):
    """Random access to the scenes of one converted dataset split.

    ``len(cache)``, ``cache[i] -> Scene``, ``cache.ids()``, ``cache.get(scenario_id)``, ``scenario_id in cache``,
    ``cache.num_agents()`` (agents per scene, from the index). Every record read is checked against the crc32 of
    the index (caches written before the crc32 column existed rely on zstd's frame checksum only).
    Safe to pickle into DataLoader worker processes (file handles are opened lazily, per process).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        index_path = self.path / INDEX_NAME
        if not index_path.exists():
            raise CacheError(
                f"{self.path}: no {INDEX_NAME}; not a converted cache split "
                "(run `python -m smartpretrain.convert ...` for it, or point to {cache_root}/{dataset}/{split})"
            )
        manifest_path = self.path / MANIFEST_NAME
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        table = pq.read_table(index_path)
        version = (table.schema.metadata or {}).get(b"schema_version", b"?").decode()
        if version != str(SCHEMA_VERSION):
            raise SchemaVersionError(
                f"{self.path}: cache written with schema version {version}, this code reads version "
                f"{SCHEMA_VERSION}; re-run the conversion with overwrite=true to rebuild it"
            )
        self._index = _Index(
            scenario_ids=np.asarray(table.column("scenario_id").to_pylist(), dtype=object),
            part=table.column("part").to_numpy(),
            offset=table.column("offset").to_numpy(),
            length=table.column("length").to_numpy(),
            crc32=table.column("crc32").to_numpy() if "crc32" in table.column_names else None,
            num_agents=(
                table.column("num_agents").to_numpy().astype(np.int32, copy=False)
                if "num_agents" in table.column_names
                else None
            ),
        )
        self._position: dict[str, int] | None = None
        self._files: dict[int, int] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._index.scenario_ids)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def _fd(self, part: int) -> int:
        if self._pid != os.getpid():  # forked into a worker: never share descriptors' offsets with the parent
            self._files, self._pid = {}, os.getpid()
        fd = self._files.get(part)
        if fd is None:
            fd = self._files[part] = os.open(self.path / part_name(part), os.O_RDONLY)
        return fd

    def read_record(self, index: int) -> bytes:
        """The compressed record of scene ``index``."""
        part, offset, length = (
            int(self._index.part[index]),
            int(self._index.offset[index]),
            int(self._index.length[index]),
        )
        blob = os.pread(self._fd(part), length, offset)
        if len(blob) != length:
            raise CacheError(f"{self.path / part_name(part)}: truncated record {index} at offset {offset}")
        if self._index.crc32 is not None:
            stored, actual = int(self._index.crc32[index]), zlib.crc32(blob)
            if actual != stored:
                raise CacheError(
                    f"{self.path / part_name(part)}: corrupt record for scene {index} "
                    f"({self._index.scenario_ids[index]}): crc32 mismatch (index {stored:08x}, record {actual:08x}); "
                    "re-run the conversion to redo that part"
                )
        return blob

    def num_agents(self) -> np.ndarray | None:
        """Agents per scene (int32, index order); None for a cache written before the index recorded it."""
        return self._index.num_agents

    def __getitem__(self, index: int) -> Scene:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"SceneCache indices must be integers, got {type(index).__name__}")
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"scene index {index} out of range for {len(self)} scenes in {self.path}")
        try:
            return decode_scene(self.read_record(int(index)))
        except zstandard.ZstdError as exc:
            part = int(self._index.part[index])
            sid = self._index.scenario_ids[index]
            raise CacheError(f"{self.path / part_name(part)}: corrupt record for scene {index} ({sid}): {exc}") from exc

    def __iter__(self) -> Iterator[Scene]:
        for i in range(len(self)):
            yield self[i]

    def ids(self) -> list[str]:
        """Scenario ids in index order."""
        return list(self._index.scenario_ids)

    def index_of(self, scenario_id: str) -> int:
        if self._position is None:
            self._position = {sid: i for i, sid in enumerate(self._index.scenario_ids)}
        try:
            return self._position[scenario_id]
        except KeyError:
            raise KeyError(f"scenario {scenario_id!r} is not in the cache at {self.path}") from None

    def get(self, scenario_id: str) -> Scene:
        """The scene with this scenario id."""
        return self[self.index_of(scenario_id)]

    def __contains__(self, scenario_id: object) -> bool:
        try:
            self.index_of(str(scenario_id))
        except KeyError:
            return False
        return True

    def close(self) -> None:
        for fd in self._files.values():
            os.close(fd)
        self._files = {}

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
