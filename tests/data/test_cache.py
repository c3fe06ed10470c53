"""Scene cache: exact round trip, random access, version and corruption detection."""

from __future__ import annotations

import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from smartpretrain.data import cache as cache_mod
from smartpretrain.data.cache import CacheError, SceneCache, SchemaVersionError, decode_scene, encode_scene
from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.data.replicate import replicate_av2_scenario
from smartpretrain.data.scene import MapData, Scene
from tests.conftest import AV2_FIXTURE_ID, AV2_FIXTURE_ROOT


def assert_scenes_equal(a: Scene, b: Scene) -> None:
    assert (a.scenario_id, a.dataset, a.city, a.num_steps, a.current_step, a.dt) == (
        b.scenario_id,
        b.dataset,
        b.city,
        b.num_steps,
        b.current_step,
        b.dt,
    )
    np.testing.assert_array_equal(a.origin, b.origin)
    assert a.agents.ids == b.agents.ids
    for name in ("type", "role", "is_sdc", "position", "heading", "velocity", "valid", "size"):
        x, y = getattr(a.agents, name), getattr(b.agents, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.shape == y.shape, name
            np.testing.assert_array_equal(x, y, err_msg=name)
    for name in MapData.__dataclass_fields__:
        x, y = getattr(a.map, name), getattr(b.map, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.fixture(scope="module")
def fixture_scene() -> Scene:
    if not AV2_FIXTURE_ROOT.exists():
        pytest.skip(f"real data not available: {AV2_FIXTURE_ROOT}")
    return Av2Converter(AV2_FIXTURE_ROOT, "val").convert(AV2_FIXTURE_ID).scene


def test_round_trip_is_exact(fixture_scene: Scene) -> None:
    decoded = decode_scene(encode_scene(fixture_scene))
    assert_scenes_equal(decoded, fixture_scene)
    decoded.validate()


def test_round_trip_with_sizes_and_empty_map(fixture_scene: Scene) -> None:
    rng = np.random.default_rng(1)
    agents = replace(
        fixture_scene.agents, size=rng.uniform(0.5, 5, (fixture_scene.agents.num_agents, 3)).astype(np.float32)
    )
    scene = replace(fixture_scene, agents=agents, map=MapData.empty())
    assert_scenes_equal(decode_scene(encode_scene(scene)), scene)


def test_round_trip_of_extreme_floats(fixture_scene: Scene) -> None:
    # sign flips and huge jumps make the bit-pattern deltas wrap around int32; decoding must still be exact
    pos = fixture_scene.agents.position.copy()
    valid = fixture_scene.agents.valid
    pos[valid] = np.random.default_rng(2).normal(0, 1e30, (int(valid.sum()), 3)).astype(np.float32)
    scene = replace(fixture_scene, agents=replace(fixture_scene.agents, position=pos))
    np.testing.assert_array_equal(decode_scene(encode_scene(scene)).agents.position, pos)


def test_record_is_compact(fixture_scene: Scene) -> None:
    assert len(encode_scene(fixture_scene)) < 64 * 1024


@pytest.fixture
def small_cache(tmp_path: Path) -> Path:
    if not AV2_FIXTURE_ROOT.exists():
        pytest.skip(f"real data not available: {AV2_FIXTURE_ROOT}")
    replicate_av2_scenario(AV2_FIXTURE_ROOT / "val" / AV2_FIXTURE_ID, tmp_path / "raw", "val", 5)
    out = tmp_path / "cache" / "av2" / "val"
    convert_split(Av2Converter(tmp_path / "raw", "val"), out, ConversionSettings(scenes_per_part=2, progress=False))
    return out


def test_random_access_api(small_cache: Path) -> None:
    cache = SceneCache(small_cache)
    assert len(cache) == 5 and len(list(small_cache.glob("part-*.spc"))) == 3
    ids = cache.ids()
    assert ids == sorted(ids)  # units follow the sorted raw item order
    for i in (4, 0, 2, -1):
        assert cache[i].scenario_id == ids[i]
    assert cache.get(ids[3]).scenario_id == ids[3] and ids[3] in cache and "nope" not in cache
    with pytest.raises(IndexError, match="out of range"):
        cache[5]
    with pytest.raises(KeyError, match="nope"):
        cache.get("nope")
    clone = pickle.loads(pickle.dumps(cache))
    assert clone[1].scenario_id == ids[1]


def test_dataloader_workers_read_the_cache(small_cache: Path) -> None:
    cache = SceneCache(small_cache)
    loader = torch.utils.data.DataLoader(cache, batch_size=None, num_workers=2, collate_fn=lambda s: s.scenario_id)
    assert sorted(loader) == sorted(cache.ids())


def test_schema_version_mismatch_is_clear(small_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cache_mod, "SCHEMA_VERSION", cache_mod.SCHEMA_VERSION + 1)
    with pytest.raises(SchemaVersionError, match=r"schema version 1.*reads version 2.*overwrite=true"):
        SceneCache(small_cache)
    with pytest.raises(SchemaVersionError, match="schema version"):
        cache_mod.read_part_footer(next(small_cache.glob("part-*.spc")))


def test_missing_cache_and_corrupt_record_are_named(small_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=r"no index\.parquet"):
        SceneCache(tmp_path / "nowhere")
    part = small_cache / "part-000001.spc"
    data = bytearray(part.read_bytes())
    data[20:60] = b"\x00" * 40  # inside the first record of the part
    part.write_bytes(bytes(data))
    cache = SceneCache(small_cache)
    with pytest.raises(CacheError, match=r"part-000001\.spc: corrupt record"):
        cache[2]
    part.write_bytes(bytes(data[:100]))
    with pytest.raises(CacheError, match=r"part-000001\.spc"):
        cache_mod.read_part_footer(part)
