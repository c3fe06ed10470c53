"""Argoverse 2 motion-forecasting scenarios -> :class:`~smartpretrain.data.scene.Scene`.

Raw layout (the format itself: :mod:`smartpretrain.data.formats.av2`):
``{raw_root}/{split}/{scenario_id}/scenario_{scenario_id}.parquet`` plus ``log_map_archive_{scenario_id}.json`` in
the same folder.

The scenario table is read columnar with pyarrow and scattered into dense ``[N, T]`` arrays with numpy: no
per-row Python objects (the av2 package's ``load_argoverse_scenario_parquet`` builds one object per row and
costs ~15x more). The map JSON is parsed with orjson and follows ``ArgoverseStaticMap.from_json``'s semantics
(lane order, ``pedestrian_crossings`` optional) without building its per-point objects; lanes whose JSON has
no ``centerline`` get av2's own midpoint-ladder centerline (``compute_midpoint_line``). The equivalence with
the av2 package's readers is asserted by ``tests/data/test_av2_converter.py``.

Agents are ordered as their first row in the parquet (the av2 / QCNet order). The origin is the focal agent's
position at the current step (z = 0, AV2 tracks are 2-D).
"""

from __future__ import annotations

import operator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from av2.geometry.interpolate import NUM_CENTERLINE_INTERP_PTS, compute_midpoint_line, interp_arc

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
from smartpretrain.data.formats import FormatError, MissingColumnsError, av2
from smartpretrain.data.scene import AgentTracks, MapData, Scene
from smartpretrain.data.taxonomy import (
    AV2_AGENT_TYPES,
    AV2_LANE_MARK_TYPES,
    AV2_LANE_TYPES,
    AgentRole,
    AgentType,
    Dataset,
    EdgeType,
    Intersection,
    LineType,
    PolygonType,
    Side,
)


