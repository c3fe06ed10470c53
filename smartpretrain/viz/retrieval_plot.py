"""Retrieval plots: queries with their retrieved trajectories, and a 2-D map of embeddings by maneuver."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from smartpretrain.embeddings.maneuvers import Maneuver
from smartpretrain.embeddings.trajectories import TrajectorySet
from smartpretrain.viz.scene_plot import save_figure_png

__all__ = ["pca_2d", "plot_embedding_map", "plot_query_neighbours"]

MANEUVER_COLORS = {
    Maneuver.STATIONARY: "#7f7f7f",
    Maneuver.STRAIGHT: "#1f77b4",
    Maneuver.LEFT: "#2ca02c",
    Maneuver.RIGHT: "#d62728",
    Maneuver.U_TURN: "#9467bd",
    Maneuver.LANE_CHANGE: "#ff7f0e",
}


def _track(ax: Axes, positions: np.ndarray, valid: np.ndarray, **style: object) -> None:
    pts = positions[valid]
    if len(pts):
        ax.plot(pts[:, 0], pts[:, 1], **style)


def plot_query_neighbours(
    path: str | os.PathLike[str],
    queries: TrajectorySet,
    bank: TrajectorySet,
    rows: np.ndarray,
    num_queries: int = 4,
    seed: int = 0,
) -> Path:
    """One panel per query (a seeded sample of at most ``num_queries``, one per maneuver where possible): the query
    (black) and its retrieved bank trajectories (``rows [Q, k]``, coloured by their maneuver), in the start frame."""
    rng = np.random.default_rng(seed)
    picks: list[int] = []
    for label in np.unique(queries.maneuver):  # spread the panels over maneuvers
        candidates = np.flatnonzero(queries.maneuver == label)
        picks.append(int(rng.choice(candidates)))
    rng.shuffle(picks)
    picks = sorted(picks[:num_queries])
    fig = Figure(figsize=(4.0 * max(len(picks), 1), 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    for n, q in enumerate(picks):
        ax = fig.add_subplot(1, len(picks), n + 1)
        for r in rows[q]:
            color = MANEUVER_COLORS[Maneuver(int(bank.maneuver[r]))]
            _track(ax, bank.positions[r], bank.valid[r], color=color, lw=1.0, alpha=0.6)
        _track(ax, queries.positions[q], queries.valid[q], color="black", lw=2.2, label="query")
        ax.set_title(f"{Maneuver(int(queries.maneuver[q])).label}, k={rows.shape[1]}", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(alpha=0.3)
    if fig.axes:
        last = fig.axes[-1]
        for label, color in MANEUVER_COLORS.items():
            last.plot([], [], color=color, label=label.label)
        last.legend(fontsize=7, loc="best")
    return save_figure_png(fig, path)


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """``[N, 2]`` projection on the two leading principal components (``[N, 2]`` as is when D <= 2)."""
    x = np.asarray(vectors, np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    if x.shape[1] <= 2:
        return np.pad(x, ((0, 0), (0, 2 - x.shape[1])))
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def plot_embedding_map(
    path: str | os.PathLike[str], vectors: np.ndarray, labels: np.ndarray, max_points: int = 5000, seed: int = 0
) -> Path:
    """Embeddings projected to 2-D (PCA), one dot per trajectory coloured by maneuver (a seeded sample)."""
    vectors, labels = np.asarray(vectors), np.asarray(labels)
    if len(vectors) > max_points:
        keep = np.random.default_rng(seed).choice(len(vectors), max_points, replace=False)
        vectors, labels = vectors[keep], labels[keep]
    xy = pca_2d(vectors)
    fig = Figure(figsize=(6.5, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, color in MANEUVER_COLORS.items():
        mask = labels == int(label)
        if mask.any():
            ax.scatter(xy[mask, 0], xy[mask, 1], s=4, color=color, alpha=0.6, label=f"{label.label} ({mask.sum()})")
    ax.set_title(f"{vectors.shape[1]}-d embeddings, PCA", fontsize=10)
    ax.legend(fontsize=7, markerscale=3)
    ax.grid(alpha=0.3)
    return save_figure_png(fig, path)
