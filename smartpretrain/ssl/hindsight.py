"""Random masked hindsight control (control-centric pre-training, after SMART, ICLR 2023): mask part of an agent's
control sequence and of its observations, and recover the masked controls from the rest with non-causal
attention ("which controls produce this trajectory?")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import ClassVar

import torch
from torch import Tensor, nn

from smartpretrain.ssl.control_heads import (
    ControlEmbedding,
    check_transition_length,
    control_regression,
    controls_of,
    second_view_encoding,
    touch,
)
from smartpretrain.ssl.objective import (
    MOMENTUM_B,
    ONLINE_A,
    Controls,
    Form,
    ObjectiveNeeds,
    ObjectiveOutput,
    SSLInputs,
    SSLObjective,
)

__all__ = ["HindsightMasks", "MaskedHindsightControlLoss"]


@dataclass(frozen=True)
class HindsightMasks:
    """Which tokens of each query's control sequence are masked.

    Attributes:
        controls: ``[P, K] bool`` masked controls (only among the query's ``length`` controls).
        observation_a, observation_b: ``[P] bool`` masked observations.
    """

    controls: Tensor
    observation_a: Tensor
    observation_b: Tensor

    @classmethod
    def from_draws(cls, controls: Controls, control_ratio: float, observation_ratio: float) -> HindsightMasks:
        """A token is masked where its draw (:attr:`Controls.draws`) is below its ratio."""
        draws = controls.draws
        return cls(
            controls=(draws[:, 2:] < control_ratio) & controls.inside(),
            observation_a=draws[:, 0] < observation_ratio,
            observation_b=draws[:, 1] < observation_ratio,
        )


class MaskedHindsightControlLoss(SSLObjective):
    r"""A non-causal transformer over ``[o_A, c_0, ..., c_{k-1}, o_B]`` with part of it masked.

    Tokens: ``o_A`` / ``o_B`` are the projections of the two views (``Linear(C, d)``), ``c_j`` the control
    embedding; each token adds a learned position (its index in the sequence) and type (observation or control)
    embedding. Masking draws (:class:`HindsightMasks`, from :attr:`Controls.draws`, so the masks are the data's,
    the same on any rank and after a resume): each control with probability ``control_mask_ratio``, each
    observation with ``observation_mask_ratio``. A masked control becomes a learned mask token (its value never
    enters), an unmasked but unobserved one a learned "missing" token, a masked observation a learned
    observation-mask token. Every token attends to every other (no causal mask). The loss is
    :func:`~smartpretrain.ssl.control_heads.control_regression` on the masked, valid controls only:

    .. math::
        \mathcal{L}_{MHC} = \frac{1}{|M|} \sum_{(i, j) \in M} \sum_d \mathrm{SmoothL1}_\beta(\hat c_{ijd} - c_{ijd}),
        \qquad M = \{(i, j) : c_{ij} \text{ masked and valid}\}

    whose minimum, 0, is reached when every masked control is recovered.

    Args:
        dim: projection size C. model_dim, depth, num_heads: the transformer (pre-norm, GELU, 4x MLP).
        max_steps: the longest transition covered by the position embedding (longer ones are refused by name).
        control_mask_ratio, observation_mask_ratio: masking probabilities.
        second_view: ``momentum`` or ``online`` (see :data:`~smartpretrain.ssl.control_heads.SECOND_VIEWS`).
        control_scale: (m/s^2, rad/s) per unit. beta: SmoothL1's β.
    """

    #: the online view A and the momentum view B (``second_view="online"``: online view B), one vector per agent
    needs: ClassVar[ObjectiveNeeds] = ObjectiveNeeds(encodes={ONLINE_A, MOMENTUM_B}, form=Form.VECTOR, controls=True)

    def __init__(
        self,
        dim: int = 256,
        model_dim: int = 128,
        depth: int = 2,
        num_heads: int = 4,
        max_steps: int = 128,
        control_mask_ratio: float = 0.5,
        observation_mask_ratio: float = 0.15,
        second_view: str = "momentum",
        control_scale: Sequence[float] = (1.0, 0.2),
        beta: float = 1.0,
    ) -> None:
        super().__init__()
        if not (0.0 < control_mask_ratio <= 1.0 and 0.0 <= observation_mask_ratio <= 1.0):
            raise ValueError(
                f"control_mask_ratio must be in (0, 1] and observation_mask_ratio in [0, 1], got "
                f"{control_mask_ratio}, {observation_mask_ratio}"
            )
        self.observation_b = second_view_encoding(second_view)
        self.second_view, self.max_steps, self.beta = second_view, int(max_steps), float(beta)
        self.control_mask_ratio, self.observation_mask_ratio = float(control_mask_ratio), float(observation_mask_ratio)
        self.observation_embedding = nn.Linear(dim, model_dim)
        self.control_embedding = ControlEmbedding(model_dim, control_scale)
        self.position_embedding = nn.Embedding(self.max_steps + 2, model_dim)
        self.type_embedding = nn.Embedding(2, model_dim)  # 0 observation, 1 control
        self.control_mask_token = nn.Parameter(torch.zeros(model_dim))
        self.control_missing_token = nn.Parameter(torch.zeros(model_dim))
        self.observation_mask_token = nn.Parameter(torch.zeros(model_dim))
        for token in (self.control_mask_token, self.control_missing_token, self.observation_mask_token):
            nn.init.normal_(token, std=0.02)
        layer = nn.TransformerEncoderLayer(
            model_dim, num_heads, 4 * model_dim, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(model_dim), nn.Linear(model_dim, 2))

    def declared_needs(self) -> ObjectiveNeeds:
        return replace(self.needs, encodes={ONLINE_A, self.observation_b})

    def masks(self, inputs: SSLInputs) -> HindsightMasks:
        controls = controls_of(inputs, "MaskedHindsightControlLoss")
        return HindsightMasks.from_draws(controls, self.control_mask_ratio, self.observation_mask_ratio)

    def predict(self, inputs: SSLInputs, masks: HindsightMasks | None = None) -> Tensor:
        """``[P, K, 2]`` the scaled controls read out at every control slot (the loss takes the masked ones)."""
        controls = controls_of(inputs, "MaskedHindsightControlLoss")
        masks = masks or self.masks(inputs)
        p, k = controls.values.shape[:2]
        check_transition_length(controls, self.max_steps, "MaskedHindsightControlLoss")
        z_a, z_b = inputs.encoding(ONLINE_A), inputs.encoding(self.observation_b)
        if p == 0:  # keep every parameter in the graph on a rank with no query
            return z_a.new_zeros(0, k, 2) + touch(self)
        obs_a = torch.where(masks.observation_a[:, None], self.observation_mask_token, self.observation_embedding(z_a))
        obs_b = torch.where(masks.observation_b[:, None], self.observation_mask_token, self.observation_embedding(z_b))
        inside = controls.inside()
        observed = controls.valid & inside
        tokens = self.control_embedding(controls.values, observed)
        tokens = torch.where(observed[..., None], tokens, self.control_missing_token)
        tokens = torch.where(masks.controls[..., None], self.control_mask_token, tokens)
        # sequence [o_A, c_0 .. c_{k-1}, o_B, padding]: o_B right after the query's own last control
        seq = torch.cat([obs_a[:, None], tokens, tokens.new_zeros(p, 1, tokens.size(-1))], dim=1)  # [P, K + 2, d]
        rows = torch.arange(p, device=seq.device)
        slot_b = controls.length + 1
        seq = seq.index_put((rows, slot_b), obs_b)
        slots = torch.arange(k + 2, device=seq.device)
        is_observation = (slots[None] == 0) | (slots[None] == slot_b[:, None])
        seq = seq + self.position_embedding(slots)[None] + self.type_embedding((~is_observation).long())
        padding = slots[None] > slot_b[:, None]
        out = self.encoder(seq, src_key_padding_mask=padding)
        return self.head(out[:, 1 : k + 1])

    def loss_of(self, prediction: Tensor, inputs: SSLInputs, masks: HindsightMasks) -> ObjectiveOutput:
        """The loss of ``prediction`` (``[P, K, 2]`` scaled controls) on the masked, valid controls."""
        controls = controls_of(inputs, "MaskedHindsightControlLoss")
        mask = masks.controls & controls.valid
        loss, per_query = control_regression(prediction, self.control_embedding.scale(controls.values), mask, self.beta)
        return ObjectiveOutput(loss, per_query)

    def compute(self, inputs: SSLInputs) -> ObjectiveOutput:
        masks = self.masks(inputs)
        return self.loss_of(self.predict(inputs, masks), inputs, masks)