class Av2Converter(SceneConverter):
    """Converter for the Argoverse 2 motion-forecasting layout."""

    dataset = Dataset.AV2

    def __init__(self, raw_root: str | Path, split: str, current_step: int = av2.CURRENT_STEP) -> None:
        super().__init__(raw_root, split)
        self.current_step = current_step

    @property
    def split_dir(self) -> Path:
        return self.raw_root / self.split

    def list_items(self) -> list[str]:
        if not self.split_dir.is_dir():
            raise FileNotFoundError(f"{self.split_dir}: no such AV2 split folder (expected {{raw_root}}/{{split}}/)")
        return sorted(p.name for p in self.split_dir.iterdir() if p.is_dir())

    def item_path(self, item: str) -> Path:
        return av2.scenario_file(self.split_dir / item, item)

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "current_step": self.current_step}

    def item_files(self, item: str) -> list[Path]:
        """The scenario parquet and the map JSON (the one :meth:`convert` would read)."""
        scene_dir = self.split_dir / item
        map_path = av2.map_file(scene_dir, item)
        if not map_path.exists():
            found = av2.other_map_files(scene_dir)
            map_path = found[0] if found else map_path
        return [self.item_path(item), map_path]

    def convert(self, item: str) -> ConvertedScene:
        parquet_path = self.item_path(item)
        scene_dir = self.split_dir / item
        map_path = av2.map_file(scene_dir, item)
        try:
            map_bytes = map_path.read_bytes()
        except FileNotFoundError:
            found = av2.other_map_files(scene_dir)
            if not found:
                raise ConversionError(
                    DropReason.MISSING_FILE, map_path, f"map JSON ({av2.MAP_FILE_GLOB}) not found", item
                ) from None
            map_path = found[0]
            map_bytes = map_path.read_bytes()
        repairs: list[Repair] = []
        scene_meta, agents, origin = self._read_tracks(parquet_path, item, repairs)
        map_data = read_av2_map(map_path, origin, item, map_bytes)
        scene = Scene(agents=agents, map=map_data, origin=origin, dataset=Dataset.AV2, **scene_meta)
        return validated(scene, parquet_path, repairs)

    def _read_tracks(
        self, path: Path, item: str, repairs: list[Repair]
    ) -> tuple[dict[str, Any], AgentTracks, np.ndarray]:
        try:
            table = av2.read_scenario(path)
        except MissingColumnsError as exc:
            raise ConversionError(DropReason.MISSING_COLUMNS, path, f"missing columns {exc.missing}", item) from None
        except FileNotFoundError as exc:
            raise ConversionError(DropReason.MISSING_FILE, path, "scenario parquet not found", item) from exc
        except (pa.ArrowException, OSError) as exc:
            raise ConversionError(DropReason.CORRUPT_FILE, path, f"cannot read parquet: {exc}", item) from exc
        if table.num_rows == 0:
            raise ConversionError(DropReason.EMPTY_FILE, path, "scenario table has no rows", item)

        def codes(name: str) -> tuple[list[Any], np.ndarray]:
            try:
                return first_appearance_codes(table.column(name))
            except ValueError as exc:
                raise ConversionError(DropReason.CORRUPT_FILE, path, f"column {name!r}: {exc}", item) from exc

        def scalar(name: str) -> Any:
            values, _ = codes(name)
            if len(values) != 1:
                raise ConversionError(DropReason.CORRUPT_FILE, path, f"column {name!r} is not constant", item)
            return values[0]

        scenario_id = str(scalar("scenario_id"))
        focal_id = str(scalar("focal_track_id"))
        city = str(scalar("city"))
        num_timestamps = table.column("num_timestamps").to_numpy()
        if num_timestamps.min() != num_timestamps.max():
            raise ConversionError(DropReason.CORRUPT_FILE, path, "column 'num_timestamps' is not constant", item)
        num_steps = int(num_timestamps[0])
        if scenario_id != item:
            raise ConversionError(DropReason.CORRUPT_FILE, path, f"scenario_id {scenario_id!r} != folder name", item)

        track_ids, track = codes("track_id")
        step = table.column("timestep").to_numpy()
        n, t = len(track_ids), num_steps
        if step.min() < 0 or step.max() >= t:
            raise ConversionError(
                DropReason.WRONG_NUM_STEPS, path, f"timestep range [{step.min()}, {step.max()}] outside [0, {t})", item
            )
        flat = track * t + step
        valid = np.zeros(n * t, dtype=bool)
        valid[flat] = True
        if int(valid.sum()) != len(flat):
            raise ConversionError(DropReason.DUPLICATE_ROWS, path, "duplicate (track_id, timestep) rows", item)
        same_track = track[1:] == track[:-1]
        if np.any(same_track & (step[1:] <= step[:-1])):
            repairs.append(Repair(RepairKind.ROWS_OUT_OF_ORDER, str(path), "timesteps out of order within a track"))

        xy = np.stack([table.column("position_x").to_numpy(), table.column("position_y").to_numpy()], axis=1)
        vel = np.stack([table.column("velocity_x").to_numpy(), table.column("velocity_y").to_numpy()], axis=1)
        heading = table.column("heading").to_numpy()
        if not (np.isfinite(xy).all() and np.isfinite(vel).all() and np.isfinite(heading).all()):
            raise ConversionError(DropReason.NON_FINITE_VALUES, path, "NaN/inf in position, velocity or heading", item)

        # Per-track attributes from each track's first row.
        first_row = np.full(n, len(track), dtype=np.int64)
        np.minimum.at(first_row, track, np.arange(len(track)))
        type_labels, type_codes = codes("object_type")
        raw_types = [type_labels[c] for c in type_codes[first_row]]
        categories = table.column("object_category").to_numpy()
        agent_type, unknown = map_labels(AV2_AGENT_TYPES, raw_types, AgentType.UNKNOWN)
        repairs += [Repair(RepairKind.UNKNOWN_OBJECT_TYPE, str(path), f"object_type {raw_types[i]!r}") for i in unknown]
        role = categories[first_row]
        if np.any((role < AgentRole.FRAGMENT) | (role > AgentRole.FOCAL)):
            raise ConversionError(
                DropReason.CORRUPT_FILE, path, f"object_category outside 0-3: {np.unique(role)}", item
            )
        role = role.astype(np.int8)
        if focal_id not in track_ids:
            raise ConversionError(DropReason.NO_FOCAL_AGENT, path, f"focal_track_id {focal_id!r} has no rows", item)
        focal = track_ids.index(focal_id)
        num_focal = int((role == AgentRole.FOCAL).sum())
        if num_focal > 1:
            raise ConversionError(
                DropReason.MULTIPLE_FOCAL_AGENTS, path, f"{num_focal} tracks have category FOCAL", item
            )
        role[focal] = AgentRole.FOCAL

        valid = valid.reshape(n, t)
        if not valid[focal, self.current_step]:
            raise ConversionError(
                DropReason.NO_FOCAL_AGENT,
                path,
                f"focal track {focal_id!r} unobserved at step {self.current_step}",
                item,
            )
        origin_xy = xy[np.flatnonzero(flat == focal * t + self.current_step)[0]]
        origin = np.array([origin_xy[0], origin_xy[1], 0.0], dtype=np.float64)

        position = np.zeros((n * t, 3), np.float32)
        position[flat, :2] = xy - origin_xy
        velocity = np.zeros((n * t, 2), np.float32)
        velocity[flat] = vel
        heading_dense = np.zeros(n * t, np.float32)
        heading_dense[flat] = heading
        agents = AgentTracks(
            ids=track_ids,
            type=agent_type,
            role=role,
            is_sdc=np.array([tid == av2.SDC_TRACK_ID for tid in track_ids], dtype=bool),
            position=position.reshape(n, t, 3),
            heading=heading_dense.reshape(n, t),
            velocity=velocity.reshape(n, t, 2),
            valid=valid,
        )
        meta = {"scenario_id": scenario_id, "city": city, "num_steps": num_steps, "current_step": self.current_step}
        return meta, agents, origin


