"""Self-supervised pre-training of a backbone (``train_ssl.sh``).

python -m smartpretrain.pretrain data=av2 cache_root=cache model=qcnet trainer=gpu trainer.devices=8
python -m smartpretrain.pretrain experiment=smartpretrain_cpu_small data=av1 max_epochs=3
python -m smartpretrain.pretrain ssl.objectives.trl.weight=0          # TCL only
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from smartpretrain.backbones.base import Backbone
from smartpretrain.data.cache import atomic_write_text
from smartpretrain.data.datamodule import SceneDataModule
from smartpretrain.data.sources import data_sources, is_mixture, mixture_spec
from smartpretrain.data.views import SSLViewTransform, TemporalViewSampler
from smartpretrain.finetune import save_run_config
from smartpretrain.ssl.objective import SSLObjective
from smartpretrain.tasks.pretrain import PretrainTask

log = logging.getLogger("smartpretrain.pretrain")


def build_pretrain_backbone(cfg: DictConfig) -> Backbone:
    """``cfg.model`` with the backbone class's ``pretrain_overrides`` (QCNet: one mode, propose stack only), then
    ``cfg.model_overrides`` (the view length as history window) applied."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.update(getattr(get_class(model_cfg["_target_"]), "pretrain_overrides", {}))
    model_cfg.update(OmegaConf.to_container(cfg.get("model_overrides") or OmegaConf.create({}), resolve=True))
    return instantiate(model_cfg)


def build_objectives(
    cfg: DictConfig, backbone: Backbone | None = None
) -> tuple[dict[str, SSLObjective], dict[str, float]]:
    """Objectives with a non-zero weight, and their weights. Objectives with ``needs_backbone_at_init`` get
    ``backbone=`` (e.g. MAE sizes its heads and builds its future tokenizer from it)."""
    objectives: dict[str, SSLObjective] = {}
    weights: dict[str, float] = {}
    for name, spec in (cfg.ssl.objectives or {}).items():
        if spec is None:
            continue
        spec = OmegaConf.to_container(spec, resolve=True)
        weight = float(spec.pop("weight", 1.0))
        if weight == 0.0:
            continue
        if getattr(get_class(spec["_target_"]), "needs_backbone_at_init", False):
            if backbone is None:
                raise ValueError(f"objective {name!r} needs the backbone to be built")
            objectives[str(name)] = instantiate(spec, backbone=backbone)
        else:
            objectives[str(name)] = instantiate(spec)
        weights[str(name)] = weight
    if not objectives:
        raise ValueError("every SSL objective is switched off (ssl.objectives.*.weight = 0)")
    return objectives, weights


def build_task(cfg: DictConfig) -> PretrainTask:
    backbone = build_pretrain_backbone(cfg)
    objectives, weights = build_objectives(cfg, backbone)
    ssl = cfg.ssl
    return PretrainTask(
        backbone,
        objectives,
        weights,
        window=int(ssl.window),
        proj_hidden_dim=int(ssl.proj_hidden_dim),
        proj_dim=int(ssl.proj_dim),
        lr_start=float(ssl.lr_start),
        lr_peak=float(ssl.lr_peak),
        lr_end=float(ssl.lr_end),
        warmup_epochs=float(ssl.warmup_epochs),
        max_epochs=float(cfg.max_epochs),
        weight_decay_start=float(ssl.weight_decay_start),
        weight_decay_end=float(ssl.weight_decay_end),
        momentum_base=float(ssl.momentum_base),
        sources=[s.name for s in data_sources(cfg, "train")] if is_mixture(cfg) else None,
    )


def build_datamodule(cfg: DictConfig, backbone: Backbone, with_full: bool = False) -> SceneDataModule:
    """Views per source (each dataset of a mixture with its own view length), one adapter, mixture sampling;
    ``with_full`` also adapts the whole scenes (objectives with ``needs_full_scene``)."""
    adapter = backbone.make_adapter()
    window = int(cfg.ssl.window)
    seed = int(cfg.seed)
    mixed = is_mixture(cfg)

    def transforms(split: str, deterministic: bool) -> tuple[list[Path], list[SSLViewTransform]]:
        sources = data_sources(cfg, split)
        too_long = [s.name for s in sources if mixed and s.view_window > window]
        if too_long:
            raise ValueError(f"view_window of {too_long} exceeds ssl.window={window} (set data.view_window)")
        return [s.path for s in sources], [
            SSLViewTransform(
                TemporalViewSampler(s.view_window if mixed else window, deterministic=deterministic, seed=seed),
                adapter,
                source=s.name if mixed else None,
                with_full=with_full,
            )
            for s in sources
        ]

    train_paths, train = transforms("train", deterministic=False)
    val_paths, val = transforms("val", deterministic=True) if cfg.get("val_split") else (None, None)
    return SceneDataModule(
        train=train_paths,
        val=val_paths,
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        train_transform=train,
        eval_transform=val,
        collate_fn=train[0].collate,
        mixture=mixture_spec(cfg, data_sources(cfg, "train")),
    )


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Pre-train; returns the final logged values. Checkpoints: ``out_dir/checkpoints`` (best-k by val loss + last)."""
    pl.seed_everything(int(cfg.seed), workers=True)
    save_run_config(cfg, out_dir)
    task = build_task(cfg)
    datamodule = build_datamodule(cfg, task.backbone, with_full=task.needs_full_scene)
    checkpoints = ModelCheckpoint(
        dirpath=out_dir / "checkpoints", monitor=cfg.monitor, mode="min", save_top_k=int(cfg.save_top_k),
        save_last=True, filename="epoch{epoch:03d}-loss{val_loss:.4f}", auto_insert_metric_name=False,
    )  # fmt: skip
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(out_dir),
        logger=CSVLogger(str(out_dir), name="logs"),
        callbacks=[checkpoints, LearningRateMonitor(logging_interval="step")],
        sync_batchnorm=False,  # the SSL heads' BatchNorm is already global (GlobalBatchNorm1d)
        use_distributed_sampler=datamodule.use_distributed_sampler,
    )
    trainer.fit(task, datamodule=datamodule, ckpt_path=cfg.get("resume"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["best_checkpoint"] = checkpoints.best_model_path  # type: ignore[assignment]
    metrics["last_checkpoint"] = checkpoints.last_model_path  # type: ignore[assignment]
    atomic_write_text(out_dir / "final_metrics.json", json.dumps(metrics, indent=2))
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="pretrain")
def main(cfg: DictConfig) -> None:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    metrics = run(cfg, out_dir)
    print(json.dumps(metrics, indent=2), flush=True)


if __name__ == "__main__":
    main()
