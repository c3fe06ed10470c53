"""SmartPretrain pre-training: config composition, objectives / backbone building, row matching, and a short
end-to-end run on a tiny generated AV1 cache followed by a fine-tuning transfer."""

from __future__ import annotations

import csv
import itertools
import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from smartpretrain.backbones.base import AgentEmbeddings
from smartpretrain.runs.pretraining import build_objectives, build_pretrain_backbone, run
from smartpretrain.ssl.tcl import TrajectoryContrastiveLoss
from smartpretrain.ssl.trl import TrajectoryReconstructionLoss
from smartpretrain.tasks.pretrain import match_rows
from tests.conftest import REPO

CONFIGS = str(REPO / "configs")


def _cfg(overrides: list[str] | None = None, config: str = "pretrain") -> DictConfig:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(config_name=config, overrides=overrides or [])


# --------------------------------------------------------------------------------------------------------------
# Hydra composition
# --------------------------------------------------------------------------------------------------------------


def test_default_pretrain_config() -> None:
    cfg = _cfg()
    assert cfg.data.name == "av2" and cfg.model._target_ == "smartpretrain.backbones.qcnet.QCNet"
    assert cfg.ssl.window == cfg.data.view_window == 50
    assert dict(cfg.model_overrides) == {"num_historical_steps": 50}
    assert cfg.ssl.objectives.trl.window == 50 and cfg.ssl.objectives.tcl.dim == cfg.ssl.proj_dim == 256
    assert cfg.trainer.max_epochs == cfg.max_epochs == 32


def test_release_preset_av2() -> None:
    cfg = _cfg(["experiment=smartpretrain_qcnet_av2"])
    assert cfg.data.name == "av2" and cfg.model.hidden_dim == 128 and cfg.model.num_modes == 6
    assert cfg.batch_size == 4 and cfg.max_epochs == 32 and cfg.trainer.max_epochs == 32
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.devices == 8
    ssl = cfg.ssl
    assert (ssl.lr_start, ssl.lr_peak, ssl.lr_end, ssl.warmup_epochs) == (1e-4, 1.5e-3, 1e-6, 15)
    assert (ssl.weight_decay_start, ssl.weight_decay_end) == (0.01, 0.1)
    assert ssl.momentum_base == 0.996
    assert ssl.objectives.tcl.temperature == 0.07
    assert list(ssl.objectives.trl.chunk_fractions) == [0.2, 0.4, 0.4]
    assert ssl.window == ssl.objectives.trl.window == 50


def test_cpu_small_preset_follows_the_dataset_window() -> None:
    cfg = _cfg(["experiment=smartpretrain_cpu_small", "data=av1"])
    assert cfg.model.hidden_dim == 32 and cfg.trainer.accelerator == "cpu"
    assert cfg.ssl.window == cfg.data.view_window == 20 and cfg.ssl.objectives.trl.window == 20
    assert cfg.ssl.proj_dim == cfg.ssl.objectives.tcl.dim == 64
    assert cfg.model.num_t2m_steps == cfg.data.num_historical_steps == 20
    assert _cfg(["experiment=smartpretrain_cpu_small"]).ssl.window == 50  # av2 by default


CONTROL_TERMS = ("forward_dynamics", "inverse_dynamics", "masked_hindsight")


@pytest.mark.parametrize(
    ("experiment", "model", "with_tcl_trl"),
    [
        ("control_cpu_small", "QCNet", False),
        ("control_forecast_mae_cpu_small", "ForecastMAE", False),
        ("control_qcnet_av2", "QCNet", True),
        ("control_forecast_mae_av2", "ForecastMAE", True),
    ],
)
def test_control_presets_for_each_backbone(experiment: str, model: str, with_tcl_trl: bool) -> None:
    cfg = _cfg([f"experiment={experiment}", "data=av1"])
    assert cfg.model._target_.endswith(model)
    objectives, weights = build_objectives(cfg, build_pretrain_backbone(cfg))
    expected = {*CONTROL_TERMS, *(("tcl", "trl") if with_tcl_trl else ())}
    assert set(objectives) == expected and all(w == 1.0 for w in weights.values())
    assert all(objectives[name].declared_needs().controls for name in CONTROL_TERMS)
    assert objectives["forward_dynamics"].predictor.in_dim == cfg.ssl.proj_dim


