"""Looking into a converted scene cache (``python -m smartpretrain.inspect``, the demo): a summary of a split or of
one scene, as a JSON-serialisable dict and as text, and a plot of a scene.

* :func:`summarize_scene` / :func:`summarize_cache`: counts by type, role, map element; manifest facts and
  statistics over evenly spaced scenes;
* :func:`format_summary`: either summary as text;
* :func:`inspect_cache`: what the command line asks for (a split or one scene, optionally plotted), with
  :class:`InspectError` naming the path or scene id when it cannot be found or read.
"""

from __future__ import annotations

from collections import Counter
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np

from smartpretrain.data.cache import CacheError, SceneCache
from smartpretrain.data.scene import Scene
from smartpretrain.data.taxonomy import AgentRole, AgentType, EdgeType, LineType, PolygonType, Side

__all__ = ["InspectError", "format_summary", "inspect_cache", "summarize_cache", "summarize_scene"]

LANE_TYPES = (PolygonType.VEHICLE_LANE, PolygonType.BIKE_LANE, PolygonType.BUS_LANE)
_ROLE_ORDER = (AgentRole.FOCAL, AgentRole.SCORED, AgentRole.UNSCORED, AgentRole.FRAGMENT)


class InspectError(Exception):
    """A cache or scene that cannot be found or read (the command line prints it and exits with status 2)."""


def _name(enum: type[IntEnum], value: int) -> str:
    try:
        return enum(int(value)).name
    except ValueError:
        return f"UNKNOWN_{int(value)}"


def _counts(values: np.ndarray, enum: type[IntEnum]) -> dict[str, int]:
    """Non-zero counts of ``values`` by enum name, in enum order (values outside the enum last)."""
    found = Counter(int(v) for v in np.asarray(values).ravel())
    known = {int(m) for m in enum}
    ordered = [int(m) for m in enum if int(m) in found] + sorted(v for v in found if v not in known)
    return {_name(enum, v): found[v] for v in ordered}


# ---------------------------------------------------------------------------------------------------------------
# Summaries


def summarize_scene(scene: Scene) -> dict[str, Any]:
    """Counts describing one scene (JSON-serialisable)."""
    a, m = scene.agents, scene.map
    cur = scene.current_step
    role_counts = _counts(a.role, AgentRole)
    by_role = {r.name: role_counts.pop(r.name, 0) for r in _ROLE_ORDER} | role_counts
    sdc = [a.ids[i] for i in np.flatnonzero(a.is_sdc)]
    focal_rows = np.flatnonzero(a.role == AgentRole.FOCAL)
    focal: dict[str, Any] | None = None
    if len(focal_rows):
        valid = np.asarray(a.valid[focal_rows[0]], dtype=bool)
        focal = {
            "id": a.ids[focal_rows[0]],
            "observed_steps": int(valid.sum()),
            "observed_history_steps": int(valid[: cur + 1].sum()),
            "observed_future_steps": int(valid[cur + 1 :].sum()),
            "valid_at_current_step": bool(valid[cur]),
        }
    polylines: dict[str, dict[str, int]] = {}
    for side in [int(s) for s in Side] + sorted(set(np.unique(m.polyline_side).tolist()) - {int(s) for s in Side}):
        mask = m.polyline_side == side
        if mask.any():
            polylines[_name(Side, side)] = _counts(m.polyline_type[mask], LineType)
    polygon_types = np.asarray(m.polygon_type)
    return {
        "kind": "scene",
        "scenario_id": scene.scenario_id,
        "dataset": str(getattr(scene.dataset, "value", scene.dataset)),
        "city": scene.city,
        "num_steps": int(scene.num_steps),
        "current_step": int(cur),
        "dt": float(scene.dt),
        "origin": [float(v) for v in scene.origin],
        "agents": {
            "num_agents": a.num_agents,
            "by_type": _counts(a.type, AgentType),
            "by_role": by_role,
            "sdc_ids": sdc,
            "focal": focal,
            "num_valid_at_current_step": int(np.asarray(a.valid)[:, cur].sum()) if a.num_agents else 0,
            "has_size": a.size is not None,
        },
        "map": {
            "num_polygons": m.num_polygons,
            "num_lane_polygons": int(np.isin(polygon_types, [int(t) for t in LANE_TYPES]).sum()),
            "polygons_by_type": _counts(polygon_types, PolygonType),
            "num_polylines": m.num_polylines,
            "polylines_by_side_type": polylines,
            "num_points": len(m.points),
            "num_edges": int(m.edge_type.shape[0]),
            "edges_by_type": _counts(m.edge_type, EdgeType),
        },
    }


def _sample_indices(n: int, max_scenes: int) -> list[int]:
    if n <= 0 or max_scenes <= 0:
        return []
    if n <= max_scenes:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, max_scenes).round().astype(int).tolist()))


