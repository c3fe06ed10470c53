"""Visualisation of unified scenes (matplotlib, Agg only; no pyplot state)."""

from smartpretrain.viz.scene_plot import plot_scene, save_scene_png

__all__ = ["plot_scene", "save_scene_png"]
