"""Embedding-index speed, memory and recall: flat (exact) vs IVF vs HNSW at 10^4 - 10^6 vectors.

    python scripts/bench_retrieval.py                                     # 10^4, 10^5, 10^6 vectors
    python scripts/bench_retrieval.py --sizes 10000 --queries 200         # a quick check
    python scripts/bench_retrieval.py --kinds flat hnsw --dim 128 --out benchmarks/results/retrieval_128.json

The vectors are generated (seeded): ``--clusters`` Gaussian clusters on the unit sphere, each point its cluster
centre plus noise, L2-normalised (as the retrieval's cosine-as-L2 convention wants), float32, in chunks so 10^6
vectors never hold a float64 copy. The queries are drawn from the same clusters with another seed (they are not
in the bank).

For each size and kind (default :class:`~smartpretrain.retrieval.index.IndexSettings` of the kind):

* ``build_s``: :meth:`EmbeddingIndex.build` wall time (IVF: k-means training included);
* ``index_bytes``: size of ``faiss.serialize_index`` (what ``index.faiss`` takes on disk);
* ``rss_delta_bytes``: growth of the process's resident memory over the build (``/proc/self/statm``; 0 where
  that file does not exist; the allocator may keep freed memory, so it is an upper bound of what the index
  holds, id table included);
* ``queries_per_s``: ``--queries`` / the median of 3 timed ``search`` calls, each over the whole query set in one
  batch (FAISS's default OpenMP threads);
* ``recall_at_k``: mean over queries of |approximate top-k ∩ flat top-k| / k (1.0 for flat by definition).

The report (``--out``) holds the rows and the machine (platform, CPUs, torch / faiss versions, FAISS threads).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from smartpretrain.embeddings.records import (
    AgentSelection,
    CacheSplit,
    EmbeddingMetadata,
    EmbeddingRecords,
    QueryReduction,
)
from smartpretrain.io.atomic import atomic_write_json
from smartpretrain.retrieval.index import EmbeddingIndex, IndexKind, IndexSettings, require_faiss

# rows generated per chunk: bounds the float64 noise block at 10^6 vectors
_CHUNK = 1 << 16


def clustered_vectors(n: int, dim: int, clusters: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """``[n, dim]`` float32 unit vectors around ``clusters`` centres drawn from ``rng``."""
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), np.float32)
    for lo in range(0, n, _CHUNK):
        m = min(_CHUNK, n - lo)
        x = centres[rng.integers(clusters, size=m)] + noise * rng.standard_normal((m, dim))
        out[lo : lo + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def bank_records(vectors: np.ndarray) -> EmbeddingRecords:
    n = len(vectors)
    return EmbeddingRecords(
        scenario_id=[f"scene{i}" for i in range(n)],
        track_id=["0"] * n,
        dataset=["bench"] * n,
        role=["focal"] * n,
        step=np.zeros(n, np.int32),
        vector=vectors,
    )


def bench_metadata(dim: int, n: int, seed: int) -> EmbeddingMetadata:
    return EmbeddingMetadata(
        model="bench.GeneratedVectors",
        embedding_dim=dim,
        agents=AgentSelection.FOCAL,
        reduction=QueryReduction.LAST,
        caches=(CacheSplit("generated", "-", n),),
        seed=seed,
    )


def rss_bytes() -> int:
    """Resident memory of this process (0 without ``/proc``)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k among the found top-k (-1 padding never counts)."""
    k = truth.shape[1]
    hits = [len(set(f[f >= 0].tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / k


def timed_search(index: EmbeddingIndex, queries: np.ndarray, k: int, repeats: int = 3) -> tuple[float, np.ndarray]:
    """(queries/s from the median of ``repeats`` one-batch searches, the rows of the last)."""
    times, rows = [], np.empty((0, k), np.int64)
    for _ in range(repeats):
        start = time.perf_counter()
        _, rows = index.search(queries, k)
        times.append(time.perf_counter() - start)
    return len(queries) / statistics.median(times), rows


def bench_kind(
    kind: IndexKind,
    records: EmbeddingRecords,
    metadata: EmbeddingMetadata,
    queries: np.ndarray,
    k: int,
    seed: int,
    truth: np.ndarray | None = None,
    sweep: list[int] | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """One kind at its default settings; with ``truth`` (flat's rows) and ``sweep``, also the search-time
    trade-off: queries/s and recall@k at each ``nprobe`` (IVF) or ``efSearch`` (HNSW) of ``sweep``."""
    faiss = require_faiss()
    before = rss_bytes()
    start = time.perf_counter()
    index = EmbeddingIndex.build(records, metadata, IndexSettings(kind, seed=seed))
    build_s = time.perf_counter() - start
    rss_delta = max(0, rss_bytes() - before)
    index_bytes = int(faiss.serialize_index(index.faiss_index).size)
    qps, rows = timed_search(index, queries, k)
    row = {
        "size": len(records),
        "kind": str(kind),
        "settings": index.settings.as_json(),
        "build_s": build_s,
        "index_bytes": index_bytes,
        "rss_delta_bytes": rss_delta,
        "queries_per_s": qps,
    }
    knob = {IndexKind.IVF: "nprobe", IndexKind.HNSW: "ef_search"}.get(kind)
    if sweep and knob is not None and truth is not None:
        row["sweep"] = []
        default = getattr(index.settings, knob)
        for value in sweep:
            index.configure(**{knob: int(value)})
            qps_v, rows_v = timed_search(index, queries, k)
            row["sweep"].append({knob: int(value), "queries_per_s": qps_v, "recall_at_k": recall_at_k(rows_v, truth)})
        index.configure(**{knob: default})
    del index
    return row, rows


def machine() -> dict[str, Any]:
    faiss = require_faiss()
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "faiss_omp_threads": faiss.omp_get_max_threads(),
        "numpy": np.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument(
        "--kinds", nargs="+", default=[k.value for k in IndexKind], choices=[k.value for k in IndexKind]
    )
    parser.add_argument("--clusters", type=int, default=256)
    parser.add_argument("--noise", type=float, default=0.1, help="per-coordinate std of a point around its centre")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nprobe-sweep", type=int, nargs="*", default=[], help="IVF nprobe values to also time")
    parser.add_argument("--ef-search-sweep", type=int, nargs="*", default=[], help="HNSW efSearch values to also time")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/retrieval_index.json"))
    args = parser.parse_args()
    if min(args.sizes) < args.k:
        parser.error(f"--sizes must be >= --k ({args.k})")

    kinds = [IndexKind(k) for k in dict.fromkeys(args.kinds)]
    results: list[dict[str, Any]] = []
    print(f"{'size':>9} {'kind':>5} {'build s':>9} {'index MiB':>10} {'RSS +MiB':>9} {'queries/s':>11} {'recall@k':>9}")
    for size in args.sizes:
        # one generator per size: a size's vectors do not depend on which other sizes run
        rng = np.random.default_rng([args.seed, size])
        bank = clustered_vectors(size, args.dim, args.clusters, args.noise, rng)
        queries = clustered_vectors(
            args.queries, args.dim, args.clusters, args.noise, np.random.default_rng([args.seed, size, 1])
        )
        records, metadata = bank_records(bank), bench_metadata(args.dim, size, args.seed)
        # flat first: its rows are the truth the others' recall is measured against
        truth: np.ndarray | None = None
        for kind in [IndexKind.FLAT, *(k for k in kinds if k is not IndexKind.FLAT)]:
            sweep = {IndexKind.IVF: args.nprobe_sweep, IndexKind.HNSW: args.ef_search_sweep}.get(kind)
            row, rows = bench_kind(kind, records, metadata, queries, args.k, args.seed, truth, sweep)
            if kind is IndexKind.FLAT:
                truth = rows
            assert truth is not None
            row["recall_at_k"] = recall_at_k(rows, truth)
            if kind not in kinds:
                continue
            results.append(row)
            print(
                f"{size:>9} {row['kind']:>5} {row['build_s']:>9.3f} {row['index_bytes'] / 2**20:>10.1f} "
                f"{row['rss_delta_bytes'] / 2**20:>9.1f} {row['queries_per_s']:>11.0f} {row['recall_at_k']:>9.4f}",
                flush=True,
            )
            for point in row.get("sweep", []):
                knob = "nprobe" if "nprobe" in point else "ef_search"
                print(f"{'':>15} {knob}={point[knob]:<5} {point['queries_per_s']:>30.0f} {point['recall_at_k']:>9.4f}")
        del records, bank

    report = {
        "machine": machine(),
        "settings": {
            "dim": args.dim,
            "queries": args.queries,
            "k": args.k,
            "clusters": args.clusters,
            "noise": args.noise,
            "seed": args.seed,
            "repeats": 3,
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
