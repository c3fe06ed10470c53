"""Embed the agents of a cache split with a backbone: the batch loop of the embedding API.

* :func:`embed_batch`: one collated batch -> :class:`~smartpretrain.embeddings.records.EmbeddingRecords`, through
  :meth:`~smartpretrain.backbones.base.Backbone.embed_agents`, whose rows carry their ids (scenario, track,
  dataset, role, step) from the batch's :class:`~smartpretrain.backbones.base.BatchDescription`; nothing here
  reads a backbone's own batch fields;
* :func:`iter_cache_embeddings`: the first N scenes of a split through the backbone's adapter, batch by batch,
  with a progress bar;
* :func:`embed_cache`: those records written to one file with their :class:`EmbeddingMetadata`.

Deterministic: the backbone runs in eval mode (dropout and stochastic depth off) under ``torch.no_grad``, scenes in
cache order in batches of a fixed size, rows in the backbone's order within a batch, so the same weights, cache
and ``batch_size`` give the same file (with or without DataLoader workers). Another ``batch_size`` regroups the
scenes, which moves QCNet's vectors by float round-off (~1e-5 on the tiny test model). The backbone's train / eval
mode is restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from smartpretrain.backbones.base import Backbone
from smartpretrain.data.cache import INDEX_NAME
from smartpretrain.data.datamodule import SceneDataset
from smartpretrain.data.worker_transfer import worker_collate
from smartpretrain.embeddings.records import (
    AgentSelection,
    CacheSplit,
    EmbeddingMetadata,
    EmbeddingRecords,
    EmbeddingWriter,
    QueryReduction,
    role_name,
)
from smartpretrain.io.checkpoint_sources import sha256_file

__all__ = [
    "EmbeddedCache",
    "ExtractSettings",
    "WeightsProvenance",
    "cache_fingerprint",
    "embed_batch",
    "embed_cache",
    "embedding_dim",
    "iter_cache_embeddings",
    "model_name",
]


@dataclass(frozen=True)
class ExtractSettings:
    """How a split is embedded.

    Attributes:
        agents: which agents of each scene become records.
        reduction: how an agent's Q query-step embeddings become one vector.
        batch_size: scenes per forward pass.
        num_workers: DataLoader worker processes (0: in this process).
        limit_scenes: embed the first N scenes of the split (None: all).
        device: where the backbone runs (``"cpu"``, ``"cuda"``, ...).
    """

    agents: AgentSelection = AgentSelection.FOCAL
    reduction: QueryReduction = QueryReduction.LAST
    batch_size: int = 8
    num_workers: int = 0
    limit_scenes: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "agents", AgentSelection(self.agents))
        object.__setattr__(self, "reduction", QueryReduction(self.reduction))
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if int(self.num_workers) < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.limit_scenes is not None and int(self.limit_scenes) < 1:
            raise ValueError(f"limit_scenes must be >= 1 or None, got {self.limit_scenes}")


@dataclass(frozen=True)
class WeightsProvenance:
    """Where a backbone's weights came from, as recorded in the file (see :class:`EmbeddingMetadata`)."""

    model_config: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None
    branch: str | None = None
    seed: int | None = None


@dataclass(frozen=True)
class EmbeddedCache:
    """What :func:`embed_cache` wrote: the file, its metadata and how many records it holds."""

    path: Path
    metadata: EmbeddingMetadata
    num_records: int


def cache_fingerprint(split_dir: str | Path) -> str:
    """sha256 of the split's ``index.parquet``, which lists every scene with the place and crc32 of its record: it
    changes whenever a scene is added, removed or re-encoded (the manifest's wall times and paths do not count)."""
    return sha256_file(Path(split_dir) / INDEX_NAME)


def model_name(backbone: Backbone) -> str:
    """``module.QualName`` of the backbone's class (the ``model`` of the metadata)."""
    cls = type(backbone)
    return f"{cls.__module__}.{cls.__qualname__}"


