"""WOMD Scenario TFRecords -> Scene: the real fixture, wire-level variants, bad files, split layout, cache."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from smartpretrain.data.cache import SceneCache, decode_scene, encode_scene
from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.base import ConversionError, DropReason
from smartpretrain.data.converters.womd import (
    WomdConverter,
    WomdFormatError,
    crosswalk_edges,
    looks_like_tf_example,
    open_scenarios,
)
from smartpretrain.data.protos import womd_message
from smartpretrain.data.taxonomy import (
    AgentRole,
    AgentType,
    EdgeType,
    LineType,
    PolygonType,
    Side,
    SignalState,
)
from smartpretrain.data.tfrecord import TFRecordError, encode_record, write_records
from smartpretrain.data.views import crop_scene
from tests.data import womd_builders as wb

REPO = Path(__file__).resolve().parents[2]
WOMD_FIXTURES = REPO.parent / "shared" / "fixtures" / "womd"
SCENARIO_FILE = WOMD_FIXTURES / "motion_data_one_scenario.tfrecord"
EXAMPLE_FILE = WOMD_FIXTURES / "motion_data_one_example.tfrecord"
needs_fixture = pytest.mark.skipif(
    not SCENARIO_FILE.exists(), reason=f"{WOMD_FIXTURES} not found: the real WOMD fixtures live in ../shared"
)


def convert_one(path: Path) -> object:
    converter = WomdConverter(path, "val")
    items = converter.list_items()
    assert len(items) == 1
    return converter.convert(items[0])


# --- the real fixture ---------------------------------------------------------------------------------------------


@needs_fixture
def test_fixture_converts_to_the_documented_counts() -> None:
    result = convert_one(SCENARIO_FILE)
    scene = result.scene
    a, m = scene.agents, scene.map
    assert a.num_agents == 83
    assert Counter(AgentType(t) for t in a.type) == {
        AgentType.VEHICLE: 70,
        AgentType.PEDESTRIAN: 10,
        AgentType.CYCLIST: 3,
    }
    assert (scene.num_steps, scene.current_step) == (91, 10)
    assert int(a.valid[:, 10].sum()) == 50
    assert np.flatnonzero(a.is_sdc).tolist() == [82]
    assert int(np.isin(a.role, [AgentRole.FOCAL, AgentRole.SCORED]).sum()) == 3
    assert m.num_polygons == 301
    by_type = Counter(PolygonType(t) for t in m.polygon_type)
    lanes = by_type[PolygonType.VEHICLE_LANE] + by_type[PolygonType.BIKE_LANE]
    assert (lanes, by_type[PolygonType.ROAD_LINE], by_type[PolygonType.ROAD_EDGE]) == (199, 59, 28)
    assert (by_type[PolygonType.STOP_SIGN], by_type[PolygonType.CROSSWALK], by_type[PolygonType.SPEED_BUMP]) == (
        8,
        4,
        3,
    )
    assert scene.signals is not None and scene.signals.num_states > 0
    assert result.repairs == []


@needs_fixture
def test_fixture_values_equal_the_proto() -> None:
    (proto,) = open_scenarios(SCENARIO_FILE)
    scene = convert_one(SCENARIO_FILE).scene
    a = scene.agents
    assert scene.scenario_id == proto.scenario_id
    # roles and labels
    req = [(r.track_index, r.difficulty) for r in proto.tracks_to_predict]
    assert a.role[req[0][0]] == AgentRole.FOCAL
    for index, difficulty in req:
        assert a.difficulty[index] == difficulty
    assert int((a.difficulty > 0).sum()) == len(req)
    assert a.ids == [str(t.id) for t in proto.tracks]
    # every state of every track
    for i, track in enumerate(proto.tracks):
        for t, st in enumerate(track.states):
            assert a.valid[i, t] == st.valid
            if not st.valid:
                assert not a.position[i, t].any()
                continue
            city = a.position[i, t].astype(np.float64) + scene.origin
            np.testing.assert_allclose(city, [st.center_x, st.center_y, st.center_z], atol=2e-3)
            np.testing.assert_allclose(a.velocity[i, t], [st.velocity_x, st.velocity_y], atol=1e-6)
            assert abs(np.angle(np.exp(1j * (a.heading[i, t] - st.heading)))) < 1e-6
        ref = 10 if track.states[10].valid else next(t for t, s in enumerate(track.states) if s.valid)
        st = track.states[ref]
        np.testing.assert_allclose(a.size[i], [st.length, st.width, st.height], rtol=1e-6)
    # traffic signals: one row per (step, lane state), values equal
    rows = [(t, ls) for t, dms in enumerate(proto.dynamic_map_states) for ls in dms.lane_states]
    sig = scene.signals
    assert sig.num_states == len(rows)
    for k, (t, ls) in enumerate(rows):
        assert (int(sig.step[k]), int(sig.lane_id[k]), int(sig.state[k])) == (t, ls.lane, ls.state)
        stop = sig.stop_point[k].astype(np.float64) + scene.origin
        np.testing.assert_allclose(stop, [ls.stop_point.x, ls.stop_point.y, ls.stop_point.z], atol=2e-3)
    assert set(sig.lane_id.tolist()) <= set(scene.map.polygon_ids.tolist())
    assert {SignalState(s) for s in sig.state} <= set(SignalState)


@needs_fixture
def test_fixture_map_geometry_and_topology_equal_the_proto() -> None:
    (proto,) = open_scenarios(SCENARIO_FILE)
    scene = convert_one(SCENARIO_FILE).scene
    m = scene.map
    assert m.polygon_ids.tolist() == [f.id for f in proto.map_features]
    index = {int(fid): k for k, fid in enumerate(m.polygon_ids)}
    expected_edges = set()
    for k, feature in enumerate(proto.map_features):
        kind = feature.WhichOneof("feature_data")
        lines = m.polylines_of(k)
        if kind in ("lane", "road_line", "road_edge"):
            poly = getattr(feature, kind).polyline
            (line,) = lines
            assert m.polyline_side[line] == Side.CENTER
            ref = np.array([(p.x, p.y, p.z) for p in poly])
            np.testing.assert_allclose(m.polyline(line).astype(np.float64) + scene.origin, ref, atol=2e-3)
        if kind == "lane":
            lane = feature.lane
            for src, et in [(j, EdgeType.PRED) for j in lane.entry_lanes] + [
                (j, EdgeType.SUCC) for j in lane.exit_lanes
            ]:
                if src in index:
                    expected_edges.add((index[src], k, int(et)))
            for nb, et in [(n, EdgeType.LEFT) for n in lane.left_neighbors] + [
                (n, EdgeType.RIGHT) for n in lane.right_neighbors
            ]:
                if nb.feature_id in index:
                    expected_edges.add((index[nb.feature_id], k, int(et)))
        if kind == "crosswalk":
            sides = sorted(int(m.polyline_side[line]) for line in lines)
            assert sides == [Side.LEFT, Side.RIGHT, Side.CENTER]
    got = {(int(s), int(d), int(t)) for s, d, t in zip(*m.edge_index, m.edge_type, strict=True)}
    assert got == expected_edges and len(got) > 0


@needs_fixture
def test_tf_example_fixture_is_refused_with_a_clear_message() -> None:
    with pytest.raises(WomdFormatError, match=r"motion_data_one_example\.tfrecord.*tf\.Example.*not Scenario"):
        WomdConverter(EXAMPLE_FILE, "val").list_items()


@needs_fixture
def test_tf_example_fixture_is_refused_by_the_cli(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "smartpretrain.convert", "data=womd", f"data.raw_root={EXAMPLE_FILE}",
         f"cache_root={tmp_path}", "progress=false"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "tf.Example" in proc.stderr and "motion_data_one_example.tfrecord" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- synthetic scenarios, wire-level variants ---------------------------------------------------------------------


def scene_of(record: bytes, tmp_path: Path, name: str = "one.tfrecord") -> object:
    path = tmp_path / name
    write_records(path, [record])
    return convert_one(path).scene


def assert_same_scene(a: object, b: object) -> None:
    assert a.scenario_id == b.scenario_id
    for group in ("agents", "map", "signals"):
        x, y = getattr(a, group), getattr(b, group)
        for name, value in vars(x).items():
            other = getattr(y, name)
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, other, err_msg=f"{group}.{name}")
            else:
                assert value == other, f"{group}.{name}"


def test_synthetic_scenario_converts(tmp_path: Path) -> None:
    proto = wb.make_scenario()
    scene = scene_of(proto.SerializeToString(), tmp_path)
    a, m = scene.agents, scene.map
    assert a.num_agents == 6 and scene.num_steps == 91 and scene.current_step == 10
    assert a.role.tolist() == [AgentRole.UNSCORED, AgentRole.FOCAL, AgentRole.SCORED] + [AgentRole.UNSCORED] * 3
    assert a.difficulty.tolist() == [0, 1, 2, 0, 0, 0]
    assert a.of_interest.tolist() == [False, True, True, False, False, False]
    assert a.is_sdc.tolist() == [True] + [False] * 5
    assert [AgentType(t) for t in a.type[:4]] == [
        AgentType.VEHICLE, AgentType.PEDESTRIAN, AgentType.CYCLIST, AgentType.UNKNOWN,
    ]  # fmt: skip
    assert not a.valid[5, :20].any() and a.valid[5, 20:].all()
    np.testing.assert_allclose(a.size[5], [4.5, 2.0, 1.6], rtol=1e-6)  # first observed step
    np.testing.assert_allclose(a.position[1, 10], 0.0, atol=1e-6)  # origin = focal at the current step
    assert [PolygonType(t) for t in m.polygon_type] == [
        PolygonType.VEHICLE_LANE, PolygonType.BIKE_LANE, PolygonType.VEHICLE_LANE, PolygonType.ROAD_LINE,
        PolygonType.ROAD_EDGE, PolygonType.STOP_SIGN, PolygonType.CROSSWALK, PolygonType.SPEED_BUMP,
        PolygonType.DRIVEWAY,
    ]  # fmt: skip
    edges = {(int(s), int(d), EdgeType(t)) for s, d, t in zip(*m.edge_index, m.edge_type, strict=True)}
    # an edge (src=j, dst=i, type) reads "j is the <type> of i": lane 2 (index 1) is the SUCC of lane 1 (index 0),
    # lane 1 the PRED of lane 2, lane 3 (index 2) the LEFT neighbour of lane 1; entry lane 999 is not in the scene
    assert edges == {(1, 0, EdgeType.SUCC), (0, 1, EdgeType.PRED), (2, 0, EdgeType.LEFT)}
    types = {int(m.polyline_polygon[k]): LineType(m.polyline_type[k]) for k in range(m.num_polylines)}
    assert types[3] == LineType.DASH_SOLID_YELLOW and types[4] == LineType.ROAD_EDGE_MEDIAN
    assert len(m.polyline(int(m.polylines_of(5)[0]))) == 1  # stop sign: its position
    bump = m.polyline(int(m.polylines_of(7)[0]))
    assert len(bump) == 6 and np.allclose(bump[0], bump[-1])  # closed outline
    assert scene.signals.num_states == 91
    assert scene.signals.state[:50].tolist() == [SignalState.GO] * 50
    scene.validate()


def test_packed_and_unpacked_repeated_fields_give_the_same_scene(tmp_path: Path) -> None:
    raw = wb.make_scenario().SerializeToString()
    packed = wb.pack_varints(wb.pack_doubles(raw, 1), 4)  # timestamps_seconds, objects_of_interest
    packed = wb.map_field(packed, 8, lambda f: wb.map_field(f, 3, lambda lane: wb.pack_varints(lane, 9)))
    assert packed != raw and len(packed) < len(raw)
    assert_same_scene(scene_of(raw, tmp_path, "a.tfrecord"), scene_of(packed, tmp_path, "b.tfrecord"))


def test_shuffled_field_order_gives_the_same_scene(tmp_path: Path) -> None:
    raw = wb.make_scenario().SerializeToString()
    shuffled = wb.map_field(wb.shuffle_fields(raw, seed=3), 2, lambda t: wb.shuffle_fields(t, seed=4))
    shuffled = wb.map_field(shuffled, 2, lambda t: wb.map_field(t, 3, lambda st: wb.shuffle_fields(st, seed=5)))
    assert shuffled != raw
    assert_same_scene(scene_of(raw, tmp_path, "a.tfrecord"), scene_of(shuffled, tmp_path, "b.tfrecord"))


def test_unknown_fields_are_skipped(tmp_path: Path) -> None:
    raw = wb.make_scenario().SerializeToString()
    noisy = wb.unknown_fields() + raw + wb.unknown_fields()
    noisy = wb.map_field(noisy, 2, lambda t: t + wb.unknown_fields())  # inside every track, too
    noisy = wb.map_field(noisy, 8, lambda f: wb.unknown_fields() + f)
    assert_same_scene(scene_of(raw, tmp_path, "a.tfrecord"), scene_of(noisy, tmp_path, "b.tfrecord"))


def test_tf_example_detection() -> None:
    assert looks_like_tf_example(wb.tf_example_record())
    assert not looks_like_tf_example(wb.tf_example_record(("image/encoded",)))
    assert not looks_like_tf_example(wb.make_scenario().SerializeToString())
    assert not looks_like_tf_example(b"\xff\xff garbage")


def test_tf_example_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "old.tfrecord"
    write_records(path, [wb.tf_example_record()])
    with pytest.raises(WomdFormatError, match=r"old\.tfrecord: this is the older tf\.Example format"):
        WomdConverter(path, "val").list_items()


def test_crosswalk_edges() -> None:
    quad = np.array([[0, 0, 0], [10, 0, 0], [10, 3, 0], [0, 3, 0]], float)
    e1, e2 = crosswalk_edges(quad)
    np.testing.assert_allclose(e1, [[0, 0, 0], [10, 0, 0]])
    np.testing.assert_allclose(e2, [[0, 3, 0], [10, 3, 0]])
    e1, e2 = crosswalk_edges(quad[[1, 2, 3, 0]])  # the long sides are now the second pair
    assert np.isclose(np.linalg.norm(e1[1] - e1[0]), 10) and np.isclose(np.linalg.norm(e2[1] - e2[0]), 10)
    hexagon = np.array([[0, 0, 1], [4, -1, 1], [8, 0, 1], [8, 2, 1], [4, 3, 1], [0, 2, 1]], float)
    e1, e2 = crosswalk_edges(hexagon)
    assert np.linalg.norm(e1[1] - e1[0]) > 7 and np.isclose(e1[0, 2], 1.0)


# --- bad inputs -----------------------------------------------------------------------------------------------


def test_truncated_file_fails_listing_with_file_and_offset(tmp_path: Path) -> None:
    records = [wb.make_scenario(f"s{i}", seed=i).SerializeToString() for i in range(3)]
    blob = b"".join(encode_record(r) for r in records)
    path = tmp_path / "cut.tfrecord"
    second = len(encode_record(records[0]))
    path.write_bytes(blob[: second + 100])
    with pytest.raises(TFRecordError, match=rf"cut\.tfrecord: byte {second}: truncated"):
        WomdConverter(path, "val").list_items()


def test_bad_crc_record_is_dropped_and_the_others_converted(tmp_path: Path) -> None:
    records = [wb.make_scenario(f"s{i}", seed=i).SerializeToString() for i in range(3)]
    framed = [bytearray(encode_record(r)) for r in records]
    framed[1][40] ^= 0xFF  # a data byte of the second record
    path = tmp_path / "validation" / "part.tfrecord-00000-of-00001"
    path.parent.mkdir()
    path.write_bytes(b"".join(framed))
    converter = WomdConverter(tmp_path, "val")
    with pytest.raises(ConversionError) as info:
        converter.convert(converter.list_items()[1])
    assert info.value.reason == DropReason.CORRUPT_FILE and "data CRC mismatch" in str(info.value)
    assert "part.tfrecord-00000-of-00001" in str(info.value)
    manifest = convert_split(converter, tmp_path / "cache", ConversionSettings(progress=False))
    assert manifest["num_scenes"] == 2 and manifest["dropped_by_reason"] == {"corrupt_file": 1}
    (drop,) = manifest["dropped"]["corrupt_file"]
    assert drop["file"].endswith("part.tfrecord-00000-of-00001")
    # without CRC checks the flipped byte goes to the parser instead: a parse error or a changed scene
    lenient = WomdConverter(tmp_path, "val", verify_crc=False)
    try:
        scene = lenient.convert(lenient.list_items()[1]).scene
        assert scene.scenario_id == "s1"
    except ConversionError as exc:
        assert exc.reason == DropReason.CORRUPT_FILE


def test_scenario_errors(tmp_path: Path) -> None:
    proto = wb.make_scenario()
    del proto.tracks[3].states[-1]
    with pytest.raises(ConversionError, match="different numbers of states") as info:
        scene_of(proto.SerializeToString(), tmp_path)
    assert info.value.reason == DropReason.WRONG_NUM_STEPS
    proto = wb.make_scenario()
    proto.tracks_to_predict[0].track_index = 77
    with pytest.raises(ConversionError, match="tracks_to_predict index 77"):
        scene_of(proto.SerializeToString(), tmp_path, "b.tfrecord")
    proto = wb.make_scenario()
    del proto.tracks_to_predict[:]
    write_records(tmp_path / "c.tfrecord", [proto.SerializeToString()])
    result = convert_one(tmp_path / "c.tfrecord")
    assert result.scene.agents.role[0] == AgentRole.FOCAL  # the sdc, as a counted repair
    assert [r.kind.value for r in result.repairs] == ["no_tracks_to_predict"]


# --- layout, parallel conversion, cache -------------------------------------------------------------------------


def write_split(root: Path, folder: str, files: int, per_file: int, gzip: bool = False) -> list[str]:
    ids = []
    (root / folder).mkdir(parents=True)
    for f in range(files):
        protos = [wb.make_scenario(f"{folder}-{f}-{r}", seed=f * 100 + r) for r in range(per_file)]
        ids += [p.scenario_id for p in protos]
        name = f"{folder}.tfrecord-{f:05d}-of-{files:05d}" + (".gz" if gzip else "")
        write_records(root / folder / name, [p.SerializeToString() for p in protos], "gzip" if gzip else "none")
    return ids


@pytest.mark.parametrize("gzip", [False, True])
def test_split_layout_parallel_resumable(tmp_path: Path, gzip: bool) -> None:
    ids = write_split(tmp_path / "raw", "validation", files=3, per_file=4, gzip=gzip)
    (tmp_path / "raw" / "validation" / "README.txt").write_text("not a record file")
    converter = WomdConverter(tmp_path / "raw", "val")
    items = converter.list_items()
    assert len(items) == 12 and items[0].startswith("validation/validation.tfrecord-00000-of-00003")
    out = tmp_path / "cache" / "womd" / "val"
    settings = ConversionSettings(num_workers=2, scenes_per_part=5, progress=False)
    manifest = convert_split(converter, out, settings)
    assert manifest["num_scenes"] == 12 and manifest["complete"] and manifest["num_parts"] == 3
    cache = SceneCache(out)
    assert [cache[i].scenario_id for i in range(len(cache))] == ids
    again = convert_split(converter, out, settings)
    assert again["last_run"]["units_skipped"] == 3 and again["last_run"]["units_converted"] == 0


def test_missing_split_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no WOMD TFRecord files"):
        WomdConverter(tmp_path, "train").list_items()


def test_cache_round_trip_keeps_womd_fields(tmp_path: Path) -> None:
    scene = scene_of(wb.make_scenario().SerializeToString(), tmp_path)
    back = decode_scene(encode_scene(scene))
    assert_same_scene(scene, back)
    assert back.signals is not None and back.agents.difficulty is not None


def test_crop_keeps_the_signals_of_the_window(tmp_path: Path) -> None:
    scene = scene_of(wb.make_scenario().SerializeToString(), tmp_path)
    view = crop_scene(scene, 40, 20)
    assert view.signals.step.tolist() == list(range(20))
    assert view.signals.state.tolist() == [SignalState.GO] * 10 + [SignalState.STOP] * 10
    view.validate()


def test_schema_declares_the_documented_field_numbers() -> None:
    expected = {
        "Scenario": {"timestamps_seconds": 1, "tracks": 2, "objects_of_interest": 4, "scenario_id": 5,
                     "sdc_track_index": 6, "dynamic_map_states": 7, "map_features": 8, "current_time_index": 10,
                     "tracks_to_predict": 11},
        "RequiredPrediction": {"track_index": 1, "difficulty": 2},
        "Track": {"id": 1, "object_type": 2, "states": 3},
        "ObjectState": {"center_x": 2, "center_y": 3, "center_z": 4, "length": 5, "width": 6, "height": 7,
                        "heading": 8, "velocity_x": 9, "velocity_y": 10, "valid": 11},
        "TrafficSignalLaneState": {"lane": 1, "state": 2, "stop_point": 3},
        "MapFeature": {"id": 1, "lane": 3, "road_line": 4, "road_edge": 5, "stop_sign": 7, "crosswalk": 8,
                       "speed_bump": 9, "driveway": 10},
        "MapPoint": {"x": 1, "y": 2, "z": 3},
        "LaneCenter": {"speed_limit_mph": 1, "type": 2, "interpolating": 3, "polyline": 8, "entry_lanes": 9,
                       "exit_lanes": 10, "left_neighbors": 11, "right_neighbors": 12, "left_boundaries": 13,
                       "right_boundaries": 14},
        "RoadLine": {"type": 1, "polyline": 2},
        "RoadEdge": {"type": 1, "polyline": 2},
        "StopSign": {"lane": 1, "position": 2},
        "Crosswalk": {"polygon": 1},
    }  # fmt: skip
    for message, fields in expected.items():
        descriptor = womd_message(message).DESCRIPTOR
        assert {f.name: f.number for f in descriptor.fields} == fields, message
    states = womd_message("TrafficSignalLaneState").DESCRIPTOR.enum_types_by_name["State"]
    assert [v.number for v in states.values] == [s.value for s in SignalState]


def test_descriptor_module_matches_the_proto_file() -> None:
    """The embedded descriptor is the .proto compiled (needs grpcio-tools; CI skips it when absent)."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools not installed: cannot recompile the .proto here")
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_womd_schema.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
