"""The k-NN forecasting probe of the pre-training arms of an AV1 study, beside their fine-tuned ranking.

For each arm: the focal agents of AV1 train (the bank) and val (the queries) are embedded with the arm's
pre-trained backbone (``embed.sh agents=focal``: the branch of the last checkpoint that the fine-tuning started
from: the momentum branch, the online one for ``--online-arms``), or, for ``scratch``, with the backbone as
initialised under each of ``--scratch-seeds``; then ``retrieve.sh action=probe k=6`` forecasts each val focal
agent with the futures of its 6 nearest train histories. The table puts each arm's probe minADE_6 / minFDE_6 /
MR_6 beside its fine-tuned minFDE_6 (mean ± std over the study's seeds at ``--fraction``) and the Spearman rank
correlation of the two orders.

    python scripts/study_probe.py --study outputs/study_control/qcnet_small_A outputs/study_control/qcnet_small_B \\
        --cache-root outputs/study_control/cache --model qcnet_small \\
        --fine-tuned benchmarks/studies/control_qcnet_small.json --fraction 0.1 --out outputs/probe_qcnet_small

Every stage whose output exists is reused. Writes ``<out>/results.json`` and ``<out>/results.md``.
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

PROBE_METRICS = ("minADE_6", "minFDE_6", "MR_6")


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho of two equally long lists (average ranks for ties)."""

    def ranks(x: list[float]) -> np.ndarray:
        x_arr = np.asarray(x, float)
        order = x_arr.argsort()
        r = np.empty(len(x_arr))
        r[order] = np.arange(len(x_arr))
        for v in np.unique(x_arr):  # ties share their mean rank
            r[x_arr == v] = r[x_arr == v].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, nargs="+", required=True, help="study folders with pretrain_<arm>_s0/")
    parser.add_argument("--cache-root", type=Path, required=True)
    parser.add_argument("--model", default="qcnet_small")
    parser.add_argument("--arms", nargs="+", default=["scratch", "tcl_trl", "control", "fd", "id", "mhc",
                                                       "tcl_trl_control"])  # fmt: skip
    parser.add_argument("--scratch-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-seed", type=int, default=0)
    parser.add_argument("--online-arms", nargs="*", default=["mae"],
                        help="arms embedded with the online branch, as their fine-tuning loaded it (MAE has no "
                             "momentum branch); the others with the momentum branch")  # fmt: skip
    parser.add_argument("--fine-tuned", type=Path, nargs="*", default=[], help="the study's results.json files")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--model-overrides",
        nargs="*",
        default=["model.num_modes=1", "+model.propose_stack_only=true"],
        help="the architecture of the pre-trained branch (QCNet: its single-mode propose stack)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "probe")
    args = parser.parse_args()
    py = sys.executable
    start = time.perf_counter()
    common = ["data=av1", f"cache_root={args.cache_root}", f"model={args.model}", "agents=focal",
              f"batch_size={args.batch_size}", "num_workers=1", *args.model_overrides]  # fmt: skip

    def embed(name: str, split: str, weights: list[str]) -> Path:
        target = args.out / name / f"{split}.parquet"
        if not target.exists():
            folder = args.out / name / f"embed_{split}"
            run_logged([py, "-m", "smartpretrain.embed", *common, f"split={split}", f"output={target}", *weights,
                        f"hydra.run.dir={folder}"], args.out / name / f"embed_{split}.log", cwd=REPO)  # fmt: skip
        return target

    def probe(name: str, weights: list[str]) -> dict[str, Any]:
        result = args.out / name / "probe" / "probe.json"
        if not result.exists():
            bank, queries = embed(name, "train", weights), embed(name, "val", weights)
            run_logged([py, "-m", "smartpretrain.retrieve", "action=probe", "data=av1", f"bank={bank}",
                        f"queries={queries}", f"k={args.k}", f"hydra.run.dir={result.parent}"],
                       args.out / name / "probe.log", cwd=REPO)  # fmt: skip
        scores = json.loads(result.read_text())["scores"]
        print(
            f"{name}: " + "  ".join(f"{s['method']} minFDE_{args.k} {s[f'minFDE_{args.k}']:.3f}" for s in scores),
            flush=True,
        )
        return {s["method"]: s for s in scores}

    probes: dict[str, list[dict[str, Any]]] = {}
    for arm in args.arms:
        if arm == "scratch":
            probes[arm] = [probe(f"scratch_s{seed}", [f"seed={seed}"]) for seed in args.scratch_seeds]
            continue
        folders = [s / f"pretrain_{arm}_s{args.pretrain_seed}" for s in args.study]
        found = [f for f in folders if f.is_dir()]
        if not found:
            raise SystemExit(
                f"arm {arm}: no pretrain_{arm}_s{args.pretrain_seed}/ in {', '.join(map(str, args.study))}"
            )
        ckpt = found[0] / "checkpoints" / "last.ckpt"  # what the study fine-tuned from
        if not ckpt.is_file():
            raise SystemExit(f"arm {arm}: {ckpt} is missing")
        branch = "online" if arm in args.online_arms else "momentum"
        probes[arm] = [probe(arm, [f"pretrained_ckpt={ckpt}", f"pretrained_branch={branch}"])]

    fine: dict[str, list[float]] = {}
    for path in args.fine_tuned:
        for r in json.loads(path.read_text())["runs"]:
            if float(r["fraction"]) == args.fraction:
                fine.setdefault(r["arm"], []).append(float(r["metrics"]["minFDE_6"]))
    rows = []
    for arm in args.arms:
        emb = [p["embedding"] for p in probes[arm]]
        row: dict[str, Any] = {"arm": arm, "num_probes": len(emb)}
        for m in PROBE_METRICS:
            values = [e[m] for e in emb]
            row[m], row[m + "_std"] = float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        if arm in fine:
            row["finetuned_minFDE_6"], row["finetuned_minFDE_6_std"] = (
                float(np.mean(fine[arm])),
                float(np.std(fine[arm], ddof=1) if len(fine[arm]) > 1 else 0.0),
            )
            row["finetuned_seeds"] = len(fine[arm])
        rows.append(row)
    refs = {m: probes[args.arms[0]][0][m] for m in ("raw", "random")}
    ranked = [r for r in rows if "finetuned_minFDE_6" in r]
    rho = (
        spearman([r["minFDE_6"] for r in ranked], [r["finetuned_minFDE_6"] for r in ranked])
        if len(ranked) > 2
        else None
    )
    by_probe = [r["arm"] for r in sorted(rows, key=lambda r: r["minFDE_6"])]
    lines = [
        f"| arm | probe minADE_{args.k} | probe minFDE_{args.k} | probe MR_{args.k} | fine-tuned minFDE_6 "
        f"({args.fraction:g} labels) |",
        "|---|---|---|---|---|",
    ]

    def spread(r: dict[str, Any], m: str) -> str:
        return f"{r[m]:.3f}" + (f" ± {r[m + '_std']:.3f}" if r["num_probes"] > 1 else "")

    for r in rows:
        fine_cell = (f"{r['finetuned_minFDE_6']:.3f} ± {r['finetuned_minFDE_6_std']:.3f}"
                     if "finetuned_minFDE_6" in r else "–")  # fmt: skip
        cells = " | ".join(spread(r, m) for m in PROBE_METRICS)
        lines.append(f"| {r['arm']} | {cells} | {fine_cell} |")
    for name, s in refs.items():
        lines.append(f"| *{name} reference* | {s['minADE_6']:.3f} | {s['minFDE_6']:.3f} | {s['MR_6']:.3f} | – |")
    table = "\n".join(lines)
    table += f"\n\nprobe order (best first): {', '.join(by_probe)}"
    if rho is not None:
        table += f"; Spearman rho(probe minFDE_6, fine-tuned minFDE_6) over {len(ranked)} arms = {rho:.2f}"
    result = {
        "args": json.loads(json.dumps(vars(args), default=str)),
        "rows": rows,
        "references": refs,
        "probe_order": by_probe,
        "spearman": rho,
        "probes": probes,
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_study_outputs(args.out, result, table)


if __name__ == "__main__":
    main()
