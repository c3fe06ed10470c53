"""Synthetic driving scenes written in the real raw formats of Argoverse 2 and Argoverse 1.

The generator is the embedded default dataset of the README demo and of the large-scale benchmarks: it needs no
download, is fast (~10-20 ms per scene on one CPU core, files included) and deterministic. Scene ``i`` of a call
depends only on ``(seed, i)`` (``np.random.default_rng([seed, i])``), so generating scenes ``0..99`` in one call or
in chunks (``start_index``) writes identical files. The split name does not enter the seed: use different seeds
(or disjoint ``start_index`` ranges) for different splits.

A scene is built in two format-independent stages:

* :func:`build_road_network` lays out a small road network in a local frame, rotated and placed at a city-scale
  offset: straight two-way roads with two lanes per direction (plus, in some scenes, a bike lane and a parking
  strip), meeting at a 4-way or T intersection with straight / left / right connector lanes, lane topology
  (predecessors, successors, left / right neighbours of same-direction lanes), lane boundaries with lane-mark
  types, crosswalks at the intersection approaches (and sometimes mid-block), drivable areas and sidewalks.
* :func:`simulate_agents` moves agents on it for ``num_steps`` steps of 0.1 s: vehicles (cars, buses, a few
  motorcyclists) follow lane centerlines through successors, with a car-following model, a traffic light at the
  intersection (queues form at the stop line), speed behaviours (cruise, accelerate, brake, stopped, slow) and
  smooth lane changes; pedestrians cross at crosswalks, walk along sidewalks or stand; cyclists ride along the
  road edge; parked cars and static objects stand by the curb. Positions get ~2 cm noise; velocities are the
  finite differences of the noise-free positions and the heading is the direction of motion (the previous one
  is kept while nearly stopped). Roles follow AV2: one focal track (fully observed and moving), a few scored
  and unscored tracks (fully observed), the ego ``AV`` (unscored, fully observed) and track fragments (partial
  observation windows; they also vanish when they drive off the mapped area).

Two thin writers serialize a scene: :func:`generate_av2` (motion-forecasting parquet + ``log_map_archive`` JSON,
readable by the ``av2`` package) and :func:`generate_av1` (forecasting CSV with jittered 10 Hz timestamps, and
optionally one vector-map XML per city, see :func:`write_av1_vector_map`).

CLI::

    python -m smartpretrain.data.synthetic --format av2 --root DIR --split train --num-scenes 100 --seed 0
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from smartpretrain.io.atomic import atomic_output, atomic_write_bytes

try:  # orjson is a project dependency; fall back to the stdlib if it is missing
    import orjson
except ImportError:  # pragma: no cover
    orjson = None

__all__ = [
    "AV1_CITY_MAP_IDS",
    "AV2_CITIES",
    "AV2_SCHEMA",
    "AV1Lane",
    "Crosswalk",
    "Lane",
    "RoadNetwork",
    "SimTracks",
    "av1_map_path",
    "build_road_network",
    "generate_av1",
    "generate_av2",
    "main",
    "read_av1_vector_map",
    "simulate_agents",
    "write_av1_vector_map",
]

DT = 0.1
AV2_NUM_STEPS = 110
AV2_CURRENT_STEP = 49
AV1_NUM_STEPS = 50
AV1_CURRENT_STEP = 19
AV2_CITIES = ("austin", "dearborn", "miami", "pittsburgh", "palo-alto", "washington-dc")
AV1_CITY_MAP_IDS = {"MIA": 10316, "PIT": 10314}
AV1_COLUMNS = ("TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y", "CITY_NAME")

# AV1 scenes are laid out on a grid inside their city's map: scene i gets cell i (cells are far apart enough that
# networks never overlap), so one XML per city holds the lanes of every generated scene.
_AV1_CITY_BASE = {"MIA": (100.0, 2600.0), "PIT": (2000.0, 600.0)}
_AV1_CELL = 500.0
_AV1_GRID_COLS = 40
_AV1_LANE_ID_BASE = 10_000_000
_AV1_LANE_ID_STRIDE = 1000
_AV1_SIM_STEPS = 57  # 50 jittered steps last at most 49 * 0.11 s = 5.39 s

AV2_SCHEMA = pa.schema(
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

# Agent kinds used while simulating (which roles an agent may take).
_KIND_VEHICLE = 0  # lane-following motor vehicle: may be AV / focal
_KIND_MOBILE = 1  # pedestrian, cyclist: may be scored
_KIND_STATIC = 2  # parked / static objects

_SCORABLE_TYPES = ("vehicle", "pedestrian", "cyclist", "motorcyclist", "bus")
_MOVING_SPEED = 0.3  # m/s: below it the previous heading is kept
_POS_NOISE = 0.02  # m


# ---------------------------------------------------------------------------------------------------------------
# Geometry helpers
# ---------------------------------------------------------------------------------------------------------------


def _unit(theta: float) -> np.ndarray:
    return np.array([math.cos(theta), math.sin(theta)])


def _bezier(p0: np.ndarray, t0: np.ndarray, p3: np.ndarray, t3: np.ndarray, n: int, ctrl: float) -> np.ndarray:
    """Cubic Bezier from ``p0`` (heading ``t0``) to ``p3`` (heading ``t3``); control arms ``ctrl`` x chord."""
    c = ctrl * float(np.linalg.norm(p3 - p0))
    p1, p2 = p0 + t0 * c, p3 - t3 * c
    u = np.linspace(0.0, 1.0, n)[:, None]
    v = 1.0 - u
    return v**3 * p0 + 3 * v * v * u * p1 + 3 * v * u * u * p2 + u**3 * p3


def _left_normals(points: np.ndarray) -> np.ndarray:
    """Unit left normals at the vertices of a polyline ``[n, 2]`` (vertex tangent = mean of adjacent segments)."""
    d = np.diff(points, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    t = np.empty_like(points)
    t[0], t[-1] = d[0], d[-1]
    t[1:-1] = d[:-1] + d[1:]
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
    return np.stack([-t[:, 1], t[:, 0]], axis=1)


def _offset(points: np.ndarray, dist: float) -> np.ndarray:
    """Polyline shifted by ``dist`` to its left (negative: to its right)."""
    return points + _left_normals(points) * dist


def _arclength(points: np.ndarray) -> np.ndarray:
    d = np.diff(points, axis=0)
    cum = np.empty(len(points))
    cum[0] = 0.0
    np.cumsum(np.hypot(d[:, 0], d[:, 1]), out=cum[1:])
    return cum


def _concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate polylines that share their junction points (the duplicated points are dropped)."""
    out = [parts[0]]
    for p in parts[1:]:
        prev = out[-1][-1]
        same = abs(p[0, 0] - prev[0]) < 1e-6 and abs(p[0, 1] - prev[1]) < 1e-6
        out.append(p[1:] if same else p)
    return np.concatenate(out, axis=0)


