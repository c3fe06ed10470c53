"""One progress bar per training stage, for drivers that show several stages in a row (the demo).

Lightning's own bar draws a bar per epoch and per validation pass and prints its metrics beneath; between the
stages of a driver that makes a screen of half-finished bars. :class:`StageProgress` draws a single bar over the
run's optimizer steps, with the epoch and the latest validation metrics as its postfix, and closes it when the run
ends. Use it with ``trainer.enable_progress_bar=false``::

    ./train.sh +trainer.enable_progress_bar=false \\
        +callbacks.stage_progress._target_=smartpretrain.runs.progress.StageProgress \\
        +callbacks.stage_progress.desc=fine-tuning
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from tqdm.auto import tqdm

__all__ = ["StageProgress"]


class StageProgress(Callback):
    """A tqdm bar over the optimizer steps of a fit (resumed runs start where they stopped).

    Args:
        desc: the bar's label.
        metrics: validation metrics shown after each validation (those logged; others are skipped).
    """

    def __init__(self, desc: str = "training", metrics: Sequence[str] = ("val_loss", "val_minFDE_6")) -> None:
        self.desc = desc
        self.metrics = tuple(metrics)
        self.bar: Any = None
        self.postfix: dict[str, str] = {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        total = trainer.estimated_stepping_batches
        self.bar = tqdm(
            total=int(total) if total != float("inf") else None,
            initial=int(trainer.global_step),
            desc=self.desc,
            unit="step",
            dynamic_ncols=True,
        )
        self._epoch(trainer)

    def _epoch(self, trainer: pl.Trainer) -> None:
        self.postfix["epoch"] = f"{trainer.current_epoch + 1}/{trainer.max_epochs}"
        self.bar.set_postfix(self.postfix, refresh=False)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self._epoch(trainer)

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if self.bar is not None and trainer.global_step > self.bar.n:
            self.bar.update(trainer.global_step - self.bar.n)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is None or trainer.sanity_checking:
            return
        for name in self.metrics:
            value = trainer.callback_metrics.get(name)
            if value is not None:
                self.postfix[name] = f"{float(value):.3f}"
        self.bar.set_postfix(self.postfix)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
