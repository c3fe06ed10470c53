"""Temporal views for SSL pre-training: window sampling, cropping, query selection, targets, batching."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

from smartpretrain.data.scene import AgentTracks, Scene
from smartpretrain.data.taxonomy import AgentRole, AgentType, Dataset
from smartpretrain.data.views import (
    SSLBatch,
    SSLViewTransform,
    TemporalViewSampler,
    ViewTooShortError,
    ViewWindows,
    collate_ssl,
    crop_scene,
)
from tests.helpers import TINY_NUM_STEPS, TINY_ORIGIN, make_tiny_scene


def _scene(valid: np.ndarray, scenario_id: str = "views-0", seed: int = 0) -> Scene:
    """A scene with random tracks (zeros where ``valid`` is False) and the tiny test map."""
    rng = np.random.default_rng(seed)
    n, t = valid.shape
    position = rng.uniform(-50.0, 50.0, (n, t, 3)).astype(np.float32)
    heading = rng.uniform(-math.pi, math.pi, (n, t)).astype(np.float32)
    velocity = rng.normal(0.0, 5.0, (n, t, 2)).astype(np.float32)
    position[~valid], heading[~valid], velocity[~valid] = 0.0, 0.0, 0.0
    role = np.full(n, AgentRole.SCORED, np.int8)
    role[0] = AgentRole.FOCAL
    agents = AgentTracks(
        ids=[f"a{i}" for i in range(n)],
        type=np.full(n, AgentType.VEHICLE, np.int8),
        role=role,
        is_sdc=np.arange(n) == 1,
        position=position,
        heading=heading,
        velocity=velocity,
        valid=valid.copy(),
        size=np.ones((n, 3), np.float32),
    )
    scene = Scene(
        scenario_id=scenario_id,
        dataset=Dataset.SYNTHETIC,
        city="testville",
        num_steps=t,
        current_step=t // 2,
        origin=np.array([10.0, 20.0, 0.0]),
        agents=agents,
        map=make_tiny_scene().map,
    )
    scene.validate()
    return scene


# --- window sampling ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("num_steps", "window"), [(t, h) for t in (50, 91, 110) for h in (10, 20, 25, 40, 50) if 2 * h <= t]
)
def test_sampled_windows_never_overlap_and_stay_inside(num_steps: int, window: int) -> None:
    np.random.seed(num_steps * 100 + window)
    sampler = TemporalViewSampler(window)
    starts_a = set()
    for _ in range(300):
        w = sampler.sample_windows(num_steps)
        assert isinstance(w.start_a, int) and isinstance(w.start_b, int)
        assert w.length == window
        assert 0 <= w.start_a <= num_steps - 2 * window
        assert w.start_b >= w.start_a + window  # no overlap (they may touch)
        assert w.start_b + window <= num_steps
        starts_a.add(w.start_a)
    assert sampler.max_start(num_steps) == num_steps - 2 * window
    if num_steps - 2 * window <= 20:  # few admissible values: every one of them shows up in 300 draws
        assert starts_a == set(range(num_steps - 2 * window + 1))


def test_av2_windows_cover_every_admissible_pair() -> None:
    """AV2 (T=110, H=50): s_A in [0, 10], s_B in [s_A + 50, 60]; every pair is drawn, nothing else."""
    np.random.seed(0)
    sampler = TemporalViewSampler(50)
    drawn = {(w.start_a, w.start_b) for w in (sampler.sample_windows(110) for _ in range(3000))}
    admissible = {(a, b) for a in range(11) for b in range(a + 50, 61)}
    assert drawn == admissible


def test_exactly_two_windows_fit() -> None:
    w = TemporalViewSampler(20).sample_windows(40, "fits")
    assert (w.start_a, w.start_b, w.length) == (0, 20, 20)


@pytest.mark.parametrize("deterministic", [False, True])
def test_too_short_scene_raises_naming_the_scene(deterministic: bool) -> None:
    sampler = TemporalViewSampler(25, deterministic=deterministic)
    with pytest.raises(ViewTooShortError, match="scene-xyz") as info:
        sampler.sample_windows(49, "scene-xyz")
    assert isinstance(info.value, ValueError)
    with pytest.raises(ViewTooShortError, match="short-scene"):
        sampler(_scene(np.ones((2, 30), bool), "short-scene"))


def test_window_validation() -> None:
    with pytest.raises(ValueError):
        TemporalViewSampler(1)
    with pytest.raises(ValueError, match="overlap"):
        ViewWindows(0, 9, 10)
    with pytest.raises(ValueError):
        ViewWindows(-1, 20, 10)
    ViewWindows(0, 10, 10)  # touching windows are fine


def test_deterministic_windows_depend_on_seed_and_scene_only() -> None:
    a = TemporalViewSampler(20, deterministic=True, seed=3)
    b = TemporalViewSampler(20, deterministic=True, seed=3)
    state = np.random.get_state()
    ids = [f"scene-{i}" for i in range(40)]
    first = [a.sample_windows(110, k) for k in ids]
    np.random.seed(123)  # the global generator plays no part
    again = [a.sample_windows(110, k) for k in ids]
    other_instance = [b.sample_windows(110, k) for k in ids]
    assert first == again == other_instance
    assert len(set(first)) > 10  # different scenes get different windows
    other_seed = [TemporalViewSampler(20, deterministic=True, seed=4).sample_windows(110, k) for k in ids]
    assert other_seed != first
    for w in first:
        assert 0 <= w.start_a <= 70 and w.start_a + 20 <= w.start_b <= 90
    np.random.set_state(state)


def test_deterministic_mode_leaves_the_global_generator_alone() -> None:
    np.random.seed(7)
    expected = np.random.rand()
    np.random.seed(7)
    TemporalViewSampler(10, deterministic=True).sample_windows(50, "x")
    assert np.random.rand() == expected


# --- cropping -----------------------------------------------------------------------------------------------------
def test_crop_scene_slices_agents_and_keeps_the_rest() -> None:
    scene = make_tiny_scene()
    view = crop_scene(scene, 5, 8)
    view.validate()
    assert view.num_steps == 8 and view.current_step == 7
    a, v = scene.agents, view.agents
    np.testing.assert_array_equal(v.position, a.position[:, 5:13])
    np.testing.assert_array_equal(v.heading, a.heading[:, 5:13])
    np.testing.assert_array_equal(v.velocity, a.velocity[:, 5:13])
    np.testing.assert_array_equal(v.valid, a.valid[:, 5:13])
    assert v.ids == a.ids
    np.testing.assert_array_equal(v.type, a.type)
    np.testing.assert_array_equal(v.role, a.role)
    np.testing.assert_array_equal(v.is_sdc, a.is_sdc)
    np.testing.assert_array_equal(v.size, a.size)
    assert view.map is scene.map
    np.testing.assert_array_equal(view.origin, np.array(TINY_ORIGIN))
    assert (view.scenario_id, view.dataset, view.city) == (scene.scenario_id, scene.dataset, scene.city)
    # the original is untouched
    assert scene.num_steps == TINY_NUM_STEPS and scene.agents.position.shape[1] == TINY_NUM_STEPS


@pytest.mark.parametrize(("start", "inside"), [(15, slice(0, 5)), (-3, slice(3, 8))])
def test_crop_beyond_the_timeline_is_unobserved(start: int, inside: slice) -> None:
    scene = make_tiny_scene()
    view = crop_scene(scene, start, 8)
    view.validate()
    steps = np.arange(start, start + 8)
    outside = np.ones(8, bool)
    outside[inside] = False
    assert not view.agents.valid[:, outside].any()
    assert (view.agents.position[:, outside] == 0).all()
    assert (view.agents.heading[:, outside] == 0).all()
    assert (view.agents.velocity[:, outside] == 0).all()
    src = steps[inside]
    np.testing.assert_array_equal(view.agents.valid[:, inside], scene.agents.valid[:, src])
    np.testing.assert_array_equal(view.agents.position[:, inside], scene.agents.position[:, src])


# --- queries and targets ------------------------------------------------------------------------------------------
T, H = 30, 10
WINDOWS = ViewWindows(3, 16, H)  # A = steps 3..12, B = steps 16..25


def _knockout_valid() -> np.ndarray:
    valid = np.ones((8, T), bool)
    valid[1, 5] = False  # inside A: not a query
    valid[2, 20] = False  # inside B: a query, not full in B
    valid[3, 14] = False  # between the windows: a full query
    valid[4, 2] = False  # before A: a full query
    valid[5, 12] = False  # last step of A: not a query
    valid[6, 3] = False  # first step of A: not a query
    valid[7, [16, 25]] = False  # first and last steps of B
    return valid


def test_queries_are_the_agents_observed_over_all_of_window_a() -> None:
    valid = _knockout_valid()
    pair = TemporalViewSampler(H)(_scene(valid), windows=WINDOWS)
    assert pair.windows == WINDOWS
    assert pair.view_a.num_steps == H and pair.view_b.num_steps == H
    np.testing.assert_array_equal(pair.view_a.agents.valid, valid[:, 3:13])
    np.testing.assert_array_equal(pair.view_b.agents.valid, valid[:, 16:26])
    assert pair.query_agent.dtype == np.int64
    np.testing.assert_array_equal(pair.query_agent, [0, 2, 3, 4, 7])
    assert pair.full_b.dtype == np.bool_
    np.testing.assert_array_equal(pair.full_b, [True, False, True, True, False])
    np.testing.assert_array_equal(pair.target_valid, valid[[0, 2, 3, 4, 7]][:, 16:26])
    for agent in (1, 5, 6):
        assert agent not in pair.query_agent


def test_queries_against_an_independent_check_on_random_validity() -> None:
    rng = np.random.default_rng(5)
    valid = rng.random((40, T)) > 0.03
    valid[0] = True
    pair = TemporalViewSampler(H)(_scene(valid), windows=WINDOWS)
    expected_q = [i for i in range(40) if all(valid[i, s] for s in range(3, 13))]
    assert 0 < len(expected_q) < 40
    np.testing.assert_array_equal(pair.query_agent, expected_q)
    np.testing.assert_array_equal(pair.full_b, [all(valid[i, s] for s in range(16, 26)) for i in expected_q])


def test_target_is_window_b_in_the_query_frame_at_the_end_of_window_a() -> None:
    valid = _knockout_valid()
    scene = _scene(valid, seed=11)
    pair = TemporalViewSampler(H)(scene, windows=WINDOWS)
    a = scene.agents
    assert pair.target.shape == (5, H, 2) and pair.target.dtype == np.float32
    assert pair.target_valid.shape == (5, H)
    for row, agent in enumerate(pair.query_agent):
        theta = float(a.heading[agent, 12])
        rot = np.array([[math.cos(-theta), -math.sin(-theta)], [math.sin(-theta), math.cos(-theta)]])
        origin = a.position[agent, 12, :2].astype(np.float64)
        for t in range(H):
            if valid[agent, 16 + t]:
                expected = rot @ (a.position[agent, 16 + t, :2].astype(np.float64) - origin)
                np.testing.assert_allclose(pair.target[row, t], expected, atol=1e-4, rtol=0)
                assert pair.target_valid[row, t]
            else:
                assert not pair.target_valid[row, t]
                assert (pair.target[row, t] == 0).all()
    assert not pair.target_valid[1, 4] and not pair.target_valid[4, 0] and not pair.target_valid[4, 9]


def test_target_of_straight_motion_along_the_heading_is_on_the_x_axis() -> None:
    valid = np.ones((2, T), bool)
    scene = _scene(valid)
    steps = np.arange(T, dtype=np.float64)
    for agent, theta in enumerate((0.7, -2.5)):
        scene.agents.heading[agent] = theta
        scene.agents.position[agent, :, 0] = 3.0 + 2.0 * steps * math.cos(theta)
        scene.agents.position[agent, :, 1] = -4.0 + 2.0 * steps * math.sin(theta)
    pair = TemporalViewSampler(H)(scene, windows=WINDOWS)
    expected_x = 2.0 * (np.arange(16, 26) - 12)  # metres ahead of the step-12 position
    for row in range(2):
        np.testing.assert_allclose(pair.target[row, :, 0], expected_x, atol=1e-4)
        np.testing.assert_allclose(pair.target[row, :, 1], 0.0, atol=1e-4)


def test_a_scene_without_queries() -> None:
    valid = np.ones((3, T), bool)
    valid[:, 7] = False
    pair = TemporalViewSampler(H)(_scene(valid), windows=WINDOWS)
    assert pair.query_agent.shape == (0,) and pair.full_b.shape == (0,)
    assert pair.target.shape == (0, H, 2) and pair.target_valid.shape == (0, H)


# --- transform and batching ---------------------------------------------------------------------------------------
class _FakeView:
    """A collated 'backbone batch': concatenated positions plus the number of scenes, movable like a tensor."""

    def __init__(self, position: torch.Tensor, valid: torch.Tensor, scene: torch.Tensor) -> None:
        self.position, self.valid, self.scene = position, valid, scene
        self.moved_to: list[str] = []

    def to(self, device: torch.device | str) -> _FakeView:
        out = _FakeView(self.position.to(device), self.valid.to(device), self.scene.to(device))
        out.moved_to = [*self.moved_to, str(device)]
        return out


class _FakeAdapter:
    """Scene -> dict of tensors; collate concatenates and records each agent's scene."""

    def __call__(self, scene: Scene) -> dict[str, torch.Tensor]:
        return {
            "position": torch.from_numpy(scene.agents.position[..., :2].copy()),
            "valid": torch.from_numpy(scene.agents.valid.copy()),
        }

    def collate(self, samples: list[dict[str, torch.Tensor]]) -> _FakeView:
        scene = torch.cat([torch.full((len(s["valid"]),), i) for i, s in enumerate(samples)])
        return _FakeView(torch.cat([s["position"] for s in samples]), torch.cat([s["valid"] for s in samples]), scene)


