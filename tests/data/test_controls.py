"""Kinematic controls from trajectories (smartpretrain/data/controls.py) and the views' transition controls: constant
acceleration and turn rate come out exactly, unobserved or implausible transitions never produce a control, and the
controls of a view pair are those of the steps from view A's present to view B's present."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smartpretrain.data.controls import ControlSpec, fit_half_width, kinematic_controls
from smartpretrain.data.scene import AgentTracks, Scene
from smartpretrain.data.taxonomy import AgentRole, AgentType, Dataset
from smartpretrain.data.views import SSLViewTransform, TemporalViewSampler, ViewWindows, transition_controls

NO_BOUNDS = ControlSpec(fit_window_s=1.0, max_accel=1e9, max_yaw_rate=1e9)


def _tracks(accel: np.ndarray, yaw_rate: np.ndarray, speed0: np.ndarray, dt: float, steps: int) -> AgentTracks:
    """Agents driving with constant longitudinal acceleration and yaw rate: exact speed and heading per step,
    positions integrated from them (velocity along the heading)."""
    n = len(accel)
    tau = np.arange(steps) * dt
    speed = speed0[:, None] + accel[:, None] * tau[None]
    heading = np.linspace(-2.5, 2.5, n)[:, None] + yaw_rate[:, None] * tau[None]
    velocity = np.stack([speed * np.cos(heading), speed * np.sin(heading)], axis=-1)
    position = np.zeros((n, steps, 3))
    position[:, 1:, :2] = np.cumsum(velocity[:, :-1] * dt, axis=1)
    wrapped = (heading + np.pi) % (2 * np.pi) - np.pi  # stored headings are wrapped: the fit must unwrap them
    return AgentTracks(
        ids=[str(i) for i in range(n)],
        type=np.full(n, AgentType.VEHICLE, np.int8),
        role=np.array([AgentRole.FOCAL] + [AgentRole.UNSCORED] * (n - 1), np.int8),
        is_sdc=np.zeros(n, bool),
        position=position.astype(np.float32),
        heading=wrapped.astype(np.float32),
        velocity=velocity.astype(np.float32),
        valid=np.ones((n, steps), bool),
    )


ACCEL = np.array([0.0, 1.5, -2.0, 0.5, -0.8])
YAW = np.array([0.0, 0.3, -0.25, 1.2, 0.05])
SPEED0 = np.array([5.0, 3.0, 12.0, 8.0, -2.0])  # the last one reverses (negative longitudinal speed)


@pytest.mark.parametrize(("dt", "fit_window_s"), [(0.1, 0.0), (0.1, 1.0), (0.1, 2.0), (0.4, 1.0)])
def test_constant_acceleration_and_turn_rate_come_out_exactly(dt: float, fit_window_s: float) -> None:
    tracks = _tracks(ACCEL, YAW, SPEED0, dt, 50)
    spec = ControlSpec(fit_window_s=fit_window_s, max_accel=1e9, max_yaw_rate=1e9)
    controls, valid = kinematic_controls(tracks, dt, spec)
    assert valid[:, :-1].all() and not valid[:, -1].any()  # every transition; the last step has none
    np.testing.assert_allclose(controls[:, :-1, 0], np.repeat(ACCEL[:, None], 49, 1), atol=2e-4)
    np.testing.assert_allclose(controls[:, :-1, 1], np.repeat(YAW[:, None], 49, 1), atol=2e-4)


def test_gaps_cut_the_window_without_biasing_the_fit() -> None:
    tracks = _tracks(ACCEL, YAW, SPEED0, 0.1, 40)
    tracks.valid[:, [10, 11, 25]] = False
    tracks.valid[2, :5] = False
    controls, valid = kinematic_controls(tracks, 0.1, NO_BOUNDS)
    np.testing.assert_allclose(controls[valid][:, 0], np.repeat(ACCEL[:, None], 40, 1)[valid], atol=2e-4)
    np.testing.assert_allclose(controls[valid][:, 1], np.repeat(YAW[:, None], 40, 1)[valid], atol=2e-4)


def test_an_unobserved_step_never_produces_a_control() -> None:
    tracks = _tracks(ACCEL, YAW, SPEED0, 0.1, 30)
    rng = np.random.default_rng(0)
    tracks.valid[rng.random(tracks.valid.shape) < 0.3] = False
    controls, valid = kinematic_controls(tracks, 0.1, NO_BOUNDS)
    observed_transition = np.zeros_like(valid)
    observed_transition[:, :-1] = tracks.valid[:, :-1] & tracks.valid[:, 1:]
    assert valid.any() and np.array_equal(valid, observed_transition)
    assert (controls[~valid] == 0).all()


def test_a_detection_jump_is_marked_invalid_not_clipped() -> None:
    tracks = _tracks(np.zeros(2), np.zeros(2), np.array([10.0, 10.0]), 0.1, 30)
    tracks.velocity[1, 15] *= 3.0  # a 20 m/s spike in one frame: an identity switch, not a control
    spec = ControlSpec(fit_window_s=0.0, max_accel=10.0, max_yaw_rate=2.0)
    controls, valid = kinematic_controls(tracks, 0.1, spec)
    assert valid[0, :-1].all()
    assert not valid[1, 14] and not valid[1, 15]  # the transitions into and out of the spike
    assert (np.abs(controls[valid, 0]) <= 10.0).all()


def test_the_fit_window_in_steps() -> None:
    assert fit_half_width(1.0, 0.1) == 5  # 10 steps at 10 Hz
    assert fit_half_width(0.0, 0.1) == 1  # the plain finite difference
    assert fit_half_width(1.0, 0.4) == 1  # ETH/UCY
    with pytest.raises(ValueError, match="dt must be > 0"):
        fit_half_width(1.0, 0.0)
    with pytest.raises(ValueError, match=r"ssl\.controls"):
        ControlSpec(max_accel=0.0)


def _scene(steps: int = 50) -> Scene:
    tracks = _tracks(ACCEL, YAW, SPEED0, 0.1, steps)
    tracks.valid[3, 30:33] = False  # a gap inside the transition of agent 3
    return Scene("s0", Dataset.SYNTHETIC, "testville", steps, 19, np.zeros(3), tracks)


def test_transition_controls_run_from_view_a_present_to_view_b_present() -> None:
    scene = _scene()
    windows = ViewWindows(start_a=3, start_b=26, length=20)  # t_A = 22, t_B = 45: 23 transitions
    query = np.array([0, 3, 4])
    out = transition_controls(scene, query, windows, NO_BOUNDS, np.random.default_rng(0))
    full, full_valid = kinematic_controls(scene.agents, scene.dt, NO_BOUNDS)
    assert out.values.shape == (3, 23, 2) and out.valid.shape == (3, 23) and out.draws.shape == (3, 25)
    np.testing.assert_array_equal(out.values, full[query][:, 22:45])
    np.testing.assert_array_equal(out.valid, full_valid[query][:, 22:45])
    assert not out.valid[1, 29 - 22 : 33 - 22].any() and out.valid[1, : 29 - 22].all()
    assert ((out.draws >= 0) & (out.draws < 1)).all()


class _Adapter:
    def __call__(self, scene: Scene) -> int:
        return scene.num_steps

    def collate(self, samples: list[int]) -> list[int]:
        return list(samples)


def test_controls_leave_the_views_random_stream_alone_and_are_deterministic_in_validation() -> None:
    scene = _scene()
    plain = SSLViewTransform(TemporalViewSampler(20), _Adapter())
    with_controls = SSLViewTransform(TemporalViewSampler(20), _Adapter(), controls=ControlSpec())
    np.random.seed(7)
    a = plain(scene)
    np.random.seed(7)
    b = with_controls(scene)
    assert (a.start_a, a.start_b) == (b.start_a, b.start_b) and a.controls is None and b.controls is not None
    val = SSLViewTransform(TemporalViewSampler(20, deterministic=True), _Adapter(), controls=ControlSpec())
    first, second = val(scene), val(scene)
    np.testing.assert_array_equal(first.controls.draws, second.controls.draws)
    assert (first.start_a, first.start_b) == (second.start_a, second.start_b)


def test_collate_pads_transitions_to_the_longest() -> None:
    transform = SSLViewTransform(TemporalViewSampler(20, deterministic=True), _Adapter(), controls=ControlSpec())
    scenes = [_scene(50), _scene(42)]
    for i, s in enumerate(scenes):
        s.scenario_id = f"s{i}"
    samples = [transform(s) for s in scenes]
    batch = transform.collate(samples)
    k = max(s.controls.values.shape[1] for s in samples)
    p = sum(len(s.query_agent) for s in samples)
    assert batch.controls.shape == (p, k, 2) and batch.control_valid.shape == (p, k)
    assert batch.control_draws.shape == (p, k + 2)
    lengths = (batch.start_b - batch.start_a)[batch.query_scene]
    beyond = torch.arange(k)[None] >= lengths[:, None]
    assert not batch.control_valid[beyond].any()
    assert [s.controls.values.shape[1] for s in samples] == (batch.start_b - batch.start_a).tolist()
