"""Conversion runner: manifest accounting, resume, shards, strict mode, kill-and-resume, parallel workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from smartpretrain.data.cache import SceneCache, SchemaVersionError
from smartpretrain.data.conversion import ConversionSettings, StrictModeError, convert_split
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.data.replicate import replicate_av2_scenario
from tests.conftest import AV2_FIXTURE_ID, AV2_FIXTURE_ROOT, REPO
from tests.data.test_cache import assert_scenes_equal


@pytest.fixture
def raw_root(tmp_path: Path) -> Path:
    if not AV2_FIXTURE_ROOT.exists():
        pytest.skip(f"real data not available: {AV2_FIXTURE_ROOT}")
    root = tmp_path / "raw"
    replicate_av2_scenario(AV2_FIXTURE_ROOT / "val" / AV2_FIXTURE_ID, root, "val", 12)
    return root


def _settings(**kw) -> ConversionSettings:
    return ConversionSettings(**{"scenes_per_part": 4, "progress": False, **kw})


def test_manifest_accounts_for_every_item(raw_root: Path, tmp_path: Path) -> None:
    ids = sorted(p.name for p in (raw_root / "val").iterdir())
    (raw_root / "val" / ids[1] / f"log_map_archive_{ids[1]}.json").unlink()
    (raw_root / "val" / ids[7] / f"scenario_{ids[7]}.parquet").write_bytes(b"junk")
    table = pq.read_table(raw_root / "val" / ids[9] / f"scenario_{ids[9]}.parquet")
    types = table["object_type"].to_pylist()
    types[0] = "zeppelin"
    import pyarrow as pa

    i = table.schema.get_field_index("object_type")
    pq.write_table(
        table.set_column(i, "object_type", pa.array(types)), raw_root / "val" / ids[9] / f"scenario_{ids[9]}.parquet"
    )

    out = tmp_path / "cache"
    manifest = convert_split(Av2Converter(raw_root, "val"), out, _settings())
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["num_scenes"] == manifest["num_scenes"] == 10
    assert on_disk["num_raw_items"] == 12 and on_disk["complete"] is True
    assert on_disk["dropped_by_reason"] == {"corrupt_file": 1, "missing_file": 1}
    assert ids[7] in on_disk["dropped"]["corrupt_file"][0]["file"]
    assert ids[1] in on_disk["dropped"]["missing_file"][0]["file"]
    assert on_disk["repairs"]["unknown_object_type"]["count"] == 1
    assert any(ids[9] in f for f in on_disk["repairs"]["unknown_object_type"]["files"])
    assert on_disk["schema_version"] == 1 and on_disk["converter_version"]
    assert on_disk["last_run"]["wall_seconds"] > 0
    assert SceneCache(out).ids() == [x for x in ids if x not in (ids[1], ids[7])]

    with pytest.raises(StrictModeError, match="missing_file"):
        convert_split(Av2Converter(raw_root, "val"), tmp_path / "strict", _settings(strict=True))


def test_rerun_skips_and_shards_merge(raw_root: Path, tmp_path: Path) -> None:
    ref = tmp_path / "ref"
    convert_split(Av2Converter(raw_root, "val"), ref, _settings())
    sharded = tmp_path / "sharded"
    m0 = convert_split(Av2Converter(raw_root, "val"), sharded, _settings(shard="0/2"))
    assert not m0["complete"] and m0["missing_units"] == [1] and m0["num_scenes"] == 8
    m1 = convert_split(Av2Converter(raw_root, "val"), sharded, _settings(shard="1/2"))
    assert m1["complete"] and m1["num_scenes"] == 12
    again = convert_split(Av2Converter(raw_root, "val"), sharded, _settings())
    assert again["last_run"]["units_converted"] == 0 and again["last_run"]["units_skipped"] == 3
    a, b = SceneCache(ref), SceneCache(sharded)
    assert a.ids() == b.ids()
    for i in range(len(a)):
        assert_scenes_equal(a[i], b[i])
    with pytest.raises(ValueError, match="i/n"):
        convert_split(Av2Converter(raw_root, "val"), sharded, _settings(shard="2"))


def test_schema_change_requires_overwrite(raw_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    convert_split(Av2Converter(raw_root, "val"), out, _settings())
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["schema_version"] = 0
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SchemaVersionError, match="overwrite=true"):
        convert_split(Av2Converter(raw_root, "val"), out, _settings())
    rebuilt = convert_split(Av2Converter(raw_root, "val"), out, _settings(overwrite=True))
    assert rebuilt["last_run"]["units_converted"] == 3 and rebuilt["schema_version"] == 1


def test_damaged_part_is_redone(raw_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    convert_split(Av2Converter(raw_root, "val"), out, _settings())
    part = out / "part-000002.spc"
    part.write_bytes(part.read_bytes()[:-30])
    manifest = convert_split(Av2Converter(raw_root, "val"), out, _settings())
    assert manifest["last_run"]["units_converted"] == 1 and manifest["num_scenes"] == 12
    assert len(SceneCache(out)) == 12


def test_parallel_workers_match_serial(raw_root: Path, tmp_path: Path) -> None:
    serial, parallel = tmp_path / "serial", tmp_path / "parallel"
    convert_split(Av2Converter(raw_root, "val"), serial, _settings())
    convert_split(Av2Converter(raw_root, "val"), parallel, _settings(num_workers=2))
    a, b = SceneCache(serial), SceneCache(parallel)
    assert a.ids() == b.ids()
    assert_scenes_equal(a[5], b[5])


@pytest.mark.slow
def test_kill_then_rerun_gives_complete_cache(tmp_path: Path) -> None:
    if not AV2_FIXTURE_ROOT.exists():
        pytest.skip(f"real data not available: {AV2_FIXTURE_ROOT}")
    raw = tmp_path / "raw"
    replicate_av2_scenario(AV2_FIXTURE_ROOT / "val" / AV2_FIXTURE_ID, raw, "val", 240)
    cache_root = tmp_path / "cache"
    cmd = [
        sys.executable,
        "-m",
        "smartpretrain.convert",
        "data=av2",
        f"data.raw_root={raw}",
        "data.split=val",
        f"cache_root={cache_root}",
        "scenes_per_part=2",
        "progress=false",
        "num_workers=1",
    ]
    out = cache_root / "av2" / "val"
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("part-*.spc"))) < 10:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = len(list(out.glob("part-*.spc")))
    assert 10 <= done_at_kill < 120, f"kill did not land mid-run ({done_at_kill} parts)"
    assert not (out / "index.parquet").exists()

    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_scenes"] == 240
    assert manifest["last_run"]["units_skipped"] >= done_at_kill
    assert not list(out.glob(".*.tmp.*"))
    cache = SceneCache(out)
    reference = Av2Converter(raw, "val")
    for i in range(0, 240, 17):
        assert_scenes_equal(cache[i], reference.convert(cache.ids()[i]).scene)
    assert "240 scenes in cache" in rerun.stdout


def test_cli_reports_bad_paths_in_one_line(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "smartpretrain.convert", "data=av2", f"data.raw_root={tmp_path / 'nowhere'}",
        "data.split=val", f"cache_root={tmp_path / 'cache'}",
    ]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"{tmp_path / 'nowhere' / 'val'}: no such AV2 split folder" in result.stderr
    assert "Traceback" not in result.stderr
