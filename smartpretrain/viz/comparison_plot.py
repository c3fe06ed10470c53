"""Two fine-tuned models side by side: their val curves, and their forecasts of one scene over its ground truth."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from smartpretrain.data.scene import Scene
from smartpretrain.viz.scene_plot import plot_scene, save_figure_png

__all__ = ["ARM_COLORS", "save_comparison_png"]

#: line colour per arm, apart from the scene plot's role colours (others cycle through the rest)
ARM_COLORS = {"pretrained": "#ff7f0e", "scratch": "#9467bd"}
_OTHER_COLORS = ("#17becf", "#8c564b", "#e377c2", "#bcbd22")


def _color(arm: str, i: int) -> str:
    return ARM_COLORS.get(arm, _OTHER_COLORS[i % len(_OTHER_COLORS)])


def save_comparison_png(
    path: str | os.PathLike[str],
    curves: Mapping[str, Sequence[Mapping[str, float]]],
    metric: str,
    scene: Scene | None = None,
    forecasts: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    *,
    radius: float = 40.0,
    title: str | None = None,
) -> Path:
    """Left: ``metric`` per epoch for each arm (``curves[arm]`` = rows with ``"epoch"`` and ``metric``, as
    :func:`~smartpretrain.io.run_outputs.epoch_metrics` returns them). Right (with ``scene``): the scene with its
    ground truth and each arm's K forecast trajectories of its focal agent (``forecasts[arm]`` = ``[K, F, 2]``
    scene-frame positions and ``[K]`` probabilities; line width by probability). Written atomically."""
    with_scene = scene is not None and bool(forecasts)
    fig = Figure(figsize=(15.0 if with_scene else 6.5, 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, width_ratios=[1, 1.25]) if with_scene else [fig.add_subplot()]
    ax = axes[0]
    for i, (arm, rows) in enumerate(curves.items()):
        points = [(int(r["epoch"]) + 1, float(r[metric])) for r in rows if metric in r]
        if points:
            x, y = zip(*points, strict=True)
            ax.plot(x, y, "o-", color=_color(arm, i), label=arm, lw=1.8, ms=4)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("fine-tuning epoch", fontsize=9)
    ax.set_ylabel(f"val {metric} [m]", fontsize=9)
    ax.set_title(f"val {metric} per fine-tuning epoch", fontsize=10)
    ax.grid(True, lw=0.3, color="#dddddd")
    ax.legend(fontsize=9)
    ax.tick_params(labelsize=8)
    if with_scene:
        assert scene is not None and forecasts is not None
        sax = plot_scene(scene, axes[1], radius=radius, title=title)
        scene_legend = sax.get_legend()
        handles = list(scene_legend.legend_handles) if scene_legend is not None else []
        for i, (arm, (trajectories, probabilities)) in enumerate(forecasts.items()):
            color = _color(arm, i)
            top = max(float(np.max(probabilities)), 1e-9)
            for traj, p in zip(trajectories, probabilities, strict=True):
                sax.plot(traj[:, 0], traj[:, 1], color=color, lw=0.8 + 2.2 * float(p) / top, alpha=0.85, zorder=7)
                sax.plot(traj[-1, 0], traj[-1, 1], "o", color=color, ms=3, zorder=7)
            handles.append(Line2D([], [], color=color, lw=2.0, label=f"{arm}: {len(trajectories)} modes"))
        # one legend (the scene's roles, then the arms) beside the axes, where the scene plot puts its own
        sax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8,
                   frameon=False, handlelength=2.2)  # fmt: skip
    return save_figure_png(fig, path)
