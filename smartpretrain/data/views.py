"""Temporal views for self-supervised pre-training: two non-overlapping windows of one scene.

A *view* is the scene restricted to ``H`` consecutive steps of its native timeline and re-indexed so that its last
step is the present (``current_step = H - 1``); agents, map and origin are otherwise unchanged, so any backbone
adapter turns a view into that backbone's input exactly as it does a whole scene.

Window A starts at ``s_A ~ U{0 .. T - 2H}`` and window B at ``s_B ~ U{s_A + H .. T - H}`` (they touch or leave a
gap, never overlap). An agent takes part in the SSL losses only if it is observed at every step of window A (it
is a *query*); it is a contrastive positive only if it is also observed at every step of window B. For the
reconstruction objective each query carries its window-B positions in its own frame at the last step of window A
(origin at its position there, x along its heading), with a per-step observation mask.

Nothing here knows a model: :class:`SSLViewTransform` takes any
:class:`~smartpretrain.data.transforms.SampleAdapter` (``Scene -> sample`` with a ``collate``).
"""

from __future__ import annotations

import copy
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from smartpretrain.data.controls import ControlSpec, kinematic_controls
from smartpretrain.data.scene import AgentTracks, Scene
from smartpretrain.data.transforms import SampleAdapter

__all__ = [
    "SSLBatch",
    "SSLSample",
    "SSLViewTransform",
    "TemporalViewSampler",
    "TransitionControls",
    "ViewPair",
    "ViewWindows",
    "crop_scene",
]


class ViewTooShortError(ValueError):
    """The scene's timeline cannot hold two windows of the requested length."""


@dataclass(frozen=True)
class ViewWindows:
    """Start steps of the two windows (on the scene's timeline) and their common length ``H``."""

    start_a: int
    start_b: int
    length: int

    def __post_init__(self) -> None:
        if self.start_a < 0 or self.start_b < self.start_a + self.length:
            raise ValueError(f"windows overlap or start before 0: {self}")


def crop_scene(scene: Scene, start: int, length: int) -> Scene:
    """The scene restricted to steps ``start .. start + length - 1``, with ``current_step = length - 1``.

    Steps outside the scene's timeline are unobserved (zeros), so a window may run past either end.
    """
    a = scene.agents
    steps = start + np.arange(length)
    inside = (steps >= 0) & (steps < scene.num_steps)
    src = np.clip(steps, 0, scene.num_steps - 1)
    valid = a.valid[:, src] & inside
    agents = AgentTracks(
        ids=a.ids,
        type=a.type,
        role=a.role,
        is_sdc=a.is_sdc,
        position=np.where(valid[..., None], a.position[:, src], np.float32(0.0)),
        heading=np.where(valid, a.heading[:, src], np.float32(0.0)),
        velocity=np.where(valid[..., None], a.velocity[:, src], np.float32(0.0)),
        valid=valid,
        size=a.size,
        difficulty=a.difficulty,
        of_interest=a.of_interest,
    )
    signals = scene.signals.crop(start, length) if scene.signals is not None else None
    return replace(scene, num_steps=length, current_step=length - 1, agents=agents, signals=signals)


@dataclass
class ViewPair:
    """Two views of one scene plus what the SSL losses need per query agent.

    Attributes:
        view_a, view_b: the cropped scenes (windows A and B).
        windows: where they were cut.
        query_agent: ``[P] int64`` agents (indices into ``scene.agents``) observed at every step of window A.
        full_b: ``[P] bool`` the query is also observed at every step of window B (a contrastive positive).
        target: ``[P, H, 2] float32`` window-B positions in the query's frame at the last step of window A.
        target_valid: ``[P, H] bool`` steps of window B where the query is observed.
    """

    view_a: Scene
    view_b: Scene
    windows: ViewWindows
    query_agent: np.ndarray
    full_b: np.ndarray
    target: np.ndarray
    target_valid: np.ndarray


