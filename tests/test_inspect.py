"""smartpretrain.inspect: scene / cache summaries against known contents, text and JSON output, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartpretrain.data.cache import SceneCache
from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.inspect import main
from smartpretrain.runs.inspection import format_summary, summarize_cache, summarize_scene
from tests.conftest import AV2_FIXTURE_ID, AV2_FIXTURE_ROOT, require_shared
from tests.helpers import (
    TINY_AGENT_IDS,
    TINY_CURRENT_STEP,
    TINY_EDGES,
    TINY_FOCAL_GAP,
    TINY_NUM_POINTS,
    TINY_NUM_STEPS,
    TINY_ORIGIN,
    TINY_POLYGONS,
    TINY_POLYLINES,
    TinyConverter,
    convert_av2_fixture,
    make_tiny_scene,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_summarize_scene_counts() -> None:
    d = summarize_scene(make_tiny_scene())
    assert (d["kind"], d["scenario_id"], d["dataset"], d["city"]) == ("scene", "tiny-0", "synthetic", "testville")
    assert (d["num_steps"], d["current_step"]) == (TINY_NUM_STEPS, TINY_CURRENT_STEP)
    assert d["origin"] == list(TINY_ORIGIN)
    a = d["agents"]
    assert a["num_agents"] == len(TINY_AGENT_IDS) == 3
    assert a["by_type"] == {"VEHICLE": 2, "PEDESTRIAN": 1}
    assert a["by_role"] == {"FOCAL": 1, "SCORED": 0, "UNSCORED": 1, "FRAGMENT": 1}
    assert list(a["by_role"]) == ["FOCAL", "SCORED", "UNSCORED", "FRAGMENT"]
    assert a["sdc_ids"] == ["AV"]
    assert a["num_valid_at_current_step"] == 2  # the pedestrian is unobserved at the present
    assert a["focal"] == {
        "id": "focal",
        "observed_steps": TINY_NUM_STEPS - len(TINY_FOCAL_GAP),
        "observed_history_steps": TINY_CURRENT_STEP + 1 - len(TINY_FOCAL_GAP),
        "observed_future_steps": TINY_NUM_STEPS - TINY_CURRENT_STEP - 1,
        "valid_at_current_step": True,
    }
    m = d["map"]
    assert m["polygons_by_type"] == TINY_POLYGONS and m["num_polygons"] == 5 and m["num_lane_polygons"] == 3
    assert m["polylines_by_side_type"] == TINY_POLYLINES and m["num_polylines"] == 13
    assert m["num_points"] == TINY_NUM_POINTS == 64
    assert m["edges_by_type"] == TINY_EDGES and m["num_edges"] == 4
    json.dumps(d)  # serialisable as is


def test_summarize_scene_empty_map_and_text() -> None:
    d = summarize_scene(make_tiny_scene(with_map=False, with_size=False))
    assert d["map"]["num_polygons"] == 0 and d["map"]["polygons_by_type"] == {}
    assert d["map"]["polylines_by_side_type"] == {} and d["agents"]["has_size"] is False
    text = format_summary(d)
    assert "polygons    none" in text and "polylines   none" in text
    text = format_summary(summarize_scene(make_tiny_scene()))
    assert "by role     FOCAL 1, SCORED 0, UNSCORED 1, FRAGMENT 1" in text
    assert "focal       focal, observed 18/20 steps (history 8/10, future 10/10)" in text
    assert "polygons    VEHICLE_LANE 2, BUS_LANE 1, CROSSWALK 1, ROAD_EDGE 1" in text
    assert "edges       PRED 1, SUCC 1, LEFT 1, RIGHT 1" in text


@pytest.fixture
def tiny_cache(tmp_path: Path) -> Path:
    """Five converted scenes (odd ones map-less), two more raw items dropped, two scenes repaired."""
    out = tmp_path / "cache" / "synthetic" / "val"
    converter = TinyConverter(7, drop=(2, 5), repair=(1, 3))
    convert_split(converter, out, ConversionSettings(progress=False, scenes_per_part=3))
    return out


def test_summarize_cache(tiny_cache: Path) -> None:
    d = summarize_cache(SceneCache(tiny_cache))
    assert (d["kind"], d["dataset"], d["split"], d["schema_version"]) == ("cache", "synthetic", "val", 1)
    assert d["path"] == str(tiny_cache) and d["complete"] is True
    assert (d["num_scenes"], d["num_raw_items"], d["num_dropped"]) == (5, 7, 2)
    assert d["dropped_by_reason"] == {"corrupt_file": 2}
    assert d["repairs"] == {"unknown_object_type": 2}
    assert d["first_scenario_id"] == "tiny-00"
    s = d["sample"]
    assert s["num_scenes"] == 5
    assert s["agents"] == {"mean": 3.0, "min": 3.0, "max": 3.0}
    # scenes tiny-00, 01, 03, 04, 06: the odd ones have no map -> 3 of 5 with 5 polygons
    assert s["polygons"] == {"mean": 3.0, "min": 0.0, "max": 5.0}
    assert s["num_steps"] == {"20": 5} and s["current_step"] == {"9": 5}
    assert s["mean_agents_by_role"] == {"FOCAL": 1.0, "SCORED": 0.0, "UNSCORED": 1.0, "FRAGMENT": 1.0}
    # sampling: 2 evenly spaced scenes are the first and the last (both with a map)
    assert summarize_cache(SceneCache(tiny_cache), max_scenes=2)["sample"]["polygons"]["mean"] == 5.0
    text = format_summary(d)
    assert "dropped       2: corrupt_file 2" in text and "repairs       unknown_object_type 2" in text
    assert "scenes        5 " in text and str(tiny_cache) in text


def test_main_summary_and_scene(tiny_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tiny_cache)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"cache         {tiny_cache}") and "agents      mean 3" in out

    assert main([str(tiny_cache), "--scene", "tiny-03", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["scenario_id"] == "tiny-03" and d["map"]["num_polygons"] == 0

    png = tmp_path / "plots" / "scene.png"
    assert main([str(tiny_cache), "--index", "-1", "--png", str(png), "--radius", "all"]) == 0
    out = capsys.readouterr().out
    assert "scene         tiny-06" in out and str(png) in out
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000

    first = tmp_path / "first.png"
    assert main([str(tiny_cache), "--png", str(first), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["kind"] == "cache" and d["png"] == str(first) and first.read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scene", "no-such-scene"], "no-such-scene"),
        (["--index", "5"], "index 5"),
        (["--index", "-6"], "index -6"),
    ],
)
def test_main_scene_errors(tiny_cache: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    assert main([str(tiny_cache), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and needle in captured.err and str(tiny_cache) in captured.err
    assert "Traceback" not in captured.err


def test_main_path_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere" / "av2" / "val"
    assert main([str(missing)]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "not found" in err and "Traceback" not in err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty")]) == 2  # a folder, but not a converted split
    assert str(tmp_path / "empty") in capsys.readouterr().err
    assert main([str(tmp_path), "--scene", "a", "--index", "0"]) == 2  # mutually exclusive (argparse usage error)
    assert main([str(tmp_path), "--radius", "-1"]) == 2
    assert main(["--help"]) == 0


@pytest.fixture(scope="module")
def av2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_shared(AV2_FIXTURE_ROOT)
    return convert_av2_fixture(tmp_path_factory.mktemp("cache"))


def test_real_av2_fixture_summary(av2_cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = summarize_scene(SceneCache(av2_cache).get(AV2_FIXTURE_ID))
    assert (d["dataset"], d["city"], d["num_steps"], d["current_step"]) == ("av2", "austin", 110, 49)
    assert d["agents"]["num_agents"] == 58
    assert d["agents"]["by_role"] == {"FOCAL": 1, "SCORED": 1, "UNSCORED": 5, "FRAGMENT": 51}
    assert d["agents"]["sdc_ids"] == ["AV"] and d["agents"]["focal"]["id"] == "138951"
    assert d["agents"]["focal"]["observed_steps"] == 110
    assert d["map"]["num_lane_polygons"] == 71 and d["map"]["polygons_by_type"]["CROSSWALK"] == 6
    assert d["map"]["num_polygons"] == 77

    assert main([str(av2_cache), "--scene", AV2_FIXTURE_ID]) == 0
    out = capsys.readouterr().out
    assert "agents        58 " in out and "by role     FOCAL 1, SCORED 1, UNSCORED 5, FRAGMENT 51" in out
    assert "(71 lanes)" in out and "CROSSWALK 6" in out

    assert main([str(av2_cache), "--json"]) == 0
    c = json.loads(capsys.readouterr().out)
    assert (c["dataset"], c["split"], c["num_scenes"], c["num_dropped"]) == ("av2", "val", 1, 0)
    assert c["sample"]["agents"]["mean"] == 58.0 and c["sample"]["lane_polygons"]["mean"] == 71.0
