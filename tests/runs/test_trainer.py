"""The Trainer of a run from config groups: ``configs/callbacks/`` (exact resume, lr monitor, best-k + last,
periodic last.ckpt) and ``configs/logger/`` (csv, tensorboard), with run folders filled in by the run layer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from pytorch_lightning import LightningModule
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from torch import Tensor

from smartpretrain.config import compose_config
from smartpretrain.io.safe_load import load_weights_only
from smartpretrain.runs.guards import RunConfigError
from smartpretrain.runs.resume import ExactResume
from smartpretrain.runs.trainer import build_callbacks, build_loggers, build_trainer
from tests.runs.test_guards import _finetune


def _checkpoints(callbacks: list) -> list[ModelCheckpoint]:
    return [c for c in callbacks if isinstance(c, ModelCheckpoint)]


@pytest.mark.parametrize(
    ("config", "filename", "monitor", "interval"),
    [
        ("train", "epoch{epoch:03d}-minFDE{val_minFDE_6:.3f}", "val_minFDE_6", "epoch"),
        ("pretrain", "epoch{epoch:03d}-loss{val_loss:.4f}", "val_loss", "step"),
    ],
)
def test_default_callbacks_are_todays_checkpoints_resume_and_lr_monitor(
    tmp_path: Path, config: str, filename: str, monitor: str, interval: str
) -> None:
    cfg = compose_config(config, ["data=av1", "seed=7"])
    callbacks = build_callbacks(cfg, tmp_path)
    kinds = [ExactResume, LearningRateMonitor, ModelCheckpoint, ModelCheckpoint, ModelCheckpoint]
    assert [type(c) for c in callbacks] == kinds
    resume, lr, best, epoch_end, periodic = callbacks
    assert resume.seed == 7 and lr.logging_interval == interval
    assert (best.monitor, best.mode, best.save_top_k, best.save_last, best.filename) == (
        monitor,
        "min",
        3,
        True,
        filename,
    )
    assert Path(best.dirpath) == (tmp_path / "checkpoints").resolve()
    assert not best.auto_insert_metric_name and not best._enable_version_counter
    # last.ckpt at every train epoch end (after validation), whether or not best-k saved a checkpoint there
    assert (epoch_end.monitor, epoch_end.save_top_k, epoch_end.filename, epoch_end.dirpath) == (
        None,
        1,
        "last",
        best.dirpath,
    )
    assert epoch_end._save_on_train_epoch_end and not epoch_end._enable_version_counter
    # the every-30-minutes refresh of last.ckpt, in the same folder, keeping no top-k of its own
    assert (periodic.monitor, periodic.save_top_k, periodic.save_last) == (None, 0, True)
    assert periodic._train_time_interval == timedelta(minutes=30) and periodic.dirpath == best.dirpath


def test_save_top_k_and_checkpoint_intervals_are_config_in_both_tasks(tmp_path: Path) -> None:
    for config in ("train", "pretrain"):
        overrides = ["data=av1", "save_top_k=1", "checkpoint.every_n_train_steps=5", "checkpoint.every_n_minutes=null"]
        best, _, steps = _checkpoints(build_callbacks(compose_config(config, overrides), tmp_path))
        assert best.save_top_k == 1 and steps._every_n_train_steps == 5 and steps._train_time_interval is None


def test_a_callback_can_be_switched_off_or_added(tmp_path: Path) -> None:
    cfg = compose_config(
        "train",
        ["data=av1", "callbacks.lr_monitor=null", "callbacks.best_checkpoint=null",
         "+callbacks.kill._target_=tests.runs.killer.KillAtStep", "+callbacks.kill.step=3"],
    )  # fmt: skip
    callbacks = build_callbacks(cfg, tmp_path)
    assert [type(c).__name__ for c in callbacks] == ["ExactResume", "ModelCheckpoint", "ModelCheckpoint", "KillAtStep"]
    trainer, best = build_trainer(cfg, tmp_path)
    assert best is None  # no checkpoint callback monitors anything
    # Lightning moves the checkpoint callbacks last: they save what the others left in the state
    ours = [type(c).__name__ for c in trainer.callbacks if type(c).__module__.startswith(("smartpretrain", "tests"))]
    assert ours == ["ExactResume", "KillAtStep"] and isinstance(trainer.callbacks[-1], ModelCheckpoint)


def test_save_top_k_below_minus_one_is_refused(av1_cache: Path, tmp_path: Path) -> None:
    with pytest.raises(RunConfigError, match=r"save_top_k must be >= -1, got -2"):
        _finetune(av1_cache, tmp_path / "run", "save_top_k=-2")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("logger", "kinds", "names"),
    [
        ("csv", [CSVLogger], ["logs"]),
        ("tensorboard", [TensorBoardLogger], ["tensorboard"]),
        ("csv_tensorboard", [CSVLogger, TensorBoardLogger], ["logs", "tensorboard"]),
    ],
)
def test_logger_group(tmp_path: Path, logger: str, kinds: list[type], names: list[str]) -> None:
    loggers = build_loggers(compose_config("train", ["data=av1", f"logger={logger}"]), tmp_path)
    assert [type(lg) for lg in loggers] == kinds and [lg.name for lg in loggers] == names
    assert all(Path(lg.save_dir) == tmp_path for lg in loggers)  # <run>/logs, <run>/tensorboard


def test_logger_null_trains_without_a_logger(tmp_path: Path) -> None:
    trainer, _ = build_trainer(compose_config("train", ["data=av1", "~logger"]), tmp_path)
    assert trainer.loggers == []


def test_tensorboard_logger_writes_event_files(av1_cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    metrics = _finetune(av1_cache, out, "logger=tensorboard")
    events = list((out / "tensorboard").glob("version_0/events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    assert not (out / "logs").exists()  # the CSV logger is not there
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars = EventAccumulator(str(events[0])).Reload().Tags()["scalars"]
    assert "val_minFDE_6" in scalars and "train_loss" in scalars
    assert metrics["val_minFDE_6"] > 0


class _WorseningModel(LightningModule):
    """One weight; its val loss grows every epoch, so best-k (k = 1) keeps epoch 0 and never saves again."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        return (self.w - 1.0).pow(2).sum()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.log("val_minFDE_6", float(self.current_epoch))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(torch.zeros(2, 1), batch_size=1)

    def val_dataloader(self) -> Any:
        return torch.utils.data.DataLoader(torch.zeros(1, 1), batch_size=1)


