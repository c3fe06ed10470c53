"""Bird's-eye plot of one unified :class:`~smartpretrain.data.scene.Scene`: vector map plus agent tracks.

Everything is drawn in the scene's local frame (metres relative to ``scene.origin``). Figures are made with
:class:`matplotlib.figure.Figure` on an Agg canvas, never through ``pyplot``, so plotting from a library, a
test or a DataLoader worker neither opens windows nor leaks global figure state.

    ax = plot_scene(scene)                       # a new figure; ax.figure.savefig(...) it yourself
    save_scene_png(scene, "scene.png", radius=50) # atomic write of a PNG
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.markers import MarkerStyle
from matplotlib.patches import Polygon
from matplotlib.path import Path as MplPath
from matplotlib.transforms import Affine2D

from smartpretrain.data.scene import Scene
from smartpretrain.data.taxonomy import AgentRole, LineType, PolygonType, Side
from smartpretrain.io.atomic import atomic_output

__all__ = ["ROLE_COLORS", "SDC_COLOR", "plot_scene", "save_figure_png", "save_scene_png"]

# ---------------------------------------------------------------------------------------------------------------
# Styles

ROLE_COLORS: dict[AgentRole, str] = {
    AgentRole.FOCAL: "#d62728",
    AgentRole.SCORED: "#1f77b4",
    AgentRole.UNSCORED: "#6f6f6f",
    AgentRole.FRAGMENT: "#a3a3a3",
}
SDC_COLOR = "#2ca02c"
_ROLE_LABELS = {
    AgentRole.FOCAL: "focal",
    AgentRole.SCORED: "scored",
    AgentRole.UNSCORED: "unscored",
    AgentRole.FRAGMENT: "fragment",
}
# (line width, z-order) of an agent's track by role; the SDC uses the scored style.
_ROLE_LINE = {
    AgentRole.FOCAL: (1.6, 8.0),
    AgentRole.SCORED: (1.3, 7.0),
    AgentRole.UNSCORED: (0.9, 6.0),
    AgentRole.FRAGMENT: (0.8, 5.0),
}
_SDC_LINE = (1.3, 7.5)

_LANE_FILL = {
    PolygonType.VEHICLE_LANE: "#e4e4e4",
    PolygonType.BIKE_LANE: "#e2eedd",
    PolygonType.BUS_LANE: "#f1e1e1",
}
_YELLOW = "#e0a500"
_WHITE = "#a9a9a9"  # white markings, drawn white-ish grey to stay visible on a white background
_BLUE = "#4a78c8"
_NO_MARK = "#cfcfcf"
_CENTERLINE = "#9c9c9c"
_ROAD_EDGE = "#5f5f5f"
_DASHED = (0, (4.0, 3.0))
_DOTTED = (0, (1.0, 2.5))

# A dart pointing along +x, in marker units; rotated per agent to show its heading.
_ARROW = MplPath(
    [(0.75, 0.0), (-0.55, 0.5), (-0.25, 0.0), (-0.55, -0.5), (0.75, 0.0)],
    [MplPath.MOVETO, MplPath.LINETO, MplPath.LINETO, MplPath.LINETO, MplPath.CLOSEPOLY],
)


def _enum_name(enum: type, value: int) -> str:
    try:
        return enum(int(value)).name
    except ValueError:
        return f"<{int(value)}>"


def _mark_style(line_type: int) -> tuple[str, float, Any]:
    """(colour, width, dash pattern) of a lane boundary / road line of this :class:`LineType`."""
    name = _enum_name(LineType, line_type)
    if line_type in (LineType.NONE, LineType.UNKNOWN) or name.startswith("<"):
        return _NO_MARK, 0.4, "solid"
    dashed = name.startswith(("DASHED_", "DOUBLE_DASH_"))
    width = 0.9 if name.startswith("DOUBLE_") else 0.6
    color = _YELLOW if "YELLOW" in name else _BLUE if "BLUE" in name else _WHITE
    return color, width, _DASHED if dashed else "solid"


# ---------------------------------------------------------------------------------------------------------------
# Map


def _strip(points: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray | None:
    """Outline of the area between two boundary polylines (either orientation), or None when degenerate."""
    if len(left) < 2 or len(right) < 2:
        return None
    same = np.linalg.norm(left[0] - right[0]) + np.linalg.norm(left[-1] - right[-1])
    crossed = np.linalg.norm(left[0] - right[-1]) + np.linalg.norm(left[-1] - right[0])
    return np.concatenate([left, right[::-1] if same <= crossed else right])


def _draw_map(ax: Axes, scene: Scene) -> None:
    m = scene.map
    if m.num_polygons == 0 or m.num_polylines == 0:
        return
    xy = np.asarray(m.points[:, :2], dtype=np.float64)
    offsets = m.polyline_offsets
    fills: dict[int, list[np.ndarray]] = defaultdict(list)
    crosswalks: list[np.ndarray] = []
    lines: dict[tuple[str, float, Any, float], list[np.ndarray]] = defaultdict(list)
    dots: list[np.ndarray] = []

    for polygon in range(m.num_polygons):
        kind = int(m.polygon_type[polygon])
        members = m.polylines_of(polygon)
        sides = {int(m.polyline_side[k]): k for k in members[::-1]}  # first polyline of each side wins
        outline = None
        if Side.LEFT in sides and Side.RIGHT in sides:
            left, right = (xy[offsets[sides[s]] : offsets[sides[s] + 1]] for s in (Side.LEFT, Side.RIGHT))
            outline = _strip(xy, left, right)
        if kind == PolygonType.CROSSWALK:
            if outline is not None:
                crosswalks.append(outline)
                continue  # its edges and mid-line are the hatched patch
        elif kind in _LANE_FILL and outline is not None:
            fills[kind].append(outline)
        for k in members:
            pts = xy[offsets[k] : offsets[k + 1]]
            if len(pts) == 1:
                dots.append(pts[0])
                continue
            if len(pts) < 2:
                continue
            line_type = int(m.polyline_type[k])
            if line_type == LineType.CENTERLINE:
                if kind == PolygonType.CROSSWALK:
                    continue
                key = (_CENTERLINE, 0.5, _DOTTED, 1.0)
            elif kind == PolygonType.ROAD_EDGE:
                key = (_ROAD_EDGE, 0.9, "solid", 2.0)
            else:
                color, width, dash = _mark_style(line_type)
                key = (color, width, dash, 2.0 if color != _NO_MARK else 1.5)
            lines[key].append(pts)

    for kind, outlines in fills.items():
        ax.add_collection(
            PolyCollection(
                outlines, facecolors=_LANE_FILL[PolygonType(kind)], edgecolors="none", alpha=0.75, zorder=0.0
            )
        )
    for outline in crosswalks:
        patch = Polygon(
            outline, closed=True, facecolor="#f6f6f6", edgecolor="#a5a5a5", hatch="////", linewidth=0.5, zorder=0.5
        )
        ax.add_patch(patch)
    for (color, width, dash, z), segments in lines.items():
        ax.add_collection(LineCollection(segments, colors=color, linewidths=width, linestyles=dash, zorder=z))
    if dots:
        d = np.asarray(dots)
        ax.scatter(d[:, 0], d[:, 1], s=10, c="#b03030", marker="o", linewidths=0, zorder=2.5)


# ---------------------------------------------------------------------------------------------------------------
# Agents


def _agent_style(scene: Scene, i: int) -> tuple[str, float, float, str]:
    """(colour, line width, z-order, legend key) of agent ``i``."""
    a = scene.agents
    if bool(a.is_sdc[i]):
        return (SDC_COLOR, *_SDC_LINE, "sdc")
    role = int(a.role[i])
    try:
        r = AgentRole(role)
    except ValueError:
        r = AgentRole.UNSCORED
    return (ROLE_COLORS[r], *_ROLE_LINE[r], _ROLE_LABELS[r])


def _box(center: np.ndarray, heading: float, length: float, width: float) -> np.ndarray:
    c, s = np.cos(heading), np.sin(heading)
    half = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.float64) * [length / 2, width / 2]
    return center + half @ np.array([[c, s], [-s, c]])


def _draw_agents(ax: Axes, scene: Scene, show_future: bool) -> set[str]:
    a = scene.agents
    cur = scene.current_step
    present: set[str] = set()
    for i in range(a.num_agents):
        valid = np.asarray(a.valid[i], dtype=bool)
        if not valid.any():
            continue
        color, width, z, key = _agent_style(scene, i)
        present.add(key)
        xy = np.asarray(a.position[i, :, :2], dtype=np.float64).copy()
        xy[~valid] = np.nan  # NaNs break the line: no segment is drawn across a gap
        aid = a.ids[i]
        hist = xy[: cur + 1]
        if np.isfinite(hist[:, 0]).any():
            ax.plot(
                hist[:, 0],
                hist[:, 1],
                color=color,
                lw=width,
                solid_capstyle="round",
                zorder=z,
                gid=f"agent/{aid}/history",
            )
        if show_future and cur + 1 < scene.num_steps:
            fut = xy[cur:]  # starts at the present so the dashes continue the history
            if np.isfinite(fut[1:, 0]).any():
                ax.plot(
                    fut[:, 0],
                    fut[:, 1],
                    color=color,
                    lw=width,
                    ls=(0, (3.0, 2.0)),
                    alpha=0.85,
                    zorder=z,
                    gid=f"agent/{aid}/future",
                )
        if not valid[cur]:
            continue
        pos, heading = xy[cur], float(a.heading[i, cur])
        if a.size is not None and float(a.size[i, 0]) > 0 and float(a.size[i, 1]) > 0:
            length, width_m = float(a.size[i, 0]), float(a.size[i, 1])
            ax.add_patch(
                Polygon(
                    _box(pos, heading, length, width_m),
                    closed=True,
                    facecolor=color,
                    edgecolor="black",
                    linewidth=0.4,
                    alpha=0.9,
                    zorder=z + 0.5,
                    gid=f"agent/{aid}/box",
                )
            )
            tip = pos + 0.5 * length * np.array([np.cos(heading), np.sin(heading)])
            ax.plot([pos[0], tip[0]], [pos[1], tip[1]], color="black", lw=0.6, zorder=z + 0.6)
        else:
            marker = MarkerStyle(_ARROW, transform=Affine2D().rotate(heading))
            size = 11.0 if key in ("focal", "sdc") else 9.0 if key == "scored" else 6.5
            ax.plot(
                [pos[0]],
                [pos[1]],
                ls="none",
                marker=marker,
                markersize=size,
                markerfacecolor=color,
                markeredgecolor="black",
                markeredgewidth=0.4,
                zorder=z + 0.5,
                gid=f"agent/{aid}/current",
            )
    return present


def _legend(ax: Axes, present: set[str], show_future: bool) -> None:
    order = [
        ("focal", ROLE_COLORS[AgentRole.FOCAL], "focal"),
        ("sdc", SDC_COLOR, "SDC / AV"),
        ("scored", ROLE_COLORS[AgentRole.SCORED], "scored"),
        ("unscored", ROLE_COLORS[AgentRole.UNSCORED], "unscored"),
        ("fragment", ROLE_COLORS[AgentRole.FRAGMENT], "fragment"),
    ]
    handles = [Line2D([], [], color=c, lw=2.0, label=label) for key, c, label in order if key in present]
    if not handles:
        return
    handles.append(Line2D([], [], color="black", lw=1.0, label="history"))
    if show_future:
        handles.append(Line2D([], [], color="black", lw=1.0, ls=(0, (3.0, 2.0)), label="future"))
    ax.legend(
        handles=handles,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        fontsize=8,
        frameon=False,
        handlelength=2.2,
    )


# ---------------------------------------------------------------------------------------------------------------
# View


def _focus(scene: Scene) -> np.ndarray:
    """The focal agent's position at the present (or its observation nearest before / after it); else 0."""
    a = scene.agents
    try:
        i = scene.focal_index
    except IndexError:
        return np.zeros(2)
    steps = np.flatnonzero(a.valid[i])
    if not len(steps):
        return np.zeros(2)
    before = steps[steps <= scene.current_step]
    step = before[-1] if len(before) else steps[0]
    return np.asarray(a.position[i, step, :2], dtype=np.float64)


