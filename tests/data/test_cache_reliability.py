"""Cache reliability: stale parts are redone, records are checksummed, orphans removed, shards run concurrently,
a finished cache reads on read-only storage, write failures end in one line, options are checked early, and the
index / manifest carry what training needs (agents per scene, step ranges).

Raw data: synthetic AV1 CSVs (+ vector maps) from :mod:`smartpretrain.data.synthetic`, so nothing here needs
``../shared``.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import smartpretrain.io.atomic as atomic_mod
from smartpretrain import convert as convert_cli
from smartpretrain.config import compose_config
from smartpretrain.data import cache as cache_mod
from smartpretrain.data import conversion as conversion_mod
from smartpretrain.data.cache import (
    END_MAGIC,
    PART_MAGIC,
    CacheError,
    CacheWriteError,
    SceneCache,
    encode_scene,
    footer_records,
    read_part_footer,
)
from smartpretrain.data.conversion import ConversionLockedError, ConversionSettings, convert_split
from smartpretrain.data.converters.av1 import Av1Converter
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.data.converters.womd import WomdConverter
from smartpretrain.data.synthetic import generate_av1, generate_av2
from smartpretrain.io.atomic import host_name, temp_path
from smartpretrain.runs import conversion as convert_mod
from tests.conftest import REPO
from tests.data.test_cache import assert_scenes_equal
from tests.helpers import TinyConverter, make_tiny_scene

NUM_ITEMS = 12
LOGGER = "smartpretrain.data.conversion"


@pytest.fixture(scope="module")
def av1_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("av1_source")
    generate_av1(root, "val", NUM_ITEMS, seed=3, with_map=True)
    return root


@pytest.fixture
def raw(av1_source: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic AV1 split (tests change its files)."""
    root = tmp_path / "raw"
    shutil.copytree(av1_source, root)
    return root


def _settings(**kw) -> ConversionSettings:
    return ConversionSettings(**{"scenes_per_part": 2, "progress": False, **kw})


def _av1(raw: Path, **kw) -> Av1Converter:
    return Av1Converter(raw, "val", **kw)


def _parts(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("part-*.spc"))


def _index_parts(out: Path) -> set[int]:
    return set(pq.read_table(out / "index.parquet").column("part").to_pylist())


def _redo_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "parts redone" in r.getMessage()]


# ---------------------------------------------------------------------------------------------------------------
# 1. stale parts


