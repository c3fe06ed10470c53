"""Argoverse 1 converter and vector-map reader, against real AV1 CSVs and small hand-written inputs.

The real data lives in ``../shared`` beside the repository (``data/av1/val/data`` and ``fixtures/av1``); the
tests that need it skip when it is absent. Expected values are computed here independently of the converter: the
CSVs are re-read with the ``csv`` module and velocity / heading come from a per-track pure-Python reference.
"""

from __future__ import annotations

import csv
import math
import pickle
import random
from pathlib import Path

import numpy as np
import pyarrow.csv as pacsv
import pytest

from smartpretrain.data.converters.av1 import HEADING_MIN_DISPLACEMENT, Av1Converter
from smartpretrain.data.converters.av1_map import (
    Av1CityMap,
    clear_av1_map_cache,
    load_av1_city_maps,
    read_av1_city_map,
)
from smartpretrain.data.converters.base import ConversionError, DropReason, RepairKind
from smartpretrain.data.formats import av1 as av1_format
from smartpretrain.data.scene import Scene
from smartpretrain.data.taxonomy import AgentRole, AgentType, Dataset, EdgeType, Intersection, LineType, Side

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
AV1_ROOT = SHARED / "data" / "av1"
AV1_VAL_DIR = AV1_ROOT / "val" / "data"
AV1_FIXTURES = SHARED / "fixtures" / "av1"
HEADER = "TIMESTAMP,TRACK_ID,OBJECT_TYPE,X,Y,CITY_NAME"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real AV1 data not available: {path} (../shared is not beside this checkout)")
    return path