def _three_scenes() -> list[Scene]:
    rng = np.random.default_rng(2)
    num_agents = (5, 3, 6)
    scenes = []
    for k, n in enumerate(num_agents):
        valid = rng.random((n, T)) > 0.02
        if k == 1:
            valid[:, ::2] = False  # nobody is observed over a whole window: no queries
        scenes.append(_scene(valid, f"scene-{k}", seed=k))
    return scenes


def test_transform_and_collate_concatenate_queries_across_scenes() -> None:
    sampler = TemporalViewSampler(H, deterministic=True, seed=1)
    transform = SSLViewTransform(sampler, _FakeAdapter())
    scenes = _three_scenes()
    samples = [transform(s) for s in scenes]
    batch = transform.collate(samples)
    assert isinstance(batch, SSLBatch) and batch.num_scenes == 3
    assert batch.scenario_ids == ["scene-0", "scene-1", "scene-2"]
    assert batch.datasets == [str(Dataset.SYNTHETIC)] * 3

    windows = [sampler.sample_windows(T, s.scenario_id) for s in scenes]
    assert batch.start_a.dtype == torch.long and batch.start_b.dtype == torch.long
    assert batch.start_a.tolist() == [w.start_a for w in windows]
    assert batch.start_b.tolist() == [w.start_b for w in windows]

    exp_scene, exp_agent, exp_full, exp_tv = [], [], [], []
    for k, (scene, w) in enumerate(zip(scenes, windows, strict=True)):
        v = scene.agents.valid
        for i in range(scene.agents.num_agents):
            if v[i, w.start_a : w.start_a + H].all():
                exp_scene.append(k)
                exp_agent.append(i)
                exp_full.append(bool(v[i, w.start_b : w.start_b + H].all()))
                exp_tv.append(v[i, w.start_b : w.start_b + H])
    assert 1 not in exp_scene and {0, 2} <= set(exp_scene)  # the middle scene has no query
    assert batch.query_scene.tolist() == exp_scene
    assert batch.query_agent.tolist() == exp_agent
    assert batch.full_b.tolist() == exp_full
    np.testing.assert_array_equal(batch.target_valid.numpy(), np.array(exp_tv))
    pairs = [sampler(s) for s in scenes]
    np.testing.assert_array_equal(batch.target.numpy(), np.concatenate([p.target for p in pairs]))

    # the views went through the adapter and its collate
    assert batch.view_a.position.shape == (14, H, 2) and batch.view_a.scene.tolist() == [0] * 5 + [1] * 3 + [2] * 6
    np.testing.assert_array_equal(
        batch.view_b.position.numpy(), np.concatenate([p.view_b.agents.position[..., :2] for p in pairs])
    )
    np.testing.assert_array_equal(batch.view_a.valid.numpy(), np.concatenate([p.view_a.agents.valid for p in pairs]))


