"""The work behind ``python -m smartpretrain.embed`` (``embed.sh``): checks, weights provenance, and the embedding
run that writes one parquet file of per-agent records of a cache split (:mod:`smartpretrain.embeddings`).

Writes ``embeddings.parquet`` in the run folder (or ``output=<path>``) beside the resolved ``config.yaml`` and
``seed.json``; the records and the metadata that travels with them: :mod:`smartpretrain.embeddings.records`.
Weights come through the run layer (:func:`smartpretrain.runs.trainer.build_backbone`, weights-only loading):
``ckpt_path`` (forecasting weights), or ``pretrained_ckpt`` with ``pretrained_branch`` (one branch of an SSL
checkpoint), or neither (the model as initialised under ``seed``: the "no pre-training" reference of a probe).

Refused before any work (:class:`EmbedError`; through ``python -m`` one ``smartpretrain.embed: error: ...`` line
and exit status 2): an unknown ``agents`` / ``reduction``, ``batch_size`` or ``limit_scenes`` < 1,
``num_workers`` < 0, both ``ckpt_path`` and ``pretrained_ckpt``, a model without agent embeddings, and a split
that is missing, empty or holds another dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from smartpretrain.data.cache import CacheError
from smartpretrain.data.datamodule import SceneDataset
from smartpretrain.embeddings.extract import (
    EmbeddedCache,
    ExtractSettings,
    WeightsProvenance,
    embed_cache,
    embedding_dim,
)
from smartpretrain.embeddings.records import AgentSelection, EmbeddingFileError, QueryReduction
from smartpretrain.io.checkpoint_sources import resolve_checkpoint, sha256_file
from smartpretrain.io.checkpoints import CheckpointError
from smartpretrain.runs.guards import RunConfigError, check_cache_matches, check_choice, check_range
from smartpretrain.runs.trainer import build_backbone, download_options, save_run_config, split_dir

#: the file written in the run folder when ``output`` is null
DEFAULT_OUTPUT = "embeddings.parquet"
#: failures reported as one line (a bad option, a missing or empty split, bad weights or file), not a traceback
EXPECTED_ERRORS = (RunConfigError, CacheError, CheckpointError, EmbeddingFileError, FileNotFoundError, ValueError)


class EmbedError(RunConfigError):
    """An embedding run that cannot give a meaningful file (bad option, empty split, no embeddings)."""


def check_options(cfg: DictConfig) -> None:
    """The checks that need nothing but the config.

    Raises:
        EmbedError: naming the option and what it accepts.
    """
    try:
        check_choice("agents", cfg.agents, [a.value for a in AgentSelection])
        check_choice("reduction", cfg.reduction, [r.value for r in QueryReduction])
        check_range("batch_size", cfg.batch_size, 1, integer=True)
        check_range("num_workers", cfg.num_workers, 0, integer=True)
        check_range("limit_scenes", cfg.limit_scenes, 1, integer=True, allow_none=True)
    except RunConfigError as exc:
        raise EmbedError(str(exc)) from None
    if cfg.get("ckpt_path") and cfg.get("pretrained_ckpt"):
        raise EmbedError(
            "both ckpt_path and pretrained_ckpt are set: pass one, ckpt_path for forecasting weights or "
            "pretrained_ckpt (with pretrained_branch=online|momentum) for an SSL checkpoint"
        )


def weights_provenance(cfg: DictConfig) -> WeightsProvenance:
    """Where the weights :func:`~smartpretrain.runs.trainer.build_backbone` loaded came from (source, sha256 of
    the file, SSL branch), for the file's metadata. Call after ``build_backbone``: a remote source is then a cache
    hit, not a second download."""
    model_config: dict[str, Any] = OmegaConf.to_container(cfg.model, resolve=True)  # type: ignore[assignment]
    if cfg.get("pretrained_ckpt"):
        source, pin, branch = str(cfg.pretrained_ckpt), cfg.get("pretrained_sha256"), str(cfg.pretrained_branch)
    elif cfg.get("ckpt_path"):
        source, pin, branch = str(cfg.ckpt_path), cfg.get("ckpt_sha256"), None
    else:
        return WeightsProvenance(model_config=model_config, seed=int(cfg.seed))
    local = resolve_checkpoint(source, sha256=pin, progress=False, **download_options(cfg))
    return WeightsProvenance(
        model_config=model_config,
        checkpoint=source,
        checkpoint_sha256=sha256_file(local),
        branch=branch,
        seed=int(cfg.seed),
    )


def embed(cfg: DictConfig, out_dir: Path) -> EmbeddedCache:
    """Embed ``{cache_root}/{data.name}/{split}`` as ``cfg`` says; returns what was written.

    Raises:
        EmbedError: before any work, for the cases of the module docstring.
    """
    check_options(cfg)
    split = split_dir(cfg, str(cfg.split))
    check_cache_matches(
        split,
        str(cfg.data.name),
        history_steps=int(cfg.model.get("num_historical_steps", cfg.data.num_historical_steps)),
    )
    if len(SceneDataset(split)) == 0:  # opens the cache index only
        raise EmbedError(f"split {cfg.split!r} of {cfg.data.name} ({split}) has no scenes")
    torch.manual_seed(int(cfg.seed))  # the initial weights of whatever a checkpoint does not cover
    backbone = build_backbone(cfg, out_dir)
    try:
        embedding_dim(backbone)
    except ValueError as exc:
        raise EmbedError(f"model={type(backbone).__name__}: {exc}") from None
    weights = weights_provenance(cfg)
    save_run_config(cfg, out_dir)
    device = "cuda" if cfg.accelerator == "gpu" and torch.cuda.is_available() else "cpu"
    settings = ExtractSettings(
        agents=AgentSelection(cfg.agents),
        reduction=QueryReduction(cfg.reduction),
        batch_size=int(cfg.batch_size),
        num_workers=int(cfg.num_workers),
        limit_scenes=None if cfg.limit_scenes is None else int(cfg.limit_scenes),
        device=device,
    )
    path = Path(cfg.output) if cfg.get("output") else out_dir / DEFAULT_OUTPUT
    written = embed_cache(backbone, split, path, settings, weights)
    print(
        f"wrote {written.num_records} {settings.agents} agent embeddings (D={written.metadata.embedding_dim}) of "
        f"{written.metadata.num_scenes} scenes to {written.path}",
        flush=True,
    )
    return written
