"""Pre-training data scaling on real Argoverse 1 (map-less): how does the fine-tuned accuracy grow with the number
of unlabelled pre-training scenes?

    bash scripts/study_scale.sh                     # the AV1 study of docs/results.md
    python scripts/study_scale.py --out outputs/study_scale --fractions 0.1 0.25 0.5 1.0 --budget steps

1. Converts ``../shared/data/av1`` {train, val} into ``--cache-root`` (skipped when already converted).
2. Pre-trains one backbone per pool fraction of the train scenes (``--fractions``; ``train_fraction`` of
   configs/pretrain.yaml, drawn with ``train_subset_seed`` = ``--pretrain-subset-seed`` by the same code as
   fine-tuning's labelled subset: a prefix of one seeded permutation, so the pools are **nested**, the 10 % pool
   lies inside the 25 % one and the curve measures more data, not other data) with one objective set
   (``--objective``, default TCL + TRL) under one budget (``--budget``):

   * ``steps`` (default): the same number of optimizer steps at every fraction, ``--pretrain-epochs`` epochs of the
     whole train split; a smaller pool is repeated (more epochs), its warm-up rescaled to the same steps, and it is
     validated about as often. Compute is fixed, so the curve does not confound data with compute;
   * ``epochs``: the same number of epochs at every fraction; compute grows with the pool (a curve of data and
     compute together).

3. Fine-tunes every arm, ``scratch`` (no pre-training: 0 scenes) included, with one fixed protocol: the same
   labelled subset (``--label-fraction`` of the train scenes, ``train_subset_seed=0``), epochs, learning rate,
   batch, validation cadence and seeds for every arm; evaluates the last checkpoint on all val scenes.
4. Writes ``results.json`` (every run, mean ± std per arm, pool sizes, pre-training plans, wall times, machine, the
   power-law fit), ``results.md`` (the table) and a PNG: fine-tuned minFDE_6 vs pre-training scenes (log x-axis),
   scratch as a horizontal band, and the fit ``L(n) = a · n^(−b) + c`` (scipy's ``curve_fit`` when installed, else
   a log-log least-squares fit with ``c = 0``; refused with fewer than 3 fractions).

Every stage whose outputs exist is reused, so a killed study resumes where it stopped (run folders are named by the
objective, pool fraction and pre-training epochs: a changed budget gets new folders; a changed fine-tuning
protocol needs a new ``--out``). ``--reuse-results`` takes the runs recorded in earlier ``results.json`` files.
The step budget assumes one training process (``trainer.devices=1``, the CPU and single-GPU presets).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from smartpretrain.config import compose_config
from smartpretrain.io.atomic import atomic_write_text
from smartpretrain.io.run_outputs import epoch_metrics, load_stage_result, machine_info
from smartpretrain.runs.comparison import ARM_LABELS, PRETRAIN_ARMS, STUDY_METRICS
from smartpretrain.runs.pipeline import ArmSpec, EvaluateSpec, FinetuneSpec, PretrainSpec, run_pipeline
from smartpretrain.runs.scaling import (
    BUDGETS,
    PoolPlan,
    describe_fit,
    fit_power_law,
    plan_pretraining,
    plot_scaling,
    pool_scenes,
    scaling_table,
    summarise_arms,
)
from smartpretrain.runs.studies import prepare_av1_cache, pretraining_timer, recorded_runs

REPO = Path(__file__).resolve().parents[1]
#: pre-training options the study sets from its plan (not through --pretrain-overrides)
PLANNED = ("max_epochs", "ssl.warmup_epochs", "train_fraction", "train_subset_seed", "seed", "batch_size",
           "trainer.check_val_every_n_epoch")  # fmt: skip
BUDGET_HELP = {
    "steps": "the same optimizer steps at every fraction (--pretrain-epochs epochs of the whole train split; "
    "smaller pools are repeated): compute fixed, data varies",
    "epochs": "the same epochs at every fraction: compute grows with the pool",
}


def _key(item: str) -> str:
    return item.split("=", 1)[0].lstrip("+~")


def _run_key(run: dict[str, Any]) -> tuple[str, int, float, int]:
    """What identifies a recorded run: arm, pre-training epochs (the plan), label fraction, seed."""
    return run["arm"], int(run.get("pretrain_epochs", 0)), float(run["fraction"]), int(run["seed"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "study_scale")
    parser.add_argument("--cache-root", type=Path, default=None, help="converted AV1 cache (default: <out>/cache)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0],
                        help="pre-training pool fractions of the train scenes")  # fmt: skip
    parser.add_argument("--objective", default="tcl_trl", choices=list(PRETRAIN_ARMS), help="SSL objective set")
    parser.add_argument("--budget", choices=BUDGETS, default="steps",
                        help="; ".join(f"{k}: {v}" for k, v in BUDGET_HELP.items()))  # fmt: skip
    parser.add_argument(
        "--pretrain-epochs",
        type=int,
        default=10,
        help="epochs per pool (epochs), or epochs of the whole split that set the steps (steps)",
    )
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--pretrain-subset-seed", type=int, default=0, help="seed of the nested pool draw")
    parser.add_argument("--label-fraction", type=float, default=0.1, help="labelled fraction every arm fine-tunes on")
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--val-every", type=int, default=2, help="fine-tuning epochs between validations")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds")
    parser.add_argument("--model", default="forecast_mae", help="model config (configs/model/)")
    parser.add_argument("--experiment", default="smartpretrain_forecast_mae_cpu_small", help="pre-training preset")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers (and conversion workers)")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the scaling curve (default: <out>/scaling.png)")
    parser.add_argument("--model-overrides", nargs="*", default=[], help="e.g. model.embed_dim=64 (all stages)")
    parser.add_argument("--pretrain-overrides", nargs="*", default=[], help="e.g. ssl.lr_peak=5e-4")
    parser.add_argument("--finetune-overrides", nargs="*", default=[], help="e.g. weight_decay=1e-3")
    parser.add_argument("--reuse-results", type=Path, nargs="*", default=[],
                        help="earlier results.json files of this study: their runs are not repeated")  # fmt: skip
    args = parser.parse_args()
    fractions = sorted({float(f) for f in args.fractions})
    if any(not 0.0 < f <= 1.0 for f in [*fractions, args.label_fraction]):
        parser.error("--fractions and --label-fraction must be in (0, 1]")
    planned = [item for item in args.pretrain_overrides if _key(item) in PLANNED]
    if planned:
        parser.error(f"--pretrain-overrides {planned}: the study sets {', '.join(PLANNED)} from its budget")

    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache_root or args.out / "cache"
    num_train = prepare_av1_cache(cache, args.workers)
    num_val = int(json.loads((cache / "av1" / "val" / "manifest.json").read_text())["num_scenes"])
    data = ["data=av1", f"cache_root={cache}", f"num_workers={args.workers}", "trainer.log_every_n_steps=10",
            f"batch_size={args.batch_size}", f"model={args.model}", *args.model_overrides]  # fmt: skip
    objective, branch = PRETRAIN_ARMS[args.objective]
    preset = [f"experiment={args.experiment}", *data, *objective, *args.pretrain_overrides]
    warmup = float(compose_config("pretrain", preset).ssl.warmup_epochs)
    try:
        plans = plan_pretraining(num_train, fractions, args.batch_size, args.pretrain_epochs, args.budget, warmup,
                                 args.pretrain_subset_seed)  # fmt: skip
    except ValueError as exc:
        raise SystemExit(f"study_scale: {exc}") from exc
    arm_plans: dict[str, PoolPlan] = {f"p{p.fraction:g}": p for p in plans}
    arms = ["scratch", *arm_plans]
    label = float(args.label_fraction)

    def pretraining(plan: PoolPlan) -> PretrainSpec:
        run_dir = args.out / f"pretrain_{args.objective}_p{plan.fraction:g}_e{plan.epochs}_s{args.pretrain_seed}"
        return PretrainSpec(
            run_dir,
            [*preset, f"seed={args.pretrain_seed}", f"max_epochs={plan.epochs}",
             f"ssl.warmup_epochs={plan.warmup_epochs}", f"train_subset_seed={args.pretrain_subset_seed}",
             f"++trainer.check_val_every_n_epoch={plan.val_every}"],
            train_fraction=plan.fraction,
        )  # fmt: skip

    recorded, timings = recorded_runs(args.reuse_results, _run_key)
    runs: list[dict[str, Any]] = []
    pretrain_records: dict[str, dict[str, Any]] = {}
    for arm in arms:  # scratch, then the pools from the smallest: a study stopped early has the curve's left end
        plan = arm_plans.get(arm)
        pretrain = None if plan is None else pretraining(plan)
        if pretrain is not None:
            pretrain_records[arm] = {"run_dir": pretrain.run_dir.name, **arm_plans[arm].as_dict()}
        for seed in args.seeds:
            where = f"{arm} seed {seed}"
            record = {"arm": arm, "fraction": label, "seed": seed, "pretrain_fraction": 0.0 if plan is None else
                      plan.fraction, "pretrain_scenes": 0 if plan is None else plan.scenes,
                      "pretrain_epochs": 0 if plan is None else plan.epochs,
                      "pretrain_steps": 0 if plan is None else plan.steps}  # fmt: skip
            if _run_key(record) in recorded:
                runs.append(recorded[_run_key(record)])
                print(f"{where}: recorded in --reuse-results", flush=True)
                continue
            name = "scratch" if plan is None else f"{args.objective}_p{plan.fraction:g}_e{plan.epochs}"
            run_dir = args.out / f"finetune_l{label:g}_{name}_s{seed}"
            finetune = FinetuneSpec(
                run_dir,
                [*data, f"seed={seed}", f"max_epochs={args.finetune_epochs}", f"lr={args.finetune_lr}",
                 f"train_fraction={label}", "train_subset_seed=0",
                 f"++trainer.check_val_every_n_epoch={args.val_every}",
                 *([] if plan is None else [f"pretrained_branch={branch}"]),
                 *args.finetune_overrides],
                from_pretrained=plan is not None,
            )  # fmt: skip
            evaluation = EvaluateSpec(run_dir / "evaluate", [*data[:2], f"model={args.model}", *args.model_overrides])
            label_text = arm if plan is None else f"{arm} ({plan.scenes} scenes, {plan.steps} steps)"
            done = run_pipeline(
                [ArmSpec(arm, evaluation, finetune)], pretrain=pretrain, on_stage=pretraining_timer(timings, label_text)
            ).arms[arm]
            if not (run_dir / "eval_metrics.json").exists():
                atomic_write_text(run_dir / "eval_metrics.json", json.dumps(done.metrics, indent=2))
            if not done.evaluation.reused:
                timings[run_dir.name] = round(done.seconds, 1)
            curve = epoch_metrics(run_dir, STUDY_METRICS, prefix="val_", trigger="minFDE_6")
            runs.append({**record, "metrics": done.metrics, "curve": curve})
            print(f"{where}: minFDE_6 {done.metrics['minFDE_6']:.4f}", flush=True)
        if pretrain is not None:
            finished = load_stage_result(pretrain.run_dir / "final_metrics.json") or {}
            if finished.get("train_scenes", arm_plans[arm].scenes) != arm_plans[arm].scenes:
                raise SystemExit(f"{pretrain.run_dir}: pre-trained on {finished['train_scenes']} scenes, the plan "
                                 f"has {arm_plans[arm].scenes} (another cache?)")  # fmt: skip
            extra = {k: finished[k] for k in ("val_loss", "train_scenes") if k in finished}
            pretrain_records[arm].update({**extra, "seconds": timings.get(pretrain.run_dir.name)})

    summary = summarise_arms(runs, arms, label, arm_plans)
    points = [(summary[a]["pretrain_scenes"], summary[a]["minFDE_6"]["mean"]) for a in arm_plans if a in summary]
    fit = fit_power_law([n for n, _ in points], [v for _, v in points])
    table = scaling_table(summary, fit, num_train)
    labelled = len(pool_scenes(num_train, label, 0))
    previous = load_stage_result(args.out / "results.json") or {}
    timings = {**previous.get("seconds", {}), **timings}
    result = {
        "args": json.loads(json.dumps(vars(args), default=str)),  # paths as strings
        "protocol": {
            "objective": args.objective,
            "objective_label": ARM_LABELS.get(args.objective, args.objective),
            "budget": args.budget,
            "budget_meaning": BUDGET_HELP[args.budget],
            "pretrain_epochs": args.pretrain_epochs,
            "step_budget": (num_train // args.batch_size) * args.pretrain_epochs if args.budget == "steps" else None,
            "pretrain_subset_seed": args.pretrain_subset_seed,
            "pools_nested": True,  # prefixes of one seeded permutation (smartpretrain.runs.scaling.pool_scenes)
            "label_fraction": label,
            "labelled_scenes": labelled,
            "finetune_epochs": args.finetune_epochs,
            "finetune_lr": args.finetune_lr,
            "finetune_val_every": args.val_every,
            "batch_size": args.batch_size,
            "seeds": args.seeds,
            "evaluation": f"last checkpoint, all {num_val} val scenes (focal agents)",
        },
        "num_train_scenes": num_train,
        "num_val_scenes": num_val,
        "machine": machine_info(),
        "pretraining": pretrain_records,
        "summary": summary,
        "fit": fit,
        "runs": runs,
        "seconds": timings,
        "seconds_this_invocation": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(args.out / "results.json", json.dumps(result, indent=2))
    atomic_write_text(args.out / "results.md", table + "\n")
    title = (f"AV1 val: {ARM_LABELS.get(args.objective, args.objective)} pre-training, {args.budget} budget\n"
             f"fine-tuned on {label * 100:g} % of the train labels ({labelled} scenes)")  # fmt: skip
    plot_scaling(summary, fit, args.plot or args.out / "scaling.png", title)
    print("\n" + table)
    print(f"fit: {describe_fit(fit)}")
    print(f"wall time of this invocation: {result['seconds_this_invocation']:.0f} s (per stage: results.json)")


if __name__ == "__main__":
    main()
