"""Self-supervised pre-training from a composed ``configs/pretrain.yaml`` (``python -m smartpretrain.pretrain``,
``train_ssl.sh``, and the pre-training stage of :func:`~smartpretrain.runs.pipeline.run_pipeline`).

* :func:`build_pretrain_backbone`: ``cfg.model`` with the backbone class's ``pretrain_overrides`` and
  ``cfg.model_overrides``;
* :func:`build_objectives`: the SSL objectives of ``cfg.ssl.objectives`` with a non-zero weight;
* :func:`build_task`: the :class:`~smartpretrain.tasks.pretrain.PretrainTask` of both;
* :func:`build_datamodule`: two temporal views per scene, per source (a mixture's datasets keep their own view
  lengths), one adapter; ``train_fraction`` < 1 pre-trains on a fixed random pool of the train scenes, drawn as
  fine-tuning's labelled subset (:func:`~smartpretrain.data.datamodule.labelled_subset`: pools of one
  ``train_subset_seed`` are nested), one dataset only;
* the performance options of ``cfg.performance`` (:mod:`smartpretrain.runs.performance`): TF32 and cuDNN
  settings before the Trainer, both branches compiled in place (``SSLBranch.forward`` is the backbone's encoding
  of a view), and the data module's pinned memory, persistent workers and prefetching;
* :func:`check_pretrain_config` then :func:`run`: checks before any work, then fit; ``final_metrics.json`` holds
  the last logged values, the ``best_checkpoint`` / ``last_checkpoint`` paths and the pool pre-trained on
  (``train_fraction``, ``train_subset_seed``, ``train_scenes``); a pool fraction < 1 also writes its scene
  indices to ``train_subset.json``.

The config's data sources are read once per run (:class:`~smartpretrain.data.sources.RunSources`) and handed to
the task and the data module.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from smartpretrain.backbones.base import Backbone
from smartpretrain.data.agent_cap import AgentCap
from smartpretrain.data.cache import CacheError
from smartpretrain.data.controls import ControlSpec
from smartpretrain.data.datamodule import Chain, SceneDataModule
from smartpretrain.data.sources import DataSource, RunSources, is_mixture, mixture_spec
from smartpretrain.data.views import SSLViewTransform, TemporalViewSampler
from smartpretrain.io.atomic import atomic_write_text
from smartpretrain.io.checkpoints import CheckpointError
from smartpretrain.runs.cluster import check_launch
from smartpretrain.runs.guards import (
    RunConfigError,
    check_batching_and_checkpoints,
    check_cache_matches,
    check_monitor,
    check_range,
    expected_dataset,
    pretrain_monitors,
)
from smartpretrain.runs.performance import (
    PerformanceSettings,
    apply_global_settings,
    compile_module,
    performance_settings,
)
from smartpretrain.runs.trainer import build_trainer, resume_checkpoint, save_run_config, write_final_metrics
from smartpretrain.ssl.objective import SSLObjective
from smartpretrain.tasks.pretrain import PretrainTask

__all__ = [
    "EXPECTED_ERRORS",
    "SUBSET_FILE",
    "build_datamodule",
    "build_objectives",
    "build_pretrain_backbone",
    "build_task",
    "check_pretrain_config",
    "control_spec",
    "run",
]

#: failures that end ``python -m smartpretrain.pretrain`` with one line and exit status 2
EXPECTED_ERRORS: tuple[type[Exception], ...] = (RunConfigError, CacheError, CheckpointError, FileNotFoundError)
#: the run folder's record of a pool fraction < 1: the indices (into the train cache) of the scenes pre-trained on
SUBSET_FILE = "train_subset.json"


def _sources(cfg: DictConfig) -> RunSources:
    return RunSources.of(cfg, validate=bool(cfg.get("val_split")))


def build_pretrain_backbone(cfg: DictConfig) -> Backbone:
    """``cfg.model`` with the backbone class's ``pretrain_overrides`` (QCNet: one mode, propose stack only), then
    ``cfg.model_overrides`` (the view length as history window) applied."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    model_cfg.update(getattr(get_class(model_cfg["_target_"]), "pretrain_overrides", {}))
    model_cfg.update(OmegaConf.to_container(cfg.get("model_overrides") or OmegaConf.create({}), resolve=True))
    return instantiate(model_cfg)


def _constructed_with_backbone(cls: type) -> bool:
    """Whether objective class ``cls`` is built with ``backbone=`` (e.g. MAE sizes its heads from it)."""
    return bool(cls.needs.backbone_at_init)


