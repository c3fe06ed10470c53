"""transfer_pretrained: SSL checkpoint (ours, or the reference release's layout) -> fine-tuning QCNet."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import Tensor

from smartpretrain.backbones.qcnet import QCNet
from smartpretrain.backbones.qcnet.checkpoint_spec import official_state_dict_spec
from smartpretrain.io.checkpoints import ArchitectureMismatchError, CheckpointError, load_checkpoint
from smartpretrain.runs.trainer import build_backbone
from smartpretrain.ssl.tcl import TrajectoryContrastiveLoss
from smartpretrain.ssl.trl import TrajectoryReconstructionLoss
from smartpretrain.tasks.pretrain import BRANCH_ATTRIBUTES, PretrainTask, SSLBranch
from smartpretrain.tasks.transfer import SSL_BRANCHES, transfer_pretrained
from tests.conftest import REPO

# the sizes of configs/model/qcnet_small.yaml with configs/data/av1.yaml
SMALL = dict(
    hidden_dim=32, num_heads=2, head_dim=16, num_freq_bands=16, num_agent_layers=1, num_dec_layers=1,
    num_historical_steps=20, num_future_steps=30, num_t2m_steps=20, time_span=5, dropout=0.0,
)  # fmt: skip
REFINE_PREFIXES = (
    "decoder.t2m_refine_attn_layers.",
    "decoder.pl2m_refine_attn_layers.",
    "decoder.a2m_refine_attn_layers.",
    "decoder.m2m_refine_attn_layer.",
)
# reference release (docs/qcnet.md §7)
RELEASE_KEYS = 1418
RELEASE_PARAMETERS = 12_563_548
RELEASE_DECODER_KEYS = 281


def _snapshot(model: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------------------------------------------
# Our own SSL checkpoint layout (PretrainTask: <branch>.backbone.*, <branch>.projector.*, objectives.*)
# --------------------------------------------------------------------------------------------------------------


def _small_task(**overrides) -> PretrainTask:
    backbone = QCNet(**{**SMALL, **overrides}, num_modes=1, propose_stack_only=True)
    objectives = {"tcl": TrajectoryContrastiveLoss(64, 128), "trl": TrajectoryReconstructionLoss(64, 128, window=20)}
    return PretrainTask(backbone, objectives, window=20, proj_dim=64, proj_hidden_dim=128)


@pytest.fixture(scope="module")
def ssl_ckpt(tmp_path_factory: pytest.TempPathFactory) -> tuple[PretrainTask, Path]:
    """A small pre-training task whose momentum branch differs from the online one, saved as a checkpoint."""
    torch.manual_seed(0)
    task = _small_task()
    with torch.no_grad():
        for p in task.momentum_branch.parameters():
            p.add_(torch.randn_like(p))
    path = tmp_path_factory.mktemp("ssl") / "ssl.ckpt"
    torch.save({"state_dict": task.state_dict()}, path)
    return task, path


def _finetune_model(**overrides) -> QCNet:
    return QCNet(**{**SMALL, **overrides}, num_modes=6)


def test_our_layout_momentum_branch_by_default(ssl_ckpt) -> None:
    task, path = ssl_ckpt
    checkpoint = load_checkpoint(path)  # weights_only=True
    model = _finetune_model()
    before = _snapshot(model)
    report = transfer_pretrained(model, checkpoint)
    after = model.state_dict()
    momentum = task.momentum_branch.backbone.state_dict()
    online = task.branch.backbone.state_dict()

    assert report.source_prefix == "momentum_branch.backbone."
    encoder = [k for k in after if k.startswith("encoder.")]
    assert encoder and sorted(report.strict_loaded()) == sorted(encoder)
    for key in encoder:
        assert torch.equal(after[key], momentum[key]), key
        assert not torch.equal(after[key], online[key]), key  # the momentum tensors, not the online ones

    # decoder: the propose stack loads; the single pre-trained mode row is repeated to K = 6
    propose = [k for k in momentum if k.startswith("decoder.") and k != "decoder.mode_emb.weight"]
    assert propose and set(propose) <= set(report.loaded)
    for key in propose:
        assert torch.equal(after[key], momentum[key]), key
    row = momentum["decoder.mode_emb.weight"]
    assert row.shape == (1, 32)
    assert torch.equal(after["decoder.mode_emb.weight"], row.repeat(6, 1))
    assert report.expanded == [("decoder.mode_emb.weight", (1, 32), (6, 32))]
    assert "decoder.mode_emb.weight" in report.loaded

    # fine-tuning-only modules (refine stack, output heads) stay at their initialisation
    fresh = [k for k in after if k not in momentum]
    assert fresh and sorted(report.missing) == sorted(fresh)
    assert {"decoder.to_pi.mlp.0.weight", "decoder.traj_emb_h0", "decoder.to_loc_refine_pos.mlp.3.weight"} <= set(
        report.missing
    )
    assert any(k.startswith(REFINE_PREFIXES) for k in report.missing)
    assert not any(k.startswith("encoder.") for k in report.missing)
    for key in fresh:
        assert torch.equal(after[key], before[key]), key

    # the projector is reported as dropped (SSL head), never as unexpected; the objectives' heads are ignored
    projector = sorted(k.split(".", 1)[1] for k in task.state_dict() if k.startswith("momentum_branch.projector."))
    assert len(projector) == 9 and sorted(report.dropped) == projector
    assert report.unexpected == [] and report.reshaped == []
    assert report.copied == []
    assert "mode embeddings expanded (1)" in str(report)


def test_our_layout_online_branch(ssl_ckpt) -> None:
    task, path = ssl_ckpt
    model = _finetune_model()
    report = transfer_pretrained(model, load_checkpoint(path), branch="online")
    assert report.source_prefix == "branch.backbone."
    online = task.branch.backbone.state_dict()
    after = model.state_dict()
    for key in report.strict_loaded():
        assert torch.equal(after[key], online[key]), key
    assert torch.equal(after["decoder.mode_emb.weight"], online["decoder.mode_emb.weight"].repeat(6, 1))
    assert len(report.dropped) == 9 and all(k.startswith("projector.") for k in report.dropped)
    with pytest.raises(ValueError, match="branch must be one of"):
        transfer_pretrained(model, load_checkpoint(path), branch="target")


def test_copy_refine(ssl_ckpt) -> None:
    task, path = ssl_ckpt
    model = _finetune_model()
    report = transfer_pretrained(model, load_checkpoint(path), copy_refine=True)
    after = model.state_dict()
    momentum = task.momentum_branch.backbone.state_dict()
    refine = [k for k in after if k.startswith(REFINE_PREFIXES)]
    assert refine
    for key in refine:
        source = key.replace("_refine_", "_propose_")
        assert torch.equal(after[key], momentum[source]), key
    assert sorted(dst for _, dst in report.copied) == sorted(refine)
    assert all(src == dst.replace("_refine_", "_propose_") for src, dst in report.copied)
    assert not any(k.startswith(REFINE_PREFIXES) for k in report.missing)
    assert set(refine) <= set(report.loaded)
    assert "decoder.to_pi.mlp.0.weight" in report.missing  # output heads still have no pre-trained weights
    assert f"copied propose -> refine: {len(refine)} tensors" in str(report)


# --------------------------------------------------------------------------------------------------------------
# Encoder strictness, wrong checkpoints
# --------------------------------------------------------------------------------------------------------------


def test_missing_encoder_key_raises_and_loads_nothing(ssl_ckpt) -> None:
    _, path = ssl_ckpt
    state = dict(load_checkpoint(path)["state_dict"])
    removed = next(k for k in state if k.startswith("momentum_branch.backbone.encoder."))
    del state[removed]
    model = _finetune_model()
    before = _snapshot(model)
    with pytest.raises(ArchitectureMismatchError, match="every key must load") as info:
        transfer_pretrained(model, {"state_dict": state})
    assert removed[len("momentum_branch.backbone.") :] in info.value.report.missing
    _assert_same(before, model.state_dict())


def test_wrong_encoder_shape_raises_and_loads_nothing(tmp_path: Path) -> None:
    wide = _small_task(hidden_dim=64)
    path = tmp_path / "wide.ckpt"
    torch.save({"state_dict": wide.state_dict()}, path)
    model = _finetune_model()
    before = _snapshot(model)
    with pytest.raises(ArchitectureMismatchError) as info:
        transfer_pretrained(model, load_checkpoint(path))
    reshaped = {k: (a, b) for k, a, b in info.value.report.reshaped}
    assert reshaped["encoder.agent_encoder.type_a_emb.weight"] == ((10, 64), (10, 32))
    assert "shape mismatch" in str(info.value)
    _assert_same(before, model.state_dict())


def test_plain_backbone_checkpoint_is_not_an_ssl_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    torch.save(_finetune_model().state_dict(), path)
    model = _finetune_model()
    before = _snapshot(model)
    with pytest.raises(CheckpointError, match="ckpt_path") as info:
        transfer_pretrained(model, load_checkpoint(path))
    assert not isinstance(info.value, ArchitectureMismatchError)
    assert "not a SmartPretrain SSL checkpoint" in str(info.value)
    _assert_same(before, model.state_dict())


def test_branch_attributes_name_the_pretrain_tasks_branches(ssl_ckpt) -> None:
    """Transfer finds branches by BRANCH_ATTRIBUTES: renaming a PretrainTask attribute must show up here."""
    task, _ = ssl_ckpt
    assert SSL_BRANCHES == ("momentum", "online") == tuple(BRANCH_ATTRIBUTES)
    keys = list(task.state_dict())
    for attribute in BRANCH_ATTRIBUTES.values():
        assert isinstance(getattr(task, attribute), SSLBranch)
        assert any(k.startswith(f"{attribute}.backbone.encoder.") for k in keys), attribute
        assert any(k.startswith(f"{attribute}.projector.") for k in keys), attribute


# --------------------------------------------------------------------------------------------------------------
# The reference release's layout (QCNet_ssl, docs/qcnet.md §7), synthesized at full size
# --------------------------------------------------------------------------------------------------------------


def _ssl_heads(prefix: str, generator: torch.Generator) -> dict[str, Tensor]:
    def rand(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator)

    return {
        f"{prefix}0.weight": rand(512, 128),
        f"{prefix}0.bias": rand(512),
        f"{prefix}1.weight": rand(512),
        f"{prefix}1.bias": rand(512),
        f"{prefix}1.running_mean": rand(512),
        f"{prefix}1.running_var": rand(512).abs(),
        f"{prefix}1.num_batches_tracked": torch.tensor(7),
        f"{prefix}3.weight": rand(256, 512),
        f"{prefix}3.bias": rand(256),
    }


@pytest.fixture(scope="module")
def release_state() -> dict[str, Tensor]:
    """A state_dict with the key names and shapes of the reference ``QCNet_ssl`` checkpoint."""
    torch.manual_seed(1)
    online = QCNet(num_modes=1, propose_stack_only=True)
    momentum = copy.deepcopy(online)  # keeps the tied pre-norms of the self-attention layers tied
    with torch.no_grad():
        for p in momentum.parameters():
            p.add_(torch.randn_like(p))
    g = torch.Generator().manual_seed(2)
    state: dict[str, Tensor] = {}
    for branch, backbone in (("branch.", online), ("momentum_branch.", momentum)):
        state |= {branch + k: v for k, v in backbone.state_dict().items()}
        state |= _ssl_heads(f"{branch}proj.", g)
    state |= {
        "contra_predictor.0.weight": torch.randn(1024, 256, generator=g),
        "contra_predictor.0.bias": torch.randn(1024, generator=g),
        "contra_predictor.1.weight": torch.ones(1024),
        "contra_predictor.1.bias": torch.zeros(1024),
        "contra_predictor.1.running_mean": torch.zeros(1024),
        "contra_predictor.1.running_var": torch.ones(1024),
        "contra_predictor.1.num_batches_tracked": torch.tensor(7),
        "contra_predictor.3.weight": torch.randn(256, 1024, generator=g),
        "contra_predictor.3.bias": torch.randn(256, generator=g),
        "rec_predictor.0.weight": torch.randn(1024, 512, generator=g),
        "rec_predictor.0.bias": torch.randn(1024, generator=g),
        "rec_predictor.1.weight": torch.ones(1024),  # LayerNorm
        "rec_predictor.1.bias": torch.zeros(1024),
        "rec_predictor.3.weight": torch.randn(220, 1024, generator=g),
        "rec_predictor.3.bias": torch.randn(220, generator=g),
        "temp_emb": torch.randn(220, 256, generator=g),
    }
    return state


def _learnable_parameters(state: dict[str, Tensor]) -> int:
    """Parameters as ``sum(p.numel() for p in model.parameters())`` counts them from a state_dict: floating
    tensors, without BatchNorm statistics (``running_mean/var``; ``num_batches_tracked`` is an integer), and a
    tensor stored under two names (QCNet's self-attention layers share ``attn_prenorm_x_src`` with
    ``attn_prenorm_x_dst``) once."""
    seen: set[int] = set()
    total = 0
    for key, value in state.items():
        if not value.is_floating_point() or key.rsplit(".", 1)[-1] in ("running_mean", "running_var"):
            continue
        if value.data_ptr() in seen:
            continue
        seen.add(value.data_ptr())
        total += value.numel()
    return total


def test_release_layout_matches_the_documented_totals(release_state: dict[str, Tensor]) -> None:
    assert len(release_state) == RELEASE_KEYS
    assert _learnable_parameters(release_state) == RELEASE_PARAMETERS
    # The naive count (every floating tensor, num_batches_tracked excluded) is 7,168 higher: the BatchNorm
    # running statistics (2 x 2 x 512 of the projectors + 2 x 1024 of contra_predictor = 4,096) and the 12 tied
    # pre-norm tensors of 128 listed under both names (2 branches x 1,536 = 3,072).
    naive = sum(v.numel() for k, v in release_state.items() if v.is_floating_point())
    assert naive == RELEASE_PARAMETERS + 4096 + 3072
    tied = [
        k
        for k in release_state
        if k.startswith("branch.")
        and k.endswith(("x_dst.weight", "x_dst.bias"))
        and release_state[k].data_ptr() == release_state[k.replace("x_dst", "x_src")].data_ptr()
    ]
    assert len(tied) == 12  # pl2pl, t_attn x 2, a2a x 2, m2m_propose: weight and bias each

    decoder = [k for k in release_state if k.startswith("branch.decoder.")]
    assert len(decoder) == RELEASE_DECODER_KEYS
    assert release_state["branch.decoder.mode_emb.weight"].shape == (1, 128)
    official = official_state_dict_spec(num_modes=1)
    for key in decoder + [k for k in release_state if k.startswith("branch.encoder.")]:
        name = key[len("branch.") :]
        assert official[name] == tuple(release_state[key].shape), name  # a subset of plain QCNet's layout
    assert sum(k.startswith("momentum_branch.") for k in release_state) == sum(
        k.startswith("branch.") for k in release_state
    )


def test_release_layout_transfers_into_default_qcnet(release_state: dict[str, Tensor]) -> None:
    model = QCNet()
    before = _snapshot(model)
    report = transfer_pretrained(model, release_state)
    after = model.state_dict()

    assert report.source_prefix == "momentum_branch."
    encoder = [k for k in after if k.startswith("encoder.")]
    assert sorted(report.strict_loaded()) == sorted(encoder)
    for key in encoder:
        assert torch.equal(after[key], release_state[f"momentum_branch.{key}"]), key
    decoder_loaded = [k for k in report.loaded if k.startswith("decoder.")]
    assert len(decoder_loaded) == RELEASE_DECODER_KEYS
    assert len([k for k in decoder_loaded if k != "decoder.mode_emb.weight"]) == RELEASE_DECODER_KEYS - 1
    assert report.expanded == [("decoder.mode_emb.weight", (1, 128), (6, 128))]
    assert torch.equal(
        after["decoder.mode_emb.weight"], release_state["momentum_branch.decoder.mode_emb.weight"].repeat(6, 1)
    )
    assert sorted(report.dropped) == sorted(
        k[len("momentum_branch.") :] for k in release_state if k.startswith("momentum_branch.proj.")
    )
    assert report.unexpected == [] and report.reshaped == []
    assert len(report.loaded) + len(report.missing) == len(after)
    for key in report.missing:
        assert torch.equal(after[key], before[key]), key

    online = transfer_pretrained(QCNet(), release_state, branch="online")
    assert online.source_prefix == "branch."


# --------------------------------------------------------------------------------------------------------------
# finetune.build_backbone(pretrained_ckpt=...)
# --------------------------------------------------------------------------------------------------------------


def test_build_backbone_writes_transfer_report(ssl_ckpt, tmp_path: Path) -> None:
    _, path = ssl_ckpt
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["model=qcnet_small", "data=av1", f"pretrained_ckpt={path}"])
    backbone = build_backbone(cfg, tmp_path)
    summary = json.loads((tmp_path / "transfer_report.json").read_text())
    encoder = [k for k in backbone.state_dict() if k.startswith("encoder.")]
    assert summary["strict_loaded"] == len(encoder) > 0
    assert not any(k.startswith("encoder.") for k in summary["missing"])
    assert summary["source_prefix"] == "momentum_branch.backbone."
    assert summary["expanded"] == [["decoder.mode_emb.weight", [1, 32], [6, 32]]]
    assert len(summary["dropped"]) == 9 and summary["unexpected"] == []
    assert summary["source"] == str(path)
