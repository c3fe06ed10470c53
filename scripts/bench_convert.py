"""Conversion speed and cache size on the AV2 fixture (copied xN under new ids), synthetic AV2-format scenes, AV1 val,
the WOMD fixture (copied xN into 4 TFRecord files) and the demo data (synthetic AV1-format scenes with vector maps,
10k by default).

    python scripts/bench_convert.py --copies 1000 --womd-copies 200 --demo-scenes 10000 --workers 1 2 \
        --out benchmarks/results/convert.json

Prints, per dataset and worker count: ms per scenario per core (worker CPU time / scenes, and wall time x
workers / scenes), bytes per scenario in the cache, and a stage breakdown of the single-core time for AV2 and
WOMD.
Reference measured on the same hardware and fixture: the official QCNet preprocessing takes 32 ms/scenario
and writes 195 KiB/scenario.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from av2.datasets.motion_forecasting.scenario_serialization import load_argoverse_scenario_parquet
from av2.map.map_api import ArgoverseStaticMap

from smartpretrain.data.cache import SceneCache, encode_scene
from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av2 import Av2Converter, read_av2_map
from smartpretrain.data.replicate import replicate_av2_scenario, replicate_womd_scenario
from smartpretrain.io.run_outputs import write_report

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
AV2_FIXTURE = SHARED / "fixtures" / "av2" / "val" / "0a1e6f0a-1817-4a98-b02e-db8c9327d151"
AV1_ROOT = SHARED / "data" / "av1"
WOMD_FIXTURE = SHARED / "fixtures" / "womd" / "motion_data_one_scenario.tfrecord"
REFERENCE = {"qcnet_preprocess_ms_per_scenario": 32.0, "qcnet_preprocess_kib_per_scenario": 195.0}


def _median_ms(fn, repeat: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def _av2_map_objects(map_path: Path) -> None:
    static_map = ArgoverseStaticMap.from_json(map_path)
    for lane_id in static_map.get_scenario_lane_segment_ids():
        static_map.get_lane_segment_centerline(lane_id)


def av2_stage_breakdown(raw_root: Path, item: str, repeat: int = 200) -> dict[str, float]:
    """Single-core median ms of each conversion stage for one AV2 scenario."""
    converter = Av2Converter(raw_root, "val")
    scene = converter.convert(item).scene
    map_path = raw_root / "val" / item / f"log_map_archive_{item}.json"
    stages = {
        "tracks_parquet": _median_ms(lambda: converter._read_tracks(converter.item_path(item), item, []), repeat),
        "map_json": _median_ms(lambda: read_av2_map(map_path, scene.origin), repeat),
        "convert_total": _median_ms(lambda: converter.convert(item), repeat),
        "encode_zstd": _median_ms(lambda: encode_scene(scene), repeat),
        # the av2 package's object readers, for comparison (what a naive converter would call)
        "av2_load_argoverse_scenario_parquet": _median_ms(
            lambda: load_argoverse_scenario_parquet(converter.item_path(item)), 30
        ),
        "av2_static_map_from_json_and_centerlines": _median_ms(lambda: _av2_map_objects(map_path), 30),
    }
    return {k: round(v, 3) for k, v in stages.items()}


def womd_stage_breakdown(raw_root: Path, repeat: int = 50) -> dict[str, float]:
    """Single-core median ms of each conversion stage for one WOMD scenario (the fixture)."""
    from smartpretrain.data.converters.womd import WomdConverter, scenario_to_scene, womd_map, womd_signals
    from smartpretrain.data.protos import womd_message

    converter = WomdConverter(raw_root, "val")
    item = converter.list_items()[0]
    path = converter.item_path(item)
    offset = int(item.rsplit("@", 1)[1])
    record = converter._read(path, offset)
    message = womd_message("Scenario")
    proto = message.FromString(record)
    scene = converter.convert(item).scene
    stages = {
        "read_record_crc": _median_ms(lambda: converter._read(path, offset), repeat),
        "parse_proto": _median_ms(lambda: message.FromString(record), repeat),
        "map": _median_ms(lambda: womd_map(proto.map_features, scene.origin), repeat),
        "signals": _median_ms(lambda: womd_signals(proto.dynamic_map_states, scene.origin), repeat),
        "scenario_to_scene": _median_ms(lambda: scenario_to_scene(proto, path), repeat),
        "convert_total": _median_ms(lambda: converter.convert(item), repeat),
        "encode_zstd": _median_ms(lambda: encode_scene(scene), repeat),
    }
    stages["tracks_and_roles"] = stages["scenario_to_scene"] - stages["map"] - stages["signals"]
    stages["raw_record_bytes"] = float(len(record))
    return {k: round(v, 3) for k, v in stages.items()}


def run_case(name: str, converter, out_dir: Path, workers: int, scenes_per_part: int, repeat: int) -> dict[str, object]:
    """Convert ``repeat`` times from scratch; report the median and the best run (this VM's speed varies by
    +-30 % between minutes, so a single run is not a figure)."""
    runs = []
    for _ in range(repeat):
        if out_dir.exists():
            shutil.rmtree(out_dir)
        settings = ConversionSettings(num_workers=workers, scenes_per_part=scenes_per_part, progress=False)
        manifest = convert_split(converter, out_dir, settings)
        runs.append(manifest["last_run"] | {"scenes": manifest["num_scenes"]})
    scenes = runs[0]["scenes"]
    cpu = [1e3 * r["cpu_seconds"] / max(scenes, 1) for r in runs]
    wall = [1e3 * r["wall_seconds"] * workers / max(scenes, 1) for r in runs]
    cache = SceneCache(out_dir)
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(cache), min(300, len(cache)))
    t = time.perf_counter()
    for i in picks:
        cache[int(i)]
    read_ms = 1e3 * (time.perf_counter() - t) / len(picks)
    result = {
        "case": name,
        "workers": workers,
        "scenes": scenes,
        "dropped": manifest["num_dropped"],
        "repeats": repeat,
        "ms_per_scene_per_core_cpu_median": round(statistics.median(cpu), 3),
        "ms_per_scene_per_core_cpu_best": round(min(cpu), 3),
        "ms_per_scene_per_core_wall_median": round(statistics.median(wall), 3),
        "scenes_per_s_wall_median": round(1e3 * workers / statistics.median(wall), 1),
        "bytes_per_scene": manifest["bytes_per_scene"],
        "kib_per_scene": round(manifest["bytes_per_scene"] / 1024, 2),
        "random_read_ms_per_scene": round(read_ms, 3),
    }
    print(
        f"{name:<14} workers={workers}  {scenes} scenes  "
        f"{result['ms_per_scene_per_core_cpu_median']:.2f} ms/scene/core cpu (best {min(cpu):.2f})  "
        f"{result['ms_per_scene_per_core_wall_median']:.2f} ms/scene/core wall  "
        f"{result['scenes_per_s_wall_median']} scenes/s  {result['kib_per_scene']:.1f} KiB/scene  "
        f"random read {read_ms:.2f} ms/scene",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=1000, help="AV2 fixture copies")
    parser.add_argument("--synthetic", type=int, default=1000, help="synthetic AV2-format scenes (0: skip)")
    parser.add_argument("--womd-copies", type=int, default=200, help="WOMD fixture copies (0: skip)")
    parser.add_argument("--demo-scenes", type=int, default=10000, help="demo-data scenes (AV1 format + maps; 0: skip)")
    parser.add_argument("--demo-repeat", type=int, default=1, help="conversions of the (large) demo case")
    parser.add_argument(
        "--datasets", nargs="+", default=["av2", "synthetic", "av1", "womd", "demo"], help="cases to run (default: all)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--scenes-per-part", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3, help="conversions per case (median and best reported)")
    parser.add_argument("--work-dir", type=Path, default=None, help="default: a temp dir, removed afterwards")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "convert.json")
    args = parser.parse_args()
    if not AV2_FIXTURE.exists():
        raise SystemExit(f"{AV2_FIXTURE} not found: this benchmark needs ../shared beside the repository")

    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_convert_"))
    results: list[dict[str, object]] = []
    breakdown: dict[str, float] = {}
    womd_breakdown: dict[str, float] = {}
    try:
        raw = work / "av2_raw"
        if "av2" in args.datasets:
            if not (raw / "val").exists() or len(list((raw / "val").iterdir())) != args.copies:
                shutil.rmtree(raw, ignore_errors=True)
                print(f"writing {args.copies} copies of the AV2 fixture to {raw} ...", flush=True)
                replicate_av2_scenario(AV2_FIXTURE, raw, "val", args.copies)
            first = sorted(p.name for p in (raw / "val").iterdir())[0]
            breakdown = av2_stage_breakdown(raw, first)
            print("AV2 single-core stage medians (ms):", breakdown, flush=True)
        for w in args.workers if "av2" in args.datasets else []:
            results.append(
                run_case(
                    "av2_fixture",
                    Av2Converter(raw, "val"),
                    work / "cache" / f"av2_w{w}",
                    w,
                    args.scenes_per_part,
                    args.repeat,
                )
            )
        if args.synthetic and "synthetic" in args.datasets:
            from smartpretrain.data.synthetic import generate_av2

            synth = work / "synthetic_raw"
            if not (synth / "val").exists() or len(list((synth / "val").iterdir())) != args.synthetic:
                shutil.rmtree(synth, ignore_errors=True)
                print(f"generating {args.synthetic} synthetic AV2-format scenes in {synth} ...", flush=True)
                generate_av2(synth, "val", args.synthetic, seed=0)
            for w in args.workers:
                out = work / "cache" / f"synth_w{w}"
                results.append(
                    run_case("av2_synthetic", Av2Converter(synth, "val"), out, w, args.scenes_per_part, args.repeat)
                )
        if AV1_ROOT.exists() and "av1" in args.datasets:
            from smartpretrain.data.converters.av1 import Av1Converter

            for w in args.workers:
                results.append(
                    run_case(
                        "av1_val",
                        Av1Converter(AV1_ROOT, "val"),
                        work / "cache" / f"av1_w{w}",
                        w,
                        args.scenes_per_part,
                        args.repeat,
                    )
                )
        if args.womd_copies and WOMD_FIXTURE.exists() and "womd" in args.datasets:
            from smartpretrain.data.converters.womd import WomdConverter

            womd_raw = work / "womd_raw"
            shutil.rmtree(womd_raw, ignore_errors=True)
            print(f"writing {args.womd_copies} copies of the WOMD fixture to {womd_raw} ...", flush=True)
            replicate_womd_scenario(WOMD_FIXTURE, womd_raw / "validation", args.womd_copies)
            womd_breakdown = womd_stage_breakdown(womd_raw)
            print("WOMD single-core stage medians (ms):", womd_breakdown, flush=True)
            for w in args.workers:
                out = work / "cache" / f"womd_w{w}"
                results.append(
                    run_case("womd_fixture", WomdConverter(womd_raw, "val"), out, w, args.scenes_per_part, args.repeat)
                )
        if args.demo_scenes and "demo" in args.datasets:
            from smartpretrain.data.converters.av1 import Av1Converter
            from smartpretrain.data.synthetic import generate_av1

            demo = work / "demo_raw"
            if not (demo / "val" / "data").exists() or len(list((demo / "val" / "data").iterdir())) != args.demo_scenes:
                shutil.rmtree(demo, ignore_errors=True)
                print(f"generating {args.demo_scenes} demo scenes (AV1 format, vector maps) in {demo} ...", flush=True)
                generate_av1(demo, "val", args.demo_scenes, seed=0, with_map=True, progress=True)
            for w in args.workers:
                out = work / "cache" / f"demo_w{w}"
                converter = Av1Converter(demo, "val", map_root=demo / "map_files")
                results.append(run_case("demo_av1_maps", converter, out, w, args.scenes_per_part, args.demo_repeat))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    report = {
        "reference": REFERENCE,
        "targets": {"ms_per_scene_per_core": 4.0, "kib_per_scene": 64.0},
        "av2_stage_breakdown_ms": breakdown,
        "womd_stage_breakdown_ms": womd_breakdown,
        "results": results,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
