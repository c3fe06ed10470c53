"""Expected wall time of converting a full training split on N cluster nodes, from the measured per-core rates of
the conversion benchmark (``benchmarks/results/convert.json``, written by ``scripts/bench_convert.py``).

    python scripts/cluster_plan.py                                  # print the table, write cluster_plan.json
    python scripts/cluster_plan.py --cores-per-node 64 --nodes 1 4 16
    python scripts/cluster_plan.py --write-doc                      # refresh the table in docs/cluster.md

The model: conversion is parallel over part files (one shard per SLURM array task, ``num_workers`` processes per
task, all writing into one cache folder), so its CPU-bound wall time is scenes x (CPU ms per scene on one core) /
(nodes x cores per node); reading the raw split takes raw bytes / the file system's aggregate read rate; the wall
time is the larger of the two, plus the start of each job. The rate is the benchmark's single-worker median CPU
time per scene (``ms_per_scene_per_core_cpu_median``): one worker on one core, with no other worker on its
physical core, as a cluster core would run it. The raw bytes per scene are those of the same real files. Check on
the cluster before sizing a big job: its file system's read rate and its cores' speed relative to the benchmark
machine's (``machine`` in the JSON).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RATES = REPO / "benchmarks" / "results" / "convert.json"
OUT = REPO / "benchmarks" / "results" / "cluster_plan.json"
DOC = REPO / "docs" / "cluster.md"
MARKER = "cluster-walltime"

#: (dataset, training-split scenes of the official release, the benchmark case whose rate it uses, raw bytes per
#: scene measured on the same real files, note)
SPLITS: tuple[tuple[str, int, str, int, str], ...] = (
    ("av2", 199_908, "av2_fixture", 223_248,
     "the real AV2 fixture scenario (58 agents, 83 map polygons; parquet + map JSON 223 KB)"),
    ("womd", 486_995, "womd_fixture", 952_320,
     "the real WOMD fixture scenario (83 tracks, 301 map features; 930 KiB TFRecord record)"),
    ("av1", 205_942, "av1_val", 89_623,
     "the real AV1 CSVs (mean 89.6 KB) without maps: with maps, a lower bound"),
)  # fmt: skip
#: seconds each job spends before its first scene (interpreter, imports, listing the raw split)
JOB_START_S = 30.0


def rates(path: Path = RATES) -> tuple[dict[str, float], dict[str, Any]]:
    """Single-worker median ms of CPU per scene, per benchmark case, and the benchmark's machine record."""
    record = json.loads(path.read_text())
    per_case = {
        r["case"]: float(r["ms_per_scene_per_core_cpu_median"]) for r in record["results"] if int(r["workers"]) == 1
    }
    return per_case, record.get("machine", {})


def plan(per_case: dict[str, float], nodes: list[int], cores_per_node: int, read_gb_s: list[float]) -> dict:
    """Per split: CPU-hours, the CPU-bound wall time on each node count and the read-bound time at each aggregate
    read rate of the shared file system (the wall time is the larger of the two, plus the jobs' start)."""
    splits = []
    for dataset, scenes, case, raw_bytes, note in SPLITS:
        if case not in per_case:
            raise SystemExit(f"{RATES}: no single-worker result for case {case!r}; run scripts/bench_convert.py")
        ms = per_case[case]
        cpu_s = scenes * ms / 1000
        raw_gb = scenes * raw_bytes / 1e9
        splits.append({
            "dataset": dataset, "scenes": scenes, "case": case, "ms_per_scene_per_core": ms, "note": note,
            "raw_bytes_per_scene": raw_bytes, "raw_gb": round(raw_gb, 1), "cpu_hours": round(cpu_s / 3600, 2),
            "cpu_bound_s": {str(n): round(cpu_s / (n * cores_per_node), 1) for n in nodes},
            "read_bound_s": {f"{r:g}": round(raw_gb / r, 1) for r in read_gb_s},
        })  # fmt: skip
    return {"cores_per_node": cores_per_node, "job_start_s": JOB_START_S, "splits": splits}


def render(result: dict[str, Any], machine: dict[str, Any]) -> str:
    """The markdown table of :func:`plan` with its sources."""
    cores = result["cores_per_node"]
    nodes = list(result["splits"][0]["cpu_bound_s"])
    reads = list(result["splits"][0]["read_bound_s"])
    cols = [f"CPU-bound, {n} × {cores} cores" for n in nodes] + [f"read-bound at {float(r):g} GB/s" for r in reads]
    lines = ["| split | scenes | raw GB | ms/scene/core | CPU-hours | " + " | ".join(cols) + " |",
             "|" + "---|" * (5 + len(cols))]  # fmt: skip
    for split in result["splits"]:
        times = [*split["cpu_bound_s"].values(), *split["read_bound_s"].values()]
        lines.append(f"| {split['dataset']} train | {split['scenes']:,} | {split['raw_gb']:.0f} | "
                     f"{split['ms_per_scene_per_core']:.2f} | {split['cpu_hours']:.1f} | "
                     + " | ".join(_duration(t) for t in times) + " |")  # fmt: skip
    where = ", ".join(str(machine[k]) for k in ("platform", "python") if k in machine)
    notes = "; ".join(f"{s['dataset']}: {s['note']}" for s in result["splits"])
    source = (f"Expected wall time: the larger of the CPU-bound and the read-bound time, plus ~{JOB_START_S:.0f} s "
              f"for each job to start. Rates: `benchmarks/results/convert.json`, single-worker medians ({where}); "
              f"{notes}.")  # fmt: skip
    return "\n".join(lines) + f"\n\n{source}\n"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def write_doc(text: str, doc: Path = DOC) -> None:
    head, rest = doc.read_text().split(f"<!-- {MARKER}:begin -->\n", 1)
    _, tail = rest.split(f"<!-- {MARKER}:end -->", 1)
    doc.write_text(f"{head}<!-- {MARKER}:begin -->\n{text}<!-- {MARKER}:end -->{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--cores-per-node", type=int, default=32)
    parser.add_argument("--read-gb-s", type=float, nargs="+", default=[1.0, 10.0], help="aggregate read rates")
    parser.add_argument("--rates", type=Path, default=RATES)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--write-doc", action="store_true", help=f"refresh the table in {DOC.relative_to(REPO)}")
    args = parser.parse_args()
    per_case, machine = rates(args.rates)
    result = plan(per_case, args.nodes, args.cores_per_node, args.read_gb_s)
    text = render(result, machine)
    print(text, end="")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**result, "rates_machine": machine}, indent=2) + "\n")
    print(f"wrote {args.out}")
    if args.write_doc:
        write_doc(text)
        print(f"updated {DOC}")


if __name__ == "__main__":
    main()
