"""Render the benchmark JSONs of ``benchmarks/results/`` into the summary block of ``docs/benchmarks.md``.

    python scripts/bench_report.py                  # rewrite the block between the bench-summary markers
    python scripts/bench_report.py --check          # exit 1 if the block is stale

Reads ``convert.json`` (scripts/bench_convert.py), ``cache_formats.json`` (scripts/bench_cache_formats.py),
``loading.json`` (scripts/bench_loading.py), every ``train*.json`` (scripts/bench_train.py) and every
``qcnet_speed*.json`` (scripts/bench_train.py --trees, before / after a speed change); files that are
absent are listed as not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from smartpretrain.io.atomic import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- bench-summary:begin -->\n", "<!-- bench-summary:end -->"


def _machine(report: dict[str, Any]) -> str:
    m = report.get("machine", {})
    parts = [
        f"{m['cpu_count']} CPUs" if "cpu_count" in m else "",
        m.get("platform", ""),
        f"Python {m.get('python', '?')}",
    ]
    return ", ".join(p for p in parts if p)


def convert_table(report: dict[str, Any]) -> list[str]:
    lines = [
        f"**Conversion** (`scripts/bench_convert.py`; {_machine(report)}):",
        "",
        "| case | scenes | workers | ms/scene/core (cpu, median) | scenes/s | KiB/scene | random read ms/scene |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['case']} | {r['scenes']} | {r['workers']} | {r['ms_per_scene_per_core_cpu_median']:.2f} | "
            f"{r['scenes_per_s_wall_median']:.0f} | {r['kib_per_scene']:.1f} | {r['random_read_ms_per_scene']:.2f} |"
        )
    by_case: dict[str, dict[int, float]] = {}
    for r in report["results"]:
        by_case.setdefault(r["case"], {})[int(r["workers"])] = float(r["scenes_per_s_wall_median"])
    scaling = [f"{case} {rates[2] / rates[1]:.2f}×" for case, rates in by_case.items() if 1 in rates and 2 in rates]
    if scaling:
        lines += ["", "Throughput scaling 1 → 2 workers: " + ", ".join(scaling) + "."]
    return lines


def cache_formats_table(report: dict[str, Any]) -> list[str]:
    sets = report.get("scene_sets", {})
    lines = [
        f"**Cache record formats** (`scripts/bench_cache_formats.py`; {_machine(report)}), per scene (median):",
        "",
        "| scenes | format | KiB/scene | encode ms | decode ms |",
        "|---|---|---|---|---|",
    ]
    for name, formats in report["results"].items():
        label = f"{name} ({sets[name]})" if name in sets else name
        for fmt, r in formats.items():
            cells = f"{r['kib_per_scene']:.2f} | {r['encode_ms']:.3f} | {r['decode_ms']:.3f}"
            lines.append(f"| {label} | {fmt} | {cells} |")
    return lines


def loading_table(report: dict[str, Any]) -> list[str]:
    def column(r: dict[str, Any]) -> tuple[int, str]:  # reports before the packed transfer: PyTorch's per-tensor one
        workers = int(r["workers"])
        return workers, r.get("transfer", "per_tensor" if workers else "none")

    order = {"none": 0, "packed": 1, "per_tensor": 2}
    columns = sorted({column(r) for r in report["results"]}, key=lambda c: (order.get(c[1], 3), c[0]))
    names = {"packed": "packed", "per_tensor": "per-tensor"}
    head = " | ".join(
        "main process" if not w else f"{w} worker{'s' if w != 1 else ''}, {names.get(t, t)}" for w, t in columns
    )
    lines = [
        f"**Data loading** (`scripts/bench_loading.py`; batch {report['batch_size']}; {_machine(report)}), "
        "scenes/s out of the DataLoader (per worker in brackets); workers hand batches over packed in one buffer "
        "(the framework's default) or per tensor (PyTorch's default):",
        "",
        f"| dataset | pipeline | model | {head} |",
        "|---|---|---|" + "---|" * len(columns),
    ]
    rows: dict[tuple[str, str, str], dict[tuple[int, str], dict[str, Any]]] = {}
    for r in report["results"]:
        rows.setdefault((r["dataset"], r["pipeline"], r["model"]), {})[column(r)] = r
    for (dataset, pipeline, model), per in rows.items():
        cells = []
        for c in columns:
            r = per.get(c)
            cells.append("—" if r is None else f"{r['scenes_per_s']:.0f} ({r['scenes_per_s_per_worker']:.0f})")
        lines.append(f"| {dataset} | {pipeline} | {model} | " + " | ".join(cells) + " |")
    return lines


def train_table(name: str, report: dict[str, Any]) -> list[str]:
    settings = report.get("settings", {})
    lines = [
        f"**Training step** (`{name}`, scripts/bench_train.py; device {settings.get('device', 'cpu')}, "
        f"{settings.get('precision', 'fp32')}; {_machine(report)}):",
        "",
        "| model | kind | batch | ms/step | ms/scene | peak memory MiB (GPU if on GPU, else RSS) |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if r.get("ssl_arm", "tcl_trl") != "tcl_trl":
            continue  # the other objective sets: arms_table
        memory = r.get("peak_gpu_mib", r.get("peak_rss_mib"))
        lines.append(
            f"| {r['model']} | {r['kind']} | {r['batch_size']} | {r['step_ms_median']:.0f} | {r['ms_per_scene']:.0f} | "
            f"{'—' if memory is None else f'{memory:.0f}'} |"
        )
    if report.get("arm_comparison"):
        lines += ["", *arms_table(name, report)]
    return lines


def arms_table(name: str, report: dict[str, Any]) -> list[str]:
    """A ``bench_train.py --ssl-arms`` report: each pre-training arm's step beside TCL + TRL's."""
    settings = report.get("settings", {})
    lines = [
        f"**Pre-training objectives** (`{name}`, scripts/bench_train.py --ssl-arms; device "
        f"{settings.get('device', 'cpu')}, {settings.get('precision', 'fp32')}; median of {settings.get('steps')} "
        f"steps; {_machine(report)}):",
        "",
        "| model | batch | arm | objectives | ms/step | × TCL + TRL | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["arm_comparison"]:
        ratio = r.get("time_over_tcl_trl")
        lines.append(
            f"| {r['model']} | {r['batch_size']} | {r['arm']} | {', '.join(r['objectives'])} | {r['step_ms']:.0f} | "
            f"{'—' if ratio is None else f'{ratio:.2f}'} | {r['peak_rss_mib']:.0f} |"
        )
    return lines


def trees_table(name: str, report: dict[str, Any]) -> list[str]:
    """A ``bench_train.py --trees`` report: each (kind, batch), the baseline tree and the others over it."""
    settings = report.get("settings", {})
    trees = list(settings.get("trees", {}))
    base, others = trees[0], trees[1:]
    lines = [
        f"**{', '.join(others)} vs {base}** (`{name}`, scripts/bench_train.py --trees; device "
        f"{settings.get('device', 'cpu')}, {settings.get('precision', 'fp32')}; median of {settings.get('steps')} "
        f"steps x {settings.get('repeats')} interleaved rounds; {_machine(report)}):",
        "",
    ]
    head = ["model", "step", "batch", f"{base} ms/step", f"{base} peak MiB"]
    for tree in others:
        head += [f"{tree} ms/step", f"{tree} peak MiB", f"{tree} / {base} time", f"{tree} / {base} memory"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mem = (
        "peak_gpu_mib"
        if any(k.endswith("peak_gpu_mib") for r in report["tree_comparison"] for k in r)
        else "peak_rss_mib"
    )
    for r in report["tree_comparison"]:
        cells = [r["model"], r["kind"].replace("_", " + "), str(r["batch_size"])]
        cells += [f"{r[f'{base}_step_ms']:.0f}", f"{r[f'{base}_{mem}']:.0f}"]
        for tree in others:
            cells += [f"{r[f'{tree}_step_ms']:.0f}", f"{r[f'{tree}_{mem}']:.0f}"]
            cells += [f"{r[f'{tree}_time_ratio']:.2f}", f"{r[f'{tree}_memory_ratio']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(results_dir: Path) -> str:
    blocks: list[list[str]] = []
    missing: list[str] = []
    tables = {"convert.json": convert_table, "cache_formats.json": cache_formats_table, "loading.json": loading_table}
    for name, fn in tables.items():
        path = results_dir / name
        if path.exists():
            blocks.append(fn(json.loads(path.read_text())))
        else:
            missing.append(name)
    trains = sorted(results_dir.glob("train*.json"))
    for path in trains:
        blocks.append(train_table(path.name, json.loads(path.read_text())))
    if not trains:
        missing.append("train*.json")
    for path in sorted(results_dir.glob("qcnet_speed*.json")):
        blocks.append(trees_table(path.name, json.loads(path.read_text())))
    if missing:
        blocks.append([f"Not run yet: {', '.join(missing)} (see `scripts/bench_all.sh`)."])
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "benchmarks.md")
    parser.add_argument("--check", action="store_true", help="only check that the doc's block is up to date")
    args = parser.parse_args()
    text = args.doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{args.doc}: the markers {BEGIN.strip()} / {END} are missing")
    head, rest = text.split(BEGIN, 1)
    old, tail = rest.split(END, 1)
    block = render(args.results)
    if args.check:
        if old != block:
            print(f"{args.doc} is stale: run python scripts/bench_report.py", file=sys.stderr)
            sys.exit(1)
        return
    atomic_write_text(args.doc, head + BEGIN + block + END + tail)
    print(f"wrote the summary of {args.results} into {args.doc}")


if __name__ == "__main__":
    main()
