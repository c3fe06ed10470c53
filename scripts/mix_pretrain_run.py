"""SmartPretrain on a weighted mixture of datasets, CPU: real AV1 + the AV2 fixture + the WOMD fixture + demo data.

    python scripts/mix_pretrain_run.py --epochs 2 --work-dir outputs/mix_pretrain_run

Converts ../shared/data/av1 {train, val} (real, map-less), the AV2 fixture scenario (1 scene with its map), the
WOMD fixture scenario (1 scene with map and traffic signals) and generated AV2-format demo scenes into one cache
root, then pre-trains ``qcnet_small`` (TCL + TRL) on ``data=mix_av1_av2_womd`` plus a ``demo`` component, with
explicit weights and replacement (the fixtures are single scenes, oversampled on purpose). Each dataset keeps its
own view length (AV1 20, AV2 50, WOMD 40, demo 50). Prints the per-dataset validation losses of every epoch and
writes them to ``results.json`` in the work dir.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av1 import Av1Converter
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.data.converters.womd import WomdConverter
from smartpretrain.data.synthetic import generate_av2
from smartpretrain.io.atomic import atomic_write_text
from smartpretrain.io.run_outputs import epoch_metrics
from smartpretrain.runs.pipeline import PretrainSpec, run_pipeline

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
AV1 = SHARED / "data" / "av1"
AV2_FIXTURE_ROOT = SHARED / "fixtures" / "av2"
WOMD_FIXTURE = SHARED / "fixtures" / "womd" / "motion_data_one_scenario.tfrecord"
SOURCES = ("av1", "av2", "womd", "demo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--samples-per-epoch", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--demo-scenes", type=int, default=60)
    parser.add_argument("--weights", type=float, nargs=4, default=[0.4, 0.1, 0.1, 0.4], help="av1 av2 womd demo")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=REPO / "outputs" / "mix_pretrain_run")
    parser.add_argument("--av1-cache", type=Path, default=None, help="an existing AV1 cache ({train,val}/) to reuse")
    args = parser.parse_args()
    for path in (AV1, AV2_FIXTURE_ROOT, WOMD_FIXTURE):
        if not path.exists():
            raise SystemExit(f"{path} not found: this run needs ../shared beside the repository")
    cache = args.work_dir / "cache"
    settings = ConversionSettings(num_workers=args.workers)
    if args.av1_cache:
        for split in ("train", "val"):
            if not (cache / "av1" / split).exists():
                shutil.copytree(args.av1_cache / split, cache / "av1" / split)
    for split in ("train", "val"):
        convert_split(Av1Converter(AV1, split), cache / "av1" / split, settings)
    convert_split(Av2Converter(AV2_FIXTURE_ROOT, "val"), cache / "av2" / "val", settings)
    convert_split(WomdConverter(WOMD_FIXTURE, "val"), cache / "womd" / "val", settings)
    demo_raw = args.work_dir / "demo_raw"
    if not (demo_raw / "val").exists():
        generate_av2(demo_raw, "train", args.demo_scenes, seed=7)
        generate_av2(demo_raw, "val", max(args.demo_scenes // 4, 2), seed=7, start_index=10_000)
    for split in ("train", "val"):
        convert_split(Av2Converter(demo_raw, split), cache / "demo" / split, settings)

    w_av1, w_av2, w_womd, w_demo = args.weights
    overrides = [
        "experiment=smartpretrain_cpu_small", "data=mix_av1_av2_womd", f"cache_root={cache}",
        f"max_epochs={args.epochs}", f"batch_size={args.batch_size}", f"num_workers={min(args.workers, 1)}",
        "data.mixture.replacement=true", f"data.mixture.num_samples={args.samples_per_epoch}",
        f"data.components.av1.weight={w_av1}",
        # the fixtures are single val scenes: they serve as train and val of their component
        "data.components.av2.train_split=val", f"data.components.av2.weight={w_av2}",
        "data.components.womd.train_split=val", f"data.components.womd.weight={w_womd}",
        f"+data.components.demo={{cache: {cache / 'demo'}, train_split: train, val_split: val, view_window: 50, "
        f"weight: {w_demo}}}",
    ]  # fmt: skip
    out = args.work_dir / "pretrain"
    pretraining = run_pipeline(pretrain=PretrainSpec(out, overrides)).pretrain
    assert pretraining is not None  # a pipeline of a pre-training alone always runs it
    final = pretraining.values

    columns = [f"val_{obj}/{src}" for obj in ("tcl", "trl") for src in SOURCES]
    curve = epoch_metrics(out, ["val_loss", *columns])
    print(f"\n{'epoch':>5} {'val_loss':>9} " + " ".join(f"{c:>15}" for c in columns))
    for entry in curve:
        cells = " ".join(f"{entry.get(c, float('nan')):>15.4f}" for c in columns)
        print(f"{entry['epoch']:>5} {entry.get('val_loss', float('nan')):>9.4f} {cells}")
    results = {
        "epochs": args.epochs,
        "samples_per_epoch": args.samples_per_epoch,
        "weights": dict(zip(SOURCES, args.weights, strict=True)),
        "overrides": overrides,
        "curve": curve,
        "final": {k: v for k, v in final.items() if isinstance(v, float)},
        "checkpoint": final["last_checkpoint"],
    }
    atomic_write_text(args.work_dir / "results.json", json.dumps(results, indent=2))
    print(f"wrote {args.work_dir / 'results.json'}")


if __name__ == "__main__":
    main()
