"""The unified scene: one dataset-agnostic record per scenario, in a per-scene local frame.

A ``Scene`` holds everything a converter reads from a raw scenario and nothing a model derives from it.
Coordinates are float32 metres relative to ``origin`` (float64, city frame), so city-scale coordinates keep
sub-millimetre precision; add ``origin`` back to get city coordinates. Time is the dataset's native
timeline: ``num_steps`` steps of ``dt`` seconds (0.1 s for the vehicle datasets, 0.4 s for ETH/UCY) with the
"present" at ``current_step``.

Field-by-field documentation and the label mapping tables are in ``docs/data_format.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from smartpretrain.data.taxonomy import AgentRole, Dataset


class SceneValidationError(ValueError):
    """A scene's arrays are inconsistent (wrong shape, dtype, out-of-range index)."""


@dataclass
class AgentTracks:
    """Per-agent tracks on the scene timeline. N agents, T steps; values at invalid steps are 0.

    Attributes:
        ids: ``[N]`` the dataset's track ids, as strings.
        type: ``[N] int8`` :class:`~smartpretrain.data.taxonomy.AgentType`.
        role: ``[N] int8`` :class:`~smartpretrain.data.taxonomy.AgentRole` (focal / scored / unscored / fragment).
        is_sdc: ``[N] bool`` the data-collecting vehicle (AV2/AV1 "AV", WOMD ``sdc_track_index``).
        position: ``[N, T, 3] float32`` x, y, z relative to the scene origin (z = 0 when the dataset has none).
        heading: ``[N, T] float32`` yaw in radians, in [-pi, pi].
        velocity: ``[N, T, 2] float32`` m/s in the scene frame.
        valid: ``[N, T] bool`` observed at that step.
        size: ``[N, 3] float32`` length, width, height in metres, or None when the dataset has no sizes.
        difficulty: ``[N] int8`` WOMD ``tracks_to_predict`` difficulty (0 = not to predict / none, 1 = LEVEL_1,
            2 = LEVEL_2), or None when the dataset has no such label.
        of_interest: ``[N] bool`` WOMD ``objects_of_interest`` (agents with interesting interactions), or None.
    """

    ids: list[str]
    type: np.ndarray
    role: np.ndarray
    is_sdc: np.ndarray
    position: np.ndarray
    heading: np.ndarray
    velocity: np.ndarray
    valid: np.ndarray
    size: np.ndarray | None = None
    difficulty: np.ndarray | None = None
    of_interest: np.ndarray | None = None

    @property
    def num_agents(self) -> int:
        return len(self.ids)


@dataclass
class MapData:
    """Vector map as polygons made of polylines, with lane topology. P polygons, L polylines, M points, E edges.

    A lane polygon has three polylines (left boundary, right boundary, centerline); a crosswalk has its two
    edges (LEFT, RIGHT) and the mid-line between them (CENTER); a road line / edge has one CENTER polyline.
    Polylines are stored in CSR form: polyline ``l`` is ``points[polyline_offsets[l]:polyline_offsets[l+1]]``.

    Attributes:
        polygon_ids: ``[P] int64`` the dataset's map element ids.
        polygon_type: ``[P] int8`` :class:`~smartpretrain.data.taxonomy.PolygonType`.
        polygon_is_intersection: ``[P] int8`` :class:`~smartpretrain.data.taxonomy.Intersection`.
        polyline_polygon: ``[L] int32`` index of the polygon each polyline belongs to (non-decreasing).
        polyline_side: ``[L] int8`` :class:`~smartpretrain.data.taxonomy.Side`.
        polyline_type: ``[L] int8`` :class:`~smartpretrain.data.taxonomy.LineType` (lane marks, CENTERLINE, ...).
        polyline_offsets: ``[L + 1] int32`` CSR offsets into ``points``.
        points: ``[M, 3] float32`` relative to the scene origin.
        edge_index: ``[2, E] int32`` polygon indices ``(src, dst)``.
        edge_type: ``[E] int8`` :class:`~smartpretrain.data.taxonomy.EdgeType`: src is the <type> of dst.
    """

    polygon_ids: np.ndarray
    polygon_type: np.ndarray
    polygon_is_intersection: np.ndarray
    polyline_polygon: np.ndarray
    polyline_side: np.ndarray
    polyline_type: np.ndarray
    polyline_offsets: np.ndarray
    points: np.ndarray
    edge_index: np.ndarray
    edge_type: np.ndarray

    @property
    def num_polygons(self) -> int:
        return len(self.polygon_ids)

    @property
    def num_polylines(self) -> int:
        return len(self.polyline_side)

    def polyline(self, index: int) -> np.ndarray:
        """Points ``[n, 3]`` of polyline ``index``."""
        return self.points[self.polyline_offsets[index] : self.polyline_offsets[index + 1]]

    def polylines_of(self, polygon: int) -> np.ndarray:
        """Indices of the polylines of ``polygon``."""
        lo, hi = np.searchsorted(self.polyline_polygon, [polygon, polygon + 1])
        return np.arange(lo, hi)

    @staticmethod
    def empty() -> MapData:
        """A map with no elements (AV1 without vector maps, ETH/UCY)."""
        return MapData(
            polygon_ids=np.zeros(0, np.int64),
            polygon_type=np.zeros(0, np.int8),
            polygon_is_intersection=np.zeros(0, np.int8),
            polyline_polygon=np.zeros(0, np.int32),
            polyline_side=np.zeros(0, np.int8),
            polyline_type=np.zeros(0, np.int8),
            polyline_offsets=np.zeros(1, np.int32),
            points=np.zeros((0, 3), np.float32),
            edge_index=np.zeros((2, 0), np.int32),
            edge_type=np.zeros(0, np.int8),
        )


