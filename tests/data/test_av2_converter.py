"""AV2 converter: the real fixture is reproduced exactly, and agrees with the av2 package's own readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from av2.datasets.motion_forecasting.scenario_serialization import load_argoverse_scenario_parquet
from av2.map.map_api import ArgoverseStaticMap

from smartpretrain.data.converters.av2 import Av2Converter, first_appearance_codes
from smartpretrain.data.converters.base import ConversionError, DropReason, RepairKind
from smartpretrain.data.replicate import replicate_av2_scenario
from smartpretrain.data.taxonomy import AgentRole, AgentType, EdgeType, LineType, PolygonType, Side
from tests.conftest import AV2_FIXTURE_ID, AV2_FIXTURE_ROOT


@pytest.fixture(scope="module")
def converted():
    if not AV2_FIXTURE_ROOT.exists():
        pytest.skip(f"real data not available: {AV2_FIXTURE_ROOT}")
    return Av2Converter(AV2_FIXTURE_ROOT, "val").convert(AV2_FIXTURE_ID)


def test_fixture_tracks_match_parquet(converted, av2_fixture_dir: Path) -> None:
    scene = converted.scene
    assert converted.repairs == []
    assert (scene.agents.num_agents, scene.num_steps, scene.current_step) == (58, 110, 49)
    assert scene.city == "austin" and scene.dataset == "av2"
    roles = np.bincount(scene.agents.role, minlength=4)
    assert roles[AgentRole.FOCAL] == 1 and roles[AgentRole.SCORED] == 1
    assert roles[AgentRole.UNSCORED] == 5 and roles[AgentRole.FRAGMENT] == 51
    assert scene.agents.ids[scene.focal_index] == "138951"
    assert scene.agents.is_sdc.sum() == 1 and scene.agents.ids[int(np.flatnonzero(scene.agents.is_sdc)[0])] == "AV"

    df = pq.read_table(av2_fixture_dir / f"scenario_{AV2_FIXTURE_ID}.parquet").to_pandas()
    assert scene.agents.valid.sum() == len(df)
    index = {tid: i for i, tid in enumerate(scene.agents.ids)}
    rows = df["track_id"].map(index).to_numpy()
    steps = df["timestep"].to_numpy()
    assert scene.agents.valid[rows, steps].all()
    pos = scene.agents.position[rows, steps, :2].astype(np.float64) + scene.origin[:2]
    np.testing.assert_allclose(pos, df[["position_x", "position_y"]].to_numpy(), atol=1e-3, rtol=0)
    np.testing.assert_allclose(scene.agents.heading[rows, steps], df["heading"].to_numpy(), atol=1e-6)
    np.testing.assert_allclose(
        scene.agents.velocity[rows, steps], df[["velocity_x", "velocity_y"]].to_numpy(), atol=1e-5
    )
    # the origin is the focal agent at the current step
    np.testing.assert_allclose(scene.agents.position[scene.focal_index, 49], 0.0, atol=1e-6)


def test_fixture_agrees_with_av2_scenario_reader(converted, av2_fixture_dir: Path) -> None:
    scene = converted.scene
    official = load_argoverse_scenario_parquet(av2_fixture_dir / f"scenario_{AV2_FIXTURE_ID}.parquet")
    assert [t.track_id for t in official.tracks] == scene.agents.ids
    for i, track in enumerate(official.tracks):
        assert AgentType[track.object_type.name] == scene.agents.type[i]
        assert int(track.category.value) == scene.agents.role[i]
        steps = [s.timestep for s in track.object_states]
        assert np.flatnonzero(scene.agents.valid[i]).tolist() == steps
        xy = np.array([s.position for s in track.object_states])
        np.testing.assert_allclose(scene.agents.position[i, steps, :2] + scene.origin[:2], xy, atol=1e-3, rtol=0)


def test_fixture_map_agrees_with_av2_map_api(converted, av2_fixture_dir: Path) -> None:
    m = converted.scene.map
    origin = converted.scene.origin
    static_map = ArgoverseStaticMap.from_json(av2_fixture_dir / f"log_map_archive_{AV2_FIXTURE_ID}.json")
    lane_ids = static_map.get_scenario_lane_segment_ids()
    crossings = list(static_map.vector_pedestrian_crossings.values())
    assert len(lane_ids) == 71 and len(crossings) == 6
    assert (m.polygon_type < PolygonType.CROSSWALK).sum() == 71
    assert (m.polygon_type == PolygonType.CROSSWALK).sum() == 6
    assert m.polygon_ids[:71].tolist() == lane_ids
    assert m.polygon_ids[71:].tolist() == [c.id for c in crossings]

    def line(polygon: int, side: Side) -> np.ndarray:
        lines = m.polylines_of(polygon)
        (k,) = [k for k in lines if m.polyline_side[k] == side]
        return m.polyline(k).astype(np.float64) + origin

    for k, lane_id in enumerate(lane_ids):
        lane = static_map.vector_lane_segments[lane_id]
        np.testing.assert_allclose(line(k, Side.LEFT), lane.left_lane_boundary.xyz, atol=1e-3, rtol=0)
        np.testing.assert_allclose(line(k, Side.RIGHT), lane.right_lane_boundary.xyz, atol=1e-3, rtol=0)
        left_type = m.polyline_type[next(x for x in m.polylines_of(k) if m.polyline_side[x] == Side.LEFT)]
        assert LineType(left_type).name == lane.left_mark_type.value
        assert bool(m.polygon_is_intersection[k]) == lane.is_intersection
        assert PolygonType(m.polygon_type[k]).name.split("_")[0] == lane.lane_type.value
    for j, crossing in enumerate(crossings):
        np.testing.assert_allclose(line(71 + j, Side.LEFT), crossing.edge1.xyz, atol=1e-3, rtol=0)
        np.testing.assert_allclose(line(71 + j, Side.RIGHT), crossing.edge2.xyz, atol=1e-3, rtol=0)
        np.testing.assert_allclose(line(71 + j, Side.CENTER), (crossing.edge1.xyz + crossing.edge2.xyz) / 2, atol=1e-3)

    # topology: every relation of av2's lane graph among local lanes, and nothing else
    position = {lane_id: k for k, lane_id in enumerate(lane_ids)}
    expected = set()
    for k, lane_id in enumerate(lane_ids):
        lane = static_map.vector_lane_segments[lane_id]
        expected |= {(position[p], k, EdgeType.PRED) for p in lane.predecessors if p in position}
        expected |= {(position[s], k, EdgeType.SUCC) for s in lane.successors if s in position}
        if lane.left_neighbor_id in position:
            expected.add((position[lane.left_neighbor_id], k, EdgeType.LEFT))
        if lane.right_neighbor_id in position:
            expected.add((position[lane.right_neighbor_id], k, EdgeType.RIGHT))
    got = {(int(s), int(d), EdgeType(int(t))) for (s, d), t in zip(m.edge_index.T, m.edge_type, strict=True)}
    assert got == expected and len(got) == m.edge_type.size
    assert {t for *_, t in got} == {EdgeType.PRED, EdgeType.SUCC, EdgeType.LEFT, EdgeType.RIGHT}


def test_missing_centerline_uses_av2_midpoint_line(tmp_path: Path, av2_fixture_dir: Path) -> None:
    (new_id,) = replicate_av2_scenario(av2_fixture_dir, tmp_path, "val", 1)
    map_path = tmp_path / "val" / new_id / f"log_map_archive_{new_id}.json"
    data = json.loads(map_path.read_text())
    for lane in data["lane_segments"].values():
        del lane["centerline"]
    map_path.write_text(json.dumps(data))
    scene = Av2Converter(tmp_path, "val").convert(new_id).scene
    static_map = ArgoverseStaticMap.from_json(map_path)
    for k, lane_id in enumerate(static_map.get_scenario_lane_segment_ids()):
        (c,) = [x for x in scene.map.polylines_of(k) if scene.map.polyline_side[x] == Side.CENTER]
        expected = static_map.get_lane_segment_centerline(lane_id)
        np.testing.assert_allclose(scene.map.polyline(c) + scene.origin, expected, atol=1e-3, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# bad input: each case names the file and the reason


def _copy_with(tmp_path: Path, src: Path, mutate) -> tuple[Av2Converter, str, Path]:
    (new_id,) = replicate_av2_scenario(src, tmp_path, "val", 1)
    parquet = tmp_path / "val" / new_id / f"scenario_{new_id}.parquet"
    mutate(parquet, new_id)
    return Av2Converter(tmp_path, "val"), new_id, parquet


def _rewrite(parquet: Path, fn) -> None:
    pq.write_table(fn(pq.read_table(parquet)), parquet)


def _set_column(table: pa.Table, name: str, values) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, pa.array(values, table.schema.field(name).type))


def _break_topology(parquet: Path, scenario_id: str) -> None:
    map_path = parquet.parent / f"log_map_archive_{scenario_id}.json"
    data = json.loads(map_path.read_text())
    next(iter(data["lane_segments"].values()))["predecessors"] = ["not-a-lane-id"]
    map_path.write_text(json.dumps(data))


BAD_CASES = {
    "bad_topology": (_break_topology, DropReason.BAD_MAP),
    "truncated": (lambda p, i: p.write_bytes(p.read_bytes()[:1000]), DropReason.CORRUPT_FILE),
    "garbage": (lambda p, i: p.write_bytes(b"not a parquet file at all" * 40), DropReason.CORRUPT_FILE),
    "missing_map": (lambda p, i: (p.parent / f"log_map_archive_{i}.json").unlink(), DropReason.MISSING_FILE),
    "bad_map": (lambda p, i: (p.parent / f"log_map_archive_{i}.json").write_text('{"lane_'), DropReason.BAD_MAP),
    "missing_columns": (lambda p, i: _rewrite(p, lambda t: t.drop(["heading"])), DropReason.MISSING_COLUMNS),
    # a string column, read dictionary-encoded: pyarrow refuses its absence differently (KeyError)
    "missing_string_column": (
        lambda p, i: _rewrite(p, lambda t: t.drop(["object_type"])),
        DropReason.MISSING_COLUMNS,
    ),
    "empty": (lambda p, i: _rewrite(p, lambda t: t.slice(0, 0)), DropReason.EMPTY_FILE),
    "nan": (
        lambda p, i: _rewrite(p, lambda t: _set_column(t, "position_x", [np.nan, *t["position_x"].to_pylist()[1:]])),
        DropReason.NON_FINITE_VALUES,
    ),
    "no_focal": (
        lambda p, i: _rewrite(p, lambda t: _set_column(t, "focal_track_id", ["nobody"] * t.num_rows)),
        DropReason.NO_FOCAL_AGENT,
    ),
    "duplicate_rows": (
        lambda p, i: _rewrite(p, lambda t: pa.concat_tables([t, t.slice(5, 1)])),
        DropReason.DUPLICATE_ROWS,
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_reported(case: str, tmp_path: Path, av2_fixture_dir: Path) -> None:
    mutate, reason = BAD_CASES[case]
    converter, new_id, _parquet = _copy_with(tmp_path, av2_fixture_dir, mutate)
    with pytest.raises(ConversionError) as info:
        converter.convert(new_id)
    assert info.value.reason == reason
    assert new_id in str(info.value) and str(tmp_path) in info.value.path
    assert reason.value in str(info.value)


def test_unknown_object_type_becomes_unknown(tmp_path: Path, av2_fixture_dir: Path) -> None:
    def mutate(p: Path, _: str) -> None:
        _rewrite(p, lambda t: _set_column(t, "object_type", ["hovercraft", *t["object_type"].to_pylist()[1:]]))

    converter, new_id, parquet = _copy_with(tmp_path, av2_fixture_dir, mutate)
    result = converter.convert(new_id)
    first = pq.read_table(parquet)["track_id"][0].as_py()
    assert result.scene.agents.type[result.scene.agents.ids.index(first)] == AgentType.UNKNOWN
    assert [r.kind for r in result.repairs] == [RepairKind.UNKNOWN_OBJECT_TYPE]
    assert "hovercraft" in result.repairs[0].detail and str(parquet) == result.repairs[0].path


def test_rows_out_of_order_give_the_same_scene(tmp_path: Path, av2_fixture_dir: Path) -> None:
    rng = np.random.default_rng(0)

    def mutate(p: Path, _: str) -> None:
        _rewrite(p, lambda t: t.take(pa.array(rng.permutation(t.num_rows))))

    converter, new_id, _ = _copy_with(tmp_path, av2_fixture_dir, mutate)
    result = converter.convert(new_id)
    reference = Av2Converter(AV2_FIXTURE_ROOT, "val").convert(AV2_FIXTURE_ID).scene
    assert [r.kind for r in result.repairs] == [RepairKind.ROWS_OUT_OF_ORDER]
    # agents come in first-row order, so compare by track id
    order = [result.scene.agents.ids.index(t) for t in reference.agents.ids]
    np.testing.assert_array_equal(result.scene.agents.position[order], reference.agents.position)
    np.testing.assert_array_equal(result.scene.agents.valid[order], reference.agents.valid)


def test_first_appearance_codes_any_dictionary_order() -> None:
    chunked = pa.chunked_array(
        [pa.array(["b", "a", "b"]).dictionary_encode(), pa.array(["c", "a"]).dictionary_encode()]
    )
    values, codes = first_appearance_codes(chunked)
    assert values == ["b", "a", "c"] and codes.tolist() == [0, 1, 0, 2, 1]
    shuffled = pa.DictionaryArray.from_arrays(pa.array([2, 0, 2, 1]), pa.array(["x", "y", "z"]))
    values, codes = first_appearance_codes(pa.chunked_array([shuffled]))
    assert values == ["z", "x", "y"] and codes.tolist() == [0, 1, 0, 2]
    values, codes = first_appearance_codes(pa.chunked_array([pa.array(["q", "p", "q"])]))
    assert values == ["q", "p"] and codes.tolist() == [0, 1, 0]
    with pytest.raises(ValueError, match="null"):
        first_appearance_codes(pa.chunked_array([pa.array(["q", None])]))