def _eval_path(points: np.ndarray, cum: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Points at arc lengths ``s`` along a polyline, extrapolated linearly before its start and after its end."""
    out = np.stack([np.interp(s, cum, points[:, 0]), np.interp(s, cum, points[:, 1])], axis=-1)
    lo, hi = s < 0.0, s > cum[-1]
    if lo.any():
        t0 = (points[1] - points[0]) / max(cum[1] - cum[0], 1e-9)
        out[lo] = points[0] + s[lo, None] * t0
    if hi.any():
        t1 = (points[-1] - points[-2]) / max(cum[-1] - cum[-2], 1e-9)
        out[hi] = points[-1] + (s[hi, None] - cum[-1]) * t1
    return out


def _tangent_heading(points: np.ndarray, cum: np.ndarray, s: float) -> float:
    a, b = _eval_path(points, cum, np.array([s - 0.5, s + 0.5]))
    return math.atan2(b[1] - a[1], b[0] - a[0])


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


# ---------------------------------------------------------------------------------------------------------------
# Road network
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Lane:
    """A lane segment in world coordinates. Neighbour / topology references are indices into the lane list."""

    centerline: np.ndarray
    left_boundary: np.ndarray
    right_boundary: np.ndarray
    lane_type: str = "VEHICLE"  # AV2 LaneType: VEHICLE, BIKE, BUS
    is_intersection: bool = False
    turn_direction: str = "NONE"  # NONE, LEFT, RIGHT (AV1 vocabulary)
    has_traffic_control: bool = False
    left_mark_type: str = "NONE"  # AV2 LaneMarkType values
    right_mark_type: str = "NONE"
    left_neighbor: int | None = None
    right_neighbor: int | None = None
    predecessors: list[int] = field(default_factory=list)
    successors: list[int] = field(default_factory=list)


@dataclass
class Crosswalk:
    """A pedestrian crossing: two parallel edges across the road, and the path a pedestrian walks across it."""

    edge1: np.ndarray  # [2, 2]
    edge2: np.ndarray  # [2, 2]
    walk: np.ndarray  # [2, 2] from one sidewalk to the other
    along: np.ndarray  # [2] unit direction of the road it crosses


@dataclass
class _Chain:
    """Consecutive lane segments of one arm, direction and lateral slot, in travel order."""

    lanes: list[int]
    points: np.ndarray
    cum: np.ndarray
    inbound: bool
    arm: int
    kind: str  # inner, outer, bike
    stop_pos: float  # arc length of the stop line along the chain (inbound), inf otherwise
    group: int  # traffic-light group of the arm
    exits: list[tuple[int, int, str]] = field(default_factory=list)  # (connector lane, exit chain, turn)

    @property
    def length(self) -> float:
        return float(self.cum[-1])


@dataclass
class _Arm:
    d: np.ndarray  # unit direction from the intersection outwards (world)
    nr: np.ndarray  # unit right normal of d (world)
    start: float  # distance of the arm's first lane point from the centre
    length: float


@dataclass
class RoadNetwork:
    """A small road network in world coordinates, with what the agent simulation needs to drive on it."""

    lanes: list[Lane]
    crosswalks: list[Crosswalk]
    drivable_areas: list[np.ndarray]  # polygons [n, 2], not closed
    sidewalks: list[np.ndarray]  # polylines [n, 2]
    center: np.ndarray  # world position of the intersection centre
    rotation: float
    extent: float  # radius (m) around ``center`` that the network covers
    lane_width: float
    road_half_width: float
    four_way: bool
    elevation: tuple[float, float, float]  # z = z0 + gx * (x - cx) + gy * (y - cy)
    chains: list[_Chain] = field(default_factory=list, repr=False)
    arms: list[_Arm] = field(default_factory=list, repr=False)
    num_groups: int = 2
    curb_offset: float = 0.0  # lateral offset of parked cars from the road axis (0: no parking strip)
    has_bike_lanes: bool = False

    def elevation_at(self, xy: np.ndarray) -> np.ndarray:
        """Ground height (m) at world points ``xy`` ``[..., 2]``."""
        z0, gx, gy = self.elevation
        return z0 + gx * (xy[..., 0] - self.center[0]) + gy * (xy[..., 1] - self.center[1])


def _straight_lane(
    p0: np.ndarray, p1: np.ndarray, width: float, spacing: float = 5.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centerline and left / right boundaries of a straight lane from ``p0`` to ``p1``."""
    delta = p1 - p0
    length = math.hypot(delta[0], delta[1])
    n = max(2, math.ceil(length / spacing) + 1)
    center = p0 + np.linspace(0.0, 1.0, n)[:, None] * delta
    left = np.array([-delta[1], delta[0]]) * (0.5 * width / max(length, 1e-9))
    return center, center + left, center - left


def build_road_network(
    rng: np.random.Generator, origin: Sequence[float] | None = None, rotation: float | None = None
) -> RoadNetwork:
    """Lay out a random intersection network (4-way or T) centred at ``origin`` (random city-scale if None).

    Arms are straight two-way roads (2 lanes per direction, sometimes a bike lane and a parking strip) split into
    2-4 lane segments each, 60-110 m long, at roughly right angles; connectors through the intersection go
    straight (both lanes), left (inner lane) and right (outer lane). Lane width is ~3.3-3.8 m. Right-hand traffic.
    """
    if origin is None:
        origin = rng.uniform(-3000.0, 3000.0, 2)
    o = np.asarray(origin, dtype=np.float64)
    theta = float(rng.uniform(-math.pi, math.pi)) if rotation is None else float(rotation)

    w = float(rng.uniform(3.3, 3.8))
    has_bike = bool(rng.random() < 0.35)
    has_park = bool(rng.random() < 0.5)
    bike_w = 1.6
    veh_edge = 2.0 * w
    road_hw = veh_edge + (bike_w if has_bike else 0.0) + (2.4 if has_park else 0.4)
    four_way = bool(rng.random() < 0.7)
    base = np.array([0.0, 0.5, 1.0, 1.5]) * math.pi
    if not four_way:
        base = np.delete(base, rng.integers(4))
    angles = base + rng.uniform(-0.12, 0.12, len(base))
    gaps = np.diff(np.append(angles, angles[0] + 2 * math.pi))
    h = road_hw / math.tan(float(gaps.min()) / 2.0) + float(rng.uniform(1.5, 4.0))
    yellow = str(rng.choice(["DOUBLE_SOLID_YELLOW", "DASHED_YELLOW", "SOLID_YELLOW"], p=[0.6, 0.2, 0.2]))
    outer_right = "SOLID_WHITE" if (has_bike or has_park or rng.random() < 0.6) else "NONE"
    groups = [round(float(b) / (0.5 * math.pi)) % 2 for b in base]

    lanes: list[Lane] = []
    slots = [("inner", 0.5 * w, w), ("outer", 1.5 * w, w)]
    if has_bike:
        slots.append(("bike", veh_edge + 0.5 * bike_w, bike_w))
    kinds = [k for k, _, _ in slots]
    offsets = {k: off for k, off, _ in slots}
    widths = {k: wd for k, _, wd in slots}
    if four_way:
        nseg_choices = (2,) if has_bike else (2, 3)
    else:
        nseg_choices = (3,) if has_bike else (3, 4)

    chains: list[_Chain] = []
    chain_index: dict[tuple[int, bool, str], int] = {}
    arms: list[_Arm] = []
    crosswalks: list[Crosswalk] = []
    sidewalks: list[np.ndarray] = []
    drivable: list[np.ndarray] = []
    inter: list[np.ndarray] = []
    cw_flags = rng.random(len(angles)) < 0.85  # which approaches get a crosswalk (at least two)
    if cw_flags.sum() < 2:
        cw_flags[:2] = True

    for a, th in enumerate(angles):
        d = _unit(float(th) + theta)  # world direction of the arm, from the intersection outwards
        nr = np.array([d[1], -d[0]])  # right of d: outbound lanes are on this side
        length = float(rng.uniform(60.0, 110.0))
        nseg = int(rng.choice(nseg_choices))
        frac = rng.uniform(0.6, 1.4, nseg)
        cuts = h + length * np.concatenate([[0.0], np.cumsum(frac) / frac.sum()])
        arms.append(_Arm(d=d, nr=nr, start=h, length=length))
        seg_ids: dict[tuple[bool, str], list[int]] = {}  # (inbound, slot) -> lane per segment j (s increasing)
        for kind, off, width in slots:
            lane_type = "BIKE" if kind == "bike" else "VEHICLE"
            for inbound in (False, True):
                ids = []
                for j in range(nseg):
                    a0, a1 = o + d * cuts[j], o + d * cuts[j + 1]
                    if inbound:
                        center, left, right = _straight_lane(a1 - nr * off, a0 - nr * off, width)
                    else:
                        center, left, right = _straight_lane(a0 + nr * off, a1 + nr * off, width)
                    near = inbound and j == 0
                    between = "SOLID_WHITE" if near else "DASHED_WHITE"
                    if kind == "inner":
                        marks = (yellow, between)
                    elif kind == "outer":
                        marks = (between, outer_right)
                    else:
                        marks = ("SOLID_WHITE", "NONE")
                    lanes.append(
                        Lane(
                            center,
                            left,
                            right,
                            lane_type=lane_type,
                            has_traffic_control=near,
                            left_mark_type=marks[0],
                            right_mark_type=marks[1],
                        )
                    )
                    ids.append(len(lanes) - 1)
                seg_ids[(inbound, kind)] = ids
        # Topology along the arm, and same-direction neighbours.
        for inbound in (False, True):
            for kind in kinds:
                ids = seg_ids[(inbound, kind)]
                for u, v in itertools.pairwise(ids[::-1] if inbound else ids):
                    lanes[u].successors.append(v)
                    lanes[v].predecessors.append(u)
            for j in range(nseg):
                for left_id, right_id in itertools.pairwise([seg_ids[(inbound, k)][j] for k in kinds]):
                    lanes[left_id].right_neighbor = right_id
                    lanes[right_id].left_neighbor = left_id
        # Crosswalk at the approach (the stop line is behind it), maybe one mid-block.
        cw_spans = []
        if cw_flags[a]:
            s1 = h + float(rng.uniform(0.3, 0.8))
            cw_spans.append((s1, s1 + float(rng.uniform(3.0, 4.5))))
            stop_s = cw_spans[-1][1] + 1.0
        else:
            stop_s = h + 1.0
        if length >= 75.0 and rng.random() < 0.35:
            sm = h + length * float(rng.uniform(0.45, 0.7))
            cw_spans.append((sm, sm + float(rng.uniform(3.0, 4.5))))
        for s1, s2 in cw_spans:
            p1, p2, pc = o + d * s1, o + d * s2, o + d * (0.5 * (s1 + s2))
            crosswalks.append(
                Crosswalk(
                    edge1=np.stack([p1 + nr * road_hw, p1 - nr * road_hw]),
                    edge2=np.stack([p2 + nr * road_hw, p2 - nr * road_hw]),
                    walk=np.stack([pc + nr * (road_hw + 1.5), pc - nr * (road_hw + 1.5)]),
                    along=d,
                )
            )
        near_end, far_end = o + d * h, o + d * (h + length)
        for side in (1.0, -1.0):
            lat = side * nr * (road_hw + 2.0)
            sidewalks.append(np.stack([near_end + d + lat, far_end + lat]))
        drivable.append(
            np.stack([near_end + nr * road_hw, far_end + nr * road_hw, far_end - nr * road_hw, near_end - nr * road_hw])
        )
        inter.extend([near_end + nr * road_hw, near_end - nr * road_hw])  # counter-clockwise around the centre
        for kind in kinds:
            for inbound in (False, True):
                ids = seg_ids[(inbound, kind)]
                order = ids[::-1] if inbound else ids
                pts = _concat([lanes[i].centerline for i in order])
                stop = (h + length) - stop_s if inbound else math.inf
                chain_index[(a, inbound, kind)] = len(chains)
                chains.append(_Chain(order, pts, _arclength(pts), inbound, a, kind, stop, groups[a]))
    drivable.insert(0, np.stack(inter))

    # Connectors through the intersection: straight (every slot), left (inner lane), right (outer lane).
    for a, arm_a in enumerate(arms):
        for b, arm_b in enumerate(arms):
            if a == b:
                continue
            rel = math.remainder(float(angles[b] - angles[a] - math.pi), 2 * math.pi)
            turn = "NONE" if abs(rel) < 0.6 else ("LEFT" if rel > 0 else "RIGHT")
            if turn == "NONE":
                kinds_ab = kinds
            else:
                kinds_ab = ["inner"] if turn == "LEFT" else ["outer"]
            for kind in kinds_ab:
                cin = chains[chain_index[(a, True, kind)]]
                cout_i = chain_index[(b, False, kind)]
                p0 = o + arm_a.d * h - arm_a.nr * offsets[kind]
                p3 = o + arm_b.d * h + arm_b.nr * offsets[kind]
                if turn == "NONE":
                    center = _bezier(p0, -arm_a.d, p3, arm_b.d, 8, 1.0 / 3.0)
                else:
                    center = _bezier(p0, -arm_a.d, p3, arm_b.d, 12, 0.39)
                half = 0.5 * widths[kind]
                lanes.append(
                    Lane(
                        center,
                        _offset(center, half),
                        _offset(center, -half),
                        lane_type="BIKE" if kind == "bike" else "VEHICLE",
                        is_intersection=True,
                        turn_direction=turn,
                        has_traffic_control=True,
                    )
                )
                cid = len(lanes) - 1
                last_in, first_out = cin.lanes[-1], chains[cout_i].lanes[0]
                lanes[cid].predecessors.append(last_in)
                lanes[cid].successors.append(first_out)
                lanes[last_in].successors.append(cid)
                lanes[first_out].predecessors.append(cid)
                cin.exits.append((cid, cout_i, turn))

    z0 = float(rng.uniform(0.0, 60.0))
    gx, gy = (float(g) for g in rng.normal(0.0, 0.01, 2))
    curb = veh_edge + (bike_w if has_bike else 0.0) + 1.2 if has_park else 0.0
    return RoadNetwork(
        lanes=lanes,
        crosswalks=crosswalks,
        drivable_areas=drivable,
        sidewalks=sidewalks,
        center=o.copy(),
        rotation=theta,
        extent=h + max(arm.length for arm in arms),
        lane_width=w,
        road_half_width=road_hw,
        four_way=four_way,
        elevation=(z0, gx, gy),
        chains=chains,
        arms=arms,
        num_groups=2,
        curb_offset=curb,
        has_bike_lanes=has_bike,
    )


# ---------------------------------------------------------------------------------------------------------------
# Agent simulation
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class SimTracks:
    """Simulated tracks of one scene, as dense arrays over ``N`` agents and ``T`` steps of 0.1 s."""

    positions: np.ndarray  # [N, T, 2] float64, with observation noise
    headings: np.ndarray  # [N, T] float64, radians in [-pi, pi]
    velocities: np.ndarray  # [N, T, 2] float64, m/s
    valid: np.ndarray  # [N, T] bool, observed steps
    object_types: np.ndarray  # [N] str, AV2 object types
    categories: np.ndarray  # [N] int64, AV2 TrackCategory (0 fragment, 1 unscored, 2 scored, 3 focal)
    av_index: int
    focal_index: int

    @property
    def num_agents(self) -> int:
        return int(self.positions.shape[0])


class _AgentPool:
    """Accumulates noise-free agent trajectories before the roles are assigned."""

    def __init__(self, num_steps: int) -> None:
        self.num_steps = num_steps
        self.positions: list[np.ndarray] = []
        self.types: list[str] = []
        self.kinds: list[int] = []
        self.fallback: list[float] = []
        self.offmap: list[np.ndarray] = []
        self.turning: list[bool] = []

    def add(
        self,
        pos: np.ndarray,
        obj_type: str,
        kind: int,
        fallback: float,
        offmap: np.ndarray | None = None,
        turning: bool = False,
    ) -> None:
        self.positions.append(pos)
        self.types.append(obj_type)
        self.kinds.append(kind)
        self.fallback.append(fallback)
        self.offmap.append(np.zeros(self.num_steps, bool) if offmap is None else offmap)
        self.turning.append(turning)


def _route(
    net: RoadNetwork, chain_id: int, rng: np.random.Generator, straight_only: bool = False
) -> tuple[np.ndarray, np.ndarray, str, int, float]:
    """A chain continued through a random connector onto an exit chain (if the chain has exits).

    Returns the polyline, its arc length, the turn, the last chain of the route and the arc length at which that
    chain starts along the route.
    """
    c = net.chains[chain_id]
    if not c.exits:
        return c.points, c.cum, "NONE", chain_id, 0.0
    options = [e for e in c.exits if e[2] == "NONE"] if straight_only else list(c.exits)
    options = options or list(c.exits)
    weights = np.array([0.6 if e[2] == "NONE" else 0.2 for e in options])
    conn, exit_chain, turn = options[int(rng.choice(len(options), p=weights / weights.sum()))]
    connector = net.lanes[conn].centerline
    pts = _concat([c.points, connector, net.chains[exit_chain].points])
    cum = _arclength(pts)
    return pts, cum, turn, exit_chain, float(cum[len(c.points) + len(connector) - 2])


def _speed_profiles(
    rng: np.random.Generator, n: int, num_steps: int, obj_types: list[str], exit_only: np.ndarray, hero: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Desired speed ``[n, T]`` and initial speed ``[n]``: cruise, accelerate, brake, stopped or slow."""
    t = np.arange(num_steps) * DT
    base = rng.uniform(7.0, 14.0, n)
    is_bus = np.array([o == "bus" for o in obj_types])
    is_moto = np.array([o == "motorcyclist" for o in obj_types])
    base[is_bus] = rng.uniform(6.0, 10.0, int(is_bus.sum()))
    base[is_moto] = rng.uniform(9.0, 15.0, int(is_moto.sum()))
    beh = rng.choice(5, n, p=[0.5, 0.15, 0.15, 0.08, 0.12])  # cruise, accelerate, brake, stopped, slow
    beh[exit_only & (beh == 3)] = 0
    beh[hero] = 0
    base[hero] = rng.uniform(7.0, 11.0, int(hero.sum()))
    slow = beh == 4
    base[slow] = rng.uniform(1.5, 5.0, int(slow.sum()))
    wobble = rng.uniform(0.0, 0.5, n)[:, None] * np.sin(
        2 * math.pi * t / rng.uniform(4.0, 9.0, n)[:, None] + rng.uniform(0, 2 * math.pi, n)[:, None]
    )
    vd = base[:, None] + wobble
    v_init = vd[:, 0].copy()
    acc = beh == 1
    v0 = rng.uniform(0.0, 0.4, n) * base
    rate = rng.uniform(0.8, 2.0, n)
    vd = np.where(acc[:, None], np.minimum(base[:, None], v0[:, None] + rate[:, None] * t), vd)
    v_init[acc] = v0[acc]
    brk = beh == 2
    tb = rng.uniform(1.0, 0.7 * num_steps * DT, n)
    target = rng.uniform(0.0, 0.5, n) * base
    dec = rng.uniform(1.0, 3.0, n)
    braking = np.maximum(target[:, None], base[:, None] - dec[:, None] * (t - tb[:, None]))
    vd = np.where(brk[:, None] & (t >= tb[:, None]), braking, vd)
    stop = beh == 3
    vd[stop] = 0.0
    v_init[stop] = 0.0
    return np.clip(vd, 0.0, 15.0), np.clip(v_init, 0.0, 15.0)


def _simulate_vehicles(net: RoadNetwork, rng: np.random.Generator, pool: _AgentPool) -> None:
    """Lane-following motor vehicles with car following, a traffic light and lane changes.

    Each vehicle drives along its route (start chain, connector, exit chain) by arc length ``s``. A vehicle follows
    the nearest vehicle ahead that shares its start chain or its exit chain (compared in that chain's frame), with
    a Gipps-like safe speed; vehicles facing a red light stop before the stop line.
    """
    nt = pool.num_steps
    chains = net.chains
    veh_chains = [i for i, c in enumerate(chains) if c.kind != "bike"]
    p_chain = np.array([3.0 if chains[i].inbound else 1.0 for i in veh_chains])
    p_chain /= p_chain.sum()
    g0 = int(rng.integers(net.num_groups))
    occupied: dict[int, list[tuple[float, float]]] = {}
    spec: list[tuple[int, float, str, float]] = []  # chain, s0, type, length

    def try_add(ci: int, s0: float, obj_type: str, length: float) -> None:
        for so, lo in occupied.get(ci, []):
            if abs(s0 - so) < 0.5 * (length + lo) + 3.0:
                return
        occupied.setdefault(ci, []).append((s0, length))
        spec.append((ci, s0, obj_type, length))

    # A "hero" on a green approach near the map edge: a vehicle that surely drives through the intersection.
    green_in = [i for i in veh_chains if chains[i].inbound and chains[i].group == g0]
    try_add(int(rng.choice(green_in)), float(rng.uniform(0.0, 20.0)), "vehicle", 4.6)
    n_target = int(rng.integers(14, 33))
    for _ in range(4 * n_target):
        if len(spec) >= n_target:
            break
        ci = int(veh_chains[rng.choice(len(veh_chains), p=p_chain)])
        c = chains[ci]
        r = float(rng.random())
        if c.kind == "outer" and r < 0.06:
            obj_type, length = "bus", 12.0
        elif r > 0.96:
            obj_type, length = "motorcyclist", 2.2
        else:
            obj_type, length = "vehicle", float(rng.uniform(4.2, 5.2))
        if c.inbound:  # vehicles of the green approaches may already be inside the intersection
            hi = c.length + 8.0 if c.group == g0 else c.stop_pos - 2.0
        else:
            hi = c.length - 5.0
        try_add(ci, float(rng.uniform(0.0, hi)), obj_type, length)

    # Routes are decided up front: vehicles meet the ones already on their exit chain.
    routes = [_route(net, s[0], rng) for s in spec]
    chain_of = np.array([s[0] for s in spec])
    s0 = np.array([s[1] for s in spec])
    vlen = np.array([s[3] for s in spec])
    exit_of = np.array([r[3] for r in routes])
    off = np.array([r[4] for r in routes])
    same_start = chain_of[:, None] == chain_of[None, :]
    same_exit = (exit_of[:, None] == exit_of[None, :]) & ~same_start
    # gap_ij = s_j - s_i - shift_ij: the distance from i to j in their shared frame (+inf when unrelated).
    shift = np.where(same_start, 0.0, np.where(same_exit, off[None, :] - off[:, None], -np.inf))
    np.fill_diagonal(shift, -np.inf)
    pair_len = 0.5 * (vlen[:, None] + vlen[None, :]) + 2.0
    # Drop spawns overlapping a vehicle already placed on the same exit chain or connector.
    gap0 = s0[None, :] - s0[:, None] - shift
    near_exit = (s0 - off) > -15.0
    clash = same_exit & near_exit[:, None] & near_exit[None, :] & (np.abs(gap0) < pair_len)
    keep = np.ones(len(spec), bool)
    for i in range(1, len(spec)):
        keep[i] = not (clash[i, :i] & keep[:i]).any()
    idx = np.nonzero(keep)[0]
    n = idx.size
    spec = [spec[i] for i in idx]
    routes = [routes[i] for i in idx]
    chain_of, s0, vlen, off = chain_of[idx], s0[idx], vlen[idx], off[idx]
    same_exit = same_exit[np.ix_(idx, idx)]
    shift, pair_len = shift[np.ix_(idx, idx)], pair_len[np.ix_(idx, idx)]
    types = [s[2] for s in spec]
    inbound = np.array([chains[ci].inbound for ci in chain_of])
    hero = np.arange(n) == 0
    vd, v = _speed_profiles(rng, n, nt, types, ~inbound, hero)

    stop_raw = np.array([chains[ci].stop_pos for ci in chain_of])
    stop = np.where(s0 < stop_raw - 0.5, stop_raw, np.inf)
    group = np.where(np.isfinite(stop), [chains[ci].group for ci in chain_of], -1)
    # Traffic light: group g0 green, then (maybe) 3 s all-red and the other group green.
    switch = int(rng.integers(15, 2 * nt))
    green = np.full(nt, g0)
    green[switch:] = -1
    green[switch + 30 :] = 1 - g0
    red_sched = (group[:, None] >= 0) & (group[:, None] != green[None, :])  # [n, T] red light for the vehicle
    # Left turners yield to oncoming traffic (vehicles of the opposite approach that do not turn left).
    n_arms = len(net.arms)
    arm_of = np.array([chains[ci].arm for ci in chain_of])
    straight_arm = {ci: chains[e[1]].arm for ci, c in enumerate(chains) for e in c.exits if e[2] == "NONE"}
    opposite = np.array([straight_arm.get(int(ci), n_arms) for ci in chain_of])
    is_left = np.array([r[2] == "LEFT" for r in routes]) & np.isfinite(stop)
    oncoming_kind = inbound & ~is_left
    clear_after = stop_raw + 2.0 * net.arms[0].start  # past the intersection
    brake_b, tau, stop_b = 3.0, 1.0, 2.5
    rows = np.arange(n)

    def leader(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index of the vehicle ahead, and the shift + spacing to subtract from ``s[j] - s`` (inf: no leader)."""
        gap = s[None, :] - s[:, None] - shift
        gap[(gap <= 0.0) | (same_exit & ((s - off) < -30.0)[:, None])] = np.inf
        j = np.argmin(gap, axis=1)
        sub = np.where(np.isfinite(gap[rows, j]), shift[rows, j] + pair_len[rows, j], -np.inf)
        return j, sub, s[j] - s - sub

    # Initial speeds consistent with the light and the vehicle ahead.
    j, sub, gap = leader(s0)
    stop_at = np.where(red_sched[:, 0], stop - 1.0 - s0, np.inf)
    v = np.minimum(v, np.sqrt(2.0 * stop_b * np.maximum(stop_at, 0.0)))
    v = np.minimum(v, np.maximum(gap, 0.0) / tau)
    v = np.minimum(v, np.sqrt(v[j] ** 2 + 2.0 * brake_b * np.maximum(gap, 0.0)))

    s = s0.copy()
    s_hist = np.empty((n, nt))
    zeros = np.zeros(n)
    two_b, two_sb = 2.0 * brake_b, 2.0 * stop_b
    for k in range(nt):
        s_hist[:, k] = s
        if k == switch:  # vehicles too close to stop at the amber light go on
            committed = (group == g0) & ((stop - s) < v * v / 7.0 + 1.0)
            red_sched[committed, k:] = False
        if k % 4 == 0:  # leaders change slowly: look them up every 0.4 s
            j, sub, _ = leader(s)
        gap = s[j] - s - sub
        vl = v[j]
        v_safe = np.sqrt(np.maximum(vl * vl + two_b * (gap - v * tau), 0.0))
        target = np.minimum(vd[:, k], v_safe)
        coming = oncoming_kind & (s > stop_raw - 60.0) & (s < clear_after) & (v > 0.5)
        occupied = np.bincount(arm_of[coming], minlength=n_arms + 1) > 0
        halt = red_sched[:, k] | (is_left & occupied[opposite])
        stop_at = np.where(halt & (s < stop), stop - 1.0 - s, np.inf)
        target = np.minimum(target, np.sqrt(two_sb * np.maximum(stop_at, 0.0)))
        v_new = np.maximum(np.minimum(target, v + 2.5 * DT), np.maximum(v - 7.0 * DT, zeros))
        s = s + 0.5 * (v + v_new) * DT
        v = v_new

    speed = np.gradient(s_hist, DT, axis=1)
    for i in range(n):
        c = chains[int(chain_of[i])]
        pts, cum, turn, _, _ = routes[i]
        pos = _eval_path(pts, cum, s_hist[i])
        offmap = (s_hist[i] < -1.0) | (s_hist[i] > cum[-1] + 1.0)
        # Lane change to the same-direction neighbour on the arm (smooth lateral blend over 3-5 s).
        if c.inbound and types[i] != "bus" and rng.random() < 0.18:
            other_kind = "outer" if c.kind == "inner" else "inner"
            other = next(j for j, o in enumerate(chains) if o.arm == c.arm and o.inbound and o.kind == other_kind)
            dur = int(rng.integers(30, 50))
            head, tail = s_hist[i, : nt - dur], s_hist[i, dur:]
            ok_k = (head > 3.0) & (tail < c.stop_pos - 8.0) & (speed[i, : nt - dur] > 3.0)
            on_b = chain_of == other
            if on_b.any():  # the target lane must stay clear around the vehicle from the change on
                near = (np.abs(s_hist[on_b] - s_hist[i]) < 14.0).any(axis=0) & (s_hist[i] < c.length + 10.0)
                ok_k &= ~np.logical_or.accumulate(near[::-1])[::-1][: nt - dur]
            ok = np.nonzero(ok_k)[0]
            if ok.size:
                k0 = int(rng.choice(ok))
                pts_b, cum_b, turn, _, _ = _route(net, other, rng)
                alpha = _smoothstep((np.arange(nt) - k0) / dur)[:, None]
                pos = (1.0 - alpha) * pos + alpha * _eval_path(pts_b, cum_b, s_hist[i])
                offmap = (s_hist[i] < -1.0) | (s_hist[i] > cum_b[-1] + 1.0)
        pool.add(pos, types[i], _KIND_VEHICLE, _tangent_heading(pts, cum, float(s_hist[i, 0])), offmap, turn != "NONE")


def _simulate_cyclists(net: RoadNetwork, rng: np.random.Generator, pool: _AgentPool) -> None:
    nt = pool.num_steps
    t = np.arange(nt) * DT
    bikes = [i for i, c in enumerate(net.chains) if c.kind == "bike"]
    outers = [i for i, c in enumerate(net.chains) if c.kind == "outer"]
    for _ in range(int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1]))):
        ci = int(rng.choice(bikes if bikes else outers))
        pts = _route(net, ci, rng, straight_only=True)[0]
        if not bikes:
            pts = _offset(pts, -1.3)  # ride at the right edge of the outer lane
        cum = _arclength(pts)
        v = float(rng.uniform(3.0, 7.0))
        s = float(rng.uniform(0.0, net.chains[ci].length)) + v * t + 0.3 * np.sin(t * rng.uniform(0.5, 1.5))
        pool.add(
            _eval_path(pts, cum, s),
            "cyclist",
            _KIND_MOBILE,
            _tangent_heading(pts, cum, float(s[0])),
            (s < -1.0) | (s > cum[-1] + 1.0),
        )


