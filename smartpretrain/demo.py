"""The embedded default job: SmartPretrain's label-efficiency protocol at demo scale, end to end on generated data,
on the CPU.

Self-supervised pre-training pays off when there are many more unlabelled scenes than labelled ones. The demo
measures exactly that, with the framework's own entry points:

1. generate synthetic scenes in the real file formats (AV1 with vector maps; a few AV2 scenes as well);
2. convert them into the scene cache (``python -m smartpretrain.convert``) and draw one scene;
3. pre-train a small QCNet with SmartPretrain (TCL + TRL) on all ``--unlabelled-scenes`` train scenes, labels
   unused (``./train_ssl.sh``);
4. fine-tune it on a fixed subset of ``--labelled-scenes`` of them, twice with the same seed, subset and budget:
   from the pre-trained weights and from scratch (``./train.sh``), validating every epoch;
5. evaluate both on the ``--val-scenes`` val scenes (``./val.sh``), print the table, and draw ``demo.png``: val
   minFDE_6 per fine-tuning epoch for both arms, and one val scene with both models' 6 modes and the truth.

    python -m smartpretrain.demo                 # the default (3-7 minutes on 2 CPU cores, after setup)
    python -m smartpretrain.demo --quick         # a smoke run of every stage at toy size (under 2 minutes)
    python -m smartpretrain.demo --seed 1        # another seed: new data, new initialisation, new subset

Each stage writes its resolved config and seed next to its outputs (``<out>/runs/...``) and its console output to
``<out>/logs/``; a re-run resumes (the conversion skips finished parts; a stage whose result file exists is reused).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from smartpretrain.config import compose_config
from smartpretrain.data.cache import SceneCache
from smartpretrain.data.synthetic import generate_av1, generate_av2
from smartpretrain.io.atomic import atomic_write_text
from smartpretrain.io.run_outputs import epoch_metrics
from smartpretrain.runs import conversion
from smartpretrain.runs.comparison import side_by_side
from smartpretrain.runs.console import quiet_libraries
from smartpretrain.runs.inspection import inspect_cache
from smartpretrain.runs.pipeline import (
    ArmSpec,
    EvaluateSpec,
    FinetuneSpec,
    PretrainSpec,
    Stage,
    StageEvent,
    run_pipeline,
)

ARMS = ("pretrained", "scratch")
#: --quick: every stage at toy size
QUICK = {"unlabelled_scenes": 48, "labelled_scenes": 16, "val_scenes": 16, "av2_scenes": 4, "pretrain_epochs": 1,
         "finetune_epochs": 2, "batch_size": 8}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m smartpretrain.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: demo/)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the models and the labelled subset")
    parser.add_argument(
        "--unlabelled-scenes",
        type=int,
        default=400,
        help="AV1-format train scenes; all of them pre-train, without labels (default: 400)",
    )
    parser.add_argument(
        "--labelled-scenes", type=int, default=40, help="how many of them are labelled for fine-tuning (default: 40)"
    )
    parser.add_argument("--val-scenes", type=int, default=60, help="AV1-format val scenes (default: 60)")
    parser.add_argument(
        "--av2-scenes", type=int, default=10, help="AV2-format scenes, converted and drawn (default: 10)"
    )
    parser.add_argument("--pretrain-epochs", type=int, default=2, help="pre-training epochs (default: 2)")
    parser.add_argument("--finetune-epochs", type=int, default=10, help="fine-tuning epochs, both arms (default: 10)")
    parser.add_argument("--batch-size", type=int, default=8, help="scenes per batch, every stage (default: 8)")
    parser.add_argument("--workers", type=int, default=1, help="conversion and DataLoader workers (default: 1)")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run of every stage (< 2 min)")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    if not 0 < args.labelled_scenes <= args.unlabelled_scenes:
        parser.error(f"--labelled-scenes must be in [1, --unlabelled-scenes={args.unlabelled_scenes}]")
    for name in ("unlabelled_scenes", "val_scenes", "av2_scenes", "pretrain_epochs", "finetune_epochs", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


@contextlib.contextmanager
def _logged(path: Path) -> Iterator[None]:
    """The block's stdout goes to ``path`` (the stages' own prints); progress bars stay on stderr."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log, contextlib.redirect_stdout(log):
        yield


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    quiet_libraries()
    terminal: TextIO = sys.stdout
    start = time.perf_counter()
    raw, cache_root, runs, logs = args.out / "raw", args.out / "cache", args.out / "runs", args.out / "logs"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "demo_config.json", json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))

    def say(text: str) -> None:
        print(text, file=terminal, flush=True)

    def stage(i: int, text: str) -> None:
        say(f"[{i}/5] {text}  (t = {time.perf_counter() - start:.0f} s)")

    n_u, n_l, n_v = args.unlabelled_scenes, args.labelled_scenes, args.val_scenes
    stage(1, f"generating {n_u} + {n_v} AV1-format scenes (train + val, with maps) and {args.av2_scenes} AV2-format")
    generate_av2(raw / "av2", "val", args.av2_scenes, seed=args.seed, progress=True)
    generate_av1(raw / "av1", "train", n_u, seed=args.seed, with_map=True, progress=True)
    generate_av1(raw / "av1", "val", n_v, seed=args.seed + 1000, with_map=True, progress=True)

    stage(2, "converting them into the scene cache (python -m smartpretrain.convert ...)")
    # content fingerprints: the raw files are regenerated (same bytes, new mtimes) on every run
    common = [f"cache_root={cache_root}", f"num_workers={args.workers}", "scenes_per_part=64", "fingerprint=content"]
    with _logged(logs / "convert.log"):
        conversion.run(
            compose_config("convert", ["data=av2", f"data.raw_root={raw / 'av2'}", "data.split=val", *common])
        )
        for split in ("train", "val"):
            conversion.run(compose_config(
                "convert",
                ["data=av1", f"data.raw_root={raw / 'av1'}", f"data.split={split}",
                 f"data.map_root={raw / 'av1' / 'map_files'}", *common],
            ))  # fmt: skip
        scene_png = args.out / "scene.png"
        inspect_cache(cache_root / "av2" / "val", index=0, png=scene_png)
    say(f"      cache under {cache_root}; one AV2 scene drawn in {scene_png}")

    data = ["data=av1", f"cache_root={cache_root}", f"num_workers={min(args.workers, 1)}"]
    quiet = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
             "+callbacks.stage_progress._target_=smartpretrain.runs.progress.StageProgress"]  # fmt: skip
    finetune = ["model=qcnet_small", *data, *quiet, f"seed={args.seed}", f"max_epochs={args.finetune_epochs}",
                f"batch_size={args.batch_size}", "lr=2e-3", f"train_fraction={n_l / n_u!r}",
                f"train_subset_seed={args.seed}"]  # fmt: skip
    arms = [
        ArmSpec(
            name,
            EvaluateSpec(runs / f"evaluate_{name}", ["model=qcnet_small", *data, "mode=val", "num_plots=1"]),
            FinetuneSpec(
                runs / f"finetune_{name}",
                [*finetune, f"+callbacks.stage_progress.desc='fine-tune {name}'"],
                from_pretrained=name == "pretrained",
            ),
        )
        for name in ARMS
    ]
    pretrain = PretrainSpec(
        runs / "pretrain",
        ["experiment=smartpretrain_cpu_small", *data, *quiet, f"seed={args.seed}", f"max_epochs={args.pretrain_epochs}",
         f"batch_size={args.batch_size}", "+callbacks.stage_progress.desc=pre-train",
         "+callbacks.stage_progress.metrics=[val_loss]"],
    )  # fmt: skip
    headers = {
        Stage.PRETRAIN: (3, f"pre-training qcnet_small with TCL + TRL on all {n_u} train scenes, labels unused, "
                            f"{args.pretrain_epochs} epochs (./train_ssl.sh ...)"),
        Stage.FINETUNE: (4, f"fine-tuning on {n_l} labelled scenes for {args.finetune_epochs} epochs: from the "
                            f"pre-trained weights, then from scratch (./train.sh ...)"),
        Stage.EVALUATE: (5, f"evaluating both on the {n_v} val scenes (./val.sh ...)"),
    }  # fmt: skip

    def progress(event: StageEvent) -> None:
        if event.result is None and event.stage in headers:
            stage(*headers.pop(event.stage))

    with _logged(logs / "train.log"):
        results = run_pipeline(arms, pretrain=pretrain, on_stage=progress).metrics()
    table = side_by_side(results)
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(args.out / "results.md", "```\n" + table + "\n```\n")
    figure = _figure(args.out / "demo.png", runs, cache_root / "av1" / "val")
    elapsed = time.perf_counter() - start
    say(f"\nval metrics ({n_v} AV1-format synthetic val scenes, focal agents; fine-tuned on {n_l} labelled scenes; "
        f"change = pretrained vs scratch):")  # fmt: skip
    say(table)
    say(f"\ndemo finished in {elapsed:.0f} s (seed {args.seed}). Outputs in {args.out}/:")
    say(f"  {figure.name if figure else '(no figure)'}   val minFDE_6 per epoch + one val scene with both models")
    say("  results.md    the table above;   results.json   every metric of both arms")
    say("  runs/         each stage's config.yaml, seed.json, checkpoints and logs;   logs/   the stages' console")
    return results


def _figure(path: Path, runs: Path, val_split: Path) -> Path | None:
    """``demo.png`` from the fine-tuning logs and the evaluations' plotted forecasts (None if there are none)."""
    from smartpretrain.viz.comparison_plot import save_comparison_png

    curves = {arm: epoch_metrics(runs / f"finetune_{arm}", ["minFDE_6"], prefix="val_") for arm in ARMS}
    forecasts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    scenario = None
    for arm in ARMS:
        files = sorted((runs / f"evaluate_{arm}" / "plots").glob("*.npz"))
        if files:
            with np.load(files[0], allow_pickle=False) as f:
                forecasts[arm] = (f["trajectories"], f["probabilities"])
            scenario = files[0].stem
    scene = None
    if scenario is not None:
        cache = SceneCache(val_split)
        try:
            scene = cache.get(scenario)
        finally:
            cache.close()
    if not any(curves.values()) and scene is None:
        return None
    return save_comparison_png(path, curves, "minFDE_6", scene, forecasts, title=f"val scene {scenario}")


if __name__ == "__main__":
    main()
