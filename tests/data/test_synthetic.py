"""Synthetic scene generator: real raw formats (AV2 parquet + map JSON, AV1 CSV + vector-map XML), realism, speed."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from av2.datasets.motion_forecasting.data_schema import TrackCategory
from av2.datasets.motion_forecasting.scenario_serialization import load_argoverse_scenario_parquet
from av2.map.lane_segment import LaneMarkType
from av2.map.map_api import ArgoverseStaticMap

from smartpretrain.data.synthetic import (
    AV2_CITIES,
    AV2_SCHEMA,
    AV1Lane,
    av1_map_path,
    generate_av1,
    generate_av2,
    main,
    read_av1_vector_map,
    write_av1_vector_map,
)
from tests.conftest import AV2_FIXTURE_ID, AV2_FIXTURE_ROOT

AV2_OBJECT_TYPES = {
    "vehicle",
    "pedestrian",
    "motorcyclist",
    "cyclist",
    "bus",
    "static",
    "background",
    "construction",
    "riderless_bicycle",
    "unknown",
}
AV1_WAY_TAGS = {"has_traffic_control", "turn_direction", "is_intersection", "l_neighbor_id", "r_neighbor_id"}


def _files(scene_dir: Path) -> tuple[Path, Path]:
    sid = scene_dir.name
    return scene_dir / f"scenario_{sid}.parquet", scene_dir / f"log_map_archive_{sid}.json"


@pytest.fixture(scope="module")
def av2_scenes(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return generate_av2(tmp_path_factory.mktemp("av2"), "val", num_scenes=6, seed=3)


@pytest.fixture(scope="module")
def av1_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("av1")
    generate_av1(root, "val", num_scenes=8, seed=5, with_map=True)
    return root


# ----------------------------------------------------------------------------------------------------- AV2 format


def test_av2_layout_and_schema(av2_scenes: list[Path]) -> None:
    assert len(av2_scenes) == 6 and len({d.name for d in av2_scenes}) == 6
    for scene_dir in av2_scenes:
        assert scene_dir.parent.name == "val"
        parquet, vector_map = _files(scene_dir)
        assert parquet.is_file() and vector_map.is_file()
        assert sorted(p.name for p in scene_dir.iterdir()) == sorted([parquet.name, vector_map.name])  # no temp files
        table = pq.read_table(parquet)
        assert table.schema.remove_metadata().equals(AV2_SCHEMA)
        df = table.to_pandas()
        assert (df["scenario_id"] == scene_dir.name).all()
        assert set(df["object_type"]) <= AV2_OBJECT_TYPES
        assert df["city"].nunique() == 1 and df["city"].iloc[0] in AV2_CITIES
        assert (df["num_timestamps"] == 110).all()
        assert np.allclose(df["end_timestamp"] - df["start_timestamp"], 109 * 1e8)
        assert df["timestep"].between(0, 109).all()
        assert (df["observed"] == (df["timestep"] < 50)).all()
        assert not df.duplicated(["track_id", "timestep"]).any()
        # Rows are grouped by track, and ordered by timestep within a track.
        starts = np.flatnonzero(np.r_[True, df["track_id"].to_numpy()[1:] != df["track_id"].to_numpy()[:-1]])
        assert len(starts) == df["track_id"].nunique()
        for tid, g in df.groupby("track_id", sort=False):
            assert np.all(np.diff(g["timestep"].to_numpy()) == 1), tid  # contiguous observation window
        assert np.isfinite(df[["position_x", "position_y", "heading", "velocity_x", "velocity_y"]].to_numpy()).all()


def test_av2_schema_matches_real_fixture(av2_scenes: list[Path]) -> None:
    real = AV2_FIXTURE_ROOT / "val" / AV2_FIXTURE_ID / f"scenario_{AV2_FIXTURE_ID}.parquet"
    if not real.exists():
        pytest.skip(f"real data not available: {real}")
    ours = pq.read_schema(_files(av2_scenes[0])[0]).remove_metadata()
    assert ours.equals(pq.read_schema(real).remove_metadata())


def test_av2_readable_by_av2_package(av2_scenes: list[Path]) -> None:
    for scene_dir in av2_scenes:
        parquet, map_json = _files(scene_dir)
        df = pd.read_parquet(parquet)
        scenario = load_argoverse_scenario_parquet(parquet)
        assert scenario.scenario_id == scene_dir.name
        assert len(scenario.tracks) == df["track_id"].nunique()
        assert 20 <= len(scenario.tracks) <= 60
        tracks = {t.track_id: t for t in scenario.tracks}
        focal = [t for t in scenario.tracks if t.category == TrackCategory.FOCAL_TRACK]
        assert len(focal) == 1 and focal[0].track_id == scenario.focal_track_id
        assert [s.timestep for s in focal[0].object_states] == list(range(110))
        assert focal[0].object_type.value == "vehicle"
        xy = np.array([s.position for s in focal[0].object_states])
        assert np.linalg.norm(xy[-1] - xy[0]) > 5.0  # the focal agent moves
        av = tracks["AV"]
        assert av.category == TrackCategory.UNSCORED_TRACK and av.object_type.value == "vehicle"
        assert [s.timestep for s in av.object_states] == list(range(110))
        assert {t.category.value for t in scenario.tracks} == {0, 1, 2, 3}
        assert scenario.city_name in AV2_CITIES

        static_map = ArgoverseStaticMap.from_json(map_json)
        raw = json.loads(map_json.read_text())
        assert set(raw) == {"drivable_areas", "lane_segments", "pedestrian_crossings"}
        assert len(static_map.vector_lane_segments) == len(raw["lane_segments"])
        assert 40 <= len(static_map.vector_lane_segments) <= 80
        assert len(static_map.vector_pedestrian_crossings) == len(raw["pedestrian_crossings"]) >= 2
        assert len(static_map.vector_drivable_areas) == len(raw["drivable_areas"]) >= 1
        for lane_id in static_map.get_scenario_lane_segment_ids():
            centerline = static_map.get_lane_segment_centerline(lane_id)
            assert centerline.shape[1] == 3 and np.isfinite(centerline).all()
            # av2's midpoint ladder agrees with the stored centerline.
            stored = np.array([[p["x"], p["y"]] for p in raw["lane_segments"][str(lane_id)]["centerline"]])
            assert np.linalg.norm(centerline[0, :2] - stored[0]) < 0.05
            assert np.linalg.norm(centerline[-1, :2] - stored[-1]) < 0.05


def test_av2_scored_and_fragments(av2_scenes: list[Path]) -> None:
    for scene_dir in av2_scenes:
        df = pd.read_parquet(_files(scene_dir)[0])
        per_track = df.groupby("track_id").agg(
            cat=("object_category", "first"), n=("timestep", "size"), lo=("timestep", "min"), hi=("timestep", "max")
        )
        assert (per_track["cat"] == 3).sum() == 1
        scored = per_track[per_track["cat"] == 2]
        assert 1 <= len(scored) <= 5
        assert ((scored["lo"] <= 49) & (scored["hi"] == 109)).all()
        fragments = per_track[per_track["cat"] == 0]
        assert len(fragments) > 0 and (fragments["n"] < 110).all()
        assert (fragments["lo"] > 0).any() and (fragments["hi"] < 109).any()  # entering late, leaving early
        assert df.groupby("track_id")["object_category"].nunique().max() == 1
        assert df.groupby("track_id")["object_type"].nunique().max() == 1


def test_av2_lane_topology(av2_scenes: list[Path]) -> None:
    marks = {m.value for m in LaneMarkType}
    for scene_dir in av2_scenes:
        lanes = json.loads(_files(scene_dir)[1].read_text())["lane_segments"]
        ids = {lane["id"] for lane in lanes.values()}
        assert {str(i) for i in ids} == set(lanes)
        turns = 0
        for lane in lanes.values():
            assert lane["lane_type"] in {"VEHICLE", "BIKE", "BUS"}
            assert lane["left_lane_mark_type"] in marks and lane["right_lane_mark_type"] in marks
            for key in ("left_neighbor_id", "right_neighbor_id"):
                assert lane[key] is None or lane[key] in ids
            assert set(lane["successors"]) <= ids and set(lane["predecessors"]) <= ids
            end = np.array([lane["centerline"][-1]["x"], lane["centerline"][-1]["y"]])
            for succ in lane["successors"]:
                other = lanes[str(succ)]
                assert lane["id"] in other["predecessors"]
                start = np.array([other["centerline"][0]["x"], other["centerline"][0]["y"]])
                assert np.linalg.norm(end - start) < 0.05  # connected lanes touch
            if lane["right_neighbor_id"] is not None:
                assert lanes[str(lane["right_neighbor_id"])]["left_neighbor_id"] == lane["id"]
            for p in (*lane["centerline"], *lane["left_lane_boundary"], *lane["right_lane_boundary"]):
                assert set(p) == {"x", "y", "z"}
            turns += lane["is_intersection"]
        assert turns >= 8  # connectors through the intersection
        assert any(len(lane["successors"]) >= 2 for lane in lanes.values())  # a choice: straight or turn


def test_av2_motion_is_consistent(av2_scenes: list[Path]) -> None:
    errors, heading_errors, speeds = [], [], []
    for scene_dir in av2_scenes:
        df = pd.read_parquet(_files(scene_dir)[0])
        for _, g in df.groupby("track_id", sort=False):
            if len(g) < 3:
                continue
            p = g[["position_x", "position_y"]].to_numpy()
            v = g[["velocity_x", "velocity_y"]].to_numpy()
            h = g["heading"].to_numpy()
            fd = (p[2:] - p[:-2]) / 0.2  # central finite differences of the positions
            errors.append(np.linalg.norm(fd - v[1:-1], axis=1))
            speed = np.linalg.norm(v, axis=1)
            speeds.append(speed)
            moving = speed > 1.0
            diff = np.angle(np.exp(1j * (h - np.arctan2(v[:, 1], v[:, 0]))))
            heading_errors.append(np.abs(diff[moving]))
            # Heading also matches the direction of the displacement over 1 s for agents moving fast.
            disp = p[10:] - p[:-10]
            fast = np.linalg.norm(disp, axis=1) > 5.0
            d2 = np.angle(np.exp(1j * (h[5:-5] - np.arctan2(disp[:, 1], disp[:, 0]))))
            assert np.all(np.abs(d2[fast]) < 0.35)
            assert np.all((h >= -np.pi) & (h <= np.pi))
    err = np.concatenate(errors)
    assert np.median(err) < 0.25 and np.quantile(err, 0.99) < 0.6  # ~2 cm position noise
    assert np.max(np.concatenate(heading_errors)) < 1e-6
    speed = np.concatenate(speeds)
    assert speed.max() < 16.5 and (speed < 0.1).mean() > 0.05 and (speed > 8.0).mean() > 0.05


def test_av2_determinism_and_chunks(tmp_path: Path) -> None:
    one = generate_av2(tmp_path / "one", "train", num_scenes=4, seed=11)
    chunked = generate_av2(tmp_path / "chunk", "train", num_scenes=2, seed=11)
    chunked += generate_av2(tmp_path / "chunk", "train", num_scenes=2, seed=11, start_index=2)
    assert [d.name for d in one] == [d.name for d in chunked]
    for a, b in zip(one, chunked, strict=True):
        (pa_, ja), (pb, jb) = _files(a), _files(b)
        assert pq.read_table(pa_).equals(pq.read_table(pb))
        assert pa_.read_bytes() == pb.read_bytes()
        assert ja.read_bytes() == jb.read_bytes()
    other = generate_av2(tmp_path / "other", "train", num_scenes=2, seed=12)
    assert {d.name for d in other}.isdisjoint(d.name for d in one)


def test_av2_scene_counts_are_realistic(tmp_path: Path) -> None:
    dirs = generate_av2(tmp_path, "train", num_scenes=20, seed=0)
    agents, lanes, crossings, types, four_way = [], [], [], set(), 0
    for scene_dir in dirs:
        parquet, map_json = _files(scene_dir)
        df = pd.read_parquet(parquet, columns=["track_id", "object_type"])
        raw = json.loads(map_json.read_text())
        agents.append(df["track_id"].nunique())
        lanes.append(len(raw["lane_segments"]))
        crossings.append(len(raw["pedestrian_crossings"]))
        types |= set(df["object_type"])
        four_way += sum(lane["is_intersection"] for lane in raw["lane_segments"].values()) >= 16
    assert 25 <= np.mean(agents) <= 55 and 40 <= np.mean(lanes) <= 80 and np.mean(crossings) >= 3
    assert {"vehicle", "pedestrian", "cyclist", "static"} <= types
    assert 0 < four_way < len(dirs)  # both 4-way and T intersections occur


def test_av2_scenes_convert_cleanly(tmp_path: Path) -> None:
    """Generated scenes go through the project's own AV2 converter with no drop and no repair."""
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.av2 import Av2Converter

    generate_av2(tmp_path / "raw", "train", num_scenes=30, seed=1)
    settings = ConversionSettings(scenes_per_part=16, progress=False, strict=True)
    manifest = convert_split(Av2Converter(tmp_path / "raw", "train"), tmp_path / "cache", settings)
    assert manifest["num_scenes"] == 30 and manifest["num_dropped"] == 0 and not manifest["repairs"]