def _simulate_pedestrians(net: RoadNetwork, rng: np.random.Generator, pool: _AgentPool) -> None:
    nt = pool.num_steps
    t = np.arange(nt) * DT
    n_ped = int(rng.integers(4, 15))
    for _ in range(n_ped):
        r = float(rng.random())
        if r < 0.55 and net.crosswalks:
            cw = net.crosswalks[int(rng.integers(len(net.crosswalks)))]
            a, b = (cw.walk[0], cw.walk[1]) if rng.random() < 0.5 else (cw.walk[1], cw.walk[0])
            e1, e2 = rng.uniform(4.0, 15.0, 2)
            s1, s2 = rng.choice([-1.0, 1.0], 2)
            pts = np.stack([a + s1 * e1 * cw.along, a, b, b + s2 * e2 * cw.along])
            start = float(rng.uniform(0.0, e1 + 4.0))
        elif r < 0.85:
            sw = net.sidewalks[int(rng.integers(len(net.sidewalks)))]
            pts = sw if rng.random() < 0.5 else sw[::-1]
            start = float(rng.uniform(0.0, float(np.linalg.norm(sw[1] - sw[0]))))
        else:
            sw = net.sidewalks[int(rng.integers(len(net.sidewalks)))]
            p = sw[0] + rng.random() * (sw[1] - sw[0])
            pos = np.repeat(p[None], nt, axis=0)
            pool.add(pos, "pedestrian", _KIND_MOBILE, float(rng.uniform(-math.pi, math.pi)))
            continue
        cum = _arclength(pts)
        speed = float(rng.uniform(1.0, 1.6)) * (1.0 + 0.05 * np.sin(t * rng.uniform(1.0, 3.0)))
        if rng.random() < 0.3:  # waiting at the kerb, then walking
            speed = np.where(t < rng.uniform(1.0, 6.0), 0.0, speed)
        s = start + np.concatenate([[0.0], np.cumsum(speed[:-1]) * DT])
        pos = _eval_path(pts, cum, s)
        offmap = np.linalg.norm(pos - net.center, axis=1) > net.extent + 5.0
        pool.add(pos, "pedestrian", _KIND_MOBILE, _tangent_heading(pts, cum, start), offmap)


