"""The faster pre-training step computes what the step before it computed (issue 22): same losses, same gradients,
same BatchNorm statistics, on a fixed batch of the real AV2 fixture scene, in float64, dropout off.

What changed, and what the reference here keeps of the implementation before:

* the QCNet agent encoder updates, in each layer, only the rows (agent, history step) something downstream reads
  (:meth:`~smartpretrain.backbones.qcnet.agent_encoder.QCNetAgentEncoder.updated_rows`); the reference is the
  encoder's former forward (every step, every layer), kept below as :func:`reference_agent_encoder_forward`;
* each branch embeds only the query agents the step reads (the decoder runs for them alone, and the encoder
  computes what their queries read); the reference embeds every agent of a view;
* the momentum (no-grad) passes run before the online pass; the reference order is online A, momentum A,
  momentum B. With dropout on, the passes draw other masks (the RNG is consumed in another order); the
  computation is otherwise the same, which is what dropout off checks.

Fine-tuning shares the agent encoder, so its forecasting loss and gradients are checked the same way.
"""

from __future__ import annotations

import types
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from smartpretrain.backbones.base import select_agents
from smartpretrain.backbones.graph import angle_between
from smartpretrain.backbones.qcnet import QCNet
from smartpretrain.data.views import SSLViewTransform, TemporalViewSampler
from smartpretrain.ssl.objective import MOMENTUM_A, MOMENTUM_B, ONLINE_A
from smartpretrain.ssl.tcl import TrajectoryContrastiveLoss
from smartpretrain.ssl.trl import TrajectoryReconstructionLoss
from smartpretrain.tasks.pretrain import PretrainTask, lookup_rows
from tests.conftest import AV2_FIXTURE_ID, AV2_FIXTURE_ROOT, require_shared

#: the reference's geometry of the agent encoder (history 50, t2m over the last 30 steps, span 10, 2 layers), at
#: small widths; float64
SMALL = {
    "hidden_dim": 16, "num_heads": 2, "head_dim": 8, "num_freq_bands": 8, "num_agent_layers": 2, "num_dec_layers": 1,
    "num_map_layers": 1, "num_historical_steps": 50, "num_future_steps": 60, "num_t2m_steps": 30, "time_span": 10,
    "dropout": 0.0,
}  # fmt: skip
WINDOW = 50
OLD_EMBED_ORDER = (ONLINE_A, MOMENTUM_A, MOMENTUM_B)


def reference_agent_encoder_forward(
    self: Any, data: Any, map_enc: dict[str, Tensor], agents: Tensor | None = None
) -> dict[str, Tensor]:
    """The agent encoder's forward before the change: every step of every agent through every layer."""
    h, d = self.config.num_historical_steps, self.config.hidden_dim
    agent = data["agent"]
    pos_a, head_a, vel_a = agent["position"][:, :h, :2], agent["heading"][:, :h], agent["velocity"][:, :h, :2]
    num_a = pos_a.size(0)
    head_vec = torch.stack([head_a.cos(), head_a.sin()], dim=-1)
    motion = torch.cat([pos_a.new_zeros(num_a, 1, 2), pos_a[:, 1:] - pos_a[:, :-1]], dim=1)
    x_a = torch.stack(
        [torch.linalg.vector_norm(motion, dim=-1), angle_between(head_vec, motion),
         torch.linalg.vector_norm(vel_a, dim=-1), angle_between(head_vec, vel_a)],
        dim=-1,
    )  # fmt: skip
    type_emb = self.type_a_emb(agent["type"].long()).repeat_interleave(h, dim=0)
    x_a = self.x_a_emb(continuous_inputs=x_a.reshape(-1, 4), categorical_embs=[type_emb])
    g = self.build_graphs(data)
    r_t = self.r_t_emb(continuous_inputs=g["r_t"], categorical_embs=None)
    r_pl2a = self.r_pl2a_emb(continuous_inputs=g["r_pl2a"], categorical_embs=None)
    r_a2a = self.r_a2a_emb(continuous_inputs=g["r_a2a"], categorical_embs=None)
    x_pl = map_enc["x_pl"]
    src_pl2a = g["edge_index_pl2a"][0] % max(x_pl.size(0), 1)
    for i in range(self.config.num_agent_layers):
        x_a = self.t_attn_layers[i](x_a, r_t, g["edge_index_t"])
        x_a = x_a.view(num_a, h, d).transpose(0, 1).reshape(-1, d)
        pl2a = self.pl2a_attn_layers[i]
        x_a = pl2a.attend(x_a, *pl2a.source_messages(x_pl, r_pl2a, src_pl2a), g["edge_index_pl2a"][1])
        x_a = self.a2a_attn_layers[i](x_a, r_a2a, g["edge_index_a2a"])
        x_a = x_a.view(h, num_a, d).transpose(0, 1).reshape(-1, d)
    return {"x_a": x_a.view(num_a, h, d)}


