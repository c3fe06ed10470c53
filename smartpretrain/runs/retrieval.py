"""The work behind ``python -m smartpretrain.retrieve`` (``retrieve.sh``): build a FAISS index from an embeddings
file, search it, score retrieval, and run the k-NN forecasting probe of a backbone.

``action=build``    ``embeddings=<file.parquet>`` → ``index=<folder>`` (``index_settings.*``: flat | ivf | hnsw)
``action=search``   ``index=<folder>`` and ``query.scenario_id`` (+ ``query.track_id``, ``query.dataset``), or
                    ``query.trajectory=[[x, y], ...]`` (agent-frame positions, embedded with the index's own
                    encoder checkpoint, verified by sha256); prints the k nearest ids and distances
``action=evaluate`` ``index=<folder>`` built from ``train_embed`` vectors, ``queries=<file.parquet>`` of the same
                    encoder: retrieval minADE@k / minFDE@k / purity@k against the raw-coordinate and random
                    references (:mod:`smartpretrain.retrieval.evaluation`); the windows are re-cut from the caches
                    the files name, and refused if a cache changed since (fingerprint)
``action=probe``    ``bank=<train.parquet> queries=<val.parquet>`` (``embed.sh agents=focal`` of one backbone):
                    the k-NN forecasting probe (:mod:`smartpretrain.retrieval.probe`)

Results go to ``retrieval.json`` / ``probe.json`` in the run folder (with ``config.yaml`` and ``seed.json``);
``plot=true`` adds PNGs (:mod:`smartpretrain.viz.retrieval_plot`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from smartpretrain.embeddings.extract import cache_fingerprint
from smartpretrain.embeddings.records import (
    AgentSelection,
    CacheSplit,
    EmbeddingFileError,
    EmbeddingMetadata,
    read_embeddings,
)
from smartpretrain.embeddings.trajectories import (
    TrajectorySet,
    TrajectoryWindow,
    WindowSpec,
    agent_futures,
    agent_history,
    extract_windows,
)
from smartpretrain.io.atomic import atomic_write_json
from smartpretrain.io.checkpoint_sources import sha256_file
from smartpretrain.io.checkpoints import CheckpointError
from smartpretrain.retrieval.evaluation import maneuver_counts, query_sample, score_line, score_methods
from smartpretrain.retrieval.index import (
    QUERY_IDENTITY_FIELDS,
    EmbeddingIndex,
    IndexKind,
    IndexSettings,
    RetrievalIndexError,
)
from smartpretrain.retrieval.probe import ProbeBank, knn_forecast, probe_scores, random_forecast
from smartpretrain.runs.guards import RunConfigError, check_choice, check_range
from smartpretrain.runs.trainer import save_run_config
from smartpretrain.runs.trajectory_embedding import ENCODER_MODEL, embed_windows, load_encoder

__all__ = ["ACTIONS", "EXPECTED_ERRORS", "RetrieveError", "build", "evaluate", "probe", "run", "search"]

ACTIONS = ("build", "search", "evaluate", "probe")
EXPECTED_ERRORS = (
    RunConfigError,
    CheckpointError,
    EmbeddingFileError,
    RetrievalIndexError,
    FileNotFoundError,
    ValueError,
)


class RetrieveError(RunConfigError):
    """A retrieval action that cannot run: a missing option or file, or files that do not belong together."""


def _need(cfg: DictConfig, name: str) -> str:
    value = OmegaConf.select(cfg, name)
    if value in (None, ""):
        raise RetrieveError(f"action={cfg.action} needs {name}=<...>")
    return str(value)


def build(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Index the vectors of ``cfg.embeddings`` into ``cfg.index``."""
    source = Path(_need(cfg, "embeddings"))
    target = Path(_need(cfg, "index"))
    settings = IndexSettings(**OmegaConf.to_container(cfg.index_settings))
    file = read_embeddings(source)
    index = EmbeddingIndex.build(file.records, file.metadata, settings)
    index.save(target)
    print(f"indexed {len(file.records)} vectors ({file.metadata.summary()}) as {settings.kind} -> {target}", flush=True)
    return {"index": str(target), "num_vectors": len(file.records), "kind": str(settings.kind)}


def _encoder_of(index: EmbeddingIndex) -> torch.nn.Module:
    meta = index.metadata
    if meta.model != ENCODER_MODEL or not meta.checkpoint:
        raise RetrieveError(f"query.trajectory needs an index of train_embed vectors; this one holds {meta.summary()}")
    path = Path(meta.checkpoint)
    if not path.is_file():
        raise RetrieveError(f"the index's encoder checkpoint {path} is gone: embed the trajectory with it first")
    if sha256_file(path) != meta.checkpoint_sha256:
        raise RetrieveError(f"{path} changed since the index was built (sha256): its vectors would not be comparable")
    return load_encoder(path)


