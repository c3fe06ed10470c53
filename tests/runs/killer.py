"""A callback that kills its own process with SIGKILL (no clean-up, like ``kill -9``) at a chosen step."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class KillAtStep(Callback):
    """SIGKILL this process at the start of the training batch that would make ``global_step == step + 1``, i.e.
    after ``step`` optimizer steps (and their checkpoints) are done."""

    def __init__(self, step: int) -> None:
        self.step = int(step)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)
