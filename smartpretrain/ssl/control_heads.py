"""Pieces the control-centric objectives share (:mod:`.forward_dynamics`, :mod:`.inverse_dynamics`,
:mod:`.hindsight`): control scaling, the control embedding, the second observation, and the regression loss on
controls normalised over the global batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from smartpretrain.ssl.distributed import global_sum, world_size
from smartpretrain.ssl.objective import MOMENTUM_B, ONLINE_B, Controls, Encoding, SSLInputs

__all__ = [
    "SECOND_VIEWS",
    "ControlEmbedding",
    "ControlScale",
    "check_transition_length",
    "control_regression",
    "controls_of",
    "second_view_encoding",
    "touch",
]

#: which branch encodes the second observation (view B): ``momentum`` reuses TCL's keys (no gradient, no extra
#: forward pass); ``online`` runs the online backbone on view B too (gradients through both observations)
SECOND_VIEWS: dict[str, Encoding] = {"momentum": MOMENTUM_B, "online": ONLINE_B}


def second_view_encoding(name: str) -> Encoding:
    """The encoding of the second observation; a clear error for an unknown name."""
    if name not in SECOND_VIEWS:
        raise ValueError(f"second_view must be one of {sorted(SECOND_VIEWS)}, got {name!r}")
    return SECOND_VIEWS[name]


def controls_of(inputs: SSLInputs, what: str) -> Controls:
    """The queries' controls; a clear error when the inputs do not hold them."""
    if inputs.queries is None or inputs.queries.controls is None:
        raise ValueError(f"{what} needs the queries' transition controls (declare controls=True)")
    return inputs.queries.controls


def check_transition_length(controls: Controls, max_steps: int, what: str) -> None:
    """Refuse, by name, a batch whose longest transition exceeds the ``max_steps`` an objective's embeddings cover."""
    if controls.max_steps > max_steps:  # K is the longest transition of the batch
        raise ValueError(
            f"{what}: a transition of {controls.max_steps} steps, but max_steps is {max_steps}; "
            "raise ssl.objectives.<name>.max_steps"
        )


class ControlScale(nn.Module):
    r"""Controls in units: ``(a / s_a, \omega / s_\omega)``; the losses compare scaled controls.

    Args:
        scale: ``(s_a, s_omega)``: the m/s^2 and rad/s that count as one unit.
    """

    def __init__(self, scale: Sequence[float]) -> None:
        super().__init__()
        values = [float(s) for s in scale]
        if len(values) != 2 or min(values) <= 0:
            raise ValueError(f"control_scale must be two positive numbers (m/s^2, rad/s), got {values}")
        self.register_buffer("scale", torch.tensor(values), persistent=False)

    def forward(self, values: Tensor) -> Tensor:
        return values / self.scale.to(values.dtype)


class ControlEmbedding(nn.Module):
    r"""A control as a token: ``Linear(3, d)`` of ``(a / s_a, \omega / s_\omega, valid)``; invalid controls are
    zeros with the flag 0 (the embedding then carries "not observed", not a value).

    Args:
        dim: d.
        scale: ``(s_a, s_omega)`` (:class:`ControlScale`).
    """

    def __init__(self, dim: int, scale: Sequence[float]) -> None:
        super().__init__()
        self.scale = ControlScale(scale)
        self.linear = nn.Linear(3, dim)

    def forward(self, values: Tensor, valid: Tensor) -> Tensor:
        flag = valid.to(values.dtype).unsqueeze(-1)
        return self.linear(torch.cat([self.scale(values) * flag, flag], dim=-1))


def control_regression(prediction: Tensor, target: Tensor, mask: Tensor, beta: float) -> tuple[Tensor, Tensor]:
    r"""SmoothL1 between predicted and true scaled controls where ``mask``, summed over the two dims and averaged
    over the masked controls of the global batch (rank r returns ``W sum_r / N``, see :mod:`.distributed`):

    .. math:: \mathcal{L} = \frac{1}{N} \sum_{(i, j) \in M} \sum_{d} \mathrm{SmoothL1}_\beta(\hat c_{ijd} - c_{ijd})

    Returns the loss and the per-query mean over its masked controls (NaN where a query has none).
    """
    per = F.smooth_l1_loss(prediction, target, beta=beta, reduction="none").sum(-1)
    per = torch.where(mask, per, torch.zeros_like(per))
    with torch.no_grad():
        counts = mask.sum(dim=1)
        per_query = per.detach().sum(dim=1) / counts.clamp(min=1)
        per_query[counts == 0] = float("nan")
    total = global_sum(mask.sum().to(per.dtype))
    if float(total) == 0:
        return prediction.sum() * 0.0, per_query
    return per.sum() * world_size() / total, per_query


def touch(module: nn.Module) -> Tensor:
    """``0 * sum`` of every parameter: keeps them in the graph on a rank with no query (DDP without
    ``find_unused_parameters`` needs a gradient, zero included, for every parameter on every rank)."""
    params = [p for p in module.parameters() if p.requires_grad]
    zero = params[0].new_zeros(()) if params else torch.zeros(())
    return sum((p.sum() * 0.0 for p in params), zero)