def _extent(scene: Scene, show_future: bool) -> tuple[np.ndarray, np.ndarray]:
    a = scene.agents
    valid = np.asarray(a.valid, dtype=bool)
    if not show_future:
        valid = valid.copy()
        valid[:, scene.current_step + 1 :] = False
    pts = [np.asarray(a.position[..., :2][valid], dtype=np.float64), np.asarray(scene.map.points[:, :2], np.float64)]
    allpts = np.concatenate(pts) if any(len(p) for p in pts) else np.zeros((1, 2))
    lo, hi = allpts.min(0), allpts.max(0)
    pad = 0.05 * float((hi - lo).max()) + 2.0
    return lo - pad, hi + pad


def _default_title(scene: Scene) -> str:
    dataset = str(getattr(scene.dataset, "value", scene.dataset)).upper()
    return f"{dataset} {scene.scenario_id} · {scene.city} · present = step {scene.current_step} of {scene.num_steps}"


def plot_scene(
    scene: Scene,
    ax: Axes | None = None,
    *,
    radius: float | None = 80.0,
    show_future: bool = True,
    title: str | None = None,
) -> Axes:
    """Draw ``scene`` (map, agent histories and futures) into ``ax`` (a new Agg-backed figure when None).

    Args:
        scene: the scene, drawn in its local frame (metres relative to ``scene.origin``).
        ax: axes to draw into; None creates a new :class:`~matplotlib.figure.Figure` (not registered with
            pyplot, so nothing needs closing).
        radius: half-width in metres of the square view centred on the focal agent's present position;
            None fits everything (agents and map).
        show_future: also draw the steps after ``current_step`` (dashed).
        title: axes title; None writes dataset, scenario id, city and the present step.

    Returns:
        The axes (``ax.figure`` is the figure).
    """
    if ax is None:
        fig = Figure(figsize=(9.0, 7.5), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
    _draw_map(ax, scene)
    present = _draw_agents(ax, scene, show_future)
    _legend(ax, present, show_future)

    if radius is None:
        lo, hi = _extent(scene, show_future)
    else:
        if radius <= 0:
            raise ValueError(f"radius must be positive or None, got {radius}")
        center = _focus(scene)
        lo, hi = center - radius, center + radius
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal", adjustable="box")
    ox, oy = float(scene.origin[0]), float(scene.origin[1])
    ax.set_xlabel(f"x [m], scene frame (x − origin.x; origin = ({ox:.2f}, {oy:.2f}) city frame)", fontsize=8)
    ax.set_ylabel("y [m], scene frame (y − origin.y)", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.set_title(_default_title(scene) if title is None else title, fontsize=9)
    ax.grid(True, lw=0.3, color="#eeeeee", zorder=-1)
    ax.set_axisbelow(True)
    return ax


def save_scene_png(scene: Scene, path: str | os.PathLike[str], *, dpi: float = 100.0, **kw: Any) -> Path:
    """Plot ``scene`` (keywords as :func:`plot_scene`) and write a PNG atomically; returns the path.

    The image is written to a temporary file in the destination folder and renamed over ``path``, so readers
    never see a half-written file. Parent folders are created.
    """
    fig = Figure(figsize=(9.0, 7.5), layout="constrained")
    FigureCanvasAgg(fig)
    plot_scene(scene, fig.add_subplot(), **kw)
    return save_figure_png(fig, path, dpi=dpi)


def save_figure_png(fig: Figure, path: str | os.PathLike[str], *, dpi: float = 100.0) -> Path:
    """Write ``fig`` as a PNG atomically (temp file in the same folder, fsync, rename); creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp, open(tmp, "xb") as f:
        fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1)
    return path
