"""Data-loading throughput: scenes per second out of a DataLoader, per worker, for each dataset and pipeline.

    python scripts/bench_loading.py --workers 0 1 2 --out benchmarks/results/loading.json

Caches (converted once into a temp dir): ``av1`` = the 579 real AV1 val scenes (map-less); ``av2`` = the real AV2
fixture copied ``--av2-copies`` times; ``womd`` = the real WOMD fixture copied ``--womd-copies`` times; ``demo`` =
``--demo-scenes`` synthetic AV1-format scenes with vector maps (the main job's data).

Pipelines, per model (``--models``): ``cache`` (read + decode the Scene only), ``finetune`` (the backbone adapter:
one window ending at the current step) and ``pretrain`` (``SSLViewTransform``: two temporal views sampled, both
adapted), each followed by the adapter's collate into batches of ``--batch-size``. A DataLoader with ``w`` workers
(``0`` = in the main process) iterates the whole cache once, shuffled; the rate counts the scenes after the first
batch over the time after it (worker start-up excluded; reported apart as ``first_batch_s``). With workers, each
case runs with the framework's packed batch transfer (``smartpretrain.data.worker_transfer``) and with PyTorch's
per-tensor one (``--transfers``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from smartpretrain.data.worker_transfer import PackingCollate
from smartpretrain.io.run_outputs import write_report

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
AV1_ROOT = SHARED / "data" / "av1"
AV2_FIXTURE = SHARED / "fixtures" / "av2" / "val" / "0a1e6f0a-1817-4a98-b02e-db8c9327d151"
WOMD_FIXTURE = SHARED / "fixtures" / "womd" / "motion_data_one_scenario.tfrecord"
TRANSFERS = ("packed", "per_tensor")
DATA_CONFIG = {"av1": "av1", "av2": "av2", "womd": "womd", "demo": "av1"}


def build_caches(
    work: Path, datasets: list[str], av2_copies: int, womd_copies: int, demo_scenes: int
) -> dict[str, Path]:
    """Convert the benchmark caches (skipping datasets whose raw data is absent); returns name -> cache folder."""
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.av1 import Av1Converter
    from smartpretrain.data.converters.av2 import Av2Converter
    from smartpretrain.data.converters.womd import WomdConverter
    from smartpretrain.data.replicate import replicate_av2_scenario, replicate_womd_scenario
    from smartpretrain.data.synthetic import generate_av1

    settings = ConversionSettings(num_workers=2, progress=False)
    caches: dict[str, Path] = {}
    for name in datasets:
        out = work / "cache" / name
        if name == "av1" and AV1_ROOT.exists():
            convert_split(Av1Converter(AV1_ROOT, "val"), out, settings)
        elif name == "av2" and AV2_FIXTURE.exists():
            replicate_av2_scenario(AV2_FIXTURE, work / "av2_raw", "val", av2_copies)
            convert_split(Av2Converter(work / "av2_raw", "val"), out, settings)
        elif name == "womd" and WOMD_FIXTURE.exists():
            replicate_womd_scenario(WOMD_FIXTURE, work / "womd_raw" / "validation", womd_copies)
            convert_split(WomdConverter(work / "womd_raw", "val"), out, settings)
        elif name == "demo":
            generate_av1(work / "demo_raw", "val", demo_scenes, seed=0, with_map=True)
            convert_split(
                Av1Converter(work / "demo_raw", "val", map_root=work / "demo_raw" / "map_files"), out, settings
            )
        else:
            print(f"skipping {name}: its raw data is not under {SHARED}", flush=True)
            continue
        caches[name] = out
    return caches


def make_transform(pipeline: str, model: str, dataset: str) -> tuple[Any, Any]:
    """``(per-scene transform, collate)`` of a pipeline, built through the same config path as the runs."""
    from hydra.utils import instantiate

    from smartpretrain.config import compose_config
    from smartpretrain.data.datamodule import collate_as_list
    from smartpretrain.data.views import SSLViewTransform, TemporalViewSampler
    from smartpretrain.runs.pretraining import build_pretrain_backbone

    if pipeline == "cache":
        return None, collate_as_list
    data = [f"data={DATA_CONFIG[dataset]}", f"model={model}"]
    if pipeline == "finetune":
        adapter = instantiate(compose_config("train", data).model).make_adapter()
        return adapter, adapter.collate
    cfg = compose_config("pretrain", data)
    adapter = build_pretrain_backbone(cfg).make_adapter()
    transform = SSLViewTransform(TemporalViewSampler(int(cfg.ssl.window), seed=0), adapter)
    return transform, transform.collate


def measure(cache: Path, transform: Any, collate: Any, workers: int, batch_size: int) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader

    from smartpretrain.data.datamodule import SceneDataset

    dataset = SceneDataset(cache, transform)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    t0 = time.perf_counter()
    iterator = iter(loader)
    first = next(iterator)
    t_first = time.perf_counter()
    for _batch in iterator:
        pass
    elapsed = time.perf_counter() - t_first
    del first
    scenes = len(dataset) - min(batch_size, len(dataset))  # the scenes after the first batch
    rate = scenes / elapsed if scenes > 0 and elapsed > 0 else float("nan")
    return {
        "scenes": len(dataset),
        "first_batch_s": round(t_first - t0, 3),
        "scenes_per_s": round(rate, 1),
        "scenes_per_s_per_worker": round(rate / max(workers, 1), 1),
        "ms_per_scene_per_worker": round(1e3 * max(workers, 1) / rate, 3) if rate == rate else float("nan"),
    }


def report_case(case: dict[str, Any], measured: dict[str, Any]) -> dict[str, Any]:
    row = {**case, **measured}
    print(f"{row['dataset']:<5} {row['pipeline']:<9} {row['model']:<13} workers={row['workers']} "
          f"{row['transfer']:<10} {row['scenes_per_s']:>8.1f} scenes/s  {row['scenes_per_s_per_worker']:>8.1f} "
          f"/worker  first batch {row['first_batch_s']:.2f} s", flush=True)  # fmt: skip
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["av1", "av2", "womd", "demo"])
    parser.add_argument("--models", nargs="+", default=["qcnet", "forecast_mae"])
    parser.add_argument("--pipelines", nargs="+", default=["cache", "finetune", "pretrain"])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--transfers", nargs="+", default=list(TRANSFERS), choices=TRANSFERS,
                        help="worker -> main process: packed (ours, one buffer) and/or per_tensor")  # fmt: skip
    parser.add_argument("--av2-copies", type=int, default=256)
    parser.add_argument("--womd-copies", type=int, default=96)
    parser.add_argument("--demo-scenes", type=int, default=512)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "loading.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # loaders are CPU-bound Python; a worker uses one core
    work = Path(tempfile.mkdtemp(prefix="bench_loading_"))
    results: list[dict[str, Any]] = []
    try:
        caches = build_caches(work, args.datasets, args.av2_copies, args.womd_copies, args.demo_scenes)
        for dataset, cache in caches.items():
            for pipeline in args.pipelines:
                for model in args.models if pipeline != "cache" else ["-"]:
                    transform, collate = make_transform(pipeline, model, dataset)
                    for workers in args.workers:
                        # workers > 0: the framework's packed transfer and PyTorch's per-tensor one (--transfers)
                        for transfer in args.transfers if workers else ["none"]:
                            case = {"dataset": dataset, "pipeline": pipeline, "model": model, "workers": workers,
                                    "transfer": transfer}  # fmt: skip
                            wrapped = PackingCollate(collate) if transfer == "packed" else collate
                            results.append(
                                report_case(case, measure(cache, transform, wrapped, workers, args.batch_size))
                            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "batch_size": args.batch_size,
        "results": results,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
