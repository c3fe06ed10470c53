"""QCNetAdapter: Scene -> QCNet's input HeteroData, checked on real AV2 / AV1 scenes against independent recomputation.

The expected values are recomputed here from the Scene with plain numpy loops (and av2's own
``compute_midpoint_line``), not with the adapter's vectorised code.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import time

import numpy as np
import pytest
import torch
from av2.geometry.interpolate import compute_midpoint_line
from torch_geometric.data import Batch

from smartpretrain.backbones.base import describe_batch
from smartpretrain.backbones.qcnet.adapter import QCNetAdapter, interp_arc_batch, midpoint_lines_batch
from smartpretrain.data.scene import Scene
from smartpretrain.data.taxonomy import AgentRole, EdgeType, LineType, PolygonType, Side
from tests.conftest import AV1_VAL, AV2_FIXTURE_ID, AV2_FIXTURE_ROOT, require_shared
from tests.helpers import make_tiny_scene

NUM_LANES, NUM_CROSSWALKS = 71, 6  # the AV2 fixture's map


@pytest.fixture(scope="module")
def av2_scene() -> Scene:
    require_shared(AV2_FIXTURE_ROOT / "val" / AV2_FIXTURE_ID)
    from smartpretrain.data.converters.av2 import Av2Converter

    return Av2Converter(AV2_FIXTURE_ROOT, "val").convert(AV2_FIXTURE_ID).scene


@pytest.fixture(scope="module")
def av1_scene() -> Scene:
    require_shared(AV1_VAL / "val" / "data")
    from smartpretrain.data.converters.av1 import Av1Converter

    converter = Av1Converter(AV1_VAL, "val")
    return converter.convert(converter.list_items()[0]).scene


@pytest.fixture(scope="module")
def av2_data(av2_scene):
    return QCNetAdapter()(av2_scene)


@pytest.fixture(scope="module")
def av2_midpoint_data(av2_scene):
    return QCNetAdapter(centerline="av2_midpoint")(av2_scene)


def wrap(angle):
    return (np.asarray(angle) + math.pi) % (2 * math.pi) - math.pi


def polyline_of(scene: Scene, polygon: int, side: Side) -> np.ndarray:
    m = scene.map
    (line,) = [i for i in m.polylines_of(polygon) if m.polyline_side[i] == side]
    return m.polyline(line).astype(np.float64)


def points_of(data, polygon: int, side: Side) -> dict[str, np.ndarray]:
    """The map points of one (polygon, side) of the output, in order."""
    pt = data["map_point"]
    sel = (data["map_point", "to", "map_polygon"].edge_index[1] == polygon) & (pt.side == side)
    return {k: pt[k][sel].numpy() for k in ("position", "orientation", "magnitude", "height", "type")}


# ---------------------------------------------------------------------------------------------------------------
# agents


def test_agents_are_those_observed_in_history(av2_scene, av2_data):
    a = av2_scene.agents
    expected = [i for i in range(a.num_agents) if a.valid[i, :50].any()]  # current step 49, H = 50
    agent = av2_data["agent"]
    assert agent.num_nodes == len(expected) == 38
    assert agent.agent_index.tolist() == expected
    assert agent.id == [a.ids[i] for i in expected]
    assert agent.type.dtype == torch.long and agent.type.tolist() == [int(a.type[i]) for i in expected]
    assert agent.category.tolist() == [int(a.role[i]) for i in expected]
    assert (agent.category == AgentRole.FOCAL).sum() == 1
    assert agent.id[int(torch.nonzero(agent.category == 3))] == a.ids[av2_scene.focal_index]
    assert agent.id[-1] == "AV"
    for key, shape, dtype in [
        ("position", (38, 110, 3), torch.float32),
        ("heading", (38, 110), torch.float32),
        ("velocity", (38, 110, 3), torch.float32),
        ("valid_mask", (38, 110), torch.bool),
        ("predict_mask", (38, 110), torch.bool),
        ("target", (38, 60, 4), torch.float32),
    ]:
        assert tuple(agent[key].shape) == shape and agent[key].dtype == dtype, key
    # scene-frame values at observed steps, zeros elsewhere, z = 0
    for row, i in enumerate(expected):
        obs = a.valid[i]
        np.testing.assert_array_equal(agent.position[row, obs, :2].numpy(), a.position[i, obs, :2])
        np.testing.assert_array_equal(agent.velocity[row, obs, :2].numpy(), a.velocity[i, obs])
        np.testing.assert_array_equal(agent.heading[row, obs].numpy(), a.heading[i, obs])
        assert not agent.position[row, ~obs].any() and not agent.heading[row, ~obs].any()
    assert not agent.position[..., 2].any() and not agent.velocity[..., 2].any()


def test_masks_follow_qcnet_rules(av2_scene, av2_data):
    a, agent = av2_scene.agents, av2_data["agent"]
    row = {aid: r for r, aid in enumerate(agent.id)}
    vm, pm = agent.valid_mask.numpy(), agent.predict_mask.numpy()

    # hand-checked agents of the fixture (observed steps in brackets)
    r = row["139482"]  # [3, 33]: gone before the present
    assert not vm[r, 3] and vm[r, 4:34].all() and not vm[r, 34:].any() and not vm[r, :3].any()
    assert not pm[r].any() and not agent.target[r].any()
    r = row["139580"]  # [22, 55]
    assert not vm[r, :23].any() and vm[r, 23:56].all() and not vm[r, 56:].any()
    assert pm[r, 50:56].all() and not pm[r, :50].any() and not pm[r, 56:].any()
    r = row["138902"]  # [0, 48]: unobserved at the present, so nothing to predict
    assert not vm[r, 0] and vm[r, 1:49].all() and not vm[r, 49:].any() and not pm[r].any()
    focal = row[a.ids[av2_scene.focal_index]]  # [0, 109]
    assert not vm[focal, 0] and vm[focal, 1:].all() and pm[focal, 50:].all() and not pm[focal, :50].any()

    # every agent, with a loop
    for r, i in enumerate(agent.agent_index.tolist()):
        obs = a.valid[i]
        for t in range(110):
            hist_valid = t > 0 and obs[t] and obs[t - 1]
            assert vm[r, t] == (hist_valid if t < 50 else obs[t]), (i, t)
            assert pm[r, t] == (t >= 50 and obs[t] and obs[49]), (i, t)


def test_focal_target_is_future_in_its_current_frame(av2_scene, av2_data):
    a, agent = av2_scene.agents, av2_data["agent"]
    i = av2_scene.focal_index
    r = agent.agent_index.tolist().index(i)
    x0, y0 = a.position[i, 49, :2].astype(np.float64)
    theta = float(a.heading[i, 49])
    expected = np.zeros((60, 4))
    for k, t in enumerate(range(50, 110)):
        dx, dy = a.position[i, t, 0] - x0, a.position[i, t, 1] - y0
        expected[k, 0] = math.cos(theta) * dx + math.sin(theta) * dy
        expected[k, 1] = -math.sin(theta) * dx + math.cos(theta) * dy
        expected[k, 3] = wrap(float(a.heading[i, t]) - theta)
    got = agent.target[r].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert got[:, 0].max() > 1.5 and np.abs(got[:, 1]).max() < 0.5  # the focal car rolls ~2 m forward (+x)
    assert (got[:, 3] >= -math.pi).all() and (got[:, 3] < math.pi).all()
    # another predicted agent, and zeros where not predicted
    for r, i in enumerate(agent.agent_index.tolist()):
        pred = agent.predict_mask[r, 50:].numpy()
        assert not agent.target[r, ~pred].any()
        if pred.any():
            t = 50 + int(np.flatnonzero(pred)[-1])
            d = a.position[i, t, :2] - a.position[i, 49, :2]
            assert math.isclose(float(agent.target[r, t - 50, :2].norm()), float(np.hypot(*d)), abs_tol=1e-3)


def test_agent_unobserved_at_present_predicts_nothing():
    scene = make_tiny_scene()  # the pedestrian is observed at steps 2-7 and 12-16, not at the present (9)
    agent = QCNetAdapter(num_historical_steps=10, num_future_steps=10)(scene)["agent"]
    assert agent.id == ["focal", "AV", "ped"]
    ped = agent.id.index("ped")
    assert agent.valid_mask[ped].tolist() == [t in (3, 4, 5, 6, 7, 12, 13, 14, 15, 16) for t in range(20)]
    assert not agent.predict_mask[ped].any() and not agent.target[ped].any()
    focal = agent.id.index("focal")  # gap at steps 3-4: steps 3, 4 and 5 are not valid
    assert agent.valid_mask[focal, :10].tolist() == [t not in (0, 3, 4, 5) for t in range(10)]
    assert agent.predict_mask[focal].tolist() == [t >= 10 for t in range(20)]
    sdc = agent.id.index("AV")  # gap at step 15 (a future step: valid = observed)
    assert agent.predict_mask[sdc].tolist() == [t >= 10 and t != 15 for t in range(20)]


# ---------------------------------------------------------------------------------------------------------------
# map


def crosswalk_geometry(scene: Scene, polygon: int):
    """start, end, left, right, centerline of a crosswalk as QCNet builds them (independently of the adapter)."""
    e1, e2 = polyline_of(scene, polygon, Side.LEFT), polyline_of(scene, polygon, Side.RIGHT)
    start, end = (e1[0] + e2[0]) / 2, (e1[-1] + e2[-1]) / 2
    mid1 = (e1[0] + e1[-1]) / 2
    cross = (end[0] - start[0]) * (mid1[1] - start[1]) - (end[1] - start[1]) * (mid1[0] - start[0])
    left, right = (e1, e2) if cross > 0 else (e2, e1)
    n = math.ceil(float(np.linalg.norm(end - start)) / 2.0) + 1
    center, _ = compute_midpoint_line(left, right, n)
    return start, end, left, right, center


def test_map_counts_types_and_sizes(av2_scene, av2_data):
    m = av2_scene.map
    lanes = [p for p in range(m.num_polygons) if m.polygon_type[p] <= PolygonType.BUS_LANE]
    cws = [p for p in range(m.num_polygons) if m.polygon_type[p] == PolygonType.CROSSWALK]
    assert (len(lanes), len(cws)) == (NUM_LANES, NUM_CROSSWALKS)
    pl, pt = av2_data["map_polygon"], av2_data["map_point"]
    assert pl.num_nodes == NUM_LANES + 2 * NUM_CROSSWALKS == 83
    expected_m = 0
    for p in lanes:
        expected_m += len(polyline_of(av2_scene, p, Side.LEFT)) - 1 + len(polyline_of(av2_scene, p, Side.RIGHT)) - 1
        expected_m += len(polyline_of(av2_scene, p, Side.CENTER)) - 1  # the stored centerline (the default)
    for p in cws:
        _, _, left, right, center = crosswalk_geometry(av2_scene, p)
        expected_m += 2 * (len(left) - 1 + len(right) - 1 + len(center) - 1)
    assert pt.num_nodes == expected_m
    for key, n, dtype in [("position", 3, torch.float32), ("orientation", 0, torch.float32)]:
        assert pl[key].dtype == pt[key].dtype == dtype and pl[key].shape[1:] == pt[key].shape[1:] == ((n,) if n else ())
    for store, keys in [(pl, ("type", "is_intersection")), (pt, ("type", "side"))]:
        assert all(store[k].dtype == torch.long for k in keys)
    pt2pl = av2_data["map_point", "to", "map_polygon"].edge_index
    assert pt2pl.dtype == torch.long and pt2pl.shape == (2, expected_m)
    assert pt2pl[0].tolist() == list(range(expected_m))
    # polygon types / intersection classes (QCNet: 0 = True, 1 = False, 2 = None)
    assert pl.type.tolist() == [int(m.polygon_type[p]) for p in lanes] + [3] * 12
    flags = {0: 1, 1: 0, 2: 2}  # Intersection NO, YES, UNKNOWN -> QCNet class
    assert pl.is_intersection.tolist() == [flags[int(m.polygon_is_intersection[p])] for p in lanes] + [2] * 12
    assert set(pl.is_intersection[:NUM_LANES].tolist()) == {0, 1}
    # per polygon: left, right, centre points, typed as the scene's marks / CROSSWALK / CENTERLINE
    for p in range(pl.num_nodes):
        own = pt.side[pt2pl[1] == p].tolist()
        assert own == sorted(own) and set(own) == {0, 1, 2}
    for k, p in enumerate(lanes[:10]):
        lines = m.polylines_of(p)
        marks = {int(m.polyline_side[i]): int(m.polyline_type[i]) for i in lines}
        for side in (Side.LEFT, Side.RIGHT):
            assert set(points_of(av2_data, k, side)["type"].tolist()) == {marks[side]}
        assert set(points_of(av2_data, k, Side.CENTER)["type"].tolist()) == {LineType.CENTERLINE}
    for k in range(NUM_LANES, 83):
        assert set(points_of(av2_data, k, Side.LEFT)["type"].tolist()) == {LineType.CROSSWALK}
        assert set(points_of(av2_data, k, Side.CENTER)["type"].tolist()) == {LineType.CENTERLINE}


def test_lane_geometry_matches_av2_midpoint_centerlines(av2_scene, av2_midpoint_data):
    av2_data = av2_midpoint_data
    pl = av2_data["map_polygon"]
    for k in range(NUM_LANES):  # lanes come first, in scene order
        left, right = polyline_of(av2_scene, k, Side.LEFT), polyline_of(av2_scene, k, Side.RIGHT)
        center, _ = compute_midpoint_line(left, right, 10)
        for side, line in [(Side.LEFT, left), (Side.RIGHT, right), (Side.CENTER, center)]:
            got = points_of(av2_data, k, side)
            np.testing.assert_allclose(got["position"], line[:-1], atol=1e-4)  # last point dropped
            vec = np.diff(line, axis=0)
            np.testing.assert_allclose(got["magnitude"], np.hypot(vec[:, 0], vec[:, 1]), atol=1e-4)
            np.testing.assert_allclose(got["height"], vec[:, 2], atol=1e-4)
            np.testing.assert_allclose(wrap(got["orientation"] - np.arctan2(vec[:, 1], vec[:, 0])), 0, atol=1e-4)
        np.testing.assert_allclose(pl.position[k].numpy(), center[0], atol=1e-4)
        expected = math.atan2(center[1, 1] - center[0, 1], center[1, 0] - center[0, 0])
        assert abs(wrap(float(pl.orientation[k]) - expected)) < 1e-4
        assert abs(float(pl.height[k]) - (center[1, 2] - center[0, 2])) < 1e-4


def test_point_vectors_reach_the_next_point(av2_data):
    pt = av2_data["map_point"]
    poly = av2_data["map_point", "to", "map_polygon"].edge_index[1]
    pos = pt.position.numpy().astype(np.float64)
    theta, mag, height = (pt[k].numpy().astype(np.float64) for k in ("orientation", "magnitude", "height"))
    nxt = pos[:, :2] + mag[:, None] * np.stack([np.cos(theta), np.sin(theta)], -1)
    same = (poly[1:] == poly[:-1]).numpy() & (pt.side[1:] == pt.side[:-1]).numpy()  # i and i+1 on one polyline
    assert same.sum() > 1000
    np.testing.assert_allclose(nxt[:-1][same], pos[1:][same, :2], atol=2e-3)
    np.testing.assert_allclose((pos[:-1, 2] + height[:-1])[same], pos[1:][same, 2], atol=1e-4)
    assert (mag >= 0).all() and np.isfinite(pos).all()


def test_crosswalks_become_two_opposite_polygons(av2_scene, av2_data):
    pl = av2_data["map_polygon"]
    for c in range(NUM_CROSSWALKS):
        scene_polygon = NUM_LANES + c  # scene order: lanes, then crosswalks
        a, b = NUM_LANES + c, NUM_LANES + NUM_CROSSWALKS + c
        start, end, left, right, center = crosswalk_geometry(av2_scene, scene_polygon)
        np.testing.assert_allclose(pl.position[a].numpy(), start, atol=1e-4)
        np.testing.assert_allclose(pl.position[b].numpy(), end, atol=1e-4)
        assert abs(wrap(float(pl.orientation[a] - pl.orientation[b]) - math.pi)) < 1e-4
        assert abs(wrap(float(pl.orientation[a]) - math.atan2(*(end - start)[1::-1]))) < 1e-4
        assert pl.type[a] == pl.type[b] == 3 and pl.is_intersection[a] == pl.is_intersection[b] == 2
        pa = {s: points_of(av2_data, a, s) for s in Side}
        pb = {s: points_of(av2_data, b, s) for s in Side}
        # A: left, right, centre as they are; B: A's right, left, centre reversed
        np.testing.assert_allclose(pa[Side.LEFT]["position"], left[:-1], atol=1e-4)
        np.testing.assert_allclose(pa[Side.RIGHT]["position"], right[:-1], atol=1e-4)
        np.testing.assert_allclose(pa[Side.CENTER]["position"], center[:-1], atol=1e-4)
        np.testing.assert_allclose(pb[Side.LEFT]["position"], right[::-1][:-1], atol=1e-4)
        np.testing.assert_allclose(pb[Side.RIGHT]["position"], left[::-1][:-1], atol=1e-4)
        np.testing.assert_allclose(pb[Side.CENTER]["position"], center[::-1][:-1], atol=1e-4)
        for side_a, side_b in [(Side.CENTER, Side.CENTER), (Side.RIGHT, Side.LEFT), (Side.LEFT, Side.RIGHT)]:
            # reversed points: every vector of B is a vector of A backwards
            oa, ob = pa[side_a]["orientation"], pb[side_b]["orientation"][::-1]
            np.testing.assert_allclose(wrap(oa - ob - math.pi), 0, atol=1e-4)
            np.testing.assert_allclose(pa[side_a]["magnitude"], pb[side_b]["magnitude"][::-1], atol=1e-4)
        # A's left boundary lies on the left of start -> end
        mid = (pa[Side.LEFT]["position"][0] + left[-1]) / 2
        d, r = end - start, mid - start
        assert d[0] * r[1] - d[1] * r[0] > 0


def test_topology_edges_equal_the_scene(av2_scene, av2_data):
    m = av2_scene.map
    store = av2_data["map_polygon", "to", "map_polygon"]
    assert store.edge_index.dtype == store.type.dtype == torch.long
    # lanes keep their scene indices (they come first in both), crosswalks have no topology
    assert store.edge_index.tolist() == m.edge_index.tolist()
    assert store.type.tolist() == m.edge_type.tolist()
    counts = np.bincount(store.type.numpy(), minlength=5)
    assert counts[0] == 0 and counts[1:].tolist() == [(m.edge_type == t).sum() for t in (1, 2, 3, 4)]
    assert counts[EdgeType.PRED] > 0 and counts[EdgeType.LEFT] > 0
    assert int(store.edge_index.max()) < NUM_LANES


def test_default_centerline_is_the_stored_one(av2_scene, av2_data, av2_midpoint_data):
    """The default (the reference preprocessing) reads each lane's centerline from the map file, as stored in the
    Scene; ``av2_midpoint`` recomputes it from the boundaries and gives another map for most lanes."""
    assert QCNetAdapter().centerline == "stored"
    stored, mid_data = av2_data, av2_midpoint_data
    assert stored["map_polygon"].num_nodes == mid_data["map_polygon"].num_nodes
    differs = 0
    for k in range(NUM_LANES):
        center = polyline_of(av2_scene, k, Side.CENTER)
        got = points_of(stored, k, Side.CENTER)["position"]
        np.testing.assert_allclose(got, center[:-1], atol=1e-5)
        np.testing.assert_allclose(stored["map_polygon"].position[k].numpy(), center[0], atol=1e-5)
        mid = points_of(mid_data, k, Side.CENTER)["position"]
        differs += got.shape != mid.shape or not np.allclose(got, mid, atol=1e-3)
        for side in (Side.LEFT, Side.RIGHT):  # boundaries do not depend on the option
            np.testing.assert_array_equal(
                points_of(stored, k, side)["position"], points_of(mid_data, k, side)["position"]
            )
    assert differs > NUM_LANES // 2
    # the fixture's file has 2 to 33 centerline points per lane: 832 centre points in all (731 with the midpoint)
    centre = [int((d["map_point"].side == Side.CENTER).sum()) for d in (stored, mid_data)]
    assert stored["map_point"].num_nodes == 1479 and mid_data["map_point"].num_nodes == 1378
    assert centre == [832, 731]
    # crosswalks are built the same way in both modes
    for k in range(NUM_LANES, 83):
        np.testing.assert_array_equal(
            points_of(stored, k, Side.CENTER)["position"], points_of(mid_data, k, Side.CENTER)["position"]
        )


def test_skipped_polygon_types_and_edge_remap():
    scene = make_tiny_scene()  # 2 vehicle lanes, a bus lane, a crosswalk, a road edge (skipped)
    data = QCNetAdapter(num_historical_steps=10, num_future_steps=10)(scene)
    pl = data["map_polygon"]
    assert pl.num_nodes == 3 + 2 and pl.type.tolist() == [0, 0, 2, 3, 3]
    assert pl.is_intersection.tolist() == [1, 1, 0, 2, 2]
    # the road edge's points are gone: 3 lanes x (left + right + stored centre points, each less its last one)
    # + 2 x crosswalk (1 + 1 + ceil(11 / 2))
    m = scene.map
    lane_ids = [p for p in range(m.num_polygons) if m.polygon_type[p] <= PolygonType.BUS_LANE]
    lanes = sum(len(polyline_of(scene, p, side)) - 1 for p in lane_ids for side in Side)
    assert data["map_point"].num_nodes == lanes + 2 * (1 + 1 + 6)
    midpoint = QCNetAdapter(num_historical_steps=10, num_future_steps=10, centerline="av2_midpoint")(scene)
    assert midpoint["map_point"].num_nodes == 2 * (4 + 4 + 9) + (7 + 7 + 9) + 2 * (1 + 1 + 6)
    store = data["map_polygon", "to", "map_polygon"]
    assert store.edge_index.tolist() == scene.map.edge_index.tolist()
    # the crosswalk at x = 20 runs along y: edge1 (x = 18) is on the left of start -> end (+y), kept as left
    np.testing.assert_allclose(pl.position[3].numpy(), [20.0, -2.0, 0.0])
    np.testing.assert_allclose(pl.position[4].numpy(), [20.0, 9.0, 0.0])
    assert math.isclose(float(pl.orientation[3]), math.pi / 2, abs_tol=1e-6)
    assert math.isclose(float(pl.orientation[4]), -math.pi / 2, abs_tol=1e-6)
    np.testing.assert_allclose(points_of(data, 3, Side.LEFT)["position"][:, 0], 18.0)
    np.testing.assert_allclose(points_of(data, 4, Side.LEFT)["position"][:, 0], 22.0)


# ---------------------------------------------------------------------------------------------------------------
# av2 interpolation reproduced


def test_batched_midpoint_matches_av2_on_odd_inputs():
    rng = np.random.default_rng(0)
    lines = [rng.normal(size=(n, 3)).cumsum(0) for n in (2, 3, 7, 12, 33)]
    lines.append(np.array([[0.0, 0, 0], [1, 0, 0], [1, 0, 0], [3, 0, 0]]))  # repeated interior point
    pts = np.concatenate(lines)
    starts = np.cumsum([0] + [len(x) for x in lines[:-1]])
    lens = np.array([len(x) for x in lines])
    for num in (2, 5, 10):
        got = interp_arc_batch(pts, starts, lens, np.full(len(lines), num))
        for r, line in enumerate(lines):
            from av2.geometry.interpolate import interp_arc

            np.testing.assert_allclose(got[r, :num], interp_arc(num, line), atol=1e-12)
    # pairs, including a pivot (one-point boundary) and different counts per row
    left = (starts[[1, 3, 4]], lens[[1, 3, 4]])
    right = (starts[[2, 0, 5]], lens[[2, 0, 5]])
    got, n = midpoint_lines_batch(pts, left, right, np.array([10, 4, 6]))
    assert n.tolist() == [10, 4, 6]
    for r in range(3):
        ln = pts[left[0][r] : left[0][r] + left[1][r]]
        rn = pts[right[0][r] : right[0][r] + right[1][r]]
        np.testing.assert_allclose(got[r, : n[r]], compute_midpoint_line(ln, rn, int(n[r]))[0], atol=1e-12)
    single = (np.array([0]), np.array([1]))
    got, n = midpoint_lines_batch(pts, single, (starts[[3]], lens[[3]]), np.array([10]))
    expected = compute_midpoint_line(pts[:1], lines[3], 10)[0]  # av2 returns the pivot case in 2-D
    assert n.tolist() == [12] and expected.shape == (12, 2)
    np.testing.assert_allclose(got[0, :, :2], expected, atol=1e-12)
    # a zero-length last segment: av2 gives NaN at the end, the adapter the (repeated) end point
    line = np.array([[0.0, 0, 0], [2, 0, 0], [2, 0, 0]])
    got = interp_arc_batch(line, np.array([0]), np.array([3]), np.array([5]))
    np.testing.assert_allclose(got[0], [[0, 0, 0], [0.5, 0, 0], [1, 0, 0], [1.5, 0, 0], [2, 0, 0]], atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# windows, map-less scenes, batching


def test_av1_map_less_scene(av1_scene):
    data = QCNetAdapter(num_historical_steps=20, num_future_steps=30)(av1_scene)
    a = av1_scene.agents
    expected = [i for i in range(a.num_agents) if a.valid[i, :20].any()]
    agent = data["agent"]
    assert agent.agent_index.tolist() == expected and agent.position.shape == (len(expected), 50, 3)
    assert agent.target.shape == (len(expected), 30, 4) and (agent.category == 3).sum() == 1
    for r, i in enumerate(expected):
        obs = a.valid[i]
        assert agent.valid_mask[r, 1:20].tolist() == (obs[1:20] & obs[:19]).tolist()
        assert agent.predict_mask[r, 20:].tolist() == (obs[20:] & obs[19]).tolist()
    assert data.dataset == "av1" and data.origin.dtype == torch.float64 and data.origin.shape == (1, 3)
    pl, pt = data["map_polygon"], data["map_point"]
    assert pl.num_nodes == pt.num_nodes == 0
    assert pl.position.shape == (0, 3) and pt.position.shape == (0, 3) and pt.magnitude.shape == (0,)
    assert pl.type.dtype == pt.side.dtype == torch.long
    for edge in (("map_point", "to", "map_polygon"), ("map_polygon", "to", "map_polygon")):
        assert data[edge].edge_index.shape == (2, 0) and data[edge].edge_index.dtype == torch.long


@pytest.mark.parametrize("current_step", [30, 5, 95])
def test_moved_current_step(av2_scene, current_step):
    h, f = 20, 30
    scene = dataclasses.replace(av2_scene, current_step=current_step)
    data = QCNetAdapter(num_historical_steps=h, num_future_steps=f)(scene)
    a, agent = scene.agents, data["agent"]
    steps = np.arange(current_step - h + 1, current_step + f + 1)
    inside = (steps >= 0) & (steps < 110)
    expected = [i for i in range(a.num_agents) if a.valid[i, steps[:h][inside[:h]]].any()]
    assert agent.agent_index.tolist() == expected
    assert agent.position.shape == (len(expected), h + f, 3) and agent.target.shape == (len(expected), f, 4)
    # steps outside the timeline are unobserved
    assert not agent.valid_mask[:, ~inside].any() and not agent.predict_mask[:, ~inside].any()
    assert not agent.position[:, ~inside].any()
    if current_step == 5:
        assert inside[:h].sum() == 6 and not agent.valid_mask[:, : h - 5].any()
    if current_step == 95:
        assert inside[h:].sum() == 14 and agent.predict_mask[:, h : h + 14].any()
    for r, i in enumerate(expected):
        np.testing.assert_array_equal(agent.position[r, inside, :2].numpy(), a.position[i, steps[inside], :2])
        obs = np.zeros(h + f, bool)
        obs[inside] = a.valid[i, steps[inside]]
        assert agent.predict_mask[r].tolist() == ([False] * h + (obs[h:] & obs[h - 1]).tolist())
    focal = expected.index(scene.focal_index)
    theta = float(a.heading[scene.focal_index, current_step])
    d = a.position[scene.focal_index, steps[h + 9], :2] - a.position[scene.focal_index, current_step, :2]
    x, y = math.cos(theta) * d[0] + math.sin(theta) * d[1], -math.sin(theta) * d[0] + math.cos(theta) * d[1]
    np.testing.assert_allclose(agent.target[focal, 9, :2].numpy(), [x, y], atol=1e-4)


def test_scene_without_future_predicts_like_the_reference_test_split(av2_scene):
    """A scene whose timeline ends at its present (a test split) predicts every future step of the agents observed
    at the present and of the scored / focal agents; no step counts as ground truth, and the loss sees none."""
    from smartpretrain.backbones.qcnet.model import QCNet

    scene = dataclasses.replace(av2_scene, current_step=av2_scene.num_steps - 1)
    data = QCNetAdapter()(scene)
    agent = data["agent"]
    rows = agent.agent_index.numpy()
    present = torch.from_numpy(scene.agents.valid[rows, scene.current_step])
    asked = present | torch.from_numpy(scene.agents.role[rows] >= AgentRole.SCORED)
    assert 0 < int(asked.sum()) < agent.num_nodes
    assert torch.equal(agent.predict_mask[:, 50:], asked.unsqueeze(1).expand(-1, 60))
    assert not agent.predict_mask[:, :50].any() and not agent.valid_mask[:, 50:].any()
    assert not agent.target.any()
    model = QCNet(hidden_dim=16, num_heads=2, head_dim=8, num_freq_bands=4).eval()
    batch = QCNetAdapter().collate([data])
    assert not model.eval_targets(batch).valid.any()
    with torch.no_grad():
        forecast = model(batch)
        loss = model.loss(batch, forecast)
    assert torch.isfinite(forecast.loc).all() and float(loss["reg_loss_refine"]) == 0.0
    # a scene with a future keeps the validation rule: observed future steps of agents seen at the present
    rows = QCNetAdapter()(av2_scene)["agent"]
    seen = torch.from_numpy(av2_scene.agents.valid[rows.agent_index.numpy(), av2_scene.current_step])
    assert torch.equal(rows.predict_mask[:, 50:], rows.valid_mask[:, 50:] & seen.unsqueeze(1))


def test_collate_mixes_map_and_map_less_scenes(av2_scene, av1_scene):
    adapter = QCNetAdapter(num_historical_steps=20, num_future_steps=30)
    moved = dataclasses.replace(av2_scene, current_step=70)
    samples = [adapter(av2_scene), adapter(av1_scene), adapter(moved)]
    batch = adapter.collate(samples)
    assert isinstance(batch, Batch) and batch.num_graphs == 3
    na = [s["agent"].num_nodes for s in samples]
    npl = [s["map_polygon"].num_nodes for s in samples]
    npt = [s["map_point"].num_nodes for s in samples]
    assert npl[1] == npt[1] == 0 and npl[0] == npl[2] == 83
    assert batch["agent"].batch.tolist() == [0] * na[0] + [1] * na[1] + [2] * na[2]
    assert batch["map_polygon"].batch.tolist() == [0] * npl[0] + [2] * npl[2]
    assert batch["map_point"].batch.tolist() == [0] * npt[0] + [2] * npt[2]
    assert batch["agent"].position.shape == (sum(na), 50, 3)
    # agent_index is not offset (index into each scene's agents); edge indices are
    assert torch.equal(batch["agent"].agent_index, torch.cat([s["agent"].agent_index for s in samples]))
    pt2pl = batch["map_point", "to", "map_polygon"].edge_index
    e0 = samples[0]["map_point", "to", "map_polygon"].edge_index
    assert pt2pl.shape == (2, npt[0] + npt[2])
    assert torch.equal(pt2pl[:, npt[0] :], e0 + torch.tensor([[npt[0]], [npl[0]]]))
    pl2pl = batch["map_polygon", "to", "map_polygon"].edge_index
    t0 = samples[0]["map_polygon", "to", "map_polygon"].edge_index
    assert torch.equal(pl2pl, torch.cat([t0, t0 + npl[0]], dim=1))
    assert batch.scenario_id == [s.scenario_id for s in samples] and batch.dataset == ["av2", "av1", "av2"]
    assert batch.origin.shape == (3, 3) and batch.origin.dtype == torch.float64


def test_collate_describes_each_row_and_each_scenes_present(av2_scene, av1_scene):
    adapter = QCNetAdapter(num_historical_steps=20, num_future_steps=30)
    moved = dataclasses.replace(av2_scene, current_step=70)
    samples = [adapter(av2_scene), adapter(av1_scene), adapter(moved)]
    assert [s.current_step for s in samples] == [av2_scene.current_step, av1_scene.current_step, 70]
    d = describe_batch(adapter.collate(samples))
    assert d.current_step.tolist() == [av2_scene.current_step, av1_scene.current_step, 70]
    assert torch.equal(d.agent_index, torch.cat([s["agent"].agent_index for s in samples]))
    assert torch.equal(d.agent_role, torch.cat([s["agent"].category for s in samples]))
    scenes = [av2_scene, av1_scene, moved]
    roles = [int(scenes[int(b)].agents.role[i]) for b, i in zip(d.agent_scene, d.agent_index, strict=True)]
    assert roles == d.agent_role.tolist() and roles.count(AgentRole.FOCAL) == 3  # one focal agent per scene


def test_adapter_pickles_and_validates_arguments():
    adapter = pickle.loads(pickle.dumps(QCNetAdapter(20, 30, centerline="stored")))
    assert (adapter.num_historical_steps, adapter.num_future_steps, adapter.centerline) == (20, 30, "stored")
    with pytest.raises(ValueError, match="centerline"):
        QCNetAdapter(centerline="nope")
    with pytest.raises(ValueError, match="dim"):
        QCNetAdapter(dim=4)


def test_dim_2(av2_scene):
    data = QCNetAdapter(dim=2)(av2_scene)
    assert data["agent"].position.shape[-1] == data["agent"].velocity.shape[-1] == 2
    assert data["map_polygon"].position.shape == (83, 2) and data["map_point"].position.shape[1] == 2
    assert data["agent"].target.shape[-1] == 4 and not data["agent"].target[..., 2].any()


def test_speed_on_fixture(av2_scene):
    adapter = QCNetAdapter()
    for _ in range(5):
        adapter(av2_scene)
    n, start = 50, time.perf_counter()
    for _ in range(n):
        adapter(av2_scene)
    ms = (time.perf_counter() - start) / n * 1e3
    print(f"\nQCNetAdapter on the AV2 fixture: {ms:.2f} ms/scene")
    assert ms < 100.0  # generous bound (shared CI machines); a per-agent / per-point Python loop is ~10x slower


def test_synthetic_av2_scenes(tmp_path):
    from smartpretrain.data.converters.av2 import Av2Converter
    from smartpretrain.data.synthetic import generate_av2

    dirs = generate_av2(tmp_path, "val", num_scenes=3, seed=7)
    converter = Av2Converter(tmp_path, "val")
    adapter = QCNetAdapter()
    samples = []
    for scene_dir in dirs:
        scene = converter.convert(scene_dir.name).scene
        data = adapter(scene)
        m = scene.map
        lanes = [p for p in range(m.num_polygons) if m.polygon_type[p] <= PolygonType.BUS_LANE]
        num_cw = int((m.polygon_type == PolygonType.CROSSWALK).sum())
        assert lanes == list(range(len(lanes))) and num_cw > 0
        assert data["map_polygon"].num_nodes == len(lanes) + 2 * num_cw
        for k in lanes:
            center = polyline_of(scene, k, Side.CENTER)  # the generated map file's centerline
            np.testing.assert_allclose(points_of(data, k, Side.CENTER)["position"], center[:-1], atol=1e-4)
        assert all(torch.isfinite(data[s][k]).all() for s in ("map_point", "map_polygon") for k in ("position",))
        assert data["agent"].num_nodes == int(scene.agents.valid[:, :50].any(axis=1).sum())
        samples.append(data)
    batch = adapter.collate(samples)
    assert batch.num_graphs == 3 and batch["map_polygon"].batch.bincount().tolist() == [
        s["map_polygon"].num_nodes for s in samples
    ]
