"""The SSL objective contract: what an objective declares it needs, what it then receives, what it returns.

An objective states what it consumes once, as one typed value, :class:`ObjectiveNeeds`, in its class attribute
``needs``. The pre-training task (:class:`~smartpretrain.tasks.pretrain.PretrainTask`) takes the union of its
objectives' needs when it is built, runs exactly the encodings of that union, and hands each objective an
:class:`SSLInputs` restricted to what that objective declared (:meth:`SSLInputs.restrict`). The objective
returns an :class:`ObjectiveOutput`: its loss, normalised by global counts (see :mod:`.distributed`), and
optionally a per-query value that the task averages per data source (e.g. per dataset of a mixture) for logs.
New objectives subclass :class:`SSLObjective` and are listed under ``ssl.objectives`` in the pre-training
config; ``docs/ssl.md`` describes the contract (a test keeps the two in step).
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from smartpretrain.backbones.base import Backbone


class View(enum.Enum):
    """The two temporal views of a scene (:class:`~smartpretrain.data.views.TemporalViewSampler`)."""

    #: window A, the earlier view; its last step is the queries' present t
    A = "a"
    #: window B, the later view, after A (touching it or leaving a gap)
    B = "b"


class Branch(enum.Enum):
    """Which copy of backbone + projector encodes a view."""

    #: trained by the losses
    ONLINE = "online"
    #: the EMA copy of the online branch, run without gradients (targets)
    MOMENTUM = "momentum"


@dataclass(frozen=True)
class Encoding:
    """One view encoded by one branch: the backbone's agent embeddings of the view through the branch's projector."""

    view: View
    branch: Branch

    def __str__(self) -> str:
        return f"view {self.view.name} ({self.branch.value})"


#: the encodings the pre-training task can run
ONLINE_A = Encoding(View.A, Branch.ONLINE)
ONLINE_B = Encoding(View.B, Branch.ONLINE)
MOMENTUM_A = Encoding(View.A, Branch.MOMENTUM)
MOMENTUM_B = Encoding(View.B, Branch.MOMENTUM)


class Form(enum.Enum):
    """The shape of each encoding an objective receives (P queries, Q query steps, C projection dims)."""

    #: ``[P, Q, C]``: the sequence of the Q embeddings the backbone gives per agent, in its order (QCNet: one per
    #: propose recurrence; most backbones: Q = 1)
    STEPS = "steps"
    #: ``[P, C]``: one vector per agent, the last of the Q (the one that has seen the others)
    VECTOR = "vector"


@dataclass(frozen=True)
class ObjectiveNeeds:
    """What an objective consumes, declared once per class (``needs``) and read before anything is built.

    Why one frozen value rather than one boolean per capability: the task derives what to run from the union of
    the declarations in one place, a new objective says what it needs without the task learning a new flag, and a
    declaration that cannot be satisfied (a view encoded without the queries' own online view A, partial queries
    without any view) is refused when the class is defined. The encodings are a set of (view, branch) pairs, not a
    boolean per pair, because the union is then a set union and an objective gets exactly its pairs; the row
    selection (partial queries) and the shape (:class:`Form`) are per objective, so two objectives that differ in
    them still share one run of each branch.

    Attributes:
        encodes: the (view, branch) pairs the objective reads (:class:`Encoding`). Any non-empty set contains
            :data:`ONLINE_A`: the queries are the agents of the online view A.
        form: the shape of each encoding (:class:`Form`); irrelevant without encodings.
        partial_queries: queries that are not observed at every step of window B enter too (their view-B and
            momentum encodings are zero rows; :attr:`Queries.full_b` tells them apart). False: the objective
            receives only the queries full in window B.
        full_scene: the objective works on the whole scenes in the backbone's forecasting format
            (:class:`Scenes`: the batch and the online backbone); the data module then adapts the whole scenes too.
        backbone_at_init: the objective is constructed with ``backbone=`` (to size its heads, or to build
            backbone-specific tokenizers).
        controls: the objective reads the queries' kinematic controls over the transition from view A's present
            to view B's present (:attr:`Queries.controls`); the data module then derives them.
    """

    encodes: frozenset[Encoding] = frozenset()
    form: Form = Form.STEPS
    partial_queries: bool = False
    full_scene: bool = False
    backbone_at_init: bool = False
    controls: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "encodes", frozenset(self.encodes))  # accept any iterable of pairs
        if not all(isinstance(e, Encoding) for e in self.encodes):
            raise TypeError(f"ObjectiveNeeds.encodes must hold Encoding values, got {sorted(map(str, self.encodes))}")
        if self.encodes and ONLINE_A not in self.encodes:
            raise ValueError(f"an objective on the views must read {ONLINE_A}: its rows are the queries")
        if self.partial_queries and not self.encodes:
            raise ValueError("partial_queries needs encoded views (the queries are agents of the views)")
        if not self.encodes and not self.full_scene:
            raise ValueError("an objective must read encoded views, the whole scenes, or both")
        if self.controls and not self.encodes:
            raise ValueError("controls needs encoded views (they are the controls of the views' queries)")

    @property
    def encodes_views(self) -> bool:
        """Whether the temporal views are encoded at all."""
        return bool(self.encodes)

    @classmethod
    def union(cls, needs: Iterable[ObjectiveNeeds]) -> ObjectiveNeeds:
        """What the task must compute for all of ``needs``: every encoding, partial queries if any objective
        takes them, the whole scenes if any reads them. The form is :attr:`Form.STEPS`: the task keeps every query
        step, and an objective's :attr:`Form.VECTOR` is taken from them."""
        needs = list(needs)
        if not needs:
            raise ValueError("the union of no objective's needs is empty")
        return cls(
            encodes=frozenset().union(*(n.encodes for n in needs)),
            form=Form.STEPS,
            partial_queries=any(n.partial_queries for n in needs),
            full_scene=any(n.full_scene for n in needs),
            backbone_at_init=any(n.backbone_at_init for n in needs),
            controls=any(n.controls for n in needs),
        )


