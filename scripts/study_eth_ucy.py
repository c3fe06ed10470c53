"""ETH/UCY study: constant velocity, a backbone from scratch, and pre-trained (on ETH/UCY alone, and on a vehicle +
pedestrian mixture) then fine-tuned, on each leave-one-scene-out fold, evaluated on the held-out scene.

    python scripts/study_eth_ucy.py                                   # every fold, defaults below
    python scripts/study_eth_ucy.py --folds zara1 --seeds 0 1 2       # one fold, three fine-tuning seeds

Protocol (docs/results.md "ETH/UCY"):

1. Converts ``../shared/data/eth_ucy`` into ``<out>/cache``: per fold ``{fold}_train`` / ``{fold}_val`` with windows
   every ``--train-stride`` slots, ``{fold}_test`` with a window at every slot (the field's protocol); for the
   mixture arm also real AV1 train (``../shared/data/av1``, map-less).
2. Per fold, per pre-trained arm, one pre-training (TCL + TRL, ``experiment=smartpretrain_cpu_small``, seed
   ``--pretrain-seed``): ``ssl_eth`` on the fold's training windows, ``ssl_mix`` on those plus AV1 train
   (``data=mix_av1_eth_ucy``, weights by scene count).
3. Fine-tunes every learned arm (``scratch``, ``ssl_eth``, ``ssl_mix``) on the fold's training windows with the same
   budget and each ``--seeds`` seed, then evaluates the last checkpoint on ``{fold}_test``, scoring every pedestrian
   annotated in all 20 slots of a window (``eval_scope=scored``): ADE / FDE best-of-20 (min over the 20 modes,
   taken independently, as in Social-GAN) and best-of-1 (the most probable mode). ``cv`` (constant velocity over the
   last 0.4 s) needs no training.
4. Writes ``results.json`` (every run, per fold and arm mean ± std over seeds, the average over the five folds,
   wall times, machine) and ``results.md``.

Every stage whose outputs exist is reused, so a killed study resumes where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from smartpretrain.config import compose_config
from smartpretrain.data.formats import eth_ucy as fmt
from smartpretrain.io.atomic import atomic_write_text
from smartpretrain.io.run_outputs import machine_info
from smartpretrain.runs import conversion
from smartpretrain.runs.console import quiet_libraries
from smartpretrain.runs.pipeline import ArmSpec, EvaluateSpec, FinetuneSpec, PretrainSpec, StageEvent, run_pipeline

REPO = Path(__file__).resolve().parents[1]
ETH_UCY_RAW = REPO.parent / "shared" / "data" / "eth_ucy"
AV1_RAW = REPO.parent / "shared" / "data" / "av1"
ARMS = ("cv", "scratch", "ssl_eth", "ssl_mix")
ARM_LABELS = {
    "cv": "constant velocity",
    "scratch": "scratch",
    "ssl_eth": "TCL+TRL on ETH/UCY → fine-tuned",
    "ssl_mix": "TCL+TRL on AV1 + ETH/UCY → fine-tuned",
}
#: the reported metrics: (key in the evaluation's metrics, column name)
METRICS = (("eth_ucy/ADE_20", "ADE_20"), ("eth_ucy/FDE_20", "FDE_20"), ("eth_ucy/ADE_1", "ADE_1"),
           ("eth_ucy/FDE_1", "FDE_1"))  # fmt: skip


def convert(cache: Path, split: str, data: str, raw: Path, extra: list[str]) -> int:
    """Convert one split into ``cache`` (reused when complete); returns its scene count."""
    cfg = compose_config(
        "convert",
        [f"data={data}", f"data.raw_root={raw}", f"data.split={split}", f"cache_root={cache}", "progress=false",
         f"hydra.run.dir={cache}/.runs", *extra],
    )  # fmt: skip
    return int(conversion.run(cfg)["num_scenes"])


def stat(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values)}  # fmt: skip


def main() -> None:
    quiet_libraries()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "study_eth_ucy")
    parser.add_argument("--folds", nargs="+", default=list(fmt.FOLDS), choices=list(fmt.FOLDS))
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--train-stride", type=int, default=4, help="slots between training windows")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--finetune-epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="fine-tuning learning rate")
    parser.add_argument("--num-modes", type=int, default=20)
    parser.add_argument("--max-agents", type=int, default=24, help="training: agents kept per scene (scored first)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--model", default="qcnet_small")
    parser.add_argument("--model-overrides", nargs="*", default=[])
    parser.add_argument("--trainer-overrides", nargs="*", default=[], help="pre-training and fine-tuning, e.g. "
                        "+trainer.limit_train_batches=2 for a smoke run")  # fmt: skip
    args = parser.parse_args()
    if not ETH_UCY_RAW.is_dir():
        parser.error(f"{ETH_UCY_RAW}: the ETH/UCY recordings are not there (../shared beside the checkout)")
    if "ssl_mix" in args.arms and not AV1_RAW.is_dir():
        parser.error(f"{AV1_RAW}: the AV1 data of the ssl_mix arm is not there")

    start = time.perf_counter()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    stride = [f"data.window_stride={args.train_stride}"]
    sizes: dict[str, int] = {}
    for fold in args.folds:
        for part in ("train", "val"):
            sizes[f"{fold}_{part}"] = convert(cache, f"{fold}_{part}", "eth_ucy", ETH_UCY_RAW, stride)
        sizes[f"{fold}_test"] = convert(cache, f"{fold}_test", "eth_ucy", ETH_UCY_RAW, [])
    if "ssl_mix" in args.arms:
        sizes["av1_train"] = convert(cache, "train", "av1", AV1_RAW, [])
        sizes["av1_val"] = convert(cache, "val", "av1", AV1_RAW, [])
    print(f"cache: {json.dumps(sizes)}", flush=True)

    model = [f"model={args.model}", f"model.num_modes={args.num_modes}", *args.model_overrides]
    loader = [f"cache_root={cache}", f"num_workers={args.workers}", f"batch_size={args.batch_size}"]
    common = [*loader, *model]
    quiet = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", *args.trainer_overrides]

    console = sys.stdout  # progress lines stay on the console while the stages' own output goes to the log

    def on_stage(event: StageEvent) -> None:
        if event.result is None:
            line = f"  {event.stage.value:<9} {event.arm or '':<10} {event.run_dir.relative_to(out)}"
            print(line, file=console, flush=True)

    runs: list[dict[str, Any]] = []
    log = out / "logs" / "stages.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"stage output goes to {log}", flush=True)
    with open(log, "a") as stream, contextlib.redirect_stdout(stream):
        for fold in args.folds:
            study_fold(args, fold, out, sizes, common, loader, quiet, runs, on_stage)

    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for arm in args.arms:
        for fold in args.folds:
            chosen = [r for r in runs if r["arm"] == arm and r["fold"] == fold]
            if chosen:
                # a one-mode model (cv) has no 20 modes: its best-of-20 is its one forecast
                table.setdefault(arm, {})[fold] = {
                    col: stat([r["metrics"].get(key, r["metrics"].get(key.replace("_20", "_1"))) for r in chosen])
                    for key, col in METRICS
                }
        if arm in table and len(table[arm]) == len(args.folds):
            table[arm]["average"] = {col: stat([table[arm][f][col]["mean"] for f in args.folds]) for _, col in METRICS}
    record = {
        "command": "python scripts/study_eth_ucy.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k != "out"),
        "protocol": {k: (v if not isinstance(v, Path) else str(v)) for k, v in vars(args).items()},
        "cache_sizes": sizes,
        "runs": runs,
        "table": table,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": machine_info(),
    }  # fmt: skip
    atomic_write_text(out / "results.json", json.dumps(record, indent=1))
    atomic_write_text(out / "results.md", markdown(table, args.folds))
    print(markdown(table, args.folds), flush=True)
    print(f"wrote {out / 'results.json'} and results.md in {record['wall_seconds'] / 60:.1f} min", flush=True)


def study_fold(args: argparse.Namespace, fold: str, out: Path, sizes: dict[str, int], common: list[str],
               loader: list[str], quiet: list[str], runs: list[dict[str, Any]], on_stage: Any) -> None:  # fmt: skip
    """Every arm of one fold (the runs are appended to ``runs``)."""
    test = ["data=eth_ucy", f"split={fold}_test", "eval_scope=scored", *common]
    train = ["data=eth_ucy", f"train_split={fold}_train", f"val_split={fold}_val", "eval_scope=scored",
             f"max_epochs={args.finetune_epochs}", f"lr={args.lr}",
             f"batching.max_agents_per_scene={args.max_agents}", *common, *quiet]  # fmt: skip
    print(f"[{fold}] {sizes[f'{fold}_train']} train / {sizes[f'{fold}_test']} test windows", file=sys.__stdout__,
          flush=True)  # fmt: skip
    if "cv" in args.arms:
        cv_test = ["data=eth_ucy", f"split={fold}_test", "eval_scope=scored", *loader, "model=constant_velocity"]
        arm = ArmSpec("cv", EvaluateSpec(out / fold / "eval_cv", [*cv_test, "ckpt_path=null"]))
        result = run_pipeline([arm], on_stage=on_stage).arms["cv"]
        runs.append({"fold": fold, "arm": "cv", "seed": None, "metrics": result.metrics, "seconds": 0.0})
    pretrainings = {
        "scratch": None,
        "ssl_eth": ["data=eth_ucy", f"train_split={fold}_train", f"val_split={fold}_val"],
        "ssl_mix": ["data=mix_av1_eth_ucy", f"data.fold={fold}"],
    }
    for name in [a for a in ("scratch", "ssl_eth", "ssl_mix") if a in args.arms]:
        data_overrides = pretrainings[name]
        pretrain = None
        if data_overrides is not None:
            pretrain = PretrainSpec(
                out / fold / f"pretrain_{name}_s{args.pretrain_seed}",
                ["experiment=smartpretrain_cpu_small", *data_overrides, *common, f"seed={args.pretrain_seed}",
                 f"max_epochs={args.pretrain_epochs}", *quiet],
            )  # fmt: skip
        arms = [
            ArmSpec(
                f"{name}_s{seed}",
                EvaluateSpec(out / fold / f"eval_{name}_s{seed}", test),
                FinetuneSpec(
                    out / fold / f"finetune_{name}_s{seed}",
                    [*train, f"seed={seed}"],
                    from_pretrained=pretrain is not None,
                ),
            )
            for seed in args.seeds
        ]
        result = run_pipeline(arms, pretrain=pretrain, on_stage=on_stage)
        for seed in args.seeds:
            r = result.arms[f"{name}_s{seed}"]
            runs.append({"fold": fold, "arm": name, "seed": seed, "metrics": r.metrics, "seconds": r.seconds})
        if result.pretrain is not None and result.pretrain.seconds:
            runs.append({"fold": fold, "arm": f"pretrain_{name}", "seed": args.pretrain_seed, "metrics": {},
                         "seconds": result.pretrain.seconds})  # fmt: skip


def markdown(table: dict[str, Any], folds: list[str]) -> str:
    """ADE_20 / FDE_20 (and best-of-1) per fold and arm: mean ± std over seeds where there are several; the
    average's ± is the spread over the folds."""
    columns = [*folds, "average"] if all("average" in v for v in table.values()) else folds

    def cell(v: dict[str, dict[str, float]], a: str, b: str) -> str:
        def one(x: dict[str, float]) -> str:
            return f"{x['mean']:.2f}" + (f"±{x['std']:.2f}" if x["n"] > 1 else "")

        return f"{one(v[a])} / {one(v[b])}"

    lines = []
    for a, b, title in (("ADE_20", "FDE_20", "best-of-20"), ("ADE_1", "FDE_1", "best-of-1")):
        lines += [f"ADE / FDE (m), {title}", "", "| arm | " + " | ".join(c.upper() for c in columns) + " |",
                  "|---|" + "---|" * len(columns)]  # fmt: skip
        for arm, per in table.items():
            cells = [cell(per[c], a, b) if c in per else "-" for c in columns]
            lines.append(f"| {ARM_LABELS.get(arm, arm)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