def test_control_terms_are_off_by_default_and_bad_control_options_fail_early() -> None:
    from smartpretrain.runs.guards import RunConfigError
    from smartpretrain.runs.pretraining import check_pretrain_config

    objectives, _ = build_objectives(_cfg())
    assert set(objectives) == {"tcl", "trl"}
    with pytest.raises(RunConfigError, match=r"ssl\.controls: unknown option\(s\) \['fit_window'\]"):
        check_pretrain_config(_cfg(["+ssl.controls.fit_window=1.0"]))
    with pytest.raises(RunConfigError, match=r"ssl\.controls: fit_window_s must be"):
        check_pretrain_config(_cfg(["ssl.controls.max_accel=-1"]))


# --------------------------------------------------------------------------------------------------------------
# Building objectives and the pre-training backbone
# --------------------------------------------------------------------------------------------------------------


def test_build_objectives_and_weights() -> None:
    objectives, weights = build_objectives(_cfg(["experiment=smartpretrain_cpu_small", "data=av1"]))
    assert isinstance(objectives["tcl"], TrajectoryContrastiveLoss)
    assert isinstance(objectives["trl"], TrajectoryReconstructionLoss)
    assert objectives["trl"].window == 20 and objectives["trl"].chunk_fractions == [0.2, 0.4, 0.4]
    assert weights == {"tcl": 1.0, "trl": 1.0}

    objectives, weights = build_objectives(_cfg(["ssl.objectives.trl.weight=0", "ssl.objectives.tcl.weight=0.5"]))
    assert list(objectives) == ["tcl"] and weights == {"tcl": 0.5}
    objectives, _ = build_objectives(_cfg(["~ssl.objectives.tcl"]))
    assert list(objectives) == ["trl"]
    with pytest.raises(ValueError, match="switched off"):
        build_objectives(_cfg(["ssl.objectives.trl.weight=0", "ssl.objectives.tcl.weight=0"]))


def test_build_pretrain_backbone_applies_model_overrides() -> None:
    backbone = build_pretrain_backbone(_cfg(["model=qcnet", "data=av2"]))
    assert backbone.num_modes == 1 and backbone.propose_stack_only
    assert not hasattr(backbone.decoder, "to_pi") and not hasattr(backbone.decoder, "traj_emb")
    state = backbone.state_dict()
    assert sum(k.startswith("decoder.") for k in state) == 281  # the release's QCNetDecoder_ssl
    assert state["decoder.mode_emb.weight"].shape == (1, 128)
    assert backbone.embedding_dim == 128


# --------------------------------------------------------------------------------------------------------------
# match_rows
# --------------------------------------------------------------------------------------------------------------


def _embeddings() -> AgentEmbeddings:
    scene = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    agent = torch.tensor([0, 3, 5, 0, 1, 2, 0, 7, 4])  # agent indices need not be sorted within a scene
    emb = torch.arange(len(scene), dtype=torch.float32)[:, None, None].expand(-1, 2, 3)
    return AgentEmbeddings(emb, scene, agent)


def test_match_rows_finds_shuffled_pairs() -> None:
    emb = _embeddings()
    pairs = [(2, 4), (0, 5), (1, 0), (2, 7), (0, 0), (2, 2), (1, 1), (0, 3), (2, 0)]
    scene = torch.tensor([s for s, _ in pairs])
    agent = torch.tensor([a for _, a in pairs])
    rows = match_rows(emb, scene, agent, "test")
    assert torch.equal(emb.scene_index[rows], scene) and torch.equal(emb.agent_index[rows], agent)
    assert rows.tolist() == [8, 2, 3, 7, 0, 5, 4, 1, 6]
    assert torch.equal(emb.embeddings[rows][:, 0, 0], rows.float())
    subset = match_rows(emb, torch.tensor([2, 0]), torch.tensor([2, 3]), "test")
    assert subset.tolist() == [5, 1]
    assert match_rows(emb, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), "x").numel() == 0


@pytest.mark.parametrize(("scene", "agent"), [(1, 3), (3, 0), (0, 9)])
def test_match_rows_names_the_missing_agent(scene: int, agent: int) -> None:
    emb = _embeddings()
    with pytest.raises(RuntimeError, match=f"online view B: .*agent {agent} of scene {scene}"):
        match_rows(emb, torch.tensor([0, scene, 2]), torch.tensor([0, agent, 4]), "online view B")


