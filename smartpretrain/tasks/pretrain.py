"""Self-supervised pre-training of any backbone (SmartPretrain): ``L = sum_k w_k L_k`` over pluggable objectives.

The task sees the :class:`~smartpretrain.backbones.base.Backbone` interface only (``encode`` ->
``agent_embeddings``); batches are :class:`~smartpretrain.data.views.SSLBatch` (two views through the backbone's
adapter). Per training step, before the forward pass: learning rate (linear warm-up then half-cosine), weight
decay (linear ramp, decayed group only) and EMA momentum (cosine to 1) are set from the fractional epoch, and
the momentum branch is updated. Module names follow the reference release where it has them: ``branch`` /
``momentum_branch`` (backbone + projector), so SSL checkpoints transfer by name
(:func:`smartpretrain.tasks.transfer.transfer_pretrained`).

Mixed precision (``trainer.precision=bf16-mixed``): the backbone's encodings of the views run at the step's
precision; everything computed from them, the projectors (their BatchNorm statistics) and the objectives on the
views, runs in float32 with autocast off, from the embeddings upcast (:mod:`smartpretrain.tasks.precision`). An
objective on the whole scenes (MAE) runs backbone layers itself, so it keeps the step's precision; its
reconstruction errors are float32 either way (autocast computes L1 / MSE in float32). Under it every loss the
task returns is float32.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from smartpretrain.backbones.base import AgentEmbeddings, Backbone
from smartpretrain.data.views import SSLBatch
from smartpretrain.ssl.distributed import global_sum
from smartpretrain.ssl.heads import ProjectionMLP
from smartpretrain.ssl.momentum import cosine_momentum, ema_update, make_momentum_copy
from smartpretrain.ssl.objective import (
    MOMENTUM_A,
    MOMENTUM_B,
    ONLINE_A,
    ONLINE_B,
    Branch,
    Controls,
    Encoding,
    ObjectiveNeeds,
    ObjectiveOutput,
    Queries,
    Scenes,
    SSLInputs,
    SSLObjective,
    View,
)
from smartpretrain.tasks.optim import decay_groups, warmup_cosine
from smartpretrain.tasks.precision import float32_region, upcast

log = logging.getLogger(__name__)

#: SSL branch -> the :class:`PretrainTask` attribute holding its :class:`SSLBranch` (the reference release's names),
#: so a branch's checkpoint keys are ``<attribute>.backbone.*`` / ``<attribute>.projector.*``; SSL transfer
#: (:mod:`smartpretrain.tasks.transfer`) finds pre-trained backbones by these names.
BRANCH_ATTRIBUTES: Mapping[str, str] = {"momentum": "momentum_branch", "online": "branch"}


class SSLBranch(nn.Module):
    """Backbone + projector: one branch of the pre-training model (online, or its momentum copy).

    Its ``forward`` is the backbone's per-agent embedding of a batch (the projector runs apart, in float32), so
    ``branch.compile()`` compiles exactly the backbone's part of the step, in place (state-dict keys unchanged).
    """

    def __init__(self, backbone: Backbone, projector: ProjectionMLP) -> None:
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, batch: Any, scene: Tensor, agent: Tensor) -> AgentEmbeddings:
        return self.backbone.query_embeddings(batch, scene, agent)

    def embed(self, batch: Any, scene: Tensor, agent: Tensor) -> AgentEmbeddings:
        """The backbone's per-agent embeddings of ``batch``, at least of the agents ``(scene, agent)`` (the queries
        read; :meth:`~smartpretrain.backbones.base.Backbone.query_embeddings`), through ``__call__``: compiled when
        the branch is."""
        return self(batch, scene, agent)


def lookup_rows(emb: AgentEmbeddings, scene: Tensor, agent: Tensor) -> tuple[Tensor, Tensor]:
    """Rows of ``emb`` holding each ``(scene, agent)`` pair, and whether it is there at all.

    Backbones may embed fewer agents than a view observes (Forecast-MAE keeps actors within 150 m of the focal
    agent): such queries simply do not take part (the task counts them as ``num_unembedded``).
    """
    if scene.numel() == 0 or emb.agent_index.numel() == 0:
        return scene.new_zeros(scene.shape), torch.zeros_like(scene, dtype=torch.bool)
    stride = int(max(int(emb.agent_index.max()), int(agent.max()))) + 1
    have = emb.scene_index.long() * stride + emb.agent_index.long()
    want = scene.long() * stride + agent.long()
    order = torch.argsort(have)
    pos = torch.searchsorted(have[order], want).clamp(max=len(have) - 1)
    rows = order[pos]
    return rows, have[rows] == want


def match_rows(emb: AgentEmbeddings, scene: Tensor, agent: Tensor, what: str) -> Tensor:
    """Rows of ``emb`` holding each ``(scene, agent)`` pair; a clear error when one is missing."""
    rows, found = lookup_rows(emb, scene, agent)
    if not bool(found.all()):
        i = int((~found).nonzero()[0])
        raise RuntimeError(
            f"{what}: the backbone returned no embedding for agent {int(agent[i])} of scene {int(scene[i])}"
        )
    return rows


#: the order the encodings run in, and then the order they are projected in. Fixed, whatever the objectives:
#: dropout draws from the RNG and the projectors' BatchNorm updates its running statistics call by call. The
#: momentum (no-grad) passes run first, before the online passes build their autograd graph: their temporaries then
#: reuse memory instead of growing the heap beside the saved activations (on CPU 16 % of a QCNet step at batch 4,
#: docs/benchmarks.md). Before that the order was online A, momentum A, momentum B: losses and gradients are the
#: same, except for which dropout masks each pass draws (tests/tasks/test_pretrain_speed_equivalence.py).
_EMBED_ORDER = (MOMENTUM_B, MOMENTUM_A, ONLINE_A, ONLINE_B)
_PROJECT_ORDER = (ONLINE_A, ONLINE_B, MOMENTUM_A, MOMENTUM_B)


def _grad_mode(which: Encoding) -> contextlib.AbstractContextManager[Any]:
    """No gradients through the momentum branch: its weights follow the online ones by EMA only."""
    return torch.no_grad() if which.branch is Branch.MOMENTUM else contextlib.nullcontext()


def _objective_precision(needs: ObjectiveNeeds, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Float32 for an objective on the encoded views; the step's own precision for one on the whole scenes, which
    runs backbone layers itself (Forecast-MAE's encoder in MAE: under ``bf16-mixed`` it stays in bfloat16)."""
    return contextlib.nullcontext() if needs.full_scene else float32_region(device)