@dataclass(frozen=True)
class Controls:
    """The queries' kinematic controls from view A's present ``t_A`` to view B's present ``t_B``.

    Control ``j`` takes the query from scene step ``t_A + j`` to ``t_A + j + 1``; a query has ``length =
    t_B - t_A = start_b - start_a`` of them (the data's
    :class:`~smartpretrain.data.views.TransitionControls`, defined in :mod:`smartpretrain.data.controls`).
    K is the longest transition of the batch.

    Attributes:
        values: ``[P, K, 2]`` longitudinal acceleration (m/s^2) and yaw rate (rad/s); 0 where not valid.
        valid: ``[P, K] bool`` the control is defined (never after the query's ``length``).
        length: ``[P] long`` the query's number of transitions.
        draws: ``[P, K + 2]`` uniform numbers in [0, 1) from the scene's seeded generator, for random masks
            (column 0: observation A, 1: observation B, ``2 + j``: control j).
    """

    values: Tensor
    valid: Tensor
    length: Tensor
    draws: Tensor

    @property
    def max_steps(self) -> int:
        return int(self.values.size(1))

    def inside(self) -> Tensor:
        """``[P, K] bool``: control ``j`` is one of the query's transitions (``j < length``)."""
        steps = torch.arange(self.max_steps, device=self.length.device)
        return steps[None, :] < self.length[:, None]

    def rows(self, mask: Tensor) -> Controls:
        return Controls(self.values[mask], self.valid[mask], self.length[mask], self.draws[mask])


@dataclass(frozen=True)
class Queries:
    """The queries of one batch that enter an objective; row ``i`` of every encoding is query ``i``.

    P queries, H window steps (the longest view of the task). A query is an agent observed at every step of
    window A and embedded by the backbone in every encoded view.

    Attributes:
        full_b: ``[P] bool`` the query is observed (and embedded) at every step of window B: a contrastive
            positive. All True unless the objective declared ``partial_queries``.
        start_a, start_b: ``[P] long`` window starts of each query's scene.
        window: H, the longest view length (the heads' size).
        target: ``[P, H, 2]`` window-B positions in the query's frame at the last step of window A.
        target_valid: ``[P, H] bool`` observed target steps (False after a shorter query's own window).
        query_window: ``[P] long`` each query's view length when a batch mixes lengths (None: all ``window``).
        controls: the queries' :class:`Controls`, when the objective declares ``controls`` (else None).
    """

    full_b: Tensor
    start_a: Tensor
    start_b: Tensor
    window: int
    target: Tensor
    target_valid: Tensor
    query_window: Tensor | None = None
    controls: Controls | None = None

    @property
    def num_queries(self) -> int:
        return int(self.full_b.size(0))

    def windows(self) -> Tensor:
        """``[P] long`` view length of every query."""
        if self.query_window is not None:
            return self.query_window
        return self.start_a.new_full(self.start_a.shape, self.window)

    def rows(self, mask: Tensor) -> Queries:
        """The queries selected by ``mask`` (``[P] bool``)."""
        return replace(
            self,
            full_b=self.full_b[mask],
            start_a=self.start_a[mask],
            start_b=self.start_b[mask],
            target=self.target[mask],
            target_valid=self.target_valid[mask],
            query_window=None if self.query_window is None else self.query_window[mask],
            controls=None if self.controls is None else self.controls.rows(mask),
        )


@dataclass(frozen=True)
class Scenes:
    """The whole scenes of a batch in the backbone's own forecasting format, for objectives on its tokens.

    Attributes:
        batch: the adapter's collated batch of the whole scenes (each at its own current step).
        backbone: the online backbone (an objective checks the capability it needs, e.g.
            :class:`~smartpretrain.ssl.mae_tokens.MaskedAutoencoding`).
    """

    batch: Any
    backbone: Backbone


