"""The Argoverse 1 motion-forecasting format: the scenario CSVs and the city vector maps, read and written here.

The AV1 converter (:mod:`smartpretrain.data.converters.av1`) reads through this module and the synthetic generator
(:mod:`smartpretrain.data.synthetic`) writes through it, so both use one column list, one XML vocabulary and one
parser.

Scenario CSVs: ``{root}/{split}/data/{seq_id}.csv`` with the columns :data:`COLUMNS`
(``TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,Y,CITY_NAME``), one row per (timestamp, track); 50 timestamps at nominally
10 Hz (20 history + 30 future; the test split has the 20 history steps only). ``OBJECT_TYPE`` is ``AGENT`` (the
focal track), ``AV`` (the self-driving car) or ``OTHERS``.

Vector maps: one XML per city, ``{root}/map_files/pruned_argoverse_{CITY}_{ID}_vector_map.xml`` (MIA 10316,
PIT 10314), root element ``<ArgoverseVectorMap>``:

* ``<node id x y [height]>``: a point, referenced by id. ``height`` is optional (0 when absent).
* ``<way lane_id>``: a lane. Children ``<tag k v>`` with keys ``has_traffic_control``, ``is_intersection``
  (``"True"`` / ``"False"``), ``turn_direction`` (``NONE`` / ``LEFT`` / ``RIGHT``), ``l_neighbor_id``,
  ``r_neighbor_id`` (a lane id or ``"None"``), repeated ``predecessor`` / ``successor``; and ``<nd ref>``
  children, the lane centerline as an ordered list of node ids.

:func:`read_vector_map` uses ``xml.etree.ElementTree.iterparse`` (bounded memory; every finished element is
cleared) and returns the file columnar (:class:`VectorMap`). It is lenient where the format is (a missing boolean
tag reads False, a missing ``turn_direction`` reads ``NONE``) and strict where the data would be wrong: malformed
XML, a node or lane id that is not an integer, a duplicate node or lane id, a ``<nd ref>`` to a node that does not
exist, a lane without points, a boolean that is neither ``True`` nor ``False`` or a non-finite coordinate raise
:class:`~smartpretrain.data.formats.FormatError` naming the file. References to lanes absent from the file (the
maps are *pruned*) are kept as read; resolving them is the reader's caller's business.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from smartpretrain.data.formats import FormatError
from smartpretrain.io.atomic import atomic_write_bytes

DT = 0.1
NUM_STEPS = 50
CURRENT_STEP = 19
COLUMNS = ("TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y", "CITY_NAME")
FOCAL_LABEL = "AGENT"
SDC_LABEL = "AV"
OTHERS_LABEL = "OTHERS"
DATA_FOLDER = "data"
MAP_FOLDER = "map_files"
MAP_FILE_PATTERN = re.compile(r"^pruned_argoverse_([A-Za-z]+)_(\d+)_vector_map\.xml$")
# The city ids Argoverse 1 publishes; a file naming a known city with another id is mislabelled.
CITY_IDS: dict[str, int] = {"MIA": 10316, "PIT": 10314}
TURN_DIRECTIONS = ("NONE", "LEFT", "RIGHT")
_BOOLS = {"True": True, "False": False}

# ---------------------------------------------------------------------------------------------------------------
# Scenario CSVs

# The three string columns are read dictionary-encoded (string values, int32 codes in order of first appearance):
# the codes are what the converter needs, and the CSV reader builds them while parsing, for free.
_DICT_STRING = pa.dictionary(pa.int32(), pa.string())
_READ_OPTIONS = pacsv.ReadOptions(use_threads=False)
_CONVERT_OPTIONS = pacsv.ConvertOptions(
    column_types={
        "TIMESTAMP": pa.float64(),
        "TRACK_ID": _DICT_STRING,
        "OBJECT_TYPE": _DICT_STRING,
        "X": pa.float64(),
        "Y": pa.float64(),
        "CITY_NAME": _DICT_STRING,
    },
    strings_can_be_null=False,
)


def split_folder(root: str | Path, split: str) -> Path:
    """``{root}/{split}/data``, the folder of a split's CSVs."""
    return Path(root) / split / DATA_FOLDER


def read_csv(data: bytes) -> pa.Table:
    """Parse a scenario CSV: TIMESTAMP / X / Y float64, the string columns dictionary-encoded (one pass, no per-row
    Python). Raises ``pyarrow.ArrowException`` (or ``UnicodeDecodeError``) when the bytes are not such a CSV; a
    missing column is left to the caller to report (the result then lacks it)."""
    return pacsv.read_csv(pa.py_buffer(data), read_options=_READ_OPTIONS, convert_options=_CONVERT_OPTIONS)


