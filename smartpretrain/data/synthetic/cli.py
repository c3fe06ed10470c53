"""Command line of the synthetic generator (``python -m smartpretrain.data.synthetic``)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from smartpretrain.data.synthetic.av1_writer import generate_av1
from smartpretrain.data.synthetic.av2_writer import generate_av2


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: generate synthetic AV2 or AV1 scenes and print a one-line summary."""
    parser = argparse.ArgumentParser(description="Generate synthetic driving scenes in raw AV2 / AV1 formats.")
    parser.add_argument("--format", choices=["av2", "av1"], default="av2")
    parser.add_argument("--root", required=True, help="dataset root directory")
    parser.add_argument("--split", default="train")
    parser.add_argument("--num-scenes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start-index", type=int, default=0)
    parser.add_argument("--with-map", action="store_true", help="av1: also write the city vector maps (XML)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    if args.format == "av2":
        written = generate_av2(args.root, args.split, args.num_scenes, args.seed, args.start_index, progress=True)
    else:
        written = generate_av1(
            args.root, args.split, args.num_scenes, args.seed, args.with_map, args.start_index, progress=True
        )
    dt = time.perf_counter() - t0
    rate = len(written) / dt if dt > 0 else float("inf")
    maps = " (+ vector maps)" if args.format == "av1" and args.with_map else ""
    print(
        f"wrote {len(written)} synthetic {args.format} scenes{maps} to {Path(args.root) / args.split} "
        f"in {dt:.2f} s ({rate:.0f} scenes/s, seed {args.seed})"
    )
    return 0
