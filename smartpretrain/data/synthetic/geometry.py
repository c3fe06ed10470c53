"""Plane polyline helpers of the synthetic generator (road layout and agent motion share them)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def unit(theta: float) -> np.ndarray:
    return np.array([math.cos(theta), math.sin(theta)])


def bezier(p0: np.ndarray, t0: np.ndarray, p3: np.ndarray, t3: np.ndarray, n: int, ctrl: float) -> np.ndarray:
    """Cubic Bezier from ``p0`` (heading ``t0``) to ``p3`` (heading ``t3``); control arms ``ctrl`` x chord."""
    c = ctrl * float(np.linalg.norm(p3 - p0))
    p1, p2 = p0 + t0 * c, p3 - t3 * c
    u = np.linspace(0.0, 1.0, n)[:, None]
    v = 1.0 - u
    return v**3 * p0 + 3 * v * v * u * p1 + 3 * v * u * u * p2 + u**3 * p3


def left_normals(points: np.ndarray) -> np.ndarray:
    """Unit left normals at the vertices of a polyline ``[n, 2]`` (vertex tangent = mean of adjacent segments)."""
    d = np.diff(points, axis=0)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-9)
    t = np.empty_like(points)
    t[0], t[-1] = d[0], d[-1]
    t[1:-1] = d[:-1] + d[1:]
    t /= np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-9)
    return np.stack([-t[:, 1], t[:, 0]], axis=1)


def offset_polyline(points: np.ndarray, dist: float) -> np.ndarray:
    """Polyline shifted by ``dist`` to its left (negative: to its right)."""
    return points + left_normals(points) * dist


def arclength(points: np.ndarray) -> np.ndarray:
    d = np.diff(points, axis=0)
    cum = np.empty(len(points))
    cum[0] = 0.0
    np.cumsum(np.hypot(d[:, 0], d[:, 1]), out=cum[1:])
    return cum


def concat_polylines(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate polylines that share their junction points (the duplicated points are dropped)."""
    out = [parts[0]]
    for p in parts[1:]:
        prev = out[-1][-1]
        same = abs(p[0, 0] - prev[0]) < 1e-6 and abs(p[0, 1] - prev[1]) < 1e-6
        out.append(p[1:] if same else p)
    return np.concatenate(out, axis=0)


def eval_path(points: np.ndarray, cum: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Points at arc lengths ``s`` along a polyline, extrapolated linearly before its start and after its end."""
    out = np.stack([np.interp(s, cum, points[:, 0]), np.interp(s, cum, points[:, 1])], axis=-1)
    lo, hi = s < 0.0, s > cum[-1]
    if lo.any():
        t0 = (points[1] - points[0]) / max(cum[1] - cum[0], 1e-9)
        out[lo] = points[0] + s[lo, None] * t0
    if hi.any():
        t1 = (points[-1] - points[-2]) / max(cum[-1] - cum[-2], 1e-9)
        out[hi] = points[-1] + (s[hi, None] - cum[-1]) * t1
    return out


def tangent_heading(points: np.ndarray, cum: np.ndarray, s: float) -> float:
    a, b = eval_path(points, cum, np.array([s - 0.5, s + 0.5]))
    return math.atan2(b[1] - a[1], b[0] - a[0])


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
