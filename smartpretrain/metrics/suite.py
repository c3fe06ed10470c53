"""The validation metrics of fine-tuning and evaluation: AV2's for every agent, plus each dataset's own convention.

:class:`ForecastMetricSuite` holds

* the AV2-convention :class:`~smartpretrain.metrics.forecasting.ForecastingMetrics` for every scored agent, with
  its keys unchanged: ``minADE_6``, ``MR_1``, ... overall and ``{group}/minFDE_6`` per dataset group;
* for the groups whose datasets have :attr:`~smartpretrain.data.registry.DatasetInfo.metric_convention`
  ``WOMD``, a :class:`~smartpretrain.metrics.womd.WaymoMotionMetrics` over their agents, reported as
  ``{group}/minADE@3s``, ``{group}/minFDE@3s``, ``{group}/MR@3s`` (likewise ``@5s``, ``@8s``);
* for the ``PEDESTRIAN`` groups, a :class:`~smartpretrain.metrics.pedestrian.PedestrianMetrics`, reported as
  ``{group}/ADE_{K}`` and ``{group}/FDE_{K}`` for K = 1, 6, 20 up to the model's number of modes.

One flat dict comes out of :meth:`ForecastMetricSuite.compute`. The keys cannot collide: the convention metrics
are named differently from AV2's (``minFDE@8s`` and ``ADE_20`` against ``minFDE_6`` and ``minADE_6``), and they
appear **per group only** (the overall, unprefixed keys are AV2's). A group's convention key appears once the group
has an agent scored for it, so every value is finite. Fine-tuning logs them with the ``val_`` prefix
(``val_womd/MR@8s``, ``val_eth_ucy/FDE_20``); ``docs/metrics.md`` lists the conventions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from smartpretrain.data.registry import DATASETS, MetricConvention
from smartpretrain.metrics.forecasting import MISS_THRESHOLD, ForecastingMetrics, agent_datasets
from smartpretrain.metrics.pedestrian import PedestrianMetrics, field_ks
from smartpretrain.metrics.womd import CHALLENGE_HORIZONS, WaymoMotionMetrics, horizon_step


def group_conventions(groups: Sequence[str]) -> dict[str, MetricConvention]:
    """The metric convention of each group (from the registered datasets reporting under it; AV2 for a group no
    registered dataset reports under).

    Raises:
        ValueError: datasets of different conventions share a group.
    """
    out: dict[str, MetricConvention] = {}
    for group in groups:
        found = {info.metric_convention for info in DATASETS.values() if info.metric_group == group}
        if len(found) > 1:
            raise ValueError(f"metric group {group!r} has datasets of different conventions: {sorted(found)}")
        out[group] = found.pop() if found else MetricConvention.AV2
    return out


def _group_dt(groups: Sequence[str]) -> float:
    """The one ``dt`` of the registered datasets of ``groups`` (their timelines must agree)."""
    dts = {info.timeline.dt for info in DATASETS.values() if info.metric_group in groups and info.timeline is not None}
    if len(dts) != 1:
        raise ValueError(f"metric groups {tuple(groups)} need one registered timeline step, found {sorted(dts)}")
    return dts.pop()


def estimate_current_speed(target: Tensor, valid: Tensor, dt: float) -> Tensor:
    """``[N]`` speed at the current step estimated from the first valid future position, for backbones whose
    :class:`~smartpretrain.backbones.base.EvalTargets` carry no speed: ``||target[i0]|| / ((i0 + 1) dt)``, ``target``
    in the agent's current-step frame (origin at its current position), ``i0`` its first valid step (0 without one).
    """
    valid = valid.bool()
    first = valid.long().argmax(dim=1)
    position = torch.take_along_dim(target.double(), first[:, None, None].expand(-1, 1, 2), dim=1).squeeze(1)
    return torch.linalg.norm(torch.nan_to_num(position), dim=-1) / ((first + 1).double() * dt)


class ForecastMetricSuite(nn.Module):
    """AV2 metrics for every agent plus the dataset-specific ones (see the module doc for the keys).

    Args:
        ks: the K values of the AV2 metrics.
        datasets: the groups of the per-dataset breakdown (:func:`~smartpretrain.data.registry.metric_datasets`
            for all); each group's convention comes from the registry (:func:`group_conventions`).
        num_modes: the model's number of modes: the pedestrian metrics use K = 1, 6, 20 up to it (1, 6 when
            None); Waymo's use up to 6 modes.
        num_future_steps: the model's number of future steps: Waymo horizons beyond it are left out (none when
            None); with no horizon left, the Waymo metrics are too.
        miss_threshold: the AV2 MR threshold (metres).

    It is an ``nn.Module`` of torchmetrics metrics: ``.to(device)`` moves their states, each synchronises under
    DDP in ``compute`` (every rank must call it), and ``reset`` clears all of them.
    """

    def __init__(
        self,
        ks: Sequence[int] = (1, 6),
        datasets: Sequence[str] = (),
        num_modes: int | None = None,
        num_future_steps: int | None = None,
        miss_threshold: float = MISS_THRESHOLD,
    ) -> None:
        super().__init__()
        groups = tuple(datasets)
        self.av2 = ForecastingMetrics(ks=tuple(ks), miss_threshold=miss_threshold, datasets=groups)
        conventions = group_conventions(groups)
        self.womd_groups = tuple(g for g in groups if conventions[g] is MetricConvention.WOMD)
        self.pedestrian_groups = tuple(g for g in groups if conventions[g] is MetricConvention.PEDESTRIAN)
        self.womd: WaymoMotionMetrics | None = None
        self.pedestrian: PedestrianMetrics | None = None
        if self.womd_groups:
            dt = _group_dt(self.womd_groups)
            horizons = tuple(
                h
                for h in CHALLENGE_HORIZONS
                if num_future_steps is None or horizon_step(h.seconds, dt) < int(num_future_steps)
            )
            if horizons:
                self.womd = WaymoMotionMetrics(dt=dt, horizons=horizons, datasets=self.womd_groups)
                self.womd_dt = dt
            else:
                self.womd_groups = ()
        ped_ks = field_ks(num_modes)
        if self.pedestrian_groups and ped_ks:
            self.pedestrian = PedestrianMetrics(ks=ped_ks, datasets=self.pedestrian_groups)
        else:
            self.pedestrian_groups = ()

    @property
    def datasets(self) -> tuple[str, ...]:
        """The groups of the per-dataset breakdown (those of the AV2 metrics)."""
        return self.av2.datasets

    def update(self, pred: Tensor, prob: Tensor, targets: Any, mask: Tensor) -> None:
        """Accumulate the agents ``mask`` selects.

        Args:
            pred: ``[A, M, F, 2]`` the forecast of every agent row (:attr:`Forecast.loc`).
            prob: ``[A, M]`` mode probabilities.
            targets: the batch's :class:`~smartpretrain.backbones.base.EvalTargets` (same rows).
            mask: ``[A] bool`` the agents to score (typically selected by role and with a valid future step).
        """
        groups = agent_datasets(targets, mask)
        loc = pred[mask].float()
        prob = prob[mask]
        target = targets.target[mask].float()
        valid = targets.valid[mask]
        self.av2.update(loc, prob, target, valid, groups)
        if self.womd is not None:
            rows = self._rows(groups, self.womd_groups, loc.device)
            heading = None if targets.heading is None else targets.heading[mask][rows]
            speed = (
                estimate_current_speed(target[rows], valid[rows], self.womd_dt)
                if targets.speed is None
                else targets.speed[mask][rows]
            )
            names = [g for g in groups if g in self.womd_groups]
            self.womd.update(loc[rows], prob[rows], target[rows], valid[rows], speed, heading, names)
        if self.pedestrian is not None:
            rows = self._rows(groups, self.pedestrian_groups, loc.device)
            names = [g for g in groups if g in self.pedestrian_groups]
            self.pedestrian.update(loc[rows], prob[rows], target[rows], valid[rows], names)

    @staticmethod
    def _rows(groups: list[str], wanted: tuple[str, ...], device: torch.device) -> Tensor:
        return torch.tensor([g in wanted for g in groups], dtype=torch.bool, device=device)

    def compute(self) -> dict[str, Tensor]:
        """One flat dict: AV2's keys as :class:`ForecastingMetrics` gives them, then the convention metrics'
        per-group keys."""
        out = dict(self.av2.compute())
        for metric in (self.womd, self.pedestrian):
            if metric is not None:
                out.update({key: value for key, value in metric.compute().items() if "/" in key})
        return out

    def reset(self) -> None:
        for metric in (self.av2, self.womd, self.pedestrian):
            if metric is not None:
                metric.reset()


__all__ = ["ForecastMetricSuite", "estimate_current_speed", "group_conventions"]
