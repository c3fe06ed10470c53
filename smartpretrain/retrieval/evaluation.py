"""Retrieval quality of trajectory embeddings: how alike are the trajectories an index returns to the query?

For Q query windows (from val) and the rows ``[Q, k]`` that a method retrieved from a bank (train windows), per
query and for each k of ``ks`` (the first k of the ranked rows):

==================  ===============================================================================================
metric              definition
==================  ===============================================================================================
``minADE@k``        min over the k retrieved windows r of mean_t ||r_t − q_t|| (both in their own start frame, over
                    the query's valid steps)
``minFDE@k``        min over r of ||r_T − q_T|| at the query's last valid step
``purity@k``        the fraction of the k retrieved windows with the query's maneuver label
                    (:mod:`~smartpretrain.embeddings.maneuvers`)
==================  ===============================================================================================

minADE / minFDE are :func:`~smartpretrain.metrics.forecasting.forecast_errors` with the retrieved windows as the
k "modes" (the ADE of the mode with the best endpoint, the forecasting convention). Methods compared:

* an embedding index (:class:`~smartpretrain.retrieval.index.EmbeddingIndex`);
* ``raw``: exact k-NN on the flattened window coordinates (the upper reference: what the embedding compresses);
* ``random``: k bank rows drawn uniformly without replacement (seeded): the floor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from smartpretrain.embeddings.maneuvers import Maneuver
from smartpretrain.embeddings.trajectories import TrajectorySet
from smartpretrain.metrics.forecasting import forecast_errors
from smartpretrain.retrieval.index import exact_knn

__all__ = [
    "RetrievalScores",
    "evaluate_rows",
    "maneuver_counts",
    "maneuver_purity",
    "query_sample",
    "random_rows",
    "raw_coordinate_rows",
    "retrieval_errors",
    "score_line",
    "score_methods",
]


@dataclass(frozen=True)
class RetrievalScores:
    """Means over the queries for one method and one k."""

    method: str
    k: int
    min_ade: float
    min_fde: float
    purity: float
    num_queries: int

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "method": self.method,
            "k": self.k,
            f"minADE@{self.k}": self.min_ade,
            f"minFDE@{self.k}": self.min_fde,
            f"purity@{self.k}": self.purity,
            "num_queries": self.num_queries,
        }


def retrieval_errors(query: TrajectorySet, bank: TrajectorySet, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-query ``minADE@k`` and ``minFDE@k`` (``[Q]`` each) of the bank rows ``rows [Q, k]``."""
    rows = np.asarray(rows, np.int64)
    if rows.ndim != 2 or len(rows) != len(query):
        raise ValueError(f"rows must be [Q={len(query)}, k], got shape {rows.shape}")
    if query.num_steps != bank.num_steps:
        raise ValueError(f"queries have {query.num_steps} steps, the bank {bank.num_steps}")
    if (rows < 0).any():
        raise ValueError("rows hold -1 (fewer results than k): evaluate with a smaller k or a larger bank")
    pred = torch.from_numpy(bank.positions[rows])  # [Q, k, T, 2]
    prob = torch.full(rows.shape, 1.0 / rows.shape[1], dtype=torch.float64)
    errors = forecast_errors(
        pred, prob, torch.from_numpy(query.positions), torch.from_numpy(query.valid), k=rows.shape[1]
    )
    return errors.ade.numpy(), errors.fde.numpy()


def maneuver_purity(query_labels: np.ndarray, bank_labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``[Q]`` fraction of each query's retrieved rows whose label equals the query's."""
    return (np.asarray(bank_labels)[rows] == np.asarray(query_labels)[:, None]).mean(axis=1)


def random_rows(num_queries: int, bank_size: int, k: int, seed: int = 0) -> np.ndarray:
    """``[Q, k]`` bank rows drawn uniformly without replacement per query (the random reference)."""
    if k > bank_size:
        raise ValueError(f"k={k} exceeds the bank's {bank_size} rows")
    rng = np.random.default_rng(seed)
    # the k smallest of Q x N uniform keys is a uniform k-subset; chunks keep memory at chunk x N
    out = np.empty((num_queries, k), np.int64)
    chunk = max(1, 2**22 // max(bank_size, 1))
    for lo in range(0, num_queries, chunk):
        keys = rng.random((min(chunk, num_queries - lo), bank_size))
        out[lo : lo + len(keys)] = np.argpartition(keys, k - 1, axis=1)[:, :k]
    return out


def raw_coordinate_rows(query: TrajectorySet, bank: TrajectorySet, k: int) -> np.ndarray:
    """``[Q, k]`` exact k-NN on the flattened window coordinates (invalid steps are 0 in both)."""
    flat_bank = bank.positions.reshape(len(bank), -1)
    flat_query = query.positions.reshape(len(query), -1)
    _, rows = exact_knn(flat_bank, flat_query, k)
    return rows


def evaluate_rows(
    method: str, query: TrajectorySet, bank: TrajectorySet, rows: np.ndarray, ks: Sequence[int]
) -> list[RetrievalScores]:
    """The scores of one method's ranked rows ``[Q, >= max(ks)]`` at each k of ``ks``."""
    scores = []
    for k in sorted({int(k) for k in ks}):
        if k > rows.shape[1]:
            raise ValueError(f"{method}: {rows.shape[1]} rows per query, cannot score k={k}")
        top = rows[:, :k]
        ade, fde = retrieval_errors(query, bank, top)
        purity = maneuver_purity(query.maneuver, bank.maneuver, top)
        scores.append(
            RetrievalScores(method, k, float(np.nanmean(ade)), float(np.nanmean(fde)), float(purity.mean()), len(query))
        )
    return scores


def score_methods(
    query: TrajectorySet,
    bank: TrajectorySet,
    rows_by_method: Mapping[str, np.ndarray],
    ks: Sequence[int],
    seed: int = 0,
    references: bool = True,
) -> list[RetrievalScores]:
    """:func:`evaluate_rows` for every method of ``rows_by_method`` and, with ``references``, ``raw`` and
    ``random`` (seeded by ``seed``)."""
    k_max = max(int(k) for k in ks)
    methods = dict(rows_by_method)
    if references:
        methods["raw"] = raw_coordinate_rows(query, bank, k_max)
        methods["random"] = random_rows(len(query), len(bank), k_max, seed)
    out: list[RetrievalScores] = []
    for name, rows in methods.items():
        out.extend(evaluate_rows(name, query, bank, np.asarray(rows), ks))
    return out


def maneuver_counts(labels: np.ndarray) -> dict[str, int]:
    """How many windows carry each maneuver label (for the tables' context)."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    return {Maneuver(int(v)).label: int(c) for v, c in zip(values, counts, strict=True)}


def query_sample(num_queries: int, limit: int | None, seed: int) -> np.ndarray | None:
    """Sorted rows of a seeded sample of ``limit`` of ``num_queries`` queries; None when all are kept."""
    if limit is None or num_queries <= int(limit):
        return None
    return np.sort(np.random.default_rng(int(seed)).choice(num_queries, int(limit), replace=False))


def score_line(score: RetrievalScores) -> str:
    """One printed line of a score."""
    return (
        f"{score.method:>9} k={score.k:<3} minADE {score.min_ade:.3f}  minFDE {score.min_fde:.3f}  "
        f"purity {score.purity:.3f}"
    )
