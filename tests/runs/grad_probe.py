"""A test callback that records, per optimizer step, the training loss and the (DDP-synchronised) gradient of every
parameter, and the parameters at the end; each rank writes ``{out}/rank{r}.pt`` (tensors only: loads with
``weights_only=True``). Added to a run with ``+callbacks.grad_probe._target_=tests.runs.grad_probe.GradientRecorder
+callbacks.grad_probe.out=<folder>``.

``hold_parameters=true`` zeroes the gradients once recorded, so that (with ``weight_decay=0``) AdamW leaves the
parameters at their initial values: every step's gradient is then taken at the same point, whatever the order in
which the scenes came."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor


def flat_gradient(module: torch.nn.Module) -> Tensor:
    """Every trainable parameter's gradient, flattened in ``named_parameters`` order (a missing one as zeros)."""
    parts = [
        (p.grad if p.grad is not None else torch.zeros_like(p)).detach().double().flatten()
        for _, p in module.named_parameters()
        if p.requires_grad
    ]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


class GradientRecorder(Callback):
    """Losses, gradients and final parameters of one rank (see the module docstring)."""

    def __init__(self, out: str, hold_parameters: bool = False) -> None:
        self.out = Path(out)
        self.hold_parameters = hold_parameters
        self.losses: list[Tensor] = []
        self.gradients: list[Tensor] = []

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        self.gradients.append(flat_gradient(pl_module))
        if self.hold_parameters:
            for p in pl_module.parameters():
                if p.grad is not None:
                    p.grad.zero_()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self.losses.append(loss.detach().double().reshape(()))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        params = torch.cat([p.detach().double().flatten() for p in pl_module.parameters() if p.requires_grad])
        self.out.mkdir(parents=True, exist_ok=True)
        record = {
            "losses": torch.stack(self.losses) if self.losses else torch.zeros(0, dtype=torch.float64),
            "gradients": torch.stack(self.gradients) if self.gradients else torch.zeros(0, 0, dtype=torch.float64),
            "parameters": params,
            "world_size": torch.tensor(trainer.world_size),
            "rank": torch.tensor(trainer.global_rank),
        }
        torch.save(record, self.out / f"rank{trainer.global_rank}.pt")