def csv_text(
    timestamps: Sequence[float],
    track_ids: Sequence[str],
    object_types: Sequence[str],
    x: Sequence[float],
    y: Sequence[float],
    city: str,
) -> str:
    """A scenario CSV, one row per entry of the sequences; floats are written as ``repr`` (exact round trip)."""
    lines = [",".join(COLUMNS)]
    lines.extend(
        f"{t!r},{track},{kind},{px!r},{py!r},{city}"
        for t, track, kind, px, py in zip(timestamps, track_ids, object_types, x, y, strict=True)
    )
    lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Vector maps


def map_file_name(city: str) -> str:
    """``pruned_argoverse_{CITY}_{ID}_vector_map.xml`` of a published city (MIA or PIT)."""
    return f"pruned_argoverse_{city}_{CITY_IDS[city]}_vector_map.xml"


def map_path(root: str | Path, city: str) -> Path:
    """``{root}/map_files/pruned_argoverse_{CITY}_{ID}_vector_map.xml`` of a published city (MIA or PIT)."""
    return Path(root) / MAP_FOLDER / map_file_name(city)


def parse_map_file_name(path: Path | str) -> tuple[str, int]:
    """``(city, city_id)`` from a vector-map file name; :class:`FormatError` when it is not in the AV1 pattern or
    names a published city with another id."""
    path = Path(path)
    match = MAP_FILE_PATTERN.match(path.name)
    if match is None:
        raise FormatError(path, "file name is not pruned_argoverse_{CITY}_{ID}_vector_map.xml")
    city, city_id = match.group(1), int(match.group(2))
    expected = CITY_IDS.get(city)
    if expected is not None and expected != city_id:
        raise FormatError(path, f"city {city} has map id {expected}, file says {city_id}")
    return city, city_id


@dataclass
class AV1Lane:
    """One ``<way>`` of a vector map: a lane centerline ``[n, 2]`` or ``[n, 3]`` (x, y, height) and its tags."""

    lane_id: int
    centerline: np.ndarray
    has_traffic_control: bool = False
    turn_direction: str = "NONE"  # NONE, LEFT, RIGHT
    is_intersection: bool = False
    l_neighbor_id: int | None = None
    r_neighbor_id: int | None = None
    predecessors: list[int] = field(default_factory=list)
    successors: list[int] = field(default_factory=list)


@dataclass
class VectorMap:
    """A vector-map file as read, columnar, lanes in file order (L lanes, M centerline points).

    Attributes:
        lane_ids: ``[L] int64``.
        centerline_offsets: ``[L + 1] int64`` CSR offsets: lane ``i`` is ``centerline_points[o[i]:o[i+1]]``.
        centerline_points: ``[M, 3] float64`` x, y, height (0 where the node has none).
        has_height: ``[M] bool`` whether the node has a ``height``.
        is_intersection, has_traffic_control: ``[L] bool``.
        turn_direction: ``[L] str`` as in the file.
        predecessors, successors: per lane, the lane ids of its ``predecessor`` / ``successor`` tags.
        left_neighbor, right_neighbor: per lane, ``l_neighbor_id`` / ``r_neighbor_id`` (None for ``"None"``).
    """

    lane_ids: np.ndarray
    centerline_offsets: np.ndarray
    centerline_points: np.ndarray
    has_height: np.ndarray
    is_intersection: np.ndarray
    has_traffic_control: np.ndarray
    turn_direction: np.ndarray
    predecessors: list[list[int]]
    successors: list[list[int]]
    left_neighbor: list[int | None]
    right_neighbor: list[int | None]

    def lanes(self) -> list[AV1Lane]:
        """The lanes as :class:`AV1Lane` records; a centerline has a height column when any of its nodes has one."""
        out = []
        offsets = self.centerline_offsets.tolist()
        for k, lane_id in enumerate(self.lane_ids.tolist()):
            lo, hi = offsets[k], offsets[k + 1]
            points = self.centerline_points[lo:hi]
            out.append(
                AV1Lane(
                    lane_id=lane_id,
                    centerline=points.copy() if self.has_height[lo:hi].any() else points[:, :2].copy(),
                    has_traffic_control=bool(self.has_traffic_control[k]),
                    turn_direction=str(self.turn_direction[k]),
                    is_intersection=bool(self.is_intersection[k]),
                    l_neighbor_id=self.left_neighbor[k],
                    r_neighbor_id=self.right_neighbor[k],
                    predecessors=list(self.predecessors[k]),
                    successors=list(self.successors[k]),
                )
            )
        return out


def _bool(value: str | None, key: str, lane_id: int, path: Path) -> bool:
    if value is None:
        return False
    try:
        return _BOOLS[value]
    except KeyError:
        raise FormatError(path, f"lane {lane_id}: {key}={value!r} is neither 'True' nor 'False'") from None


