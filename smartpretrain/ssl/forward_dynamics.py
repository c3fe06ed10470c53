"""Forward dynamics (control-centric pre-training, after SMART, ICLR 2023): from an agent's observation at view
A's present and the controls it then applied, predict the *latent* of its observation at view B's present."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smartpretrain.ssl.control_heads import ControlEmbedding, controls_of, touch
from smartpretrain.ssl.distributed import global_sum, world_size
from smartpretrain.ssl.heads import ProjectionMLP
from smartpretrain.ssl.objective import (
    MOMENTUM_B,
    ONLINE_A,
    Form,
    ObjectiveNeeds,
    ObjectiveOutput,
    SSLInputs,
    SSLObjective,
)

__all__ = ["ForwardDynamicsLoss"]


class ForwardDynamicsLoss(SSLObjective):
    r"""A latent dynamics model rolled over the transition's controls, against the momentum latent of view B.

    The online projection of view A starts a GRU's state, ``h_0 = \tanh(W z_A)``; each control of the transition
    (:class:`~smartpretrain.ssl.objective.Controls`, embedded with its validity flag, so an unobserved step still
    advances time) updates it, ``h_{j+1} = \mathrm{GRU}(e(c_j), h_j)``; after the query's ``k`` controls a
    predictor (the projector's MLP shape, global BatchNorm) maps the state into the latent space, and the loss
    is the normalised squared error to the momentum branch's projection of view B (as BYOL; the target gets no
    gradient):

    .. math::
        \mathcal{L}_{FD} = \frac{1}{N} \sum_i \left\| \frac{p(h_{k_i})}{\|p(h_{k_i})\|}
            - \frac{\bar z_{B,i}}{\|\bar z_{B,i}\|} \right\|^2 = \frac{1}{N} \sum_i 2 - 2 \cos(p(h_{k_i}), \bar z_{B,i})

    over the N queries of the global batch observed throughout both views; its minimum, 0, is reached when every
    prediction points along its target. No input of the prediction depends on view B's encoding (the controls
    are the scene's trajectory data, not the encoder's output).

    Args:
        dim: projection size C. hidden_dim: the predictor's hidden size. control_dim: the control embedding.
        control_scale: (m/s^2, rad/s) per unit of the control embedding.
    """

    #: the online view A (start state) and the momentum view B (target), one vector per agent; the controls
    needs: ClassVar[ObjectiveNeeds] = ObjectiveNeeds(encodes={ONLINE_A, MOMENTUM_B}, form=Form.VECTOR, controls=True)

    def __init__(
        self,
        dim: int = 256,
        hidden_dim: int = 1024,
        control_dim: int = 64,
        control_scale: Sequence[float] = (1.0, 0.2),
    ) -> None:
        super().__init__()
        self.control_embedding = ControlEmbedding(control_dim, control_scale)
        self.initial_state = nn.Linear(dim, dim)
        self.dynamics = nn.GRU(control_dim, dim, batch_first=True)
        self.predictor = ProjectionMLP(dim, hidden_dim, dim)

    def predict(self, inputs: SSLInputs) -> Tensor:
        """``[P, C]`` the predicted latent of view B, from view A's projection and the transition's controls."""
        z_a = inputs.encoding(ONLINE_A)
        controls = controls_of(inputs, "ForwardDynamicsLoss")
        h0 = torch.tanh(self.initial_state(z_a))
        if z_a.size(0) == 0:  # nn.GRU refuses an empty batch; the predictor still runs (global BatchNorm)
            return self.predictor(h0) + touch(self.dynamics) + touch(self.control_embedding)
        x = self.control_embedding(controls.values, controls.valid & controls.inside())
        states, _ = self.dynamics(x, h0.unsqueeze(0).contiguous())  # [P, K, C]: the state after each control
        rows = torch.arange(z_a.size(0), device=z_a.device)
        return self.predictor(states[rows, controls.length - 1])

    def loss_of(self, prediction: Tensor, inputs: SSLInputs) -> ObjectiveOutput:
        """The loss of ``prediction`` (``[P, C]``) against the momentum latents of view B."""
        target = F.normalize(inputs.encoding(MOMENTUM_B).detach(), dim=-1)
        per_query = 2.0 - 2.0 * (F.normalize(prediction, dim=-1) * target).sum(-1)
        count = global_sum(torch.tensor(float(per_query.numel()), device=prediction.device))
        if float(count) == 0:
            return ObjectiveOutput(prediction.sum() * 0.0, per_query.detach())
        return ObjectiveOutput(per_query.sum() * world_size() / count, per_query.detach())

    def compute(self, inputs: SSLInputs) -> ObjectiveOutput:
        return self.loss_of(self.predict(inputs), inputs)