# ----------------------------------------------------------------------------------------------------- AV1 format


def _av1_frames(root: Path) -> list[pd.DataFrame]:
    files = sorted((root / "val" / "data").glob("*.csv"), key=lambda p: int(p.stem))
    assert [int(p.stem) for p in files] == list(range(1, len(files) + 1))
    return [pd.read_csv(p, dtype={"TRACK_ID": str}) for p in files]


def test_av1_csv_format(av1_root: Path) -> None:
    frames = _av1_frames(av1_root)
    assert len(frames) == 8
    gaps = partial = 0
    for df in frames:
        assert list(df.columns) == ["TIMESTAMP", "TRACK_ID", "OBJECT_TYPE", "X", "Y", "CITY_NAME"]
        assert set(df["OBJECT_TYPE"]) == {"AGENT", "AV", "OTHERS"}
        assert df["CITY_NAME"].nunique() == 1 and df["CITY_NAME"].iloc[0] in {"MIA", "PIT"}
        assert df["TIMESTAMP"].is_monotonic_increasing
        stamps = np.sort(df["TIMESTAMP"].unique())
        assert len(stamps) == 50
        step = np.diff(stamps)
        assert step.min() >= 0.089 and step.max() <= 0.111 and step.std() > 1e-3  # 10 Hz with jitter
        assert df["TRACK_ID"].str.fullmatch(r"00000000-0000-0000-0000-\d{12}").all()
        assert not df.duplicated(["TRACK_ID", "TIMESTAMP"]).any()
        agent = df[df["OBJECT_TYPE"] == "AGENT"]
        assert agent["TRACK_ID"].nunique() == 1 and len(agent) == 50
        av = df[df["OBJECT_TYPE"] == "AV"]
        assert set(av["TRACK_ID"]) == {"00000000-0000-0000-0000-000000000000"} and len(av) == 50
        xy = agent[["X", "Y"]].to_numpy()
        assert np.linalg.norm(xy[-1] - xy[0]) > 3.0  # the agent moves
        step_of = {t: i for i, t in enumerate(stamps)}
        for _, g in df[df["OBJECT_TYPE"] == "OTHERS"].groupby("TRACK_ID"):
            steps = g["TIMESTAMP"].map(step_of).to_numpy()
            gaps += bool(np.any(np.diff(steps) > 1))
            partial += len(steps) < 50
    assert gaps > 0 and partial > 0


