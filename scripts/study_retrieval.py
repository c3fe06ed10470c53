"""Trajectory-embedding retrieval on a cache: embedding sizes x mining similarity x seeds, with references.

Each cell trains ``train_embed.sh`` (a Transformer encoder, triplet loss, hard -> semi-hard -> random mining) on the
windows of the train split, indexes them (flat, exact), and scores the val windows' k nearest train windows:
minADE@k, minFDE@k and maneuver purity@k (``smartpretrain/retrieval/evaluation.py``), beside raw-coordinate k-NN
and random retrieval (identical in every cell: same bank, same queries).

    python scripts/study_retrieval.py --cache-root outputs/study_control/cache --data av1 \\
        --dims 4 16 128 --similarities cosine fft --seeds 0 1 2 --out outputs/study_retrieval

Every cell whose ``retrieval.json`` exists is reused. Writes ``<out>/results.json`` and ``<out>/results.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from smartpretrain.io.run_outputs import run_logged, write_study_outputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-root", type=Path, required=True)
    parser.add_argument("--data", default="av1")
    parser.add_argument("--dims", type=int, nargs="+", default=[4, 16, 128])
    parser.add_argument("--similarities", nargs="+", default=["cosine", "fft"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 6, 16])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--overrides", nargs="*", default=[], help="more train_embed overrides (all cells)")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "study_retrieval")
    args = parser.parse_args()
    start = time.perf_counter()
    cells: list[dict[str, Any]] = []
    for dim in args.dims:
        for similarity in args.similarities:
            for seed in args.seeds:
                run_dir = args.out / f"d{dim}_{similarity}_s{seed}"
                result = run_dir / "retrieval.json"
                if not result.exists():
                    command = [sys.executable, "-m", "smartpretrain.train_embed", f"data={args.data}",
                               f"cache_root={args.cache_root}", f"encoder.embedding_dim={dim}",
                               f"objective.similarity={similarity}", f"seed={seed}", f"max_epochs={args.epochs}",
                               f"evaluate.ks=[{','.join(map(str, args.ks))}]", "+trainer.enable_progress_bar=false",
                               *args.overrides, f"hydra.run.dir={run_dir}"]  # fmt: skip
                    t0 = time.perf_counter()
                    run_logged(command, run_dir / "run.log", cwd=REPO)
                    print(f"d{dim} {similarity} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
                summary = json.loads(result.read_text())
                cells.append({"dim": dim, "similarity": similarity, "seed": seed, **summary})

    def scores(cell: dict[str, Any], method: str, k: int) -> dict[str, float]:
        return next(s for s in cell["scores"] if s["method"] == method and s["k"] == k)

    rows = []
    for dim in args.dims:
        for similarity in args.similarities:
            group = [c for c in cells if c["dim"] == dim and c["similarity"] == similarity]
            for k in args.ks:
                row: dict[str, Any] = {"dim": dim, "similarity": similarity, "k": k, "seeds": len(group)}
                for m in (f"minADE@{k}", f"minFDE@{k}", f"purity@{k}"):
                    values = [scores(c, "embedding", k)[m] for c in group]
                    row[m] = float(np.mean(values))
                    row[m + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                rows.append(row)
    first = cells[0]
    references = {m: {k: scores(first, m, k) for k in args.ks} for m in ("raw", "random")}
    lines = ["| dim | mining | k | minADE@k | minFDE@k | purity@k |", "|---|---|---|---|---|---|"]
    for r in rows:
        k = r["k"]
        cell = " | ".join(f"{r[m]:.3f} ± {r[m + '_std']:.3f}" for m in (f"minADE@{k}", f"minFDE@{k}", f"purity@{k}"))
        lines.append(f"| {r['dim']} | {r['similarity']} | {k} | {cell} |")
    for name, by_k in references.items():
        for k, s in by_k.items():
            lines.append(f"| *{name}* | – | {k} | {s[f'minADE@{k}']:.3f} | {s[f'minFDE@{k}']:.3f} | "
                         f"{s[f'purity@{k}']:.3f} |")  # fmt: skip
    table = "\n".join(lines)
    table += (f"\n\nbank {first['num_bank']} train windows, {first['num_queries']} val queries of "
              f"{first['window_steps']} steps; query maneuvers {first['maneuvers_queries']}")  # fmt: skip
    result = {
        "args": json.loads(json.dumps(vars(args), default=str)),
        "rows": rows,
        "references": references,
        "cells": cells,
        "seconds_this_invocation": round(time.perf_counter() - start, 1),
    }
    write_study_outputs(args.out, result, table)


if __name__ == "__main__":
    main()
