"""Exact resume: a run killed at any step and resumed from its last checkpoint ends with the same numbers.

What a checkpoint must hold beyond Lightning's own (weights, optimizer, schedulers, loop counters):

* **the data position**: the train loader's :class:`~smartpretrain.data.batching.EpochBatchSampler` knows its
  epoch and how many of its batches were trained; Lightning saves it (the loader has ``state_dict``) and
  restores it before iterating, and the sampler skips the trained batches. Scene transforms are seeded per
  scene (:class:`~smartpretrain.data.batching.SampleKey`), so nothing per DataLoader worker needs saving;
* **the training RNG** of every rank (torch CPU and CUDA, numpy, ``random``): :class:`ExactResume` captures it
  when a checkpoint is written and puts it back just before the first batch after a mid-epoch restart. At
  every epoch start the generators are re-seeded from ``(seed, epoch)``, so a restart at an epoch boundary needs
  no state, and validation (which may draw random numbers) cannot shift the next epoch.

Periodic checkpoints (:func:`periodic_checkpoints`) write ``last.ckpt`` every N optimizer steps and/or every M
minutes, so a kill loses at most that much work — also in the first epoch. Both callbacks are part of every
training run through ``configs/callbacks/default.yaml`` (``exact_resume``, ``periodic_checkpoints``).
"""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from smartpretrain.data.batching import EpochBatchSampler, sample_seed

__all__ = ["ExactResume", "capture_rng", "periodic_checkpoints", "restore_rng", "seed_all"]

_EPOCH_STREAM = -2  # sample_seed(seed, epoch, -2): the per-epoch re-seed (scene indices are >= 0)


def capture_rng() -> dict[str, Any]:
    """This process's generator states as plain tensors / lists (weights-only loadable)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.random.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": _to_lists(random.getstate()),
    }  # fmt: skip
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put back what :func:`capture_rng` returned."""
    torch.random.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def seed_all(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and ``random`` from one integer."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _train_batch_samplers(trainer: pl.Trainer) -> list[EpochBatchSampler]:
    loaders = trainer.train_dataloader
    if loaders is None:
        return []
    flat = loaders if isinstance(loaders, (list, tuple)) else [loaders]
    if isinstance(loaders, dict):
        flat = list(loaders.values())
    return [dl.batch_sampler for dl in flat if isinstance(getattr(dl, "batch_sampler", None), EpochBatchSampler)]


class ExactResume(Callback):
    """Saves and restores the RNG of every rank and the data position (see the module docstring).

    Args:
        seed: the run's seed (the per-epoch re-seed is drawn from it).
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self._pending: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "ExactResume"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed_all(sample_seed(self.seed, trainer.current_epoch, _EPOCH_STREAM) + trainer.global_rank)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        pending, self._pending = self._pending, None
        if pending is None:
            return
        # only a restart in the middle of the epoch the state was captured in continues that RNG stream
        if int(pending["epoch"]) == trainer.current_epoch and int(pending["batches_done"]) == batch_idx:
            ranks = pending["rng"]
            restore_rng(ranks[min(trainer.global_rank, len(ranks) - 1)])

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # runs before ModelCheckpoint's hook (Lightning calls checkpoint callbacks last)
        for sampler in _train_batch_samplers(trainer):
            sampler.batches_done = batch_idx + 1

    def state_dict(self) -> dict[str, Any]:
        trainer = getattr(self, "_trainer", None)
        rng = capture_rng()
        ranks = [rng]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            ranks = [None] * dist.get_world_size()
            dist.all_gather_object(ranks, rng)  # every rank writes the checkpoint's state; rank 0 saves it
        samplers = _train_batch_samplers(trainer) if trainer is not None else []
        done = samplers[0].batches_done if samplers else 0
        epoch = trainer.current_epoch if trainer is not None else 0
        return {"rng": ranks, "epoch": int(epoch), "batches_done": int(done)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = dict(state_dict)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer


def periodic_checkpoints(
    dirpath: Path, every_n_train_steps: int | None = None, every_n_minutes: float | None = None
) -> list[ModelCheckpoint]:
    """ModelCheckpoint callbacks that only refresh ``dirpath/last.ckpt``, by steps and / or wall time (all of a
    run's checkpoint callbacks write the one ``last.ckpt``: no ``last-v1.ckpt`` versions)."""
    out: list[ModelCheckpoint] = []
    if every_n_train_steps:
        out.append(
            ModelCheckpoint(
                dirpath=dirpath,
                save_top_k=0,
                save_last=True,
                every_n_train_steps=int(every_n_train_steps),
                enable_version_counter=False,
            )
        )
    if every_n_minutes:
        interval = timedelta(minutes=float(every_n_minutes))
        out.append(
            ModelCheckpoint(
                dirpath=dirpath,
                save_top_k=0,
                save_last=True,
                train_time_interval=interval,
                enable_version_counter=False,
            )
        )
    return out