@dataclass(frozen=True)
class SSLInputs:
    """What an objective receives: exactly what :attr:`needs` declares (checked when built).

    Attributes:
        needs: what these inputs hold (an objective's declaration, or the task's union before
            :meth:`restrict`).
        encodings: one tensor per declared :class:`Encoding`, rows aligned with :attr:`queries`: ``[P, Q, C]``
            (:attr:`Form.STEPS`) or ``[P, C]`` (:attr:`Form.VECTOR`). Online view A covers every query; the other
            encodings are zero rows for the queries not full in window B.
        queries: the queries, when any encoding is declared (else None).
        scenes: the whole scenes, when ``full_scene`` is declared (else None).
    """

    needs: ObjectiveNeeds
    encodings: Mapping[Encoding, Tensor] = field(default_factory=dict)
    queries: Queries | None = None
    scenes: Scenes | None = None

    def __post_init__(self) -> None:
        if set(self.encodings) != set(self.needs.encodes):
            raise ValueError(
                f"SSLInputs hold {sorted(map(str, self.encodings))} but the needs declare "
                f"{sorted(map(str, self.needs.encodes))}"
            )
        if (self.queries is not None) != self.needs.encodes_views:
            raise ValueError("SSLInputs hold queries exactly when the needs declare encoded views")
        if (self.scenes is not None) != self.needs.full_scene:
            raise ValueError("SSLInputs hold the whole scenes exactly when the needs declare full_scene")
        if self.queries is not None and (self.queries.controls is not None) != self.needs.controls:
            raise ValueError("SSLInputs' queries hold controls exactly when the needs declare controls")
        dims = 3 if self.needs.form is Form.STEPS else 2
        for encoding, tensor in self.encodings.items():
            if tensor.dim() != dims or (self.queries is not None and tensor.size(0) != self.queries.num_queries):
                raise ValueError(
                    f"{encoding}: shape {tuple(tensor.shape)}, expected {dims} dims ({self.needs.form.value}) "
                    f"and one row per query"
                )

    def encoding(self, which: Encoding) -> Tensor:
        """The tensor of one encoding; a clear error when the objective did not declare it."""
        if which not in self.encodings:
            raise ValueError(f"{which} is not among these inputs: the objective must declare it in its needs")
        return self.encodings[which]

    def restrict(self, needs: ObjectiveNeeds) -> tuple[SSLInputs, Tensor | None]:
        """These inputs as an objective with ``needs`` receives them, and the rows of these queries it keeps
        (None: all, in order).

        Keeps the declared encodings only; only the queries full in window B unless the objective takes partial
        ones; the last query step for :attr:`Form.VECTOR`; the scenes only when declared.
        """
        missing = needs.encodes - set(self.encodings)
        no_controls = needs.controls and (self.queries is None or self.queries.controls is None)
        if missing or (needs.full_scene and self.scenes is None) or no_controls:
            lacking = sorted(map(str, missing)) or ("the whole scenes" if needs.full_scene else "the controls")
            raise ValueError(f"the inputs lack {lacking}, which the needs declare")
        queries = self.queries if needs.encodes_views else None
        if queries is not None and not needs.controls and queries.controls is not None:
            queries = replace(queries, controls=None)
        encodings = {which: self.encodings[which] for which in needs.encodes}
        rows = None
        if queries is not None and self.needs.partial_queries and not needs.partial_queries:
            rows = queries.full_b
            queries = queries.rows(rows)
            encodings = {which: tensor[rows] for which, tensor in encodings.items()}
        if needs.form is Form.VECTOR and self.needs.form is Form.STEPS:
            encodings = {which: tensor[:, -1] for which, tensor in encodings.items()}
        inputs = SSLInputs(needs, encodings, queries, self.scenes if needs.full_scene else None)
        return inputs, rows


@dataclass
class ObjectiveOutput:
    """An objective's loss and, for logging, a detached per-query value (NaN where a query does not enter)."""

    loss: Tensor
    per_query: Tensor | None = None


class SSLObjective(nn.Module, abc.ABC):
    """An SSL loss on :class:`SSLInputs`; its own parameters (predictors, heads) live in the module.

    Every concrete subclass declares ``needs: ClassVar[ObjectiveNeeds]`` (checked when the class is defined). If
    what an instance reads depends on its constructor arguments (symmetric TCL also encodes view B online), it
    overrides :meth:`declared_needs`; ``backbone_at_init`` is read from the class before construction, so an
    instance cannot change it.
    """

    needs: ClassVar[ObjectiveNeeds]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not isinstance(getattr(cls, "needs", None), ObjectiveNeeds):
            raise TypeError(f"{cls.__name__} must declare needs: ClassVar[ObjectiveNeeds]")

    def declared_needs(self) -> ObjectiveNeeds:
        """What this instance reads: the class's ``needs`` unless its arguments change them."""
        return self.needs

    @abc.abstractmethod
    def compute(self, inputs: SSLInputs) -> ObjectiveOutput:
        """The loss (scalar, normalised by global counts) and optionally per-query values for logging."""

    def forward(self, inputs: SSLInputs) -> Tensor:
        """The loss only."""
        return self.compute(inputs).loss


__all__ = [
    "MOMENTUM_A",
    "MOMENTUM_B",
    "ONLINE_A",
    "ONLINE_B",
    "Branch",
    "Controls",
    "Encoding",
    "Form",
    "ObjectiveNeeds",
    "ObjectiveOutput",
    "Queries",
    "SSLInputs",
    "SSLObjective",
    "Scenes",
    "View",
]
