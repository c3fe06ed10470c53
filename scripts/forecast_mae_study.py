"""Forecast-MAE pre-train -> fine-tune study on a converted AV1 cache: scratch vs MAE vs TCL+TRL vs all three.

    python -m smartpretrain.demo                                   # makes demo/cache (AV1-format synthetic + maps)
    python scripts/forecast_mae_study.py --cache-root demo/cache --out outputs/fmae_study_demo
    python scripts/forecast_mae_study.py --cache-root outputs/av1_ssl_run/cache --out outputs/fmae_study_av1

Every arm fine-tunes the same Forecast-MAE (same seed, schedule and budget) from its own initialisation:
``scratch``; ``mae`` (Forecast-MAE's masked auto-encoding, online weights, as the reference loads them);
``tcl_trl`` (SmartPretrain, momentum weights, as the release); ``all`` (MAE + TCL + TRL, momentum weights).
Pre-training uses ``experiment=smartpretrain_forecast_mae_cpu_small`` on the train split without labels.
Each arm is evaluated on the val split (focal agents); the table and JSON go to ``--out``. Stages whose outputs
exist are reused, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from smartpretrain.data.cache import atomic_write_text
from smartpretrain.demo import compose_config, side_by_side

ARMS: dict[str, tuple[list[str], str]] = {
    "mae": (["ssl.objectives.mae.weight=1", "ssl.objectives.tcl.weight=0", "ssl.objectives.trl.weight=0"], "online"),
    "tcl_trl": ([], "momentum"),
    "all": (["ssl.objectives.mae.weight=1"], "momentum"),
}


def _reuse(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "final_metrics.json"
    return json.loads(path.read_text()) if path.exists() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-root", type=Path, required=True, help="holds av1/train and av1/val")
    parser.add_argument("--out", type=Path, default=Path("outputs/fmae_study"))
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", nargs="+", default=["scratch", *ARMS])
    args = parser.parse_args()
    for split in ("train", "val"):
        if not (args.cache_root / "av1" / split / "manifest.json").exists():
            raise SystemExit(f"{args.cache_root / 'av1' / split} is not a converted cache (run the conversion first)")
    from smartpretrain import finetune, pretrain
    from smartpretrain.evaluate import evaluate

    start = time.perf_counter()
    data = ["data=av1", f"cache_root={args.cache_root}", "num_workers=1", "trainer.log_every_n_steps=10"]
    results: dict[str, dict[str, float]] = {}
    timings: dict[str, float] = {}
    for arm in args.arms:
        t0 = time.perf_counter()
        extra: list[str] = []
        if arm != "scratch":
            overrides, branch = ARMS[arm]
            pre_dir = args.out / f"pretrain_{arm}"
            cfg = compose_config(
                "pretrain",
                ["experiment=smartpretrain_forecast_mae_cpu_small", *data, f"seed={args.seed}",
                 f"max_epochs={args.pretrain_epochs}", f"batch_size={args.batch_size}", *overrides],
            )  # fmt: skip
            pre = _reuse(pre_dir) or pretrain.run(cfg, pre_dir)
            extra = [f"pretrained_ckpt={pre['last_checkpoint']}", f"pretrained_branch={branch}"]
        ft_dir = args.out / f"finetune_{arm}"
        cfg = compose_config(
            "train",
            ["model=forecast_mae", *data, f"seed={args.seed}", f"max_epochs={args.finetune_epochs}",
             f"batch_size={args.batch_size}", f"lr={args.finetune_lr}", *extra],
        )  # fmt: skip
        _reuse(ft_dir) or finetune.run(cfg, ft_dir)
        eval_cfg = compose_config(
            "evaluate", ["model=forecast_mae", *data[:2], f"ckpt_path={ft_dir / 'checkpoints' / 'last.ckpt'}"]
        )
        results[arm] = evaluate(eval_cfg, args.out / f"evaluate_{arm}")["metrics"]
        timings[arm] = round(time.perf_counter() - t0, 1)
        print(f"{arm}: minFDE_6 {results[arm]['minFDE_6']:.4f} ({timings[arm]:.0f} s)", flush=True)

    table = side_by_side(results)
    scratch = results.get("scratch", {}).get("minFDE_6")
    changes = {
        arm: round((r["minFDE_6"] - scratch) / scratch * 100, 2)
        for arm, r in results.items()
        if scratch and arm != "scratch"
    }
    summary = {"args": {k: str(v) for k, v in vars(args).items()}, "metrics": results, "minFDE_6_change_pct": changes,
               "seconds": timings, "total_seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
    atomic_write_text(args.out / "results.json", json.dumps(summary, indent=2))
    atomic_write_text(args.out / "results.md", "```\n" + table + "\n```\n")
    print("\n" + table)
    print(f"minFDE_6 change vs scratch (%): {changes}; total {summary['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
