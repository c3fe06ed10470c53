"""Train / fine-tune a backbone for forecasting (``train.sh``).

python -m smartpretrain.finetune data=av2 cache_root=cache model=qcnet trainer=gpu trainer.devices=8
python -m smartpretrain.finetune data=av1 model=qcnet_small max_epochs=5 ckpt_path=https://.../model.ckpt
python -m smartpretrain.finetune data=av2 pretrained_ckpt=outputs/pretrain/.../last.ckpt copy_refine=true
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from smartpretrain.backbones.base import Backbone
from smartpretrain.data.cache import atomic_write_text
from smartpretrain.data.datamodule import SceneDataModule
from smartpretrain.data.sources import data_sources, mixture_spec
from smartpretrain.io.checkpoints import extract_state_dict, load_checkpoint, load_into, transfer_pretrained
from smartpretrain.tasks.finetune import FinetuneTask

log = logging.getLogger("smartpretrain.finetune")


def split_dir(cfg: DictConfig, split: str) -> Path:
    """``{cache_root}/{dataset}/{split}`` (single-dataset configs; mixtures: :mod:`smartpretrain.data.sources`)."""
    return Path(cfg.cache_root) / cfg.data.name / split


def build_backbone(cfg: DictConfig, out_dir: Path | None = None) -> Backbone:
    """Instantiate ``cfg.model``; then load ``cfg.pretrained_ckpt`` (an SSL checkpoint, through
    :func:`~smartpretrain.io.checkpoints.transfer_pretrained`) and / or ``cfg.ckpt_path`` (forecasting weights),
    printing a key report (also written to ``out_dir/transfer_report.json``)."""
    backbone: Backbone = instantiate(cfg.model)
    if cfg.get("pretrained_ckpt"):
        checkpoint = load_checkpoint(str(cfg.pretrained_ckpt), sha256=cfg.get("pretrained_sha256"))
        report = transfer_pretrained(
            backbone,
            checkpoint,
            branch=str(cfg.get("pretrained_branch", "momentum")),
            copy_refine=bool(cfg.get("copy_refine", False)),
        )
        print(f"pre-trained weights from {cfg.pretrained_ckpt}:\n{report}", flush=True)
        if out_dir is not None:
            summary = {
                "source": str(cfg.pretrained_ckpt),
                "source_prefix": report.source_prefix,
                "loaded": report.loaded,
                "missing": report.missing,
                "unexpected": report.unexpected,
                "reshaped": [list(r) for r in report.reshaped],
                "expanded": [list(r) for r in report.expanded],
                "copied": [list(r) for r in report.copied],
                "dropped": report.dropped,
                "strict_prefixes": list(report.strict_prefixes),
                "strict_loaded": len(report.strict_loaded()),
            }
            out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out_dir / "transfer_report.json", json.dumps(summary, indent=2))
    if cfg.get("ckpt_path"):
        checkpoint = load_checkpoint(str(cfg.ckpt_path), sha256=cfg.get("ckpt_sha256"))
        state = extract_state_dict(checkpoint, prefix="backbone.")
        report = load_into(backbone, state, strict=bool(cfg.get("strict_load", True)))
        log.info("weights from %s: %s", cfg.ckpt_path, report)
        print(f"loaded {cfg.ckpt_path}: {report}", flush=True)
    return backbone


def save_run_config(cfg: DictConfig, out_dir: Path) -> None:
    """The resolved config and the seed next to the run's outputs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_text(out_dir / "seed.json", json.dumps({"seed": int(cfg.seed)}))


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Fit and return the final logged metrics."""
    pl.seed_everything(int(cfg.seed), workers=True)
    save_run_config(cfg, out_dir)
    backbone = build_backbone(cfg, out_dir)
    adapter = backbone.make_adapter()
    train_sources = data_sources(cfg, "train")
    datamodule = SceneDataModule(
        train=[s.path for s in train_sources],
        val=[s.path for s in data_sources(cfg, "val")],
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        train_transform=adapter,
        eval_transform=adapter,
        collate_fn=adapter.collate,
        mixture=mixture_spec(cfg, train_sources),
        train_fraction=float(cfg.get("train_fraction", 1.0)),
        subset_seed=int(cfg.get("train_subset_seed", 0)),
    )
    task = FinetuneTask(
        backbone,
        lr=float(cfg.lr),
        weight_decay=float(cfg.weight_decay),
        max_epochs=int(cfg.max_epochs),
        min_lr=float(cfg.min_lr),
        eval_scope=str(cfg.eval_scope),
    )
    checkpoints = ModelCheckpoint(
        dirpath=out_dir / "checkpoints", monitor=cfg.monitor, mode="min", save_top_k=3, save_last=True,
        filename="epoch{epoch:03d}-minFDE{val_minFDE_6:.3f}", auto_insert_metric_name=False,
    )  # fmt: skip
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(out_dir),
        logger=CSVLogger(str(out_dir), name="logs"),
        callbacks=[checkpoints, LearningRateMonitor(logging_interval="epoch")],
        use_distributed_sampler=datamodule.use_distributed_sampler,
    )
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("resume"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    atomic_write_text(out_dir / "final_metrics.json", json.dumps(metrics, indent=2))
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> None:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    metrics = run(cfg, out_dir)
    print(json.dumps(metrics, indent=2), flush=True)


if __name__ == "__main__":
    main()
