"""Look into a converted scene cache: a summary of the split, or of one scene, as text or JSON, and a plot (the
work: :mod:`smartpretrain.runs.inspection`).

    python -m smartpretrain.inspect cache/av2/val                       # split summary
    python -m smartpretrain.inspect cache/av2/val --index 0 --png s.png # one scene, plotted
    python -m smartpretrain.inspect cache/av2/val --scene 0a1e6f0a-... --json
    python -m smartpretrain.inspect cache/av2/val --png first.png --radius all

Exit status: 0 on success, 2 on a usage error or a cache / scene that cannot be found or read (the message on
stderr names the path or the scene id).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smartpretrain.runs.inspection import InspectError, format_summary, inspect_cache


def _radius(text: str) -> float | None:
    if text.lower() in ("all", "none", "fit"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected metres or 'all', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"radius must be positive, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m smartpretrain.inspect",
        description="Summarise a converted scene-cache split, or one of its scenes; optionally plot a scene.",
    )
    p.add_argument("cache", metavar="CACHE", type=Path, help="a converted split folder, e.g. cache/av2/val")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--scene", metavar="ID", help="scenario id of the scene to describe")
    which.add_argument(
        "--index", metavar="I", type=int, help="cache index of the scene to describe (negative: from the end)"
    )
    p.add_argument(
        "--png",
        metavar="OUT.png",
        type=Path,
        help="save a plot of the scene (of the first scene with the split summary)",
    )
    p.add_argument(
        "--radius",
        metavar="R",
        type=_radius,
        default=80.0,
        help="plot half-width in metres around the focal agent, or 'all' to fit everything (default 80)",
    )
    p.add_argument(
        "--max-scenes",
        metavar="N",
        type=int,
        default=200,
        help="split summary: scenes sampled for the statistics (default 200)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 ok, 2 error)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2), message already printed
        return int(exc.code or 0)
    try:
        summary = inspect_cache(
            args.cache,
            scene_id=args.scene,
            index=args.index,
            png=args.png,
            radius=args.radius,
            max_scenes=args.max_scenes,
        )
    except InspectError as exc:
        print(f"smartpretrain.inspect: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
