"""What every training run builds the same way: run folder, backbone + weights, and the Trainer from config groups.

* :func:`save_run_config`: the resolved config and the seed beside the run's outputs;
* :func:`build_backbone`: ``cfg.model`` plus ``pretrained_ckpt`` (SSL transfer) and / or ``ckpt_path`` weights,
  each through the one safe loading path (:mod:`smartpretrain.io.checkpoints`, ``weights_only=True``);
* :func:`resume_checkpoint`: ``resume=`` (a path, ``https://``, ``hf://``, or ``auto``: the run folder's own
  ``last.ckpt`` when it exists, for requeued cluster jobs) resolved, verified as weights-only
  loadable, and handed to Lightning as a local file that it then also loads with ``weights_only=True``;
* :func:`build_callbacks` / :func:`build_loggers` / :func:`build_trainer`: the Trainer of ``cfg.trainer``
  (``configs/trainer/``; under torchrun or submitit checked against the launched world,
  :mod:`smartpretrain.runs.cluster`) with the callbacks of ``cfg.callbacks`` (``configs/callbacks/``: exact resume, lr
  monitor, best-k + last checkpoints, periodic ``last.ckpt`` refreshes) and the loggers of ``cfg.logger``
  (``configs/logger/``: csv, tensorboard). A spec's ``???`` run-folder argument is filled in here: ``dirpath``
  is ``<run>/checkpoints``, ``save_dir`` the run folder;
* :func:`write_final_metrics`: ``final_metrics.json``, the file that marks a finished run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import Logger

from smartpretrain.backbones.base import Backbone
from smartpretrain.io.atomic import atomic_write_text
from smartpretrain.io.checkpoints import extract_state_dict, load_checkpoint, load_into, verified_local_checkpoint
from smartpretrain.runs.cluster import check_launch, cluster_plugins
from smartpretrain.runs.guards import RunConfigError
from smartpretrain.tasks.transfer import transfer_pretrained

log = logging.getLogger(__name__)

#: the checkpoints of a run, under its folder (best-k, ``last.ckpt``)
CHECKPOINT_DIR = "checkpoints"
#: ``resume=auto``: the run folder's own ``last.ckpt`` when it has one (see :func:`resume_checkpoint`)
RESUME_AUTO = "auto"

__all__ = [
    "CHECKPOINT_DIR",
    "RESUME_AUTO",
    "build_backbone",
    "build_callbacks",
    "build_loggers",
    "build_trainer",
    "download_options",
    "resume_checkpoint",
    "save_run_config",
    "split_dir",
    "write_final_metrics",
]


def split_dir(cfg: DictConfig, split: str) -> Path:
    """``{cache_root}/{dataset}/{split}`` (single-dataset configs; mixtures: :mod:`smartpretrain.data.sources`)."""
    return Path(cfg.cache_root) / cfg.data.name / split


def save_run_config(cfg: DictConfig, out_dir: Path) -> None:
    """The resolved config and the seed next to the run's outputs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_text(out_dir / "seed.json", json.dumps({"seed": int(cfg.seed)}))


def download_options(cfg: DictConfig) -> dict[str, Any]:
    """Per-read timeout and overall deadline of checkpoint downloads (``download_timeout_s``,
    ``download_deadline_s``)."""
    out: dict[str, Any] = {}
    if cfg.get("download_timeout_s") is not None:
        out["timeout"] = float(cfg.download_timeout_s)
    if cfg.get("download_deadline_s") is not None:
        out["deadline"] = float(cfg.download_deadline_s)
    return out


def build_backbone(cfg: DictConfig, out_dir: Path | None = None) -> Backbone:
    """Instantiate ``cfg.model``; then load ``cfg.pretrained_ckpt`` (an SSL checkpoint, through
    :func:`~smartpretrain.tasks.transfer.transfer_pretrained`) and / or ``cfg.ckpt_path`` (forecasting weights),
    printing a key report (also written to ``out_dir/transfer_report.json``). A load that matches no tensor is
    refused (``strict_load=false`` must still load something)."""
    backbone: Backbone = instantiate(cfg.model)
    fetch = download_options(cfg)
    if cfg.get("pretrained_ckpt"):
        checkpoint = load_checkpoint(str(cfg.pretrained_ckpt), sha256=cfg.get("pretrained_sha256"), **fetch)
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
        checkpoint = load_checkpoint(str(cfg.ckpt_path), sha256=cfg.get("ckpt_sha256"), **fetch)
        state = extract_state_dict(checkpoint, prefix="backbone.")
        report = load_into(backbone, state, strict=bool(cfg.get("strict_load", True)))
        if not report.loaded and len(backbone.state_dict()) > 0:
            raise RunConfigError(
                f"ckpt_path={cfg.ckpt_path}: not one tensor matches {type(backbone).__name__} "
                f"({len(report.unexpected)} unexpected, {len(report.missing)} missing, {len(report.reshaped)} "
                "of another shape); wrong model= or wrong file?"
            )
        log.info("weights from %s: %s", cfg.ckpt_path, report)
        print(f"loaded {cfg.ckpt_path}: {report}", flush=True)
    return backbone