def build_objectives(
    cfg: DictConfig, backbone: Backbone | None = None
) -> tuple[dict[str, SSLObjective], dict[str, float]]:
    """Objectives with a non-zero weight, and their weights. Objectives that need the backbone at construction
    get ``backbone=`` (e.g. MAE sizes its heads and builds its future tokenizer from it)."""
    objectives: dict[str, SSLObjective] = {}
    weights: dict[str, float] = {}
    for name, spec in (cfg.ssl.objectives or {}).items():
        if spec is None:
            continue
        spec = OmegaConf.to_container(spec, resolve=True)
        weight = float(spec.pop("weight", 1.0))
        if weight == 0.0:
            continue
        if _constructed_with_backbone(get_class(spec["_target_"])):
            if backbone is None:
                raise ValueError(f"objective {name!r} needs the backbone to be built")
            objectives[str(name)] = instantiate(spec, backbone=backbone)
        else:
            objectives[str(name)] = instantiate(spec)
        weights[str(name)] = weight
    if not objectives:
        raise ValueError("every SSL objective is switched off (ssl.objectives.*.weight = 0)")
    return objectives, weights


def build_task(cfg: DictConfig, sources: RunSources | None = None) -> PretrainTask:
    """The pre-training task of ``cfg``; a mixture logs its losses per source (``sources``: read from ``cfg`` when
    not given)."""
    backbone = build_pretrain_backbone(cfg)
    objectives, weights = build_objectives(cfg, backbone)
    ssl = cfg.ssl
    names = [s.name for s in (sources or _sources(cfg)).train] if is_mixture(cfg) else None
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
        sources=names,
    )


def control_spec(cfg: DictConfig) -> ControlSpec:
    """How the transition controls are derived: ``cfg.ssl.controls`` (defaults where absent)."""
    values = OmegaConf.to_container(cfg.ssl.get("controls") or OmegaConf.create({}), resolve=True)
    unknown = set(values) - {f.name for f in fields(ControlSpec)}
    if unknown:
        raise RunConfigError(f"ssl.controls: unknown option(s) {sorted(unknown)}")
    try:
        return ControlSpec(**values)
    except ValueError as exc:
        raise RunConfigError(str(exc)) from exc


def build_datamodule(
    cfg: DictConfig,
    backbone: Backbone,
    with_full: bool = False,
    sources: RunSources | None = None,
    with_controls: bool = False,
    performance: PerformanceSettings | None = None,
) -> SceneDataModule:
    """Views per source (each dataset of a mixture with its own view length), one adapter, mixture sampling;
    ``with_full`` also adapts the whole scenes (objectives that need whole scenes), ``with_controls`` derives the
    queries' transition controls (``ssl.controls``). ``sources``, ``performance`` (the loader options): read from
    ``cfg`` when not given."""
    sources = sources or _sources(cfg)
    adapter = backbone.make_adapter()
    window = int(cfg.ssl.window)
    seed = int(cfg.seed)
    mixed = is_mixture(cfg)
    controls = control_spec(cfg) if with_controls else None

    def transforms(split: tuple[DataSource, ...], deterministic: bool) -> tuple[list[Path], list[SSLViewTransform]]:
        too_long = [s.name for s in split if mixed and s.view_window > window]
        if too_long:
            raise ValueError(f"view_window of {too_long} exceeds ssl.window={window} (set data.view_window)")
        return [s.path for s in split], [
            SSLViewTransform(
                TemporalViewSampler(s.view_window if mixed else window, deterministic=deterministic, seed=seed),
                adapter,
                source=s.name if mixed else None,
                with_full=with_full,
                controls=controls,
            )
            for s in split
        ]

    train_paths, train = transforms(sources.train, deterministic=False)
    val_paths, val = transforms(sources.val, deterministic=True) if sources.val is not None else (None, None)
    batching = cfg.get("batching") or {}
    cap = batching.get("max_agents_per_scene")
    train_transforms: list[Any] = [Chain(AgentCap(int(cap)), t) for t in train] if cap else list(train)
    return SceneDataModule(
        train=train_paths,
        val=val_paths,
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        train_transform=train_transforms,
        eval_transform=val,
        collate_fn=train[0].collate,
        mixture=mixture_spec(cfg, sources.train),
        train_fraction=float(cfg.get("train_fraction", 1.0)),
        subset_seed=int(cfg.get("train_subset_seed", 0)),
        seed=seed,
        max_agents_per_batch=batching.get("max_agents_per_batch"),
        max_agents_per_scene=cap,
        **(performance or performance_settings(cfg)).loader_kwargs(),
    )


