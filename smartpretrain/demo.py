"""The embedded default job: generate a small synthetic dataset in the real AV2 and AV1 file formats, convert it
into the scene cache with the same entry point as real data, and inspect it.

    python -m smartpretrain.demo [--out demo] [--av2-scenes 200] [--av1-scenes 100] [--workers 2]

Runs on a laptop CPU in about a minute. Later stages (pre-training, fine-tuning) extend this job.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from smartpretrain import convert
from smartpretrain.data.cache import SceneCache, atomic_write_text
from smartpretrain.data.synthetic import generate_av1, generate_av2

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def convert_with_hydra(overrides: list[str]) -> dict:
    """Compose ``configs/convert.yaml`` with ``overrides`` and run the conversion (same path as the CLI)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="convert", overrides=overrides)
    OmegaConf.resolve(cfg)
    return convert.run(cfg)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo"))
    parser.add_argument("--av2-scenes", type=int, default=200)
    parser.add_argument("--av1-scenes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    raw, cache_root = args.out / "raw", args.out / "cache"

    print(f"[1/3] generating {args.av2_scenes} AV2-format and {args.av1_scenes} AV1-format synthetic scenes in {raw}")
    val_av2 = max(args.av2_scenes // 5, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "demo_config.json", json.dumps({k: str(v) for k, v in vars(args).items()}, indent=2))
    generate_av2(raw / "av2", "train", args.av2_scenes - val_av2, seed=args.seed, progress=True)
    generate_av2(raw / "av2", "val", val_av2, seed=args.seed + 1, progress=True)
    generate_av1(raw / "av1", "val", args.av1_scenes, seed=args.seed, with_map=True, progress=True)

    print("[2/3] converting into the scene cache (python -m smartpretrain.convert ...)")
    common = [f"cache_root={cache_root}", f"num_workers={args.workers}", "scenes_per_part=32"]
    for split in ("train", "val"):
        convert_with_hydra(["data=av2", f"data.raw_root={raw / 'av2'}", f"data.split={split}", *common])
    convert_with_hydra(
        [
            "data=av1",
            f"data.raw_root={raw / 'av1'}",
            "data.split=val",
            f"data.map_root={raw / 'av1' / 'map_files'}",
            *common,
        ]
    )

    print("[3/3] inspecting")
    from smartpretrain.inspect import main as inspect_main

    cache = SceneCache(cache_root / "av2" / "val")
    png = args.out / "scene.png"
    inspect_main([str(cache.path), "--index", "0", "--png", str(png)])
    print(f"demo finished in {time.perf_counter() - start:.1f} s; caches under {cache_root}, plot {png}")


if __name__ == "__main__":
    main()