@dataclass
class _Collected:
    """One batch's encodings and queries for the union of the objectives' needs.

    Attributes:
        inputs: the union's inputs (restricted per objective by :meth:`SSLInputs.restrict`).
        keep: ``[P_batch] bool`` the batch's queries that are rows of ``inputs.queries``.
        num_queries: how many of them are full in window B (contrastive positives).
        num_unembedded: queries the backbone did not embed (in view A, or in view B for a positive).
    """

    inputs: SSLInputs
    keep: Tensor
    num_queries: Tensor
    num_unembedded: Tensor


class PretrainTask(pl.LightningModule):
    """SmartPretrain pre-training.

    What runs is derived once, at construction, from the union of the objectives' declared needs
    (:attr:`needs`, :class:`~smartpretrain.ssl.objective.ObjectiveNeeds`): which views each branch encodes
    (none without encoded views: the momentum branch only when an objective reads it), whether queries partially
    observed in window B enter, whether the data must carry the whole scenes or the queries' transition
    controls. Each objective then receives exactly what it declared.

    Args:
        backbone: the model to pre-train (for QCNet: ``num_modes=1``, ``propose_stack_only=True``, as the release).
        objectives: name -> :class:`~smartpretrain.ssl.objective.SSLObjective` (e.g. ``tcl``, ``trl``).
        objective_weights: name -> weight of its loss (default 1).
        window: H, steps per view (must equal the data's view window).
        proj_hidden_dim, proj_dim: projector ``Linear(D, hidden) -> BN -> ReLU -> Linear(hidden, proj_dim)``.
        lr_start, lr_peak, lr_end, warmup_epochs, max_epochs: per-step schedule (epochs may be fractional).
        weight_decay_start, weight_decay_end: linear ramp over ``max_epochs`` (weight matrices only).
        momentum_base: ``m0`` of the cosine EMA schedule.
        sources: names of the data sources (datasets of a mixture) whose objectives are also logged separately,
            as ``{train,val}_{objective}/{source}``: the epoch mean of the per-query values of that source's
            queries (TCL: the query's InfoNCE × 2τ; TRL: its mean SmoothL1 over its observed steps).
    """

    def __init__(
        self,
        backbone: Backbone,
        objectives: Mapping[str, SSLObjective],
        objective_weights: Mapping[str, float] | None = None,
        window: int = 50,
        proj_hidden_dim: int = 512,
        proj_dim: int = 256,
        lr_start: float = 1e-4,
        lr_peak: float = 1.5e-3,
        lr_end: float = 1e-6,
        warmup_epochs: float = 15,
        max_epochs: float = 32,
        weight_decay_start: float = 0.01,
        weight_decay_end: float = 0.1,
        momentum_base: float = 0.996,
        sources: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if not objectives:
            raise ValueError("pre-training needs at least one objective")
        self.branch = SSLBranch(backbone, ProjectionMLP(backbone.embedding_dim, proj_hidden_dim, proj_dim))
        self.momentum_branch = make_momentum_copy(self.branch)
        self.objectives = nn.ModuleDict(dict(objectives))
        self.objective_needs: dict[str, ObjectiveNeeds] = {}
        for name, objective in self.objectives.items():
            needs = objective.declared_needs()
            if needs.backbone_at_init != type(objective).needs.backbone_at_init:
                raise TypeError(f"objective {name!r}: backbone_at_init is the class's, an instance cannot change it")
            self.objective_needs[name] = needs
        #: the union of the objectives' needs: what every step computes
        self.needs = ObjectiveNeeds.union(self.objective_needs.values())
        self._embed_plan = tuple(which for which in _EMBED_ORDER if which in self.needs.encodes)
        self._project_plan = tuple(which for which in _PROJECT_ORDER if which in self.needs.encodes)
        weights = dict(objective_weights or {})
        unknown = set(weights) - set(self.objectives)
        if unknown:
            raise ValueError(f"weights given for unknown objectives {sorted(unknown)}")
        self.objective_weights = {name: float(weights.get(name, 1.0)) for name in self.objectives}
        self.window = int(window)
        self.lr_start, self.lr_peak, self.lr_end = lr_start, lr_peak, lr_end
        self.warmup_epochs, self.max_epochs = float(warmup_epochs), float(max_epochs)
        self.weight_decay_start, self.weight_decay_end = weight_decay_start, weight_decay_end
        self.momentum_base = momentum_base
        self.sources = list(sources or [])
        self._source_index = {name: i for i, name in enumerate(self.sources)}
        # per (stage, objective): [sources, 2] running (sum, count) of per-query values over the epoch
        self._source_sums: dict[tuple[str, str], Tensor] = {}
        self.save_hyperparameters(ignore=["backbone", "objectives"])

    @property
    def backbone(self) -> Backbone:
        return self.branch.backbone

    # --- schedules ----------------------------------------------------------------------------------------------
    def fractional_epoch(self) -> float:
        steps_per_epoch = max(int(self.trainer.num_training_batches), 1) if self._trainer is not None else 1
        return self.global_step / steps_per_epoch

    def schedule(self, epoch: float) -> dict[str, float]:
        """Learning rate, weight decay and EMA momentum at a fractional epoch."""
        lr = warmup_cosine(epoch, self.warmup_epochs, self.max_epochs, self.lr_start, self.lr_peak, self.lr_end)
        ramp = min(max(epoch / max(self.max_epochs, 1e-12), 0.0), 1.0)
        wd = self.weight_decay_start + (self.weight_decay_end - self.weight_decay_start) * ramp
        return {"lr": lr, "weight_decay": wd, "momentum": cosine_momentum(self.momentum_base, epoch / self.max_epochs)}

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        values = self.schedule(self.fractional_epoch())
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = values["lr"]
                if group.get("decayed", False):
                    group["weight_decay"] = values["weight_decay"]
        ema_update(self.momentum_branch, self.branch, values["momentum"])
        self._schedule_values = values

    # --- forward ------------------------------------------------------------------------------------------------
    def _collect(self, batch: SSLBatch) -> _Collected:
        """Run each encoding of :attr:`needs` once and gather the union's inputs for :meth:`losses`."""
        scenes = None
        if self.needs.full_scene:
            if batch.full is None:
                raise ValueError("an objective needs the whole scenes: build the views with with_full=True")
            scenes = Scenes(batch.full, self.branch.backbone)
        if not self.needs.encodes_views:  # e.g. MAE alone: the views are not encoded
            no_query = torch.zeros_like(batch.full_b)
            inputs = SSLInputs(self.needs, scenes=scenes)
            return _Collected(inputs, no_query, batch.target.new_tensor(0.0), batch.target.new_tensor(0.0))
        views = {View.A: batch.view_a, View.B: batch.view_b}
        branches = {Branch.ONLINE: self.branch, Branch.MOMENTUM: self.momentum_branch}
        q_scene, q_agent = batch.query_scene, batch.query_agent

        partial_rows = batch.target_valid.any(dim=1) if self.needs.partial_queries else torch.zeros_like(batch.full_b)
        # the queries each encoding is read at: online view A every query that may enter, the others the positives
        entering = batch.full_b | partial_rows
        wanted = {which: entering if which == ONLINE_A else batch.full_b for which in self._embed_plan}
        embedded: dict[Encoding, AgentEmbeddings] = {}
        for which in self._embed_plan:
            with _grad_mode(which):
                embedded[which] = branches[which.branch].embed(
                    views[which.view], q_scene[wanted[which]], q_agent[wanted[which]]
                )
        rows: dict[Encoding, Tensor] = {}
        found: dict[Encoding, Tensor] = {}
        for which, emb in embedded.items():
            rows[which], found[which] = lookup_rows(emb, q_scene, q_agent)
        full_b = batch.full_b
        for embedded_here in found.values():
            full_b = full_b & embedded_here  # a positive must be embedded in every encoded view
        keep = found[ONLINE_A] & (full_b | partial_rows)
        unembedded = int(((batch.full_b | partial_rows) & ~keep).sum())
        positives = keep & full_b  # batch query rows that are positives, in kept order below
        kept_full_b = full_b[keep]

        projected: dict[Encoding, Tensor] = {}
        for which in self._project_plan:
            projector = branches[which.branch].projector
            # past the backbone: float32 (the projectors' BatchNorm statistics, then the objectives, see losses)
            with _grad_mode(which), float32_region(batch.target.device) as to_float32:
                emb = to_float32(embedded[which].embeddings)
                if which == ONLINE_A:  # every query
                    projected[which] = projector(emb[rows[which][keep]])
                else:  # the positives only; zero rows for the others
                    z_a = projected[ONLINE_A]
                    z = z_a.new_zeros(z_a.shape)
                    z[kept_full_b] = projector(emb[rows[which][positives]])
                    projected[which] = z

        scene = q_scene[keep]
        target, target_valid = batch.target[keep], batch.target_valid[keep]
        if target.size(1) > self.window:
            raise ValueError(f"views of {target.size(1)} steps, but the task was built for window={self.window}")
        if target.size(1) < self.window:  # every view of this batch is shorter than the longest of the mixture
            pad = self.window - target.size(1)
            target = torch.nn.functional.pad(target, (0, 0, 0, pad))
            target_valid = torch.nn.functional.pad(target_valid, (0, pad))
        query_window = None
        if batch.window is not None and bool((batch.window != self.window).any()):
            query_window = batch.window[scene]
        controls = None
        if self.needs.controls:
            if batch.controls is None or batch.control_valid is None or batch.control_draws is None:
                raise ValueError("an objective reads the transition controls: build the views with controls=")
            controls = Controls(
                values=batch.controls[keep],
                valid=batch.control_valid[keep],
                length=(batch.start_b - batch.start_a)[scene],
                draws=batch.control_draws[keep],
            )
        queries = Queries(
            full_b=kept_full_b,
            start_a=batch.start_a[scene],
            start_b=batch.start_b[scene],
            window=self.window,
            target=target,
            target_valid=target_valid,
            query_window=query_window,
            controls=controls,
        )
        z_a = projected[ONLINE_A]
        return _Collected(
            SSLInputs(self.needs, projected, queries, scenes),
            keep,
            kept_full_b.sum().to(z_a.dtype),
            z_a.new_tensor(float(unembedded)),
        )

    def losses(self, batch: SSLBatch, stage: str | None = None) -> dict[str, Tensor]:
        """Each objective's loss, their weighted sum ``loss`` (all float32 under mixed precision, see the module
        docstring), and the query counts ``num_queries`` / ``num_unembedded``."""
        collected = self._collect(batch)
        results: dict[str, ObjectiveOutput] = {}
        for name, objective in self.objectives.items():
            needs = self.objective_needs[name]
            inputs, rows = collected.inputs.restrict(needs)
            with _objective_precision(needs, batch.target.device):
                result = objective.compute(inputs)
            result = ObjectiveOutput(upcast(result.loss), result.per_query)
            if rows is not None and result.per_query is not None:  # back onto the rows of every kept query
                per_query = result.per_query.new_full(rows.shape, float("nan"))
                per_query[rows] = result.per_query
                result = ObjectiveOutput(result.loss, per_query)
            results[name] = result
        out = {name: r.loss for name, r in results.items()}
        out["loss"] = sum(self.objective_weights[name] * value for name, value in out.items())
        out["num_queries"] = collected.num_queries
        out["num_unembedded"] = collected.num_unembedded
        if stage is not None and self.sources:
            self._accumulate_sources(stage, batch, collected.keep, results)
        return out

    # --- per-source logging -------------------------------------------------------------------------------------
    def _accumulate_sources(
        self, stage: str, batch: SSLBatch, keep: Tensor, results: Mapping[str, ObjectiveOutput]
    ) -> None:
        per_scene = torch.tensor([self._source_index.get(d, -1) for d in batch.datasets], device=keep.device)
        source = per_scene[batch.query_scene[keep]]  # -1: not a listed source
        for name, result in results.items():
            if result.per_query is None:
                continue
            values = result.per_query.detach().float()
            ok = ~torch.isnan(values) & (source >= 0)
            sums = torch.zeros(len(self.sources), 2, device=values.device)
            sums[:, 0].index_add_(0, source[ok], values[ok])
            sums[:, 1].index_add_(0, source[ok], torch.ones_like(values[ok]))
            key = (stage, name)
            self._source_sums[key] = self._source_sums.get(key, torch.zeros_like(sums)) + sums

    def _log_sources(self, stage: str) -> None:
        # every rank holds the same keys (objectives x stage), so the reductions below line up across ranks
        for (key_stage, name), sums in sorted(self._source_sums.items()):
            if key_stage != stage:
                continue
            total = global_sum(sums)
            for i, source in enumerate(self.sources):
                if float(total[i, 1]) > 0:
                    self.log(f"{stage}_{name}/{source}", total[i, 0] / total[i, 1], sync_dist=False)
        self._source_sums = {k: v for k, v in self._source_sums.items() if k[0] != stage}

    def on_train_epoch_end(self) -> None:
        self._log_sources("train")

    def on_validation_epoch_end(self) -> None:
        self._log_sources("val")

    def training_step(self, batch: SSLBatch, batch_idx: int) -> Tensor:
        out = self.losses(batch, "train")
        bs = batch.num_scenes
        for name, value in out.items():
            if name in _COUNTS:  # totals over the ranks, not a mean
                self.log(f"train_{name}", value, batch_size=bs, sync_dist=True, reduce_fx="sum")
            else:
                self.log(f"train_{name}", value, prog_bar=name == "loss", batch_size=bs, sync_dist=False)
        for name, value in getattr(self, "_schedule_values", {}).items():
            self.log(name, value, batch_size=bs)
        return out["loss"]

    def validation_step(self, batch: SSLBatch, batch_idx: int) -> None:
        out = self.losses(batch, "val")
        bs = batch.num_scenes
        for name, value in out.items():
            if name in _COUNTS:  # summed over the epoch's batches and the ranks
                self.log(f"val_{name}", value, batch_size=bs, sync_dist=True, reduce_fx="sum")
            else:
                self.log(f"val_{name}", value, prog_bar=name == "loss", batch_size=bs, sync_dist=True)

    def configure_optimizers(self) -> Any:
        groups = decay_groups(nn.ModuleList([self.branch, self.objectives]), self.weight_decay_start)
        groups[0]["decayed"] = True
        return torch.optim.AdamW(groups, lr=self.lr_start)


_COUNTS = ("num_queries", "num_unembedded")

__all__ = ["PretrainTask", "SSLBranch", "match_rows"]
