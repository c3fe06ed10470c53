"""What a backbone provides to the tasks, the SSL objectives and the embedding API.

A backbone is three things, and only these are seen from outside its folder:

1. an **adapter** (:data:`BackboneAdapter`, the data layer's
   :class:`~smartpretrain.data.transforms.SampleAdapter`): a per-sample callable ``Scene -> sample`` that
   builds the backbone's own input (frames, graphs, agent filtering) around ``scene.current_step``, plus a
   ``collate`` for a list of samples (which attaches the batch's :class:`BatchDescription`). It runs in
   DataLoader workers. It is the only place where a Scene meets a model.
2. an **encoder** (:meth:`Backbone.encode`): batch -> backbone-specific encoding, from which
   :meth:`Backbone.agent_embeddings` returns one (or a few "query step") embeddings per agent. SSL heads see
   nothing else; :meth:`Backbone.embed_agents` adds to them who each row is (:class:`AgentIds`, from the
   description).
3. a **forecasting decoder** (:meth:`Backbone.forecast`): batch + encoding -> :class:`Forecast`, K trajectories
   with mode logits per agent, in each agent's own frame at the current step; plus the backbone's own
   training loss (:meth:`Backbone.loss`) and the map back to the scene frame (:meth:`Backbone.to_scene_frame`).

Outside the backbone, a batch is read through two backbone-independent descriptions only:

* :class:`EvalTargets` (:meth:`Backbone.eval_targets`): ground truth, masks and roles of the agent rows of
  :attr:`Forecast.loc`, in each agent's current-step frame;
* :class:`BatchDescription` (:func:`describe_batch`): which scenes the batch holds (scenario id, dataset, city-frame
  origin, current step) and which agent each row is (track id, index into the Scene's agent arrays, role), in
  that same row order. Every adapter's ``collate`` attaches it to its batch under the one generic name
  :data:`DESCRIPTION_KEY` (an attribute of a PyG batch, a key of a dict batch); it is plain data (lists and
  tensors), so it survives the worker hand-over (:mod:`smartpretrain.data.worker_transfer`) and moves with
  ``batch.to(device)``.

Metrics, submission writers and the embedding API (:mod:`smartpretrain.embeddings`) read only ``EvalTargets`` +
``BatchDescription`` (and :meth:`Backbone.to_scene_frame` for the scene frame), never backbone fields such as
``batch["agent"]``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from smartpretrain.data.transforms import SampleAdapter

#: A backbone's adapter: a :class:`~smartpretrain.data.transforms.SampleAdapter` (``Scene -> sample``, ``collate``)
#: whose ``collate`` attaches the batch's :class:`BatchDescription` under :data:`DESCRIPTION_KEY`.
BackboneAdapter = SampleAdapter


@dataclass
class AgentIds:
    """Who each row of an :class:`AgentEmbeddings` is (A rows), read from the batch's :class:`BatchDescription`.

    Attributes:
        scenario_ids: ``A`` scenario id of each row's scene.
        track_ids: ``A`` track id of each row (``scene.agents.ids``).
        datasets: ``A`` dataset name of each row's scene.
        role: ``[A] long`` :class:`~smartpretrain.data.taxonomy.AgentRole` values.
        step: ``[A] long`` current step of each row's scene: the embedding is of the history up to that step.
    """

    scenario_ids: list[str]
    track_ids: list[str]
    datasets: list[str]
    role: Tensor
    step: Tensor


@dataclass
class AgentEmbeddings:
    """Per-agent embeddings of a batch.

    Attributes:
        embeddings: ``[A, Q, D]`` — Q "query steps" per agent (1 for most backbones; QCNet's propose stage
            gives one per recurrence).
        scene_index: ``[A]`` which scene of the batch each agent belongs to.
        agent_index: ``[A]`` index of the agent in its Scene's ``agents`` arrays (for matching across views).
        ids: who each row is (scenario, track, dataset, role, step); filled by :meth:`identified` /
            :meth:`Backbone.embed_agents`, None from :meth:`Backbone.agent_embeddings` (the SSL heads' hot path
            needs only the indices).
    """

    embeddings: Tensor
    scene_index: Tensor
    agent_index: Tensor
    ids: AgentIds | None = None

    def identified(self, description: BatchDescription) -> AgentEmbeddings:
        """The same embeddings with :attr:`ids` read from the batch's description, each row matched by its
        ``(scene_index, agent_index)`` (so a backbone may embed any subset of the described rows, in any order).

        Raises:
            ValueError: a row the description does not list (the backbone and its adapter disagree).
        """
        return replace(self, ids=description.agent_ids(description.rows_of(self.scene_index, self.agent_index)))


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
        heading: ``[A, F]`` ground-truth future headings in the same frame (radians; meaningful at valid steps
            only), or None when the backbone does not provide them (Waymo's miss rate then derives them from the
            target's displacement, see :mod:`smartpretrain.metrics.womd`).
        speed: ``[A]`` speed at the current step (m/s), or None when not provided (the metric suite then
            estimates it from the first valid future position).
    """

    target: Tensor
    valid: Tensor
    role: Tensor
    scene_index: Tensor
    dataset: list[str]
    heading: Tensor | None = None
    speed: Tensor | None = None


