"""A torchmetrics base for metrics kept as sums, overall and per dataset group (the AV2-convention
:class:`~smartpretrain.metrics.forecasting.ForecastingMetrics`, the Waymo and the pedestrian metrics).

The only state is one float64 tensor ``totals [1 + G, C]``: row 0 the sums over every agent, row ``1 + d`` those
of group ``datasets[d]``; the C columns are the subclass's (sums and counts). It is reduced with ``"sum"``, so
DDP synchronisation and :meth:`torchmetrics.Metric.merge_state` give exactly the single-process totals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torchmetrics import Metric


class GroupedSumMetric(Metric):
    """Sums of per-agent values, overall and per dataset group.

    Subclasses compute ``[n, C]`` per-agent values in ``update`` and hand them to :meth:`_accumulate`, and turn
    one row of totals into output values in :meth:`_row_values`.

    Args:
        num_columns: C.
        datasets: the group names of the per-group breakdown, fixed at construction (distinct, no ``'/'``). With
            none, ``group`` is ignored; otherwise a name outside the list is an error.
        kwargs: passed to :class:`torchmetrics.Metric`.
    """

    is_differentiable: ClassVar[bool] = False
    higher_is_better: ClassVar[bool] = False
    full_state_update: ClassVar[bool] = False

    totals: Tensor

    def __init__(self, num_columns: int, datasets: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        datasets = tuple(str(d) for d in datasets)
        if len(set(datasets)) != len(datasets) or any("/" in d or not d for d in datasets):
            raise ValueError(f"dataset names must be distinct, non-empty and contain no '/', got {datasets}")
        self.datasets = datasets
        self._dataset_index = {name: i for i, name in enumerate(datasets)}
        self.add_state(
            "totals", default=torch.zeros(1 + len(datasets), num_columns, dtype=torch.float64), dist_reduce_fx="sum"
        )

    def _group_index(self, group: str | Sequence[str] | None, n: int) -> Tensor | None:
        """``[n] long`` row offsets (into ``datasets``) of the agents' groups; None without a breakdown."""
        if group is None or not self.datasets:
            return None
        names = [group] * n if isinstance(group, str) else list(group)
        if len(names) != n:
            raise ValueError(f"group has {len(names)} names for {n} agents")
        try:
            index = [self._dataset_index[name] for name in names]
        except KeyError as err:
            raise ValueError(f"dataset {err.args[0]!r} is not one of the metric's datasets {self.datasets}") from None
        return torch.tensor(index, dtype=torch.long, device=self.totals.device)

    def _accumulate(self, values: Tensor, group_index: Tensor | None) -> None:
        """Add ``[n, C]`` per-agent values to the overall row and to each agent's group row."""
        values = values.to(device=self.totals.device, dtype=torch.float64)
        self.totals[0] += values.sum(dim=0)
        if group_index is not None:
            self.totals[1:].index_add_(0, group_index.to(self.totals.device), values)

    def _row_values(self, row: Tensor, prefix: str, keep_empty: bool) -> dict[str, Tensor]:
        """The output values of one row of totals, keys prefixed with ``prefix``; with ``keep_empty`` False, the
        values without a scored agent are left out (with it, they are NaN)."""
        raise NotImplementedError

    def compute(self) -> dict[str, Tensor]:
        """Overall values (every key, NaN while nothing is scored) and, per group, the values the group scored."""
        out = self._row_values(self.totals[0], "", keep_empty=True)
        for d, name in enumerate(self.datasets):
            out.update(self._row_values(self.totals[1 + d], f"{name}/", keep_empty=False))
        return out


def mean_or_nan(total: Tensor, count: Tensor) -> Tensor:
    """``total / count``, NaN where ``count`` is 0."""
    return torch.where(count > 0, total / count.clamp_min(1.0), torch.full_like(total, float("nan")))


__all__ = ["GroupedSumMetric", "mean_or_nan"]