def reference_query_embeddings(self: Any, batch: Any, scene: Tensor, agent: Tensor) -> Any:
    """Before the change every agent of a view was embedded, whichever queries the step reads."""
    return self.agent_embeddings(batch, self.encode(batch))


def _as_reference(backbone: QCNet) -> None:
    encoder = backbone.encoder.agent_encoder
    encoder.forward = types.MethodType(reference_agent_encoder_forward, encoder)
    backbone.query_embeddings = types.MethodType(reference_query_embeddings, backbone)


@pytest.fixture(scope="module")
def fixture_scene() -> Any:
    from smartpretrain.data.converters.av2 import Av2Converter

    require_shared(AV2_FIXTURE_ROOT / "val" / AV2_FIXTURE_ID)
    return Av2Converter(AV2_FIXTURE_ROOT, "val").convert(AV2_FIXTURE_ID).scene


def _double(view: Any) -> Any:
    return view.apply(lambda t: t.double() if t.is_floating_point() else t)


def _grads(module: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.detach().clone() for n, p in module.named_parameters() if p.grad is not None}


def _pretrain_step(scene: Any, reference: bool) -> dict[str, Any]:
    torch.manual_seed(0)
    backbone = QCNet(**SMALL, num_modes=1, propose_stack_only=True)
    objectives = {"tcl": TrajectoryContrastiveLoss(dim=16, hidden_dim=32),
                  "trl": TrajectoryReconstructionLoss(dim=16, hidden_dim=32, window=WINDOW)}  # fmt: skip
    task = PretrainTask(backbone, objectives, window=WINDOW, proj_hidden_dim=32, proj_dim=16).train().double()
    if reference:
        for branch in (task.branch, task.momentum_branch):
            _as_reference(branch.backbone)
        task._embed_plan = OLD_EMBED_ORDER
    transform = SSLViewTransform(TemporalViewSampler(WINDOW), backbone.make_adapter())
    np.random.seed(3)  # the view windows: the same draws on either side
    batch = transform.collate([transform(scene) for _ in range(2)])
    _double(batch.view_a), _double(batch.view_b)
    batch.target = batch.target.double()
    out = task.losses(batch)
    out["loss"].backward()
    buffers = {n: b.detach().clone() for n, b in task.named_buffers() if b.is_floating_point()}
    return {"losses": {k: v.detach() for k, v in out.items()}, "grads": _grads(task), "buffers": buffers}


def test_first_steps_follow_the_decoders_reads() -> None:
    encoder = QCNet(**SMALL).encoder.agent_encoder
    assert encoder.first_steps() == [10, 20]  # t2m reads steps 20..49; layer 0 feeds them from 10 on
    assert QCNet(**{**SMALL, "num_t2m_steps": None}).encoder.agent_encoder.first_steps() == [0, 0]
    assert QCNet(**{**SMALL, "num_agent_layers": 3, "time_span": 15}).encoder.agent_encoder.first_steps() == [0, 5, 20]


def test_pretraining_step_equals_the_former_implementation(fixture_scene: Any) -> None:
    new, old = _pretrain_step(fixture_scene, reference=False), _pretrain_step(fixture_scene, reference=True)
    assert float(new["losses"]["num_queries"]) > 0
    for name in ("loss", "tcl", "trl", "num_queries"):
        torch.testing.assert_close(new["losses"][name], old["losses"][name], rtol=1e-9, atol=1e-10)
    assert new["grads"].keys() == old["grads"].keys() and len(new["grads"]) > 50
    for name in new["grads"]:
        torch.testing.assert_close(new["grads"][name], old["grads"][name], rtol=1e-8, atol=1e-10, msg=name)
    for name in new["buffers"]:  # the projectors' BatchNorm running statistics
        torch.testing.assert_close(new["buffers"][name], old["buffers"][name], rtol=1e-9, atol=1e-10, msg=name)


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_pruned_steps_change_nothing_that_is_read(fixture_scene: Any, dropout: float) -> None:
    """The encoder's outputs at the steps read are those of the reference (dropout off: exactly; the unread
    steps are zero), and with dropout on in eval mode as well."""
    torch.manual_seed(0)
    backbone = QCNet(**{**SMALL, "dropout": dropout}).double().eval()
    batch = _double(backbone.make_adapter().collate([backbone.make_adapter()(fixture_scene)]))
    with torch.no_grad():
        new = backbone.encode(batch)["x_a"]
        _as_reference(backbone)
        old = backbone.encode(batch)["x_a"]
    read = backbone.config.num_historical_steps - backbone.config.effective_num_t2m_steps
    torch.testing.assert_close(new[:, read:], old[:, read:], rtol=1e-9, atol=1e-10)
    assert torch.count_nonzero(new[:, :read]) == 0