def _stats(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    v = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(v.mean()), 2), "min": float(v.min()), "max": float(v.max())}


def summarize_cache(cache: SceneCache, max_scenes: int = 200) -> dict[str, Any]:
    """Manifest facts plus statistics over up to ``max_scenes`` evenly spaced scenes of ``cache``."""
    man = cache.manifest
    repairs = {
        kind: int(entry.get("count", 0)) if isinstance(entry, dict) else int(entry)
        for kind, entry in (man.get("repairs") or {}).items()
    }
    indices = _sample_indices(len(cache), max_scenes)
    agents, polygons, lanes, points, valid_now = [], [], [], [], []
    steps: Counter[int] = Counter()
    current: Counter[int] = Counter()
    cities: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    types: Counter[str] = Counter()
    for i in indices:
        s = summarize_scene(cache[i])
        agents.append(s["agents"]["num_agents"])
        valid_now.append(s["agents"]["num_valid_at_current_step"])
        polygons.append(s["map"]["num_polygons"])
        lanes.append(s["map"]["num_lane_polygons"])
        points.append(s["map"]["num_points"])
        steps[s["num_steps"]] += 1
        current[s["current_step"]] += 1
        cities[s["city"]] += 1
        roles.update(s["agents"]["by_role"])
        types.update(s["agents"]["by_type"])
    k = max(len(indices), 1)
    return {
        "kind": "cache",
        "path": str(cache.path),
        "dataset": man.get("dataset"),
        "split": man.get("split"),
        "schema_version": man.get("schema_version"),
        "converter_version": man.get("converter_version"),
        "complete": man.get("complete"),
        "num_scenes": len(cache),
        "num_raw_items": man.get("num_raw_items"),
        "num_dropped": man.get("num_dropped", sum((man.get("dropped_by_reason") or {}).values())),
        "dropped_by_reason": dict(man.get("dropped_by_reason") or {}),
        "repairs": repairs,
        "bytes_per_scene": man.get("bytes_per_scene"),
        "first_scenario_id": cache.ids()[0] if len(cache) else None,
        "sample": {
            "num_scenes": len(indices),
            "agents": _stats(agents),
            "agents_valid_at_current_step": _stats(valid_now),
            "polygons": _stats(polygons),
            "lane_polygons": _stats(lanes),
            "map_points": _stats(points),
            "mean_agents_by_role": {r: round(c / k, 2) for r, c in roles.items()},
            "mean_agents_by_type": {t: round(c / k, 2) for t, c in types.most_common()},
            "num_steps": {str(v): c for v, c in sorted(steps.items())},
            "current_step": {str(v): c for v, c in sorted(current.items())},
            "cities": dict(cities.most_common()),
        },
    }


# ---------------------------------------------------------------------------------------------------------------
# Text