@dataclass
class TransitionControls:
    """The kinematic controls of each query over the transition from view A's present to view B's present.

    K = ``start_b - start_a`` transitions: control ``j`` takes the agent from scene step ``t_A + j`` to
    ``t_A + j + 1``, where ``t_A = start_a + H - 1`` is view A's present, so the last one ends at view B's present
    (:mod:`smartpretrain.data.controls` defines them).

    Attributes:
        values: ``[P, K, 2] float32`` longitudinal acceleration (m/s^2) and yaw rate (rad/s); 0 where not valid.
        valid: ``[P, K] bool`` the control is defined (the transition is observed and plausible).
        draws: ``[P, K + 2] float32`` uniform numbers in [0, 1) drawn with the views' generator, for objectives
            that mask at random (column 0: observation A, 1: observation B, 2 + j: control j). Drawn here, per
            scene, rather than in the objective: the scene's seeded generator makes the masks the same whatever
            the rank or worker that loads the scene (DDP-exact) and after a resume.
    """

    values: np.ndarray
    valid: np.ndarray
    draws: np.ndarray


def transition_controls(
    scene: Scene, query: np.ndarray, windows: ViewWindows, spec: ControlSpec, rng: np.random.Generator | None
) -> TransitionControls:
    """The controls of agents ``query`` from view A's present to view B's present (see
    :class:`TransitionControls`); ``rng`` None draws from numpy's global generator (seeded per scene)."""
    values, valid = kinematic_controls(scene.agents, scene.dt, spec)
    first = windows.start_a + windows.length - 1
    steps = np.arange(first, windows.start_b + windows.length - 1)
    shape = (len(query), len(steps) + 2)
    draws = rng.random(shape) if rng is not None else np.random.random_sample(shape)
    return TransitionControls(
        values=values[query][:, steps].astype(np.float32),
        valid=valid[query][:, steps],
        draws=draws.astype(np.float32),
    )


class TemporalViewSampler:
    """Cut two non-overlapping windows of ``window`` steps from a scene (see the module docstring).

    Args:
        window: H, steps per view (AV2 50, AV1 20-25, WOMD ~40).
        deterministic: draw the windows from a generator seeded by ``(seed, scenario_id)`` instead of numpy's
            global generator (used for validation, so every epoch sees the same views).
        seed: the seed of the deterministic mode.
    """

    def __init__(self, window: int, deterministic: bool = False, seed: int = 0) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2 steps, got {window}")
        self.window = int(window)
        self.deterministic = bool(deterministic)
        self.seed = int(seed)

    def __repr__(self) -> str:
        return f"TemporalViewSampler(window={self.window}, deterministic={self.deterministic}, seed={self.seed})"

    def generator(self, key: str, stream: int = 0) -> np.random.Generator:
        """The deterministic mode's generator of scene ``key`` (stream 0: the windows; others: further draws)."""
        words = [self.seed, zlib.crc32(key.encode())] + ([stream] if stream else [])
        return np.random.default_rng(words)

    def max_start(self, num_steps: int) -> int:
        """The largest possible ``s_A`` (``T - 2H``)."""
        return num_steps - 2 * self.window

    def sample_windows(self, num_steps: int, key: str = "") -> ViewWindows:
        h = self.window
        if num_steps < 2 * h:
            raise ViewTooShortError(
                f"scene {key!r} has {num_steps} steps, fewer than two windows of {h}; lower the view window"
            )
        if self.deterministic:
            rng = self.generator(key)
            start_a = int(rng.integers(0, num_steps - 2 * h + 1))
            start_b = int(rng.integers(start_a + h, num_steps - h + 1))
        else:  # numpy's global generator, which SceneDataset seeds per scene and epoch (data.batching.SampleKey)
            start_a = int(np.random.randint(0, num_steps - 2 * h + 1))
            start_b = int(np.random.randint(start_a + h, num_steps - h + 1))
        return ViewWindows(start_a, start_b, h)

    def __call__(self, scene: Scene, windows: ViewWindows | None = None) -> ViewPair:
        if windows is None:
            windows = self.sample_windows(scene.num_steps, scene.scenario_id)
        h = windows.length
        view_a = crop_scene(scene, windows.start_a, h)
        view_b = crop_scene(scene, windows.start_b, h)
        query = np.flatnonzero(view_a.agents.valid.all(axis=1))
        obs_b = view_b.agents.valid[query]
        # window B in each query's frame at A's last step: rotate by -heading about its position there
        origin = view_a.agents.position[query, -1, :2].astype(np.float64)
        theta = view_a.agents.heading[query, -1].astype(np.float64)
        cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
        rel = view_b.agents.position[query, :, :2].astype(np.float64) - origin[:, None]
        target = np.stack([cos * rel[..., 0] + sin * rel[..., 1], -sin * rel[..., 0] + cos * rel[..., 1]], axis=-1)
        target[~obs_b] = 0.0
        return ViewPair(
            view_a=view_a,
            view_b=view_b,
            windows=windows,
            query_agent=query.astype(np.int64),
            full_b=obs_b.all(axis=1),
            target=target.astype(np.float32),
            target_valid=obs_b,
        )


