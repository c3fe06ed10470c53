"""Hand-built inputs for SSL tests: :class:`SSLInputs` for an objective alone, and a tiny backbone with a batch of
two views for :class:`~smartpretrain.tasks.pretrain.PretrainTask` (it records which view each branch encodes)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from smartpretrain.backbones.base import AgentEmbeddings
from smartpretrain.data.views import SSLBatch
from smartpretrain.ssl.objective import (
    ONLINE_A,
    Controls,
    Encoding,
    Form,
    ObjectiveNeeds,
    ObjectiveOutput,
    Queries,
    SSLInputs,
    SSLObjective,
)


def query_inputs(
    encodings: Mapping[Encoding, Tensor | None],
    *,
    full_b: Tensor,
    start_a: Tensor,
    start_b: Tensor,
    window: int,
    target: Tensor,
    target_valid: Tensor,
    query_window: Tensor | None = None,
    controls: Controls | None = None,
    form: Form = Form.STEPS,
) -> SSLInputs:
    """Inputs holding the encodings that are not None (``[P, Q, C]`` each, ``[P, C]`` with ``form=VECTOR``) and
    these queries; rows not full in window B make them inputs with partial queries."""
    present = {which: tensor for which, tensor in encodings.items() if tensor is not None}
    needs = ObjectiveNeeds(
        encodes=frozenset(present), form=form, partial_queries=not bool(full_b.all()), controls=controls is not None
    )
    queries = Queries(
        full_b=full_b,
        start_a=start_a,
        start_b=start_b,
        window=window,
        target=target,
        target_valid=target_valid,
        query_window=query_window,
        controls=controls,
    )
    return SSLInputs(needs, present, queries)


# --- a tiny backbone and batch for the pre-train task ---------------------------------------------------------
FEATURES, EMBED, STEPS = 4, 6, 2  # input features per agent, embedding size D, query steps Q


@dataclass
class FakeView:
    """A collated view: ``x [S, N, FEATURES]`` agent features, ``live [S, N]`` agents the backbone embeds."""

    name: str
    x: Tensor
    live: Tensor


class FakeBackbone(nn.Module):
    """Embeds every live agent of a view as ``Q`` steps; ``calls`` lists the views it encoded, in order."""

    embedding_dim = EMBED

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(FEATURES, EMBED * STEPS)
        self.dropout = nn.Dropout(0.5)  # draws from the RNG, as QCNet's and Forecast-MAE's layers do
        self.calls: list[str] = []

    def encode(self, view: FakeView) -> Tensor:
        self.calls.append(view.name)
        return self.dropout(self.net(view.x)).view(*view.x.shape[:2], STEPS, EMBED)

    def agent_embeddings(self, view: FakeView, encoding: Tensor) -> AgentEmbeddings:
        scene, agent = view.live.nonzero(as_tuple=True)
        return AgentEmbeddings(encoding[scene, agent], scene, agent)

    def query_embeddings(self, view: FakeView, scene: Tensor, agent: Tensor) -> AgentEmbeddings:
        """Every live agent, whichever are asked for (as :class:`~smartpretrain.backbones.base.Backbone` does)."""
        return self.agent_embeddings(view, self.encode(view))


def fake_batch(full: Any = None, seed: int = 0, controls: bool = False) -> SSLBatch:
    """2 scenes x 4 agents, window 5. Queries (scene, agent): (0, 0) (0, 1) (0, 2) (1, 0) (1, 3); (0, 1) is
    partial in window B, (1, 3) is not embedded in view B. ``controls``: with transition controls (scene 0: 5
    transitions, scene 1: 6; one unobserved control)."""
    g = torch.Generator().manual_seed(seed)
    s, n, h = 2, 4, 5
    live_b = torch.ones(s, n, dtype=torch.bool)
    live_b[1, 3] = False
    query_scene, query_agent = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([0, 1, 2, 0, 3])
    target_valid = torch.ones(5, h, dtype=torch.bool)
    target_valid[1, 2:] = False
    start_a, start_b = torch.tensor([0, 1]), torch.tensor([5, 7])
    transitions: dict[str, Tensor] = {}
    if controls:
        k = int((start_b - start_a).max())
        inside = torch.arange(k)[None] < (start_b - start_a)[query_scene][:, None]
        valid = inside.clone()
        valid[3, 2] = False
        values = torch.randn(5, k, 2, generator=g) * torch.tensor([1.0, 0.2])
        transitions = {
            "controls": torch.where(valid[..., None], values, torch.zeros_like(values)),
            "control_valid": valid,
            "control_draws": torch.rand(5, k + 2, generator=g),
        }
    return SSLBatch(
        view_a=FakeView("a", torch.randn(s, n, FEATURES, generator=g), torch.ones(s, n, dtype=torch.bool)),
        view_b=FakeView("b", torch.randn(s, n, FEATURES, generator=g), live_b),
        start_a=start_a,
        start_b=start_b,
        query_scene=query_scene,
        query_agent=query_agent,
        full_b=target_valid.all(dim=1),
        target=torch.randn(5, h, 2, generator=g),
        target_valid=target_valid,
        scenario_ids=["s0", "s1"],
        datasets=["synthetic", "synthetic"],
        full=full,
        **transitions,
    )


class Recording(SSLObjective):
    """Keeps the inputs of every call (``received``); its loss reaches every encoding it reads (so the online branch
    gets gradients), and its per-query value is the row number."""

    needs: ClassVar[ObjectiveNeeds] = ObjectiveNeeds(encodes={ONLINE_A})

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.received: list[SSLInputs] = []

    def compute(self, inputs: SSLInputs) -> ObjectiveOutput:
        self.received.append(inputs)
        loss = self.weight.sum() * 0.0
        for tensor in inputs.encodings.values():
            loss = loss + tensor.sum()
        rows = inputs.queries.num_queries if inputs.queries is not None else 0
        return ObjectiveOutput(loss, torch.arange(rows, dtype=torch.float32))


def recording(needs: ObjectiveNeeds) -> Recording:
    """A :class:`Recording` objective whose class declares ``needs``."""
    declared = needs

    class Declared(Recording):
        needs: ClassVar[ObjectiveNeeds] = declared

    return Declared()
