"""Road networks of the synthetic generator: one intersection (4-way or T) with its lanes, crosswalks and areas.

:func:`build_road_network` lays out a small road network in a local frame, rotated and placed at a city-scale
offset: straight two-way roads with two lanes per direction (plus, in some scenes, a bike lane and a parking
strip), meeting at a 4-way or T intersection with straight / left / right connector lanes, lane topology
(predecessors, successors, left / right neighbours of same-direction lanes), lane boundaries with lane-mark
types, crosswalks at the intersection approaches (and sometimes mid-block), drivable areas and sidewalks. The
network is format-independent: the writers turn it into AV2 map JSONs or AV1 vector maps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from smartpretrain.data.synthetic.geometry import arclength, bezier, concat_polylines, offset_polyline, unit


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
        d = unit(float(th) + theta)  # world direction of the arm, from the intersection outwards
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
                pts = concat_polylines([lanes[i].centerline for i in order])
                stop = (h + length) - stop_s if inbound else math.inf
                chain_index[(a, inbound, kind)] = len(chains)
                chains.append(_Chain(order, pts, arclength(pts), inbound, a, kind, stop, groups[a]))
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
                    center = bezier(p0, -arm_a.d, p3, arm_b.d, 8, 1.0 / 3.0)
                else:
                    center = bezier(p0, -arm_a.d, p3, arm_b.d, 12, 0.39)
                half = 0.5 * widths[kind]
                lanes.append(
                    Lane(
                        center,
                        offset_polyline(center, half),
                        offset_polyline(center, -half),
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