@dataclass
class SSLSample:
    """One scene's SSL input: both views through the backbone adapter, and the per-query arrays as tensors."""

    view_a: Any
    view_b: Any
    start_a: int
    start_b: int
    query_agent: Tensor
    full_b: Tensor
    target: Tensor
    target_valid: Tensor
    scenario_id: str
    dataset: str
    window: int = 0
    full: Any = None
    controls: TransitionControls | None = None


@dataclass
class SSLBatch:
    """A batch of :class:`SSLSample`: collated views and the queries of all scenes, concatenated.

    Attributes:
        view_a, view_b: the backbone's collated batches of the two views.
        start_a, start_b: ``[S] long`` window starts per scene.
        query_scene, query_agent: ``[P] long`` the scene (within the batch) and agent index of each query.
        full_b, target, target_valid: as in :class:`ViewPair`, concatenated over scenes; ``target`` /
            ``target_valid`` are padded to the longest window of the batch (padding is not valid).
        window: ``[S] long`` view length of each scene (datasets of a mixture may use different lengths).
        datasets: the source (dataset or mixture component name) of each scene.
        full: the whole scenes at their own current step through the adapter (for objectives that need the
            forecasting format, e.g. masked auto-encoding), or None.
        controls, control_valid, control_draws: the queries' :class:`TransitionControls`, concatenated over
            scenes and padded to the longest transition of the batch (``[P, K, 2]``, ``[P, K]``, ``[P, K + 2]``;
            padding is not valid), or None when no objective reads them.
    """

    view_a: Any
    view_b: Any
    start_a: Tensor
    start_b: Tensor
    query_scene: Tensor
    query_agent: Tensor
    full_b: Tensor
    target: Tensor
    target_valid: Tensor
    scenario_ids: list[str]
    datasets: list[str]
    window: Tensor | None = None
    full: Any = None
    controls: Tensor | None = None
    control_valid: Tensor | None = None
    control_draws: Tensor | None = None

    @property
    def num_scenes(self) -> int:
        return len(self.scenario_ids)

    def to(self, device: torch.device | str) -> SSLBatch:
        move = {name: getattr(self, name).to(device) for name in _TENSOR_FIELDS if getattr(self, name) is not None}
        full = self.full.to(device) if self.full is not None else None
        return replace(self, view_a=self.view_a.to(device), view_b=self.view_b.to(device), full=full, **move)

    def pin_memory(self) -> SSLBatch:
        """This batch in page-locked host memory: what ``DataLoader(pin_memory=True)`` calls on a batch type it
        does not know (without this method it would hand the batch over unpinned)."""
        pin = {name: getattr(self, name).pin_memory() for name in _TENSOR_FIELDS if getattr(self, name) is not None}
        return replace(self, view_a=_pinned(self.view_a), view_b=_pinned(self.view_b), full=_pinned(self.full), **pin)


def _pinned(batch: Any) -> Any:
    """An adapter's batch pinned: by its own ``pin_memory`` (QCNet's HeteroData), or tensor by tensor for a dict
    batch (Forecast-MAE's; its description and names stay as they are); None stays None."""
    if hasattr(batch, "pin_memory"):
        return batch.pin_memory()
    if isinstance(batch, dict):
        pinned = copy.copy(batch)  # keeps the dict subclass
        pinned.update({k: v.pin_memory() for k, v in batch.items() if isinstance(v, Tensor)})
        return pinned
    return batch


_TENSOR_FIELDS = (
    "start_a", "start_b", "query_scene", "query_agent", "full_b", "target", "target_valid", "window", "controls",
    "control_valid", "control_draws",
)  # fmt: skip


