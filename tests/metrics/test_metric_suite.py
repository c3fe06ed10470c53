"""The per-dataset metric conventions: the registry's field, the suite's keys and routing, and fine-tuning's logs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from smartpretrain.backbones.base import EvalTargets
from smartpretrain.backbones.constant_velocity import ConstantVelocity
from smartpretrain.backbones.forecast_mae.model import ForecastMAE
from smartpretrain.backbones.qcnet.model import QCNet
from smartpretrain.data.registry import DATASETS, MetricConvention, metric_convention, metric_datasets
from smartpretrain.data.scene import AgentTracks, Scene
from smartpretrain.data.taxonomy import AgentRole, AgentType, Dataset
from smartpretrain.metrics.forecasting import ForecastingMetrics, agent_datasets
from smartpretrain.metrics.pedestrian import PedestrianMetrics
from smartpretrain.metrics.suite import ForecastMetricSuite, estimate_current_speed, group_conventions
from smartpretrain.metrics.womd import WaymoMotionMetrics
from smartpretrain.tasks.finetune import FinetuneTask
from tests.helpers import make_tiny_scene

F = 80
ROLES = {"focal": int(AgentRole.FOCAL), "scored": int(AgentRole.SCORED), "unscored": int(AgentRole.UNSCORED)}


def test_registry_conventions() -> None:
    assert {d: metric_convention(d) for d in Dataset} == {
        Dataset.AV1: MetricConvention.AV2,
        Dataset.AV2: MetricConvention.AV2,
        Dataset.WOMD: MetricConvention.WOMD,
        Dataset.ETH_UCY: MetricConvention.PEDESTRIAN,
        Dataset.SYNTHETIC: MetricConvention.AV2,
    }
    assert all(isinstance(info.metric_convention, MetricConvention) for info in DATASETS.values())
    conventions = group_conventions((*metric_datasets(), "not_registered"))
    assert conventions["womd"] is MetricConvention.WOMD and conventions["eth_ucy"] is MetricConvention.PEDESTRIAN
    assert conventions["not_registered"] is MetricConvention.AV2


def mixed_targets(n_per: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, EvalTargets]:
    """Agents of an av2, a womd and an eth_ucy scene, with 20 modes and 80 future steps, in agent frames."""
    g = torch.Generator().manual_seed(seed)
    n = 3 * n_per
    speed = 12.0 * torch.rand(n, generator=g)
    heading = 0.2 * torch.randn(n, F, generator=g)
    step = torch.stack([torch.cos(heading), torch.sin(heading)], -1) * speed[:, None, None] * 0.1
    target = torch.cumsum(step, dim=1)
    pred = target[:, None] + 2.0 * torch.randn(n, 20, F, 2, generator=g)
    logits = torch.randn(n, 20, generator=g)
    valid = torch.rand(n, F, generator=g) > 0.1
    role = torch.full((n,), ROLES["focal"])
    role[::4] = ROLES["unscored"]
    targets = EvalTargets(
        target=target,
        valid=valid,
        role=role,
        scene_index=torch.arange(n) // n_per,
        dataset=["av2", "womd", "eth_ucy"],
        heading=heading,
        speed=speed,
    )
    return pred, torch.softmax(logits, dim=-1), targets


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_keys_are_av2_plus_each_conventions_per_group() -> None:
    pred, prob, targets = mixed_targets()
    mask = targets.role == ROLES["focal"]
    suite = ForecastMetricSuite(ks=(1, 6), datasets=metric_datasets(), num_modes=20, num_future_steps=F)
    suite.update(pred, prob, targets, mask)
    values = suite.compute()
    # the AV2 keys are exactly ForecastingMetrics'
    av2 = ForecastingMetrics(ks=(1, 6), datasets=metric_datasets())
    av2.update(pred[mask], prob[mask], targets.target[mask], targets.valid[mask], agent_datasets(targets, mask))
    expected_av2 = av2.compute()
    assert {k: v for k, v in values.items() if k in expected_av2} == expected_av2
    # the convention keys: per group only, each group its own convention
    extra = set(values) - set(expected_av2)
    assert extra == {f"womd/{m}@{t}" for m in ("minADE", "minFDE", "MR") for t in ("3s", "5s", "8s")} | {
        f"eth_ucy/{m}_{k}" for m in ("ADE", "FDE") for k in (1, 6, 20)
    }
    # and their values are those of the metrics on that group's agents alone
    rows = mask & (targets.scene_index == 1)
    womd = WaymoMotionMetrics()
    womd.update(
        pred[rows], prob[rows], targets.target[rows], targets.valid[rows], targets.speed[rows], targets.heading[rows]
    )
    for key, value in womd.compute().items():
        torch.testing.assert_close(values[f"womd/{key}"], value)
    rows = mask & (targets.scene_index == 2)
    ped = PedestrianMetrics(ks=(1, 6, 20))
    ped.update(pred[rows], prob[rows], targets.target[rows], targets.valid[rows])
    for key, value in ped.compute().items():
        torch.testing.assert_close(values[f"eth_ucy/{key}"], value)
    assert all(math.isfinite(float(v)) for k, v in values.items() if "/" in k)
    suite.reset()
    assert not any("/" in k for k in suite.compute())


def test_k_and_horizons_follow_the_model() -> None:
    pred, prob, targets = mixed_targets()
    mask = targets.role == ROLES["focal"]
    six = ForecastMetricSuite(ks=(1, 6), datasets=metric_datasets(), num_modes=6, num_future_steps=60)
    six.update(pred[:, :6, :60], prob[:, :6], _cut(targets, 60), mask)
    keys = set(six.compute())
    assert {"eth_ucy/ADE_6", "eth_ucy/FDE_1", "womd/MR@5s"} <= keys
    assert not {"eth_ucy/ADE_20", "womd/MR@8s", "womd/minFDE@8s"} & keys
    short = ForecastMetricSuite(ks=(1,), datasets=metric_datasets(), num_modes=1, num_future_steps=12)
    assert short.womd is None and short.pedestrian is not None and short.pedestrian.ks == (1,)
    only_av = ForecastMetricSuite(ks=(1,), datasets=("av1", "av2"))
    assert only_av.womd is None and only_av.pedestrian is None and only_av.datasets == ("av1", "av2")


def _cut(targets: EvalTargets, f: int) -> EvalTargets:
    return EvalTargets(
        targets.target[:, :f],
        targets.valid[:, :f],
        targets.role,
        targets.scene_index,
        targets.dataset,
        targets.heading[:, :f],
        targets.speed,
    )


def test_missing_heading_and_speed_are_estimated() -> None:
    # straight lines from the origin at constant speed: the estimates equal the truth
    n, angle = 4, math.radians(30.0)
    speed = torch.tensor([0.5, 3.0, 8.0, 20.0], dtype=torch.float64)
    t = torch.arange(1, F + 1, dtype=torch.float64) * 0.1
    direction = torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)
    target = speed[:, None, None] * t[None, :, None] * direction
    valid = torch.ones(n, F, dtype=torch.bool)
    valid[1, :3] = False  # first valid step 3: the estimate divides by 0.4 s
    torch.testing.assert_close(estimate_current_speed(target, valid, 0.1), speed)
    lateral = torch.tensor([-math.sin(angle), math.cos(angle)], dtype=torch.float64)
    pred = target[:, None] + torch.tensor([0.9, 1.6, 2.0, 3.1], dtype=torch.float64)[:, None, None, None] * lateral
    common = {
        "target": target,
        "valid": valid,
        "role": torch.full((n,), ROLES["focal"]),
        "scene_index": torch.zeros(n, dtype=torch.long),
        "dataset": ["womd"],
    }
    given = EvalTargets(**common, heading=torch.full((n, F), angle, dtype=torch.float64), speed=speed)
    estimated = EvalTargets(**common)
    out = []
    for targets in (given, estimated):
        suite = ForecastMetricSuite(ks=(1,), datasets=("womd",), num_modes=1, num_future_steps=F)
        suite.update(pred, torch.ones(n, 1), targets, torch.ones(n, dtype=torch.bool))
        out.append({k: float(v) for k, v in suite.compute().items()})
    assert out[0] == pytest.approx(out[1])
    # 0.9 m at 0.5 m/s (box 1.5 m) hits, 1.6 m at 3 m/s (scale 0.583: 1.75 m) hits, 2 m at 8 m/s hits, 3.1 m misses
    assert out[0]["womd/MR@8s"] == pytest.approx(0.25)


# ----------------------------------------------------------------------------------------------- fine-tuning


def long_scene(scenario_id: str, dataset: Dataset, pedestrian_stops: bool) -> Scene:
    """91 steps at 10 Hz, present = step 10 (WOMD's timeline), the tiny scene's map. The focal agent drives at
    10 m/s along 30 degrees, or (``pedestrian_stops``) is a pedestrian walking 1 m/s along x who stops at the
    present; a scored and an unscored vehicle drive along x."""
    num_steps, current = 91, 10
    t = np.arange(num_steps, dtype=np.float64) * 0.1
    position = np.zeros((3, num_steps, 3))
    velocity = np.zeros((3, num_steps, 2))
    if pedestrian_stops:
        position[0, :, 0] = 15.0 + np.minimum(t, t[current])
        velocity[0, : current + 1, 0] = 1.0
    else:
        angle = math.radians(30.0)
        position[0, :, 0], position[0, :, 1] = 5.0 + 10.0 * t * math.cos(angle), 1.0 + 10.0 * t * math.sin(angle)
        velocity[0] = 10.0 * np.array([math.cos(angle), math.sin(angle)])
    position[1, :, 0], position[1, :, 1], velocity[1, :, 0] = 2.0 + 5.0 * t, 1.75, 5.0
    position[2, :, 0], position[2, :, 1], velocity[2, :, 0] = 1.0 + 8.0 * t, 5.25, 8.0
    heading = np.where(np.linalg.norm(velocity, axis=-1) > 0, np.arctan2(velocity[..., 1], velocity[..., 0]), 0.0)
    heading[0, current + 1 :] = heading[0, current]
    first = AgentType.PEDESTRIAN if pedestrian_stops else AgentType.VEHICLE
    agents = AgentTracks(
        ids=["focal", "scored", "other"],
        type=np.array([first, AgentType.VEHICLE, AgentType.VEHICLE], np.int8),
        role=np.array([AgentRole.FOCAL, AgentRole.SCORED, AgentRole.UNSCORED], np.int8),
        is_sdc=np.array([False, False, True]),
        position=position.astype(np.float32),
        heading=heading.astype(np.float32),
        velocity=velocity.astype(np.float32),
        valid=np.ones((3, num_steps), bool),
        size=np.array([[0.6, 0.6, 1.8], [4.5, 2.0, 1.6], [4.8, 2.1, 1.7]], np.float32),
    )
    scene = Scene(
        scenario_id=scenario_id,
        dataset=dataset,
        city="testville",
        num_steps=num_steps,
        current_step=current,
        origin=np.array([100.0, 200.0, 0.0]),
        agents=agents,
        map=make_tiny_scene().map,
    )
    scene.validate()
    return scene


def validate(task: FinetuneTask, scenes: list[Scene]) -> dict[str, float]:
    """One validation epoch over one batch of ``scenes``, with ``self.log`` recorded."""
    logged: dict[str, float] = {}
    task.log = lambda name, value, **_: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    adapter = task.backbone.make_adapter()
    batch = adapter.collate([adapter(scene) for scene in scenes])
    task.eval()
    with torch.no_grad():
        task.validation_step(batch, 0)
        task.on_validation_epoch_end()
    return logged


def test_finetune_validation_logs_each_datasets_convention() -> None:
    backbone = ConstantVelocity(num_historical_steps=11, num_future_steps=F)
    task = FinetuneTask(backbone, metric_ks=(1,))  # type: ignore[arg-type]
    scenes = [long_scene("w-0", Dataset.WOMD, False), long_scene("e-0", Dataset.ETH_UCY, True)]
    logged = validate(task, scenes)
    # the AV2 keys as before, overall and per dataset
    assert {"val_loss", "val_minFDE_1", "val_womd/minFDE_1", "val_eth_ucy/minADE_1"} <= set(logged)
    assert {f"val_womd/{m}@{t}" for m in ("minADE", "minFDE", "MR") for t in ("3s", "5s", "8s")} <= set(logged)
    assert {"val_eth_ucy/ADE_1", "val_eth_ucy/FDE_1"} <= set(logged)
    # each dataset gets its own convention only, and the convention metrics have no overall (unprefixed) keys
    assert not any(k.startswith(("val_womd/ADE", "val_womd/FDE", "val_av2/", "val_synthetic/")) for k in logged)
    assert not any(k.startswith("val_eth_ucy/") and "@" in k for k in logged)
    assert not any("@" in k or k.startswith(("val_ADE", "val_FDE")) for k in logged if "/" not in k)
    # constant velocity is exact on the straight drive, and overshoots the stopping pedestrian by 0.1 m per step
    assert logged["val_womd/minFDE@8s"] == pytest.approx(0.0, abs=1e-3)
    assert logged["val_womd/MR@8s"] == 0.0
    assert logged["val_eth_ucy/ADE_1"] == pytest.approx(0.1 * (F + 1) / 2, rel=1e-4)
    assert logged["val_eth_ucy/FDE_1"] == pytest.approx(0.1 * F, rel=1e-4)


def test_finetune_validation_with_qcnet_reads_its_heading_and_speed() -> None:
    backbone = QCNet(
        hidden_dim=16,
        num_historical_steps=11,
        num_future_steps=F,
        num_recurrent_steps=2,
        num_heads=2,
        head_dim=8,
        num_map_layers=1,
        num_agent_layers=1,
        num_dec_layers=1,
        num_t2m_steps=11,
    )
    task = FinetuneTask(backbone)
    logged = validate(task, [long_scene("w-0", Dataset.WOMD, False), long_scene("e-0", Dataset.ETH_UCY, True)])
    assert {"val_minFDE_6", "val_womd/MR@8s", "val_womd/minADE@3s", "val_eth_ucy/FDE_6"} <= set(logged)
    assert all(math.isfinite(v) for v in logged.values())


@pytest.mark.parametrize("model", ["qcnet", "forecast_mae"])
def test_backbones_give_current_speed_and_future_heading(model: str) -> None:
    if model == "qcnet":
        backbone = QCNet(
            hidden_dim=16,
            num_historical_steps=10,
            num_future_steps=10,
            num_recurrent_steps=2,
            num_heads=2,
            head_dim=8,
            num_map_layers=1,
            num_agent_layers=1,
            num_dec_layers=1,
            num_t2m_steps=10,
        )
    else:
        backbone = ForecastMAE(num_historical_steps=10, num_future_steps=10)
    adapter = backbone.make_adapter()
    batch = adapter.collate([adapter(make_tiny_scene("tiny-0")), adapter(make_tiny_scene("tiny-1"))])
    targets = backbone.eval_targets(batch)
    a = targets.target.shape[0]
    assert targets.heading is not None and tuple(targets.heading.shape) == (a, 10)
    assert targets.speed is not None and tuple(targets.speed.shape) == (a,)
    # the tiny focal vehicle drives 1.5 m per 0.1 s straight along x: 15 m/s, heading unchanged
    focal = targets.role == int(AgentRole.FOCAL)
    torch.testing.assert_close(targets.speed[focal], torch.full((2,), 15.0), rtol=1e-4, atol=1e-4)
    assert float(targets.heading[focal][targets.valid[focal]].abs().max()) < 1e-5
