"""Supervised forecasting fine-tuning of any backbone (the backbone's own loss), with AV2-convention metrics (plus
Waymo's and the pedestrian field's for the datasets of those conventions, :mod:`smartpretrain.metrics.suite`).

The task knows the :class:`~smartpretrain.backbones.base.Backbone` interface only: ``encode`` -> ``forecast``
-> ``loss`` for training, ``eval_targets`` + metrics for validation. Initialisation from a checkpoint (plain
state_dict, Lightning, or a SmartPretrain SSL checkpoint once that transfer exists) happens before training
through :func:`smartpretrain.io.checkpoints.load_into`, which reports loaded / missing / unexpected keys.

Mixed precision (``trainer.precision=bf16-mixed``): the backbone's forward runs at the step's precision; its
forecast is upcast to float32 and the backbone's loss (and the validation metrics) computed from it with autocast
off (:mod:`smartpretrain.tasks.precision`), so the losses are float32 whatever the precision.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from smartpretrain.backbones.base import Backbone, Forecast, describe_batch
from smartpretrain.data.registry import metric_datasets
from smartpretrain.metrics.forecasting import select_agents
from smartpretrain.metrics.suite import ForecastMetricSuite
from smartpretrain.tasks.optim import decay_groups
from smartpretrain.tasks.precision import float32_region

log = logging.getLogger(__name__)


class FinetuneTask(pl.LightningModule):
    """Fine-tune / train a backbone for forecasting.

    Args:
        backbone: the model (its state_dict keys are the backbone's own: checkpoints load without prefixes
            through :meth:`backbone_state_dict`).
        lr, weight_decay: AdamW; weight decay only on weight matrices (see ``decay_groups``).
        max_epochs: cosine schedule length (CosineAnnealingLR, eta_min = ``min_lr``, stepped per epoch).
        eval_scope: ``"focal"`` (AV2 convention) or ``"scored"`` agents in validation metrics.
        metric_ks: the K values of minADE/minFDE/MR/brier-minFDE.
        datasets: the groups of the per-dataset metric breakdown; None: every registered dataset's
            (:func:`~smartpretrain.data.registry.metric_datasets`).
    """

    def __init__(
        self,
        backbone: Backbone,
        lr: float = 5e-4,
        weight_decay: float = 1e-4,
        max_epochs: int = 64,
        min_lr: float = 0.0,
        eval_scope: str = "focal",
        metric_ks: tuple[int, ...] = (1, 6),
        datasets: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.lr, self.weight_decay, self.max_epochs, self.min_lr = lr, weight_decay, max_epochs, min_lr
        self.eval_scope = eval_scope
        groups = metric_datasets() if datasets is None else tuple(datasets)
        # AV2 metrics for every agent, plus each dataset's own convention (Waymo's, the pedestrian field's)
        self.val_metrics = ForecastMetricSuite(
            ks=tuple(metric_ks),
            datasets=groups,
            num_modes=getattr(backbone, "num_modes", None),
            num_future_steps=getattr(backbone, "num_future_steps", None),
        )
        self.save_hyperparameters(ignore=["backbone"])

    def forward(self, batch: Any) -> Forecast:
        return self.backbone(batch)

    def _batch_size(self, batch: Any) -> int:
        return describe_batch(batch).num_scenes

    def forecast_and_losses(self, batch: Any) -> tuple[Forecast, dict[str, Tensor]]:
        """The backbone's forecast (at the step's precision, then upcast to float32) and its losses, computed in
        float32 with autocast off."""
        forecast = self.backbone(batch)
        with float32_region(self.device) as to_float32:
            forecast = to_float32(forecast)
            losses = self.backbone.loss(batch, forecast)
        return forecast, losses

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        _, losses = self.forecast_and_losses(batch)
        bs = self._batch_size(batch)
        for name, value in losses.items():
            self.log(f"train_{name}", value, prog_bar=name == "loss", batch_size=bs, sync_dist=False)
        return losses["loss"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        forecast, losses = self.forecast_and_losses(batch)
        bs = self._batch_size(batch)
        self.log("val_loss", losses["loss"], batch_size=bs, sync_dist=True, prog_bar=True)
        with float32_region(self.device):  # the metrics on the upcast forecast, as the loss
            self.update_metrics(self.val_metrics, batch, forecast)

    def update_metrics(self, metrics: ForecastMetricSuite, batch: Any, forecast: Forecast) -> None:
        targets = self.backbone.eval_targets(batch)
        mask = select_agents(targets, self.eval_scope) & targets.valid.any(dim=-1)
        if not bool(mask.any()):
            return
        metrics.update(forecast.loc, torch.softmax(forecast.pi.float(), dim=-1), targets, mask)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        for name, value in values.items():
            self.log(f"val_{name}", value, prog_bar=name in ("minFDE_6", "minADE_6"), sync_dist=False)
        self.val_metrics.reset()

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(decay_groups(self.backbone, self.weight_decay), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.max_epochs, eta_min=self.min_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
