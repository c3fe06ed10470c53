"""Inverse dynamics (control-centric pre-training, after SMART, ICLR 2023): from an agent's observations at view A's
present and at view B's present, recover the controls that led from one to the other."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

import torch
from torch import Tensor, nn

from smartpretrain.ssl.control_heads import (
    ControlScale,
    check_transition_length,
    control_regression,
    controls_of,
    second_view_encoding,
)
from smartpretrain.ssl.objective import (
    MOMENTUM_B,
    ONLINE_A,
    Form,
    ObjectiveNeeds,
    ObjectiveOutput,
    SSLInputs,
    SSLObjective,
)

__all__ = ["InverseDynamicsLoss"]


class InverseDynamicsLoss(SSLObjective):
    r"""Regress every control of the transition from the two observations.

    A trunk embeds the pair, ``h = T([z_A ; z_B])``; control ``j`` of a transition of ``k`` controls is read out
    from ``h`` plus learned embeddings of ``j`` and of ``k`` (the two views are ``k`` steps apart, and a control's
    place in the transition matters), ``\hat c_j = R(h + e_j + e'_k)``. The loss is
    :func:`~smartpretrain.ssl.control_heads.control_regression` over the valid controls of the global batch,
    on controls scaled by ``control_scale``; its minimum, 0, is reached when every control is recovered. The
    controls themselves are never an input.

    Args:
        dim: projection size C. hidden_dim: the trunk's and read-out's width.
        max_steps: the longest transition the step embeddings cover (a longer one is refused by name).
        second_view: ``momentum`` (view B from the momentum branch: TCL's keys, no extra pass) or ``online``.
        control_scale: (m/s^2, rad/s) per unit. beta: SmoothL1's β.
    """

    #: the online view A and the momentum view B (``second_view="online"``: online view B), one vector per agent
    needs: ClassVar[ObjectiveNeeds] = ObjectiveNeeds(encodes={ONLINE_A, MOMENTUM_B}, form=Form.VECTOR, controls=True)

    def __init__(
        self,
        dim: int = 256,
        hidden_dim: int = 256,
        max_steps: int = 128,
        second_view: str = "momentum",
        control_scale: Sequence[float] = (1.0, 0.2),
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        self.observation_b = second_view_encoding(second_view)
        self.second_view, self.max_steps, self.beta = second_view, int(max_steps), float(beta)
        self.scale = ControlScale(control_scale)
        self.trunk = nn.Sequential(
            nn.Linear(2 * dim, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, hidden_dim),
        )  # fmt: skip
        self.step_embedding = nn.Embedding(self.max_steps, hidden_dim)
        self.length_embedding = nn.Embedding(self.max_steps + 1, hidden_dim)
        self.readout = nn.Sequential(
            nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 2)
        )

    def declared_needs(self) -> ObjectiveNeeds:
        return replace(self.needs, encodes={ONLINE_A, self.observation_b})

    def predict(self, inputs: SSLInputs) -> Tensor:
        """``[P, K, 2]`` the predicted scaled controls of every transition step (padding steps included)."""
        controls = controls_of(inputs, "InverseDynamicsLoss")
        check_transition_length(controls, self.max_steps, "InverseDynamicsLoss")
        h = self.trunk(torch.cat([inputs.encoding(ONLINE_A), inputs.encoding(self.observation_b)], dim=-1))
        steps = torch.arange(controls.max_steps, device=h.device)
        x = h[:, None] + self.step_embedding(steps)[None] + self.length_embedding(controls.length)[:, None]
        return self.readout(x)

    def loss_of(self, prediction: Tensor, inputs: SSLInputs) -> ObjectiveOutput:
        """The loss of ``prediction`` (``[P, K, 2]`` scaled controls) against the valid controls."""
        controls = controls_of(inputs, "InverseDynamicsLoss")
        mask = controls.valid & controls.inside()
        loss, per_query = control_regression(prediction, self.scale(controls.values), mask, self.beta)
        return ObjectiveOutput(loss, per_query)

    def compute(self, inputs: SSLInputs) -> ObjectiveOutput:
        return self.loss_of(self.predict(inputs), inputs)