def search(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """The ``cfg.k`` nearest items to one query, printed and returned."""
    index = EmbeddingIndex.load(Path(_need(cfg, "index")))
    k = int(cfg.k)
    q = cfg.query
    if q.trajectory is not None:
        points = np.asarray(OmegaConf.to_container(q.trajectory), np.float32)
        encoder = _encoder_of(index)
        steps = encoder.config.num_steps
        if points.ndim != 2 or points.shape != (steps, 2):
            raise RetrieveError(
                f"query.trajectory must be {steps} [x, y] points (the encoder's window), got {points.shape}"
            )
        windows = TrajectorySet(
            ["query"], ["query"], ["query"], ["query"], [0], points[None], np.ones((1, steps), bool), np.zeros(1)
        )
        dist, rows = index.search(embed_windows(encoder, windows), k)
        dist, rows = dist[0], rows[0]
    else:
        dist, rows = index.search_id(_need(cfg, "query.scenario_id"), q.track_id, k, dataset=q.dataset)
    hits = []
    for d, r in zip(np.asarray(dist).reshape(-1), np.asarray(rows).reshape(-1), strict=True):
        if r < 0:
            continue
        sid, tid, ds, role, step = index.ids.row(int(r))
        hits.append(
            {"scenario_id": sid, "track_id": tid, "dataset": ds, "role": role, "step": step, "distance": float(d)}
        )
        print(f"{float(d):10.4f}  {ds}  {sid}  track {tid} ({role}) step {step}", flush=True)
    return {"hits": hits}


def _window_spec(meta: EmbeddingMetadata) -> WindowSpec:
    w = (meta.model_config or {}).get("window")
    if meta.model != ENCODER_MODEL or not w:
        raise RetrieveError(f"action=evaluate needs train_embed vectors (with their window); got {meta.summary()}")
    return WindowSpec(
        TrajectoryWindow(int(w["num_steps"]), int(w["start_step"])),
        AgentSelection(w["agents"]),
        min_valid_fraction=float(w["min_valid_fraction"]),
    )


def _fresh_caches(meta: EmbeddingMetadata, role: str) -> list[CacheSplit]:
    """The cache splits of ``meta``, each still there and unchanged since it was embedded."""
    for split in meta.caches:
        path = Path(split.path)
        if not path.is_dir():
            raise RetrieveError(f"the {role}'s cache {path} is gone: its windows cannot be re-cut")
        if cache_fingerprint(path) != split.fingerprint:
            raise RetrieveError(
                f"the {role}'s cache {path} changed since it was embedded (fingerprint): embed it again"
            )
    return list(meta.caches)


def _cut_windows(meta: EmbeddingMetadata, spec: WindowSpec, role: str) -> TrajectorySet:
    """The windows of every cache split of ``meta`` (its first ``num_scenes`` each), in the order of the splits."""
    parts = [extract_windows(Path(c.path), spec, c.num_scenes) for c in _fresh_caches(meta, role)]
    return TrajectorySet.concat(parts, spec.window.num_steps)


def _single_cache(meta: EmbeddingMetadata, role: str) -> Path:
    """The one fresh cache split of backbone vectors (the probe reads futures from it)."""
    if len(meta.caches) != 1:
        raise RetrieveError(f"action=probe takes the vectors of one cache split; the {role} has {meta.cache_names()}")
    return Path(_fresh_caches(meta, role)[0].path)


def _aligned(windows: TrajectorySet, keys: list[tuple[str, str, str, int]], role: str) -> TrajectorySet:
    """``windows`` in the order of ``keys`` (the rows of an embeddings file)."""
    where = {key: i for i, key in enumerate(windows.keys())}
    missing = [k for k in keys if k not in where]
    if missing:
        raise RetrieveError(f"{len(missing)} {role} rows have no window in their cache (first: {missing[0]})")
    return windows.take(np.array([where[k] for k in keys], np.int64))


def evaluate(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Retrieval scores of an index for the queries of ``cfg.queries``; writes ``retrieval.json``."""
    index = EmbeddingIndex.load(Path(_need(cfg, "index")))
    queries = read_embeddings(Path(_need(cfg, "queries")))
    ks = [int(k) for k in cfg.ks]
    # the search first: queries of another encoder are refused before any window is cut
    _, rows = index.search_records(queries.records, queries.metadata, max(ks))
    spec = _window_spec(index.metadata)
    if _window_spec(queries.metadata) != spec:
        raise RetrieveError("the queries were cut with another window than the index's vectors")
    bank = _aligned(_cut_windows(index.metadata, spec, "index"), index.ids.keys(), "index")
    records = queries.records
    qkeys = list(zip(records.dataset, records.scenario_id, records.track_id, records.step.tolist(), strict=True))
    qwin = _aligned(_cut_windows(queries.metadata, spec, "queries"), qkeys, "queries")
    vectors = records.vector
    pick = query_sample(len(qwin), cfg.max_queries, int(cfg.seed))
    if pick is not None:
        qwin, vectors, rows = qwin.take(pick), vectors[pick], rows[pick]
    scores = score_methods(qwin, bank, {"embedding": rows}, ks, seed=int(cfg.seed))
    out = {
        "index": str(cfg.index),
        "queries": str(cfg.queries),
        "embedding": index.metadata.summary(),
        "num_bank": len(bank),
        "num_queries": len(qwin),
        "maneuvers_queries": maneuver_counts(qwin.maneuver),
        "scores": [s.as_dict() for s in scores],
    }
    atomic_write_json(out_dir / "retrieval.json", out)
    for s in scores:
        print(score_line(s), flush=True)
    if cfg.plot:
        from smartpretrain.viz.retrieval_plot import plot_embedding_map, plot_query_neighbours

        plot_query_neighbours(out_dir / "query_neighbours.png", qwin, bank, rows, num_queries=4)
        plot_embedding_map(out_dir / "embedding_map.png", vectors, qwin.maneuver)
    return out


def probe(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """The k-NN forecasting probe of ``cfg.bank`` / ``cfg.queries``; writes ``probe.json``."""
    bank_file = read_embeddings(Path(_need(cfg, "bank")))
    query_file = read_embeddings(Path(_need(cfg, "queries")))
    # the same weights and the same reduction made both files
    same = {f: getattr(bank_file.metadata, f) for f in (*QUERY_IDENTITY_FIELDS, "reduction")}
    problem = query_file.metadata.mismatch(same)
    if problem:
        raise RetrieveError(f"{cfg.queries} and {cfg.bank} were embedded differently: {problem}")
    k = int(cfg.k)
    bank_cache, query_cache = _single_cache(bank_file.metadata, "bank"), _single_cache(query_file.metadata, "queries")
    future_steps = int(cfg.num_future_steps)
    history_steps = int(cfg.num_history_steps)
    bank_future, bank_valid = agent_futures(bank_cache, bank_file.records, future_steps)
    target, target_valid = agent_futures(query_cache, query_file.records, future_steps)
    bank = ProbeBank.complete(bank_file.records.vector, bank_future, bank_valid)
    results = [probe_scores("embedding", *knn_forecast(bank, query_file.records.vector, k), target, target_valid)]
    bank_hist, _ = agent_history(bank_cache, bank_file.records, history_steps)
    query_hist, _ = agent_history(query_cache, query_file.records, history_steps)
    raw_bank = ProbeBank.complete(bank_hist.reshape(len(bank_hist), -1), bank_future, bank_valid)
    results.append(
        probe_scores("raw", *knn_forecast(raw_bank, query_hist.reshape(len(query_hist), -1), k), target, target_valid)
    )
    results.append(probe_scores("random", *random_forecast(bank, len(target), k, int(cfg.seed)), target, target_valid))
    out = {
        "bank": str(cfg.bank),
        "queries": str(cfg.queries),
        "embedding": bank_file.metadata.summary(),
        "num_bank": len(bank.futures),
        "k": k,
        "scores": [r.as_dict() for r in results],
    }
    atomic_write_json(out_dir / "probe.json", out)
    for r in results:
        print(
            f"{r.method:>9}  minADE_{k} {r.min_ade:.3f}  minFDE_{k} {r.min_fde:.3f}  MR_{k} {r.miss_rate:.3f}",
            flush=True,
        )
    return out


def check_options(cfg: DictConfig) -> None:
    try:
        check_choice("action", cfg.action, ACTIONS)
        check_range("k", cfg.k, 1, integer=True)
        check_range("max_queries", cfg.max_queries, 1, integer=True, allow_none=True)
        check_range("num_future_steps", cfg.num_future_steps, 1, integer=True)
        check_range("num_history_steps", cfg.num_history_steps, 1, integer=True)
        check_choice("index_settings.kind", cfg.index_settings.kind, [k.value for k in IndexKind])
    except ValueError as exc:
        raise RetrieveError(str(exc)) from None


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Dispatch ``cfg.action``."""
    check_options(cfg)
    save_run_config(cfg, out_dir)
    return {"build": build, "search": search, "evaluate": evaluate, "probe": probe}[str(cfg.action)](cfg, out_dir)