def _lane_ref(value: str | None, key: str, lane_id: int, path: Path) -> int | None:
    if value is None or value == "None" or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise FormatError(path, f"lane {lane_id}: {key}={value!r} is not a lane id") from None


def read_vector_map(path: Path | str) -> VectorMap:
    """Parse one vector-map XML (see the module docstring for what is refused)."""
    path = Path(path)
    node_ids: list[int] = []
    node_xyz: list[tuple[float, float, float]] = []
    node_height: list[bool] = []
    lane_ids: list[int] = []
    lane_refs: list[int] = []
    lane_num_points: list[int] = []
    is_intersection: list[bool] = []
    traffic_control: list[bool] = []
    turn: list[str] = []
    predecessors: list[list[int]] = []
    successors: list[list[int]] = []
    left_neighbor: list[int | None] = []
    right_neighbor: list[int | None] = []

    def bad(message: str) -> FormatError:
        return FormatError(path, message)

    try:
        root: ET.Element | None = None
        for event, elem in ET.iterparse(path, events=("start", "end")):
            if root is None:
                root = elem
                if elem.tag != "ArgoverseVectorMap":
                    raise bad(f"root element is <{elem.tag}>, expected <ArgoverseVectorMap>")
                continue
            if event != "end":
                continue
            tag = elem.tag
            if tag == "node":
                attrib = elem.attrib
                try:
                    node_ids.append(int(attrib["id"]))
                    height = attrib.get("height")
                    node_xyz.append((float(attrib["x"]), float(attrib["y"]), float(height) if height else 0.0))
                except (KeyError, ValueError) as exc:
                    raise bad(f"malformed <node {dict(attrib)}>: {exc!r}") from None
                node_height.append(bool(height))
                root.clear()
            elif tag == "way":
                raw_id = elem.get("lane_id")
                try:
                    lane_id = int(raw_id)  # type: ignore[arg-type]
                except (TypeError, ValueError):
                    raise bad(f"<way> has lane_id={raw_id!r}, not an integer") from None
                tags: dict[str, str] = {}
                preds: list[int] = []
                succs: list[int] = []
                count = 0
                for child in elem:
                    if child.tag == "nd":
                        try:
                            lane_refs.append(int(child.attrib["ref"]))
                        except (KeyError, ValueError):
                            raise bad(f"lane {lane_id}: malformed <nd {dict(child.attrib)}>") from None
                        count += 1
                    elif child.tag == "tag":
                        k, v = child.get("k"), child.get("v")
                        if k is None or v is None:
                            raise bad(f"lane {lane_id}: <tag> without k or v")
                        if k == "predecessor" or k == "successor":
                            ref = _lane_ref(v, k, lane_id, path)
                            if ref is not None:
                                (preds if k == "predecessor" else succs).append(ref)
                        else:
                            tags[k] = v
                if count == 0:
                    raise bad(f"lane {lane_id} has no <nd> points")
                lane_ids.append(lane_id)
                lane_num_points.append(count)
                is_intersection.append(_bool(tags.get("is_intersection"), "is_intersection", lane_id, path))
                traffic_control.append(_bool(tags.get("has_traffic_control"), "has_traffic_control", lane_id, path))
                turn.append(tags.get("turn_direction", "NONE"))
                left_neighbor.append(_lane_ref(tags.get("l_neighbor_id"), "l_neighbor_id", lane_id, path))
                right_neighbor.append(_lane_ref(tags.get("r_neighbor_id"), "r_neighbor_id", lane_id, path))
                predecessors.append(preds)
                successors.append(succs)
                root.clear()
    except ET.ParseError as exc:
        raise bad(f"malformed XML: {exc}") from None
    except OSError as exc:
        raise bad(f"cannot read map file: {exc}") from None

    # Nodes -> arrays; resolve every <nd ref> at once with a sorted-id search.
    ids = np.asarray(node_ids, np.int64)
    xyz = np.asarray(node_xyz, np.float64).reshape(-1, 3)
    if not np.isfinite(xyz).all():
        raise bad("NaN/inf node coordinates")
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    if len(sorted_ids) > 1 and (sorted_ids[1:] == sorted_ids[:-1]).any():
        dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]][0]
        raise bad(f"duplicate node id {int(dup)}")
    refs = np.asarray(lane_refs, np.int64)
    pos = np.searchsorted(sorted_ids, refs)
    found = pos < len(sorted_ids)
    found[found] = sorted_ids[pos[found]] == refs[found]
    if not found.all():
        k = int(np.flatnonzero(~found)[0])
        lane_of_ref = int(np.searchsorted(np.cumsum(lane_num_points), k, side="right"))
        raise bad(f"lane {lane_ids[lane_of_ref]}: <nd ref={int(refs[k])}> names no <node>")
    node_of_point = order[pos]
    offsets = np.zeros(len(lane_ids) + 1, np.int64)
    np.cumsum(lane_num_points, out=offsets[1:])
    seen: set[int] = set()
    for lane_id in lane_ids:
        if lane_id in seen:
            raise bad(f"duplicate lane_id {lane_id}")
        seen.add(lane_id)

    return VectorMap(
        lane_ids=np.asarray(lane_ids, np.int64),
        centerline_offsets=offsets,
        centerline_points=xyz[node_of_point] if len(refs) else np.zeros((0, 3), np.float64),
        has_height=np.asarray(node_height, bool)[node_of_point] if len(refs) else np.zeros(0, bool),
        is_intersection=np.asarray(is_intersection, bool),
        has_traffic_control=np.asarray(traffic_control, bool),
        turn_direction=np.asarray(turn, dtype=str) if turn else np.zeros(0, dtype="<U5"),
        predecessors=predecessors,
        successors=successors,
        left_neighbor=left_neighbor,
        right_neighbor=right_neighbor,
    )