def test_finetuning_loss_and_gradients_equal_the_former_implementation(fixture_scene: Any) -> None:
    results = []
    for reference in (False, True):
        torch.manual_seed(0)
        backbone = QCNet(**SMALL, num_modes=6).double().train()
        if reference:
            _as_reference(backbone)
        adapter = backbone.make_adapter()
        batch = _double(adapter.collate([adapter(fixture_scene), adapter(fixture_scene)]))
        losses = backbone.loss(batch, backbone(batch))
        losses["loss"].backward()
        results.append(({k: v.detach() for k, v in losses.items()}, _grads(backbone)))
    (new_losses, new_grads), (old_losses, old_grads) = results
    for name in new_losses:
        torch.testing.assert_close(new_losses[name], old_losses[name], rtol=1e-9, atol=1e-10)
    assert new_grads.keys() == old_grads.keys()
    for name in new_grads:
        torch.testing.assert_close(new_grads[name], old_grads[name], rtol=1e-8, atol=1e-10, msg=name)


def test_query_embeddings_equal_those_of_every_agent(fixture_scene: Any) -> None:
    """Embedding only some agents gives them the embeddings they get when every agent is embedded, with less work:
    the last layer's a2a updates fewer rows, and the decoder runs for the selected agents alone."""
    torch.manual_seed(0)
    backbone = QCNet(**SMALL, num_modes=1, propose_stack_only=True).double().eval()
    adapter = backbone.make_adapter()
    batch = _double(adapter.collate([adapter(fixture_scene), adapter(fixture_scene)]))
    scene = torch.tensor([0, 0, 1])
    agent = torch.tensor([0, 3, 5])
    with torch.no_grad():
        every = backbone.agent_embeddings(batch, backbone.encode(batch))
        some = backbone.query_embeddings(batch, scene, agent)
    assert some.embeddings.size(0) == 3
    rows, found = lookup_rows(every, some.scene_index, some.agent_index)
    assert bool(found.all())
    assert sorted(zip(some.scene_index.tolist(), some.agent_index.tolist(), strict=True)) == [(0, 0), (0, 3), (1, 5)]
    torch.testing.assert_close(some.embeddings, every.embeddings[rows], rtol=1e-9, atol=1e-10)

    encoder = backbone.encoder.agent_encoder
    num_a = batch["agent"]["position"].size(0)
    selected = torch.zeros(num_a, dtype=torch.bool)
    selected[rows] = True
    g = encoder.build_graphs(batch)
    h = encoder.config.num_historical_steps
    src_t, dst_t = g["edge_index_t"]
    edges = {
        "t": ((src_t % h) * num_a + src_t // h, (dst_t % h) * num_a + dst_t // h),
        "a2a": (g["edge_index_a2a"][0], g["edge_index_a2a"][1]),
    }
    all_rows = encoder.updated_rows(encoder.read_rows(num_a, None, torch.device("cpu")), edges)
    some_rows = encoder.updated_rows(encoder.read_rows(num_a, selected, torch.device("cpu")), edges)
    assert int(some_rows[-1][1].sum()) < int(all_rows[-1][1].sum())
    for (t_some, a2a_some), (t_all, a2a_all) in zip(some_rows, all_rows, strict=True):
        assert bool((t_some <= t_all).all()) and bool((a2a_some <= a2a_all).all())


def test_select_agents_matches_pairs() -> None:
    row_scene, row_agent = torch.tensor([0, 0, 1, 1]), torch.tensor([4, 7, 4, 9])
    picked = select_agents(row_scene, row_agent, torch.tensor([1, 0, 2]), torch.tensor([4, 7, 4]))
    assert picked.tolist() == [False, True, True, False]  # (2, 4) is no row: it selects nothing
    assert not select_agents(row_scene, row_agent, torch.tensor([], dtype=torch.long), torch.tensor([])).any()
