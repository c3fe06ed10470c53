"""Trajectory windows cut from scenes: the agent frame, the agent filters, and the futures / histories of
embedding records."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smartpretrain.data.cache import SceneCache
from smartpretrain.data.scene import AgentTracks, Scene
from smartpretrain.data.taxonomy import AgentRole, AgentType, Dataset
from smartpretrain.embeddings.maneuvers import Maneuver
from smartpretrain.embeddings.records import AgentSelection, EmbeddingRecords
from smartpretrain.embeddings.trajectories import (
    TrajectoryWindow,
    WindowSpec,
    agent_futures,
    agent_history,
    extract_windows,
    scene_windows,
)


def _scene(num_steps: int = 10) -> Scene:
    """Agent 0 (focal vehicle) drives north (heading pi/2) at 2 m/s from (10, 5); agent 1 (static object) stands;
    agent 2 (vehicle) is unobserved at step 2; agent 3 (pedestrian) misses steps 4 and 5."""
    n, t = 4, num_steps
    pos = np.zeros((n, t, 3), np.float32)
    pos[0, :, 0], pos[0, :, 1] = 10.0, 5.0 + 0.2 * np.arange(t)
    pos[3, :, 0] = -0.1 * np.arange(t)
    valid = np.ones((n, t), bool)
    valid[2, 2] = False
    valid[3, 4:6] = False
    heading = np.zeros((n, t), np.float32)
    heading[0] = np.pi / 2
    heading[3] = np.pi
    agents = AgentTracks(
        ids=["a", "b", "c", "d"],
        type=np.array([AgentType.VEHICLE, AgentType.STATIC, AgentType.VEHICLE, AgentType.PEDESTRIAN], np.int8),
        role=np.array([AgentRole.FOCAL, AgentRole.UNSCORED, AgentRole.SCORED, AgentRole.UNSCORED], np.int8),
        is_sdc=np.zeros(n, bool),
        position=np.where(valid[..., None], pos, 0.0).astype(np.float32),
        heading=heading,
        velocity=np.zeros((n, t, 2), np.float32),
        valid=valid,
    )
    return Scene("s0", Dataset.AV1, "PIT", t, 4, np.zeros(2), agents, dt=0.1)


def test_windows_are_in_the_agent_frame_at_their_first_step() -> None:
    got = scene_windows(_scene(), WindowSpec(TrajectoryWindow(6, start_step=2)))
    assert got.track_id == ["a"]  # b is static, c unobserved at the start, d misses two of the six
    np.testing.assert_allclose(got.positions[0, :, 0], 0.2 * np.arange(6), atol=1e-5)  # north becomes +x
    np.testing.assert_allclose(got.positions[0, :, 1], 0.0, atol=1e-5)
    assert got.step.tolist() == [2] and got.role == ["focal"] and got.dataset == ["av1"]


def test_min_valid_fraction_and_roles_select_agents() -> None:
    scene = _scene()
    loose = scene_windows(scene, WindowSpec(TrajectoryWindow(10), min_valid_fraction=0.8))
    assert loose.track_id == ["a", "c", "d"]
    d, ok = loose.positions[2], loose.valid[2]
    np.testing.assert_allclose(d[~ok], 0.0)  # unobserved steps are zero, not stale values
    np.testing.assert_allclose(d[ok, 0], 0.1 * np.flatnonzero(ok), atol=1e-5)  # heading pi: west is +x
    assert scene_windows(scene, WindowSpec(TrajectoryWindow(10))).track_id == ["a"]
    focal = scene_windows(scene, WindowSpec(TrajectoryWindow(10), AgentSelection.FOCAL, min_valid_fraction=0.5))
    assert focal.track_id == ["a"]
    with_static = WindowSpec(TrajectoryWindow(10), agent_types=(AgentType.STATIC,))
    assert scene_windows(scene, with_static).track_id == ["b"]


def test_window_validation() -> None:
    with pytest.raises(ValueError, match="num_steps >= 2"):
        TrajectoryWindow(1)
    with pytest.raises(ValueError, match="min_valid_fraction"):
        WindowSpec(TrajectoryWindow(5), min_valid_fraction=0.0)
    assert TrajectoryWindow.of_seconds(3.0, 0.1, start_s=2.0) == TrajectoryWindow(30, 20)


def _focal_records(split: Path) -> EmbeddingRecords:
    cache = SceneCache(split)
    scenes = list(cache)
    return EmbeddingRecords(
        scenario_id=[s.scenario_id for s in scenes],
        track_id=[s.agents.ids[s.focal_index] for s in scenes],
        dataset=["av1"] * len(scenes),
        role=["focal"] * len(scenes),
        step=[s.current_step for s in scenes],
        vector=np.zeros((len(scenes), 2), np.float32),
    )


def test_futures_and_histories_of_records_are_in_the_frame_at_their_step(av1_cache: Path) -> None:
    split = av1_cache / "av1" / "val"
    records = _focal_records(split)
    future, fvalid = agent_futures(split, records, 30)
    history, hvalid = agent_history(split, records, 20)
    scene = SceneCache(split)[0]
    a, s = scene.focal_index, scene.current_step
    psi, origin = float(scene.agents.heading[a, s]), scene.agents.position[a, s, :2]
    world = scene.agents.position[a, s + 1 : s + 31, :2] - origin
    rotated = np.stack([np.cos(psi) * world[:, 0] + np.sin(psi) * world[:, 1],
                        -np.sin(psi) * world[:, 0] + np.cos(psi) * world[:, 1]], axis=-1)  # fmt: skip
    np.testing.assert_allclose(future[0], rotated, atol=1e-4)
    assert fvalid[0].all() and hvalid[0].all()
    np.testing.assert_allclose(history[0, -1], 0.0, atol=1e-5)  # the history ends at the frame's origin
    # past the scene's end: the remaining steps are invalid, not wrapped
    beyond, beyond_valid = agent_futures(split, records, 40)
    assert beyond_valid[:, :30].all() and not beyond_valid[:, 30:].any() and (beyond[:, 30:] == 0).all()


def test_futures_of_an_unknown_track_are_refused(av1_cache: Path) -> None:
    split = av1_cache / "av1" / "val"
    records = _focal_records(split)
    records.track_id[1] = "no-such-track"
    with pytest.raises(KeyError, match="no-such-track"):
        agent_futures(split, records, 30)


def test_extract_windows_labels_maneuvers(av1_cache: Path) -> None:
    windows = extract_windows(av1_cache / "av1" / "train", WindowSpec(TrajectoryWindow(50)), progress=False)
    assert len(windows) > 8 and windows.positions.shape[1:] == (50, 2)
    assert set(windows.maneuver.tolist()) <= {int(m) for m in Maneuver}
    np.testing.assert_allclose(windows.positions[:, 0], 0.0, atol=1e-5)  # every window starts at its origin
    taken = windows.take(np.array([2, 0]))
    assert taken.track_id == [windows.track_id[2], windows.track_id[0]]