def check_pretrain_config(cfg: DictConfig) -> RunSources:
    """Options in range and caches that match ``data=`` (two views must fit every scene), before any work; returns
    the sources it checked (the run reads no others)."""
    fraction = cfg.get("train_fraction", 1.0)
    check_range("train_fraction", fraction, 0.0, 1.0, low_open=True)
    check_range("train_subset_seed", cfg.get("train_subset_seed", 0), 0, integer=True)
    if fraction < 1.0 and is_mixture(cfg):
        raise RunConfigError(
            f"train_fraction={fraction} with a mixture (data={cfg.data.name}): a pre-training pool fraction is for "
            "one dataset; scale a mixture with data.mixture.num_samples or its components' weights"
        )
    check_range("batch_size", cfg.batch_size, 1, integer=True)
    check_range("num_workers", cfg.num_workers, 0, integer=True)
    check_range("max_epochs", cfg.max_epochs, 1)
    check_range("ssl.window", cfg.ssl.window, 2, integer=True)
    control_spec(cfg)  # a bad ssl.controls fails here, not in a worker
    performance_settings(cfg)
    names = [str(n) for n, spec in (cfg.ssl.objectives or {}).items() if spec is not None]
    check_monitor(cfg.monitor, pretrain_monitors(names))
    check_batching_and_checkpoints(cfg)
    check_launch(cfg)  # under torchrun / submitit: the Trainer matches the launched world
    sources = _sources(cfg)
    for split_sources in sources.by_split().values():
        for source in split_sources:
            window = source.view_window if is_mixture(cfg) else int(cfg.ssl.window)
            check_cache_matches(source.path, expected_dataset(cfg, source.name), min_steps=2 * window)
    return sources


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Pre-train; returns the final logged values. Checkpoints: ``out_dir/checkpoints`` (best-k by val loss + last).

    Raises:
        RunConfigError: a bad option or cache, before any download, model or worker.
    """
    sources = check_pretrain_config(cfg)
    resume = resume_checkpoint(cfg, out_dir)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    save_run_config(cfg, out_dir)
    performance = performance_settings(cfg)
    apply_global_settings(performance)
    task = build_task(cfg, sources)
    for branch in (task.branch, task.momentum_branch):  # each compiles at its first encoding, if ever used
        compile_module(branch, performance.compile)
    try:
        datamodule = build_datamodule(
            cfg,
            task.backbone,
            with_full=task.needs.full_scene,
            sources=sources,
            with_controls=task.needs.controls,
            performance=performance,
        )
        datamodule.setup("fit")
    except ValueError as exc:
        raise RunConfigError(str(exc)) from exc
    pool = _record_pool(cfg, datamodule, out_dir)
    batching = cfg.get("batching") or {}
    trainer, checkpoints = build_trainer(
        cfg,
        out_dir,
        use_distributed_sampler=False,
        sync_batchnorm=False,  # the SSL heads' BatchNorm is already global (GlobalBatchNorm1d)
        reload_dataloaders_every_n_epochs=1 if batching.get("max_agents_per_batch") else 0,
    )
    print(f"pre-training {type(task.backbone).__name__} with {', '.join(task.objectives)} -> {out_dir}", flush=True)
    trainer.fit(task, datamodule=datamodule, ckpt_path=str(resume) if resume else None, weights_only=True)
    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if metrics and checkpoints is not None:
        metrics["best_checkpoint"] = checkpoints.best_model_path
        metrics["last_checkpoint"] = checkpoints.last_model_path
    if metrics:  # empty: a finished run resumed, nothing trained (its final_metrics.json stays)
        metrics.update(pool)
    return write_final_metrics(out_dir, metrics, trainer, resume)


def _record_pool(cfg: DictConfig, datamodule: SceneDataModule, out_dir: Path) -> dict[str, Any]:
    """The pool pre-trained on, for ``final_metrics.json`` (a reused stage is checked against it); a fraction < 1
    also writes its scene indices to ``out_dir/train_subset.json`` (what a data-scaling study's nesting is checked
    with)."""
    indices = datamodule.train_indices
    total = len(datamodule.datasets["train"])
    pool = {
        "train_fraction": float(cfg.get("train_fraction", 1.0)),
        "train_subset_seed": int(cfg.get("train_subset_seed", 0)),
        "train_scenes": total if indices is None else len(indices),
    }
    if indices is not None:  # every rank draws the same pool (as save_run_config, each writes the same file)
        record = {**pool, "train_split_scenes": total, "indices": list(indices)}
        atomic_write_text(out_dir / SUBSET_FILE, json.dumps(record))
    return pool