class SSLViewTransform:
    """Per-scene transform for pre-training: sample two views, pass both through ``adapter``.

    Picklable (DataLoader workers); ``collate`` batches the samples with the adapter's own collate. ``source``
    names where the scenes come from in logs (default: the scene's dataset), e.g. a mixture component.
    ``with_full`` also passes the whole scene (at its own current step) through the adapter; ``controls`` (a
    :class:`~smartpretrain.data.controls.ControlSpec`) also derives the queries' :class:`TransitionControls`.
    """

    def __init__(
        self,
        sampler: TemporalViewSampler,
        adapter: SampleAdapter,
        source: str | None = None,
        with_full: bool = False,
        controls: ControlSpec | None = None,
    ) -> None:
        self.sampler = sampler
        self.adapter = adapter
        self.source = source
        self.with_full = bool(with_full)
        self.controls = controls

    def __repr__(self) -> str:
        return f"SSLViewTransform({self.sampler!r}, {self.adapter!r}, source={self.source!r})"

    def __call__(self, scene: Scene) -> SSLSample:
        pair = self.sampler(scene)
        controls = None
        if self.controls is not None:  # after the windows: the views' random stream is the same with or without
            rng = self.sampler.generator(scene.scenario_id, stream=1) if self.sampler.deterministic else None
            controls = transition_controls(scene, pair.query_agent, pair.windows, self.controls, rng)
        return SSLSample(
            view_a=self.adapter(pair.view_a),
            view_b=self.adapter(pair.view_b),
            start_a=pair.windows.start_a,
            start_b=pair.windows.start_b,
            query_agent=torch.from_numpy(pair.query_agent),
            full_b=torch.from_numpy(pair.full_b),
            target=torch.from_numpy(pair.target),
            target_valid=torch.from_numpy(pair.target_valid),
            scenario_id=scene.scenario_id,
            dataset=self.source or str(scene.dataset),
            window=pair.windows.length,
            full=self.adapter(scene) if self.with_full else None,
            controls=controls,
        )

    def collate(self, samples: Sequence[SSLSample]) -> SSLBatch:
        return collate_ssl(samples, self.adapter.collate)


def collate_ssl(samples: Sequence[SSLSample], collate_view: Callable[[list[Any]], Any]) -> SSLBatch:
    """Batch SSL samples; views go through ``collate_view`` (the backbone adapter's collate)."""
    if not samples:
        raise ValueError("cannot collate an empty list of SSL samples")
    counts = torch.tensor([len(s.query_agent) for s in samples], dtype=torch.long)
    longest = max(s.target.shape[1] for s in samples)

    def pad(x: Tensor) -> Tensor:  # [P, H, ...] -> [P, longest, ...], zeros / False after H
        if x.shape[1] == longest:
            return x
        out = x.new_zeros((x.shape[0], longest, *x.shape[2:]))
        out[:, : x.shape[1]] = x
        return out

    controls: dict[str, Tensor | None] = {"controls": None, "control_valid": None, "control_draws": None}
    if samples[0].controls is not None:
        steps = max(s.controls.values.shape[1] for s in samples if s.controls is not None)

        def pad_steps(x: np.ndarray, width: int) -> Tensor:  # [P, k, ...] -> [P, width, ...], zeros after k
            out = np.zeros((x.shape[0], width, *x.shape[2:]), x.dtype)
            out[:, : x.shape[1]] = x
            return torch.from_numpy(out)

        parts = [s.controls for s in samples]
        if any(c is None for c in parts):
            raise ValueError("cannot collate SSL samples with and without transition controls")
        controls = {
            "controls": torch.cat([pad_steps(c.values, steps) for c in parts]),
            "control_valid": torch.cat([pad_steps(c.valid, steps) for c in parts]),
            "control_draws": torch.cat([pad_steps(c.draws, steps + 2) for c in parts]),
        }
    return SSLBatch(
        view_a=collate_view([s.view_a for s in samples]),
        view_b=collate_view([s.view_b for s in samples]),
        start_a=torch.tensor([s.start_a for s in samples], dtype=torch.long),
        start_b=torch.tensor([s.start_b for s in samples], dtype=torch.long),
        query_scene=torch.repeat_interleave(torch.arange(len(samples)), counts),
        query_agent=torch.cat([s.query_agent for s in samples]),
        full_b=torch.cat([s.full_b for s in samples]),
        target=torch.cat([pad(s.target) for s in samples]),
        target_valid=torch.cat([pad(s.target_valid) for s in samples]),
        scenario_ids=[s.scenario_id for s in samples],
        datasets=[s.dataset for s in samples],
        window=torch.tensor([s.window or s.target.shape[1] for s in samples], dtype=torch.long),
        full=collate_view([s.full for s in samples]) if samples[0].full is not None else None,
        **controls,
    )
