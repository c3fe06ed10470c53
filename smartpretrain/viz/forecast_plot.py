"""Predicted futures over a scene plot: K trajectories of one agent, line opacity and labels by probability."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from smartpretrain.data.scene import Scene
from smartpretrain.viz.scene_plot import plot_scene, save_figure_png

PREDICTION_COLOR = "#9467bd"


def save_forecast_png(
    scene: Scene,
    trajectories: np.ndarray,
    probabilities: np.ndarray,
    path: str | os.PathLike[str],
    *,
    radius: float | None = 60.0,
    title: str | None = None,
) -> Path:
    """Plot ``scene`` (history solid, ground-truth future dashed) with ``trajectories [K, F, 2]`` (scene frame)
    drawn over it, thicker and more opaque for more probable modes, each end marked with its probability."""
    fig = Figure(figsize=(9.0, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = plot_scene(scene, fig.add_subplot(), radius=radius, title=title)
    order = np.argsort(-probabilities)
    top = float(probabilities.max()) if len(probabilities) else 1.0
    for k in order:
        p = float(probabilities[k])
        alpha = 0.35 + 0.65 * p / max(top, 1e-9)
        traj = trajectories[k]
        ax.plot(
            traj[:, 0], traj[:, 1], color=PREDICTION_COLOR, lw=1.0 + 2.0 * p / max(top, 1e-9), alpha=alpha, zorder=6
        )
        ax.plot(traj[-1, 0], traj[-1, 1], "o", color=PREDICTION_COLOR, ms=3, alpha=alpha, zorder=6)
        ax.annotate(f"{p:.2f}", traj[-1], fontsize=7, color=PREDICTION_COLOR, xytext=(3, 3), textcoords="offset points")
    ax.plot([], [], color=PREDICTION_COLOR, lw=2, label="predicted (K modes)")
    return save_figure_png(fig, path)
