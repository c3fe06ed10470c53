"""Masked auto-encoding objective: the masking rule, packing, capability check, learning on a batch, and a
pre-train (MAE, and MAE + TCL + TRL) -> fine-tune transfer with Forecast-MAE on a generated AV1 cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from smartpretrain.backbones.forecast_mae import ForecastMAE
from smartpretrain.backbones.qcnet import QCNet
from smartpretrain.data.synthetic import generate_av2
from smartpretrain.ssl.mae import MaskedAutoencodingLoss, _pack, _unpack, mae_masks
from smartpretrain.ssl.objective import Scenes, SSLInputs
from tests.conftest import REPO


def test_masking_rule() -> None:
    torch.manual_seed(0)
    b, n, m = 64, 9, 7
    actor_padding = torch.zeros(b, n, dtype=torch.bool)
    actor_padding[:, 7:] = True
    predictable = torch.rand(b, n) < 0.7
    lane_padding = torch.zeros(b, m, dtype=torch.bool)
    lane_padding[::2, 5:] = True
    hist, fut, lane = mae_masks(actor_padding, predictable, lane_padding, 0.5, 0.5)
    live_pred = predictable & ~actor_padding
    assert not (hist & fut).any()  # no actor shows both
    assert not (hist | fut)[actor_padding].any() and not lane[lane_padding].any()
    assert (hist | fut)[~actor_padding].all()  # every real actor shows one of them
    assert not fut[~predictable].any()  # only predictable actors can show their future
    assert torch.equal(fut.sum(1), torch.floor(live_pred.sum(1).float() * 0.5).long())
    assert torch.equal(lane.sum(1), torch.ceil((~lane_padding).sum(1).float() * 0.5).long())
    # the choice is random across scenes
    assert len({tuple(row.tolist()) for row in fut[live_pred.all(1)]}) > 1 or live_pred.all(1).sum() < 2


def test_pack_unpack_round_trip() -> None:
    tokens = torch.randn(3, 5, 4)
    keep = torch.tensor([[1, 0, 1, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    packed, padding = _pack(tokens, keep)
    assert packed.shape == (3, 5, 4) and padding.tolist()[0] == [False, False, False, True, True]
    fill = torch.full((1, 1, 4), 7.0)
    back = _unpack(packed, keep, fill)
    assert torch.equal(back[keep], tokens[keep]) and (back[~keep] == 7.0).all()


def test_backbone_without_the_capability_is_refused() -> None:
    with pytest.raises(TypeError, match="QCNet does not support masked auto-encoding"):
        MaskedAutoencodingLoss(QCNet(hidden_dim=16, num_heads=2, head_dim=8))


@pytest.fixture(scope="module")
def av2_batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[ForecastMAE, dict]:
    from smartpretrain.data.converters.av2 import Av2Converter

    raw = tmp_path_factory.mktemp("raw")
    generate_av2(raw, "val", 2, seed=4)
    converter = Av2Converter(raw, "val")
    scenes = [converter.convert(item).scene for item in converter.list_items()]
    torch.manual_seed(0)
    model = ForecastMAE(drop_path=0.0)
    adapter = model.make_adapter()
    return model, adapter.collate([adapter(s) for s in scenes])


def test_mae_learns_on_a_batch(av2_batch: tuple[ForecastMAE, dict]) -> None:
    model, batch = av2_batch
    torch.manual_seed(1)
    objective = MaskedAutoencodingLoss(model)
    params = list(model.parameters()) + list(objective.parameters())
    optimizer = torch.optim.Adam(params, lr=3e-3)
    inputs = SSLInputs(MaskedAutoencodingLoss.needs, scenes=Scenes(batch, model))
    losses = []
    for _ in range(60):
        torch.manual_seed(2)  # the same masks every step
        optimizer.zero_grad()
        loss = objective(inputs)
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]
    assert model.hist_embed.embed.proj.weight.grad is not None  # the encoder is trained through the objective
    assert model.decoder.multimodal_proj.weight.grad is None  # the forecasting head is not used


@pytest.mark.parametrize("objectives", ["mae", "all"])
def test_mae_pretrain_then_finetune_transfer(tmp_path: Path, objectives: str) -> None:
    from smartpretrain.data.conversion import ConversionSettings, convert_split
    from smartpretrain.data.converters.av1 import Av1Converter
    from smartpretrain.data.synthetic import generate_av1
    from smartpretrain.runs.pretraining import run
    from smartpretrain.runs.trainer import build_backbone

    raw, cache = tmp_path / "raw", tmp_path / "cache"
    generate_av1(raw, "train", 8, seed=0, with_map=True)
    generate_av1(raw, "val", 4, seed=0, with_map=True, start_index=100)
    for split in ("train", "val"):
        converter = Av1Converter(raw, split, num_steps=50, current_step=19, map_root=raw / "map_files")
        convert_split(converter, cache / "av1" / split, ConversionSettings(progress=False))
    switch = ["ssl.objectives.mae.weight=1"]
    if objectives == "mae":
        switch += ["ssl.objectives.tcl.weight=0", "ssl.objectives.trl.weight=0"]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(
            config_name="pretrain",
            overrides=[
                "experiment=smartpretrain_forecast_mae_cpu_small", "data=av1", f"cache_root={cache}", "max_epochs=1",
                "num_workers=0", "batch_size=4", "+trainer.enable_progress_bar=false", *switch,
            ],
        )  # fmt: skip
        metrics = run(cfg, tmp_path / "pretrain")
        assert math.isfinite(metrics["val_mae"]) and ("val_tcl" in metrics) == (objectives == "all")
        ft = compose(
            config_name="train",
            overrides=["model=forecast_mae", "data=av1", "pretrained_branch=online",
                       f"pretrained_ckpt={tmp_path / 'pretrain' / 'checkpoints' / 'last.ckpt'}"],
        )  # fmt: skip
    backbone = build_backbone(ft, tmp_path / "finetune")
    report = json.loads((tmp_path / "finetune" / "transfer_report.json").read_text())
    strict = [k for k in backbone.state_dict() if k.startswith(ForecastMAE.pretrained_strict_prefixes)]
    assert report["strict_loaded"] == len(strict) == 172
    assert report["unexpected"] == [] and report["source_prefix"] == "branch.backbone."
