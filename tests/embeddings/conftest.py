"""Fixtures of the embedding tests: a tiny generated cache with known ids, and tiny backbones of both kinds."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartpretrain.backbones.base import Backbone
from smartpretrain.backbones.forecast_mae.model import ForecastMAE
from smartpretrain.backbones.qcnet.model import QCNet
from smartpretrain.data.conversion import ConversionSettings, convert_split
from tests.helpers import TinyConverter

#: scenes of the tiny cache (tiny-00 .. tiny-04; odd ones without a map)
NUM_SCENES = 5


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``{root}/synthetic/val``: 5 :func:`~tests.helpers.make_tiny_scene` scenes (agents focal / AV / ped)."""
    out = tmp_path_factory.mktemp("embed-cache") / "synthetic" / "val"
    manifest = convert_split(TinyConverter(NUM_SCENES), out, ConversionSettings(progress=False))
    assert manifest["num_scenes"] == NUM_SCENES
    return out


def make_backbone(kind: str, seed: int = 0) -> Backbone:
    """A tiny, freshly seeded backbone on the tiny scenes' window (10 history + 10 future steps)."""
    import torch

    torch.manual_seed(seed)
    if kind == "qcnet":
        return QCNet(
            hidden_dim=16, num_historical_steps=10, num_future_steps=10, num_recurrent_steps=2, num_heads=2,
            head_dim=8, num_freq_bands=4, num_map_layers=1, num_agent_layers=1, num_dec_layers=1, num_t2m_steps=10,
        )  # fmt: skip
    return ForecastMAE(embed_dim=16, encoder_depth=1, num_heads=2, num_historical_steps=10, num_future_steps=10)


@pytest.fixture(params=["qcnet", "forecast_mae"])
def backbone(request: pytest.FixtureRequest) -> Backbone:
    return make_backbone(request.param)