# --------------------------------------------------------------------------------------------------------------
# End to end on a tiny generated AV1 cache
# --------------------------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_pretrain_end_to_end_then_finetune_transfer(av1_cache: Path, tmp_path: Path) -> None:
    from smartpretrain.runs.trainer import build_backbone

    cfg = _cfg(
        [
            "experiment=smartpretrain_cpu_small", "data=av1", f"cache_root={av1_cache}", "max_epochs=2",
            "num_workers=0", "batch_size=4", "+trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
        ]
    )  # fmt: skip
    out = tmp_path / "pretrain"
    metrics = run(cfg, out)

    for name in ("config.yaml", "seed.json", "final_metrics.json", "checkpoints/last.ckpt"):
        assert (out / name).is_file(), name
    assert json.loads((out / "seed.json").read_text()) == {"seed": cfg.seed}
    top_k = [p for p in (out / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt"]
    assert top_k and all(p.name.startswith("epoch") for p in top_k)
    final = json.loads((out / "final_metrics.json").read_text())
    assert math.isfinite(final["val_loss"]) and final["val_loss"] == pytest.approx(metrics["val_loss"])
    assert Path(final["last_checkpoint"]) == out / "checkpoints" / "last.ckpt"

    (log,) = (out / "logs").glob("version_*/metrics.csv")
    rows = _read_csv(log)
    assert {"train_tcl", "train_trl", "lr", "momentum"} <= set(rows[0])
    momentum = [float(r["momentum"]) for r in rows if r["momentum"]]
    assert len(momentum) == 4  # 2 epochs x 2 steps of 4 scenes
    assert momentum[0] == pytest.approx(cfg.ssl.momentum_base)
    assert all(b > a for a, b in itertools.pairwise(momentum)) and momentum[-1] < 1.0
    losses = [float(r["train_tcl"]) for r in rows if r["train_tcl"]] + [
        float(r["train_trl"]) for r in rows if r["train_trl"]
    ]
    assert losses and all(math.isfinite(v) for v in losses)

    # the pre-trained checkpoint initialises a fine-tuning model: every encoder key loads
    finetune_cfg = _cfg(
        ["model=qcnet_small", "data=av1", f"pretrained_ckpt={out / 'checkpoints' / 'last.ckpt'}"], config="train"
    )
    backbone = build_backbone(finetune_cfg, tmp_path / "finetune")
    summary = json.loads((tmp_path / "finetune" / "transfer_report.json").read_text())
    encoder = [k for k in backbone.state_dict() if k.startswith("encoder.")]
    assert summary["strict_loaded"] == len(encoder) > 0
    assert summary["source_prefix"] == "momentum_branch.backbone."
    assert not any(k.startswith("encoder.") for k in summary["missing"])
    assert summary["expanded"] == [["decoder.mode_emb.weight", [1, 32], [6, 32]]]
    assert summary["unexpected"] == [] and summary["reshaped"] == []


def test_control_pretraining_runs_end_to_end_and_transfers(av1_cache: Path, tmp_path: Path) -> None:
    """The three terms in one run with TCL + TRL and MAE: the data module derives the controls and adapts the
    whole scenes, every term is logged, and the momentum branch transfers into fine-tuning."""
    from smartpretrain.runs.trainer import build_backbone

    cfg = _cfg(
        [
            "experiment=control_forecast_mae_cpu_small", "data=av1", f"cache_root={av1_cache}", "max_epochs=1",
            "num_workers=0", "batch_size=4", "+trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
            "ssl.objectives.tcl.weight=1", "ssl.objectives.trl.weight=1", "ssl.objectives.mae.weight=1",
        ]
    )  # fmt: skip
    out = tmp_path / "pretrain"
    metrics = run(cfg, out)
    for name in ("tcl", "trl", "mae", *CONTROL_TERMS):
        assert math.isfinite(metrics[f"val_{name}"]) and metrics[f"val_{name}"] > 0, name
    finetune_cfg = _cfg(
        ["model=forecast_mae", "data=av1", f"pretrained_ckpt={out / 'checkpoints' / 'last.ckpt'}"], config="train"
    )
    build_backbone(finetune_cfg, tmp_path / "finetune")
    summary = json.loads((tmp_path / "finetune" / "transfer_report.json").read_text())
    assert summary["source_prefix"] == "momentum_branch.backbone." and summary["strict_loaded"] > 0
    assert summary["unexpected"] == []
