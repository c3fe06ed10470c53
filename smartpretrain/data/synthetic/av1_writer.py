"""Synthetic scenes in the Argoverse 1 forecasting layout (scenario CSVs and, optionally, city vector maps).

The files follow :mod:`smartpretrain.data.formats.av1` (the columns and XML the AV1 converter reads). The
simulation runs at 0.1 s and is sampled at jittered ~10 Hz timestamps, as in real AV1 logs. AV1 scenes are laid
out on a grid inside their city's map: scene ``i`` gets cell ``i`` (cells are far enough apart that networks never
overlap), so one XML per city holds the lanes of every generated scene.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from smartpretrain.data.formats import av1
from smartpretrain.data.formats.av1 import AV1Lane
from smartpretrain.data.synthetic.geometry import arclength
from smartpretrain.data.synthetic.roads import RoadNetwork, build_road_network
from smartpretrain.data.synthetic.traffic import DT, simulate_agents
from smartpretrain.io.atomic import atomic_write_bytes

_AV1_CITY_BASE = {"MIA": (100.0, 2600.0), "PIT": (2000.0, 600.0)}
_AV1_CELL = 500.0
_AV1_GRID_COLS = 40
_AV1_LANE_ID_BASE = 10_000_000
_AV1_LANE_ID_STRIDE = 1000
_AV1_SIM_STEPS = 57  # 50 jittered steps last at most 49 * 0.11 s = 5.39 s


def _resample(points: np.ndarray, n: int) -> np.ndarray:
    cum = arclength(points)
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
    tracks = simulate_agents(net, rng, _AV1_SIM_STEPS, av1.CURRENT_STEP)
    nt = av1.NUM_STEPS

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
    roles = [av1.OTHERS_LABEL] * n
    roles[tracks.av_index] = av1.SDC_LABEL
    roles[tracks.focal_index] = av1.FOCAL_LABEL
    order = [tracks.av_index] + [i for i in range(n) if i != tracks.av_index and keep[i]]
    v = valid[order]
    t_idx, a_idx = np.nonzero(v.T)  # sorted by timestamp, then track order
    agent = np.asarray(order)[a_idx]
    rows_t, rows_a = t_idx.tolist(), agent.tolist()
    text = av1.csv_text(
        [stamps[t] for t in rows_t],
        [names[a] for a in rows_a],
        [roles[a] for a in rows_a],
        pos[agent, t_idx, 0].tolist(),
        pos[agent, t_idx, 1].tolist(),
        city,
    )
    return city, text, _av1_lanes(net, index)


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
    out = av1.split_folder(root, split)
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
            map_path = av1.map_path(root, city)
            if map_path.exists():
                fresh = {ln.lane_id for ln in lanes}
                lanes = [ln for ln in av1.read_lanes(map_path) if ln.lane_id not in fresh] + lanes
            av1.write_vector_map(map_path, sorted(lanes, key=lambda ln: ln.lane_id))
    return paths