def _simulate_static(net: RoadNetwork, rng: np.random.Generator, pool: _AgentPool) -> None:
    """Parked cars by the curb, and static objects (bikes, cones, unknown things) near the road edge."""
    nt = pool.num_steps

    def arm_point(lateral: float, margin: float = 6.0) -> tuple[np.ndarray, float]:
        arm = net.arms[int(rng.integers(len(net.arms)))]
        side = 1.0 if rng.random() < 0.5 else -1.0
        along = arm.start + float(rng.uniform(margin, arm.length - 3.0))
        p = net.center + arm.d * along + side * arm.nr * lateral
        direction = arm.d if side > 0 else -arm.d  # traffic direction on that side of the road
        return p, math.atan2(direction[1], direction[0])

    n_parked = int(rng.integers(2, 8)) if net.curb_offset > 0 else 0
    parked: list[np.ndarray] = []
    for _ in range(3 * n_parked):
        if len(parked) == n_parked:
            break
        p, heading = arm_point(net.curb_offset, margin=10.0)
        if any(math.hypot(*(p - q)) < 6.5 for q in parked):
            continue
        parked.append(p)
        pool.add(np.repeat(p[None], nt, axis=0), "vehicle" if rng.random() < 0.7 else "static", _KIND_STATIC, heading)
    extras = (
        ["static"] * int(rng.integers(0, 4))
        + ["riderless_bicycle"] * int(rng.integers(0, 3))
        + ["construction"] * int(rng.integers(0, 3))
        + ["background"] * int(rng.integers(0, 3))
        + ["unknown"] * int(rng.random() < 0.2)
    )
    for obj_type in extras:
        if obj_type == "construction":
            lateral = 2.0 * net.lane_width + float(rng.uniform(0.2, 0.6))
        else:
            lateral = net.road_half_width + float(rng.uniform(1.0, 4.0))
        p, heading = arm_point(lateral)
        pool.add(np.repeat(p[None], nt, axis=0), obj_type, _KIND_STATIC, heading + float(rng.normal(0.0, 0.3)))


