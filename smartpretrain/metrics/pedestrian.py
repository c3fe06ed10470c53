"""Best-of-K ADE / FDE, the pedestrian-forecasting field's metrics (Social-GAN, Trajectron++; ETH/UCY's 12 future
frames at 2.5 Hz).

For each K (K = 1, 6, 20 where the model has at least K modes; the K most probable modes are scored when the
forecast has more, as in :func:`~smartpretrain.metrics.forecasting.top_k_modes`):

* ``ADE_K`` = min over the K modes of ``mean_i ||pred_k[i] - gt[i]||`` over the prediction horizon;
* ``FDE_K`` = min over the K modes of ``||pred_k[F-1] - gt[F-1]||``, the final-step error.

The two minima are taken **independently** (the ADE-best and the FDE-best mode may differ), unlike AV2's minADE
(:mod:`smartpretrain.metrics.forecasting`), which is the ADE of the FDE-best mode. The field evaluates complete
trajectories (every future frame observed); for an agent with missing future steps the mean runs over its valid
steps and the "final" step is its last valid one, so complete trajectories get exactly the field's values. Agents
without a valid future step are not scored. Every value is the mean over the scored agents (float64).

:class:`PedestrianMetrics` accumulates both for several K, overall and per dataset group, in one float64 sum state
(``"sum"`` reduction: DDP and ``merge_state`` give the single-process result).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from smartpretrain.metrics.forecasting import _check_inputs, top_k_modes
from smartpretrain.metrics.grouped import GroupedSumMetric, mean_or_nan

#: the K values the field reports (20 samples: Social-GAN's "best of 20")
FIELD_KS: tuple[int, ...] = (1, 6, 20)
#: the metrics computed for each K, in output order (the key is ``f"{name}_{K}"``)
METRIC_NAMES: tuple[str, ...] = ("ADE", "FDE")


def field_ks(num_modes: int | None) -> tuple[int, ...]:
    """The field's K values a model with ``num_modes`` modes can be scored at (``FIELD_KS`` up to ``num_modes``;
    ``(1, 6)`` when unknown)."""
    if num_modes is None:
        return (1, 6)
    return tuple(k for k in FIELD_KS if k <= int(num_modes))


@dataclass
class BestOfKErrors:
    """Per-agent best-of-K errors (``[N]``; NaN where ``scored`` is False).

    Attributes:
        ade: min over the K modes of the mean error over the valid steps.
        fde: min over the K modes of the error at the last valid step.
        scored: the agent has a valid future step.
    """

    ade: Tensor
    fde: Tensor
    scored: Tensor


def best_of_k_errors(pred: Tensor, prob: Tensor, target: Tensor, valid: Tensor, k: int) -> BestOfKErrors:
    """Per-agent ``ADE_K`` / ``FDE_K`` (float64) with the definitions of the module doc.

    Args:
        pred: ``[N, M, F, 2]`` predicted trajectories; prob: ``[N, M]`` mode probabilities (rank the modes when
            k < M); target: ``[N, F, 2]`` ground truth (ignored at invalid steps, may be NaN there); valid:
            ``[N, F]``; k: modes scored, 1 <= k <= M.
    """
    _check_inputs(pred, prob, target, valid)
    valid = valid.bool()
    pred_k, _, _ = top_k_modes(pred.double(), prob.double(), k)
    zero = torch.zeros((), dtype=torch.float64, device=pred.device)
    dist = torch.where(valid[:, None], torch.linalg.norm(pred_k - target.double()[:, None], dim=-1), zero)
    scored = valid.any(dim=1)
    num_steps = valid.shape[1]
    last = num_steps - 1 - valid.flip(1).long().argmax(dim=1)  # last valid step (F-1 when none)
    num_valid = valid.sum(dim=1).clamp_min(1).double()
    ade = (dist.sum(dim=2) / num_valid[:, None]).min(dim=1).values
    fde = torch.take_along_dim(dist, last[:, None, None].expand(-1, dist.shape[1], 1), dim=2).squeeze(2)
    fde = fde.min(dim=1).values
    nan = torch.full_like(ade, float("nan"))
    return BestOfKErrors(ade=torch.where(scored, ade, nan), fde=torch.where(scored, fde, nan), scored=scored)


class PedestrianMetrics(GroupedSumMetric):
    """Best-of-K ``ADE_K`` / ``FDE_K`` for each K in ``ks``, overall and per dataset group.

    ``update(pred [N, M, F, 2], prob [N, M], target [N, F, 2], valid [N, F], group=None)``. ``compute()`` returns
    float64 scalars ``{"ADE_1": ..., "FDE_1": ..., "ADE_20": ..., "FDE_20": ..., "eth_ucy/ADE_1": ..., ...}``:
    the overall keys always (NaN while nothing is scored), a group's keys once it has a scored agent.

    Args:
        ks: the K values (distinct, positive, each at most the number of predicted modes).
        datasets: the groups of the per-group breakdown.
        kwargs: passed to :class:`torchmetrics.Metric`.

    State: ``totals [1 + len(datasets), 2 * len(ks) + 1]`` float64; columns ``2 i`` / ``2 i + 1`` the sums of
    ``ADE_{ks[i]}`` / ``FDE_{ks[i]}``, the last column the number of scored agents.
    """

    def __init__(self, ks: Sequence[int] = FIELD_KS, datasets: Sequence[str] = (), **kwargs: Any) -> None:
        ks = tuple(int(k) for k in ks)
        if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"ks must be distinct positive integers, got {ks}")
        super().__init__(num_columns=len(METRIC_NAMES) * len(ks) + 1, datasets=datasets, **kwargs)
        self.ks = ks

    @property
    def metric_names(self) -> list[str]:
        """The overall output keys, in output order."""
        return [f"{name}_{k}" for k in self.ks for name in METRIC_NAMES]

    def update(
        self,
        pred: Tensor,
        prob: Tensor,
        target: Tensor,
        valid: Tensor,
        group: str | Sequence[str] | None = None,
    ) -> None:
        """Accumulate a batch of N agents (agents without a valid future step are skipped)."""
        _check_inputs(pred, prob, target, valid)
        group_index = self._group_index(group, pred.shape[0])
        scored = valid.bool().any(dim=1)
        if not bool(scored.all()):
            pred, prob, target, valid = pred[scored], prob[scored], target[scored], valid[scored]
            if group_index is not None:
                group_index = group_index[scored.to(group_index.device)]
        if pred.shape[0] == 0:
            return
        columns = []
        for k in self.ks:
            err = best_of_k_errors(pred, prob, target, valid, k)
            columns += [err.ade, err.fde]
        columns.append(torch.ones_like(columns[0]))
        self._accumulate(torch.stack(columns, dim=1), group_index)

    def _row_values(self, row: Tensor, prefix: str, keep_empty: bool) -> dict[str, Tensor]:
        count = row[-1]
        if not keep_empty and not bool(count > 0):
            return {}
        return {f"{prefix}{name}": mean_or_nan(row[i], count) for i, name in enumerate(self.metric_names)}

    def counts(self) -> dict[str, int]:
        """Number of scored agents: ``{"all": n, group: n_g, ...}``."""
        out = {"all": int(self.totals[0, -1].item())}
        out.update({name: int(self.totals[1 + d, -1].item()) for d, name in enumerate(self.datasets)})
        return out


__all__ = ["FIELD_KS", "BestOfKErrors", "PedestrianMetrics", "best_of_k_errors", "field_ks"]