def test_av1_vector_map_xml(av1_root: Path) -> None:
    cities = {df["CITY_NAME"].iloc[0] for df in _av1_frames(av1_root)}
    centerlines = {}
    for city in cities:
        path = av1_map_path(av1_root, city)
        assert path.name in {"pruned_argoverse_MIA_10316_vector_map.xml", "pruned_argoverse_PIT_10314_vector_map.xml"}
        root = ET.parse(path).getroot()
        assert root.tag == "ArgoverseVectorMap"
        nodes = {n.attrib["id"]: (float(n.attrib["x"]), float(n.attrib["y"])) for n in root.iter("node")}
        ways = list(root.iter("way"))
        ids = [int(w.attrib["lane_id"]) for w in ways]
        assert len(ids) == len(set(ids)) and len(ids) >= 40
        lane_ids = set(ids)
        lines = []
        for way in ways:
            tags = [(t.attrib["k"], t.attrib["v"]) for t in way.iter("tag")]
            keys = [k for k, _ in tags]
            assert AV1_WAY_TAGS <= set(keys) and set(keys) <= AV1_WAY_TAGS | {"predecessor", "successor"}
            values = dict(tags)
            assert values["has_traffic_control"] in {"True", "False"}
            assert values["is_intersection"] in {"True", "False"}
            assert values["turn_direction"] in {"NONE", "LEFT", "RIGHT"}
            for k, v in tags:
                if k in ("predecessor", "successor") or (k.endswith("neighbor_id") and v != "None"):
                    assert int(v) in lane_ids, (k, v)
            refs = [nd.attrib["ref"] for nd in way.iter("nd")]
            assert len(refs) >= 2 and all(r in nodes for r in refs)
            lines.append(np.array([nodes[r] for r in refs]))
        centerlines[city] = lines
    # The AGENT drives on the lanes of its city's map (within 3 m of a centerline segment at every step).
    for df in _av1_frames(av1_root):
        xy = df.loc[df["OBJECT_TYPE"] == "AGENT", ["X", "Y"]].to_numpy()
        a = np.concatenate([cl[:-1] for cl in centerlines[df["CITY_NAME"].iloc[0]]])
        b = np.concatenate([cl[1:] for cl in centerlines[df["CITY_NAME"].iloc[0]]])
        ab = b - a
        u = np.clip(np.einsum("psk,sk->ps", xy[:, None] - a[None], ab) / np.einsum("sk,sk->s", ab, ab), 0.0, 1.0)
        dist = np.linalg.norm(xy[:, None] - (a[None] + u[..., None] * ab[None]), axis=-1).min(axis=1)
        assert dist.max() < 3.0


