"""The embedded default job, end to end on generated data, CPU only:

1. generate small synthetic datasets in the real AV2 and AV1 file formats (with vector maps);
2. convert them into the scene cache with the same entry point as real data, and inspect one scene;
3. pre-train a small QCNet with SmartPretrain (TCL + TRL) on the AV1-format train split;
4. fine-tune it for forecasting twice with the same seed and schedule: from the pre-trained weights and from scratch;
5. evaluate both on the val split and print the metrics side by side.

    python -m smartpretrain.demo [--out demo] [--train-scenes 280] [--pretrain-epochs 3] [--finetune-epochs 3]

Every stage writes its resolved config and seed next to its outputs (``<out>/runs/...``); a re-run resumes: the
conversion skips finished parts, and a stage whose result file exists is reused (stages 3-5 are one
:func:`~smartpretrain.runs.pipeline.run_pipeline`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from smartpretrain.config import compose_config
from smartpretrain.data.synthetic import generate_av1, generate_av2
from smartpretrain.io.atomic import atomic_write_text
from smartpretrain.runs import conversion
from smartpretrain.runs.comparison import side_by_side
from smartpretrain.runs.inspection import format_summary, inspect_cache
from smartpretrain.runs.pipeline import (
    ArmSpec,
    EvaluateSpec,
    FinetuneSpec,
    PretrainSpec,
    Stage,
    StageEvent,
    run_pipeline,
)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo"))
    parser.add_argument("--av2-scenes", type=int, default=100, help="AV2-format scenes (conversion + inspection)")
    parser.add_argument("--train-scenes", type=int, default=280, help="AV1-format training scenes")
    parser.add_argument("--val-scenes", type=int, default=80, help="AV1-format validation scenes")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    raw, cache_root, runs = args.out / "raw", args.out / "cache", args.out / "runs"
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "demo_config.json", json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))

    def stage(i: int, text: str) -> None:
        print(f"\n[{i}/5] {text}  (t = {time.perf_counter() - start:.0f} s)", flush=True)

    stage(1, f"generating {args.av2_scenes} AV2-format and {args.train_scenes}+{args.val_scenes} AV1-format scenes")
    generate_av2(raw / "av2", "val", args.av2_scenes, seed=args.seed, progress=True)
    generate_av1(raw / "av1", "train", args.train_scenes, seed=args.seed, with_map=True, progress=True)
    generate_av1(raw / "av1", "val", args.val_scenes, seed=args.seed + 1, with_map=True, progress=True)

    stage(2, "converting into the scene cache (python -m smartpretrain.convert ...) and inspecting a scene")
    # content fingerprints: the raw files are regenerated (same bytes, new mtimes) on every run
    common = [f"cache_root={cache_root}", f"num_workers={args.workers}", "scenes_per_part=32", "fingerprint=content"]
    conversion.run(compose_config("convert", ["data=av2", f"data.raw_root={raw / 'av2'}", "data.split=val", *common]))
    for split in ("train", "val"):
        conversion.run(compose_config(
            "convert",
            ["data=av1", f"data.raw_root={raw / 'av1'}", f"data.split={split}",
             f"data.map_root={raw / 'av1' / 'map_files'}", *common],
        ))  # fmt: skip
    png = args.out / "scene.png"
    print(format_summary(inspect_cache(cache_root / "av2" / "val", index=0, png=png)))

    data = ["data=av1", f"cache_root={cache_root}", f"num_workers={min(args.workers, 1)}"]
    trainer = ["trainer.log_every_n_steps=5"]
    finetune = ["model=qcnet_small", *data, *trainer, f"seed={args.seed}", f"max_epochs={args.finetune_epochs}",
                f"batch_size={args.batch_size}", "lr=2e-3"]  # fmt: skip
    arms = [
        ArmSpec(
            name,
            EvaluateSpec(runs / f"evaluate_{name}", ["model=qcnet_small", *data, "mode=val"]),
            FinetuneSpec(runs / f"finetune_{name}", finetune, from_pretrained=name == "pretrained"),
        )
        for name in ("pretrained", "scratch")
    ]
    pretrain = PretrainSpec(
        runs / "pretrain",
        ["experiment=smartpretrain_cpu_small", *data, *trainer, f"seed={args.seed}",
         f"max_epochs={args.pretrain_epochs}", f"batch_size={args.batch_size}"],
    )  # fmt: skip
    headers = {
        Stage.PRETRAIN: (3, f"pre-training qcnet_small with TCL + TRL for {args.pretrain_epochs} epochs "
                            "(./train_ssl.sh ...)"),
        Stage.FINETUNE: (4, f"fine-tuning for {args.finetune_epochs} epochs, from the pre-trained weights and from "
                            "scratch"),
        Stage.EVALUATE: (5, "evaluating both on the val split (./val.sh ...)"),
    }  # fmt: skip

    def progress(event: StageEvent) -> None:
        if event.result is None:
            if event.stage in headers:
                stage(*headers.pop(event.stage))
            if event.stage is Stage.FINETUNE:
                print(f"-- {event.arm}", flush=True)
        elif event.stage is Stage.PRETRAIN:
            values = event.result.values
            print(f"pre-training: val SSL loss {values['val_loss']:.4f}; checkpoint {event.result.last_checkpoint}")

    results = run_pipeline(arms, pretrain=pretrain, on_stage=progress).metrics()
    table = side_by_side(results)
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(args.out / "results.md", "```\n" + table + "\n```\n")
    print("\nval metrics (AV1-format synthetic val split, focal agents; change = pretrained vs scratch):")
    print(table)
    elapsed = time.perf_counter() - start
    print(f"\ndemo finished in {elapsed:.0f} s; outputs under {args.out} (results.md, runs/, {png})")
    return results


if __name__ == "__main__":
    main()