_XYZ = operator.itemgetter("x", "y", "z")


def first_appearance_codes(column: pa.ChunkedArray) -> tuple[list[Any], np.ndarray]:
    """Distinct values of a column in order of first appearance, and each row's int64 code into them.

    Works from the dictionary parquet already holds (``read_dictionary``) whatever its internal order, and
    falls back to hashing for multi-chunk or plain columns. Nulls are refused (``ValueError``).
    """
    if column.null_count:
        raise ValueError(f"{column.null_count} null values")
    if column.num_chunks == 1 and pa.types.is_dictionary(column.type):
        array = column.chunk(0)
    else:
        plain = column.cast(column.type.value_type) if pa.types.is_dictionary(column.type) else column
        array = pc.dictionary_encode(plain).combine_chunks()
    values = array.dictionary.to_pylist()
    raw = array.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    used, first = np.unique(raw, return_index=True)
    order = used[np.argsort(first, kind="stable")]
    remap = np.empty(len(values), np.int64)
    remap[order] = np.arange(len(order))
    return [values[c] for c in order], remap[raw]


def _xyz(points: list[dict[str, float]]) -> np.ndarray:
    return np.array(list(map(_XYZ, points)), dtype=np.float64).reshape(-1, 3)


def crosswalk_centerline(edge1: np.ndarray, edge2: np.ndarray) -> np.ndarray:
    """Mid-line of a crosswalk: the mean of its two edges, resampled to a common point count when they differ."""
    if len(edge1) != len(edge2):
        num = max(len(edge1), len(edge2))
        edge1, edge2 = interp_arc(num, edge1), interp_arc(num, edge2)
    return (edge1 + edge2) / 2.0


