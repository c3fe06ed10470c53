"""The per-scene agent cap: which agents are kept, in which order, with consistent arrays."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from smartpretrain.data.agent_cap import AgentCap, cap_agents, count_capped
from smartpretrain.data.scene import AgentTracks, Scene, TrafficSignals
from smartpretrain.data.taxonomy import AgentRole, AgentType, Dataset
from tests.helpers import make_tiny_scene

T, CS = 10, 4  # steps, present
FOCAL_XY = np.array([500.0, 500.0])  # far from (0, 0), where unobserved steps hold their zeros
N = 30
FOCAL, SDC, SCORED, INTEREST, HARD = 3, 5, 10, 20, 25  # HARD: difficulty 2 (WOMD track to predict), role UNSCORED
PROTECTED = (FOCAL, SDC, SCORED, INTEREST, HARD)
PAST_ONLY, FUTURE_ONLY, NEVER = 11, 12, 13
# distance (m) of each agent's reference position to the focal agent's position at the present
DIST = {0: 50.0, 1: 5.0, 2: 45.0, FOCAL: 0.0, 4: 30.0, SDC: 400.0, 6: 8.0, 7: 60.0, 8: 12.0, 9: 8.0,
        SCORED: 350.0, PAST_ONLY: 3.0, FUTURE_ONLY: 7.0, INTEREST: 900.0, HARD: 800.0}  # fmt: skip
for _i in range(14, N):
    DIST.setdefault(_i, 100.0 + _i)


def make_scene(with_optional: bool = True) -> Scene:
    """30 agents on straight tracks at known distances (``DIST``) from the focal agent at the present.

    Agent 11 is observed at steps 0-2 (3 m away at step 2) and again at 7-9 far away; agent 12 only from step 6 on
    (7 m away at step 6, then driving off); agent 13 never. Agents 6 and 9 are at the same distance.
    """
    t = np.arange(T, dtype=np.float64)
    position = np.zeros((N, T, 3))
    valid = np.ones((N, T), bool)
    focal_vel = np.array([2.0, 0.0])
    focal_track = FOCAL_XY + (t - CS)[:, None] * focal_vel * 0.1
    for i in range(N):
        angle = 0.7 * i
        ref = FOCAL_XY + DIST.get(i, 0.0) * np.array([np.cos(angle), np.sin(angle)])
        vel = 0.1 * np.array([np.cos(angle + 1.0), np.sin(angle + 1.0)])  # m per step, a slow straight track
        position[i, :, :2] = ref + (t - CS)[:, None] * vel
    position[FOCAL, :, :2] = focal_track
    valid[PAST_ONLY, 3:7] = False
    position[PAST_ONLY, :3, :2] = FOCAL_XY + np.array([3.0, 0.0]) + (t[:3] - 2)[:, None] * 0.1
    position[PAST_ONLY, 7:, :2] = FOCAL_XY + np.array([0.0, 90.0])
    valid[FUTURE_ONLY, :6] = False
    position[FUTURE_ONLY, 6:, :2] = FOCAL_XY + np.array([0.0, -7.0]) + (t[6:] - 6)[:, None] * np.array([0.0, -5.0])
    valid[NEVER] = False
    position[~valid] = 0.0
    velocity = np.gradient(position[..., :2], 0.1, axis=1)
    velocity[~valid] = 0.0
    heading = np.where(valid, np.arctan2(velocity[..., 1], velocity[..., 0]), 0.0)

    role = np.full(N, AgentRole.UNSCORED, np.int8)
    role[FOCAL], role[SCORED], role[NEVER] = AgentRole.FOCAL, AgentRole.SCORED, AgentRole.FRAGMENT
    is_sdc = np.zeros(N, bool)
    is_sdc[SDC] = True
    of_interest = np.zeros(N, bool)
    of_interest[INTEREST] = True
    difficulty = np.zeros(N, np.int8)
    difficulty[HARD] = 2
    agents = AgentTracks(
        ids=[f"a{i}" for i in range(N)],
        type=(np.arange(N) % len(AgentType)).astype(np.int8),
        role=role,
        is_sdc=is_sdc,
        position=position.astype(np.float32),
        heading=heading.astype(np.float32),
        velocity=velocity.astype(np.float32),
        valid=valid,
        size=np.stack([np.arange(N), np.ones(N), np.ones(N)], axis=1).astype(np.float32) if with_optional else None,
        difficulty=difficulty if with_optional else None,
        of_interest=of_interest if with_optional else None,
    )
    if not with_optional:  # without WOMD's labels, only role / is_sdc protect
        agents.role[HARD] = AgentRole.SCORED
        agents.role[INTEREST] = AgentRole.SCORED
    signals = TrafficSignals(
        step=np.array([0, 4], np.int16), lane_id=np.array([7, 7], np.int64), state=np.array([4, 6], np.int8),
        stop_point=np.zeros((2, 3), np.float32),
    )  # fmt: skip
    scene = Scene("cap-0", Dataset.SYNTHETIC, "testville", T, CS, np.array([1.0, 2.0, 0.0]), agents, signals=signals)
    scene.validate()
    return scene


def kept_indices(scene: Scene) -> list[int]:
    return [int(i[1:]) for i in scene.agents.ids]


def test_keeps_protected_and_nearest_in_original_order():
    scene = make_scene()
    result = cap_agents(scene, 10)
    # 5 protected + the 5 nearest others: 11 (3 m, its last position before the present), 1 (5 m),
    # 12 (7 m, its first position after the present), 6 and 9 (8 m each)
    assert kept_indices(result.scene) == [1, 3, 5, 6, 9, 10, 11, 12, 20, 25]
    assert result.num_dropped == 20
    assert result.scene.agents.num_agents == 10


def test_ties_broken_by_original_index():
    result = cap_agents(make_scene(), 9)  # one slot less: 6 and 9 are both 8 m away, 6 comes first
    assert kept_indices(result.scene) == [1, 3, 5, 6, 10, 11, 12, 20, 25]


def test_never_observed_agents_go_last():
    result = cap_agents(make_scene(), 28)  # drops the never-observed agent 13, then the farthest other (29, 129 m)
    dropped = sorted(set(range(N)) - set(kept_indices(result.scene)))
    assert dropped == [NEVER, 29]
    assert result.num_dropped == 2


def test_unobserved_steps_zeros_are_not_positions():
    # agent 11's zeros at steps 3-6 lie ~707 m from the focal agent; it is kept for its 3 m at step 2,
    # agent 12 for its 7 m at step 6
    kept = kept_indices(cap_agents(make_scene(), 6).scene)
    assert kept == [3, 5, 10, PAST_ONLY, 20, 25]
    kept = kept_indices(cap_agents(make_scene(), 8).scene)
    assert kept == [1, 3, 5, 10, PAST_ONLY, FUTURE_ONLY, 20, 25]


def test_arrays_sliced_consistently():
    scene = make_scene()
    capped = cap_agents(scene, 10).scene
    a, b = scene.agents, capped.agents
    idx = np.array(kept_indices(capped))
    for name in ("type", "role", "is_sdc", "position", "heading", "velocity", "valid", "size", "difficulty",
                 "of_interest"):  # fmt: skip
        np.testing.assert_array_equal(getattr(b, name), getattr(a, name)[idx], err_msg=name)
    for k, i in enumerate(idx):  # ids[k] still matches position[k]
        assert b.ids[k] == a.ids[i]
        np.testing.assert_array_equal(b.position[k], a.position[i])
    assert (b.role == AgentRole.FOCAL).sum() == 1 and b.is_sdc.sum() == 1
    capped.validate()
    assert capped.map is scene.map and capped.signals is scene.signals
    assert (capped.scenario_id, capped.current_step, capped.num_steps) == ("cap-0", CS, T)
    np.testing.assert_array_equal(capped.origin, scene.origin)
    assert scene.agents.num_agents == N  # the input is not modified


def test_optional_fields_none_stay_none():
    scene = make_scene(with_optional=False)
    capped = cap_agents(scene, 10).scene
    assert capped.agents.size is None and capped.agents.difficulty is None and capped.agents.of_interest is None
    assert kept_indices(capped) == [1, 3, 5, 6, 9, 10, 11, 12, 20, 25]
    capped.validate()


def test_protected_over_cap_keeps_all_protected():
    result = cap_agents(make_scene(), 3)
    assert kept_indices(result.scene) == list(PROTECTED)
    assert result.num_dropped == N - len(PROTECTED)
    assert result.scene.agents.num_agents > 3


def test_scene_within_cap_unchanged():
    scene = make_scene()
    for cap in (N, N + 1, 1000):
        result = cap_agents(scene, cap)
        assert result.scene is scene and result.num_dropped == 0
    tiny = make_tiny_scene()
    assert AgentCap(3)(tiny) is tiny


def test_focal_not_observed_at_present_uses_its_last_position():
    scene = make_tiny_scene()  # focal, AV (sdc), pedestrian
    scene.agents.role[1] = AgentRole.UNSCORED
    scene.agents.is_sdc[1] = False
    scene.agents.valid[0, 5:10] = False  # with its gap at 3-4, the focal agent's last position is step 2's (7, 1.75)
    scene.agents.position[0, 5:10] = 0.0
    # only the focal agent is protected; the others compete for one slot: from (7, 1.75) the AV at (11.8, 5.25) is
    # nearer than the pedestrian's last position (20.35, 1.3); from the focal's next position (19, 1.75) it is not
    assert cap_agents(scene, 2).scene.agents.ids == ["focal", "AV"]


@pytest.mark.parametrize("bad", [0, -1])
def test_bad_max_agents_names_the_option(bad):
    with pytest.raises(ValueError, match="max_agents"):
        cap_agents(make_scene(), bad)
    with pytest.raises(ValueError, match="max_agents"):
        AgentCap(bad)
    with pytest.raises(ValueError, match="max_agents"):
        count_capped(np.array([1, 2]), bad)


def test_agent_cap_pickles():
    cap = AgentCap(10)
    clone = pickle.loads(pickle.dumps(cap))
    assert clone == cap and repr(clone) == "AgentCap(max_agents=10)"
    assert kept_indices(clone(make_scene())) == kept_indices(cap(make_scene()))


def test_count_capped():
    assert count_capped(np.array([10, 300, 256, 1000]), 256) == (2, 44 + 744)
    assert count_capped(np.array([], np.int64), 5) == (0, 0)
