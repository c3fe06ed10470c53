"""Train / fine-tune a backbone for forecasting (``train.sh``).

python -m smartpretrain.finetune data=av2 cache_root=cache model=qcnet trainer=gpu trainer.devices=8
python -m smartpretrain.finetune data=av1 model=qcnet_small max_epochs=5 ckpt_path=https://.../model.ckpt
python -m smartpretrain.finetune data=av2 pretrained_ckpt=outputs/pretrain/.../last.ckpt copy_refine=true
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig

from smartpretrain.data.agent_cap import AgentCap
from smartpretrain.data.cache import CacheError
from smartpretrain.data.datamodule import Chain, SceneDataModule
from smartpretrain.data.sources import data_sources, is_mixture, mixture_spec
from smartpretrain.io.checkpoints import CheckpointError
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
from smartpretrain.runs.trainer import (
    build_backbone,
    build_trainer,
    resume_checkpoint,
    save_run_config,
    split_dir,
    write_final_metrics,
)
from smartpretrain.tasks.finetune import FinetuneTask

log = logging.getLogger("smartpretrain.finetune")

__all__ = ["build_backbone", "check_finetune_config", "run", "save_run_config", "split_dir"]


def check_finetune_config(cfg: DictConfig) -> None:
    """Options in range and caches that match ``data=``, before anything is downloaded or built."""
    check_range("train_fraction", cfg.get("train_fraction", 1.0), 0.0, 1.0, low_open=True)
    check_range("batch_size", cfg.batch_size, 1, integer=True)
    check_range("num_workers", cfg.num_workers, 0, integer=True)
    check_range("max_epochs", cfg.max_epochs, 1, integer=True)
    check_range("lr", cfg.lr, 0.0, low_open=True)
    check_choice("eval_scope", cfg.eval_scope, ("focal", "scored"))
    check_choice("pretrained_branch", cfg.get("pretrained_branch", "momentum"), ("momentum", "online"))
    check_monitor(cfg.monitor, finetune_monitors())
    check_batching_and_checkpoints(cfg)
    for split in ("train", "val"):
        for source in data_sources(cfg, split):
            dataset = expected_dataset(cfg, source.name)
            # a mixture's model window is its longest dataset's; shorter scenes are padded, not refused
            mixed = is_mixture(cfg)
            check_cache_matches(
                source.path,
                dataset,
                history_steps=None if mixed else int(cfg.data.num_historical_steps),
                future_steps=None if mixed else int(cfg.data.num_future_steps),
            )


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Fit and return the final logged metrics."""
    check_finetune_config(cfg)
    resume = resume_checkpoint(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    save_run_config(cfg, out_dir)
    backbone = build_backbone(cfg, out_dir)
    adapter = backbone.make_adapter()
    batching = cfg.get("batching") or {}
    train_transform = adapter
    if batching.get("max_agents_per_scene"):
        train_transform = Chain(AgentCap(int(batching.max_agents_per_scene)), adapter)
    train_sources = data_sources(cfg, "train")
    datamodule = SceneDataModule(
        train=[s.path for s in train_sources],
        val=[s.path for s in data_sources(cfg, "val")],
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        train_transform=train_transform,
        eval_transform=adapter,
        collate_fn=adapter.collate,
        mixture=mixture_spec(cfg, train_sources),
        train_fraction=float(cfg.get("train_fraction", 1.0)),
        subset_seed=int(cfg.get("train_subset_seed", 0)),
        seed=int(cfg.seed),
        max_agents_per_batch=batching.get("max_agents_per_batch"),
        max_agents_per_scene=batching.get("max_agents_per_scene"),
    )
    task = FinetuneTask(
        backbone,
        lr=float(cfg.lr),
        weight_decay=float(cfg.weight_decay),
        max_epochs=int(cfg.max_epochs),
        min_lr=float(cfg.min_lr),
        eval_scope=str(cfg.eval_scope),
    )
    trainer, _ = build_trainer(
        cfg, out_dir, filename="epoch{epoch:03d}-minFDE{val_minFDE_6:.3f}", save_top_k=int(cfg.get("save_top_k", 3)),
        lr_interval="epoch", use_distributed_sampler=False,
        reload_dataloaders_every_n_epochs=1 if batching.get("max_agents_per_batch") else 0,
    )  # fmt: skip
    try:
        datamodule.setup("fit")  # empty splits and bad options fail here, before any training
    except ValueError as exc:
        raise RunConfigError(str(exc)) from exc
    print(f"fine-tuning {type(backbone).__name__} -> {out_dir}", flush=True)
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    return write_final_metrics(out_dir, metrics, trainer, resume)


EXPECTED_ERRORS = (RunConfigError, CacheError, CheckpointError, FileNotFoundError)


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    try:
        metrics = run(cfg, out_dir)
    except EXPECTED_ERRORS as exc:
        print(f"smartpretrain.finetune: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    print(json.dumps(metrics, indent=2), flush=True)


if __name__ == "__main__":
    main()
