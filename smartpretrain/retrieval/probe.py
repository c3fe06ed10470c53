"""The k-NN forecasting probe: how good is a representation before any fine-tuning?

Embed each scene's focal agent (its history up to the current step) with a backbone's agent embeddings
(``embed.sh agents=focal``) for the train split (the bank) and the val split (the queries). For each query, the
K nearest bank histories in embedding space (exact L2, :class:`~smartpretrain.retrieval.index.EmbeddingIndex`
``flat``) give K = 6 forecasts: their futures, each in its own agent frame at its current step, read in the
query's agent frame. Scored with :func:`~smartpretrain.metrics.forecasting.forecast_errors` against the query's
true future: ``minADE_6``, ``minFDE_6``, ``MR_6`` (2 m).

The retrieved mode's probability is a softmax of the negative squared distance over the K (only brier-minFDE
uses it). Bank rows whose future is not observed at every step are left out of the bank, so every forecast is
complete. References on the same bank and queries:

* ``raw``: k-NN on the flattened history coordinates in the agent frame (no learning at all);
* ``random``: K bank futures drawn uniformly (seeded).

A representation is useful to the degree that it beats ``raw``: the probe asks whether pre-training placed
histories with alike futures close together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from smartpretrain.metrics.forecasting import forecast_errors
from smartpretrain.retrieval.evaluation import random_rows
from smartpretrain.retrieval.index import exact_knn

__all__ = ["ProbeBank", "ProbeScores", "knn_forecast", "probe_scores", "random_forecast"]


@dataclass
class ProbeBank:
    """Bank vectors ``[N, D]`` with the futures ``[N, F, 2]`` (all steps observed) they forecast."""

    vectors: np.ndarray
    futures: np.ndarray

    def __post_init__(self) -> None:
        self.vectors = np.ascontiguousarray(self.vectors, np.float32)
        self.futures = np.asarray(self.futures, np.float32)
        if len(self.vectors) != len(self.futures):
            raise ValueError(f"{len(self.vectors)} bank vectors but {len(self.futures)} futures")

    @classmethod
    def complete(cls, vectors: np.ndarray, futures: np.ndarray, valid: np.ndarray) -> ProbeBank:
        """The rows whose future is observed at every step."""
        keep = np.asarray(valid, bool).all(axis=1)
        if not keep.any():
            raise ValueError("no bank row has a fully observed future")
        return cls(np.asarray(vectors)[keep], np.asarray(futures)[keep])


@dataclass(frozen=True)
class ProbeScores:
    """Means over the queries with an observed future."""

    method: str
    k: int
    min_ade: float
    min_fde: float
    miss_rate: float
    brier_min_fde: float
    num_queries: int

    def as_dict(self) -> dict[str, float | int | str]:
        k = self.k
        return {
            "method": self.method,
            f"minADE_{k}": self.min_ade,
            f"minFDE_{k}": self.min_fde,
            f"MR_{k}": self.miss_rate,
            f"brier-minFDE_{k}": self.brier_min_fde,
            "num_queries": self.num_queries,
        }


def knn_forecast(bank: ProbeBank, queries: np.ndarray, k: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """``[Q, k, F, 2]`` forecasts (the k nearest bank rows' futures) and ``[Q, k]`` probabilities."""
    if queries.shape[1] != bank.vectors.shape[1]:
        raise ValueError(f"queries are {queries.shape[1]}-dimensional, the bank {bank.vectors.shape[1]}")
    dist, rows = exact_knn(bank.vectors, np.ascontiguousarray(queries, np.float32), k)
    return bank.futures[rows], _softmax(-np.asarray(dist, np.float64))


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def probe_scores(method: str, pred: np.ndarray, prob: np.ndarray, target: np.ndarray, valid: np.ndarray) -> ProbeScores:
    """Scores of forecasts ``pred [Q, K, F, 2]`` with ``prob [Q, K]`` against ``target [Q, F, 2]``."""
    k = pred.shape[1]
    errors = forecast_errors(
        torch.from_numpy(np.asarray(pred)),
        torch.from_numpy(np.asarray(prob, np.float64)),
        torch.from_numpy(np.asarray(target)),
        torch.from_numpy(np.asarray(valid, bool)),
        k=k,
    )
    scored = errors.scored.numpy()
    return ProbeScores(
        method=method,
        k=k,
        min_ade=float(errors.ade.numpy()[scored].mean()),
        min_fde=float(errors.fde.numpy()[scored].mean()),
        miss_rate=float(errors.missed.numpy()[scored].mean()),
        brier_min_fde=float(errors.brier_fde.numpy()[scored].mean()),
        num_queries=int(scored.sum()),
    )


def random_forecast(bank: ProbeBank, num_queries: int, k: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k uniformly drawn bank futures per query, equal probabilities (the floor)."""
    rows = random_rows(num_queries, len(bank.futures), k, seed)
    return bank.futures[rows], np.full((num_queries, k), 1.0 / k)