def read_av2_map(path: Path, origin: np.ndarray, scenario_id: str | None = None, raw: bytes | None = None) -> MapData:
    """Read an AV2 ``log_map_archive_*.json`` into :class:`MapData` relative to ``origin``.

    Polygons: the lane segments in file order, then the pedestrian crossings in file order. Topology edges
    refer only to lanes present in the file (neighbours outside the local map are dropped, as av2 does).
    """
    try:
        lanes, crossings = av2.read_map(path, raw)
    except FormatError as exc:
        raise ConversionError(DropReason.BAD_MAP, path, exc.detail, scenario_id) from exc

    ids: list[int] = []
    poly_type: list[int] = []
    is_int: list[int] = []
    line_polygon: list[int] = []
    line_side: list[int] = []
    line_type: list[int] = []
    raw_lines: list[list[dict[str, float]]] = []  # converted to one array at the end (one C-level pass)
    computed: dict[int, np.ndarray] = {}  # polyline index -> centerline computed from the boundaries

    def add_line(polygon: int, side: Side, kind: LineType, pts: list[dict[str, float]]) -> None:
        line_polygon.append(polygon)
        line_side.append(side)
        line_type.append(kind)
        raw_lines.append(pts)

    try:
        for k, lane in enumerate(lanes):
            ids.append(int(lane["id"]))
            poly_type.append(AV2_LANE_TYPES[lane["lane_type"]])
            is_int.append(Intersection.YES if lane["is_intersection"] else Intersection.NO)
            add_line(k, Side.LEFT, AV2_LANE_MARK_TYPES[lane["left_lane_mark_type"]], lane["left_lane_boundary"])
            add_line(k, Side.RIGHT, AV2_LANE_MARK_TYPES[lane["right_lane_mark_type"]], lane["right_lane_boundary"])
            center = lane.get("centerline")
            if not center:
                left, right = _xyz(lane["left_lane_boundary"]), _xyz(lane["right_lane_boundary"])
                center_pts, _ = compute_midpoint_line(left, right, NUM_CENTERLINE_INTERP_PTS)
                if center_pts.shape[1] == 2:  # av2 returns 2-D for pivot (cul-de-sac) lanes
                    center_pts = np.concatenate([center_pts, np.zeros((len(center_pts), 1))], axis=1)
                computed[len(raw_lines)] = center_pts
                center = []
            add_line(k, Side.CENTER, LineType.CENTERLINE, center)
        for crossing in crossings:
            k = len(ids)
            ids.append(int(crossing["id"]))
            poly_type.append(PolygonType.CROSSWALK)
            is_int.append(Intersection.UNKNOWN)
            add_line(k, Side.LEFT, LineType.CROSSWALK, crossing["edge1"])
            add_line(k, Side.RIGHT, LineType.CROSSWALK, crossing["edge2"])
            computed[len(raw_lines)] = crosswalk_centerline(_xyz(crossing["edge1"]), _xyz(crossing["edge2"]))
            add_line(k, Side.CENTER, LineType.CENTERLINE, [])
        counts = np.array([len(x) for x in raw_lines], dtype=np.int64)
        for index, pts in computed.items():
            counts[index] = len(pts)
        flat = np.fromiter(chain.from_iterable(map(_XYZ, chain.from_iterable(raw_lines))), np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise ConversionError(DropReason.BAD_MAP, path, f"malformed map element: {exc!r}", scenario_id) from exc

    offsets = np.zeros(len(raw_lines) + 1, np.int32)
    offsets[1:] = np.cumsum(counts)
    points = np.empty((int(offsets[-1]), 3), np.float64)
    if computed:
        is_parsed = np.ones(len(raw_lines), bool)
        is_parsed[list(computed)] = False
        points[np.repeat(is_parsed, counts)] = flat.reshape(-1, 3)
        for index, pts in computed.items():
            points[offsets[index] : offsets[index + 1]] = pts
    else:
        points[:] = flat.reshape(-1, 3)

    # Topology: (other lane id, this lane, relation) for every listed relation; kept when the other lane is local.
    relations = [
        (other, k, kind)
        for k, lane in enumerate(lanes)
        for kind, others in (
            (EdgeType.PRED, lane.get("predecessors") or ()),
            (EdgeType.SUCC, lane.get("successors") or ()),
            (EdgeType.LEFT, () if lane.get("left_neighbor_id") is None else (lane["left_neighbor_id"],)),
            (EdgeType.RIGHT, () if lane.get("right_neighbor_id") is None else (lane["right_neighbor_id"],)),
        )
        for other in others
    ]
    position = {lane_id: k for k, lane_id in enumerate(ids[: len(lanes)])}
    try:
        edges = [(j, k, kind) for other, k, kind in relations if (j := position.get(int(other))) is not None]
    except (TypeError, ValueError) as exc:
        raise ConversionError(DropReason.BAD_MAP, path, f"malformed lane topology: {exc!r}", scenario_id) from exc
    edge_array = np.asarray(edges, np.int64).reshape(-1, 3)

    if not np.isfinite(points).all():
        raise ConversionError(DropReason.BAD_MAP, path, "NaN/inf map coordinates", scenario_id)
    return MapData(
        polygon_ids=np.asarray(ids, np.int64),
        polygon_type=np.asarray(poly_type, np.int8),
        polygon_is_intersection=np.asarray(is_int, np.int8),
        polyline_polygon=np.asarray(line_polygon, np.int32),
        polyline_side=np.asarray(line_side, np.int8),
        polyline_type=np.asarray(line_type, np.int8),
        polyline_offsets=offsets,
        points=(points - origin).astype(np.float32),
        edge_index=np.ascontiguousarray(edge_array[:, :2].T, dtype=np.int32),
        edge_type=edge_array[:, 2].astype(np.int8),
    )
