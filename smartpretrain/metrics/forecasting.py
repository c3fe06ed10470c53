"""Forecasting metrics with Argoverse 2 conventions: minADE_K, minFDE_K, MR_K and brier-minFDE_K.

Conventions (those of the av2 package and of QCNet's validation, see ``docs/method.md`` "Metrics"):

* **Top-K.** For K smaller than the number of predicted modes, the K most probable modes are kept (K = 1: the
  most probable one) and their probabilities are renormalised to sum to 1. With K equal to the number of modes
  every mode is kept, in its own order (the renormalisation is then a no-op up to rounding). K larger than the
  number of modes is an error, not a silent clamp.
* **Final step.** "Final" is the *last valid* future step of each agent; the endpoint error of a mode is the L2
  distance at that step. Agents with no valid future step are not scored at all.
* **Best mode.** ``k*`` = the mode with the smallest endpoint error (first one on ties), i.e. av2's FDE criterion.
  ``minFDE_K`` is its endpoint error; ``minADE_K`` is the mean L2 error of ``k*`` over the valid steps (**not** the
  minimum ADE over modes); ``MR_K`` is 1 when ``minFDE_K`` > the miss threshold (2.0 m);
  ``brier-minFDE_K`` = ``minFDE_K + (1 - p_{k*})²`` with the (renormalised) probability of ``k*``.

Every value is averaged over the scored agents. Errors are computed and accumulated in float64.

:class:`ForecastingMetrics` computes all four metrics for several K at once, overall and per dataset (the
breakdown fine-tuning and evaluation use is the registry's :func:`~smartpretrain.data.registry.metric_datasets`,
each agent's group :func:`agent_datasets`); its only state is one float64 tensor of sums (reduced with ``"sum"``),
so it synchronises correctly under DDP and supports ``merge_state``. :class:`MinADE`, :class:`MinFDE`,
:class:`MissRate` and :class:`BrierMinFDE` are single-value variants. :func:`forecast_errors` gives the per-agent
values behind them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from smartpretrain.data.registry import metric_group
from smartpretrain.data.taxonomy import AgentRole
from smartpretrain.metrics.grouped import GroupedSumMetric

#: the metrics computed for each K, in output order (the output key is ``f"{name}_{K}"``)
METRIC_NAMES: tuple[str, ...] = ("minADE", "minFDE", "MR", "brier-minFDE")

#: default miss threshold of MR (metres), as in AV2
MISS_THRESHOLD: float = 2.0


# ----------------------------------------------------------------------------------------------- agent selection


def select_agents(eval_targets: Any, scope: str = "focal") -> Tensor:
    """Boolean ``[A]`` mask of the agents a metric scores.

    Args:
        eval_targets: an :class:`~smartpretrain.backbones.base.EvalTargets` (only ``role`` is read).
        scope: ``"focal"``: role FOCAL only (AV2's validation convention); ``"scored"``: FOCAL or SCORED.

    Agents without a valid future step are *not* removed here; the metrics skip them.
    """
    role = eval_targets.role
    if scope == "focal":
        return role == int(AgentRole.FOCAL)
    if scope == "scored":
        return (role == int(AgentRole.FOCAL)) | (role == int(AgentRole.SCORED))
    raise ValueError(f"unknown agent scope {scope!r}: expected 'focal' or 'scored'")


def agent_datasets(eval_targets: Any, mask: Tensor | None = None) -> list[str]:
    """The per-dataset metrics group of each agent (of the agents in ``mask`` if given): the ``group`` argument of
    :class:`ForecastingMetrics` built with ``datasets=metric_datasets()``.

    An agent's group is its scene's dataset's :func:`~smartpretrain.data.registry.metric_group` (the dataset's
    name for every dataset registered so far); a dataset the registry does not know is a ``ValueError``.
    """
    scene_index = eval_targets.scene_index if mask is None else eval_targets.scene_index[mask]
    groups = {name: metric_group(name) for name in set(eval_targets.dataset)}
    return [groups[eval_targets.dataset[int(i)]] for i in scene_index.tolist()]


# ----------------------------------------------------------------------------------------------- per-agent values


def top_k_modes(pred: Tensor, prob: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """The K modes scored by the K metrics.

    Args:
        pred: ``[N, M, F, 2]`` trajectories of M modes.
        prob: ``[N, M]`` mode probabilities.
        k: number of modes to keep, 1 <= k <= M.

    Returns:
        ``(pred_k [N, k, F, 2], prob_k [N, k], index [N, k])``: for k < M the k most probable modes in order of
        decreasing probability, for k == M all modes in their own order; ``prob_k`` renormalised to sum to 1;
        ``index`` the kept modes' indices among the M.
    """
    num_modes = pred.shape[1]
    if not 1 <= k <= num_modes:
        raise ValueError(f"cannot score K={k} modes: the forecast has {num_modes} modes")
    if k == num_modes:
        index = torch.arange(num_modes, device=pred.device).expand(pred.shape[0], num_modes)
        pred_k, prob_k = pred, prob
    else:
        index = torch.topk(prob, k, dim=1, largest=True, sorted=True).indices
        pred_k = torch.take_along_dim(pred, index[:, :, None, None], dim=1)
        prob_k = torch.take_along_dim(prob, index, dim=1)
    total = prob_k.sum(dim=1, keepdim=True)
    prob_k = prob_k / total.clamp_min(torch.finfo(prob_k.dtype).tiny)
    return pred_k, prob_k, index


@dataclass
class ForecastErrors:
    """Per-agent errors of the FDE-best mode among the K scored modes (all ``[N]``).

    Agents with no valid future step have ``scored == False``, NaN errors, ``missed == False`` and
    ``best_mode == -1``.

    Attributes:
        ade: mean L2 error of the best mode over the valid steps (minADE_K).
        fde: L2 error of the best mode at the last valid step (minFDE_K).
        missed: ``fde > miss_threshold`` (MR_K).
        brier_fde: ``fde + (1 - p_best)²`` (brier-minFDE_K).
        best_mode: index of the best mode among the original M modes.
        scored: whether the agent has a valid future step.
    """

    ade: Tensor
    fde: Tensor
    missed: Tensor
    brier_fde: Tensor
    best_mode: Tensor
    scored: Tensor


def _check_inputs(pred: Tensor, prob: Tensor, target: Tensor, valid: Tensor) -> None:
    if pred.dim() != 4 or pred.shape[-1] != 2:
        raise ValueError(f"pred must be [N, K, F, 2], got {tuple(pred.shape)}")
    n, m, f, _ = pred.shape
    if tuple(prob.shape) != (n, m):
        raise ValueError(f"prob must be [N, K] = {(n, m)}, got {tuple(prob.shape)}")
    if tuple(target.shape) != (n, f, 2):
        raise ValueError(f"target must be [N, F, 2] = {(n, f, 2)}, got {tuple(target.shape)}")
    if tuple(valid.shape) != (n, f):
        raise ValueError(f"valid must be [N, F] = {(n, f)}, got {tuple(valid.shape)}")


def forecast_errors(
    pred: Tensor, prob: Tensor, target: Tensor, valid: Tensor, k: int, miss_threshold: float = MISS_THRESHOLD
) -> ForecastErrors:
    """Per-agent minADE_K / minFDE_K / miss / brier-minFDE_K (float64), with the conventions of the module doc.

    Args:
        pred: ``[N, M, F, 2]`` predicted trajectories.
        prob: ``[N, M]`` mode probabilities (softmax of the logits).
        target: ``[N, F, 2]`` ground truth, same frame as ``pred``; values at invalid steps are ignored (may be NaN).
        valid: ``[N, F]`` valid future steps.
        k: number of modes scored (top-k by probability).
        miss_threshold: endpoint error above which the prediction is a miss (metres).
    """
    _check_inputs(pred, prob, target, valid)
    valid = valid.bool()
    pred_k, prob_k, index = top_k_modes(pred.double(), prob.double(), k)
    num_steps = valid.shape[1]
    dist = torch.linalg.norm(pred_k - target.double()[:, None], dim=-1)  # [N, k, F]
    dist = torch.where(valid[:, None], dist, torch.zeros((), dtype=dist.dtype, device=dist.device))
    scored = valid.any(dim=1)
    last = num_steps - 1 - valid.flip(1).long().argmax(dim=1)  # last valid step (F-1 when none)
    endpoint = torch.take_along_dim(dist, last[:, None, None].expand(-1, k, 1), dim=2).squeeze(2)  # [N, k]
    best = endpoint.argmin(dim=1, keepdim=True)  # [N, 1]
    fde = torch.take_along_dim(endpoint, best, dim=1).squeeze(1)
    num_valid = valid.sum(dim=1).clamp_min(1).to(dist.dtype)
    ade = torch.take_along_dim(dist.sum(dim=2), best, dim=1).squeeze(1) / num_valid
    p_best = torch.take_along_dim(prob_k, best, dim=1).squeeze(1)
    brier_fde = fde + (1.0 - p_best) ** 2
    best_mode = torch.take_along_dim(index, best, dim=1).squeeze(1)
    nan = torch.full_like(fde, float("nan"))
    return ForecastErrors(
        ade=torch.where(scored, ade, nan),
        fde=torch.where(scored, fde, nan),
        missed=scored & (fde > miss_threshold),
        brier_fde=torch.where(scored, brier_fde, nan),
        best_mode=torch.where(scored, best_mode, torch.full_like(best_mode, -1)),
        scored=scored,
    )


# ----------------------------------------------------------------------------------------------- torchmetrics


class ForecastingMetrics(GroupedSumMetric):
    """minADE / minFDE / MR / brier-minFDE for each K in ``ks``, overall and per dataset.

    ``update(pred [N, M, F, 2], prob [N, M], target [N, F, 2], valid [N, F], group=None)``; ``group`` is one
    dataset name per agent (or one name for all, or ``None``). ``compute()`` returns a dict of float64 scalars::

        {"minADE_1": ..., "minFDE_1": ..., "MR_1": ..., "brier-minFDE_1": ..., "minADE_6": ..., ...,
         "av2/minADE_1": ..., ...}

    The overall keys are always present (NaN before any agent was scored); a dataset's keys
    (``f"{dataset}/{metric}_{K}"``) only once that dataset has scored agents (the counts are synchronised
    across processes before ``compute``, so every rank returns the same keys).

    Args:
        ks: the K values (distinct, positive; each must not exceed the number of predicted modes).
        miss_threshold: MR threshold in metres.
        datasets: the dataset names of the per-dataset breakdown, fixed at construction (states are tensors). With
            none, ``group`` is ignored; otherwise a name outside the list is an error.
        kwargs: passed to :class:`torchmetrics.Metric`.

    State: ``totals`` ``[1 + len(datasets), 4 * len(ks) + 1]`` float64 — row 0 overall, row 1 + d dataset d;
    column ``4 * i + j`` the sum of metric ``METRIC_NAMES[j]`` at ``ks[i]``, last column the number of agents.
    """

    def __init__(
        self,
        ks: Sequence[int] = (1, 6),
        miss_threshold: float = MISS_THRESHOLD,
        datasets: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        ks = tuple(int(k) for k in ks)
        if not ks or any(k < 1 for k in ks) or len(set(ks)) != len(ks):
            raise ValueError(f"ks must be distinct positive integers, got {ks}")
        super().__init__(num_columns=len(METRIC_NAMES) * len(ks) + 1, datasets=datasets, **kwargs)
        self.ks = ks
        self.miss_threshold = float(miss_threshold)

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
        valid = valid.bool()
        scored = valid.any(dim=1)
        if not bool(scored.all()):
            pred, prob, target, valid = pred[scored], prob[scored], target[scored], valid[scored]
            if group_index is not None:
                group_index = group_index[scored.to(group_index.device)]
        if pred.shape[0] == 0:
            return
        columns = []
        for k in self.ks:
            err = forecast_errors(pred, prob, target, valid, k, self.miss_threshold)
            columns += [err.ade, err.fde, err.missed.double(), err.brier_fde]
        columns.append(torch.ones_like(columns[0]))
        self._accumulate(torch.stack(columns, dim=1), group_index)  # [n, 4 * len(ks) + 1]

    def _row(self, row: Tensor, prefix: str = "") -> dict[str, Tensor]:
        count = row[-1]
        means = row[:-1] / count if bool(count > 0) else torch.full_like(row[:-1], float("nan"))
        return {f"{prefix}{name}": means[i] for i, name in enumerate(self.metric_names)}

    def compute(self) -> dict[str, Tensor]:
        out = self._row(self.totals[0])
        for d, name in enumerate(self.datasets):
            if bool(self.totals[1 + d, -1] > 0):
                out.update(self._row(self.totals[1 + d], prefix=f"{name}/"))
        return out

    def counts(self) -> dict[str, int]:
        """Number of scored agents: ``{"all": n, dataset: n_d, ...}``."""
        out = {"all": int(self.totals[0, -1].item())}
        out.update({name: int(self.totals[1 + d, -1].item()) for d, name in enumerate(self.datasets)})
        return out


class _SingleForecastingMetric(ForecastingMetrics):
    """One of the four metrics at one K, overall only; ``compute()`` returns a scalar tensor."""

    _name: ClassVar[str]

    def __init__(self, k: int = 6, miss_threshold: float = MISS_THRESHOLD, **kwargs: Any) -> None:
        super().__init__(ks=(k,), miss_threshold=miss_threshold, datasets=(), **kwargs)

    def compute(self) -> Tensor:  # type: ignore[override]
        return super().compute()[f"{self._name}_{self.ks[0]}"]


class MinADE(_SingleForecastingMetric):
    """minADE_K: mean L2 error over the valid steps of the FDE-best of the K most probable modes."""

    _name = "minADE"


class MinFDE(_SingleForecastingMetric):
    """minFDE_K: smallest L2 error at the last valid step among the K most probable modes."""

    _name = "minFDE"


class MissRate(_SingleForecastingMetric):
    """MR_K: fraction of agents whose minFDE_K exceeds ``threshold`` metres."""

    _name = "MR"

    def __init__(self, k: int = 6, threshold: float = MISS_THRESHOLD, **kwargs: Any) -> None:
        super().__init__(k=k, miss_threshold=threshold, **kwargs)


class BrierMinFDE(_SingleForecastingMetric):
    """brier-minFDE_K: minFDE_K + (1 - p_best)², p_best the renormalised probability of the FDE-best mode."""

    _name = "brier-minFDE"
