"""Evaluating a checkpoint from a composed ``configs/evaluate.yaml`` (``python -m smartpretrain.evaluate``, ``val.sh``
/ ``test.sh``, and the evaluation stage of :func:`~smartpretrain.runs.pipeline.run_pipeline`).

``mode=val`` prints a metrics table (overall and per dataset) and writes ``metrics.json``; ``mode=test`` writes
``submission.parquet`` (av2's ``ChallengeSubmission``, global frame) for the scored agents of each scene, or with
``data=womd`` the Waymo challenge's ``submission.tar.gz`` (:mod:`smartpretrain.io.womd_submission`) holding every
track to predict of each scene (``eval_scope=scored``, the WOMD default; ``focal`` is refused there).
``num_plots=N`` also saves PNGs of the first N scenes with their K predicted futures.

Works for every backbone: a batch is read only through the backbone's :class:`~smartpretrain.backbones.base.Forecast`,
:class:`~smartpretrain.backbones.base.EvalTargets` and ``to_scene_frame``, and the
:class:`~smartpretrain.backbones.base.BatchDescription` its adapter's collate attaches (scenario ids, datasets,
city origins, track ids).

Refused before any work (:class:`EvaluationError`): ``mode`` other than val / test, an unknown ``eval_scope``, an
empty split or ``limit_scenes`` <= 0, ``ckpt_path`` unset, and ``ckpt_path=null`` for a model with trainable
parameters (null is for parameter-free baselines such as constant velocity). A run in which no agent was scored
is an error too, never NaN metrics.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from smartpretrain.backbones.base import Backbone, BatchDescription, EvalTargets, Forecast, describe_batch
from smartpretrain.data.cache import CacheError
from smartpretrain.data.datamodule import SceneDataset
from smartpretrain.data.registry import metric_datasets
from smartpretrain.data.worker_transfer import worker_collate
from smartpretrain.io.atomic import atomic_output, atomic_write_text
from smartpretrain.io.checkpoints import CheckpointError
from smartpretrain.io.submission import SubmissionBuilder
from smartpretrain.io.womd_submission import (
    DEFAULT_SCENARIOS_PER_SHARD,
    WomdSubmissionBuilder,
    WomdSubmissionMetadata,
    format_parameter_count,
)
from smartpretrain.metrics.forecasting import select_agents
from smartpretrain.metrics.suite import ForecastMetricSuite
from smartpretrain.runs.guards import RunConfigError, check_cache_matches
from smartpretrain.runs.trainer import build_backbone, save_run_config, split_dir

__all__ = [
    "EVAL_SCOPES",
    "EXPECTED_ERRORS",
    "METRIC_DATASETS",
    "MODES",
    "EvaluationError",
    "check_options",
    "check_weights",
    "evaluate",
    "format_table",
]

#: the values of ``mode``
MODES: tuple[str, ...] = ("val", "test")
#: the values of ``eval_scope`` (see :func:`~smartpretrain.metrics.forecasting.select_agents`)
EVAL_SCOPES: tuple[str, ...] = ("focal", "scored")
#: per-dataset metric groups, from the dataset registry (a test keeps every Dataset member registered)
METRIC_DATASETS: tuple[str, ...] = metric_datasets()


class EvaluationError(RunConfigError):
    """A run that cannot give a meaningful result (bad option, empty split, no weights, nothing scored)."""


#: failures that end ``python -m smartpretrain.evaluate`` with one line and exit status 2: a bad option, an empty
#: or missing split, no or bad weights, an invalid submission (``ValueError``)
EXPECTED_ERRORS: tuple[type[Exception], ...] = (EvaluationError, CacheError, CheckpointError, FileNotFoundError,
                                                ValueError)  # fmt: skip


def format_table(metrics: dict[str, float]) -> str:
    """Metrics as a two-column table, overall first, then per dataset."""
    rows = sorted(metrics.items(), key=lambda kv: ("/" in kv[0], kv[0]))
    width = max((len(k) for k in metrics), default=10)
    return "\n".join([f"{'metric':<{width}}  value", "-" * (width + 10)] + [f"{k:<{width}}  {v:.4f}" for k, v in rows])


def check_options(cfg: DictConfig) -> None:
    """The checks that need nothing but the config (``mode``, ``eval_scope``, ``limit_scenes``, ``ckpt_path`` set).

    Raises:
        EvaluationError: naming the option and what it accepts.
    """
    if cfg.mode not in MODES:
        raise EvaluationError(f"mode={cfg.mode!r} is not one of {', '.join(MODES)} (val: metrics; test: submission)")
    if cfg.eval_scope not in EVAL_SCOPES:
        raise EvaluationError(f"eval_scope={cfg.eval_scope!r} is not one of {', '.join(EVAL_SCOPES)}")
    if cfg.limit_scenes is not None and int(cfg.limit_scenes) <= 0:
        raise EvaluationError(
            f"limit_scenes={cfg.limit_scenes} selects no scene of split {cfg.split!r}: pass a positive number, or "
            f"limit_scenes=null for the whole split"
        )
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise EvaluationError(
            "ckpt_path is not set: pass ckpt_path=<path | https://... | hf://...> (ckpt_path=null only for a "
            "parameter-free baseline such as model=constant_velocity)"
        )


def check_weights(cfg: DictConfig, backbone: Backbone) -> None:
    """``ckpt_path=null`` is allowed only for a model without trainable parameters (else: random weights)."""
    if cfg.ckpt_path is not None:
        return
    trainable = sum(p.numel() for p in backbone.parameters() if p.requires_grad)
    if trainable:
        raise EvaluationError(
            f"ckpt_path=null: {type(backbone).__name__} has {trainable} trainable parameters and would be evaluated "
            f"with random weights; pass ckpt_path=<path | https://... | hf://...> (null is only for parameter-free "
            f"baselines such as model=constant_velocity)"
        )


def _check_rows(description: BatchDescription, targets: EvalTargets, forecast: Forecast) -> None:
    """The description, the targets and the forecast must describe the same agent rows."""
    a = forecast.loc.shape[0]
    if (
        description.num_agents != a
        or targets.scene_index.shape[0] != a
        or not torch.equal(description.agent_scene, targets.scene_index.to(description.agent_scene.device))
    ):
        raise RuntimeError(
            f"the batch description has {description.num_agents} agent rows, the forecast {a} and the targets "
            f"{targets.scene_index.shape[0]} (or their scenes differ): the adapter's collate and the backbone "
            f"disagree on the agent rows"
        )


@torch.no_grad()
def evaluate(cfg: DictConfig, out_dir: Path, backbone: Backbone | None = None) -> dict[str, Any]:
    """Run validation metrics or write the test submission; returns a summary dict (also written as JSON).

    Raises:
        EvaluationError: before any work for a bad ``mode`` / ``eval_scope`` / ``limit_scenes``, an empty split or
            ``ckpt_path=null`` with a trainable model; after the loop when no agent was scored.
    """
    check_options(cfg)
    womd_meta, womd_shard = _womd_submission_options(cfg)
    num_scenes = len(SceneDataset(split_dir(cfg, cfg.split)))  # opens the cache index only
    if num_scenes == 0:
        raise EvaluationError(f"split {cfg.split!r} of {cfg.data.name} ({split_dir(cfg, cfg.split)}) has no scenes")
    check_cache_matches(
        split_dir(cfg, cfg.split),
        str(cfg.data.name),
        history_steps=int(cfg.data.num_historical_steps),
        future_steps=int(cfg.data.num_future_steps),
    )
    if backbone is None:
        backbone = build_backbone(cfg)  # with ckpt_path=null: the bare model, checked before any other work
        check_weights(cfg, backbone)
    torch.manual_seed(int(cfg.seed))
    save_run_config(cfg, out_dir)
    device = torch.device("cuda" if cfg.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
    backbone = backbone.to(device).eval()
    adapter = backbone.make_adapter()
    dataset = SceneDataset(split_dir(cfg, cfg.split), transform=adapter)
    limit = num_scenes if cfg.limit_scenes is None else min(int(cfg.limit_scenes), num_scenes)
    loader = DataLoader(
        Subset(dataset, list(range(limit))),
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        collate_fn=worker_collate(adapter.collate, int(cfg.num_workers)),
    )
    # K = 6 needs 6 modes; a single-mode baseline is scored at K = 1 only (its one guess)
    ks = tuple(sorted({1, min(6, int(backbone.num_modes))}))
    # AV2 metrics for every agent, plus the Waymo / pedestrian ones for the datasets of those conventions
    metrics = ForecastMetricSuite(
        ks=ks, datasets=METRIC_DATASETS, num_modes=int(backbone.num_modes), num_future_steps=backbone.num_future_steps
    ).to(device)
    submission = SubmissionBuilder() if cfg.mode == "test" else None
    required: dict[str, set[str]] = {}  # WOMD: each scene's tracks to predict (FOCAL / SCORED), from the batch rows
    if womd_meta is not None:  # mode=test data=womd
        if not womd_meta.num_model_parameters:  # unset: the evaluated model's count
            count = format_parameter_count(sum(p.numel() for p in backbone.parameters()))
            womd_meta = dataclasses.replace(womd_meta, num_model_parameters=count)
        submission = WomdSubmissionBuilder(womd_meta, scenarios_per_shard=womd_shard)
    scored = 0
    plotted = 0
    for batch in tqdm(loader, desc=f"{cfg.mode} {cfg.data.name}", unit="batch"):
        batch = batch.to(device)
        description = describe_batch(batch).to(device)
        forecast = backbone(batch)
        targets = backbone.eval_targets(batch)
        _check_rows(description, targets, forecast)
        chosen = select_agents(targets, str(cfg.eval_scope))
        prob = torch.softmax(forecast.pi.float(), dim=-1)
        if cfg.mode == "val":
            mask = chosen & targets.valid.any(dim=-1)
            if bool(mask.any()):
                metrics.update(forecast.loc, prob, targets, mask)
                scored += int(mask.sum())
        scene_xy = backbone.to_scene_frame(batch, forecast.loc).double()
        city_xy = scene_xy + description.origin[description.agent_scene, None, None, :2]
        if submission is not None and bool(chosen.any()):
            rows = chosen.nonzero().flatten().tolist()
            scenes = description.agent_scene.tolist()
            submission.add(
                [description.scenario_ids[scenes[r]] for r in rows],
                [description.track_ids[r] for r in rows],
                city_xy[chosen].cpu().numpy(),
                prob[chosen].cpu().numpy(),
            )
            scored += len(rows)
        if womd_meta is not None:  # every scene of the batch, with its tracks to predict
            for scenario_id in description.scenario_ids:
                required.setdefault(scenario_id, set())
            scenes = description.agent_scene.tolist()
            for r in select_agents(targets, "scored").nonzero().flatten().tolist():
                required[description.scenario_ids[scenes[r]]].add(description.track_ids[r])
        plotted = _plot(cfg, out_dir, dataset, description, chosen, scene_xy, prob, plotted)
    if not scored:
        what = "with an observed future " if cfg.mode == "val" else ""
        raise EvaluationError(
            f"no agent was scored on split {cfg.split!r} of {cfg.data.name} ({limit} scenes) with "
            f"eval_scope={cfg.eval_scope!r}: no {' or '.join(_scope_roles(str(cfg.eval_scope)))} agent {what}"
            f"in any scene"
        )
    summary: dict[str, Any] = {
        "mode": cfg.mode,
        "dataset": cfg.data.name,
        "split": cfg.split,
        "ckpt_path": cfg.ckpt_path,
    }
    if cfg.mode == "val":
        values = {k: float(v) for k, v in metrics.compute().items()}
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if bad:
            raise EvaluationError(
                f"non-finite metrics on split {cfg.split!r} with eval_scope={cfg.eval_scope!r}: {', '.join(bad)}"
            )
        summary["metrics"] = values
        summary["num_agents"] = scored
        print(format_table(values), flush=True)
    else:
        if isinstance(submission, WomdSubmissionBuilder):
            if womd_meta is not None and womd_meta.unset():
                print(f"warning: {womd_meta.unset_message()}", file=sys.stderr, flush=True)
            path = submission.write(out_dir / "submission.tar.gz", required=required, warn_unset=False)
        else:
            path = submission.write(out_dir / "submission.parquet")
        summary["submission"] = str(path)
        summary["num_agents"] = scored
        print(f"wrote {path}", flush=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(summary, indent=2))
    return summary


def _womd_submission_options(cfg: DictConfig) -> tuple[WomdSubmissionMetadata | None, int]:
    """For ``mode=test data=womd``: the checked ``submission`` metadata and shard size (``None`` otherwise).

    Raises:
        EvaluationError: ``eval_scope=focal`` (only the first track to predict of each scene: Waymo refuses it),
            or bad ``submission.*`` values; both before any work.
    """
    if cfg.mode != "test" or str(cfg.data.name) != "womd":
        return None, 0
    if cfg.eval_scope != "scored":
        raise EvaluationError(
            f"mode=test data=womd writes the Waymo challenge file, which needs every track to predict of each scene: "
            f"pass eval_scope=scored (the WOMD default), not eval_scope={cfg.eval_scope!r}"
        )
    values: dict[str, Any] = dict(OmegaConf.to_container(cfg.get("submission") or OmegaConf.create({}), resolve=True))
    shard = values.pop("scenarios_per_shard", None)
    shard = DEFAULT_SCENARIOS_PER_SHARD if shard is None else shard
    if isinstance(shard, bool) or not isinstance(shard, int) or shard < 1:
        raise EvaluationError(f"submission.scenarios_per_shard={shard!r} must be a positive integer")
    try:
        return WomdSubmissionMetadata.from_mapping(values), shard
    except ValueError as exc:
        raise EvaluationError(str(exc)) from exc


def _scope_roles(scope: str) -> tuple[str, ...]:
    return ("focal",) if scope == "focal" else ("focal", "scored")


def _plot(cfg, out_dir, dataset, description: BatchDescription, chosen, scene_xy, prob, plotted: int) -> int:
    if plotted >= int(cfg.num_plots):
        return plotted
    from smartpretrain.viz.forecast_plot import save_forecast_png

    for b, scenario_id in enumerate(description.scenario_ids):
        if plotted >= int(cfg.num_plots):
            break
        rows = (chosen & (description.agent_scene == b)).nonzero().flatten()
        if len(rows) == 0:
            continue
        r = int(rows[0])
        scene = dataset.caches[0].get(scenario_id)  # the untransformed Scene, for drawing
        trajectories, probabilities = scene_xy[r].cpu().numpy(), prob[r].cpu().numpy()
        png = save_forecast_png(scene, trajectories, probabilities, out_dir / "plots" / f"{scenario_id}.png")
        # the plotted forecast as numbers (plain arrays: np.load reads it without pickle), for comparison figures
        with atomic_output(png.with_suffix(".npz")) as tmp, open(tmp, "wb") as f:
            np.savez(f, trajectories=trajectories, probabilities=probabilities,
                     track_id=np.array(description.track_ids[r]))  # fmt: skip
        plotted += 1
    return plotted