def test_changed_converter_settings_redo_every_part(raw: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "cache"
    first = convert_split(_av1(raw), out, _settings())
    assert first["complete"] and first["num_scenes"] == NUM_ITEMS and first["converter"]["map_root"] is None
    assert SceneCache(out)[0].map.points.size == 0
    maps = raw / "map_files"

    caplog.set_level(logging.INFO, LOGGER)
    with_map = convert_split(_av1(raw, map_root=maps), out, _settings())
    assert with_map["last_run"]["units_converted"] == 6 and with_map["last_run"]["units_skipped"] == 0
    assert _redo_lines(caplog) == ["6 parts redone: converter settings changed (units 0, 1, 2, 3, 4, 5)"]
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["converter"]["map_root"] == str(maps) and on_disk["complete"]
    cache = SceneCache(out)
    assert all(cache[i].map.points.size > 0 for i in range(len(cache)))

    caplog.clear()
    radius = convert_split(_av1(raw, map_root=maps, map_radius=30.0), out, _settings())
    assert radius["last_run"]["units_converted"] == 6 and radius["converter"]["map_radius"] == 30.0
    assert _redo_lines(caplog) == ["6 parts redone: converter settings changed (units 0, 1, 2, 3, 4, 5)"]

    shifted = convert_split(_av1(raw, map_root=maps, map_radius=30.0, current_step=15), out, _settings())
    assert shifted["last_run"]["units_converted"] == 6 and shifted["current_step"] == {"min": 15, "max": 15}
    assert {s.current_step for s in SceneCache(out)} == {15}

    caplog.clear()
    same = convert_split(_av1(raw, map_root=maps, map_radius=30.0, current_step=15), out, _settings())
    assert same["last_run"]["units_converted"] == 0 and same["last_run"]["units_skipped"] == 6
    assert same["last_run"]["cache_changed"] is False and not _redo_lines(caplog)


def test_converter_settings_cover_every_option(tmp_path: Path) -> None:
    base = Av1Converter(tmp_path, "val")
    for changed in (
        Av1Converter(tmp_path, "val", map_root=tmp_path / "maps"),
        Av1Converter(tmp_path, "val", map_radius=50.0),
        Av1Converter(tmp_path, "val", current_step=15),
        Av1Converter(tmp_path, "val", num_steps=40),
        Av1Converter(tmp_path, "train"),
    ):
        assert changed.settings_fingerprint() != base.settings_fingerprint(), changed.describe()
    # where the raw data is mounted is not a setting (the raw files are fingerprinted by content / stat)
    assert Av1Converter(tmp_path / "elsewhere", "val").settings_fingerprint() == base.settings_fingerprint()
    assert "raw_root" not in base.settings() and base.settings()["map_radius"] == 100.0
    assert Av2Converter(tmp_path, "val", current_step=40).settings_fingerprint() != (
        Av2Converter(tmp_path, "val").settings_fingerprint()
    )
    assert Av2Converter(tmp_path, "val", current_step=40).describe()["current_step"] == 40
    assert WomdConverter(tmp_path, "val", verify_crc=False).settings_fingerprint() != (
        WomdConverter(tmp_path, "val").settings_fingerprint()
    )
    assert "_open" not in WomdConverter(tmp_path, "val").settings()
    # options a converter keeps only as attributes (the test converter has no describe() override) count too
    assert TinyConverter(4, drop=(1,)).settings_fingerprint() != TinyConverter(4).settings_fingerprint()
    assert TinyConverter(4, repair=(2,)).settings()["repair"] == [2]


def test_item_files_name_every_file_a_scene_reads(raw: Path, tmp_path: Path) -> None:
    av1 = _av1(raw)
    item = av1.list_items()[0]
    assert av1.item_files(item) == [av1.item_path(item)]
    with_map = _av1(raw, map_root=raw / "map_files")
    assert with_map.item_files(item)[1:] == sorted((raw / "map_files").glob("*.xml")) != []
    (sid_dir,) = generate_av2(tmp_path / "av2", "val", 1)
    av2 = Av2Converter(tmp_path / "av2", "val")
    sid = sid_dir.name
    assert av2.item_files(sid) == [sid_dir / f"scenario_{sid}.parquet", sid_dir / f"log_map_archive_{sid}.json"]
    womd = WomdConverter(tmp_path / "womd", "val")
    assert womd.item_files("validation/a.tfrecord-00000@12") == [tmp_path / "womd" / "validation/a.tfrecord-00000"]


def test_changed_raw_file_redoes_only_its_part(raw: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "cache"
    maps = raw / "map_files"
    convert_split(_av1(raw, map_root=maps), out, _settings())
    csv = raw / "val" / "data" / "6.csv"  # item 5 -> unit 2
    st = csv.stat()
    os.utime(csv, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    caplog.set_level(logging.INFO, LOGGER)
    again = convert_split(_av1(raw, map_root=maps), out, _settings())
    assert again["last_run"]["units_converted"] == 1 and again["last_run"]["units_skipped"] == 5
    assert _redo_lines(caplog) == ["1 parts redone: raw inputs changed (units 2)"]

    caplog.clear()
    map_file = sorted(maps.glob("*.xml"))[0]
    map_file.write_bytes(map_file.read_bytes() + b"\n")  # every scene with a map reads every map file
    redone = convert_split(_av1(raw, map_root=maps), out, _settings())
    assert redone["last_run"]["units_converted"] == 6 and redone["complete"]
    assert _redo_lines(caplog) == ["6 parts redone: raw inputs changed (units 0, 1, 2, 3, 4, 5)"]


def test_content_fingerprint_sees_edits_that_keep_size_and_mtime(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    convert_split(_av1(raw), out, _settings(fingerprint="content"))
    same = raw / "val" / "data" / "2.csv"  # unit 0: rewritten with identical bytes (new mtime)
    same.write_bytes(same.read_bytes())
    edited = raw / "val" / "data" / "4.csv"  # unit 1: one digit changed, size and mtime kept
    st = edited.stat()
    text = edited.read_text()
    i = max(i for i, ch in enumerate(text) if ch in "12345678")
    edited.write_text(text[:i] + str(int(text[i]) + 1) + text[i + 1 :])
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert edited.stat().st_size == st.st_size

    by_content = convert_split(_av1(raw), out, _settings(fingerprint="content"))
    assert by_content["last_run"]["redone_by_reason"] == {"raw inputs changed": 1}
    cache = SceneCache(out)
    assert_scenes_equal(cache.get("4"), _av1(raw).convert("val/data/4.csv").scene)
    # size + mtime cannot see such an edit, but does see the rewrite of unit 0
    by_stat = convert_split(_av1(raw), tmp_path / "stat", _settings())
    edited.write_text(text)
    os.utime(edited, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert convert_split(_av1(raw), tmp_path / "stat", _settings())["last_run"]["units_converted"] == 0
    assert by_stat["complete"]


def test_manifest_marks_parts_of_other_shards_stale(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    for shard in ("0/2", "1/2"):
        convert_split(_av1(raw), out, _settings(shard=shard))
    maps = raw / "map_files"
    half = convert_split(_av1(raw, map_root=maps), out, _settings(shard="0/2"))
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == half
    assert not on_disk["complete"] and on_disk["stale_units"] == [1, 3, 5]
    assert on_disk["stale_by_reason"] == {"converter settings changed": [1, 3, 5]}
    assert on_disk["converter"]["map_root"] == str(maps) and on_disk["num_scenes"] == 6
    assert _index_parts(out) == {0, 2, 4}  # the stale parts stay on disk for their shard, out of the index
    assert len(_parts(out)) == 6
    full = convert_split(_av1(raw, map_root=maps), out, _settings(shard="1/2"))
    assert full["complete"] and full["stale_units"] == [] and full["num_scenes"] == NUM_ITEMS


# ---------------------------------------------------------------------------------------------------------------
# 2. per-record checksums


def test_corrupt_record_is_named_and_redone(raw: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "cache"
    convert_split(_av1(raw), out, _settings())
    part = out / "part-000001.spc"
    entry = footer_records(read_part_footer(part))[1]
    assert entry.crc32 is not None and entry.num_agents is not None
    data = bytearray(part.read_bytes())
    data[entry.offset + entry.length // 2] ^= 0xFF
    part.write_bytes(bytes(data))
    read_part_footer(part)  # the footer is intact

    cache = SceneCache(out)
    assert cache.ids()[3] == entry.scenario_id
    with pytest.raises(CacheError, match=rf"part-000001\.spc: corrupt record for scene 3 \({entry.scenario_id}\)"):
        cache[3]
    cache[2]  # the other record of the part is fine

    caplog.set_level(logging.INFO, LOGGER)
    again = convert_split(_av1(raw), out, _settings())
    assert again["last_run"]["units_converted"] == 1 and again["complete"]
    (line,) = _redo_lines(caplog)
    assert line.startswith("1 parts redone: record checksum mismatch (units 1; e.g. ") and "corrupt record 1" in line
    fresh = SceneCache(out)
    assert_scenes_equal(fresh[3], _av1(raw).convert("val/data/4.csv").scene)


def test_old_layout_part_and_index_are_still_read(tmp_path: Path) -> None:
    out = tmp_path / "old"
    out.mkdir()
    scenes = [make_tiny_scene("old-0"), make_tiny_scene("old-1", with_map=False)]
    blobs = [encode_scene(s) for s in scenes]
    offsets = [len(PART_MAGIC), len(PART_MAGIC) + len(blobs[0])]
    records = [[s.scenario_id, o, len(b)] for s, o, b in zip(scenes, offsets, blobs, strict=True)]
    footer = {"unit": 0, "schema_version": 1, "records": records}  # the 3-field record table of older code
    foot = json.dumps(footer).encode()
    (out / "part-000000.spc").write_bytes(
        PART_MAGIC + b"".join(blobs) + foot + struct.pack("<Q", len(foot)) + END_MAGIC
    )
    rows = footer_records(read_part_footer(out / "part-000000.spc"))
    assert [(r.scenario_id, r.crc32, r.num_agents) for r in rows] == [("old-0", None, None), ("old-1", None, None)]
    table = pa.table(
        {
            "scenario_id": pa.array(["old-0", "old-1"]),
            "part": pa.array([0, 0], pa.int32()),
            "offset": pa.array(offsets, pa.int64()),
            "length": pa.array([len(b) for b in blobs], pa.int32()),
        },
        metadata={"schema_version": "1"},
    )
    pq.write_table(table, out / "index.parquet")
    cache = SceneCache(out)
    assert cache.num_agents() is None and len(cache) == 2
    assert_scenes_equal(cache[1], scenes[1])
    cache_mod.check_part_records(out / "part-000000.spc", read_part_footer(out / "part-000000.spc"))


# ---------------------------------------------------------------------------------------------------------------
# 3. orphan parts


def test_orphan_parts_are_removed(raw: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "cache"
    convert_split(_av1(raw), out, _settings())
    assert len(_parts(out)) == 6
    caplog.set_level(logging.INFO, LOGGER)
    bigger = convert_split(_av1(raw), out, _settings(scenes_per_part=4))
    assert _parts(out) == ["part-000000.spc", "part-000001.spc", "part-000002.spc"]
    assert bigger["last_run"]["orphans_removed"] == 3 and bigger["complete"] and bigger["num_scenes"] == NUM_ITEMS
    assert any(r.getMessage().startswith("removed 3 orphan parts") for r in caplog.records)
    assert SceneCache(out).ids() == [str(i) for i in range(1, NUM_ITEMS + 1)]

    # one shard with a new partition: the other shard's parts list other items now and are removed as well
    sharded = convert_split(_av1(raw), out, _settings(scenes_per_part=3, shard="0/2"))
    assert _parts(out) == ["part-000000.spc", "part-000002.spc"] and _index_parts(out) == {0, 2}
    assert sharded["missing_units"] == [1, 3] and sharded["num_scenes"] == 6
    assert sharded["last_run"]["orphans_removed"] == 1


# ---------------------------------------------------------------------------------------------------------------
# 4. concurrency


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_names_and_cleanup_spare_other_writers(tmp_path: Path) -> None:
    name = temp_path(tmp_path / "part-000001.spc").name
    assert re.fullmatch(rf"\.part-000001\.spc\.tmp\.{re.escape(host_name())}\.{os.getpid()}\.[0-9a-f]+", name)
    assert temp_path(tmp_path / "x") != temp_path(tmp_path / "x")
    out = tmp_path / "cache"
    out.mkdir()
    dead = _dead_pid()
    live = out / f".part-000000.spc.tmp.{host_name()}.{os.getpid()}.abcd1234"  # another converter, writing now
    other_host = out / ".part-000001.spc.tmp.some-other-node.1.abcd1234"  # cannot be checked from here
    stale = out / f".part-000002.spc.tmp.{host_name()}.{dead}.abcd1234"
    legacy = out / f".index.parquet.tmp.{dead}"  # older code's name
    for p in (live, other_host, stale, legacy):
        p.write_bytes(b"in flight")
    convert_split(TinyConverter(4), out, _settings())
    assert live.exists() and other_host.exists()
    assert not stale.exists() and not legacy.exists()


def test_second_run_of_a_locked_shard_fails_at_once(tmp_path: Path) -> None:
    out = tmp_path / "cache"
    out.mkdir()
    holder = conversion_mod._lock_shard(out, 0, 2, "synthetic/val")
    holder.announce()
    try:
        with pytest.raises(ConversionLockedError) as info:
            convert_split(TinyConverter(8), out, _settings(shard="0/2"))
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{out / '.lock-shard-0-of-2'}: shard 0/2 of synthetic/val")
        assert f"pid {os.getpid()}, host {host_name()}, started " in message
        other = convert_split(TinyConverter(8), out, _settings(shard="1/2"))  # another shard runs meanwhile
        assert other["num_scenes"] == 4
    finally:
        holder.release()
    assert convert_split(TinyConverter(8), out, _settings(shard="0/2"))["complete"]


def _cli(raw: Path, cache_root: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "smartpretrain.convert", "data=av1", f"data.raw_root={raw}", "data.split=val",
        f"cache_root={cache_root}", "scenes_per_part=1", "progress=false", f"hydra.run.dir={cache_root}/.runs/x",
        *extra,
    ]  # fmt: skip


@pytest.mark.slow
def test_two_shards_convert_into_one_folder_at_once(raw: Path, tmp_path: Path) -> None:
    cache_root = tmp_path / "cache"
    out = cache_root / "av1" / "val"
    out.mkdir(parents=True)
    index_lock = os.open(out / ".lock-index", os.O_RDWR | os.O_CREAT)
    fcntl.flock(index_lock, fcntl.LOCK_EX)  # both shards must wait here, with all their parts written
    procs = []
    try:
        for shard in ("0/2", "1/2"):
            cmd = _cli(raw, cache_root, f"shard={shard}")
            procs.append(subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        deadline = time.time() + 180
        while len(_parts(out)) < NUM_ITEMS and time.time() < deadline:
            assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
            time.sleep(0.05)
        assert len(_parts(out)) == NUM_ITEMS
        time.sleep(0.3)
        assert all(p.poll() is None for p in procs)  # both are converting/finishing at the same time

        same = subprocess.run(_cli(raw, cache_root, "shard=0/2"), cwd=REPO, capture_output=True, text=True, timeout=120)
        assert same.returncode == 2, same.stderr
        lines = same.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in same.stderr
        assert f"{out / '.lock-shard-0-of-2'}: shard 0/2 of av1/val is already being converted" in lines[0]
        assert f"pid {procs[0].pid}, host {host_name()}, started " in lines[0]
    finally:
        fcntl.flock(index_lock, fcntl.LOCK_UN)
        os.close(index_lock)
    for p in procs:
        _, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_scenes"] == NUM_ITEMS
    ids = SceneCache(out).ids()
    assert sorted(ids, key=int) == [str(i) for i in range(1, NUM_ITEMS + 1)] and len(set(ids)) == len(ids)
    assert not list(out.glob(".*.tmp.*"))


# ---------------------------------------------------------------------------------------------------------------
# 5. read-only storage


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir()}


def test_fresh_cache_reads_and_rechecks_without_writing(raw: Path, tmp_path: Path, monkeypatch) -> None:
    cfg = compose_config(
        "convert",
        ["data=av1", f"data.raw_root={raw}", "data.split=val", f"cache_root={tmp_path / 'cache'}",
         "scenes_per_part=3", "progress=false"],
    )  # fmt: skip
    out = tmp_path / "cache" / "av1" / "val"
    convert_mod.run(cfg)
    assert (out / "convert_config.yaml").exists()
    before = _snapshot(out)

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    for module, name in (
        (cache_mod, "atomic_write_bytes"),
        (atomic_mod, "atomic_write_bytes"),
        (conversion_mod, "atomic_write_text"),
        (convert_mod, "atomic_write_text"),
        (os, "replace"),
        (os, "rename"),
        (os, "unlink"),
        (os, "ftruncate"),
        (pq, "write_table"),
    ):
        monkeypatch.setattr(module, name, refuse)
    manifest = convert_mod.run(cfg)
    assert manifest["last_run"]["units_converted"] == 0 and manifest["last_run"]["cache_changed"] is False
    assert manifest["complete"] and manifest["num_scenes"] == NUM_ITEMS
    cache = SceneCache(out)
    assert [s.scenario_id for s in cache] == cache.ids() and len(cache) == NUM_ITEMS
    assert _snapshot(out) == before


# ---------------------------------------------------------------------------------------------------------------
# 6. disk full


def test_disk_full_ends_in_one_line_and_resumes(raw: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    cache_root = tmp_path / "cache"
    out = cache_root / "av1" / "val"
    cfg = compose_config(
        "convert",
        ["data=av1", f"data.raw_root={raw}", "data.split=val", f"cache_root={cache_root}", "scenes_per_part=2",
         "progress=false"],
    )  # fmt: skip
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        if "part-000003.spc" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(SystemExit) as info:
        convert_cli.main(cfg)  # hydra passes a given config straight to the task function
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err == (
        f"smartpretrain.convert: error: no space left on device while writing {out / 'part-000003.spc'}; "
        "parts already written are kept, re-run to resume\n"
    )
    assert _parts(out) == ["part-000000.spc", "part-000001.spc", "part-000002.spc"]
    assert not list(out.glob(".*.tmp.*"))

    monkeypatch.setattr(os, "fsync", real_fsync)
    resumed = convert_split(_av1(raw), out, _settings())
    assert resumed["last_run"]["units_converted"] == 3 and resumed["last_run"]["units_skipped"] == 3
    assert resumed["complete"] and resumed["num_scenes"] == NUM_ITEMS


def test_write_error_in_a_worker_names_the_part(tmp_path: Path, monkeypatch) -> None:
    def full(path, chunks):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod, "atomic_write_bytes", full)
    with pytest.raises(CacheWriteError, match=r"^no space left on device while writing .*part-000000\.spc; parts"):
        convert_split(TinyConverter(4), tmp_path / "cache", _settings())


# ---------------------------------------------------------------------------------------------------------------
# 7. options checked before any work


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"scenes_per_part": 0}, "scenes_per_part"),
        ({"scenes_per_part": -3}, "scenes_per_part"),
        ({"num_workers": -1}, "num_workers"),
        ({"shard": "2/2"}, "shard"),
        ({"shard": "two"}, "shard"),
        ({"fingerprint": "md5"}, "fingerprint"),
        ({"compression_level": 99}, "compression_level"),
    ],
)
def test_bad_options_are_refused_before_any_work(options: dict, name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"^{name}\b") as info:
        ConversionSettings(**options)
    assert "\n" not in str(info.value)
    key, value = next(iter(options.items()))
    if key == "compression_level":  # not a command-line option
        return
    cfg = compose_config("convert", [f"{key}={value}", f"cache_root={tmp_path / 'cache'}"])  # no raw_root at all
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        convert_mod.run(cfg)
    assert not (tmp_path / "cache").exists()


# ---------------------------------------------------------------------------------------------------------------
# 8. what training needs


def test_index_and_manifest_describe_scene_sizes(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache"
    manifest = convert_split(_av1(raw), out, _settings(scenes_per_part=5))
    cache = SceneCache(out)
    counts = cache.num_agents()
    assert counts is not None and counts.dtype == np.int32
    assert counts.tolist() == [s.agents.num_agents for s in cache]
    assert pq.read_table(out / "index.parquet").schema.field("num_agents").type == pa.int32()
    assert manifest["num_steps"] == {"min": 50, "max": 50} and manifest["current_step"] == {"min": 19, "max": 19}
    assert manifest["max_agents"] == int(counts.max()) > 0
    assert json.loads((out / "manifest.json").read_text())["max_agents"] == manifest["max_agents"]


# ---------------------------------------------------------------------------------------------------------------
# 9. one atomic write path


def test_every_cache_file_is_written_atomically(tmp_path: Path, monkeypatch) -> None:
    written: list[str] = []
    real = cache_mod.atomic_write_bytes

    def spy(path, chunks):
        written.append(Path(path).name)
        real(path, chunks)

    monkeypatch.setattr(cache_mod, "atomic_write_bytes", spy)
    monkeypatch.setattr(atomic_mod, "atomic_write_bytes", spy)  # text and JSON writes go through it
    convert_split(TinyConverter(5), tmp_path / "cache", _settings())
    assert sorted(written) == ["index.parquet", "manifest.json", "part-000000.spc", "part-000001.spc",
                               "part-000002.spc"]  # fmt: skip