def read_lanes(path: Path | str) -> list[AV1Lane]:
    """The lanes of one vector-map XML, in file order (:func:`read_vector_map`, as records)."""
    return read_vector_map(path).lanes()


def _xml_num(v: float) -> str:
    return repr(round(float(v), 2))


def _xml_id(lane_id: int | None) -> str:
    return "None" if lane_id is None else str(int(lane_id))


def write_vector_map(path: str | Path, lanes: Sequence[AV1Lane]) -> None:
    """Write a vector-map XML (``<node>`` elements, then one ``<way lane_id>`` per lane), atomically.

    A 3-column centerline writes the third column as the nodes' ``height``; coordinates are rounded to 1 cm.
    Node ids are numbered from 0 in lane order. A centerline of fewer than 2 points or an unknown
    ``turn_direction`` is refused (``ValueError``).
    """
    nodes = []
    ways = []
    nid = 0
    for lane in lanes:
        cl = np.asarray(lane.centerline, dtype=np.float64)
        if cl.ndim != 2 or cl.shape[1] not in (2, 3) or cl.shape[0] < 2:
            raise ValueError(f"lane {lane.lane_id}: centerline must be [n>=2, 2|3], got {cl.shape}")
        if lane.turn_direction not in TURN_DIRECTIONS:
            raise ValueError(f"lane {lane.lane_id}: bad turn_direction {lane.turn_direction!r}")
        refs = []
        for p in cl.tolist():
            height = f' height="{_xml_num(p[2])}"' if len(p) == 3 else ""
            nodes.append(f' <node id="{nid}" x="{_xml_num(p[0])}" y="{_xml_num(p[1])}"{height} />')
            refs.append(f'  <nd ref="{nid}" />')
            nid += 1
        ways.append(f' <way lane_id="{int(lane.lane_id)}">')
        ways.append(f'  <tag k="has_traffic_control" v="{bool(lane.has_traffic_control)}" />')
        ways.append(f'  <tag k="turn_direction" v="{lane.turn_direction}" />')
        ways.append(f'  <tag k="is_intersection" v="{bool(lane.is_intersection)}" />')
        ways.append(f'  <tag k="l_neighbor_id" v="{_xml_id(lane.l_neighbor_id)}" />')
        ways.append(f'  <tag k="r_neighbor_id" v="{_xml_id(lane.r_neighbor_id)}" />')
        ways.extend(refs)
        ways.extend(f'  <tag k="predecessor" v="{int(p)}" />' for p in lane.predecessors)
        ways.extend(f'  <tag k="successor" v="{int(s)}" />' for s in lane.successors)
        ways.append(" </way>")
    text = "\n".join(
        ['<?xml version="1.0" encoding="UTF-8"?>', "<ArgoverseVectorMap>", *nodes, *ways, "</ArgoverseVectorMap>", ""]
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())


__all__ = [
    "CITY_IDS",
    "COLUMNS",
    "CURRENT_STEP",
    "DT",
    "FOCAL_LABEL",
    "MAP_FILE_PATTERN",
    "NUM_STEPS",
    "OTHERS_LABEL",
    "SDC_LABEL",
    "TURN_DIRECTIONS",
    "AV1Lane",
    "VectorMap",
    "csv_text",
    "map_file_name",
    "map_path",
    "parse_map_file_name",
    "read_csv",
    "read_lanes",
    "read_vector_map",
    "split_folder",
    "write_vector_map",
]
