"""Waymo Open Motion Dataset ``Scenario`` TFRecords -> :class:`~smartpretrain.data.scene.Scene`, without TensorFlow.

Raw layout: ``{raw_root}/{training,validation,testing}/*.tfrecord-XXXXX-of-YYYYY`` (our split names ``train``,
``val``, ``test`` map to those folders; any other split name is taken as a folder name). Each record is one
serialized ``waymo.open_dataset.Scenario``; records are framed and CRC-checked by :mod:`smartpretrain.data.tfrecord`
and parsed with our own proto2 schema (:mod:`smartpretrain.data.protos`). One raw *item* is one record,
``"{file}@{byte offset}"``, so conversion is parallel over files and over the records of a file.

Tracks: all of the scenario's tracks in proto order, on its timeline (91 steps at 10 Hz, ``current_step`` =
``current_time_index``). Roles: the first ``tracks_to_predict`` entry observed at the current step is FOCAL
(WOMD has no single focal agent; its metrics score every track to predict), the other tracks to predict are
SCORED with their difficulty in ``agents.difficulty``; every other track is UNSCORED. ``objects_of_interest`` ->
``agents.of_interest``, ``sdc_track_index`` -> ``agents.is_sdc``. Sizes are taken at the current step (else the
first observed step). The origin is the focal agent's (x, y, z) at the current step.

Map: one polygon per map feature, in proto order. Lanes (type by ``LaneCenter.type``) keep their centerline only:
WOMD describes lane boundaries as index ranges into *other* features (road lines), not as polylines of the lane.
Topology: ``entry_lanes`` -> PRED, ``exit_lanes`` -> SUCC, ``left/right_neighbors`` -> LEFT / RIGHT (references
to features absent from the scenario are dropped). Road lines and road edges are one CENTER polyline with their
type; a crosswalk polygon becomes two opposite edges (LEFT / RIGHT, the longer pair of sides of the quadrilateral,
or of the principal-axis bounding box of another polygon) and their mid-line (CENTER), as AV2's crosswalks; speed
bumps and driveways are their closed outline (CENTER); a stop sign is its one position point. Traffic-signal
states of every step go to ``scene.signals``. Tables: ``docs/data_format.md``.

The older tf.Example release of WOMD (``state/...`` feature dictionaries) is a different schema: it is detected
and refused with a message saying so.
"""

from __future__ import annotations

import gzip
import os
import re
import struct
from collections import OrderedDict
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from google.protobuf.message import DecodeError

from smartpretrain.data.converters.base import (
    ConversionError,
    ConvertedScene,
    DropReason,
    Repair,
    RepairKind,
    SceneConverter,
    map_labels,
    validated,
)
from smartpretrain.data.protos import womd_message
from smartpretrain.data.scene import AgentTracks, MapData, Scene, TrafficSignals
from smartpretrain.data.taxonomy import (
    WOMD_AGENT_TYPES,
    WOMD_LANE_TYPES,
    WOMD_ROAD_EDGE_TYPES,
    WOMD_ROAD_LINE_TYPES,
    AgentRole,
    AgentType,
    Dataset,
    EdgeType,
    Intersection,
    LineType,
    PolygonType,
    Side,
)
from smartpretrain.data.tfrecord import TFRecordError, index_records, masked_crc32c

WOMD_SPLIT_FOLDERS = {"train": "training", "val": "validation", "test": "testing"}
_TFRECORD_NAME = re.compile(r".*\.tfrecord(-\d+-of-\d+)?(\.gz)?$")
_GZIP_MAGIC = b"\x1f\x8b"
_POLYLINE_FEATURES = ("lane", "road_line", "road_edge")
_POLYGON_FEATURES = ("crosswalk", "speed_bump", "driveway")


class WomdFormatError(ValueError):
    """A raw WOMD file is not in the ``Scenario`` format (e.g. the older tf.Example release)."""