def test_av1_determinism_and_chunked_map(tmp_path: Path) -> None:
    generate_av1(tmp_path / "one", "val", num_scenes=6, seed=2, with_map=True)
    generate_av1(tmp_path / "chunk", "val", num_scenes=3, seed=2, with_map=True)
    generate_av1(tmp_path / "chunk", "val", num_scenes=3, seed=2, with_map=True, start_index=3)
    for i in range(1, 7):
        a = (tmp_path / "one" / "val" / "data" / f"{i}.csv").read_bytes()
        assert a == (tmp_path / "chunk" / "val" / "data" / f"{i}.csv").read_bytes()
    for city in ("MIA", "PIT"):
        one, chunk = av1_map_path(tmp_path / "one", city), av1_map_path(tmp_path / "chunk", city)
        assert one.exists() == chunk.exists()
        if one.exists():
            assert one.read_bytes() == chunk.read_bytes()
    assert not (tmp_path / "nomap" / "map_files").exists()
    generate_av1(tmp_path / "nomap", "val", num_scenes=1, seed=2)
    assert not (tmp_path / "nomap" / "map_files").exists()


def test_write_av1_vector_map_roundtrip(tmp_path: Path) -> None:
    lanes = [
        AV1Lane(7, np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.5]]), r_neighbor_id=8, successors=[9]),
        AV1Lane(8, np.array([[0.0, -3.5, 1.0], [20.0, -3.5, 1.25]]), l_neighbor_id=7),
        AV1Lane(
            9,
            np.array([[20.0, 0.5], [30.0, 8.0]]),
            has_traffic_control=True,
            turn_direction="LEFT",
            is_intersection=True,
            predecessors=[7, 8],
        ),
    ]
    path = tmp_path / "map_files" / "pruned_argoverse_PIT_10314_vector_map.xml"
    write_av1_vector_map(path, lanes)
    text = path.read_text()
    header = '<?xml version="1.0" encoding="UTF-8"?>\n<ArgoverseVectorMap>\n <node id="0" x="0.0" y="0.0" />'
    assert text.startswith(header)
    assert ' <node id="3" x="0.0" y="-3.5" height="1.0" />' in text
    assert '  <tag k="l_neighbor_id" v="None" />' in text and '  <tag k="turn_direction" v="LEFT" />' in text
    root = ET.parse(path).getroot()
    assert [w.attrib["lane_id"] for w in root.iter("way")] == ["7", "8", "9"]
    back = read_av1_vector_map(path)
    for a, b in zip(lanes, back, strict=True):
        assert (a.lane_id, a.has_traffic_control, a.turn_direction, a.is_intersection) == (
            b.lane_id,
            b.has_traffic_control,
            b.turn_direction,
            b.is_intersection,
        )
        assert (a.l_neighbor_id, a.r_neighbor_id, a.predecessors, a.successors) == (
            b.l_neighbor_id,
            b.r_neighbor_id,
            b.predecessors,
            b.successors,
        )
        np.testing.assert_allclose(a.centerline, b.centerline)
    with pytest.raises(ValueError):
        write_av1_vector_map(tmp_path / "bad.xml", [AV1Lane(1, np.zeros((1, 2)))])


# ----------------------------------------------------------------------------------------------------------- CLI


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--format", "av1", "--root", str(tmp_path), "--split", "val", "--num-scenes", "2", "--with-map"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "2 synthetic av1 scenes" in out[0]
    assert (tmp_path / "val" / "data" / "2.csv").exists() and (tmp_path / "map_files").is_dir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "smartpretrain.data.synthetic",
            "--format",
            "av2",
            "--root",
            str(tmp_path),
            "--split",
            "train",
            "--num-scenes",
            "2",
            "--seed",
            "4",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert len(proc.stdout.strip().splitlines()) == 1 and "2 synthetic av2 scenes" in proc.stdout
    assert len(list((tmp_path / "train").iterdir())) == 2
