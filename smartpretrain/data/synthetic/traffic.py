"""The traffic simulator of the synthetic generator: agents moving on a :class:`RoadNetwork`, with AV2 roles.

:func:`simulate_agents` moves agents on a network for ``num_steps`` steps of 0.1 s: vehicles (cars, buses, a few
motorcyclists) follow lane centerlines through successors, with a car-following model, a traffic light at the
intersection (queues form at the stop line), speed behaviours (cruise, accelerate, brake, stopped, slow) and
smooth lane changes; pedestrians cross at crosswalks, walk along sidewalks or stand; cyclists ride along the
road edge; parked cars and static objects stand by the curb. Positions get ~2 cm noise; velocities are the
finite differences of the noise-free positions and the heading is the direction of motion (the previous one
is kept while nearly stopped). Roles follow AV2: one focal track (fully observed and moving), a few scored
and unscored tracks (fully observed), the ego ``AV`` (unscored, fully observed) and track fragments (partial
observation windows; they also vanish when they drive off the mapped area).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from smartpretrain.data.formats import av2
from smartpretrain.data.synthetic.geometry import (
    arclength,
    concat_polylines,
    eval_path,
    offset_polyline,
    smoothstep,
    tangent_heading,
)
from smartpretrain.data.synthetic.roads import RoadNetwork

DT = 0.1  # simulation step (s)

# Agent kinds used while simulating (which roles an agent may take).
_KIND_VEHICLE = 0  # lane-following motor vehicle: may be AV / focal
_KIND_MOBILE = 1  # pedestrian, cyclist: may be scored
_KIND_STATIC = 2  # parked / static objects

_SCORABLE_TYPES = ("vehicle", "pedestrian", "cyclist", "motorcyclist", "bus")
_MOVING_SPEED = 0.3  # m/s: below it the previous heading is kept
_POS_NOISE = 0.02  # m


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
    pts = concat_polylines([c.points, connector, net.chains[exit_chain].points])
    cum = arclength(pts)
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
        pos = eval_path(pts, cum, s_hist[i])
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
                alpha = smoothstep((np.arange(nt) - k0) / dur)[:, None]
                pos = (1.0 - alpha) * pos + alpha * eval_path(pts_b, cum_b, s_hist[i])
                offmap = (s_hist[i] < -1.0) | (s_hist[i] > cum_b[-1] + 1.0)
        pool.add(pos, types[i], _KIND_VEHICLE, tangent_heading(pts, cum, float(s_hist[i, 0])), offmap, turn != "NONE")


def _simulate_cyclists(net: RoadNetwork, rng: np.random.Generator, pool: _AgentPool) -> None:
    nt = pool.num_steps
    t = np.arange(nt) * DT
    bikes = [i for i, c in enumerate(net.chains) if c.kind == "bike"]
    outers = [i for i, c in enumerate(net.chains) if c.kind == "outer"]
    for _ in range(int(rng.choice(4, p=[0.3, 0.35, 0.25, 0.1]))):
        ci = int(rng.choice(bikes if bikes else outers))
        pts = _route(net, ci, rng, straight_only=True)[0]
        if not bikes:
            pts = offset_polyline(pts, -1.3)  # ride at the right edge of the outer lane
        cum = arclength(pts)
        v = float(rng.uniform(3.0, 7.0))
        s = float(rng.uniform(0.0, net.chains[ci].length)) + v * t + 0.3 * np.sin(t * rng.uniform(0.5, 1.5))
        pool.add(
            eval_path(pts, cum, s),
            "cyclist",
            _KIND_MOBILE,
            tangent_heading(pts, cum, float(s[0])),
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
        cum = arclength(pts)
        speed = float(rng.uniform(1.0, 1.6)) * (1.0 + 0.05 * np.sin(t * rng.uniform(1.0, 3.0)))
        if rng.random() < 0.3:  # waiting at the kerb, then walking
            speed = np.where(t < rng.uniform(1.0, 6.0), 0.0, speed)
        s = start + np.concatenate([[0.0], np.cumsum(speed[:-1]) * DT])
        pos = eval_path(pts, cum, s)
        offmap = np.linalg.norm(pos - net.center, axis=1) > net.extent + 5.0
        pool.add(pos, "pedestrian", _KIND_MOBILE, tangent_heading(pts, cum, start), offmap)


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
    net: RoadNetwork, rng: np.random.Generator, num_steps: int = av2.NUM_STEPS, current_step: int = av2.CURRENT_STEP
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