# ---------------------------------------------------------------------------------------------------------------
# wire-level helpers


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("bad varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """Top-level ``(field number, wire type, value)`` of a protobuf message; raises ValueError when malformed."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise ValueError("field runs past the end of the message")
        out.append((number, wire, value))
    return out


def looks_like_tf_example(record: bytes) -> bool:
    """True if ``record`` is a ``tf.train.Example`` whose feature names are WOMD's (``state/...``, ...).

    An Example is one field 1 (Features), holding repeated field 1 map entries whose key (field 1) is the
    feature name; WOMD's tf.Example release names them ``scenario/id``, ``state/current/x``,
    ``roadgraph_samples/xyz``, ``traffic_light_state/...``.
    """
    try:
        top = _fields(record)
        if len(top) != 1 or top[0][:2] != (1, 2):
            return False
        for number, wire, entry in _fields(top[0][2]):
            if (number, wire) != (1, 2):
                return False
            for key_number, key_wire, key in _fields(entry):
                if (key_number, key_wire) == (1, 2):
                    name = bytes(key).decode("utf-8")
                    if name.startswith(("state/", "roadgraph_samples/", "traffic_light_state/", "scenario/")):
                        return True
    except (ValueError, UnicodeDecodeError):
        return False
    return False


# ---------------------------------------------------------------------------------------------------------------
# geometry helpers


def _resample(line: np.ndarray, num: int) -> np.ndarray:
    """``num`` points evenly spaced by arc length along ``line`` (``[n, 3]``, n >= 1)."""
    if len(line) == 1:
        return np.repeat(line, num, axis=0)
    seg = np.linalg.norm(np.diff(line, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    if cum[-1] <= 0:
        return np.repeat(line[:1], num, axis=0)
    at = np.linspace(0.0, cum[-1], num)
    return np.stack([np.interp(at, cum, line[:, k]) for k in range(3)], axis=1)


def crosswalk_edges(polygon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two opposite, equally directed edges of a crosswalk polygon (``[n, 3]``): the longer pair of sides.

    A quadrilateral gives its own sides ``(p0 -> p1, p3 -> p2)`` or ``(p1 -> p2, p0 -> p3)``; any other polygon
    is replaced by its bounding rectangle along its principal axis first (z: the polygon's mean).
    """
    if len(polygon) != 4:
        xy = polygon[:, :2]
        centre = xy.mean(axis=0)
        if len(polygon) >= 2 and np.ptp(xy, axis=0).max() > 0:
            _, _, vt = np.linalg.svd(xy - centre, full_matrices=False)
            axis = vt[0]
        else:
            axis = np.array([1.0, 0.0])
        normal = np.array([-axis[1], axis[0]])
        u, v = (xy - centre) @ axis, (xy - centre) @ normal
        corners = [(u.min(), v.min()), (u.max(), v.min()), (u.max(), v.max()), (u.min(), v.max())]
        z = float(polygon[:, 2].mean())
        polygon = np.array([[*(centre + a * axis + b * normal), z] for a, b in corners])
    p0, p1, p2, p3 = polygon
    first = np.linalg.norm(p1 - p0) + np.linalg.norm(p2 - p3)
    second = np.linalg.norm(p2 - p1) + np.linalg.norm(p3 - p0)
    if first >= second:
        return np.stack([p0, p1]), np.stack([p3, p2])
    return np.stack([p1, p2]), np.stack([p0, p3])


# ---------------------------------------------------------------------------------------------------------------


class WomdConverter(SceneConverter):
    """Converter for WOMD ``Scenario`` TFRecords (see the module docstring).

    Args:
        raw_root: the WOMD ``scenario`` folder (holding ``training/``, ``validation/``, ``testing/``), or a folder
            of ``*.tfrecord*`` files, or one TFRecord file (then ``split`` only names the output).
        split: ``train`` / ``val`` / ``test`` (-> ``training`` / ``validation`` / ``testing``) or a folder name.
        verify_crc: check both CRCs of every record (a mismatch drops the scene as ``corrupt_file``).
        compression: ``"auto"`` (gzip detected by its magic bytes), ``"gzip"`` or ``"none"``.
    """

    dataset = Dataset.WOMD

    def __init__(
        self, raw_root: str | Path, split: str = "val", verify_crc: bool = True, compression: str = "auto"
    ) -> None:
        super().__init__(raw_root, split)
        if compression not in ("auto", "gzip", "none"):
            raise ValueError(f"compression must be auto, gzip or none, got {compression!r}")
        self.verify_crc = bool(verify_crc)
        self.compression = compression
        self._open: OrderedDict[str, BinaryIO] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:  # file handles stay in their process
        state = self.__dict__.copy()
        state["_open"] = OrderedDict()
        return state

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "verify_crc": self.verify_crc, "compression": self.compression}

    # --- listing ----------------------------------------------------------------------------------------------
    @property
    def split_dir(self) -> Path:
        return self.raw_root / WOMD_SPLIT_FOLDERS.get(self.split, self.split)

    def files(self) -> list[Path]:
        """The split's TFRecord files, sorted by name."""
        if self.raw_root.is_file():
            return [self.raw_root]
        for folder in (self.split_dir, self.raw_root):
            if folder.is_dir():
                found = sorted(p for p in folder.iterdir() if p.is_file() and _TFRECORD_NAME.match(p.name))
                if found:
                    return found
        raise FileNotFoundError(
            f"no WOMD TFRecord files (*.tfrecord*) in {self.split_dir} nor in {self.raw_root}; set "
            "data.raw_root to the WOMD 'scenario' folder (with training/ validation/ testing/) or to a TFRecord file"
        )

    def _base(self) -> Path:
        return self.raw_root.parent if self.raw_root.is_file() else self.raw_root

    def list_items(self) -> list[str]:
        """``"{file relative to raw_root}@{offset}"`` for every record of every file, in file then record order.

        Reads only the record headers (and the first record of each file, to refuse tf.Example files). A file
        whose framing is broken raises :class:`~smartpretrain.data.tfrecord.TFRecordError` naming the file and
        byte offset, before anything is converted.
        """
        items = []
        base = self._base()
        for path in self.files():
            offsets = index_records(path, verify_crc=self.verify_crc, compression=self.compression)
            if offsets:
                first = self._read(path, offsets[0][0])
                if looks_like_tf_example(first):
                    raise WomdFormatError(
                        f"{path}: this is the older tf.Example format of WOMD (feature dictionaries such as "
                        "'state/current/x'), not Scenario protos; download the 'scenario' version of the dataset "
                        "(e.g. uncompressed/scenario/validation/*.tfrecord-*) to convert it"
                    )
            rel = path.relative_to(base).as_posix()
            items += [f"{rel}@{offset}" for offset, _ in offsets]
        return items

    def item_path(self, item: str) -> Path:
        return self._base() / item.rsplit("@", 1)[0]

    def item_files(self, item: str) -> list[Path]:
        """The TFRecord file holding the item's record."""
        return [self.item_path(item)]

    # --- reading ----------------------------------------------------------------------------------------------
    def _handle(self, path: Path) -> BinaryIO:
        key = str(path)
        handle = self._open.get(key)
        if handle is None:
            raw = open(path, "rb")  # kept open across the records of one work unit
            gz = self.compression == "gzip" or (self.compression == "auto" and raw.read(2) == _GZIP_MAGIC)
            raw.seek(0)
            handle = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            self._open[key] = handle
            while len(self._open) > 4:  # a unit spans at most a few files
                self._open.popitem(last=False)[1].close()
        return handle

    def _read(self, path: Path, offset: int) -> bytes:
        """One record at a header offset; gzip streams are read forward (a unit's records are in order)."""
        handle = self._handle(path)
        try:
            handle.seek(offset)
            head = handle.read(12)
            if len(head) < 12:
                raise TFRecordError(str(path), offset, f"truncated record header: {len(head)} of 12 bytes")
            (length,), (length_crc,) = struct.unpack("<Q", head[:8]), struct.unpack("<I", head[8:])
            if self.verify_crc and masked_crc32c(head[:8]) != length_crc:
                raise TFRecordError(str(path), offset, "length field CRC mismatch (corrupt record header)")
            body = handle.read(length + 4)
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise TFRecordError(str(path), offset, f"unreadable: {exc}") from exc
        if len(body) < length + 4:
            raise TFRecordError(str(path), offset, f"truncated record: header says {length} data bytes")
        data = body[:length]
        if self.verify_crc and masked_crc32c(data) != struct.unpack("<I", body[length:])[0]:
            raise TFRecordError(str(path), offset, f"data CRC mismatch (corrupt record of {length} bytes)")
        return data

    # --- conversion -------------------------------------------------------------------------------------------
    def convert(self, item: str) -> ConvertedScene:
        rel, _, offset_text = item.rpartition("@")
        path = self._base() / rel
        try:
            record = self._read(path, int(offset_text))
        except FileNotFoundError as exc:
            raise ConversionError(DropReason.MISSING_FILE, path, str(exc)) from exc
        except TFRecordError as exc:
            detail = f"{exc.detail} (record at byte {exc.offset})"
            raise ConversionError(DropReason.CORRUPT_FILE, path, detail) from exc
        try:
            scenario = womd_message("Scenario").FromString(record)
        except DecodeError as exc:
            if looks_like_tf_example(record):
                raise ConversionError(
                    DropReason.CORRUPT_FILE, path, "record is a tf.Example (older WOMD format), not a Scenario"
                ) from exc
            raise ConversionError(DropReason.CORRUPT_FILE, path, f"record at byte {offset_text}: {exc}") from exc
        return scenario_to_scene(scenario, path, item)


def scenario_to_scene(scenario: Any, path: Path | str, item: str = "") -> ConvertedScene:
    """Convert one parsed ``Scenario`` message (see the module docstring)."""
    sid = scenario.scenario_id or item
    repairs: list[Repair] = []

    def fail(reason: DropReason, message: str) -> ConversionError:
        return ConversionError(reason, path, message, scenario_id=sid)

    tracks = scenario.tracks
    if not len(tracks):
        raise fail(DropReason.EMPTY_FILE, "scenario has no tracks")
    lengths = {len(t.states) for t in tracks}
    if len(lengths) != 1:
        raise fail(DropReason.WRONG_NUM_STEPS, f"tracks have different numbers of states: {sorted(lengths)}")
    num_steps = lengths.pop()
    if len(scenario.timestamps_seconds) not in (0, num_steps):
        raise fail(
            DropReason.WRONG_NUM_STEPS,
            f"{len(scenario.timestamps_seconds)} timestamps but {num_steps} states per track",
        )
    cs = int(scenario.current_time_index)
    if not 0 <= cs < num_steps:
        raise fail(DropReason.WRONG_NUM_STEPS, f"current_time_index {cs} outside [0, {num_steps})")

    n = len(tracks)
    raw = np.fromiter(
        chain.from_iterable(
            (s.center_x, s.center_y, s.center_z, s.length, s.width, s.height, s.heading, s.velocity_x, s.velocity_y,
             s.valid)
            for t in tracks
            for s in t.states
        ),
        np.float64,
        n * num_steps * 10,
    ).reshape(n, num_steps, 10)  # fmt: skip
    valid = raw[..., 9] > 0.5
    if not np.isfinite(raw[valid]).all():
        raise fail(DropReason.NON_FINITE_VALUES, "a valid track state has non-finite values")

    # roles: focal = first track to predict observed at the current step
    difficulty = np.zeros(n, np.int8)
    to_predict = []
    for req in scenario.tracks_to_predict:
        if not 0 <= req.track_index < n:
            raise fail(DropReason.INVALID_SCENE, f"tracks_to_predict index {req.track_index} outside [0, {n})")
        to_predict.append(req.track_index)
        difficulty[req.track_index] = max(int(req.difficulty), 0)
    sdc = int(scenario.sdc_track_index) if scenario.HasField("sdc_track_index") else -1
    if sdc >= n:
        raise fail(DropReason.INVALID_SCENE, f"sdc_track_index {sdc} outside [0, {n})")
    candidates = [i for i in to_predict if valid[i, cs]]
    if candidates:
        focal = candidates[0]
    elif sdc >= 0 and valid[sdc, cs]:
        focal = sdc
        repairs.append(Repair(RepairKind.NO_TRACKS_TO_PREDICT, str(path), f"{sid}: focal = sdc track {sdc}"))
    else:
        raise fail(DropReason.NO_FOCAL_AGENT, "no track to predict (nor the sdc) is observed at the current step")
    role = np.full(n, AgentRole.UNSCORED, np.int8)
    role[to_predict] = AgentRole.SCORED
    role[focal] = AgentRole.FOCAL
    is_sdc = np.zeros(n, bool)
    if sdc >= 0:
        is_sdc[sdc] = True
    of_interest = np.zeros(n, bool)
    track_index = {int(t.id): i for i, t in enumerate(tracks)}
    for obj_id in scenario.objects_of_interest:
        if obj_id in track_index:
            of_interest[track_index[obj_id]] = True

    type_enum = womd_message("Track").DESCRIPTOR.enum_types_by_name["ObjectType"]
    names = [
        type_enum.values_by_number[t.object_type].name if t.object_type in type_enum.values_by_number else ""
        for t in tracks
    ]
    types, unset = map_labels(WOMD_AGENT_TYPES, names, AgentType.UNKNOWN)
    if unset:
        repairs.append(Repair(RepairKind.UNKNOWN_OBJECT_TYPE, str(path), f"{sid}: TYPE_UNSET", len(unset)))

    origin = raw[focal, cs, :3].copy()
    position = np.where(valid[..., None], raw[..., :3] - origin, 0.0).astype(np.float32)
    heading = np.where(valid, np.arctan2(np.sin(raw[..., 6]), np.cos(raw[..., 6])), 0.0).astype(np.float32)
    velocity = np.where(valid[..., None], raw[..., 7:9], 0.0).astype(np.float32)
    at = np.where(valid[:, cs], cs, valid.argmax(axis=1))  # size at the current step, else the first observed
    size = raw[np.arange(n), at, 3:6].astype(np.float32)
    size[~valid.any(axis=1)] = 0.0

    agents = AgentTracks(
        ids=[str(t.id) for t in tracks],
        type=types,
        role=role,
        is_sdc=is_sdc,
        position=position,
        heading=heading,
        velocity=velocity,
        valid=valid,
        size=size,
        difficulty=difficulty,
        of_interest=of_interest,
    )
    try:
        map_data = womd_map(scenario.map_features, origin)
    except ValueError as exc:
        raise fail(DropReason.BAD_MAP, str(exc)) from exc
    signals = womd_signals(scenario.dynamic_map_states, origin)
    timestamps = np.asarray(scenario.timestamps_seconds, np.float64)
    dt = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 0.1
    scene = Scene(
        scenario_id=sid,
        dataset=Dataset.WOMD,
        city="",
        num_steps=num_steps,
        current_step=cs,
        origin=origin,
        agents=agents,
        map=map_data,
        dt=round(dt, 4),
        signals=signals,
    )
    return validated(scene, path, repairs)


def womd_map(features: Any, origin: np.ndarray) -> MapData:
    """The scenario's map features as :class:`MapData` (see the module docstring)."""
    lane_type_enum = womd_message("LaneCenter").DESCRIPTOR.enum_types_by_name["LaneType"]
    line_type_enum = womd_message("RoadLine").DESCRIPTOR.enum_types_by_name["RoadLineType"]
    edge_type_enum = womd_message("RoadEdge").DESCRIPTOR.enum_types_by_name["RoadEdgeType"]

    def enum_name(enum: Any, value: int) -> str:
        return enum.values_by_number[value].name if value in enum.values_by_number else ""

    ids: list[int] = []
    poly_type: list[int] = []
    line_poly: list[int] = []
    line_side: list[int] = []
    line_type: list[int] = []
    chunks: list[np.ndarray] = []
    relations: list[tuple[int, int, int]] = []  # (src feature id, dst polygon, EdgeType)

    def add_line(polygon: int, side: Side, kind: LineType, pts: np.ndarray) -> None:
        if len(pts):
            line_poly.append(polygon)
            line_side.append(side)
            line_type.append(kind)
            chunks.append(pts)

    # every feature's points in one pass (per-point attribute access is the cost here), then sliced per feature
    kinds = [feature.WhichOneof("feature_data") for feature in features]
    containers = [
        getattr(feature, kind).polyline if kind in _POLYLINE_FEATURES
        else getattr(feature, kind).polygon if kind in _POLYGON_FEATURES
        else ()
        for feature, kind in zip(features, kinds, strict=True)
    ]  # fmt: skip
    counts = np.fromiter((len(c) for c in containers), np.int64, len(containers))
    total = int(counts.sum())
    flat = np.fromiter(
        chain.from_iterable((p.x, p.y, p.z) for c in containers for p in c), np.float64, 3 * total
    ).reshape(total, 3)
    starts = np.concatenate([[0], np.cumsum(counts)])

    for f_index, (feature, kind) in enumerate(zip(features, kinds, strict=True)):
        if kind is None:
            continue
        feature_points = flat[starts[f_index] : starts[f_index + 1]]
        k = len(ids)
        ids.append(int(feature.id))
        if kind == "lane":
            lane = feature.lane
            poly_type.append(WOMD_LANE_TYPES.get(enum_name(lane_type_enum, lane.type), PolygonType.VEHICLE_LANE))
            add_line(k, Side.CENTER, LineType.CENTERLINE, feature_points)
            relations += [(int(j), k, EdgeType.PRED) for j in lane.entry_lanes]
            relations += [(int(j), k, EdgeType.SUCC) for j in lane.exit_lanes]
            relations += [(int(nb.feature_id), k, EdgeType.LEFT) for nb in lane.left_neighbors]
            relations += [(int(nb.feature_id), k, EdgeType.RIGHT) for nb in lane.right_neighbors]
        elif kind == "road_line":
            poly_type.append(PolygonType.ROAD_LINE)
            mapped = WOMD_ROAD_LINE_TYPES.get(enum_name(line_type_enum, feature.road_line.type), LineType.UNKNOWN)
            add_line(k, Side.CENTER, mapped, feature_points)
        elif kind == "road_edge":
            poly_type.append(PolygonType.ROAD_EDGE)
            mapped = WOMD_ROAD_EDGE_TYPES.get(enum_name(edge_type_enum, feature.road_edge.type), LineType.UNKNOWN)
            add_line(k, Side.CENTER, mapped, feature_points)
        elif kind == "stop_sign":
            poly_type.append(PolygonType.STOP_SIGN)
            if feature.stop_sign.HasField("position"):
                p = feature.stop_sign.position
                add_line(k, Side.CENTER, LineType.NONE, np.array([[p.x, p.y, p.z]]))
        elif kind == "crosswalk":
            poly_type.append(PolygonType.CROSSWALK)
            polygon = feature_points
            if len(polygon):
                edge1, edge2 = crosswalk_edges(polygon)
                add_line(k, Side.LEFT, LineType.CROSSWALK, edge1)
                add_line(k, Side.RIGHT, LineType.CROSSWALK, edge2)
                add_line(k, Side.CENTER, LineType.CENTERLINE, (_resample(edge1, 2) + _resample(edge2, 2)) / 2.0)
        else:  # speed_bump, driveway: the closed outline
            poly_type.append(PolygonType.SPEED_BUMP if kind == "speed_bump" else PolygonType.DRIVEWAY)
            polygon = feature_points
            if len(polygon):
                add_line(k, Side.CENTER, LineType.NONE, np.concatenate([polygon, polygon[:1]]))

    points = np.concatenate(chunks) - origin if chunks else np.zeros((0, 3))
    if not np.isfinite(points).all():
        raise ValueError("map points have non-finite values")
    offsets = np.zeros(len(chunks) + 1, np.int64)
    offsets[1:] = np.cumsum([len(c) for c in chunks])
    position_of = {fid: i for i, fid in enumerate(ids)}
    lane_polys = {i for i, t in enumerate(poly_type) if t in (PolygonType.VEHICLE_LANE, PolygonType.BIKE_LANE)}
    edges = sorted(
        {(position_of[src], dst, et) for src, dst, et in relations if position_of.get(src, -1) in lane_polys}
    )
    edge_arr = np.array(edges, np.int64).reshape(-1, 3)
    return MapData(
        polygon_ids=np.asarray(ids, np.int64),
        polygon_type=np.asarray(poly_type, np.int8),
        polygon_is_intersection=np.full(len(ids), Intersection.UNKNOWN, np.int8),
        polyline_polygon=np.asarray(line_poly, np.int32),
        polyline_side=np.asarray(line_side, np.int8),
        polyline_type=np.asarray(line_type, np.int8),
        polyline_offsets=offsets.astype(np.int32),
        points=points.astype(np.float32),
        edge_index=np.ascontiguousarray(edge_arr[:, :2].T).astype(np.int32),
        edge_type=edge_arr[:, 2].astype(np.int8),
    )


def womd_signals(states: Any, origin: np.ndarray) -> TrafficSignals:
    """Every step's lane signal states as :class:`TrafficSignals` (rows in step, then proto order)."""
    rows = [
        (t, int(ls.lane), int(ls.state), ls.stop_point.x, ls.stop_point.y, ls.stop_point.z)
        for t, dms in enumerate(states)
        for ls in dms.lane_states
    ]
    arr = np.array(rows, dtype=np.float64).reshape(-1, 6)
    lane = np.array([r[1] for r in rows], np.int64)  # int64 ids exactly (not through float64)
    return TrafficSignals(
        step=arr[:, 0].astype(np.int16),
        lane_id=lane,
        state=arr[:, 2].astype(np.int8),
        stop_point=(arr[:, 3:6] - origin).astype(np.float32),
    )


def open_scenarios(path: str | os.PathLike[str], verify_crc: bool = True) -> list[Any]:
    """All ``Scenario`` messages of one TFRecord file (small files: tests, inspection)."""
    from smartpretrain.data.tfrecord import iter_records

    message = womd_message("Scenario")
    return [message.FromString(r) for r in iter_records(path, verify_crc=verify_crc)]


__all__ = [
    "WOMD_SPLIT_FOLDERS",
    "WomdConverter",
    "WomdFormatError",
    "crosswalk_edges",
    "looks_like_tf_example",
    "open_scenarios",
    "scenario_to_scene",
    "womd_map",
    "womd_signals",
]