def test_last_checkpoint_is_the_end_of_training_when_later_epochs_are_not_best(tmp_path: Path) -> None:
    """Without the epoch-end callback, pytorch_lightning 2.6 leaves last.ckpt at the last top-k epoch (here 0) unless
    some other checkpoint callback happens to save at the end (the every-30-minutes one does; off here)."""
    steps = {}
    for switch in ([], ["callbacks.epoch_end_checkpoint=null"]):
        out = tmp_path / str(len(switch))
        overrides = ["data=av1", "save_top_k=1", "max_epochs=3", "~logger", "callbacks.lr_monitor=null",
                     "checkpoint.every_n_minutes=null", *switch]  # fmt: skip
        trainer, _ = build_trainer(compose_config("train", overrides), out)
        trainer.fit(_WorseningModel())
        last = load_weights_only(out / "checkpoints" / "last.ckpt", "last.ckpt", map_location="cpu", safe_globals=None)
        steps[len(switch)] = last["global_step"]
        names = sorted(p.name for p in (out / "checkpoints").glob("*.ckpt"))
        assert names == ["epoch000-minFDE0.000.ckpt", "last.ckpt"]
    assert steps == {0: 6, 1: 2}  # 3 epochs of 2 steps; without it: the end of epoch 0, the only top-1 save
