"""Label-efficiency study on real Argoverse 1 (map-less): does self-supervised pre-training help fine-tuning?

    bash scripts/study_av1.sh                       # the whole table of docs/results.md (about 2 h on 2 CPU cores)
    python scripts/study_av1.py --out outputs/study_av1 --seeds 0 1 2 --fractions 0.1 1.0

1. Converts ``../shared/data/av1`` {train, val} into ``--cache-root`` (skipped when already converted).
2. Pre-trains one backbone per objective arm on *all* train scenes without labels (``train_ssl.sh``'s code path):
   ``tcl`` (TCL only), ``trl`` (TRL only), ``tcl_trl`` (SmartPretrain), ``mae`` (Forecast-MAE's masked
   auto-encoding). SmartPretrain arms transfer the momentum branch (the release), MAE the online weights (the
   reference has no momentum branch).
3. Fine-tunes every arm, ``scratch`` included, on each label fraction of the train scenes (a fixed random subset,
   the same for every arm and seed: ``train_fraction`` / ``train_subset_seed``) with each seed, with the same
   budget per fraction (epochs, batch, lr schedule) for every arm, and evaluates the *last* checkpoint on all val
   scenes (focal agents): minADE_6, minFDE_6, MR_6, brier-minFDE_6 (no checkpoint picked on val).
4. Writes ``results.json`` (every run, mean ± std per arm and fraction, change of the mean minFDE_6 vs scratch,
   val curves, wall times), ``results.md`` (the table) and a PNG of the fine-tune val curves per arm.

Every stage whose outputs exist is reused, so a killed study resumes where it stopped; ``--reuse-results`` also
takes the runs recorded in earlier ``results.json`` files (a study split over machines or sessions whose run
folders are gone: each (arm, fraction, seed) found there is not run again). By default one
pre-training per arm (``--pretrain-seed``) feeds the fine-tunes of every seed: the seed spread is the fine-tuning
spread; ``--pretrain-per-seed`` also repeats pre-training per seed (4x the pre-training time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from smartpretrain.io.atomic import atomic_output, atomic_write_text
from smartpretrain.io.run_outputs import epoch_metrics, load_stage_result, machine_info
from smartpretrain.runs.comparison import (
    ARM_LABELS,
    PRETRAIN_ARMS,
    STUDY_METRICS,
    markdown_table,
    paired_table,
    parse_epochs,
    summarise,
)
from smartpretrain.runs.pipeline import ArmSpec, EvaluateSpec, FinetuneSpec, PretrainSpec, run_pipeline
from smartpretrain.runs.studies import prepare_av1_cache, pretraining_timer, recorded_runs

REPO = Path(__file__).resolve().parents[1]


def plot_curves(runs: list[dict[str, Any]], arms: list[str], fractions: list[float], path: Path) -> None:
    """Val minFDE_6 per fine-tuning epoch, mean over seeds (band: min..max), one panel per label fraction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(fractions), figsize=(5.5 * len(fractions), 4.2), squeeze=False)
    for ax, fraction in zip(axes[0], fractions, strict=True):
        for arm in arms:
            curves = [r["curve"] for r in runs if r["arm"] == arm and r["fraction"] == fraction and r["curve"]]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            epochs = [c["epoch"] + 1 for c in curves[0][:length]]
            values = [[c[i]["minFDE_6"] for c in curves] for i in range(length)]
            mean = [statistics.fmean(v) for v in values]
            (line,) = ax.plot(epochs, mean, marker="o", markersize=3, label=ARM_LABELS.get(arm, arm))
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=line.get_color(),
                            alpha=0.15)  # fmt: skip
        ax.set_title(f"AV1 val, fine-tuned on {float(fraction) * 100:g} % of the train labels")
        ax.set_xlabel("fine-tuning epoch")
        ax.set_ylabel("val minFDE$_6$ (m)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "study_av1")
    parser.add_argument("--cache-root", type=Path, default=None, help="converted AV1 cache (default: <out>/cache)")
    parser.add_argument("--arms", nargs="+", default=["scratch", "tcl", "trl", "tcl_trl", "mae"],
                        choices=["scratch", *PRETRAIN_ARMS])  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--finetune-epochs", nargs="+", default=["0.1=20", "1.0=4"], help="fraction=epochs")
    parser.add_argument("--val-every", nargs="+", default=["0.1=2", "1.0=1"], help="fraction=epochs between vals")
    parser.add_argument("--pretrain-epochs", type=int, default=6)
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--pretrain-per-seed", action="store_true", help="pre-train once per seed and arm")
    parser.add_argument("--model", default="forecast_mae", help="model config (configs/model/)")
    parser.add_argument("--experiment", default="smartpretrain_forecast_mae_cpu_small", help="pre-training preset")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (and conversion workers)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the val curves (default: <out>/curves.png)")
    parser.add_argument("--model-overrides", nargs="*", default=[], help="e.g. model.embed_dim=64 (all stages)")
    parser.add_argument("--pretrain-overrides", nargs="*", default=[], help="e.g. ssl.lr_peak=5e-4 ssl.tau=0.1")
    parser.add_argument("--finetune-overrides", nargs="*", default=[], help="e.g. trainer.check_val_every_n_epoch=2")
    parser.add_argument(
        "--paired",
        nargs="*",
        default=[],
        metavar="ARM:REFERENCE",
        help="extra per-seed comparisons beside every arm vs scratch, e.g. tcl_trl_control:tcl_trl",
    )
    parser.add_argument("--reuse-results", type=Path, nargs="*", default=[],
                        help="earlier results.json files of this study: their runs are not repeated")  # fmt: skip
    args = parser.parse_args()
    for item in args.paired:
        arm, _, reference = item.partition(":")
        if arm not in args.arms or reference not in args.arms:
            parser.error(f"--paired {item}: both sides must be among --arms {args.arms}")
    budget = parse_epochs(args.finetune_epochs, args.fractions)
    val_every = parse_epochs(args.val_every, args.fractions, "--val-every")

    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache_root or args.out / "cache"
    num_train = prepare_av1_cache(cache, args.workers)
    data = ["data=av1", f"cache_root={cache}", f"num_workers={args.workers}", "trainer.log_every_n_steps=10",
            f"batch_size={args.batch_size}", f"model={args.model}", *args.model_overrides]  # fmt: skip

    def pretraining(arm: str, pre_seed: int) -> PretrainSpec:
        overrides, _ = PRETRAIN_ARMS[arm]
        return PretrainSpec(
            args.out / f"pretrain_{arm}_s{pre_seed}",
            [f"experiment={args.experiment}", *data, f"seed={pre_seed}", f"max_epochs={args.pretrain_epochs}",
             *overrides, *args.pretrain_overrides],
        )  # fmt: skip

    recorded, timings = recorded_runs(
        args.reuse_results, lambda run: (run["arm"], float(run["fraction"]), int(run["seed"]))
    )
    runs: list[dict[str, Any]] = []
    # arm by arm: each pre-training serves all its fine-tunes before the next arm's runs (a study stopped between
    # sessions loses at most one arm's pre-training)
    for arm in args.arms:
        for fraction in args.fractions:
            for seed in args.seeds:
                if (arm, float(fraction), seed) in recorded:
                    runs.append(recorded[(arm, float(fraction), seed)])
                    print(f"{fraction:g} {arm} seed {seed}: recorded in --reuse-results", flush=True)
                    continue
                pre_seed = seed if args.pretrain_per_seed else args.pretrain_seed
                run_dir = args.out / f"finetune_f{fraction:g}_{arm}_s{seed}"
                branch = [] if arm == "scratch" else [f"pretrained_branch={PRETRAIN_ARMS[arm][1]}"]
                finetune = FinetuneSpec(
                    run_dir,
                    [*data, f"seed={seed}", f"max_epochs={budget[fraction]}", f"lr={args.finetune_lr}",
                     f"train_fraction={fraction}", "train_subset_seed=0",
                     f"++trainer.check_val_every_n_epoch={val_every[fraction]}", *branch, *args.finetune_overrides],
                    from_pretrained=arm != "scratch",
                )  # fmt: skip
                evaluation = EvaluateSpec(
                    run_dir / "evaluate", [*data[:2], f"model={args.model}", *args.model_overrides]
                )
                done = run_pipeline(
                    [ArmSpec(arm, evaluation, finetune)],
                    pretrain=None if arm == "scratch" else pretraining(arm, pre_seed),
                    on_stage=pretraining_timer(timings, f"{arm} (seed {pre_seed})"),
                ).arms[arm]
                metrics = done.metrics
                if not (run_dir / "eval_metrics.json").exists():
                    atomic_write_text(run_dir / "eval_metrics.json", json.dumps(metrics, indent=2))
                if not done.evaluation.reused:
                    timings[run_dir.name] = round(done.seconds, 1)
                curve = epoch_metrics(run_dir, STUDY_METRICS, prefix="val_", trigger="minFDE_6")
                runs.append({"arm": arm, "fraction": fraction, "seed": seed, "metrics": metrics, "curve": curve})
                print(f"{fraction:g} {arm} seed {seed}: minFDE_6 {metrics['minFDE_6']:.4f}", flush=True)

    summary = summarise(runs, args.arms, args.fractions)
    pairs = [(arm, "scratch") for arm in args.arms if arm != "scratch"]
    pairs += [(item.partition(":")[0], item.partition(":")[2]) for item in args.paired]
    table = markdown_table(summary, num_train) + "\n\n" + paired_table(runs, pairs, args.fractions)
    previous = load_stage_result(args.out / "results.json") or {}
    timings = {**previous.get("seconds", {}), **timings}
    result = {
        "args": json.loads(json.dumps(vars(args), default=str)),  # paths as strings
        "num_train_scenes": num_train,
        "machine": machine_info(),
        "summary": summary,
        "runs": runs,
        "seconds": timings,
        "seconds_this_invocation": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(args.out / "results.json", json.dumps(result, indent=2))
    atomic_write_text(args.out / "results.md", table + "\n")
    plot_curves(runs, args.arms, args.fractions, args.plot or args.out / "curves.png")
    print("\n" + table)
    print(f"wall time of this invocation: {result['seconds_this_invocation']:.0f} s (per stage: results.json)")


if __name__ == "__main__":
    main()
