"""The raw-format modules: what the writers emit is what the readers read, and bad files are named and refused."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from smartpretrain.data.formats import FormatError, MissingColumnsError, av1, av2
from smartpretrain.data.synthetic import generate_av1, generate_av2

# ----------------------------------------------------------------------------------------------------------- AV1


def test_av1_csv_text_reads_back_exactly() -> None:
    stamps = [315966000.1, 315966000.1, 315966000.2012]
    xs, ys = [1.0 / 3.0, -2.5, 1e-7], [4.25, 0.1 + 0.2, 1234567.891]
    text = av1.csv_text(stamps, ["a", "b", "a"], ["AGENT", "AV", "AGENT"], xs, ys, "PIT")
    assert text.splitlines()[0] == ",".join(av1.COLUMNS) and text.endswith("\n")
    table = av1.read_csv(text.encode())
    assert table.column_names == list(av1.COLUMNS)
    assert table.column("TIMESTAMP").to_pylist() == stamps  # repr round trip: bit-exact floats
    assert table.column("X").to_pylist() == xs and table.column("Y").to_pylist() == ys
    assert table.column("TRACK_ID").combine_chunks().dictionary.to_pylist() == ["a", "b"]
    assert pa.types.is_dictionary(table.column("CITY_NAME").type)
    with pytest.raises(ValueError, match="zip"):
        av1.csv_text(stamps, ["a"], ["AGENT"], xs, ys, "PIT")


def test_av1_vector_map_columnar_read(tmp_path) -> None:
    lanes = [
        av1.AV1Lane(5, np.array([[0.0, 0.0], [10.0, 0.0]]), r_neighbor_id=6, successors=[7, 99]),
        av1.AV1Lane(6, np.array([[0.0, -3.5, 1.5], [10.0, -3.5, 2.0], [20.0, -3.5, 2.5]]), l_neighbor_id=5),
        av1.AV1Lane(7, np.array([[10.0, 0.0], [20.0, 5.0]]), turn_direction="LEFT", predecessors=[5]),
    ]
    path = av1.map_path(tmp_path, "MIA")
    assert path.name == "pruned_argoverse_MIA_10316_vector_map.xml" and path.parent.name == "map_files"
    av1.write_vector_map(path, lanes)
    raw = av1.read_vector_map(path)
    assert raw.lane_ids.tolist() == [5, 6, 7] and raw.centerline_offsets.tolist() == [0, 2, 5, 7]
    assert raw.centerline_points[:, 2].tolist() == [0.0, 0.0, 1.5, 2.0, 2.5, 0.0, 0.0]
    assert raw.has_height.tolist() == [False, False, True, True, True, False, False]
    assert raw.turn_direction.tolist() == ["NONE", "NONE", "LEFT"]
    # a reference to a lane absent from the file (99: pruned) is kept as read; resolving it is the caller's job
    assert raw.successors == [[7, 99], [], []] and raw.predecessors == [[], [], [5]]
    assert raw.left_neighbor == [None, 5, None] and raw.right_neighbor == [6, None, None]
    back = av1.read_lanes(path)
    assert [lane.centerline.shape for lane in back] == [(2, 2), (3, 3), (2, 2)]
    np.testing.assert_array_equal(back[1].centerline, lanes[1].centerline)
    assert av1.parse_map_file_name(path) == ("MIA", 10316)


def test_av1_city_map_drops_pruned_references(tmp_path) -> None:
    """The converter's city map resolves the reader's references, dropping those to lanes absent from the file."""
    from smartpretrain.data.converters.av1_map import read_av1_city_map
    from smartpretrain.data.taxonomy import EdgeType

    lanes = [av1.AV1Lane(5, np.zeros((2, 2)), successors=[7, 99]), av1.AV1Lane(7, np.ones((2, 2)), predecessors=[5])]
    path = av1.map_path(tmp_path, "PIT")
    av1.write_vector_map(path, lanes)
    city = read_av1_city_map(path)
    edges = {(int(s), int(d), int(t)) for (s, d), t in zip(city.edge_index.T, city.edge_type, strict=True)}
    assert edges == {(1, 0, EdgeType.SUCC), (0, 1, EdgeType.PRED)}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('<ArgoverseVectorMap><node id="1" x="0" y="nan" /></ArgoverseVectorMap>', "NaN/inf"),
        (
            '<ArgoverseVectorMap><node id="1" x="0" y="0" /><node id="1" x="1" y="0" /></ArgoverseVectorMap>',
            "node id 1",
        ),
        (
            '<ArgoverseVectorMap><way lane_id="3"><tag k="turn_direction" v="NONE" /></way></ArgoverseVectorMap>',
            "no <nd",
        ),
        ("<ArgoverseVectorMap><node", "malformed XML"),
    ],
    ids=["non_finite", "duplicate_node", "lane_without_points", "truncated"],
)
def test_av1_vector_map_refusals_name_the_file(tmp_path, text: str, fragment: str) -> None:
    path = tmp_path / "pruned_argoverse_PIT_10314_vector_map.xml"
    path.write_text(text)
    with pytest.raises(FormatError) as err:
        av1.read_vector_map(path)
    assert err.value.path == str(path) and fragment in err.value.detail and str(err.value).startswith(str(path))


def test_av1_map_file_names() -> None:
    with pytest.raises(FormatError, match="file name is not"):
        av1.parse_map_file_name("PIT_map.xml")
    with pytest.raises(FormatError, match="city PIT has map id 10314"):
        av1.parse_map_file_name("pruned_argoverse_PIT_1_vector_map.xml")
    assert av1.parse_map_file_name("pruned_argoverse_XYZ_7_vector_map.xml") == ("XYZ", 7)  # unpublished city: kept


def test_av1_generator_writes_the_format(tmp_path) -> None:
    (path,) = generate_av1(tmp_path, "val", num_scenes=1, seed=1, with_map=True)
    assert path.parent == av1.split_folder(tmp_path, "val")
    table = av1.read_csv(path.read_bytes())
    assert table.column_names == list(av1.COLUMNS)
    labels = set(table.column("OBJECT_TYPE").combine_chunks().dictionary.to_pylist())
    assert {av1.FOCAL_LABEL, av1.SDC_LABEL} <= labels <= {av1.FOCAL_LABEL, av1.SDC_LABEL, av1.OTHERS_LABEL}
    assert len(np.unique(table.column("TIMESTAMP").to_numpy())) == av1.NUM_STEPS
    (city,) = table.column("CITY_NAME").combine_chunks().dictionary.to_pylist()
    assert av1.read_vector_map(av1.map_path(tmp_path, city)).lane_ids.size > 0


# ----------------------------------------------------------------------------------------------------------- AV2


def test_av2_columns_are_in_the_schema() -> None:
    assert set(av2.COLUMNS) <= set(av2.SCHEMA.names)
    assert set(av2.DICTIONARY_COLUMNS) <= set(av2.COLUMNS)


def test_av2_generator_files_read_back(tmp_path) -> None:
    (scene_dir,) = generate_av2(tmp_path, "val", num_scenes=1, seed=2)
    sid = scene_dir.name
    table = av2.read_scenario(av2.scenario_file(scene_dir, sid))
    assert table.column_names == list(av2.COLUMNS)
    assert table.column("num_timestamps")[0].as_py() == av2.NUM_STEPS
    assert pa.types.is_dictionary(table.column("track_id").type)
    assert av2.SDC_TRACK_ID in table.column("track_id").combine_chunks().dictionary.to_pylist()
    assert av2.other_map_files(scene_dir) == [av2.map_file(scene_dir, sid)]
    lanes, crossings = av2.read_map(av2.map_file(scene_dir, sid))
    assert lanes and set(lanes[0]) == set(av2.LaneSegment.__annotations__)
    assert all(set(c) == set(av2.PedestrianCrossing.__annotations__) for c in crossings)


def test_av2_scenario_schema_and_missing_columns(tmp_path) -> None:
    path = tmp_path / "scenario_x.parquet"
    with pytest.raises(ValueError, match="AV2 schema"):
        av2.write_scenario(path, pa.table({"track_id": ["a"]}))
    assert not path.exists()
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"track_id": ["a"], "timestep": [0]}), path)
    with pytest.raises(MissingColumnsError) as err:
        av2.read_scenario(path)
    assert "object_type" in err.value.missing and err.value.present == ["track_id", "timestep"]


def test_av2_map_round_trip_and_refusal(tmp_path) -> None:
    point: av2.Point = {"x": 1.0, "y": 2.0, "z": 0.5}
    lane: av2.LaneSegment = {
        "id": 7,
        "is_intersection": False,
        "lane_type": "VEHICLE",
        "left_lane_boundary": [point, point],
        "left_lane_mark_type": "NONE",
        "left_neighbor_id": None,
        "predecessors": [],
        "right_lane_boundary": [point, point],
        "right_lane_mark_type": "SOLID_WHITE",
        "right_neighbor_id": None,
        "successors": [3],
    }
    path = tmp_path / "log_map_archive_x.json"
    av2.write_map(path, {"drivable_areas": {}, "lane_segments": {"7": lane}})
    lanes, crossings = av2.read_map(path)
    assert lanes == [lane] and crossings == []  # pedestrian_crossings is optional
    assert av2.read_map(path, raw=path.read_bytes()) == (lanes, crossings)
    path.write_text("[1, 2]")
    with pytest.raises(FormatError, match="not an AV2 map JSON") as err:
        av2.read_map(path)
    assert err.value.path == str(path)
