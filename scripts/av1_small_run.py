"""A short CPU run on real AV1 (map-less): the small QCNet config vs the constant-velocity baseline on val.

    python scripts/av1_small_run.py --epochs 6 --work-dir outputs/av1_small_run

Converts ../shared/data/av1 {train, val} (1956 / 579 scenes), evaluates the constant-velocity baseline, trains
`model=qcnet_small` with `train.sh`'s code path, evaluates its best checkpoint (one pipeline), and prints + writes the
side-by-side val metrics (focal agent, K = 6 and K = 1) to `results.json` in the work dir.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av1 import Av1Converter
from smartpretrain.io.atomic import atomic_write_text
from smartpretrain.runs.evaluation import format_table
from smartpretrain.runs.pipeline import ArmSpec, EvaluateSpec, FinetuneSpec, Weights, run_pipeline

REPO = Path(__file__).resolve().parents[1]
AV1 = REPO.parent / "shared" / "data" / "av1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", type=Path, default=REPO / "outputs" / "av1_small_run")
    args = parser.parse_args()
    if not AV1.exists():
        raise SystemExit(f"{AV1} not found: this run needs ../shared beside the repository")
    cache = args.work_dir / "cache"
    for split in ("train", "val"):
        convert_split(Av1Converter(AV1, split), cache / "av1" / split, ConversionSettings(num_workers=args.workers))
    common = ["data=av1", f"cache_root={cache}", f"num_workers={args.workers}"]

    baseline = ArmSpec(
        "constant_velocity",
        EvaluateSpec(args.work_dir / "eval_constant_velocity", [*common, "model=constant_velocity", "ckpt_path=null",
                                                                  "mode=val"]),
    )  # fmt: skip
    qcnet = ArmSpec(
        "qcnet_small",
        EvaluateSpec(args.work_dir / "eval_qcnet_small", [*common, "model=qcnet_small", "mode=val", "num_plots=4"],
                     weights=Weights.BEST),
        FinetuneSpec(args.work_dir / "train_qcnet_small", [*common, "model=qcnet_small", f"max_epochs={args.epochs}",
                                                             f"batch_size={args.batch_size}", f"lr={args.lr}"]),
    )  # fmt: skip
    done = run_pipeline([baseline, qcnet])
    cv, qc = done.arms["constant_velocity"].metrics, done.arms["qcnet_small"].metrics
    keys = sorted({k for m in (cv, qc) for k in m if "/" not in k})
    print(f"\n{'metric':<16}{'const. velocity':>16}{'QCNet small':>14}   (CV has one mode: its K=6 = its K=1)")
    for k in keys:
        cv_value = cv.get(k, cv.get(k.replace("_6", "_1")))
        print(f"{k:<16}{cv_value:>16.4f}{qc[k]:>14.4f}")
    results = {"epochs": args.epochs, "checkpoint": done.arms["qcnet_small"].checkpoint, "constant_velocity": cv,
               "qcnet_small": qc}  # fmt: skip
    atomic_write_text(args.work_dir / "results.json", json.dumps(results, indent=2))
    print(format_table(qc))


if __name__ == "__main__":
    main()