@dataclass
class TrafficSignals:
    """Traffic-signal states over time, one row per (step, controlled lane). S rows, sorted by step.

    Attributes:
        step: ``[S] int16`` step on the scene timeline.
        lane_id: ``[S] int64`` the controlled lane's map id (a ``MapData.polygon_ids`` value).
        state: ``[S] int8`` :class:`~smartpretrain.data.taxonomy.SignalState`.
        stop_point: ``[S, 3] float32`` where vehicles stop for the signal, relative to the scene origin.
    """

    step: np.ndarray
    lane_id: np.ndarray
    state: np.ndarray
    stop_point: np.ndarray

    @property
    def num_states(self) -> int:
        return len(self.step)

    def crop(self, start: int, length: int) -> TrafficSignals:
        """The rows of steps ``start .. start + length - 1``, re-indexed from 0."""
        keep = (self.step >= start) & (self.step < start + length)
        return TrafficSignals(
            step=(self.step[keep] - start).astype(np.int16),
            lane_id=self.lane_id[keep],
            state=self.state[keep],
            stop_point=self.stop_point[keep],
        )


@dataclass
class Scene:
    """One scenario in the unified format.

    Attributes:
        scenario_id: the dataset's scenario id (AV1: the CSV's sequence id).
        dataset: source dataset.
        city: city name or map id the scenario was recorded in (AV2 ``city``, AV1 ``CITY_NAME``).
        num_steps: T, number of steps on the timeline.
        current_step: index of the present step (AV2 49, AV1 19, WOMD 10).
        origin: ``[3] float64`` city-frame point subtracted from every coordinate of the scene.
        agents: the tracks.
        map: the vector map (possibly empty).
        dt: seconds between steps.
        signals: traffic-signal states per step (WOMD), or None when the dataset has none.
    """

    scenario_id: str
    dataset: Dataset
    city: str
    num_steps: int
    current_step: int
    origin: np.ndarray
    agents: AgentTracks
    map: MapData = field(default_factory=MapData.empty)
    dt: float = 0.1
    signals: TrafficSignals | None = None

    @property
    def focal_index(self) -> int:
        """Index of the focal agent (exactly one per scene; enforced by :meth:`validate`)."""
        return int(np.flatnonzero(self.agents.role == AgentRole.FOCAL)[0])

    def global_positions(self) -> np.ndarray:
        """``[N, T, 3] float64`` agent positions in the city frame (invalid steps hold the origin)."""
        return self.agents.position.astype(np.float64) + self.origin

    def validate(self) -> None:
        """Check every shape, dtype and index range; raises :class:`SceneValidationError` naming the field."""
        a, m = self.agents, self.map
        n, t = a.num_agents, self.num_steps

        def check(name: str, arr: np.ndarray | None, shape: tuple[int, ...], dtype: type) -> None:
            if arr is None:
                raise SceneValidationError(f"{self.scenario_id}: {name} is missing")
            if arr.shape != shape or arr.dtype != np.dtype(dtype):
                raise SceneValidationError(
                    f"{self.scenario_id}: {name} has shape {arr.shape} dtype {arr.dtype}, "
                    f"expected {shape} {np.dtype(dtype)}"
                )

        if not 0 <= self.current_step < t:
            raise SceneValidationError(f"{self.scenario_id}: current_step {self.current_step} not in [0, {t})")
        check("origin", self.origin, (3,), np.float64)
        check("agents.type", a.type, (n,), np.int8)
        check("agents.role", a.role, (n,), np.int8)
        check("agents.is_sdc", a.is_sdc, (n,), np.bool_)
        check("agents.position", a.position, (n, t, 3), np.float32)
        check("agents.heading", a.heading, (n, t), np.float32)
        check("agents.velocity", a.velocity, (n, t, 2), np.float32)
        check("agents.valid", a.valid, (n, t), np.bool_)
        if a.size is not None:
            check("agents.size", a.size, (n, 3), np.float32)
        if a.difficulty is not None:
            check("agents.difficulty", a.difficulty, (n,), np.int8)
        if a.of_interest is not None:
            check("agents.of_interest", a.of_interest, (n,), np.bool_)
        if int((a.role == AgentRole.FOCAL).sum()) != 1:
            raise SceneValidationError(
                f"{self.scenario_id}: expected exactly one focal agent, got {(a.role == AgentRole.FOCAL).sum()}"
            )
        for name in ("position", "heading", "velocity"):
            if not np.isfinite(getattr(a, name)).all():
                raise SceneValidationError(f"{self.scenario_id}: agents.{name} has non-finite values")

        p, lines = m.num_polygons, m.num_polylines
        check("map.polygon_ids", m.polygon_ids, (p,), np.int64)
        check("map.polygon_type", m.polygon_type, (p,), np.int8)
        check("map.polygon_is_intersection", m.polygon_is_intersection, (p,), np.int8)
        check("map.polyline_polygon", m.polyline_polygon, (lines,), np.int32)
        check("map.polyline_type", m.polyline_type, (lines,), np.int8)
        check("map.polyline_offsets", m.polyline_offsets, (lines + 1,), np.int32)
        check("map.points", m.points, (int(m.polyline_offsets[-1]), 3), np.float32)
        e = m.edge_type.shape[0]
        check("map.edge_index", m.edge_index, (2, e), np.int32)
        check("map.edge_type", m.edge_type, (e,), np.int8)
        if lines and (np.diff(m.polyline_polygon) < 0).any():
            raise SceneValidationError(f"{self.scenario_id}: map.polyline_polygon must be non-decreasing")
        if lines and (m.polyline_polygon.min() < 0 or m.polyline_polygon.max() >= p):
            raise SceneValidationError(f"{self.scenario_id}: map.polyline_polygon out of range")
        if (np.diff(m.polyline_offsets) < 0).any() or m.polyline_offsets[0] != 0:
            raise SceneValidationError(f"{self.scenario_id}: map.polyline_offsets must start at 0 and not decrease")
        if e and (m.edge_index.min() < 0 or m.edge_index.max() >= p):
            raise SceneValidationError(f"{self.scenario_id}: map.edge_index out of range")
        if self.signals is not None:
            sig, s = self.signals, self.signals.num_states
            check("signals.step", sig.step, (s,), np.int16)
            check("signals.lane_id", sig.lane_id, (s,), np.int64)
            check("signals.state", sig.state, (s,), np.int8)
            check("signals.stop_point", sig.stop_point, (s, 3), np.float32)
            if s and (sig.step.min() < 0 or sig.step.max() >= t):
                raise SceneValidationError(f"{self.scenario_id}: signals.step outside [0, {t})")
            if s and (np.diff(sig.step) < 0).any():
                raise SceneValidationError(f"{self.scenario_id}: signals.step must not decrease")
