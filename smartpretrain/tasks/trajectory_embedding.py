"""Training of compact trajectory embeddings (``train_embed.sh``): a Transformer encoder and a triplet loss whose
positives and negatives are mined by a trajectory similarity, on a schedule from hard to semi-hard to random.

One step, for a batch of B windows (:mod:`smartpretrain.embeddings.trajectories`) embedded as z = f(x):

    S = similarity(x)                       [B, B]  cosine of step directions, or of FFT magnitude spectra
    (a, p, n) = mine(S, z.detach(), phase)          phase = schedule(global_step / total_steps)
    L = mean_(a,p,n) max(0, ||z_a − z_p|| − ||z_a − z_n|| + margin)

The mining draws (the random phase) come from a generator seeded by ``(seed, global_step)``, so a resumed run
draws what the uninterrupted one would. Validation uses the random phase with a generator seeded by
``(seed, batch_idx)``: the same triplets every epoch, a comparable ``val_loss``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from smartpretrain.data.batching import sample_seed
from smartpretrain.embeddings.mining import MiningSchedule, MiningStrategy, mine_triplets, triplet_loss
from smartpretrain.embeddings.similarity import TrajectorySimilarity, pairwise_similarity
from smartpretrain.embeddings.trajectory_encoder import TrajectoryEncoder, TrajectoryEncoderConfig
from smartpretrain.tasks.optim import decay_groups, warmup_cosine

__all__ = ["TrajectoryEmbeddingTask"]

_TRAIN_STREAM, _VAL_STREAM = -3, -4  # sample_seed streams of the mining generators


class TrajectoryEmbeddingTask(pl.LightningModule):
    """The encoder and its triplet objective.

    Args:
        encoder: the encoder's config (a dict of :class:`TrajectoryEncoderConfig` fields, as a checkpoint stores it).
        similarity: how positives and negatives are chosen (``cosine`` | ``fft``).
        schedule: the mining phases, as fractions of training.
        margin: the triplet margin (embeddings are unit vectors when the encoder normalises: distances in [0, 2]).
        positive_quantile, negative_quantile: per anchor, positives are the items at or above this quantile of
            its similarity row, negatives those at or below.
        lr, weight_decay, warmup_fraction: AdamW with a linear warm-up and cosine decay to lr / 100, per step.
        seed: base of the mining generators.
        total_steps: optimizer steps of the whole run (the mining schedule and the lr schedule run over them). Give
            it: the fallback, Lightning's ``estimated_stepping_batches``, builds the train loader before a resumed
            run restores its position, which breaks exact resume.
    """

    def __init__(
        self,
        encoder: dict[str, Any] | TrajectoryEncoderConfig,
        similarity: str = "cosine",
        schedule: dict[str, float] | MiningSchedule | None = None,
        margin: float = 0.2,
        positive_quantile: float = 0.9,
        negative_quantile: float = 0.5,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_fraction: float = 0.05,
        seed: int = 0,
        total_steps: int | None = None,
    ) -> None:
        super().__init__()
        config = encoder if isinstance(encoder, TrajectoryEncoderConfig) else TrajectoryEncoderConfig(**encoder)
        plan = schedule if isinstance(schedule, MiningSchedule) else MiningSchedule(**(schedule or {}))
        self.similarity = TrajectorySimilarity(similarity)
        self.schedule = plan
        if margin <= 0:
            raise ValueError(f"margin must be > 0, got {margin}")
        self.save_hyperparameters(
            {
                "encoder": asdict(config),
                "similarity": str(self.similarity),
                "schedule": asdict(plan),
                "margin": float(margin),
                "positive_quantile": float(positive_quantile),
                "negative_quantile": float(negative_quantile),
                "lr": float(lr),
                "weight_decay": float(weight_decay),
                "warmup_fraction": float(warmup_fraction),
                "seed": int(seed),
                "total_steps": None if total_steps is None else int(total_steps),
            }
        )
        self.encoder = TrajectoryEncoder(config)

    @property
    def config(self) -> TrajectoryEncoderConfig:
        return self.encoder.config

    def forward(self, positions: Tensor, valid: Tensor) -> Tensor:
        return self.encoder(positions, valid)

    def _total_steps(self) -> int:
        if self.hparams.total_steps is not None:
            return max(int(self.hparams.total_steps), 1)
        return max(int(self.trainer.estimated_stepping_batches), 1) if self._trainer is not None else 1

    def _progress(self) -> float:
        return min(self.global_step / self._total_steps(), 1.0)

    def _step(self, batch: tuple[Tensor, Tensor], strategy: MiningStrategy, generator: torch.Generator) -> dict:
        positions, valid = batch
        z = self.encoder(positions, valid)
        with torch.no_grad():
            similarity = pairwise_similarity(self.similarity, positions, valid)
        hp = self.hparams
        triplets = mine_triplets(
            similarity,
            z.detach(),
            strategy,
            margin=hp.margin,
            positive_quantile=hp.positive_quantile,
            negative_quantile=hp.negative_quantile,
            generator=generator,
        )
        loss = triplet_loss(z, triplets, hp.margin)
        count = len(triplets.anchor)
        with torch.no_grad():
            if count:
                d_ap = (z[triplets.anchor] - z[triplets.positive]).norm(dim=-1)
                d_an = (z[triplets.anchor] - z[triplets.negative]).norm(dim=-1)
                active = (d_ap - d_an + hp.margin > 0).float().mean()
            else:
                active = torch.zeros(())
        return {"loss": loss, "triplets": float(count), "active": active}

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        strategy = self.schedule.strategy(self._progress())
        g = torch.Generator().manual_seed(sample_seed(self.hparams.seed, self.global_step, _TRAIN_STREAM))
        out = self._step(batch, strategy, g)
        size = len(batch[0])
        self.log("train_loss", out["loss"], prog_bar=True, batch_size=size)
        self.log("train_triplets", out["triplets"], batch_size=size)
        self.log("train_active", out["active"], batch_size=size)
        self.log("mining_phase", float(list(MiningStrategy).index(strategy)), batch_size=size)
        return out["loss"]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        g = torch.Generator().manual_seed(sample_seed(self.hparams.seed, batch_idx, _VAL_STREAM))
        out = self._step(batch, MiningStrategy.RANDOM, g)
        size = len(batch[0])
        self.log("val_loss", out["loss"], prog_bar=True, batch_size=size, sync_dist=True)
        self.log("val_active", out["active"], batch_size=size, sync_dist=True)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        optimizer = torch.optim.AdamW(decay_groups(self.encoder, hp.weight_decay), lr=hp.lr)
        total = self._total_steps()
        warmup = hp.warmup_fraction * total

        def factor(step: int) -> float:
            return warmup_cosine(step, warmup, total, 0.0, 1.0, 0.01)

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