def embedding_dim(backbone: Backbone) -> int:
    """D of the backbone's agent embeddings (the width of each vector after the query reduction).

    Raises:
        ValueError: the backbone has no agent embeddings (e.g. a parameter-free baseline).
    """
    try:
        return int(backbone.embedding_dim)
    except NotImplementedError as exc:
        raise ValueError(f"{type(backbone).__name__} has no agent embeddings to store ({exc})") from None


def embed_batch(backbone: Backbone, batch: Any, agents: AgentSelection, reduction: QueryReduction) -> EmbeddingRecords:
    """The records of one collated batch (on the backbone's device): the selected agents' reduced embeddings."""
    emb = backbone.embed_agents(batch)
    ids = emb.ids
    assert ids is not None  # embed_agents identifies every row
    keep = agents.mask(ids.role)
    rows = keep.nonzero().flatten()
    vectors = reduction.reduce(emb.embeddings)[rows.to(emb.embeddings.device)]
    index = rows.tolist()
    return EmbeddingRecords(
        scenario_id=[ids.scenario_ids[i] for i in index],
        track_id=[ids.track_ids[i] for i in index],
        dataset=[ids.datasets[i] for i in index],
        role=[role_name(r) for r in ids.role[rows].tolist()],
        step=ids.step[rows].numpy(),
        vector=vectors.float().cpu().numpy(),
    )


def iter_cache_embeddings(
    backbone: Backbone, split_dir: str | Path, settings: ExtractSettings, progress: bool = True
) -> Iterator[EmbeddingRecords]:
    """Records of the first ``settings.limit_scenes`` scenes of ``split_dir``, one :class:`EmbeddingRecords` per
    batch (see the module docstring for the determinism)."""
    adapter = backbone.make_adapter()
    dataset = SceneDataset(split_dir, transform=adapter)
    limit = len(dataset) if settings.limit_scenes is None else min(int(settings.limit_scenes), len(dataset))
    loader = DataLoader(
        Subset(dataset, list(range(limit))),
        batch_size=int(settings.batch_size),
        shuffle=False,
        num_workers=int(settings.num_workers),
        collate_fn=worker_collate(adapter.collate, int(settings.num_workers)),
    )
    device = torch.device(settings.device)
    was_training = backbone.training
    backbone.to(device).eval()
    try:
        with torch.no_grad():
            for batch in tqdm(loader, desc=f"embed {Path(split_dir).name}", unit="batch", disable=not progress):
                yield embed_batch(backbone, batch.to(device), settings.agents, settings.reduction)
    finally:
        backbone.train(was_training)


def embed_cache(
    backbone: Backbone,
    split_dir: str | Path,
    path: str | Path,
    settings: ExtractSettings | None = None,
    weights: WeightsProvenance | None = None,
    progress: bool = True,
) -> EmbeddedCache:
    """Embed a split into one file at ``path`` (written atomically). The backbone is moved to ``settings.device``.

    Raises:
        ValueError: the backbone has no agent embeddings, or its vectors are not ``embedding_dim`` wide.
    """
    settings = settings or ExtractSettings()
    weights = weights or WeightsProvenance()
    split_dir = Path(split_dir)
    num_scenes = len(SceneDataset(split_dir))  # the index only
    if settings.limit_scenes is not None:
        num_scenes = min(num_scenes, int(settings.limit_scenes))
    metadata = EmbeddingMetadata(
        model=model_name(backbone),
        embedding_dim=embedding_dim(backbone),
        agents=settings.agents,
        reduction=settings.reduction,
        caches=(CacheSplit(str(split_dir.resolve()), cache_fingerprint(split_dir), num_scenes),),
        model_config=dict(weights.model_config),
        checkpoint=weights.checkpoint,
        checkpoint_sha256=weights.checkpoint_sha256,
        branch=weights.branch,
        seed=weights.seed,
    )
    with EmbeddingWriter(path, metadata) as writer:
        for records in iter_cache_embeddings(backbone, split_dir, settings, progress=progress):
            if len(records) and records.dim != metadata.embedding_dim:
                raise ValueError(
                    f"{type(backbone).__name__} returned {records.dim}-dimensional embeddings but declares "
                    f"embedding_dim={metadata.embedding_dim}"
                )
            writer.write(records)
    return EmbeddedCache(Path(path), metadata, writer.num_rows)