def val_sample(k: int = 60) -> list[str]:
    if not AV1_VAL_DIR.is_dir():
        return []
    names = sorted(p.name for p in AV1_VAL_DIR.glob("*.csv"))
    return names[:: max(1, len(names) // k)][:k]


# ---------------------------------------------------------------------------------------------------------------
# Independent reference: csv module + per-track Python loops.


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def reference_motion(
    obs: dict[int, tuple[float, float]], times: list[float], current_step: int, d_min: float
) -> tuple[dict[int, tuple[float, float]], dict[int, float]]:
    """Velocity and heading of one track, written as plainly as the module docstring states them."""
    steps = sorted(obs)
    velocity: dict[int, tuple[float, float]] = {}
    for i, s in enumerate(steps):
        if i > 0:
            a, b = steps[i - 1], s
        elif len(steps) > 1 and (s > current_step or steps[1] <= current_step):
            a, b = s, steps[1]
        else:
            velocity[s] = (0.0, 0.0)
            continue
        dt = times[b] - times[a]
        velocity[s] = ((obs[b][0] - obs[a][0]) / dt, (obs[b][1] - obs[a][1]) / dt)
    chord: dict[int, float] = {}
    for i, s in enumerate(steps):
        for r in reversed(steps[:i]):
            dx, dy = obs[s][0] - obs[r][0], obs[s][1] - obs[r][1]
            if dx * dx + dy * dy >= d_min * d_min:
                chord[s] = math.atan2(dy, dx)
                break
    heading: dict[int, float] = {}
    for s in steps:
        before = [c for c in chord if c <= s]
        after = [c for c in chord if c > s and (s > current_step or c <= current_step)]
        heading[s] = chord[max(before)] if before else (chord[min(after)] if after else 0.0)
    return velocity, heading


def angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs((np.asarray(a) - np.asarray(b) + np.pi) % (2 * np.pi) - np.pi)


def check_against_csv(scene: Scene, path: Path, current_step: int = 19) -> None:
    rows = read_rows(path)
    a = scene.agents
    times = sorted({float(r["TIMESTAMP"]) for r in rows})
    step_of = {ts: k for k, ts in enumerate(times)}
    assert scene.num_steps == len(times) == 50
    assert scene.scenario_id == path.stem
    assert scene.dataset == Dataset.AV1
    assert scene.city == rows[0]["CITY_NAME"]
    index = {tid: i for i, tid in enumerate(a.ids)}
    assert len(index) == len({r["TRACK_ID"] for r in rows})

    expected_valid = np.zeros_like(a.valid)
    g = scene.global_positions()
    per_track: dict[str, dict[int, tuple[float, float]]] = {}
    kind: dict[str, str] = {}
    for r in rows:
        i, t = index[r["TRACK_ID"]], step_of[float(r["TIMESTAMP"])]
        x, y = float(r["X"]), float(r["Y"])
        expected_valid[i, t] = True
        assert abs(g[i, t, 0] - x) <= 1e-3 and abs(g[i, t, 1] - y) <= 1e-3, (path, r)
        assert g[i, t, 2] == 0.0
        per_track.setdefault(r["TRACK_ID"], {})[t] = (x, y)
        kind[r["TRACK_ID"]] = r["OBJECT_TYPE"]
    np.testing.assert_array_equal(a.valid, expected_valid)
    assert (a.position[~a.valid] == 0).all() and (a.velocity[~a.valid] == 0).all() and (a.heading[~a.valid] == 0).all()

    # Exactly one focal agent, first, and it is the AGENT track; the origin is its position at the current step.
    focal = [tid for tid, k in kind.items() if k == "AGENT"]
    assert len(focal) == 1 and a.ids[0] == focal[0]
    assert (a.role == AgentRole.FOCAL).sum() == 1 and scene.focal_index == 0
    assert (a.role[1:] == AgentRole.UNSCORED).all()
    fx, fy = per_track[focal[0]][current_step]
    assert scene.origin.dtype == np.float64 and tuple(scene.origin) == (fx, fy, 0.0)
    # AV flag, types and the order: focal, AV, others by first appearance.
    np.testing.assert_array_equal(a.is_sdc, [kind[tid] == "AV" for tid in a.ids])
    want_type = [AgentType.VEHICLE if kind[tid] != "OTHERS" else AgentType.UNKNOWN for tid in a.ids]
    np.testing.assert_array_equal(a.type, want_type)
    first_seen: list[str] = []
    for r in sorted(rows, key=lambda r: float(r["TIMESTAMP"])):
        if r["TRACK_ID"] not in first_seen:
            first_seen.append(r["TRACK_ID"])
    order = focal + [t for t in first_seen if kind[t] == "AV"] + [t for t in first_seen if kind[t] == "OTHERS"]
    assert a.ids == order

    # Velocity / heading equal the plain per-track reference computed from the city-frame CSV values.
    for tid, obs in per_track.items():
        i = index[tid]
        rel = {t: (x - scene.origin[0], y - scene.origin[1]) for t, (x, y) in obs.items()}
        vel, head = reference_motion(rel, times, current_step, HEADING_MIN_DISPLACEMENT)
        steps = sorted(obs)
        np.testing.assert_allclose(a.velocity[i, steps], np.array([vel[t] for t in steps]), atol=2e-3, rtol=1e-4)
        assert angle_diff(a.heading[i, steps], np.array([head[t] for t in steps])).max() < 1e-4, (path, tid)


# ---------------------------------------------------------------------------------------------------------------
# Real data


@pytest.mark.parametrize("name", ["1.csv", "2.csv", "3.csv", "4.csv", "5.csv", "6.csv"])
def test_fixture_files_match_csv(name: str) -> None:
    require(AV1_FIXTURES / name)
    result = Av1Converter(AV1_FIXTURES, "unused").convert(name)
    assert result.repairs == []
    check_against_csv(result.scene, AV1_FIXTURES / name)


@pytest.mark.parametrize("name", val_sample(60) or ["<missing>"])
def test_val_sample_matches_csv(name: str) -> None:
    require(AV1_VAL_DIR)
    conv = Av1Converter(AV1_ROOT, "val")
    result = conv.convert(f"val/data/{name}")
    assert result.repairs == []
    assert result.scene.map.num_polygons == 0
    check_against_csv(result.scene, AV1_VAL_DIR / name)


def test_list_items_real_val_split() -> None:
    require(AV1_VAL_DIR)
    conv = Av1Converter(AV1_ROOT, "val")
    items = conv.list_items()
    assert len(items) == len(list(AV1_VAL_DIR.glob("*.csv"))) == 579
    assert items == sorted(items, key=lambda s: int(Path(s).stem))
    assert all(item.startswith("val/data/") for item in items)
    assert conv.item_path(items[0]) == (AV1_VAL_DIR / Path(items[0]).name).absolute()


def test_real_timestamps_are_not_on_a_grid() -> None:
    """The reason velocity divides by actual time: some real scenes have steps far from 0.1 s."""
    require(AV1_VAL_DIR)
    path = AV1_VAL_DIR / "2003.csv"
    times = np.unique(np.array([float(r["TIMESTAMP"]) for r in read_rows(path)]))
    assert np.diff(times).max() > 0.15
    scene = Av1Converter(AV1_ROOT, "val").convert("val/data/2003.csv").scene
    check_against_csv(scene, path)


def test_multi_block_read_matches(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV bigger than one reader block (several dictionary chunks) converts identically."""
    require(AV1_FIXTURES / "4.csv")
    reference = Av1Converter(AV1_FIXTURES, "x").convert("4.csv").scene
    monkeypatch.setattr(av1_format, "_READ_OPTIONS", pacsv.ReadOptions(use_threads=False, block_size=8192))
    chunked = Av1Converter(AV1_FIXTURES, "x").convert("4.csv").scene
    assert_same_scene(chunked, reference)


# ---------------------------------------------------------------------------------------------------------------
# Synthetic CSVs


def write_csv(root: Path, rows: list[tuple], name: str = "1.csv", split: str = "val", header: str = HEADER) -> Path:
    path = root / split / "data" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [header] + [",".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def frame_times(num: int = 50, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    return [315968000.0 + 0.1 * k + rng.uniform(-0.03, 0.03) for k in range(num)]


def simple_rows(times: list[float], city: str = "PIT") -> list[tuple]:
    """AGENT, AV and one OTHERS track, all observed at every step, moving in +x."""
    rows = []
    for k, ts in enumerate(times):
        rows.append((ts, "agent-1", "AGENT", 100.0 + 2.0 * k, 50.0, city))
        rows.append((ts, "av-0", "AV", 90.0 + 2.0 * k, 45.0, city))
        rows.append((ts, "other-7", "OTHERS", 130.0, 60.0 + k, city))
    return rows


def convert_rows(tmp_path: Path, rows: list[tuple], **kwargs):
    write_csv(tmp_path, rows)
    return Av1Converter(tmp_path, "val", **kwargs).convert("val/data/1.csv")


def assert_same_scene(got: Scene, want: Scene) -> None:
    assert got.scenario_id == want.scenario_id and got.city == want.city
    np.testing.assert_array_equal(got.origin, want.origin)
    assert got.agents.ids == want.agents.ids
    for name in ("type", "role", "is_sdc", "position", "heading", "velocity", "valid"):
        np.testing.assert_array_equal(getattr(got.agents, name), getattr(want.agents, name), err_msg=name)


def test_velocity_and_heading_constant_velocity_with_gap_and_jitter(tmp_path: Path) -> None:
    times = frame_times()
    vx, vy = 3.0, 4.0  # 5 m/s: 0.5 m per step, so the 1 m chord needs two steps (backward fill at the start)
    t0 = times[0]
    rows = []
    for k, ts in enumerate(times):
        if k not in (10, 11, 12):  # a gap in the focal track
            rows.append((repr(ts), "focal", "AGENT", 1000.0 + vx * (ts - t0), 2000.0 + vy * (ts - t0), "MIA"))
        rows.append((repr(ts), "sdc", "AV", 990.0, 2010.0 - 10.0 * (ts - t0), "MIA"))  # -y at 10 m/s
        rows.append((repr(ts), "parked", "OTHERS", 1020.0, 2020.0, "MIA"))  # never moves
    result = convert_rows(tmp_path, rows)
    a = result.scene.agents
    assert a.ids == ["focal", "sdc", "parked"]
    valid = np.ones(50, bool)
    valid[10:13] = False
    np.testing.assert_array_equal(a.valid[0], valid)
    # Velocity over the actual timestamps is exact for constant velocity, also at step 0 (forward difference)
    # and at step 13 (difference across the gap); dividing by 0.1 s instead would be off by up to 60 %.
    np.testing.assert_allclose(a.velocity[0, valid], np.tile([vx, vy], (valid.sum(), 1)), atol=1e-3)
    np.testing.assert_allclose(a.heading[0, valid], math.atan2(vy, vx), atol=1e-5)
    assert (a.velocity[0, ~valid] == 0).all() and (a.heading[0, ~valid] == 0).all()
    np.testing.assert_allclose(a.velocity[1], np.tile([0.0, -10.0], (50, 1)), atol=1e-3)
    np.testing.assert_allclose(a.heading[1], -math.pi / 2, atol=1e-5)
    assert a.is_sdc.tolist() == [False, True, False]
    # Stationary track: velocity 0, heading 0 (unknowable, documented fallback).
    assert (a.velocity[2] == 0).all() and (a.heading[2] == 0).all()
    # Positions relative to the origin = focal at step 19.
    assert result.scene.origin[0] == 1000.0 + vx * (times[19] - t0)
    np.testing.assert_allclose(a.position[0, 19], [0.0, 0.0, 0.0])


def test_slow_and_jittery_tracks(tmp_path: Path) -> None:
    """Heading uses the 1 m chord, not the one-step velocity: a slow track with jitter keeps its direction."""
    times = [315968000.0 + 0.1 * k for k in range(50)]
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.05, 0.05, size=(50, 2))
    rows = []
    for k, ts in enumerate(times):
        rows.append((repr(ts), "focal", "AGENT", 10.0 + 5.0 * k, 0.0, "PIT"))
        # 1 m/s along +y (0.1 m per step) with +-5 cm jitter: one-step directions scatter widely.
        rows.append((repr(ts), "slow", "OTHERS", 20.0 + jitter[k, 0], 0.1 * k + jitter[k, 1], "PIT"))
    a = convert_rows(tmp_path, rows).scene.agents
    one_step = np.arctan2(np.diff(0.1 * np.arange(50) + jitter[:, 1]), np.diff(jitter[:, 0]))
    assert angle_diff(one_step, math.pi / 2).max() > 0.5  # the naive estimate is poor ...
    assert angle_diff(a.heading[1], math.pi / 2).max() < 0.15  # ... the chord heading is not (< ~0.1 / 1 m)


def test_history_does_not_see_the_future(tmp_path: Path) -> None:
    times = frame_times(seed=1)
    rows = []
    for k, ts in enumerate(times):
        rows.append((repr(ts), "focal", "AGENT", 5.0 * k, 0.0, "PIT"))
        # Stands still through the history, then drives +y from step 25 on.
        rows.append((repr(ts), "waits", "OTHERS", 50.0, 10.0 + 3.0 * max(0, k - 24), "PIT"))
        # First observed at the current step: no velocity / heading from the future at step 19.
        if k >= 19:
            rows.append((repr(ts), "late", "OTHERS", -20.0 - 4.0 * (k - 19), 30.0, "PIT"))
    a = convert_rows(tmp_path, rows).scene.agents
    assert a.ids == ["focal", "waits", "late"]
    assert (a.heading[1, :20] == 0).all() and (a.velocity[1, :20] == 0).all()
    np.testing.assert_allclose(a.heading[1, 26:], math.pi / 2, atol=1e-5)
    assert (a.velocity[2, 19] == 0).all() and a.heading[2, 19] == 0
    assert a.valid[2, 19:].all() and not a.valid[2, :19].any()
    assert angle_diff(a.heading[2, 20:], math.pi).max() < 1e-5
    # Changing only the future leaves every history value unchanged.
    changed = [(r[0], r[1], r[2], r[3] + (7.0 if float(r[0]) > times[19] else 0.0), r[4], r[5]) for r in rows]
    b = convert_rows(tmp_path, changed).scene.agents
    for name in ("position", "velocity", "heading"):
        np.testing.assert_array_equal(getattr(a, name)[:, :20], getattr(b, name)[:, :20], err_msg=name)


def test_test_split_has_twenty_steps(tmp_path: Path) -> None:
    rows = simple_rows(frame_times(20))
    with pytest.raises(ConversionError) as err:
        convert_rows(tmp_path, rows)
    assert err.value.reason == DropReason.WRONG_NUM_STEPS
    scene = convert_rows(tmp_path, rows, num_steps=20).scene
    assert scene.num_steps == 20 and scene.agents.position.shape == (3, 20, 3)


def test_list_items_order_and_item_path(tmp_path: Path) -> None:
    for name in ("10.csv", "9.csv", "100.csv", "notes.txt"):
        write_csv(tmp_path, [], name=name)
    conv = Av1Converter(tmp_path, "val")
    assert conv.list_items() == ["val/data/9.csv", "val/data/10.csv", "val/data/100.csv"]
    assert conv.item_path("val/data/9.csv") == (tmp_path / "val" / "data" / "9.csv").absolute()
    write_csv(tmp_path, [], name="b7.csv")
    assert conv.list_items() == ["val/data/10.csv", "val/data/100.csv", "val/data/9.csv", "val/data/b7.csv"]
    with pytest.raises(FileNotFoundError):
        Av1Converter(tmp_path, "train").list_items()


def test_describe_and_pickle_size(tmp_path: Path) -> None:
    conv = Av1Converter(tmp_path, "val", map_root=tmp_path / "maps", map_radius=50.0)
    info = conv.describe()
    assert info["dataset"] == "av1" and info["num_steps"] == 50 and info["map_radius"] == 50.0
    assert len(pickle.dumps(conv)) < 2000


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs


def _bad_cases() -> dict[str, tuple[DropReason, str | bytes, str]]:
    times = frame_times()
    good = simple_rows(times)

    def text(rows: list[tuple], header: str = HEADER) -> str:
        return "\n".join([header] + [",".join(str(v) for v in r) for r in rows]) + "\n"

    no_agent = [r for r in good if r[2] != "AGENT"]
    two_agents = good + [(ts, "agent-2", "AGENT", 0.0, 0.0, "PIT") for ts in times]
    dup = [*good, good[4]]
    four_columns = text([r[:4] for r in good], "TIMESTAMP,TRACK_ID,OBJECT_TYPE,X")
    missing_current = [r for r in good if not (r[2] == "AGENT" and r[0] == times[19])]
    non_finite_x = [r if i != 5 else (r[0], r[1], r[2], "nan", r[4], r[5]) for i, r in enumerate(good)]
    inf_y = [r if i != 8 else (r[0], r[1], r[2], r[3], "inf", r[5]) for i, r in enumerate(good)]
    empty_x = [r if i != 8 else (r[0], r[1], r[2], "", r[4], r[5]) for i, r in enumerate(good)]
    bad_number = [r if i != 3 else (r[0], r[1], r[2], "12.5abc", r[4], r[5]) for i, r in enumerate(good)]
    two_cities = [r if i != 3 else (*r[:5], "MIA") for i, r in enumerate(good)]
    mixed_type = [r if i != 4 else (r[0], r[1], "OTHERS", *r[3:]) for i, r in enumerate(good)]  # an av-0 row
    return {
        "zero_bytes": (DropReason.EMPTY_FILE, b"", "zero-byte"),
        "header_only": (DropReason.EMPTY_FILE, HEADER + "\n", "header only"),
        "missing_columns": (DropReason.MISSING_COLUMNS, four_columns, "'Y'"),
        "binary_garbage": (DropReason.CORRUPT_FILE, HEADER.encode() + b"\n\x00\xff\xfe,\x01\n", ""),
        "ragged_row": (DropReason.CORRUPT_FILE, text(good) + "315968000.0,x\n", "parse"),
        "not_a_number": (DropReason.CORRUPT_FILE, text(bad_number), "parse"),
        "two_cities": (DropReason.CORRUPT_FILE, text(two_cities), "CITY_NAME"),
        "mixed_object_type": (DropReason.CORRUPT_FILE, text(mixed_type), "av-0"),
        "nan_x": (DropReason.NON_FINITE_VALUES, text(non_finite_x), "X or Y"),
        "inf_y": (DropReason.NON_FINITE_VALUES, text(inf_y), "X or Y"),
        "empty_x": (DropReason.NON_FINITE_VALUES, text(empty_x), "X or Y"),
        "no_agent": (DropReason.NO_FOCAL_AGENT, text(no_agent), "AGENT"),
        "two_agents": (DropReason.MULTIPLE_FOCAL_AGENTS, text(two_agents), "agent-2"),
        "duplicate_rows": (DropReason.DUPLICATE_ROWS, text(dup), "duplicate"),
        "agent_missing_at_current": (DropReason.NO_FOCAL_AGENT, text(missing_current), "current step 19"),
        "wrong_num_steps": (DropReason.WRONG_NUM_STEPS, text(simple_rows(times[:49])), "49 distinct"),
    }


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_inputs_raise_with_reason_and_file(tmp_path: Path, case: str) -> None:
    reason, content, fragment = BAD_CASES[case]
    path = tmp_path / "val" / "data" / "1.csv"
    path.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConversionError) as err:
        Av1Converter(tmp_path, "val").convert("val/data/1.csv")
    exc = err.value
    assert exc.reason == reason, str(exc)
    assert exc.path == str(path.absolute()) and str(path) in str(exc)
    assert exc.scenario_id == "1"
    assert fragment in exc.detail, exc.detail


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConversionError) as err:
        Av1Converter(tmp_path, "val").convert("val/data/404.csv")
    assert err.value.reason == DropReason.MISSING_FILE and "404.csv" in str(err.value)


def test_unknown_object_type_is_repaired(tmp_path: Path) -> None:
    rows = []
    for k, ts in enumerate(frame_times()):
        rows += simple_rows([ts])
        rows.append((ts, "bike-3", "CYCLIST", 0.0, 1.0, "PIT"))
        if k < 10:
            rows.append((ts, "bike-4", "CYCLIST", 5.0, 1.0, "PIT"))
    result = convert_rows(tmp_path, rows)
    a = result.scene.agents
    assert a.ids == ["agent-1", "av-0", "other-7", "bike-3", "bike-4"]
    assert a.type.tolist() == [AgentType.VEHICLE] * 2 + [AgentType.UNKNOWN] * 3
    assert len(result.repairs) == 1
    repair = result.repairs[0]
    assert repair.kind == RepairKind.UNKNOWN_OBJECT_TYPE and repair.detail == "CYCLIST" and repair.count == 2
    assert repair.path.endswith("1.csv")


def test_out_of_order_frames_give_the_same_scene(tmp_path: Path) -> None:
    """Whole frames shuffled: the scene equals the one of the original file, plus a ROWS_OUT_OF_ORDER repair."""
    source = require(AV1_FIXTURES / "2.csv")
    lines = source.read_text().splitlines()
    frames: dict[str, list[str]] = {}
    for line in lines[1:]:
        frames.setdefault(line.split(",")[0], []).append(line)
    keys = list(frames)
    random.Random(3).shuffle(keys)
    shuffled = tmp_path / "val" / "data" / "2.csv"
    shuffled.parent.mkdir(parents=True)
    shuffled.write_text("\n".join([lines[0]] + [row for k in keys for row in frames[k]]) + "\n")
    got = Av1Converter(tmp_path, "val").convert("val/data/2.csv")
    want = Av1Converter(AV1_FIXTURES, "x").convert("2.csv")
    assert want.repairs == []
    assert [r.kind for r in got.repairs] == [RepairKind.ROWS_OUT_OF_ORDER]
    assert got.repairs[0].path == str(shuffled.absolute())
    assert_same_scene(got.scene, want.scene)


def test_out_of_order_rows_equal_stably_sorted_rows(tmp_path: Path) -> None:
    """Rows fully shuffled: the scene equals the one of the same rows stably sorted by TIMESTAMP."""
    source = require(AV1_FIXTURES / "5.csv")
    lines = source.read_text().splitlines()
    body = lines[1:]
    random.Random(5).shuffle(body)
    ordered = sorted(body, key=lambda line: float(line.split(",")[0]))
    for name, content in (("1.csv", body), ("2.csv", ordered)):
        path = tmp_path / "val" / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([lines[0], *content]) + "\n")
    conv = Av1Converter(tmp_path, "val")
    got, want = conv.convert("val/data/1.csv"), conv.convert("val/data/2.csv")
    assert [r.kind for r in got.repairs] == [RepairKind.ROWS_OUT_OF_ORDER] and want.repairs == []
    want.scene.scenario_id = "1"
    assert_same_scene(got.scene, want.scene)
    check_against_csv(got.scene, tmp_path / "val" / "data" / "1.csv")


# ---------------------------------------------------------------------------------------------------------------
# Vector maps


def map_xml(nodes: dict[int, tuple[float, ...]], lanes: list[dict]) -> str:
    """A small ``ArgoverseVectorMap`` document. Lane dict keys: id, nodes, and optional tag values."""
    out = ["<ArgoverseVectorMap>"]
    for nid, xyz in nodes.items():
        height = f' height="{xyz[2]}"' if len(xyz) > 2 else ""
        out.append(f' <node id="{nid}" x="{xyz[0]}" y="{xyz[1]}"{height} />')
    for lane in lanes:
        out.append(f' <way lane_id="{lane["id"]}">')
        for key in ("has_traffic_control", "turn_direction", "is_intersection", "l_neighbor_id", "r_neighbor_id"):
            default = {"turn_direction": "NONE", "l_neighbor_id": "None", "r_neighbor_id": "None"}.get(key, "False")
            out.append(f'  <tag k="{key}" v="{lane.get(key, default)}" />')
        out += [f'  <nd ref="{ref}" />' for ref in lane["nodes"]]
        out += [f'  <tag k="predecessor" v="{p}" />' for p in lane.get("pred", [])]
        out += [f'  <tag k="successor" v="{s}" />' for s in lane.get("succ", [])]
        out.append(" </way>")
    out.append("</ArgoverseVectorMap>")
    return "\n".join(out) + "\n"


# Lanes around (1000, 2000) in PIT. 101 -> 102 -> 104 in a row along +x; 103 is 101's left neighbour; 104 and
# 106 are beyond 100 m of the focal agent (106's bounding box is within 100 m, none of its points is).
NODES = {
    1: (1000.0, 2000.0, 5.0),
    2: (1005.0, 2000.0, 5.5),
    3: (1010.0, 2000.0),
    4: (1020.0, 2000.0),
    5: (1000.0, 2004.0),
    6: (1010.0, 2004.0),
    7: (1500.0, 2500.0),
    8: (1510.0, 2500.0),
    9: (900.0, 2090.0),
    10: (1100.0, 2090.0),
}
LANES = [
    {"id": 101, "nodes": [1, 2, 3], "pred": [100], "succ": [102], "l_neighbor_id": 103},
    {
        "id": 102,
        "nodes": [3, 4],
        "pred": [101],
        "succ": [104],
        "is_intersection": "True",
        "has_traffic_control": "True",
        "turn_direction": "LEFT",
    },
    {"id": 103, "nodes": [5, 6], "r_neighbor_id": 101},
    {"id": 104, "nodes": [7, 8], "pred": [102]},
    {"id": 106, "nodes": [9, 10]},
]
PIT_MAP = "pruned_argoverse_PIT_10314_vector_map.xml"


@pytest.fixture(autouse=True)
def _fresh_map_cache():
    clear_av1_map_cache()
    yield
    clear_av1_map_cache()


def write_map(folder: Path, text: str | None = None, name: str = PIT_MAP) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(map_xml(NODES, LANES) if text is None else text)
    return path


def edge_set(edge_index: np.ndarray, edge_type: np.ndarray, ids: np.ndarray) -> set[tuple[int, int, EdgeType]]:
    return {(int(ids[s]), int(ids[d]), EdgeType(int(k))) for s, d, k in zip(*edge_index, edge_type, strict=True)}


def test_read_city_map(tmp_path: Path) -> None:
    path = write_map(tmp_path / "maps")
    (tmp_path / "maps" / "PIT_10314_driveable_area_mat_2019_05_28.npy").write_bytes(b"ignored")
    maps = load_av1_city_maps(tmp_path / "maps")
    assert list(maps) == ["PIT"]
    m = maps["PIT"]
    assert isinstance(m, Av1CityMap) and m.city_id == 10314 and m.path == str(path)
    assert m.lane_ids.tolist() == [101, 102, 103, 104, 106] and m.lane_ids.dtype == np.int64
    assert m.centerline_offsets.tolist() == [0, 3, 5, 7, 9, 11]
    np.testing.assert_array_equal(m.centerline(0), [[1000, 2000, 5.0], [1005, 2000, 5.5], [1010, 2000, 0]])
    assert m.is_intersection.tolist() == [False, True, False, False, False]
    assert m.has_traffic_control.tolist() == [False, True, False, False, False]
    assert m.turn_direction.tolist() == ["NONE", "LEFT", "NONE", "NONE", "NONE"]
    assert edge_set(m.edge_index, m.edge_type, m.lane_ids) == {
        (101, 102, EdgeType.PRED),  # 101 is the predecessor of 102
        (102, 101, EdgeType.SUCC),  # 102 is the successor of 101
        (102, 104, EdgeType.PRED),
        (104, 102, EdgeType.SUCC),
        (103, 101, EdgeType.LEFT),  # 103 is 101's left neighbour
        (101, 103, EdgeType.RIGHT),  # 101 is 103's right neighbour
    }  # 101's predecessor 100 is not in the (pruned) map: dropped
    assert m.edges(EdgeType.LEFT).tolist() == [[2], [0]]
    # Parsed once: the second call returns the cached object.
    assert load_av1_city_maps(tmp_path / "maps")["PIT"] is m
    # Radius queries: point semantics (106's box is within 100 m, its points are not).
    assert m.lanes_within((1005.0, 2001.0), 100.0).tolist() == [0, 1, 2]
    assert m.lanes_within((1002.0, 2002.0), 3.0).tolist() == [0, 2]
    assert m.lanes_within((1100.0, 2095.0), 10.0).tolist() == [4]
    assert m.lanes_within((0.0, 0.0), 10.0).tolist() == []


def test_lanes_within_matches_brute_force(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    nodes: dict[int, tuple[float, ...]] = {}
    lanes = []
    for lane in range(300):
        start = rng.uniform(0, 2000, size=2)
        step = rng.normal(0, 3, size=2)
        refs = []
        for k in range(int(rng.integers(2, 12))):
            nodes[len(nodes)] = tuple(start + k * step)
            refs.append(len(nodes) - 1)
        lanes.append({"id": 5000 + lane, "nodes": refs})
    write_map(tmp_path / "maps", map_xml(nodes, lanes))
    m = load_av1_city_maps(tmp_path / "maps")["PIT"]
    for _ in range(20):
        center, radius = rng.uniform(0, 2000, size=2), float(rng.uniform(10, 300))
        brute = [i for i in range(m.num_lanes) if (np.hypot(*(m.centerline(i)[:, :2] - center).T) <= radius).any()]
        assert m.lanes_within(center, radius).tolist() == brute


def focal_near_lanes_rows(city: str = "PIT") -> list[tuple]:
    rows = []
    for k, ts in enumerate(frame_times()):
        rows.append((repr(ts), "focal", "AGENT", 985.0 + k * 1.0, 2001.0, city))
        rows.append((repr(ts), "sdc", "AV", 970.0 + k * 1.0, 1997.0, city))
    return rows  # focal at (1004, 2001) at step 19


def test_converter_attaches_lanes_within_radius(tmp_path: Path) -> None:
    write_map(tmp_path / "maps")
    result = convert_rows(tmp_path, focal_near_lanes_rows(), map_root=tmp_path / "maps", map_radius=100.0)
    scene = result.scene
    np.testing.assert_array_equal(scene.origin, [1004.0, 2001.0, 0.0])
    m = scene.map
    assert m.polygon_ids.tolist() == [101, 102, 103]
    assert m.polygon_is_intersection.tolist() == [Intersection.NO, Intersection.YES, Intersection.NO]
    assert (m.polygon_type == 0).all()  # PolygonType.VEHICLE_LANE
    assert m.polyline_polygon.tolist() == [0, 1, 2]
    assert (m.polyline_side == Side.CENTER).all() and (m.polyline_type == LineType.CENTERLINE).all()
    assert m.points.dtype == np.float32
    for k, lane in enumerate((LANES[0], LANES[1], LANES[2])):
        want = np.array([NODES[r] + (0.0,) * (3 - len(NODES[r])) for r in lane["nodes"]]) - scene.origin
        np.testing.assert_allclose(m.polyline(k), want, atol=1e-4)
    assert edge_set(m.edge_index, m.edge_type, m.polygon_ids) == {
        (101, 102, EdgeType.PRED),
        (102, 101, EdgeType.SUCC),
        (103, 101, EdgeType.LEFT),
        (101, 103, EdgeType.RIGHT),
    }  # the 102 <-> 104 edges leave the selection and are dropped
    # A smaller radius keeps fewer lanes (101 and 103 have points within 5.5 m of (1004, 2001); 102's nearest is
    # 6.1 m away).
    small = convert_rows(tmp_path, focal_near_lanes_rows(), map_root=tmp_path / "maps", map_radius=5.5).scene.map
    assert small.polygon_ids.tolist() == [101, 103]
    assert edge_set(small.edge_index, small.edge_type, small.polygon_ids) == {
        (103, 101, EdgeType.LEFT),
        (101, 103, EdgeType.RIGHT),
    }


def test_converter_without_map_root_has_empty_map(tmp_path: Path) -> None:
    scene = convert_rows(tmp_path, focal_near_lanes_rows()).scene
    assert scene.map.num_polygons == 0 and scene.map.points.shape == (0, 3)


def test_city_without_map_file(tmp_path: Path) -> None:
    write_map(tmp_path / "maps")
    with pytest.raises(ConversionError) as err:
        convert_rows(tmp_path, focal_near_lanes_rows(city="MIA"), map_root=tmp_path / "maps")
    assert err.value.reason == DropReason.BAD_MAP
    assert err.value.path.endswith("1.csv") and "no vector map for city MIA" in str(err.value)


@pytest.mark.parametrize(
    ("name", "text", "fragment"),
    [
        (PIT_MAP, map_xml(NODES, LANES)[:-40], "malformed XML"),
        (PIT_MAP, map_xml(NODES, LANES).replace('<nd ref="4" />', '<nd ref="44" />'), "ref=44"),
        (PIT_MAP, map_xml(NODES, LANES).replace('k="is_intersection" v="True"', 'k="is_intersection" v="yes"'), "yes"),
        (PIT_MAP, map_xml(NODES, LANES).replace('lane_id="103"', 'lane_id="abc"'), "abc"),
        (PIT_MAP, map_xml(NODES, LANES).replace('lane_id="103"', 'lane_id="101"'), "duplicate lane_id"),
        (PIT_MAP, "<OtherRoot></OtherRoot>\n", "ArgoverseVectorMap"),
        ("PIT_vector_map.xml", map_xml(NODES, LANES), "file name"),
        ("pruned_argoverse_PIT_10316_vector_map.xml", map_xml(NODES, LANES), "map id"),
    ],
    ids=["truncated", "missing_node", "bad_bool", "bad_lane_id", "duplicate_lane", "wrong_root", "bad_name", "bad_id"],
)
def test_bad_map_files(tmp_path: Path, name: str, text: str, fragment: str) -> None:
    path = write_map(tmp_path / "maps", text, name=name)
    with pytest.raises(ConversionError) as err:
        read_av1_city_map(path)
    assert err.value.reason == DropReason.BAD_MAP and err.value.path == str(path) and fragment in str(err.value)
    # Through the converter: every scene is dropped as BAD_MAP naming the map file (the failure is cached).
    for _ in range(2):
        with pytest.raises(ConversionError) as err:
            convert_rows(tmp_path, focal_near_lanes_rows(), map_root=tmp_path / "maps")
        assert err.value.reason == DropReason.BAD_MAP and err.value.path == str(path)


def test_manifest_counts_every_bad_input_by_reason(tmp_path: Path) -> None:
    """One split holding every bad case, two good files, an unknown type and shuffled rows: the manifest
    accounts for each file under its reason, the repairs are counted, and conversion went past all of them."""
    from collections import Counter

    from smartpretrain.data.conversion import ConversionSettings, convert_split

    folder = tmp_path / "val" / "data"
    folder.mkdir(parents=True)
    expected: dict[str, list[str]] = {}
    for k, case in enumerate(sorted(BAD_CASES), start=100):
        reason, content, _ = BAD_CASES[case]
        path = folder / f"{k}.csv"
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        expected.setdefault(reason.value, []).append(str(path.absolute()))
    good = simple_rows(frame_times())
    write_csv(tmp_path, good, name="1.csv")
    ufo = [(r[0], "ufo-1", "SAUCER", 1.0, 2.0, "PIT") for r in good[:30:3]]
    write_csv(tmp_path, sorted([*good, *ufo], key=lambda r: r[0]), name="2.csv")
    write_csv(tmp_path, list(reversed(good)), name="3.csv")

    manifest = convert_split(
        Av1Converter(tmp_path, "val"), tmp_path / "cache", ConversionSettings(scenes_per_part=4, progress=False)
    )
    assert manifest["num_raw_items"] == len(BAD_CASES) + 3 and manifest["num_scenes"] == 3
    assert manifest["dropped_by_reason"] == dict(Counter({r: len(f) for r, f in expected.items()}))
    for reason, files in expected.items():
        assert sorted(d["file"] for d in manifest["dropped"][reason]) == sorted(files)
        assert all(d["message"] for d in manifest["dropped"][reason])
    assert manifest["repairs"]["unknown_object_type"]["count"] == 1
    assert list(manifest["repairs"]["unknown_object_type"]["files"]) == [str((folder / "2.csv").absolute())]
    assert list(manifest["repairs"]["rows_out_of_order"]["files"]) == [str((folder / "3.csv").absolute())]