def _join(counts: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "none"


def _values(counts: dict[str, int]) -> str:
    """``{"110": 3}`` -> ``110 (3 scenes)``."""
    return ", ".join(f"{v} ({c} scene{'s' if c != 1 else ''})" for v, c in counts.items()) or "n/a"


def _stat_text(s: dict[str, float] | None) -> str:
    return "n/a" if s is None else f"mean {s['mean']:g} (min {s['min']:g}, max {s['max']:g})"


def _format_scene(d: dict[str, Any]) -> str:
    a, m = d["agents"], d["map"]
    focal = a["focal"]
    focal_text = (
        "none"
        if focal is None
        else (
            f"{focal['id']}, observed {focal['observed_steps']}/{d['num_steps']} steps "
            f"(history {focal['observed_history_steps']}/{d['current_step'] + 1}, "
            f"future {focal['observed_future_steps']}/{d['num_steps'] - d['current_step'] - 1})"
        )
    )
    ox, oy, oz = d["origin"]
    lines = [
        f"scene         {d['scenario_id']}",
        f"dataset       {d['dataset']}   city {d['city']}",
        f"timeline      {d['num_steps']} steps, current_step {d['current_step']}, dt {d['dt']:g} s",
        f"origin        ({ox:.3f}, {oy:.3f}, {oz:.3f}) city frame",
        f"agents        {a['num_agents']} ({a['num_valid_at_current_step']} observed at current_step;"
        f" sizes: {'yes' if a['has_size'] else 'no'})",
        f"  by type     {_join(a['by_type'])}",
        f"  by role     {_join(a['by_role'])}",
        f"  sdc         {', '.join(a['sdc_ids']) or 'none'}",
        f"  focal       {focal_text}",
        f"map           {m['num_polygons']} polygons ({m['num_lane_polygons']} lanes), {m['num_polylines']} polylines,"
        f" {m['num_points']} points, {m['num_edges']} edges",
        f"  polygons    {_join(m['polygons_by_type'])}",
    ]
    if m["polylines_by_side_type"]:
        lines.append("  polylines")
        lines += [f"    {side:<9} {_join(types)}" for side, types in m["polylines_by_side_type"].items()]
    else:
        lines.append("  polylines   none")
    lines.append(f"  edges       {_join(m['edges_by_type'])}")
    if "png" in d:
        lines.append(f"plot          {d['png']}")
    return "\n".join(lines)


def _format_cache(d: dict[str, Any]) -> str:
    s = d["sample"]
    complete = {True: "complete", False: "INCOMPLETE (units missing)", None: "unknown"}[d["complete"]]
    size = d["bytes_per_scene"]
    lines = [
        f"cache         {d['path']}",
        f"dataset       {d['dataset']}   split {d['split']}   schema v{d['schema_version']}"
        f"   converter {d['converter_version']}",
        f"scenes        {d['num_scenes']} ({complete}; raw items: {d['num_raw_items']}"
        + (f"; {size / 1024:.1f} KiB/scene)" if size is not None else ")"),
        f"dropped       {d['num_dropped']}" + (f": {_join(d['dropped_by_reason'])}" if d["dropped_by_reason"] else ""),
        f"repairs       {_join(d['repairs'])}",
        f"sample        {s['num_scenes']} of {d['num_scenes']} scenes, evenly spaced",
        f"  agents      {_stat_text(s['agents'])}",
        f"  at present  {_stat_text(s['agents_valid_at_current_step'])}",
        f"  roles       {_join(s['mean_agents_by_role'])} (mean per scene)",
        f"  types       {_join(s['mean_agents_by_type'])} (mean per scene)",
        f"  polygons    {_stat_text(s['polygons'])}",
        f"  lanes       {_stat_text(s['lane_polygons'])}",
        f"  map points  {_stat_text(s['map_points'])}",
        f"  num_steps   {_values(s['num_steps'])}",
        f"  current     {_values(s['current_step'])}",
        f"  cities      {_join(s['cities'])}",
        f"first scene   {d['first_scenario_id']}",
    ]
    if "png" in d:
        lines.append(f"plot          {d['png']} (first scene)")
    return "\n".join(lines)


def format_summary(d: dict[str, Any]) -> str:
    """Human-readable text of a :func:`summarize_scene` or :func:`summarize_cache` dict."""
    return _format_scene(d) if d.get("kind") == "scene" else _format_cache(d)


# ---------------------------------------------------------------------------------------------------------------
# Opening a split, choosing a scene


def _open(path: Path) -> SceneCache:
    if not path.exists():
        raise InspectError(f"cache folder not found: {path}")
    if not path.is_dir():
        raise InspectError(f"not a folder: {path} (expected a converted split folder such as cache/av2/val)")
    try:
        return SceneCache(path)
    except CacheError as exc:
        raise InspectError(str(exc)) from None


def _select(cache: SceneCache, scene_id: str | None, index: int | None) -> Scene:
    if scene_id is not None:
        if scene_id not in cache:
            raise InspectError(f"scene {scene_id!r} is not in the cache at {cache.path} ({len(cache)} scenes)")
        return cache.get(scene_id)
    assert index is not None
    if not -len(cache) <= index < len(cache):
        raise InspectError(f"scene index {index} out of range: the cache at {cache.path} has {len(cache)} scene(s)")
    return cache[index]


def inspect_cache(
    path: Path,
    *,
    scene_id: str | None = None,
    index: int | None = None,
    png: Path | None = None,
    radius: float | None = 80.0,
    max_scenes: int = 200,
) -> dict[str, Any]:
    """The summary of the split at ``path`` (:func:`summarize_cache`), or of one of its scenes (by ``scene_id`` or
    cache ``index``, negative from the end: :func:`summarize_scene`); with ``png``, a plot of that scene (of the
    first scene for the split) within ``radius`` metres of the focal agent (None: everything), whose path is
    added as ``"png"``.

    Raises:
        InspectError: naming the path or the scene id, when the cache or the scene cannot be found or read.
    """
    cache = _open(path)
    try:
        if scene_id is not None or index is not None:
            scene = _select(cache, scene_id, index)
            summary = summarize_scene(scene)
        else:
            summary = summarize_cache(cache, max_scenes=max_scenes)
            scene = cache[0] if png is not None and len(cache) else None
            if png is not None and scene is None:
                raise InspectError(f"nothing to plot: the cache at {cache.path} has no scenes")
        if png is not None:
            from smartpretrain.viz.scene_plot import save_scene_png  # matplotlib only when plotting

            try:
                summary["png"] = str(save_scene_png(scene, png, radius=radius))
            except OSError as exc:
                raise InspectError(f"cannot write {png}: {exc.strerror or exc}") from None
        return summary
    except CacheError as exc:
        raise InspectError(str(exc)) from None
    finally:
        cache.close()
