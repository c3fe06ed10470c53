"""SmartPretrain on real AV1 (map-less), CPU: pre-train, report the val SSL loss curve, transfer the weights.

    python scripts/av1_ssl_run.py --epochs 5 --work-dir outputs/av1_ssl_run [--finetune-epochs 6] ssl.lr_peak=5e-4

(the figures in docs/results.md; any further Hydra overrides go after the options)

Converts ../shared/data/av1 {train, val} (1956 / 579 scenes), pre-trains `qcnet_small` with the small CPU recipe
(`experiment=smartpretrain_cpu_small`, TCL + TRL, 20-step views) through `train_ssl.sh`'s code path, prints the
per-epoch validation SSL loss (TCL, TRL, total) and whether it fell at every epoch, then loads the last checkpoint's
momentum branch into a fine-tuning `qcnet_small` and prints the transfer report. With `--finetune-epochs N` it also
fine-tunes from the pre-trained weights and from scratch (same seed and schedule) and prints val metrics of both.
Everything is written to `results.json` in the work dir.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path
from typing import Any

from smartpretrain.config import compose_config
from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av1 import Av1Converter
from smartpretrain.io.atomic import atomic_write_text
from smartpretrain.io.run_outputs import epoch_metrics
from smartpretrain.runs.comparison import side_by_side
from smartpretrain.runs.pipeline import (
    ArmSpec,
    EvaluateSpec,
    FinetuneSpec,
    PretrainSpec,
    Stage,
    StageEvent,
    run_pipeline,
)
from smartpretrain.runs.trainer import build_backbone

REPO = Path(__file__).resolve().parents[1]
AV1 = REPO.parent / "shared" / "data" / "av1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=0)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--work-dir", type=Path, default=REPO / "outputs" / "av1_ssl_run")
    parser.add_argument("--cache-dir", type=Path, default=None, help="converted cache (default: <work-dir>/cache)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for pre-training, e.g. ssl.lr_peak=1e-3")
    args = parser.parse_args()
    if not AV1.exists():
        raise SystemExit(f"{AV1} not found: this run needs ../shared beside the repository")
    cache = args.cache_dir or args.work_dir / "cache"
    for split in ("train", "val"):
        convert_split(Av1Converter(AV1, split), cache / "av1" / split, ConversionSettings(num_workers=args.workers))
    common = ["data=av1", f"cache_root={cache}", f"num_workers={min(args.workers, 1)}"]

    pre_dir = args.work_dir / "pretrain"
    pretrain = PretrainSpec(
        pre_dir,
        ["experiment=smartpretrain_cpu_small", *common, f"max_epochs={args.epochs}", f"batch_size={args.batch_size}",
         *args.overrides],
    )  # fmt: skip
    finetune = [*common, "model=qcnet_small", f"max_epochs={args.finetune_epochs}", f"batch_size={args.batch_size}",
                f"lr={args.finetune_lr}"]  # fmt: skip
    arms = [
        ArmSpec(
            name,
            EvaluateSpec(args.work_dir / f"eval_{name}", [*common, "model=qcnet_small"]),
            FinetuneSpec(args.work_dir / f"finetune_{name}", finetune, from_pretrained=name == "pretrained"),
        )
        for name in (("pretrained", "scratch") if args.finetune_epochs else ())
    ]
    results: dict[str, Any] = {"epochs": args.epochs, "batch_size": args.batch_size, "overrides": args.overrides}

    def report_pretraining(event: StageEvent) -> None:
        """The val SSL loss curve and the transfer report, as soon as the pre-training is there."""
        if event.stage is not Stage.PRETRAIN or event.result is None:
            return
        curve = epoch_metrics(pre_dir, ("val_loss", "val_tcl", "val_trl"))
        falling = all(b["val_loss"] < a["val_loss"] for a, b in itertools.pairwise(curve))
        print(f"\n{'epoch':>5}{'val_loss':>12}{'val_tcl':>12}{'val_trl':>12}")
        for row in curve:
            print(f"{row['epoch']:>5}{row['val_loss']:>12.4f}{row.get('val_tcl', math.nan):>12.4f}"
                  f"{row.get('val_trl', math.nan):>12.4f}")  # fmt: skip
        print(f"val SSL loss fell at every epoch: {falling}")

        ckpt = event.result.last_checkpoint
        ft_cfg = compose_config("train", [*common, "model=qcnet_small", f"pretrained_ckpt={ckpt}"])
        report_dir = args.work_dir / "transfer"
        build_backbone(ft_cfg, report_dir)
        report = json.loads((report_dir / "transfer_report.json").read_text())
        encoder_missing = [k for k in report["missing"] if k.startswith("encoder.")]
        print(f"transfer: {report['strict_loaded']} encoder keys loaded, {len(encoder_missing)} encoder keys missing")
        results.update({
            "curve": curve,
            "val_loss_fell_every_epoch": falling,
            "checkpoint": ckpt,
            "transfer": {
                "source_prefix": report["source_prefix"],
                "encoder_keys_loaded": report["strict_loaded"],
                "encoder_keys_missing": len(encoder_missing),
                **{k: len(report[k]) for k in ("loaded", "missing", "unexpected", "reshaped", "expanded", "dropped")},
            },
        })  # fmt: skip

    done = run_pipeline(arms, pretrain=pretrain, on_stage=report_pretraining)
    if done.pretrain is None:
        raise SystemExit(f"{pre_dir}: no pre-training result to report (the fine-tunes are done: delete them to rerun)")
    if arms:
        metrics = done.metrics()
        print(side_by_side(metrics))
        results["finetune"] = {"epochs": args.finetune_epochs, "lr": args.finetune_lr, "metrics": metrics}
    atomic_write_text(args.work_dir / "results.json", json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
