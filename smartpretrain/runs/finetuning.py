"""Fine-tuning a backbone for forecasting from a composed ``configs/train.yaml`` (``python -m smartpretrain.finetune``,
``train.sh``, and the fine-tuning stage of :func:`~smartpretrain.runs.pipeline.run_pipeline`).

:func:`run` checks the options and the caches (:func:`check_finetune_config`), builds the backbone with its
initial weights (:func:`~smartpretrain.runs.trainer.build_backbone`), the data module and the Trainer, fits, and
writes ``final_metrics.json``. The run folder holds ``config.yaml``, ``seed.json``, ``transfer_report.json`` (with
``pretrained_ckpt``), ``checkpoints/`` and the logger output.

The performance options of ``cfg.performance`` (:mod:`smartpretrain.runs.performance`) set TF32 and cuDNN before
the Trainer is built, compile the backbone in place (after its weights are loaded) and give the data module its
loader options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from smartpretrain.backbones.base import Backbone
from smartpretrain.data.agent_cap import AgentCap
from smartpretrain.data.cache import CacheError
from smartpretrain.data.datamodule import Chain, SceneDataModule
from smartpretrain.data.sources import RunSources, is_mixture, mixture_spec
from smartpretrain.io.checkpoints import CheckpointError
from smartpretrain.runs.cluster import check_launch
from smartpretrain.runs.guards import (
    RunConfigError,
    check_batching_and_checkpoints,
    check_cache_matches,
    check_choice,
    check_monitor,
    check_range,
    expected_dataset,
    finetune_monitors,
)
from smartpretrain.runs.performance import (
    PerformanceSettings,
    apply_global_settings,
    compile_module,
    performance_settings,
)
from smartpretrain.runs.trainer import (
    build_backbone,
    build_trainer,
    resume_checkpoint,
    save_run_config,
    write_final_metrics,
)
from smartpretrain.tasks.finetune import FinetuneTask

__all__ = ["EXPECTED_ERRORS", "check_finetune_config", "run"]

#: failures that end ``python -m smartpretrain.finetune`` with one line and exit status 2
EXPECTED_ERRORS: tuple[type[Exception], ...] = (RunConfigError, CacheError, CheckpointError, FileNotFoundError)


def check_finetune_config(cfg: DictConfig) -> RunSources:
    """Options in range and caches that match ``data=``, before anything is downloaded or built; returns the
    sources it checked (the run reads no others)."""
    check_range("train_fraction", cfg.get("train_fraction", 1.0), 0.0, 1.0, low_open=True)
    check_range("batch_size", cfg.batch_size, 1, integer=True)
    check_range("num_workers", cfg.num_workers, 0, integer=True)
    check_range("max_epochs", cfg.max_epochs, 1, integer=True)
    check_range("lr", cfg.lr, 0.0, low_open=True)
    check_choice("eval_scope", cfg.eval_scope, ("focal", "scored"))
    check_choice("pretrained_branch", cfg.get("pretrained_branch", "momentum"), ("momentum", "online"))
    check_monitor(cfg.monitor, finetune_monitors())
    check_batching_and_checkpoints(cfg)
    performance_settings(cfg)
    check_launch(cfg)  # under torchrun / submitit: the Trainer matches the launched world
    # a mixture's model window is its longest dataset's; shorter scenes are padded, not refused
    mixed = is_mixture(cfg)
    sources = RunSources.of(cfg)
    for split_sources in sources.by_split().values():
        for source in split_sources:
            check_cache_matches(
                source.path,
                expected_dataset(cfg, source.name),
                history_steps=None if mixed else int(cfg.data.num_historical_steps),
                future_steps=None if mixed else int(cfg.data.num_future_steps),
            )
    return sources


def _datamodule(
    cfg: DictConfig, backbone: Backbone, sources: RunSources, performance: PerformanceSettings | None = None
) -> SceneDataModule:
    adapter = backbone.make_adapter()
    batching = cfg.get("batching") or {}
    train_transform = adapter
    if batching.get("max_agents_per_scene"):
        train_transform = Chain(AgentCap(int(batching.max_agents_per_scene)), adapter)
    return SceneDataModule(
        train=[s.path for s in sources.train],
        val=[s.path for s in sources.val or ()],
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        train_transform=train_transform,
        eval_transform=adapter,
        collate_fn=adapter.collate,
        mixture=mixture_spec(cfg, sources.train),
        train_fraction=float(cfg.get("train_fraction", 1.0)),
        subset_seed=int(cfg.get("train_subset_seed", 0)),
        seed=int(cfg.seed),
        max_agents_per_batch=batching.get("max_agents_per_batch"),
        max_agents_per_scene=batching.get("max_agents_per_scene"),
        **(performance or performance_settings(cfg)).loader_kwargs(),
    )


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Fit and return the final logged metrics (also ``out_dir/final_metrics.json``).

    Raises:
        RunConfigError: a bad option or cache, before any download, model or worker.
    """
    sources = check_finetune_config(cfg)
    resume = resume_checkpoint(cfg, out_dir)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    save_run_config(cfg, out_dir)
    performance = performance_settings(cfg)
    apply_global_settings(performance)
    backbone = build_backbone(cfg, out_dir)
    datamodule = _datamodule(cfg, backbone, sources, performance)
    compile_module(backbone, performance.compile)  # after its weights are loaded; compiles at the first step
    task = FinetuneTask(
        backbone,
        lr=float(cfg.lr),
        weight_decay=float(cfg.weight_decay),
        max_epochs=int(cfg.max_epochs),
        min_lr=float(cfg.min_lr),
        eval_scope=str(cfg.eval_scope),
    )
    batching = cfg.get("batching") or {}
    trainer, _ = build_trainer(
        cfg,
        out_dir,
        use_distributed_sampler=False,
        reload_dataloaders_every_n_epochs=1 if batching.get("max_agents_per_batch") else 0,
    )
    try:
        datamodule.setup("fit")  # empty splits and bad options fail here, before any training
    except ValueError as exc:
        raise RunConfigError(str(exc)) from exc
    print(f"fine-tuning {type(backbone).__name__} -> {out_dir}", flush=True)
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return write_final_metrics(out_dir, metrics, trainer, resume)
