"""The Argoverse 2 motion-forecasting format: scenario parquet tables and ``log_map_archive`` map JSONs.

The AV2 converter (:mod:`smartpretrain.data.converters.av2`) reads through this module and the synthetic generator
(:mod:`smartpretrain.data.synthetic`) writes through it: one parquet schema (:data:`SCHEMA`, AV2's columns, order
and dtypes; the converter reads the subset :data:`COLUMNS`) and one description of the map JSON (the ``TypedDict``
records below, in AV2's field order, which is also the order the writer emits).

Layout: ``{root}/{split}/{scenario_id}/scenario_{scenario_id}.parquet`` plus ``log_map_archive_{scenario_id}.json``
in the same folder (real AV2 names the map after its log; a folder holding one such file under another name is
read too). 110 steps at 10 Hz, the present at step 49; the self-driving car's track id is ``AV``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NotRequired, TypedDict

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from smartpretrain.data.formats import FormatError, MissingColumnsError
from smartpretrain.io.atomic import atomic_output, atomic_write_bytes

DT = 0.1
NUM_STEPS = 110
CURRENT_STEP = 49
SDC_TRACK_ID = "AV"
CITIES = ("austin", "dearborn", "miami", "pittsburgh", "palo-alto", "washington-dc")

SCHEMA = pa.schema(
    [
        ("observed", pa.bool_()),
        ("track_id", pa.string()),
        ("object_type", pa.string()),
        ("object_category", pa.int64()),
        ("timestep", pa.int64()),
        ("position_x", pa.float64()),
        ("position_y", pa.float64()),
        ("heading", pa.float64()),
        ("velocity_x", pa.float64()),
        ("velocity_y", pa.float64()),
        ("scenario_id", pa.string()),
        ("start_timestamp", pa.float64()),
        ("end_timestamp", pa.float64()),
        ("num_timestamps", pa.int64()),
        ("focal_track_id", pa.string()),
        ("city", pa.string()),
        ("map_id", pa.uint64()),
        ("slice_id", pa.string()),
    ]
)
#: the columns a scene is made of (the others are bookkeeping of the AV2 release)
COLUMNS = (
    "track_id",
    "object_type",
    "object_category",
    "timestep",
    "position_x",
    "position_y",
    "heading",
    "velocity_x",
    "velocity_y",
    "scenario_id",
    "num_timestamps",
    "focal_track_id",
    "city",
)
# String columns read as dictionaries: parquet stores them dictionary-encoded, so no per-row strings are built.
DICTIONARY_COLUMNS = ("track_id", "object_type", "scenario_id", "focal_track_id", "city")
MAP_FILE_GLOB = "log_map_archive_*.json"


class Point(TypedDict):
    x: float
    y: float
    z: float


class LaneSegment(TypedDict):
    """A ``lane_segments`` entry. A lane without ``centerline`` (or with an empty one) is allowed by AV2."""

    centerline: NotRequired[list[Point]]
    id: int
    is_intersection: bool
    lane_type: str  # VEHICLE, BIKE, BUS
    left_lane_boundary: list[Point]
    left_lane_mark_type: str  # an AV2 LaneMarkType name
    left_neighbor_id: int | None
    predecessors: list[int]
    right_lane_boundary: list[Point]
    right_lane_mark_type: str
    right_neighbor_id: int | None
    successors: list[int]


class PedestrianCrossing(TypedDict):
    edge1: list[Point]
    edge2: list[Point]
    id: int


class DrivableArea(TypedDict):
    area_boundary: list[Point]
    id: int


class StaticMap(TypedDict):
    """A ``log_map_archive`` JSON: every element keyed by its id as a string."""

    drivable_areas: dict[str, DrivableArea]
    lane_segments: dict[str, LaneSegment]
    pedestrian_crossings: NotRequired[dict[str, PedestrianCrossing]]


# ---------------------------------------------------------------------------------------------------------------
# files


def scenario_file(scene_dir: Path, scenario_id: str) -> Path:
    """``{scene_dir}/scenario_{scenario_id}.parquet``."""
    return scene_dir / f"scenario_{scenario_id}.parquet"


def map_file(scene_dir: Path, scenario_id: str) -> Path:
    """``{scene_dir}/log_map_archive_{scenario_id}.json``, the name the generator writes."""
    return scene_dir / f"log_map_archive_{scenario_id}.json"


def other_map_files(scene_dir: Path) -> list[Path]:
    """Every ``log_map_archive_*.json`` of a scene folder, sorted (for maps named after their log)."""
    return sorted(scene_dir.glob(MAP_FILE_GLOB))


# ---------------------------------------------------------------------------------------------------------------
# reading and writing


def read_scenario(path: Path) -> pa.Table:
    """The :data:`COLUMNS` of a scenario parquet (string columns dictionary-encoded), in file row order.

    Raises :class:`~smartpretrain.data.formats.MissingColumnsError` when a column is missing; ``FileNotFoundError``,
    ``OSError`` and ``pyarrow.ArrowException`` as pyarrow raises them for absent or unreadable files.
    """
    try:
        parquet = pq.ParquetFile(path, read_dictionary=DICTIONARY_COLUMNS)
    except KeyError:  # pyarrow refuses a missing dictionary column by raising KeyError with its name only
        parquet = pq.ParquetFile(path)
    names = list(parquet.schema_arrow.names)
    present = set(names)
    missing = [c for c in COLUMNS if c not in present]
    if missing:
        raise MissingColumnsError(path, missing, names)
    return parquet.read(columns=list(COLUMNS), use_threads=False)


def write_scenario(path: Path, table: pa.Table) -> None:
    """Write a scenario table with exactly :data:`SCHEMA`, atomically (``ValueError`` for another schema)."""
    if not table.schema.equals(SCHEMA):
        raise ValueError(f"{path}: a scenario table must have the AV2 schema, got {table.schema}")
    with atomic_output(path, make_parents=False) as tmp:
        pq.write_table(table, tmp)


def read_map(path: Path, raw: bytes | None = None) -> tuple[list[LaneSegment], list[PedestrianCrossing]]:
    """The lane segments and pedestrian crossings of a map JSON, in file order (``raw``: the file's bytes, when
    already read). :class:`~smartpretrain.data.formats.FormatError` when it is not an AV2 map JSON."""
    try:
        data: StaticMap = orjson.loads(path.read_bytes() if raw is None else raw)
        lanes = list(data["lane_segments"].values())
        crossings = list(data.get("pedestrian_crossings", {}).values())
    except (orjson.JSONDecodeError, KeyError, AttributeError, TypeError, OSError) as exc:
        raise FormatError(path, f"not an AV2 map JSON: {exc}") from exc
    return lanes, crossings


def write_map(path: Path, static_map: StaticMap) -> None:
    """Write a map JSON (compact, keys in the records' order), atomically."""
    atomic_write_bytes(path, orjson.dumps(static_map))


__all__ = [
    "CITIES",
    "COLUMNS",
    "CURRENT_STEP",
    "DICTIONARY_COLUMNS",
    "DT",
    "NUM_STEPS",
    "SCHEMA",
    "SDC_TRACK_ID",
    "DrivableArea",
    "LaneSegment",
    "PedestrianCrossing",
    "Point",
    "StaticMap",
    "map_file",
    "other_map_files",
    "read_map",
    "read_scenario",
    "scenario_file",
    "write_map",
    "write_scenario",
]
