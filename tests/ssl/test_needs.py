"""The declared objective contract: ObjectiveNeeds, their union, SSLInputs.restrict, and what the pre-train task
runs and hands each objective (exactly what it declared)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest
import torch

from smartpretrain.ssl.objective import (
    MOMENTUM_A,
    MOMENTUM_B,
    ONLINE_A,
    ONLINE_B,
    Form,
    ObjectiveNeeds,
    ObjectiveOutput,
    Queries,
    Scenes,
    SSLInputs,
    SSLObjective,
)
from smartpretrain.ssl.tcl import TrajectoryContrastiveLoss
from smartpretrain.ssl.trl import TrajectoryReconstructionLoss
from smartpretrain.tasks.pretrain import PretrainTask
from tests.ssl.inputs import STEPS, FakeBackbone, fake_batch, query_inputs, recording

TCL_LIKE = ObjectiveNeeds(encodes={ONLINE_A, MOMENTUM_A, MOMENTUM_B})
PROJ = 4


def _task(**objectives: SSLObjective) -> PretrainTask:
    torch.manual_seed(0)
    return PretrainTask(FakeBackbone(), objectives, window=5, proj_hidden_dim=8, proj_dim=PROJ).train()


def _calls(task: PretrainTask) -> tuple[list[str], list[str]]:
    return task.branch.backbone.calls, task.momentum_branch.backbone.calls


# --- ObjectiveNeeds -------------------------------------------------------------------------------------------
def test_needs_are_a_frozen_value() -> None:
    needs = ObjectiveNeeds(encodes=[ONLINE_A, MOMENTUM_B, ONLINE_A])
    assert needs.encodes == frozenset({ONLINE_A, MOMENTUM_B}) and isinstance(needs.encodes, frozenset)
    same = ObjectiveNeeds(encodes={MOMENTUM_B, ONLINE_A})
    assert needs == same and hash(needs) == hash(same)
    with pytest.raises(dataclasses.FrozenInstanceError):
        needs.partial_queries = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"encodes": {MOMENTUM_A, MOMENTUM_B}}, ValueError, "must read view A \\(online\\)"),
        ({"encodes": {ONLINE_B}}, ValueError, "its rows are the queries"),
        ({"full_scene": True, "partial_queries": True}, ValueError, "partial_queries needs encoded views"),
        ({}, ValueError, "encoded views, the whole scenes, or both"),
        ({"encodes": {"a/online"}}, TypeError, "Encoding values"),
    ],
)
def test_needs_that_cannot_be_met_are_refused(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ObjectiveNeeds(**kwargs)


def test_the_union() -> None:
    union = ObjectiveNeeds.union(
        [
            ObjectiveNeeds(encodes={ONLINE_A}, form=Form.VECTOR, partial_queries=True),
            TCL_LIKE,
            ObjectiveNeeds(full_scene=True, backbone_at_init=True),
        ]
    )
    assert union == ObjectiveNeeds(
        encodes={ONLINE_A, MOMENTUM_A, MOMENTUM_B}, form=Form.STEPS, partial_queries=True, full_scene=True,
        backbone_at_init=True,
    )  # fmt: skip
    assert ObjectiveNeeds.union([ObjectiveNeeds(full_scene=True)]) == ObjectiveNeeds(full_scene=True)
    assert ObjectiveNeeds.union([ObjectiveNeeds(encodes={ONLINE_A}, form=Form.VECTOR)]).form is Form.STEPS
    with pytest.raises(ValueError, match="no objective"):
        ObjectiveNeeds.union([])


def test_an_objective_must_declare_its_needs() -> None:
    with pytest.raises(TypeError, match="must declare needs"):

        class Undeclared(SSLObjective):
            def compute(self, inputs: SSLInputs) -> ObjectiveOutput:
                return ObjectiveOutput(torch.zeros(()))

    with pytest.raises(TypeError, match="must declare needs"):

        class Flagged(SSLObjective):
            needs: ClassVar[bool] = True  # type: ignore[assignment]


def test_shipped_declarations_follow_their_arguments() -> None:
    assert TrajectoryContrastiveLoss(dim=4, hidden_dim=8).declared_needs() == TCL_LIKE
    symmetric = TrajectoryContrastiveLoss(dim=4, hidden_dim=8, symmetric=True).declared_needs()
    assert symmetric.encodes == TCL_LIKE.encodes | {ONLINE_B}
    assert not TrajectoryReconstructionLoss(dim=4, hidden_dim=8, window=5).declared_needs().partial_queries
    partial = TrajectoryReconstructionLoss(dim=4, hidden_dim=8, window=5, require_full_target=False)
    assert partial.declared_needs() == ObjectiveNeeds(encodes={ONLINE_A}, partial_queries=True)


# --- SSLInputs ------------------------------------------------------------------------------------------------
def _union_inputs() -> SSLInputs:
    """4 queries with Q = 3; query 1 is partial in window B (its momentum rows are zero)."""
    g = torch.Generator().manual_seed(3)
    full_b = torch.tensor([True, False, True, True])
    z = torch.randn(4, 3, PROJ, generator=g)
    keys = torch.randn(4, 3, PROJ, generator=g) * full_b[:, None, None]
    inputs = query_inputs(
        {ONLINE_A: z, MOMENTUM_B: keys},
        full_b=full_b, start_a=torch.arange(4), start_b=torch.arange(4) + 9, window=5,
        target=torch.randn(4, 5, 2, generator=g), target_valid=torch.ones(4, 5, dtype=torch.bool),
    )  # fmt: skip
    scenes = Scenes(batch={"whole": "scenes"}, backbone=FakeBackbone())
    needs = dataclasses.replace(inputs.needs, full_scene=True)
    return SSLInputs(needs, inputs.encodings, inputs.queries, scenes)


def test_restrict_gives_exactly_the_declared_inputs() -> None:
    union = _union_inputs()
    z, keys, queries = union.encoding(ONLINE_A), union.encoding(MOMENTUM_B), union.queries
    assert union.needs.partial_queries

    partial, rows = union.restrict(ObjectiveNeeds(encodes={ONLINE_A}, partial_queries=True))
    assert rows is None and set(partial.encodings) == {ONLINE_A} and partial.scenes is None
    assert partial.queries is queries and partial.encoding(ONLINE_A) is z
    with pytest.raises(ValueError, match=r"view B \(momentum\) is not among these inputs.*declare it"):
        partial.encoding(MOMENTUM_B)

    full, rows = union.restrict(ObjectiveNeeds(encodes={ONLINE_A, MOMENTUM_B}))
    assert rows.tolist() == [True, False, True, True]
    assert full.queries.full_b.all() and full.queries.start_a.tolist() == [0, 2, 3]
    assert torch.equal(full.encoding(ONLINE_A), z[rows]) and torch.equal(full.encoding(MOMENTUM_B), keys[rows])
    assert torch.equal(full.queries.target, queries.target[rows])

    vector, _ = union.restrict(ObjectiveNeeds(encodes={ONLINE_A}, form=Form.VECTOR, partial_queries=True))
    assert torch.equal(vector.encoding(ONLINE_A), z[:, -1])

    scenes, rows = union.restrict(ObjectiveNeeds(full_scene=True))
    assert rows is None and scenes.encodings == {} and scenes.queries is None and scenes.scenes is union.scenes


def test_restrict_refuses_what_the_inputs_lack() -> None:
    union = _union_inputs()
    with pytest.raises(ValueError, match=r"lack \['view A \(momentum\)'\]"):
        union.restrict(TCL_LIKE)
    no_scenes, _ = union.restrict(ObjectiveNeeds(encodes={ONLINE_A}, partial_queries=True))
    with pytest.raises(ValueError, match="the whole scenes"):
        no_scenes.restrict(ObjectiveNeeds(full_scene=True))


def test_inputs_hold_exactly_their_needs() -> None:
    union = _union_inputs()
    with pytest.raises(ValueError, match="but the needs declare"):
        SSLInputs(TCL_LIKE, union.encodings, union.queries)
    with pytest.raises(ValueError, match="queries exactly when"):
        SSLInputs(ObjectiveNeeds(encodes={ONLINE_A}), {ONLINE_A: union.encoding(ONLINE_A)})
    with pytest.raises(ValueError, match="whole scenes exactly when"):
        SSLInputs(ObjectiveNeeds(full_scene=True))
    with pytest.raises(ValueError, match="one row per query"):
        SSLInputs(ObjectiveNeeds(encodes={ONLINE_A}), {ONLINE_A: torch.zeros(3, 1, PROJ)}, union.queries)
    with pytest.raises(ValueError, match="expected 2 dims"):
        SSLInputs(
            ObjectiveNeeds(encodes={ONLINE_A}, form=Form.VECTOR), {ONLINE_A: union.encoding(ONLINE_A)}, union.queries
        )


# --- what the task runs -----------------------------------------------------------------------------------------
def test_without_a_momentum_reader_the_momentum_branch_never_runs() -> None:
    reader = recording(ObjectiveNeeds(encodes={ONLINE_A}))
    task = _task(reader=reader)
    out = task.losses(fake_batch())
    assert _calls(task) == (["a"], [])
    (got,) = reader.received
    assert set(got.encodings) == {ONLINE_A} and got.scenes is None
    # queries full in window B only (query 1 is partial); view B is not encoded, so query 4 counts as full
    assert got.queries.start_b.tolist() == [5, 5, 7, 7] and got.queries.full_b.all()
    assert got.encoding(ONLINE_A).shape == (4, STEPS, PROJ) and got.encoding(ONLINE_A).requires_grad
    assert float(out["num_queries"]) == 4 and float(out["num_unembedded"]) == 0


def test_momentum_readers_get_keys_without_gradients() -> None:
    reader = recording(TCL_LIKE)
    task = _task(tcl_like=reader)
    out = task.losses(fake_batch())
    assert _calls(task) == (["a"], ["b", "a"])  # the momentum passes run first
    (got,) = reader.received
    assert set(got.encodings) == TCL_LIKE.encodes
    assert got.encoding(ONLINE_A).requires_grad
    assert not got.encoding(MOMENTUM_A).requires_grad and not got.encoding(MOMENTUM_B).requires_grad
    # query 4 is not embedded in view B: it is not a positive, and counted as unembedded
    assert got.queries.num_queries == 3 and float(out["num_queries"]) == 3 and float(out["num_unembedded"]) == 1


def test_every_encoding_runs_once_in_the_fixed_order() -> None:
    order: list[tuple[str, str]] = []
    task = _task(first=recording(ObjectiveNeeds(encodes={ONLINE_A, ONLINE_B})), second=recording(TCL_LIKE))
    for name, branch in (("online", task.branch), ("momentum", task.momentum_branch)):
        encode = branch.backbone.encode
        branch.backbone.encode = lambda view, name=name, encode=encode: order.append((name, view.name)) or encode(view)
    task.losses(fake_batch())
    # the no-grad momentum passes first, before any autograd graph exists (docs/benchmarks.md)
    assert order == [("momentum", "b"), ("momentum", "a"), ("online", "a"), ("online", "b")]


def test_partial_and_full_readers_share_one_run() -> None:
    partial = recording(ObjectiveNeeds(encodes={ONLINE_A}, partial_queries=True))
    full = recording(ObjectiveNeeds(encodes={ONLINE_A, MOMENTUM_B}))
    vector = recording(ObjectiveNeeds(encodes={ONLINE_A}, form=Form.VECTOR, partial_queries=True))
    task = _task(partial=partial, full=full, vector=vector)
    task.sources = ["synthetic"]
    task._source_index = {"synthetic": 0}
    task.losses(fake_batch(), "train")
    assert _calls(task) == (["a"], ["b"])
    (p,), (f,), (v,) = partial.received, full.received, vector.received
    # the partial reader: every kept query (4 is partial too: not embedded in view B); the other: the positives
    assert p.queries.full_b.tolist() == [True, False, True, True, False]
    assert set(p.encodings) == {ONLINE_A} and set(f.encodings) == {ONLINE_A, MOMENTUM_B}
    assert f.queries.num_queries == 3 and f.queries.full_b.all()
    assert torch.equal(f.encoding(ONLINE_A), p.encoding(ONLINE_A)[p.queries.full_b])
    assert torch.equal(v.encoding(ONLINE_A), p.encoding(ONLINE_A)[:, -1])
    # per-query values land on their own queries: the full reader's rows 0, 1, 2 are kept queries 0, 2, 3
    sums = {name: task._source_sums[("train", name)][0].tolist() for name in ("partial", "full")}
    assert sums == {"partial": [0 + 1 + 2 + 3 + 4, 5], "full": [0 + 1 + 2, 3]}


def test_scene_readers_alone_encode_no_view() -> None:
    reader = recording(ObjectiveNeeds(full_scene=True))
    task = _task(scenes=reader)
    whole = {"whole": "scenes"}
    out = task.losses(fake_batch(full=whole))
    assert _calls(task) == ([], [])
    (got,) = reader.received
    assert got.encodings == {} and got.queries is None
    assert got.scenes.batch is whole and got.scenes.backbone is task.branch.backbone
    assert float(out["num_queries"]) == 0 and task.needs.full_scene
    with pytest.raises(ValueError, match="with_full=True"):
        task.losses(fake_batch())


def test_an_instance_cannot_change_backbone_at_init() -> None:
    class Changing(TrajectoryReconstructionLoss):
        def declared_needs(self) -> ObjectiveNeeds:
            return dataclasses.replace(self.needs, backbone_at_init=True)

    with pytest.raises(TypeError, match="backbone_at_init is the class's"):
        _task(changing=Changing(dim=PROJ, hidden_dim=8, window=5))


def test_queries_rows() -> None:
    q = Queries(
        full_b=torch.tensor([True, False, True]), start_a=torch.arange(3), start_b=torch.arange(3) + 5, window=4,
        target=torch.randn(3, 4, 2), target_valid=torch.ones(3, 4, dtype=torch.bool),
        query_window=torch.tensor([4, 3, 2]),
    )  # fmt: skip
    kept = q.rows(q.full_b)
    assert kept.num_queries == 2 and kept.windows().tolist() == [4, 2] and kept.window == 4
    assert Queries(**{**dataclasses.asdict(q), "query_window": None}).windows().tolist() == [4, 4, 4]