def _motion(positions: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Velocities (central differences / 0.1 s) and headings (direction of motion, held while nearly stopped)."""
    nt = positions.shape[1]
    vel = np.gradient(positions, DT, axis=1)
    moving = np.linalg.norm(vel, axis=-1) > _MOVING_SPEED
    raw = np.arctan2(vel[..., 1], vel[..., 0])
    steps = np.arange(nt)
    last = np.maximum.accumulate(np.where(moving, steps, -1), axis=1)
    first = np.argmax(moving, axis=1)
    idx = np.where(last >= 0, last, first[:, None])
    heading = np.take_along_axis(raw, idx, axis=1)
    never = ~moving.any(axis=1)
    heading[never] = fallback[never, None]
    return vel, np.arctan2(np.sin(heading), np.cos(heading))


def simulate_agents(
    net: RoadNetwork, rng: np.random.Generator, num_steps: int = AV2_NUM_STEPS, current_step: int = AV2_CURRENT_STEP
) -> SimTracks:
    """Simulate 20-60 agents on ``net`` for ``num_steps`` steps of 0.1 s and assign AV2 roles.

    Returns noisy positions, headings and velocities with observation masks: the AV (``av_index``), the focal track
    (``focal_index``, a moving vehicle) and the scored / unscored tracks are observed at every step; fragments
    have partial windows (entering late, leaving early, or in between) and are not observed off the map.
    """
    nt = num_steps
    pool = _AgentPool(nt)
    _simulate_vehicles(net, rng, pool)
    _simulate_cyclists(net, rng, pool)
    _simulate_pedestrians(net, rng, pool)
    _simulate_static(net, rng, pool)

    clean = np.stack(pool.positions)
    types = np.array(pool.types)
    kinds = np.array(pool.kinds)
    offmap = np.stack(pool.offmap)
    turning = np.array(pool.turning)
    n = clean.shape[0]
    path_len = np.linalg.norm(np.diff(clean, axis=1), axis=-1).sum(axis=1)
    in_map = ~offmap.any(axis=1)
    is_car = (kinds == _KIND_VEHICLE) & (types == "vehicle")

    def pick(mask: np.ndarray, weights: np.ndarray | None = None) -> int | None:
        idx = np.nonzero(mask)[0]
        if idx.size == 0:
            return None
        p = None if weights is None else weights[idx] / weights[idx].sum()
        return int(rng.choice(idx, p=p))

    av = pick(is_car & in_map & (path_len > 3.0))
    if av is None:
        av = pick(is_car & in_map)
    if av is None:
        av = int(np.argmax(np.where(kinds == _KIND_VEHICLE, path_len, -1.0)))
    others = np.arange(n) != av
    dist_av = np.linalg.norm(clean[:, current_step] - clean[av, current_step], axis=-1)
    weights = (1.0 + 2.0 * turning) / (1.0 + dist_av / 30.0)
    focal = pick(is_car & in_map & others & (path_len >= max(5.0, 1.5 * nt * DT)), weights)
    if focal is None:
        focal = int(np.argmax(np.where((kinds == _KIND_VEHICLE) & others, path_len + 1e3 * in_map, -1.0)))

    categories = np.zeros(n, np.int64)
    categories[av] = 1
    categories[focal] = 3
    free = categories == 0
    dist_focal = np.linalg.norm(clean[:, current_step] - clean[focal, current_step], axis=-1)
    scorable = np.isin(types, _SCORABLE_TYPES) & in_map & free
    cand = np.nonzero(scorable & (dist_focal < 50.0))[0]
    if cand.size == 0:
        cand = np.nonzero(scorable)[0]
    if cand.size == 0:
        cand = np.nonzero(free)[0]
    n_scored = min(int(rng.integers(1, 6)), cand.size)
    categories[rng.choice(cand, n_scored, replace=False)] = 2
    cand = np.nonzero((categories == 0) & in_map)[0]
    n_unscored = min(int(rng.integers(1, 5)), max(cand.size - 1, 0))
    categories[rng.choice(cand, n_unscored, replace=False)] = 1

    # Observation windows of the fragments.
    steps = np.arange(nt)
    start = np.zeros(n, np.int64)
    end = np.full(n, nt - 1)
    frag = categories == 0
    m = int(frag.sum())
    shape = rng.integers(3, size=m)  # 0 enters late, 1 leaves early, 2 in between
    st = rng.integers(1, nt - 5, size=m)
    en = rng.integers(4, nt - 1, size=m)
    mid_len = rng.integers(5, max(nt // 2, 6), size=m)
    start[frag] = np.where(shape == 0, st, np.where(shape == 1, 0, np.minimum(st, nt - 8)))
    end[frag] = np.where(shape == 0, nt - 1, np.where(shape == 1, en, np.minimum(start[frag] + mid_len, nt - 2)))
    valid = (steps >= start[:, None]) & (steps <= end[:, None])
    valid[frag] &= ~offmap[frag]
    keep = (valid.sum(axis=1) >= 3) | ~frag
    remap = np.cumsum(keep) - 1

    vel, heading = _motion(clean[keep], np.array(pool.fallback)[keep])
    noisy = clean[keep] + rng.normal(0.0, _POS_NOISE, clean[keep].shape)
    return SimTracks(
        positions=noisy,
        headings=heading,
        velocities=vel,
        valid=valid[keep],
        object_types=types[keep],
        categories=categories[keep],
        av_index=int(remap[av]),
        focal_index=int(remap[focal]),
    )


# ---------------------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------------------


def _dumps(obj: Any) -> bytes:
    if orjson is not None:
        return orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":")).encode()  # pragma: no cover


def _uuid(rng: np.random.Generator) -> str:
    return str(uuid.UUID(bytes=rng.bytes(16), version=4))


def _const(value: Any, n: int, typ: pa.DataType) -> pa.Array:
    return pa.array([value], type=typ).take(pa.array(np.zeros(n, np.int32)))


def _av2_point_lists(net: RoadNetwork, polylines: Sequence[np.ndarray]) -> list[list[dict[str, float]]]:
    """AV2 JSON points (``{"x", "y", "z"}``, cm precision, ground elevation as z) of many polylines at once."""
    xy = np.concatenate(polylines, axis=0)
    rows = np.round(np.column_stack([xy, net.elevation_at(xy)]), 2).tolist()
    points = [{"x": x, "y": y, "z": z} for x, y, z in rows]
    bounds = np.concatenate([[0], np.cumsum([len(p) for p in polylines])]).tolist()
    return [points[b0:b1] for b0, b1 in itertools.pairwise(bounds)]


def _av2_map(net: RoadNetwork, rng: np.random.Generator) -> dict[str, Any]:
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
    drivable = {
        str(da_base + j): {"area_boundary": next(pts), "id": da_base + j} for j in range(len(net.drivable_areas))
    }
    lanes = {}
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
    crossings = {}
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
    names[tracks.av_index] = "AV"
    is_av = np.arange(n) == tracks.av_index
    perm = np.lexsort((ids, first, ~is_av, tracks.categories))
    a_idx, t_idx = np.nonzero(tracks.valid[perm])
    agent = perm[a_idx]
    rows = len(agent)
    take = pa.array(agent.astype(np.int32))
    start_ts = float(int(rng.integers(315_966_000, 315_990_000)) * 10**9 + int(rng.integers(0, 10**9)))
    city = AV2_CITIES[int(rng.integers(len(AV2_CITIES)))]
    map_id = int(rng.integers(10_000, 100_000))
    slice_id = _uuid(rng)
    cols = {
        "observed": pa.array(t_idx <= AV2_CURRENT_STEP),
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
        "end_timestamp": _const(start_ts + (nt - 1) * DT * 1e9, rows, pa.float64()),
        "num_timestamps": _const(nt, rows, pa.int64()),
        "focal_track_id": _const(str(names[tracks.focal_index]), rows, pa.string()),
        "city": _const(city, rows, pa.string()),
        "map_id": _const(map_id, rows, pa.uint64()),
        "slice_id": _const(slice_id, rows, pa.string()),
    }
    return pa.table(cols, schema=AV2_SCHEMA)


def _av2_scene(seed: int, index: int) -> tuple[str, pa.Table, dict[str, Any]]:
    rng = np.random.default_rng([seed, index])
    scenario_id = _uuid(rng)
    net = build_road_network(rng)
    tracks = simulate_agents(net, rng, AV2_NUM_STEPS, AV2_CURRENT_STEP)
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
        pq_path = scene_dir / f"scenario_{scenario_id}.parquet"
        with atomic_output(pq_path, make_parents=False) as tmp:
            pq.write_table(table, tmp)
        atomic_write_bytes(scene_dir / f"log_map_archive_{scenario_id}.json", _dumps(vector_map))
        dirs.append(scene_dir)
    return dirs


# ---------------------------------------------------------------------------------------------------------------
# Argoverse 1
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class AV1Lane:
    """One ``<way>`` of an Argoverse 1 vector map: a lane centerline ``[n, 2]`` or ``[n, 3]`` and its attributes."""

    lane_id: int
    centerline: np.ndarray
    has_traffic_control: bool = False
    turn_direction: str = "NONE"  # NONE, LEFT, RIGHT
    is_intersection: bool = False
    l_neighbor_id: int | None = None
    r_neighbor_id: int | None = None
    predecessors: list[int] = field(default_factory=list)
    successors: list[int] = field(default_factory=list)


def _xml_num(v: float) -> str:
    return repr(round(float(v), 2))


def _xml_id(lane_id: int | None) -> str:
    return "None" if lane_id is None else str(int(lane_id))


def write_av1_vector_map(path: str | Path, lanes: Sequence[AV1Lane]) -> None:
    """Write an Argoverse 1 vector map XML (``<node>`` elements, then one ``<way lane_id>`` per lane).

    A 3-column centerline writes the third column as the nodes' ``height``. Node ids are numbered from 0 in lane
    order. The file is written atomically.
    """
    nodes = []
    ways = []
    nid = 0
    for lane in lanes:
        cl = np.asarray(lane.centerline, dtype=np.float64)
        if cl.ndim != 2 or cl.shape[1] not in (2, 3) or cl.shape[0] < 2:
            raise ValueError(f"lane {lane.lane_id}: centerline must be [n>=2, 2|3], got {cl.shape}")
        if lane.turn_direction not in ("NONE", "LEFT", "RIGHT"):
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


def read_av1_vector_map(path: str | Path) -> list[AV1Lane]:
    """Parse an Argoverse 1 vector map XML back into :class:`AV1Lane` records (in file order)."""
    root = ET.parse(path).getroot()
    nodes: dict[str, list[float]] = {}
    for node in root.iter("node"):
        xyz = [float(node.attrib["x"]), float(node.attrib["y"])]
        if "height" in node.attrib:
            xyz.append(float(node.attrib["height"]))
        nodes[node.attrib["id"]] = xyz
    lanes = []
    for way in root.iter("way"):
        tags: dict[str, str] = {}
        preds, succs, refs = [], [], []
        for child in way:
            if child.tag == "nd":
                refs.append(nodes[child.attrib["ref"]])
            elif child.tag == "tag":
                k, v = child.attrib["k"], child.attrib["v"]
                if k == "predecessor":
                    preds.append(int(v))
                elif k == "successor":
                    succs.append(int(v))
                else:
                    tags[k] = v
        lanes.append(
            AV1Lane(
                lane_id=int(way.attrib["lane_id"]),
                centerline=np.array(refs, dtype=np.float64),
                has_traffic_control=tags.get("has_traffic_control") == "True",
                turn_direction=tags.get("turn_direction", "NONE"),
                is_intersection=tags.get("is_intersection") == "True",
                l_neighbor_id=None if tags.get("l_neighbor_id", "None") == "None" else int(tags["l_neighbor_id"]),
                r_neighbor_id=None if tags.get("r_neighbor_id", "None") == "None" else int(tags["r_neighbor_id"]),
                predecessors=preds,
                successors=succs,
            )
        )
    return lanes


def av1_map_path(root: str | Path, city: str) -> Path:
    """``{root}/map_files/pruned_argoverse_{CITY}_{ID}_vector_map.xml`` of an AV1 city (MIA or PIT)."""
    return Path(root) / "map_files" / f"pruned_argoverse_{city}_{AV1_CITY_MAP_IDS[city]}_vector_map.xml"


def _resample(points: np.ndarray, n: int) -> np.ndarray:
    cum = _arclength(points)
    s = np.linspace(0.0, cum[-1], n)
    return np.stack([np.interp(s, cum, points[:, 0]), np.interp(s, cum, points[:, 1])], axis=1)


def _av1_lanes(net: RoadNetwork, index: int) -> list[AV1Lane]:
    """The vehicle lanes of a network as AV1 lane records (ids unique per scene index, 10-point centerlines)."""
    base = _AV1_LANE_ID_BASE + index * _AV1_LANE_ID_STRIDE
    keep = [i for i, ln in enumerate(net.lanes) if ln.lane_type != "BIKE"]
    new_id = {i: base + k for k, i in enumerate(keep)}
    out = []
    for i in keep:
        ln = net.lanes[i]
        out.append(
            AV1Lane(
                lane_id=new_id[i],
                centerline=_resample(ln.centerline, 10),
                has_traffic_control=ln.has_traffic_control,
                turn_direction=ln.turn_direction,
                is_intersection=ln.is_intersection,
                l_neighbor_id=new_id.get(ln.left_neighbor) if ln.left_neighbor is not None else None,
                r_neighbor_id=new_id.get(ln.right_neighbor) if ln.right_neighbor is not None else None,
                predecessors=[new_id[p] for p in ln.predecessors if p in new_id],
                successors=[new_id[s] for s in ln.successors if s in new_id],
            )
        )
    return out


def _av1_scene(seed: int, index: int) -> tuple[str, str, list[AV1Lane]]:
    """One AV1 scene: (city, CSV text, lanes of its network placed in the city map)."""
    rng = np.random.default_rng([seed, index])
    city = "MIA" if rng.random() < 0.5 else "PIT"
    bx, by = _AV1_CITY_BASE[city]
    cell = np.array([bx + (index % _AV1_GRID_COLS) * _AV1_CELL, by + (index // _AV1_GRID_COLS) * _AV1_CELL])
    net = build_road_network(rng, origin=cell + rng.uniform(-20.0, 20.0, 2))
    tracks = simulate_agents(net, rng, _AV1_SIM_STEPS, AV1_CURRENT_STEP)
    nt = AV1_NUM_STEPS

    # 10 Hz with jitter: sample the 0.1 s simulation at the jittered times.
    deltas = np.clip(rng.normal(0.1, 0.005, nt - 1), 0.09, 0.11)
    tau = np.concatenate([[0.0], np.cumsum(deltas)])
    k = np.floor(tau / DT).astype(np.int64)
    frac = (tau / DT - k)[None, :, None]
    pos = tracks.positions[:, k] * (1.0 - frac) + tracks.positions[:, k + 1] * frac
    valid = tracks.valid[:, :nt].copy()
    n = valid.shape[0]
    # OTHERS may miss a few steps in the middle of their window.
    others = np.nonzero((np.arange(n) != tracks.av_index) & (np.arange(n) != tracks.focal_index))[0]
    for i in others:
        steps = np.nonzero(valid[i])[0]
        if steps.size >= 12 and rng.random() < 0.3:
            g0 = int(rng.integers(steps[0] + 2, steps[-1] - 6))
            valid[i, g0 : g0 + int(rng.integers(1, 5))] = False
    keep = valid.any(axis=1)
    t0 = float(rng.uniform(315_966_000.0, 315_990_000.0))
    stamps = (t0 + tau).tolist()

    ids = int(rng.integers(10_000, 90_000)) + np.cumsum(rng.integers(1, 40, n))
    names = [f"00000000-0000-0000-0000-{x:012d}" for x in ids.tolist()]
    names[tracks.av_index] = "00000000-0000-0000-0000-000000000000"
    roles = ["OTHERS"] * n
    roles[tracks.av_index] = "AV"
    roles[tracks.focal_index] = "AGENT"
    order = [tracks.av_index] + [i for i in range(n) if i != tracks.av_index and keep[i]]
    v = valid[order]
    t_idx, a_idx = np.nonzero(v.T)  # sorted by timestamp, then track order
    agent = np.asarray(order)[a_idx]
    xs = pos[agent, t_idx, 0].tolist()
    ys = pos[agent, t_idx, 1].tolist()
    lines = [",".join(AV1_COLUMNS)]
    lines.extend(
        f"{stamps[t]!r},{names[a]},{roles[a]},{x!r},{y!r},{city}"
        for t, a, x, y in zip(t_idx.tolist(), agent.tolist(), xs, ys, strict=True)
    )
    lines.append("")
    return city, "\n".join(lines), _av1_lanes(net, index)


def generate_av1(
    root: str | Path,
    split: str = "train",
    num_scenes: int = 8,
    seed: int = 0,
    with_map: bool = False,
    start_index: int = 0,
    progress: bool = False,
) -> list[Path]:
    """Write scenes in the Argoverse 1 forecasting layout: ``{root}/{split}/data/{seq_id}.csv``.

    50 steps (20 history + 30 future) at ~10 Hz with jittered timestamps; one ``AGENT`` and the ``AV`` are observed
    at all steps, ``OTHERS`` may be partial or have gaps. ``seq_id`` is ``index + 1``. With ``with_map`` the vector
    map of every city used is (re)written to ``{root}/map_files/pruned_argoverse_{CITY}_{ID}_vector_map.xml``; each
    scene's network sits in its own cell of the city map, and lanes already in an existing map file whose ids are
    not regenerated are kept (so chunked calls accumulate one map). Returns the CSV paths.
    """
    out = Path(root) / split / "data"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    city_lanes: dict[str, list[AV1Lane]] = {}
    indices = range(start_index, start_index + num_scenes)
    for index in tqdm(indices, desc=f"synthetic av1/{split}", unit="scene", disable=not progress):
        city, text, lanes = _av1_scene(seed, index)
        path = out / f"{index + 1}.csv"
        atomic_write_bytes(path, text.encode())
        paths.append(path)
        city_lanes.setdefault(city, []).extend(lanes)
    if with_map:
        for city, lanes in sorted(city_lanes.items()):
            map_path = av1_map_path(root, city)
            if map_path.exists():
                fresh = {ln.lane_id for ln in lanes}
                lanes = [ln for ln in read_av1_vector_map(map_path) if ln.lane_id not in fresh] + lanes
            write_av1_vector_map(map_path, sorted(lanes, key=lambda ln: ln.lane_id))
    return paths


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate synthetic AV2 or AV1 scenes and print a one-line summary."""
    parser = argparse.ArgumentParser(description="Generate synthetic driving scenes in raw AV2 / AV1 formats.")
    parser.add_argument("--format", choices=["av2", "av1"], default="av2")
    parser.add_argument("--root", required=True, help="dataset root directory")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num-scenes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-index", type=int, default=0)
    parser.add_argument("--with-map", action="store_true", help="av1: also write the city vector maps (XML)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.format == "av2":
        written = generate_av2(args.root, args.split, args.num_scenes, args.seed, args.start_index, progress=True)
    else:
        written = generate_av1(
            args.root, args.split, args.num_scenes, args.seed, args.with_map, args.start_index, progress=True
        )
    dt = time.perf_counter() - t0
    rate = len(written) / dt if dt > 0 else float("inf")
    maps = " (+ vector maps)" if args.format == "av1" and args.with_map else ""
    print(
        f"wrote {len(written)} synthetic {args.format} scenes{maps} to {Path(args.root) / args.split} "
        f"in {dt:.2f} s ({rate:.0f} scenes/s, seed {args.seed})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
