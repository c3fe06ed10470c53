"""Synthetic scenes in the Argoverse 2 motion-forecasting layout (scenario parquet + ``log_map_archive`` JSON).

The files follow :mod:`smartpretrain.data.formats.av2` (the schema and map records the AV2 converter reads) and are
readable by the ``av2`` package.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from smartpretrain.data.formats import av2
from smartpretrain.data.synthetic.roads import RoadNetwork, build_road_network
from smartpretrain.data.synthetic.traffic import SimTracks, simulate_agents


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _const(value: object, n: int, typ: pa.DataType) -> pa.Array:
    return pa.array([value], type=typ).take(pa.array(np.zeros(n, np.int32)))


def _av2_point_lists(net: RoadNetwork, polylines: Sequence[np.ndarray]) -> list[list[av2.Point]]:
    """AV2 JSON points (``{"x", "y", "z"}``, cm precision, ground elevation as z) of many polylines at once."""
    xy = np.concatenate(polylines, axis=0)
    rows = np.round(np.column_stack([xy, net.elevation_at(xy)]), 2).tolist()
    points: list[av2.Point] = [{"x": x, "y": y, "z": z} for x, y, z in rows]
    bounds = np.concatenate([[0], np.cumsum([len(p) for p in polylines])]).tolist()
    return [points[b0:b1] for b0, b1 in itertools.pairwise(bounds)]


def _av2_map(net: RoadNetwork, rng: np.random.Generator) -> av2.StaticMap:
    """The ``log_map_archive`` JSON content of a network (AV2 field names and order)."""
    lane_base = int(rng.integers(10_000_000, 400_000_000))
    cw_base = int(rng.integers(1_000_000, 8_900_000))
    da_base = int(rng.integers(9_000_000, 9_900_000))

    def lid(i: int | None) -> int | None:
        return None if i is None else lane_base + i

    polylines = [poly for poly in net.drivable_areas]
    for ln in net.lanes:
        polylines.extend((ln.centerline, ln.left_boundary, ln.right_boundary))
    for cw in net.crosswalks:
        polylines.extend((cw.edge1, cw.edge2))
    pts = iter(_av2_point_lists(net, polylines))
    drivable: dict[str, av2.DrivableArea] = {
        str(da_base + j): {"area_boundary": next(pts), "id": da_base + j} for j in range(len(net.drivable_areas))
    }
    lanes: dict[str, av2.LaneSegment] = {}
    for i, ln in enumerate(net.lanes):
        center, left, right = next(pts), next(pts), next(pts)
        lanes[str(lane_base + i)] = {
            "centerline": center,
            "id": lane_base + i,
            "is_intersection": ln.is_intersection,
            "lane_type": ln.lane_type,
            "left_lane_boundary": left,
            "left_lane_mark_type": ln.left_mark_type,
            "left_neighbor_id": lid(ln.left_neighbor),
            "predecessors": [lane_base + p for p in ln.predecessors],
            "right_lane_boundary": right,
            "right_lane_mark_type": ln.right_mark_type,
            "right_neighbor_id": lid(ln.right_neighbor),
            "successors": [lane_base + s for s in ln.successors],
        }
    crossings: dict[str, av2.PedestrianCrossing] = {}
    for j in range(len(net.crosswalks)):
        edge1, edge2 = next(pts), next(pts)
        crossings[str(cw_base + j)] = {"edge1": edge1, "edge2": edge2, "id": cw_base + j}
    return {"drivable_areas": drivable, "lane_segments": lanes, "pedestrian_crossings": crossings}


def _av2_table(tracks: SimTracks, rng: np.random.Generator, scenario_id: str) -> pa.Table:
    """The scenario parquet table: one row per (track, observed step), tracks in category order."""
    n, nt = tracks.valid.shape
    first = np.argmax(tracks.valid, axis=1)
    ids = np.empty(n, np.int64)
    ids[np.lexsort((rng.random(n), first))] = int(rng.integers(10_000, 900_000)) + np.cumsum(rng.integers(1, 60, n))
    names = np.array([str(x) for x in ids.tolist()], dtype=object)
    names[tracks.av_index] = av2.SDC_TRACK_ID
    is_av = np.arange(n) == tracks.av_index
    perm = np.lexsort((ids, first, ~is_av, tracks.categories))
    a_idx, t_idx = np.nonzero(tracks.valid[perm])
    agent = perm[a_idx]
    rows = len(agent)
    take = pa.array(agent.astype(np.int32))
    start_ts = float(int(rng.integers(315_966_000, 315_990_000)) * 10**9 + int(rng.integers(0, 10**9)))
    city = av2.CITIES[int(rng.integers(len(av2.CITIES)))]
    map_id = int(rng.integers(10_000, 100_000))
    slice_id = _uuid(rng)
    cols = {
        "observed": pa.array(t_idx <= av2.CURRENT_STEP),
        "track_id": pa.array(names.tolist(), type=pa.string()).take(take),
        "object_type": pa.array(tracks.object_types.tolist(), type=pa.string()).take(take),
        "object_category": pa.array(tracks.categories[agent].astype(np.int64)),
        "timestep": pa.array(t_idx.astype(np.int64)),
        "position_x": pa.array(tracks.positions[agent, t_idx, 0]),
        "position_y": pa.array(tracks.positions[agent, t_idx, 1]),
        "heading": pa.array(tracks.headings[agent, t_idx]),
        "velocity_x": pa.array(tracks.velocities[agent, t_idx, 0]),
        "velocity_y": pa.array(tracks.velocities[agent, t_idx, 1]),
        "scenario_id": _const(scenario_id, rows, pa.string()),
        "start_timestamp": _const(start_ts, rows, pa.float64()),
        "end_timestamp": _const(start_ts + (nt - 1) * av2.DT * 1e9, rows, pa.float64()),
        "num_timestamps": _const(nt, rows, pa.int64()),
        "focal_track_id": _const(str(names[tracks.focal_index]), rows, pa.string()),
        "city": _const(city, rows, pa.string()),
        "map_id": _const(map_id, rows, pa.uint64()),
        "slice_id": _const(slice_id, rows, pa.string()),
    }
    return pa.table(cols, schema=av2.SCHEMA)


def _av2_scene(seed: int, index: int) -> tuple[str, pa.Table, av2.StaticMap]:
    rng = np.random.default_rng([seed, index])
    scenario_id = _uuid(rng)
    net = build_road_network(rng)
    tracks = simulate_agents(net, rng, av2.NUM_STEPS, av2.CURRENT_STEP)
    return scenario_id, _av2_table(tracks, rng, scenario_id), _av2_map(net, rng)


def generate_av2(
    root: str | Path,
    split: str = "train",
    num_scenes: int = 8,
    seed: int = 0,
    start_index: int = 0,
    progress: bool = False,
) -> list[Path]:
    """Write scenes ``start_index .. start_index + num_scenes - 1`` in the Argoverse 2 motion-forecasting layout.

    Each scene is ``{root}/{split}/{scenario_id}/scenario_{scenario_id}.parquet`` (110 steps, the AV2 columns and
    dtypes) plus ``log_map_archive_{scenario_id}.json``; both are readable by the ``av2`` package. The scenario id
    is a UUID derived from ``(seed, index)``. Files are written atomically. Returns the scenario directories.
    """
    out = Path(root) / split
    dirs = []
    indices = range(start_index, start_index + num_scenes)
    for index in tqdm(indices, desc=f"synthetic av2/{split}", unit="scene", disable=not progress):
        scenario_id, table, vector_map = _av2_scene(seed, index)
        scene_dir = out / scenario_id
        scene_dir.mkdir(parents=True, exist_ok=True)
        av2.write_scenario(av2.scenario_file(scene_dir, scenario_id), table)
        av2.write_map(av2.map_file(scene_dir, scenario_id), vector_map)
        dirs.append(scene_dir)
    return dirs