#: where every adapter's ``collate`` puts the :class:`BatchDescription` (attribute or key of the batch)
DESCRIPTION_KEY = "description"


@dataclass
class BatchDescription:
    """Which scenes and which agents a collated batch holds, backbone-independent (see the module docstring).

    S scenes, A agent rows; the agent rows are exactly those of the backbone's :attr:`Forecast.loc` and
    :class:`EvalTargets` for this batch, in the same order.

    Attributes:
        scenario_ids: ``S`` scenario id of each scene of the batch.
        datasets: ``S`` dataset name of each scene (:class:`~smartpretrain.data.taxonomy.Dataset` values).
        origin: ``[S, 3] float64`` each scene's city-frame origin (scene frame + origin = city frame).
        track_ids: ``A`` track id of each agent row.
        agent_scene: ``[A] long`` scene (index into the S scenes) of each agent row.
        agent_index: ``[A] long`` index of each agent row in its Scene's ``agents`` arrays.
        agent_role: ``[A] long`` :class:`~smartpretrain.data.taxonomy.AgentRole` of each agent row.
        current_step: ``[S] long`` each scene's ``current_step`` (the present the sample was built around).
    """

    scenario_ids: list[str]
    datasets: list[str]
    origin: Tensor
    track_ids: list[str]
    agent_scene: Tensor
    agent_index: Tensor
    agent_role: Tensor
    current_step: Tensor

    def __post_init__(self) -> None:
        s, a = len(self.scenario_ids), len(self.track_ids)
        if len(self.datasets) != s:
            raise ValueError(f"BatchDescription: {s} scenario ids but {len(self.datasets)} dataset names")
        if tuple(self.origin.shape) != (s, 3):
            raise ValueError(f"BatchDescription: origin must have shape [{s}, 3], got {tuple(self.origin.shape)}")
        for name in ("agent_scene", "agent_index", "agent_role"):
            shape = tuple(getattr(self, name).shape)
            if shape != (a,):
                raise ValueError(f"BatchDescription: {name} must have shape [{a}] (one per track id), got {shape}")
        if tuple(self.current_step.shape) != (s,):
            raise ValueError(
                f"BatchDescription: current_step must have shape [{s}] (one per scene), "
                f"got {tuple(self.current_step.shape)}"
            )

    @classmethod
    def from_scenes(
        cls,
        scenario_ids: Sequence[str],
        datasets: Sequence[str],
        origins: Sequence[Any],
        current_steps: Sequence[int],
        track_ids: Sequence[Sequence[str]],
        agent_index: Sequence[Any],
        agent_roles: Sequence[Any],
    ) -> BatchDescription:
        """From per-scene values: ``origins`` one ``[3]`` (or ``[1, 3]``) array-like per scene; ``track_ids``,
        ``agent_index`` and ``agent_roles`` the scene's agent rows in order (the rows of the batch are the scenes'
        rows concatenated)."""
        origin = (
            torch.stack([torch.as_tensor(o, dtype=torch.float64).reshape(3) for o in origins])
            if len(origins)
            else torch.zeros(0, 3, dtype=torch.float64)
        )
        counts = torch.tensor([len(ids) for ids in track_ids], dtype=torch.long)

        def rows(per_scene: Sequence[Any]) -> Tensor:
            parts = [torch.as_tensor(x, dtype=torch.long).reshape(-1) for x in per_scene]
            return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)

        return cls(
            scenario_ids=[str(x) for x in scenario_ids],
            datasets=[str(x) for x in datasets],
            origin=origin,
            track_ids=[str(t) for ids in track_ids for t in ids],
            agent_scene=torch.repeat_interleave(torch.arange(len(counts)), counts),
            agent_index=rows(agent_index),
            agent_role=rows(agent_roles),
            current_step=torch.as_tensor([int(c) for c in current_steps], dtype=torch.long).reshape(-1),
        )

    @property
    def num_scenes(self) -> int:
        return len(self.scenario_ids)

    @property
    def num_agents(self) -> int:
        return len(self.track_ids)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> BatchDescription:
        """The same description with its tensors on ``device`` (the signature PyG's ``Batch.to`` calls)."""
        return replace(
            self,
            origin=self.origin.to(device, non_blocking=non_blocking),
            agent_scene=self.agent_scene.to(device, non_blocking=non_blocking),
            agent_index=self.agent_index.to(device, non_blocking=non_blocking),
            agent_role=self.agent_role.to(device, non_blocking=non_blocking),
            current_step=self.current_step.to(device, non_blocking=non_blocking),
        )

    def rows_of(self, scene: Tensor, agent: Tensor) -> Tensor:
        """``[N] long`` the agent rows holding each ``(scene, agent)`` pair (scene within the batch, agent index in
        that Scene's ``agents`` arrays), on the CPU.

        Raises:
            ValueError: a pair that is not one of the rows, naming its scene.
        """
        scene, agent = scene.detach().cpu().long().reshape(-1), agent.detach().cpu().long().reshape(-1)
        if scene.shape != agent.shape:
            raise ValueError(f"rows_of: {scene.numel()} scene indices but {agent.numel()} agent indices")
        if scene.numel() == 0:
            return torch.zeros(0, dtype=torch.long)
        have_scene, have_agent = self.agent_scene.cpu().long(), self.agent_index.cpu().long()
        found = torch.zeros_like(scene, dtype=torch.bool)
        rows = torch.zeros_like(scene)
        if self.num_agents and int(agent.min()) >= 0:
            # one integer key per (scene, agent): a sorted search instead of a Python loop over the rows
            stride = max(int(have_agent.max()), int(agent.max())) + 1
            have = have_scene * stride + have_agent
            want = scene * stride + agent
            order = torch.argsort(have)
            pos = torch.searchsorted(have[order], want).clamp(max=len(have) - 1)
            rows = order[pos]
            found = have[rows] == want
        if not bool(found.all()):
            i = int((~found).nonzero()[0])
            s = int(scene[i])
            where = f"scene {s} ({self.scenario_ids[s]})" if 0 <= s < self.num_scenes else f"scene {s} (none such)"
            raise ValueError(
                f"agent {int(agent[i])} of {where} is not an agent row of the batch description: the backbone "
                f"and its adapter's collate disagree on the agents"
            )
        return rows

    def agent_ids(self, rows: Tensor | None = None) -> AgentIds:
        """Who the given agent rows are (all rows when None), per row."""
        rows = torch.arange(self.num_agents) if rows is None else rows.detach().cpu().long()
        index = rows.tolist()
        scene = self.agent_scene.cpu()[rows]
        scene_list = scene.tolist()
        return AgentIds(
            scenario_ids=[self.scenario_ids[s] for s in scene_list],
            track_ids=[self.track_ids[r] for r in index],
            datasets=[self.datasets[s] for s in scene_list],
            role=self.agent_role.cpu()[rows],
            step=self.current_step.cpu()[scene],
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


class Backbone(nn.Module, abc.ABC):
    """Base class of the backbones. Subclasses keep their reference module tree (checkpoint compatibility)."""

    #: number of modes K the decoder predicts
    num_modes: int
    #: number of future steps F the decoder predicts
    num_future_steps: int

    #: Weight transfer from a pre-trained checkpoint (:func:`smartpretrain.tasks.transfer.transfer_pretrained`):
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

    def query_embeddings(self, batch: Any, scene: Tensor, agent: Tensor) -> AgentEmbeddings:
        """Per-agent embeddings of at least the agents ``(scene[i], agent[i])`` of ``batch`` (scene within the
        batch, agent index in its Scene), as :meth:`agent_embeddings` gives them: what SSL pre-training reads,
        its query agents. A backbone may leave out work that only the other agents' embeddings need (QCNet);
        by default every agent is embedded.
        """
        return self.agent_embeddings(batch, self.encode(batch))

    def forward(self, batch: Any) -> Forecast:
        return self.forecast(batch, self.encode(batch))

    def embed_agents(self, batch: Any) -> AgentEmbeddings:
        """:meth:`agent_embeddings` of the encoded batch with every row identified (:attr:`AgentEmbeddings.ids`,
        from the batch's :class:`BatchDescription`): what stores of embeddings read
        (:mod:`smartpretrain.embeddings`)."""
        return self.agent_embeddings(batch, self.encode(batch)).identified(describe_batch(batch))


def select_agents(row_scene: Tensor, row_agent: Tensor, scene: Tensor, agent: Tensor) -> Tensor:
    """``[A] bool``: which agent rows (``row_scene``, ``row_agent``: each row's scene in the batch and agent index
    in its Scene) are one of the pairs ``(scene[i], agent[i])``; pairs that are no row select nothing."""
    if row_agent.numel() == 0 or agent.numel() == 0:
        return torch.zeros(row_agent.shape, dtype=torch.bool, device=row_agent.device)
    # one integer key per (scene, agent)
    stride = int(torch.maximum(row_agent.max(), agent.max())) + 1
    return torch.isin(row_scene.long() * stride + row_agent.long(), scene.long() * stride + agent.long())


def rotate(xy: Tensor, angle: Tensor) -> Tensor:
    """Rotate ``[..., 2]`` vectors by ``angle`` (broadcast over the leading dims): R(angle) @ xy."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    x, y = xy[..., 0], xy[..., 1]
    return torch.stack([cos * x - sin * y, sin * x + cos * y], dim=-1)
