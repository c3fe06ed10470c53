"""Forecast-MAE: the reference parameter layout, the adapter's frame / actor / lane rules, frames round trip, and
forward + backward on AV1, AV2 and WOMD scenes, each with its map and map-less, for Forecast-MAE and QCNet."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from smartpretrain.backbones.forecast_mae import ForecastMAE, ForecastMAEAdapter
from smartpretrain.backbones.qcnet import QCNet
from smartpretrain.data.converters.av1 import Av1Converter
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.data.converters.womd import WomdConverter
from smartpretrain.data.scene import MapData, Scene
from smartpretrain.data.synthetic import generate_av1, generate_av2
from smartpretrain.data.taxonomy import AgentRole, AgentType
from smartpretrain.data.tfrecord import write_records
from smartpretrain.data.views import crop_scene
from tests.data import womd_builders as wb

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
AV2_FIXTURE = SHARED / "fixtures" / "av2"

# the reference ModelForecast's top-level parameter counts (fact sheet, forecast_mae.md section 6)
REFERENCE_COUNTS = {
    "hist_embed": 603_308,
    "lane_embed": 198_528,
    "pos_embed": 17_152,
    "blocks": 793_088,
    "norm": 256,
    "decoder": 246_521,
    "dense_predictor": 63_864,
    "actor_type_embed": 512,
    "lane_type_embed": 128,
}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scene]:
    raw = tmp_path_factory.mktemp("raw")
    generate_av1(raw / "av1", "val", 1, seed=3)
    generate_av2(raw / "av2", "val", 1, seed=3)
    write_records(raw / "womd.tfrecord", [wb.make_scenario("w", num_tracks=7, seed=5).SerializeToString()])
    out = {}
    av1 = Av1Converter(raw / "av1", "val", num_steps=50, current_step=19)
    out["av1"] = av1.convert(av1.list_items()[0]).scene
    generate_av1(raw / "av1_map", "val", 1, seed=3, with_map=True)
    av1_map = Av1Converter(raw / "av1_map", "val", map_root=raw / "av1_map" / "map_files")
    out["av1_map"] = av1_map.convert(av1_map.list_items()[0]).scene
    av2 = Av2Converter(raw / "av2", "val")
    out["av2"] = av2.convert(av2.list_items()[0]).scene
    womd = WomdConverter(raw / "womd.tfrecord", "val")
    out["womd"] = womd.convert(womd.list_items()[0]).scene
    return out


STEPS = {"av1": (20, 30), "av2": (50, 60), "womd": (11, 80)}


def test_parameter_layout_equals_the_reference() -> None:
    model = ForecastMAE()
    state = model.state_dict()
    assert len(state) == 192
    assert sum(p.numel() for p in model.parameters()) == 1_923_357
    for prefix, count in REFERENCE_COUNTS.items():
        got = sum(p.numel() for name, p in model.named_parameters() if name.split(".")[0] == prefix)
        assert got == count, prefix
    assert state["actor_type_embed"].shape == (4, 128) and state["lane_type_embed"].shape == (1, 1, 128)
    assert state["decoder.multimodal_proj.weight"].shape == (768, 128)
    assert state["dense_predictor.2.weight"].shape == (120, 256)
    assert state["blocks.3.attn.in_proj_bias"].shape == (384,)
    assert state["hist_embed.levels.2.blocks.1.attn.rpb"].shape == (8, 9)


def test_adapter_frame_and_actor_rules(scenes: dict[str, Scene]) -> None:
    scene = scenes["av2"]
    sample = ForecastMAEAdapter()(scene)
    a, cs, h = scene.agents, scene.current_step, 50
    # the focal agent first, at the origin, heading 0
    assert int(sample["agent_index"][0]) == scene.focal_index and int(sample["role"][0]) == AgentRole.FOCAL
    torch.testing.assert_close(sample["x_centers"][0], torch.zeros(2), atol=1e-4, rtol=0)
    assert abs(float(sample["x_angles"][0, h - 1])) < 1e-6
    # kept actors are observed at the current step and within the radius
    kept = sample["agent_index"].numpy()
    assert a.valid[kept, cs].all() and (np.linalg.norm(sample["x_centers"].numpy(), axis=-1) <= 150).all()
    # displacement = position difference where both steps are observed, else 0
    obs = ~sample["x_padding_mask"][:, :h]
    both = obs[:, 1:] & obs[:, :-1]
    diff = sample["x_positions"][:, 1:] - sample["x_positions"][:, :-1]
    torch.testing.assert_close(sample["x"][:, 1:][both], diff[both])
    assert not sample["x"][:, 1:][~both].any() and not sample["x"][:, 0].any()
    # static / unknown types: history kept, future padded
    no_future = np.isin(a.type[kept], [t for t in AgentType if t >= AgentType.STATIC])
    assert sample["x_padding_mask"][no_future, h:].all()
    # y = future minus the current position, 0 where padded
    fut_ok = ~sample["x_padding_mask"][:, h:]
    assert not sample["y"][~fut_ok].any()
    # lanes: 20 points, centre = mean of points 9 and 10, nothing outside the square
    lanes = sample["lane_positions"]
    assert lanes.shape[1:] == (20, 2) and len(lanes) > 0
    torch.testing.assert_close(sample["lane_centers"], (lanes[:, 9] + lanes[:, 10]) / 2)
    assert (lanes.abs() <= 150 + 1e-3).all()


def test_adapter_without_the_focal_agent_at_the_current_step(scenes: dict[str, Scene]) -> None:
    import copy

    scene = copy.deepcopy(scenes["womd"])
    focal = scene.focal_index
    scene.agents.valid[focal, 9] = False  # a view ending at step 9 lacks the focal agent there
    view = crop_scene(scene, -30, 40)
    sample = ForecastMAEAdapter(40, 1)(view)
    reference = int(np.flatnonzero(view.agents.valid[:, -1])[0])
    assert reference != focal and int(sample["agent_index"][0]) == reference
    torch.testing.assert_close(sample["x_centers"][0], torch.zeros(2), atol=1e-4, rtol=0)
    assert focal not in sample["agent_index"].tolist()  # not observed at the current step: not an actor
    empty = crop_scene(scene, -50, 40)  # ends before the timeline starts: nobody observed
    sample_empty = ForecastMAEAdapter(40, 1)(empty)
    assert len(sample_empty["agent_index"]) == 0
    batch = ForecastMAEAdapter(40, 1).collate([sample_empty, sample])
    assert batch["x_key_padding_mask"][0].all() and not batch["x_key_padding_mask"][1, 0]
    model = ForecastMAE(num_historical_steps=40, num_future_steps=1)
    enc = model.encode(batch)
    assert torch.isfinite(enc["x_enc"]).all()
    model.loss(batch, model.forecast(batch, enc))["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("dataset", ["av1", "av2", "womd"])
def test_frames_round_trip_to_the_scene(scenes: dict[str, Scene], dataset: str) -> None:
    h, f = STEPS[dataset]
    scene = scenes[dataset]
    model = ForecastMAE(num_historical_steps=h, num_future_steps=f)
    adapter = model.make_adapter()
    batch = adapter.collate([adapter(scene)])
    targets = model.eval_targets(batch)
    in_scene = model.to_scene_frame(batch, targets.target[:, None])[:, 0]
    live = ~batch["x_key_padding_mask"][0]
    index = batch["agent_index"][0][live].numpy()
    truth = scene.agents.position[index][:, scene.current_step + 1 : scene.current_step + 1 + f, :2]
    valid = targets.valid.numpy()
    assert valid.any()
    np.testing.assert_allclose(in_scene.detach().numpy()[valid], truth[valid], atol=1e-3)


@pytest.mark.parametrize("with_map", [True, False], ids=["map", "mapless"])
@pytest.mark.parametrize("dataset", ["av1", "av2", "womd"])
@pytest.mark.parametrize("backbone", ["forecast_mae", "qcnet"])
def test_forward_backward_on_every_dataset(
    scenes: dict[str, Scene], dataset: str, backbone: str, with_map: bool
) -> None:
    h, f = STEPS[dataset]
    torch.manual_seed(0)
    if backbone == "forecast_mae":
        model = ForecastMAE(num_historical_steps=h, num_future_steps=f)
    else:
        model = QCNet(
            hidden_dim=32, num_historical_steps=h, num_future_steps=f, num_recurrent_steps=2 if f % 3 else 3,
            num_heads=2, head_dim=8, num_map_layers=1, num_agent_layers=1, num_dec_layers=1, num_t2m_steps=h,
        )  # fmt: skip
    adapter = model.make_adapter()
    if with_map:
        scene = scenes["av1_map" if dataset == "av1" else dataset]
    else:  # AV1 as released publicly is map-less; AV2 / WOMD without their maps exercise the same path
        scene = dataclasses.replace(scenes[dataset], map=MapData.empty())
    assert (scene.map.num_polygons > 0) == with_map
    batch = adapter.collate([adapter(scene), adapter(scene)])
    forecast = model(batch)
    assert forecast.loc.shape[1:] == (6, f, 2) and torch.isfinite(forecast.loc).all()
    losses = model.loss(batch, forecast)
    losses["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    emb = model.agent_embeddings(batch, model.encode(batch))
    assert emb.embeddings.shape[-1] == model.embedding_dim and len(emb.agent_index) == len(emb.scene_index)
