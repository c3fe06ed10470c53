"""Evaluate a checkpoint (``val.sh`` / ``test.sh``).

    python -m smartpretrain.evaluate mode=val data=av2 cache_root=cache ckpt_path=<path | https://... | hf://...>
    python -m smartpretrain.evaluate mode=test data=av2 cache_root=cache ckpt_path=...   # AV2 submission parquet

``val`` prints a metrics table (overall and per dataset) and writes ``metrics.json``; ``test`` writes
``submission.parquet`` (av2's ``ChallengeSubmission``, global frame) for the scored agents of each scene.
``num_plots=N`` also saves PNGs of the first N scenes with their K predicted futures.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from smartpretrain.backbones.base import Backbone
from smartpretrain.data.cache import atomic_write_text
from smartpretrain.data.datamodule import SceneDataset
from smartpretrain.data.worker_transfer import worker_collate
from smartpretrain.finetune import build_backbone, save_run_config, split_dir
from smartpretrain.io.submission import SubmissionBuilder
from smartpretrain.metrics.forecasting import ForecastingMetrics, select_agents

log = logging.getLogger("smartpretrain.evaluate")


def _flat(values: Any) -> list:
    """PyG collates a per-scene list attribute into a list of lists; flatten it."""
    if values and isinstance(values[0], (list, tuple)):
        return [v for sub in values for v in sub]
    return list(values)


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def format_table(metrics: dict[str, float]) -> str:
    """Metrics as a two-column table, overall first, then per dataset."""
    rows = sorted(metrics.items(), key=lambda kv: ("/" in kv[0], kv[0]))
    width = max((len(k) for k in metrics), default=10)
    return "\n".join([f"{'metric':<{width}}  value", "-" * (width + 10)] + [f"{k:<{width}}  {v:.4f}" for k, v in rows])


@torch.no_grad()
def evaluate(cfg: DictConfig, out_dir: Path, backbone: Backbone | None = None) -> dict[str, Any]:
    """Run validation metrics or write the test submission; returns a summary dict (also written as JSON)."""
    torch.manual_seed(int(cfg.seed))
    save_run_config(cfg, out_dir)
    backbone = backbone if backbone is not None else build_backbone(cfg)
    device = torch.device("cuda" if cfg.accelerator == "gpu" and torch.cuda.is_available() else "cpu")
    backbone = backbone.to(device).eval()
    adapter = backbone.make_adapter()
    dataset = SceneDataset(split_dir(cfg, cfg.split), transform=adapter)
    indices = range(len(dataset) if cfg.limit_scenes is None else min(int(cfg.limit_scenes), len(dataset)))
    loader = DataLoader(
        Subset(dataset, list(indices)),
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        collate_fn=worker_collate(adapter.collate, int(cfg.num_workers)),
    )
    # K = 6 needs 6 modes; a single-mode baseline is scored at K = 1 only (its one guess)
    ks = tuple(sorted({1, min(6, int(backbone.num_modes))}))
    metrics = ForecastingMetrics(ks=ks, datasets=("av1", "av2", "womd", "synthetic")).to(device)
    submission = SubmissionBuilder() if cfg.mode == "test" else None
    plotted = 0
    for batch in tqdm(loader, desc=f"{cfg.mode} {cfg.data.name}", unit="batch"):
        batch = batch.to(device)
        forecast = backbone(batch)
        targets = backbone.eval_targets(batch)
        chosen = select_agents(targets, str(cfg.eval_scope))
        prob = torch.softmax(forecast.pi.float(), dim=-1)
        if cfg.mode == "val":
            mask = chosen & targets.valid.any(dim=-1)
            if bool(mask.any()):
                groups = [targets.dataset[int(i)] for i in targets.scene_index[mask].tolist()]
                metrics.update(
                    forecast.loc[mask].float(), prob[mask], targets.target[mask].float(), targets.valid[mask], groups
                )
        scene_xy = backbone.to_scene_frame(batch, forecast.loc).double()
        origin = batch.origin.to(scene_xy.device).view(-1, 3)[targets.scene_index, :2]
        city_xy = scene_xy + origin[:, None, None, :]
        if submission is not None and bool(chosen.any()):
            scenario_ids = _as_list(batch.scenario_id)
            track_ids = _flat(batch["agent"].id)
            rows = chosen.nonzero().flatten().tolist()
            submission.add(
                [scenario_ids[int(targets.scene_index[r])] for r in rows],
                [track_ids[r] for r in rows],
                city_xy[chosen].cpu().numpy(),
                prob[chosen].cpu().numpy(),
            )
        plotted = _plot(cfg, out_dir, dataset, batch, targets, chosen, scene_xy, prob, plotted)
    summary: dict[str, Any] = {
        "mode": cfg.mode,
        "dataset": cfg.data.name,
        "split": cfg.split,
        "ckpt_path": cfg.ckpt_path,
    }
    if cfg.mode == "val":
        values = {k: float(v) for k, v in metrics.compute().items()}
        summary["metrics"] = values
        print(format_table(values), flush=True)
    else:
        path = submission.write(out_dir / "submission.parquet")
        summary["submission"] = str(path)
        print(f"wrote {path}", flush=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(summary, indent=2))
    return summary


def _plot(cfg, out_dir, dataset, batch, targets, chosen, scene_xy, prob, plotted: int) -> int:
    if plotted >= int(cfg.num_plots):
        return plotted
    from smartpretrain.viz.forecast_plot import save_forecast_png

    scenario_ids = _as_list(batch.scenario_id)
    for b, scenario_id in enumerate(scenario_ids):
        if plotted >= int(cfg.num_plots):
            break
        rows = (chosen & (targets.scene_index == b)).nonzero().flatten()
        if len(rows) == 0:
            continue
        r = int(rows[0])
        scene = dataset.caches[0].get(scenario_id)  # the untransformed Scene, for drawing
        save_forecast_png(
            scene, scene_xy[r].cpu().numpy(), prob[r].cpu().numpy(), out_dir / "plots" / f"{scenario_id}.png"
        )
        plotted += 1
    return plotted


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    evaluate(cfg, out_dir)


if __name__ == "__main__":
    main()