def test_ssl_batch_to_moves_tensors_and_views() -> None:
    transform = SSLViewTransform(TemporalViewSampler(H, deterministic=True), _FakeAdapter())
    batch = transform.collate([transform(s) for s in _three_scenes()])
    moved = batch.to("cpu")
    assert isinstance(moved, SSLBatch)
    assert moved.view_a.moved_to == ["cpu"] and moved.view_b.moved_to == ["cpu"]
    for name in ("start_a", "start_b", "query_scene", "query_agent", "full_b", "target", "target_valid"):
        assert torch.equal(getattr(moved, name), getattr(batch, name))
        assert getattr(moved, name).device.type == "cpu"
    assert moved.scenario_ids == batch.scenario_ids


def test_collate_ssl_with_explicit_collate_and_empty_input() -> None:
    transform = SSLViewTransform(TemporalViewSampler(H, deterministic=True), _FakeAdapter())
    samples = [transform(s) for s in _three_scenes()]
    batch = collate_ssl(samples, _FakeAdapter().collate)
    assert batch.query_agent.tolist() == torch.cat([s.query_agent for s in samples]).tolist()
    with pytest.raises(ValueError):
        collate_ssl([], _FakeAdapter().collate)


def test_transform_is_picklable_and_reproduces_itself() -> None:
    transform = SSLViewTransform(TemporalViewSampler(H, deterministic=True, seed=9), _FakeAdapter())
    clone = pickle.loads(pickle.dumps(transform))
    assert "TemporalViewSampler(window=10" in repr(clone)
    scene = _three_scenes()[0]
    a, b = transform(scene), clone(scene)
    assert (a.start_a, a.start_b) == (b.start_a, b.start_b)
    assert torch.equal(a.query_agent, b.query_agent) and torch.equal(a.target, b.target)
    assert torch.equal(a.view_a["position"], b.view_a["position"])
