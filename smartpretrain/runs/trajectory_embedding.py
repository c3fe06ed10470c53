"""The work behind ``python -m smartpretrain.train_embed`` (``train_embed.sh``): train a trajectory encoder
(:class:`~smartpretrain.tasks.trajectory_embedding.TrajectoryEmbeddingTask`) on the windows of a cache split or
of a mixture (``data=mix_*``: every component's split; batches drawn by the mixture weights, as pre-training does
with scenes), then embed the train windows (the bank) and the val windows (the queries) with the best checkpoint,
index the bank with FAISS, and score retrieval against the raw-coordinate and random references.

A mixture's components must share one step (``dt``): the encoder sees a fixed number of steps. With
``window.length_s=null`` the window runs to the end of the shortest scene length among them.

Run folder: ``config.yaml`` + ``seed.json``, ``checkpoints/`` (best by ``val_loss`` + ``last.ckpt``, exact
resume through ``resume=``), ``bank.parquet`` and ``queries.parquet`` (:mod:`smartpretrain.embeddings.records`;
their metadata names the encoder, its config with the window, the checkpoint and its sha256, and the cache),
``index/`` (:class:`~smartpretrain.retrieval.index.EmbeddingIndex`) and ``retrieval.json``
(:mod:`smartpretrain.retrieval.evaluation`, for each k of ``evaluate.ks``).

Refused before any work (:class:`TrainEmbedError`, one line): a bad window (``window.length_s`` not positive or
longer than the scenes, ``window.min_valid_fraction`` outside (0, 1]), a bad encoder or objective option, an
unknown ``index.kind``, a missing or empty split, a mixture whose components have different steps, and a split
without a single window.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from smartpretrain.data.batching import EpochBatchSampler, MixtureOrder, ResumableDataLoader, SampleKey, ShuffledOrder
from smartpretrain.data.cache import CacheError, SceneCache
from smartpretrain.data.datamodule import MixtureSpec
from smartpretrain.data.sampler import MixtureSampler
from smartpretrain.data.sources import DataSource, data_sources, mixture_spec
from smartpretrain.embeddings.extract import cache_fingerprint
from smartpretrain.embeddings.mining import MiningSchedule
from smartpretrain.embeddings.records import (
    AgentSelection,
    CacheSplit,
    EmbeddingFileError,
    EmbeddingMetadata,
    QueryReduction,
    write_embeddings,
)
from smartpretrain.embeddings.similarity import TrajectorySimilarity
from smartpretrain.embeddings.trajectories import TrajectorySet, TrajectoryWindow, WindowSpec, extract_windows
from smartpretrain.embeddings.trajectory_encoder import TrajectoryEncoder, TrajectoryEncoderConfig
from smartpretrain.io.atomic import atomic_write_json
from smartpretrain.io.checkpoint_sources import sha256_file
from smartpretrain.io.checkpoints import CheckpointError, load_checkpoint
from smartpretrain.retrieval.evaluation import maneuver_counts, query_sample, score_line, score_methods
from smartpretrain.retrieval.index import EmbeddingIndex, IndexKind, IndexSettings, RetrievalIndexError
from smartpretrain.runs.guards import RunConfigError, check_choice, check_range
from smartpretrain.runs.trainer import build_trainer, resume_checkpoint, save_run_config
from smartpretrain.tasks.trajectory_embedding import TrajectoryEmbeddingTask

__all__ = [
    "ENCODER_MODEL",
    "EXPECTED_ERRORS",
    "SplitInfo",
    "TrainEmbedError",
    "WindowDataModule",
    "WindowDataset",
    "embed_windows",
    "encoder_metadata",
    "load_encoder",
    "run",
    "split_info",
    "window_spec",
]

#: the ``model`` of the embedding metadata of this encoder's files
ENCODER_MODEL = f"{TrajectoryEncoder.__module__}.{TrajectoryEncoder.__qualname__}"
EXPECTED_ERRORS = (RunConfigError, CacheError, CheckpointError, EmbeddingFileError, RetrievalIndexError, ValueError)


class TrainEmbedError(RunConfigError):
    """A trajectory-embedding run that cannot give meaningful embeddings (bad option, no windows)."""


class WindowDataset(Dataset):
    """The windows of a :class:`TrajectorySet` as ``(positions [T, 2], valid [T])`` tensors; indexed by an int
    or by the :class:`~smartpretrain.data.batching.SampleKey` of the resumable batch sampler."""

    def __init__(self, windows: TrajectorySet) -> None:
        self.positions = torch.from_numpy(windows.positions)
        self.valid = torch.from_numpy(windows.valid)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, key: int | SampleKey) -> tuple[torch.Tensor, torch.Tensor]:
        index = key.index if isinstance(key, SampleKey) else int(key)
        return self.positions[index], self.valid[index]


@dataclass(frozen=True)
class SplitInfo:
    """A cache split feeding the run: where, its timeline (read from its first scene) and the scenes it gives."""

    source: DataSource
    dt: float
    steps_per_scene: int
    #: scenes windowed: all of the split's, or its first ``limit_scenes``
    num_scenes: int

    @property
    def path(self) -> Path:
        return self.source.path


def split_info(source: DataSource, limit_scenes: int | None) -> SplitInfo:
    """The split's step (s), steps per scene and scenes used.

    Raises:
        TrainEmbedError: the split is missing or empty.
    """
    if not source.path.is_dir():
        raise TrainEmbedError(f"cache split {source.path} does not exist (convert it first: smartpretrain.convert)")
    cache = SceneCache(source.path)
    try:
        if len(cache) == 0:
            raise TrainEmbedError(f"{source.path} has no scenes")
        scene = cache[0]
        count = len(cache) if limit_scenes is None else min(len(cache), int(limit_scenes))
        return SplitInfo(source, float(scene.dt), int(scene.num_steps), count)
    finally:
        cache.close()


def window_spec(cfg: DictConfig, splits: Sequence[SplitInfo]) -> WindowSpec:
    """``cfg.window`` on the splits' shared timeline (seconds → steps with the scenes' own ``dt``).

    Raises:
        TrainEmbedError: naming the option, or the two splits whose steps differ.
    """
    w = cfg.window
    first = splits[0]
    for other in splits[1:]:
        if not math.isclose(other.dt, first.dt, rel_tol=1e-6):
            raise TrainEmbedError(
                f"{first.path} has steps of {first.dt} s and {other.path} of {other.dt} s: one encoder needs one "
                f"timeline (leave one of them out of data.components)"
            )
    dt, num_steps = first.dt, min(s.steps_per_scene for s in splits)
    shortest = min(splits, key=lambda s: s.steps_per_scene).path
    check_choice("window.agents", w.agents, [a.value for a in AgentSelection])
    check_range("window.start_s", w.start_s, 0.0)
    start = round(float(w.start_s) / dt)
    if w.length_s is None:
        length = num_steps - start
    else:
        check_range("window.length_s", w.length_s, 1e-9)
        length = round(float(w.length_s) / dt)
    if length < 2 or start + length > num_steps:
        raise TrainEmbedError(
            f"window.start_s={w.start_s} + window.length_s={w.length_s} gives steps [{start}, {start + length}) "
            f"but the scenes of {shortest} have {num_steps} steps of {dt} s (and a window needs >= 2)"
        )
    frac = float(w.min_valid_fraction)
    if not 0.0 < frac <= 1.0:
        raise TrainEmbedError(f"window.min_valid_fraction must be in (0, 1], got {frac}")
    return WindowSpec(TrajectoryWindow(length, start), AgentSelection(w.agents), min_valid_fraction=frac)


def check_options(cfg: DictConfig) -> tuple[TrajectoryEncoderConfig, IndexSettings]:
    """The checks that need nothing but the config.

    Raises:
        TrainEmbedError: naming the option and what it accepts.
    """
    try:
        check_choice("objective.similarity", cfg.objective.similarity, [s.value for s in TrajectorySimilarity])
        check_range("objective.margin", cfg.objective.margin, 1e-9)
        check_range("batch_size", cfg.batch_size, 8, integer=True)
        check_range("num_workers", cfg.num_workers, 0, integer=True)
        check_range("limit_scenes", cfg.limit_scenes, 1, integer=True, allow_none=True)
        check_range("windows_per_epoch", cfg.get("windows_per_epoch"), 1, integer=True, allow_none=True)
        check_range("evaluate.max_queries", cfg.evaluate.max_queries, 1, integer=True, allow_none=True)
        for k in cfg.evaluate.ks:
            check_range("evaluate.ks", k, 1, integer=True)
        check_choice("index.kind", cfg.index.kind, [k.value for k in IndexKind])
        MiningSchedule(**OmegaConf.to_container(cfg.objective.schedule))
        encoder = {k: v for k, v in OmegaConf.to_container(cfg.encoder).items()}
        settings = IndexSettings(**OmegaConf.to_container(cfg.index))
        return TrajectoryEncoderConfig(num_steps=2, **encoder), settings
    except (ValueError, TypeError) as exc:
        raise TrainEmbedError(str(exc)) from None


def encoder_metadata(
    config: TrajectoryEncoderConfig,
    spec: WindowSpec,
    cfg: DictConfig,
    splits: Sequence[SplitInfo],
    checkpoint: Path | None,
) -> EmbeddingMetadata:
    """What made a file of this encoder's vectors (the window is part of the model config: another window is
    another model)."""
    model_config = {
        "encoder": asdict(config),
        "window": {
            "num_steps": spec.window.num_steps,
            "start_step": spec.window.start_step,
            "agents": str(spec.agents),
            "min_valid_fraction": spec.min_valid_fraction,
        },
        "similarity": str(cfg.objective.similarity),
    }
    return EmbeddingMetadata(
        model=ENCODER_MODEL,
        embedding_dim=config.embedding_dim,
        agents=spec.agents,
        reduction=QueryReduction.LAST,
        caches=tuple(CacheSplit(str(s.path.resolve()), cache_fingerprint(s.path), s.num_scenes) for s in splits),
        model_config=model_config,
        checkpoint=None if checkpoint is None else str(checkpoint),
        checkpoint_sha256=None if checkpoint is None else sha256_file(checkpoint),
        seed=int(cfg.seed),
    )


def load_encoder(path: str | Path) -> TrajectoryEncoder:
    """The encoder of a ``train_embed`` checkpoint (weights-only loading), in eval mode."""
    ckpt = load_checkpoint(path)
    hparams = ckpt.get("hyper_parameters") or {}
    if "encoder" not in hparams:
        raise CheckpointError(f"{path}: not a train_embed checkpoint (no encoder config in hyper_parameters)")
    encoder = TrajectoryEncoder(TrajectoryEncoderConfig(**hparams["encoder"]))
    prefix = "encoder."
    state = {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    encoder.load_state_dict(state)
    return encoder.eval()


@torch.no_grad()
def embed_windows(encoder: TrajectoryEncoder, windows: TrajectorySet, batch_size: int = 1024) -> np.ndarray:
    """``[N, D]`` embeddings of the windows (eval mode, fixed batches: deterministic)."""
    was_training = encoder.training
    encoder.eval()
    out = []
    positions, valid = torch.from_numpy(windows.positions), torch.from_numpy(windows.valid)
    for lo in range(0, len(windows), batch_size):
        out.append(encoder(positions[lo : lo + batch_size], valid[lo : lo + batch_size]).float().numpy())
    encoder.train(was_training)
    dim = encoder.config.embedding_dim
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def _windows(splits: Sequence[SplitInfo], spec: WindowSpec, role: str) -> list[TrajectorySet]:
    """The windows of each split (its first ``num_scenes`` scenes), one set per split."""
    out = []
    for split in splits:
        windows = extract_windows(split.path, spec, limit_scenes=split.num_scenes)
        if len(windows) < 2:
            raise TrainEmbedError(
                f"{role} split {split.path} gives {len(windows)} windows of {spec.window.num_steps} steps "
                f"(agents={spec.agents}, min_valid_fraction={spec.min_valid_fraction}): nothing to learn from"
            )
        out.append(windows)
    return out


class WindowDataModule(pl.LightningDataModule):
    """Train windows in resumable, seeded batches (a new order each epoch; the position is saved in checkpoints),
    val windows in order.

    Args:
        train: the train windows, one set per source (concatenated in this order).
        val: the val windows.
        mixture: draw train windows from the sources by these weights (weights None: by window count), with
            ``num_samples`` windows per epoch; None: one shuffled pass over all windows.
    """

    def __init__(
        self,
        train: Sequence[TrajectorySet],
        val: TrajectorySet,
        batch_size: int,
        seed: int,
        num_workers: int,
        mixture: MixtureSpec | None = None,
    ) -> None:
        super().__init__()
        self.sizes = [len(t) for t in train]
        #: all train windows, in source order (the run's bank: concatenated once, shared with the dataset)
        self.train_windows = TrajectorySet.concat(train, val.num_steps)
        self.train_set = WindowDataset(self.train_windows)
        self.val_set = WindowDataset(val)
        self.batch_size, self.seed, self.num_workers = int(batch_size), int(seed), int(num_workers)
        self.mixture = mixture

    def _mixture_sampler(self, rank: int, world: int) -> MixtureSampler:
        m = self.mixture
        assert m is not None
        return MixtureSampler(
            self.sizes, m.weights, m.num_samples, replacement=m.replacement, seed=m.seed, num_replicas=world, rank=rank
        )

    def batch_sampler(self, num_replicas: int | None = None, rank: int | None = None) -> EpochBatchSampler:
        n = len(self.train_set)
        if self.mixture is not None:
            order: ShuffledOrder | MixtureOrder = MixtureOrder(self._mixture_sampler)
            n = self.mixture.num_samples or n
        else:
            order = ShuffledOrder(range(n), seed=self.seed)
        drop_last = n > self.batch_size
        return EpochBatchSampler(order, self.batch_size, self.seed, drop_last, num_replicas=num_replicas, rank=rank)

    def steps_per_epoch(self, world: int) -> int:
        """Train batches per epoch on each of ``world`` ranks (known before the process group exists)."""
        return len(self.batch_sampler(num_replicas=world, rank=0))

    def train_dataloader(self) -> DataLoader:
        sampler = self.batch_sampler()
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            sampler.set_epoch(int(trainer.current_epoch))
        return ResumableDataLoader(self.train_set, batch_sampler=sampler, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)


def _counts(names: Sequence[str]) -> dict[str, int]:
    values, counts = np.unique(np.asarray(names, dtype=str), return_counts=True)
    return {str(v): int(c) for v, c in zip(values, counts, strict=True)}


def _world(cfg: DictConfig) -> int:
    """Processes of the run from the trainer config (1 unless devices / num_nodes are given as numbers)."""
    devices, nodes = cfg.trainer.get("devices", 1), cfg.trainer.get("num_nodes", 1)
    count = devices if isinstance(devices, int) else len(devices) if isinstance(devices, list | ListConfig) else 1
    return max(int(count), 1) * max(int(nodes if isinstance(nodes, int) else 1), 1)


def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Train, embed, index and score; returns the summary also written to ``retrieval.json``.

    Raises:
        TrainEmbedError: before any training, for the cases of the module docstring.
    """
    encoder_options, index_settings = check_options(cfg)
    train_sources, val_sources = data_sources(cfg, "train"), data_sources(cfg, "val")
    mixture = mixture_spec(cfg, train_sources)
    if mixture is not None:
        # the data config's num_samples counts scenes; windows are this run's samples
        mixture = dataclasses.replace(mixture, num_samples=cfg.get("windows_per_epoch"))
    limit = cfg.limit_scenes
    train_splits = [split_info(s, limit) for s in train_sources]
    val_splits = [split_info(s, limit) for s in val_sources]
    spec = window_spec(cfg, train_splits + val_splits)
    resume = resume_checkpoint(cfg, out_dir)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    save_run_config(cfg, out_dir)
    train_parts = _windows(train_splits, spec, "train")
    val = TrajectorySet.concat(_windows(val_splits, spec, "val"), spec.window.num_steps)
    config = TrajectoryEncoderConfig(**{**asdict(encoder_options), "num_steps": spec.window.num_steps})
    data = WindowDataModule(train_parts, val, int(cfg.batch_size), int(cfg.seed), int(cfg.num_workers), mixture)
    train = data.train_windows
    total_steps = math.ceil(data.steps_per_epoch(_world(cfg)) / int(cfg.trainer.get("accumulate_grad_batches") or 1))
    total_steps *= int(cfg.max_epochs)
    task = TrajectoryEmbeddingTask(
        encoder=config,
        similarity=str(cfg.objective.similarity),
        schedule=MiningSchedule(**OmegaConf.to_container(cfg.objective.schedule)),
        margin=float(cfg.objective.margin),
        positive_quantile=float(cfg.objective.positive_quantile),
        negative_quantile=float(cfg.objective.negative_quantile),
        lr=float(cfg.optim.lr),
        weight_decay=float(cfg.optim.weight_decay),
        warmup_fraction=float(cfg.optim.warmup_fraction),
        seed=int(cfg.seed),
        total_steps=total_steps,
    )
    trainer, best = build_trainer(cfg, out_dir, use_distributed_sampler=False)
    parts = ", ".join(f"{s.source.name} {len(t)}" for s, t in zip(train_splits, train_parts, strict=True))
    print(
        f"training a {config.embedding_dim}-d trajectory encoder ({cfg.objective.similarity} mining) on "
        f"{len(train)} windows of {spec.window.num_steps} steps ({parts}; {len(val)} for validation) -> {out_dir}",
        flush=True,
    )
    trainer.fit(task, datamodule=data, ckpt_path=str(resume) if resume else None, weights_only=True)
    if not trainer.is_global_zero:
        return {}
    checkpoint = Path(best.best_model_path) if best is not None and best.best_model_path else None
    encoder = load_encoder(checkpoint) if checkpoint is not None else task.encoder
    return finish(cfg, out_dir, encoder, spec, train, val, train_splits, val_splits, checkpoint, index_settings)