def resume_checkpoint(cfg: DictConfig, out_dir: Path | None = None) -> Path | None:
    """``cfg.resume`` as a verified local file (None when not resuming). Remote sources are downloaded into the
    checkpoint cache first; the file must load with ``weights_only=True`` or it is refused here, before Lightning
    sees it.

    ``resume=auto`` resumes from this run folder's own ``checkpoints/last.ckpt`` when there is one, else starts
    afresh: what a cluster job that is requeued into the same folder (a SLURM time limit or pre-emption, submitit's
    ``max_num_timeout``) needs to pick up where it was stopped."""
    source = cfg.get("resume")
    if not source:
        return None
    if str(source) == RESUME_AUTO:
        if out_dir is None:
            raise RunConfigError("resume=auto: this run has no run folder to resume from; give resume=<checkpoint>")
        last = out_dir / CHECKPOINT_DIR / "last.ckpt"
        if not last.exists():
            print(f"resume=auto: no {last} yet, starting afresh", flush=True)
            return None
        print(f"resume=auto: resuming from {last}", flush=True)
        return verified_local_checkpoint(str(last))
    return verified_local_checkpoint(str(source), sha256=cfg.get("resume_sha256"), **download_options(cfg))


def _run_folders(spec: DictConfig, out_dir: Path) -> dict[str, Any]:
    """The run-folder arguments that ``spec`` leaves to the run (``???``): ``dirpath``, ``save_dir``."""
    folders: dict[str, Any] = {"dirpath": out_dir / CHECKPOINT_DIR, "save_dir": str(out_dir)}
    return {key: value for key, value in folders.items() if OmegaConf.is_missing(spec, key)}


def build_callbacks(cfg: DictConfig, out_dir: Path) -> list[Callback]:
    """The callbacks of ``cfg.callbacks`` in their config order (a null entry is switched off; a factory such as
    :func:`~smartpretrain.runs.resume.periodic_checkpoints` may return several). Lightning then moves checkpoint
    callbacks last, so they save the state the other callbacks left."""
    callbacks: list[Callback] = []
    for spec in (cfg.get("callbacks") or {}).values():
        if spec is None:
            continue
        made = instantiate(spec, **_run_folders(spec, out_dir))
        callbacks.extend(made if isinstance(made, (list, tuple)) else [made])
    return callbacks


def build_loggers(cfg: DictConfig, out_dir: Path) -> list[Logger]:
    """The loggers of ``cfg.logger`` (``configs/logger/``), each writing under ``out_dir``."""
    return [
        instantiate(spec, **_run_folders(spec, out_dir))
        for spec in (cfg.get("logger") or {}).values()
        if spec is not None
    ]


def build_trainer(cfg: DictConfig, out_dir: Path, **trainer_kwargs: Any) -> tuple[pl.Trainer, ModelCheckpoint | None]:
    """The Trainer of ``cfg.trainer`` with the callbacks and loggers of the config; returns it and the checkpoint
    callback that keeps the best ``save_top_k`` by ``monitor`` (None when ``callbacks.best_checkpoint=null``).

    ``trainer_kwargs`` are what the task decides, not the user (e.g. ``use_distributed_sampler=False``). Under a
    cluster launcher (:mod:`smartpretrain.runs.cluster`) the Trainer must match the world it started, and a
    submitit task gets its cluster environment.
    """
    launch = check_launch(cfg)
    callbacks = build_callbacks(cfg, out_dir)
    loggers = build_loggers(cfg, out_dir)
    plugins = cluster_plugins(launch)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        default_root_dir=str(out_dir),
        logger=loggers or False,
        callbacks=callbacks,
        **({"plugins": plugins} if plugins else {}),
        **trainer_kwargs,
    )
    best = next((c for c in callbacks if isinstance(c, ModelCheckpoint) and c.monitor is not None), None)
    return trainer, best


def write_final_metrics(out_dir: Path, metrics: dict[str, Any], trainer: pl.Trainer, resume: Path | None) -> dict:
    """Write ``out_dir/final_metrics.json`` (rank 0), unless this call trained nothing: resuming a run that had
    already finished keeps the file it wrote then."""
    path = out_dir / "final_metrics.json"
    if not metrics and resume is not None:
        print(f"{resume}: the run had already finished (epoch {trainer.current_epoch}); nothing to do", flush=True)
        return json.loads(path.read_text()) if path.exists() else {}
    if trainer.is_global_zero:
        atomic_write_text(path, json.dumps(metrics, indent=2))
    return metrics
