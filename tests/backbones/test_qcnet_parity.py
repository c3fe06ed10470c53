"""Parity with the official QCNet release on the real AV2 fixture, through our whole default path.

``../shared/reference/qcnet_av2_fixture_official.pt`` holds the official implementation's outputs on the fixture
(official preprocessing, AV2 hyper-parameters, seeded and perturbed weights) and those weights. Here the raw
fixture files go through our converter, the scene cache, the model's default adapter and our QCNet with the same
weights, and the outputs of the agents to predict are compared with the official ones.

What bounds the residual: the official preprocessing rounds *city* coordinates (~1.4 km from the origin here) to
float32, a grid of 1.2e-4 m; our Scene stores coordinates relative to the focal agent, in float32 too, so finer.
The model is not smooth at that scale (angles of the sub-millimetre steps of parked agents, relative orientations
of antiparallel lanes at the +-pi wrap), so the official outputs themselves move by centimetres when its inputs
move by one grid step. The test measures that response on our side (each agent coordinate moved by one city-frame
float32 step, three seeds) and requires the residual to stay below it and below fixed bounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from smartpretrain.backbones.qcnet.model import QCNet
from smartpretrain.data.cache import SceneCache
from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av2 import Av2Converter
from smartpretrain.io.safe_load import load_weights_only
from tests.conftest import AV2_FIXTURE_ID, AV2_FIXTURE_ROOT, SHARED, require_shared

REFERENCE = SHARED / "reference" / "qcnet_av2_fixture_official.pt"
OUTPUTS = ("loc_propose_pos", "scale_propose_pos", "loc_refine_pos", "scale_refine_pos", "pi")
#: bounds on |ours - official| over the agents to predict (measured: 1.1e-2, 5.6e-3, 1.1e-2, 7.9e-4, 4.7e-4)
BOUNDS = {"loc_propose_pos": 2e-2, "scale_propose_pos": 1e-2, "loc_refine_pos": 2e-2, "scale_refine_pos": 2e-3}
PI_BOUND = 1e-3
#: the focal agent's locations (measured 9.2e-4 m)
FOCAL_BOUND = 2e-3


@pytest.fixture(scope="module")
def reference() -> dict:
    require_shared(REFERENCE)
    require_shared(AV2_FIXTURE_ROOT / "val" / AV2_FIXTURE_ID)
    ref = load_weights_only(REFERENCE, REFERENCE, map_location="cpu", safe_globals=None)
    assert ref["format"] == "smartpretrain-parity-reference/1" and ref["scenario_id"] == AV2_FIXTURE_ID
    return dict(ref)


@pytest.fixture(scope="module")
def ours(reference: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Raw fixture -> converter -> cache -> default adapter -> QCNet with the official weights (eval)."""
    cache = tmp_path_factory.mktemp("parity") / "av2" / "val"
    convert_split(Av2Converter(AV2_FIXTURE_ROOT, "val"), cache, ConversionSettings(progress=False))
    scene = SceneCache(cache).get(AV2_FIXTURE_ID)
    hp = reference["hyper_parameters"]
    model = QCNet(
        num_historical_steps=hp["num_historical_steps"],
        num_future_steps=hp["num_future_steps"],
        num_t2m_steps=hp["num_t2m_steps"],
        time_span=hp["time_span"],
        pl2pl_radius=float(hp["pl2pl_radius"]),
        pl2a_radius=float(hp["pl2a_radius"]),
        a2a_radius=float(hp["a2a_radius"]),
        pl2m_radius=float(hp["pl2m_radius"]),
        a2m_radius=float(hp["a2m_radius"]),
    )
    model.load_state_dict(reference["state_dict"], strict=True)
    model.eval()
    adapter = model.make_adapter()
    batch = adapter.collate([adapter(scene)])
    with torch.no_grad():
        outputs = model.decoder(batch, model.encode(batch))
    return {"model": model, "batch": batch, "scene": scene, "outputs": outputs}


def _max_diff(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor) -> float:
    return float((a - b).abs()[rows].max())


def test_inputs_are_the_official_ones(reference, ours):
    """Same agents in the same order, same masks, same map sizes (stored centerlines: 1,479 map points)."""
    agent = ours["batch"]["agent"]
    assert list(agent.id[0] if isinstance(agent.id[0], list) else agent.id) == reference["agent_ids"]
    predict = agent.predict_mask.any(dim=-1)
    assert torch.equal(predict, reference["predict_mask"])
    assert torch.equal(agent.category == 3, reference["focal_mask"])
    sizes = reference["input_sizes"]
    assert agent.num_nodes == sizes["agents"]
    assert ours["batch"]["map_polygon"].num_nodes == sizes["polygons"]
    assert ours["batch"]["map_point"].num_nodes == sizes["points"]


def test_outputs_match_the_official_release(reference, ours):
    rows = reference["predict_mask"]
    got, want = ours["outputs"], reference["outputs"]
    residual = {key: _max_diff(got[key], want[key], rows) for key in OUTPUTS}
    for key, bound in BOUNDS.items():
        assert residual[key] <= bound, (key, residual[key])
    assert residual["pi"] <= PI_BOUND, residual["pi"]
    focal = reference["focal_mask"]
    for key in ("loc_propose_pos", "loc_refine_pos"):
        assert _max_diff(got[key], want[key], focal) <= FOCAL_BOUND, key
    # the agents not to predict get the reference's context-free outputs too
    assert _max_diff(got["loc_refine_pos"], want["loc_refine_pos"], ~rows) <= BOUNDS["loc_refine_pos"]

    # the residual is within the model's response to the official preprocessing's float32 city-frame rounding
    model, batch, scene = ours["model"], ours["batch"], ours["scene"]
    origin = np.asarray(scene.origin, np.float64)[:2]
    position = batch["agent"].position
    city = position[..., :2].double().numpy() + origin
    step = np.spacing(np.abs(city).astype(np.float32)).astype(np.float64)  # one float32 step in the city frame
    observed = (position[..., :2] != 0).any(dim=-1).numpy()
    response = 0.0
    for seed in range(3):
        sign = np.random.default_rng(seed).choice([-1.0, 1.0], size=city.shape)
        moved = batch.clone()
        delta = torch.from_numpy(np.where(observed[..., None], sign * step, 0.0)).float()
        moved["agent"].position = position.clone()
        moved["agent"].position[..., :2] += delta
        with torch.no_grad():
            out = model.decoder(moved, model.encode(moved))
        response = max(response, _max_diff(out["loc_refine_pos"], got["loc_refine_pos"], rows))
    print(f"\nparity residuals {residual}; response to one float32 city-frame step: {response:.3e} m")
    assert residual["loc_refine_pos"] <= response, (residual["loc_refine_pos"], response)


def test_official_weights_load_through_the_checkpoint_path(reference, tmp_path: Path):
    """The reference's state_dict is a published-style checkpoint: strict, 949 keys, nothing missing."""
    from smartpretrain.io.checkpoints import load_checkpoint, load_into

    path = tmp_path / "official.ckpt"
    torch.save({"state_dict": reference["state_dict"]}, path)
    model = QCNet()
    report = load_into(model, load_checkpoint(path), strict=True)
    assert report.missing == [] and report.unexpected == [] and len(reference["state_dict"]) == 949
