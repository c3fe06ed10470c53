"""What a backbone provides to the tasks (fine-tuning now; the SSL objectives of the pre-training task next).

A backbone is three things, and only these are seen from outside its folder:

1. an **adapter** (:class:`BackboneAdapter`): a per-sample callable ``Scene -> sample`` that builds the
   backbone's own input (frames, graphs, agent filtering) around ``scene.current_step``, plus a ``collate``
   for a list of samples (which attaches the batch's :class:`BatchDescription`). It runs in DataLoader
   workers. It is the only place where a Scene meets a model.
2. an **encoder** (:meth:`Backbone.encode`): batch -> backbone-specific encoding, from which
   :meth:`Backbone.agent_embeddings` returns one (or a few "query step") embeddings per agent. SSL heads see
   nothing else.
3. a **forecasting decoder** (:meth:`Backbone.forecast`): batch + encoding -> :class:`Forecast`, K trajectories
   with mode logits per agent, in each agent's own frame at the current step; plus the backbone's own
   training loss (:meth:`Backbone.loss`) and the map back to the scene frame (:meth:`Backbone.to_scene_frame`).

Outside the backbone, a batch is read through two backbone-independent descriptions only:

* :class:`EvalTargets` (:meth:`Backbone.eval_targets`): ground truth, masks and roles of the agent rows of
  :attr:`Forecast.loc`, in each agent's current-step frame;
* :class:`BatchDescription` (:func:`describe_batch`): which scenes the batch holds (scenario id, dataset, city-frame
  origin) and which track each agent row is, in that same row order. Every adapter's ``collate`` attaches it to
  its batch under the one generic name :data:`DESCRIPTION_KEY` (an attribute of a PyG batch, a key of a dict
  batch); it is plain data (lists and tensors), so it survives the worker hand-over
  (:mod:`smartpretrain.data.worker_transfer`) and moves with ``batch.to(device)``.

Metrics, submission writers and the (coming) embedding API read only ``EvalTargets`` + ``BatchDescription`` (and
:meth:`Backbone.to_scene_frame` for the scene frame), never backbone fields such as ``batch["agent"]``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from smartpretrain.data.scene import Scene


class BackboneAdapter(Protocol):
    """Scene -> one backbone input sample, and the batching of such samples."""

    def __call__(self, scene: Scene) -> Any: ...

    def collate(self, samples: list[Any]) -> Any:
        """Batch samples; the batch carries a :class:`BatchDescription` under :data:`DESCRIPTION_KEY`."""
        ...


@dataclass
class AgentEmbeddings:
    """Per-agent embeddings of a batch.

    Attributes:
        embeddings: ``[A, Q, D]`` — Q "query steps" per agent (1 for most backbones; QCNet's propose stage
            gives one per recurrence).
        scene_index: ``[A]`` which scene of the batch each agent belongs to.
        agent_index: ``[A]`` index of the agent in its Scene's ``agents`` arrays (for matching across views).
    """

    embeddings: Tensor
    scene_index: Tensor
    agent_index: Tensor


@dataclass
class Forecast:
    """K future trajectories per agent, in the agent's frame at the current step (x forward along its heading).

    Attributes:
        loc: ``[A, K, F, 2]`` positions (the final, refined ones for two-stage decoders).
        pi: ``[A, K]`` mode logits (softmax gives probabilities).
        extras: backbone-specific tensors its loss needs (e.g. QCNet's proposals and scales).
    """

    loc: Tensor
    pi: Tensor
    extras: dict[str, Tensor]


@dataclass
class EvalTargets:
    """What metrics need from a batch, backbone-independent, in each agent's current-step frame.

    Attributes:
        target: ``[A, F, 2]`` ground-truth future positions.
        valid: ``[A, F]`` observed future steps.
        role: ``[A]`` :class:`~smartpretrain.data.taxonomy.AgentRole` values.
        scene_index: ``[A]`` scene of each agent within the batch.
        dataset: list of the batch's scenes' dataset names (indexed by ``scene_index``).
    """

    target: Tensor
    valid: Tensor
    role: Tensor
    scene_index: Tensor
    dataset: list[str]


#: where every adapter's ``collate`` puts the :class:`BatchDescription` (attribute or key of the batch)
DESCRIPTION_KEY = "description"


@dataclass
class BatchDescription:
    """Which scenes and which tracks a collated batch holds, backbone-independent (see the module docstring).

    S scenes, A agent rows; the agent rows are exactly those of the backbone's :attr:`Forecast.loc` and
    :class:`EvalTargets` for this batch, in the same order.

    Attributes:
        scenario_ids: ``S`` scenario id of each scene of the batch.
        datasets: ``S`` dataset name of each scene (:class:`~smartpretrain.data.taxonomy.Dataset` values).
        origin: ``[S, 3] float64`` each scene's city-frame origin (scene frame + origin = city frame).
        track_ids: ``A`` track id of each agent row.
        agent_scene: ``[A] long`` scene (index into the S scenes) of each agent row.
    """

    scenario_ids: list[str]
    datasets: list[str]
    origin: Tensor
    track_ids: list[str]
    agent_scene: Tensor

    def __post_init__(self) -> None:
        s, a = len(self.scenario_ids), len(self.track_ids)
        if len(self.datasets) != s:
            raise ValueError(f"BatchDescription: {s} scenario ids but {len(self.datasets)} dataset names")
        if tuple(self.origin.shape) != (s, 3):
            raise ValueError(f"BatchDescription: origin must have shape [{s}, 3], got {tuple(self.origin.shape)}")
        if tuple(self.agent_scene.shape) != (a,):
            raise ValueError(
                f"BatchDescription: agent_scene must have shape [{a}] (one per track id), "
                f"got {tuple(self.agent_scene.shape)}"
            )

    @classmethod
    def from_scenes(
        cls,
        scenario_ids: Sequence[str],
        datasets: Sequence[str],
        origins: Sequence[Any],
        track_ids: Sequence[Sequence[str]],
    ) -> BatchDescription:
        """From per-scene values: ``origins`` one ``[3]`` (or ``[1, 3]``) array-like per scene, ``track_ids`` the
        scene's agent rows in order (the rows of the batch are the scenes' rows concatenated)."""
        origin = (
            torch.stack([torch.as_tensor(o, dtype=torch.float64).reshape(3) for o in origins])
            if len(origins)
            else torch.zeros(0, 3, dtype=torch.float64)
        )
        counts = torch.tensor([len(ids) for ids in track_ids], dtype=torch.long)
        return cls(
            scenario_ids=[str(x) for x in scenario_ids],
            datasets=[str(x) for x in datasets],
            origin=origin,
            track_ids=[str(t) for ids in track_ids for t in ids],
            agent_scene=torch.repeat_interleave(torch.arange(len(counts)), counts),
        )

    @property
    def num_scenes(self) -> int:
        return len(self.scenario_ids)

    @property
    def num_agents(self) -> int:
        return len(self.track_ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> BatchDescription:
        """The same description with its tensors on ``device`` (the signature PyG's ``Batch.to`` calls)."""
        return BatchDescription(
            scenario_ids=self.scenario_ids,
            datasets=self.datasets,
            origin=self.origin.to(device, non_blocking=non_blocking),
            track_ids=self.track_ids,
            agent_scene=self.agent_scene.to(device, non_blocking=non_blocking),
        )


def describe_batch(batch: Any) -> BatchDescription:
    """The :class:`BatchDescription` an adapter's ``collate`` attached to ``batch`` (under :data:`DESCRIPTION_KEY`).

    Raises:
        TypeError: the batch carries none (it was not made by an adapter's ``collate``).
    """
    if isinstance(batch, Mapping):
        description = batch.get(DESCRIPTION_KEY)
    else:
        description = getattr(batch, DESCRIPTION_KEY, None)
    if not isinstance(description, BatchDescription):
        raise TypeError(
            f"{type(batch).__name__} batch carries no BatchDescription under {DESCRIPTION_KEY!r}: batches must come "
            f"from the backbone adapter's collate, which attaches one"
        )
    return description


@dataclass
class MAETokens:
    """What a backbone that supports masked auto-encoding (:class:`~smartpretrain.ssl.mae.MaskedAutoencoding`)
    gives the objective, for a batch in its forecasting format. B scenes, N actors, M lanes, D dims.

    Attributes:
        history: ``[B, N, D]`` actor-history tokens (type and position embeddings added).
        lanes: ``[B, M, D]`` lane tokens (type and position embeddings added).
        future_input: ``[B, N, F, C]`` per-step future features for a future tokenizer (MAE's masked targets
            must not leak: they are only embedded for the actors whose future stays visible).
        actor_pos, lane_pos: ``[B, N, 4]`` / ``[B, M, 4]`` positional features (decoder position embedding).
        actor_type: ``[B, N] long`` the backbone's actor-type index (embedding of future tokens).
        actor_padding, lane_padding: ``[B, N]`` / ``[B, M]`` True = no such token.
        history_target, history_valid: ``[B, N, H, 2]`` / ``[B, N, H]`` history to reconstruct.
        future_target, future_valid: ``[B, N, F, 2]`` / ``[B, N, F]`` future to reconstruct.
        lane_target, lane_valid: ``[B, M, P, 2]`` / ``[B, M, P]`` lane points to reconstruct.
    """

    history: Tensor
    lanes: Tensor
    future_input: Tensor
    actor_pos: Tensor
    lane_pos: Tensor
    actor_type: Tensor
    actor_padding: Tensor
    lane_padding: Tensor
    history_target: Tensor
    history_valid: Tensor
    future_target: Tensor
    future_valid: Tensor
    lane_target: Tensor
    lane_valid: Tensor


class Backbone(nn.Module, abc.ABC):
    """Base class of the backbones. Subclasses keep their reference module tree (checkpoint compatibility)."""

    #: number of modes K the decoder predicts
    num_modes: int
    #: number of future steps F the decoder predicts
    num_future_steps: int

    #: Weight transfer from a pre-trained checkpoint (:func:`smartpretrain.io.checkpoints.transfer_pretrained`):
    #: key prefixes that must all be loaded (the encoder), per-mode tables whose single pre-trained row is
    #: repeated to K modes, and "copy_refine" prefix pairs (source stage -> a second stage initialised from it).
    pretrained_strict_prefixes: tuple[str, ...] = ("encoder.",)
    #: constructor arguments changed for self-supervised pre-training (e.g. QCNet's single-mode propose stack)
    pretrain_overrides: dict[str, Any] = {}  # noqa: RUF012 (read-only class default)
    mode_embedding_keys: tuple[str, ...] = ()
    propose_to_refine_prefixes: dict[str, str] = {}  # noqa: RUF012 (read-only class default)

    @property
    def embedding_dim(self) -> int:
        """Size D of the per-agent embeddings :meth:`agent_embeddings` returns (what the SSL projector takes)."""
        raise NotImplementedError(f"{type(self).__name__} has no agent embeddings for pre-training")

    @abc.abstractmethod
    def make_adapter(self) -> BackboneAdapter:
        """The adapter producing this backbone's input, configured like the backbone (steps, radii, ...)."""

    @abc.abstractmethod
    def encode(self, batch: Any) -> Any:
        """Run the encoder on a collated batch."""

    @abc.abstractmethod
    def agent_embeddings(self, batch: Any, encoding: Any) -> AgentEmbeddings:
        """Per-agent embeddings for the SSL heads."""

    @abc.abstractmethod
    def forecast(self, batch: Any, encoding: Any) -> Forecast:
        """Decode K trajectories + mode logits per agent."""

    @abc.abstractmethod
    def loss(self, batch: Any, forecast: Forecast) -> dict[str, Tensor]:
        """The backbone's own supervised loss terms; key ``"loss"`` is their weighted sum."""

    @abc.abstractmethod
    def eval_targets(self, batch: Any) -> EvalTargets:
        """Ground truth and masks for metrics, in the same frame as :attr:`Forecast.loc`."""

    @abc.abstractmethod
    def to_scene_frame(self, batch: Any, loc: Tensor) -> Tensor:
        """Map ``[A, K, F, 2]`` agent-frame trajectories to the scene frame (add ``scene.origin`` for city)."""

    def forward(self, batch: Any) -> Forecast:
        return self.forecast(batch, self.encode(batch))


def rotate(xy: Tensor, angle: Tensor) -> Tensor:
    """Rotate ``[..., 2]`` vectors by ``angle`` (broadcast over the leading dims): R(angle) @ xy."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    x, y = xy[..., 0], xy[..., 1]
    return torch.stack([cos * x - sin * y, sin * x + cos * y], dim=-1)