def finish(
    cfg: DictConfig,
    out_dir: Path,
    encoder: TrajectoryEncoder,
    spec: WindowSpec,
    train: TrajectorySet,
    val: TrajectorySet,
    train_splits: Sequence[SplitInfo],
    val_splits: Sequence[SplitInfo],
    checkpoint: Path | None,
    index_settings: IndexSettings,
) -> dict[str, Any]:
    """Embed bank and queries, build and save the index, score retrieval; write ``retrieval.json``."""
    bank_meta = encoder_metadata(encoder.config, spec, cfg, train_splits, checkpoint)
    query_meta = encoder_metadata(encoder.config, spec, cfg, val_splits, checkpoint)
    bank_vectors, query_vectors = embed_windows(encoder, train), embed_windows(encoder, val)
    write_embeddings(out_dir / "bank.parquet", train.ids(bank_vectors), bank_meta)
    write_embeddings(out_dir / "queries.parquet", val.ids(query_vectors), query_meta)
    index = EmbeddingIndex.build(train.ids(bank_vectors), bank_meta, index_settings)
    index.save(out_dir / "index")
    queries = val
    pick = query_sample(len(val), cfg.evaluate.max_queries, int(cfg.seed))
    if pick is not None:
        queries, query_vectors = val.take(pick), query_vectors[pick]
    ks = [int(k) for k in cfg.evaluate.ks]
    _, rows = index.search(query_vectors, max(ks))
    scores = score_methods(queries, train, {"embedding": rows}, ks, seed=int(cfg.seed))
    summary = {
        "embedding_dim": encoder.config.embedding_dim,
        "similarity": str(cfg.objective.similarity),
        "index": str(index_settings.kind),
        "num_bank": len(train),
        "bank_by_dataset": _counts(train.dataset),
        "num_queries": len(queries),
        "window_steps": spec.window.num_steps,
        "maneuvers_bank": maneuver_counts(train.maneuver),
        "maneuvers_queries": maneuver_counts(queries.maneuver),
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "seed": int(cfg.seed),
        "scores": [s.as_dict() for s in scores],
    }
    atomic_write_json(out_dir / "retrieval.json", summary)
    for s in scores:
        print(score_line(s), flush=True)
    print(f"wrote {out_dir / 'retrieval.json'}", flush=True)
    return summary
