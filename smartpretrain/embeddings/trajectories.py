"""Short agent trajectories cut from the scenes of a cache: the items that trajectory embeddings encode and that
retrieval returns, and the futures that the k-NN forecasting probe predicts with.

A **trajectory window** (:class:`TrajectoryWindow`) is ``num_steps`` consecutive steps of one agent starting at
``start_step``, expressed in the agent's frame at the window's first valid step: origin at that position, x along
the heading there (y to the left). Because every window starts at the origin heading along +x, two windows are
close in this frame exactly when the motions are alike, wherever and whichever way the agents drove.

Which agents give windows (:class:`WindowSpec`): the roles of :class:`~smartpretrain.embeddings.records.
AgentSelection`, restricted to agent types (default: the moving road users — vehicles, buses, motorcyclists,
cyclists, pedestrians), observed at the first step and at no fewer than ``min_valid_fraction`` of the window's
steps. Each window's id is (``dataset``, ``scenario_id``, ``track_id``, ``step`` = ``start_step``), the id columns
of :class:`~smartpretrain.embeddings.records.EmbeddingRecords`.

:func:`agent_futures` gives, for the rows of an embeddings file (whose ``step`` is the embedded history's last
step), the agents' next ``num_future_steps`` positions in their frame at that step: the targets of the probe and
the "predictions" it retrieves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from smartpretrain.data.cache import SceneCache
from smartpretrain.data.scene import Scene
from smartpretrain.data.taxonomy import AgentType
from smartpretrain.embeddings.maneuvers import ManeuverThresholds, classify_maneuvers
from smartpretrain.embeddings.records import AgentSelection, EmbeddingRecords, role_name

__all__ = [
    "MOVING_TYPES",
    "TrajectorySet",
    "TrajectoryWindow",
    "WindowSpec",
    "agent_futures",
    "agent_history",
    "agent_steps",
    "extract_windows",
    "scene_windows",
    "to_agent_frame",
]

#: agent types whose motion is worth retrieving (static objects, background and unknown are not)
MOVING_TYPES: tuple[AgentType, ...] = (
    AgentType.VEHICLE,
    AgentType.BUS,
    AgentType.MOTORCYCLIST,
    AgentType.CYCLIST,
    AgentType.PEDESTRIAN,
)


@dataclass(frozen=True)
class TrajectoryWindow:
    """Where a window lies on the scene timeline.

    Attributes:
        num_steps: window length in steps (``length_s / dt``).
        start_step: the first step (0: the scene's first).
    """

    num_steps: int
    start_step: int = 0

    def __post_init__(self) -> None:
        if int(self.num_steps) < 2:
            raise ValueError(f"a trajectory window needs num_steps >= 2, got {self.num_steps}")
        if int(self.start_step) < 0:
            raise ValueError(f"start_step must be >= 0, got {self.start_step}")

    @classmethod
    def of_seconds(cls, length_s: float, dt: float, start_s: float = 0.0) -> TrajectoryWindow:
        """The window of ``length_s`` seconds from ``start_s`` on a timeline of step ``dt`` (rounded to steps)."""
        if length_s <= 0 or dt <= 0 or start_s < 0:
            raise ValueError(f"need length_s > 0, dt > 0, start_s >= 0; got {length_s}, {dt}, {start_s}")
        return cls(num_steps=round(length_s / dt), start_step=round(start_s / dt))


@dataclass(frozen=True)
class WindowSpec:
    """Which agents of a scene give windows.

    Attributes:
        window: the steps.
        agents: roles kept (``all`` also keeps unscored agents and fragments).
        agent_types: types kept.
        min_valid_fraction: the least fraction of the window's steps an agent must be observed at (in (0, 1]).
    """

    window: TrajectoryWindow
    agents: AgentSelection = AgentSelection.ALL
    agent_types: tuple[AgentType, ...] = MOVING_TYPES
    min_valid_fraction: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", AgentSelection(self.agents))
        object.__setattr__(self, "agent_types", tuple(AgentType(t) for t in self.agent_types))
        if not 0.0 < float(self.min_valid_fraction) <= 1.0:
            raise ValueError(f"min_valid_fraction must be in (0, 1], got {self.min_valid_fraction}")


@dataclass
class TrajectorySet:
    """N trajectory windows with their ids (columns as in :class:`~smartpretrain.embeddings.records.
    EmbeddingRecords`, ``step`` being the window's first step) and maneuver labels.

    Attributes:
        positions: ``[N, T, 2] float32`` in each window's agent frame (0 at invalid steps).
        valid: ``[N, T] bool``.
        maneuver: ``[N] int64`` :class:`~smartpretrain.embeddings.maneuvers.Maneuver`.
    """

    scenario_id: list[str]
    track_id: list[str]
    dataset: list[str]
    role: list[str]
    step: np.ndarray
    positions: np.ndarray
    valid: np.ndarray
    maneuver: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __post_init__(self) -> None:
        self.step = np.asarray(self.step, np.int32).reshape(-1)
        self.positions = np.asarray(self.positions, np.float32)
        self.valid = np.asarray(self.valid, bool)
        self.maneuver = np.asarray(self.maneuver, np.int64).reshape(-1)
        n = len(self.scenario_id)
        if self.positions.ndim != 3 or self.positions.shape[2] != 2 or self.valid.shape != self.positions.shape[:2]:
            raise ValueError(
                f"positions must be [N, T, 2] and valid [N, T]: {self.positions.shape}, {self.valid.shape}"
            )
        columns = {"track_id": self.track_id, "dataset": self.dataset, "role": self.role, "step": self.step}
        columns |= {"positions": self.positions, "valid": self.valid, "maneuver": self.maneuver}
        bad = {k: len(v) for k, v in columns.items() if len(v) != n}
        if bad:
            raise ValueError(f"TrajectorySet: {n} scenario ids but column lengths {bad}")

    def __len__(self) -> int:
        return len(self.scenario_id)

    @property
    def num_steps(self) -> int:
        return int(self.positions.shape[1])

    def keys(self) -> list[tuple[str, str, str, int]]:
        """(dataset, scenario_id, track_id, step) per row."""
        return list(zip(self.dataset, self.scenario_id, self.track_id, self.step.tolist(), strict=True))

    def ids(self, vectors: np.ndarray) -> EmbeddingRecords:
        """These rows' ids with ``vectors`` ``[N, D]`` (their embeddings) as records."""
        return EmbeddingRecords(
            scenario_id=list(self.scenario_id),
            track_id=list(self.track_id),
            dataset=list(self.dataset),
            role=list(self.role),
            step=self.step,
            vector=vectors,
        )

    def take(self, rows: np.ndarray) -> TrajectorySet:
        """The rows ``rows`` (indices), in that order."""
        rows = np.asarray(rows, np.int64)
        return TrajectorySet(
            scenario_id=[self.scenario_id[i] for i in rows],
            track_id=[self.track_id[i] for i in rows],
            dataset=[self.dataset[i] for i in rows],
            role=[self.role[i] for i in rows],
            step=self.step[rows],
            positions=self.positions[rows],
            valid=self.valid[rows],
            maneuver=self.maneuver[rows],
        )

    @classmethod
    def concat(cls, parts: Sequence[TrajectorySet], num_steps: int) -> TrajectorySet:
        if not parts:
            return cls([], [], [], [], np.zeros(0), np.zeros((0, num_steps, 2)), np.zeros((0, num_steps), bool))
        return cls(
            scenario_id=[x for p in parts for x in p.scenario_id],
            track_id=[x for p in parts for x in p.track_id],
            dataset=[x for p in parts for x in p.dataset],
            role=[x for p in parts for x in p.role],
            step=np.concatenate([p.step for p in parts]),
            positions=np.concatenate([p.positions for p in parts]),
            valid=np.concatenate([p.valid for p in parts]),
            maneuver=np.concatenate([p.maneuver for p in parts]),
        )


def to_agent_frame(points: np.ndarray, origin: np.ndarray, heading: np.ndarray) -> np.ndarray:
    """``points [N, T, 2]`` in the frame with origin ``origin [N, 2]`` and x along ``heading [N]``:
    p' = R(-ψ) (p - o)."""
    cos, sin = np.cos(heading)[:, None], np.sin(heading)[:, None]
    d = points - origin[:, None]
    return np.stack([cos * d[..., 0] + sin * d[..., 1], -sin * d[..., 0] + cos * d[..., 1]], axis=-1)


def scene_windows(scene: Scene, spec: WindowSpec) -> TrajectorySet:
    """The windows of one scene (no maneuver labels yet; :func:`extract_windows` adds them)."""
    w = spec.window
    tracks = scene.agents
    end = min(w.start_step + w.num_steps, scene.num_steps)
    steps = max(end - w.start_step, 0)
    valid = np.zeros((tracks.num_agents, w.num_steps), bool)
    valid[:, :steps] = tracks.valid[:, w.start_step : end]
    role = torch.as_tensor(tracks.role.astype(np.int64))
    keep = spec.agents.mask(role).numpy()
    keep &= np.isin(tracks.type, [int(t) for t in spec.agent_types])
    keep &= valid[:, 0] & (valid.sum(axis=1) >= np.ceil(spec.min_valid_fraction * w.num_steps - 1e-9))
    rows = np.flatnonzero(keep)
    points = np.zeros((len(rows), w.num_steps, 2), np.float32)
    points[:, :steps] = tracks.position[rows, w.start_step : end, :2]
    local = to_agent_frame(points, points[:, 0], tracks.heading[rows, w.start_step]).astype(np.float32)
    local[~valid[rows]] = 0.0
    return TrajectorySet(
        scenario_id=[scene.scenario_id] * len(rows),
        track_id=[tracks.ids[i] for i in rows],
        dataset=[str(scene.dataset)] * len(rows),
        role=[role_name(int(tracks.role[i])) for i in rows],
        step=np.full(len(rows), w.start_step, np.int32),
        positions=local,
        valid=valid[rows],
        maneuver=np.zeros(len(rows), np.int64),
    )


def extract_windows(
    split_dirs: str | Path | Sequence[str | Path],
    spec: WindowSpec,
    limit_scenes: int | None = None,
    thresholds: ManeuverThresholds | None = None,
    progress: bool = True,
) -> TrajectorySet:
    """The windows of the first ``limit_scenes`` scenes of each split in ``split_dirs`` (cache order), labelled
    with :func:`~smartpretrain.embeddings.maneuvers.classify_maneuvers`."""
    dirs = [split_dirs] if isinstance(split_dirs, str | Path) else list(split_dirs)
    parts: list[TrajectorySet] = []
    for split in dirs:
        cache = SceneCache(split)
        count = len(cache) if limit_scenes is None else min(int(limit_scenes), len(cache))
        for i in tqdm(range(count), desc=f"windows {Path(split).name}", unit="scene", disable=not progress):
            parts.append(scene_windows(cache[i], spec))
        cache.close()
    out = TrajectorySet.concat(parts, spec.window.num_steps)
    if len(out):
        labels = classify_maneuvers(
            torch.from_numpy(out.positions), torch.from_numpy(out.valid), thresholds or ManeuverThresholds()
        )
        out.maneuver = labels.numpy().astype(np.int64)
    return out


def agent_futures(
    split_dir: str | Path, records: EmbeddingRecords, num_future_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[N, F, 2]`` positions and ``[N, F]`` validity of each record's agent at the F steps after its ``step``, in
    the agent's frame at ``step`` (0 where unobserved or past the scene's end): the futures the probe predicts."""
    return agent_steps(split_dir, records, first_offset=1, num_steps=num_future_steps)


def agent_history(
    split_dir: str | Path, records: EmbeddingRecords, num_history_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """The H steps up to and including each record's ``step``, in the agent's frame there (the probe's
    raw-coordinate reference embeds these)."""
    return agent_steps(split_dir, records, first_offset=1 - int(num_history_steps), num_steps=num_history_steps)


def agent_steps(
    split_dir: str | Path, records: EmbeddingRecords, first_offset: int, num_steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """``[N, S, 2]`` positions and ``[N, S]`` validity of each record's agent at steps ``step + first_offset`` ...
    ``step + first_offset + S - 1``, in the agent's frame at ``step`` (0 where unobserved or off the timeline).

    Raises:
        KeyError: a record whose scene or track is not in the split.
    """
    n, count = len(records), int(num_steps)
    out = np.zeros((n, count, 2), np.float32)
    valid = np.zeros((n, count), bool)
    rows_of: dict[str, list[int]] = {}
    for i, sid in enumerate(records.scenario_id):
        rows_of.setdefault(sid, []).append(i)
    cache = SceneCache(split_dir)
    try:
        for sid, rows in rows_of.items():
            if sid not in cache:
                raise KeyError(f"scene {sid!r} is not in {split_dir}")
            scene = cache.get(sid)
            index = {t: j for j, t in enumerate(scene.agents.ids)}
            for i in rows:
                if records.track_id[i] not in index:
                    raise KeyError(f"track {records.track_id[i]!r} is not in scene {sid!r} of {split_dir}")
                a, s = index[records.track_id[i]], int(records.step[i])
                lo, hi = s + int(first_offset), s + int(first_offset) + count
                a_lo, a_hi = max(lo, 0), min(hi, scene.num_steps)
                if a_hi <= a_lo:
                    continue
                pts = scene.agents.position[a, a_lo:a_hi, :2][None]
                origin = scene.agents.position[a, s, :2][None]
                local = to_agent_frame(pts, origin, scene.agents.heading[a, s : s + 1])[0]
                ok = scene.agents.valid[a, a_lo:a_hi]
                out[i, a_lo - lo : a_hi - lo] = np.where(ok[:, None], local, 0.0)
                valid[i, a_lo - lo : a_hi - lo] = ok
    finally:
        cache.close()
    return out, valid
