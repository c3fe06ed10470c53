"""docs/ssl.md against the code: the contract's fields, the declared needs of every shipped objective, and the
example objective (it must run in the pre-train task)."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import math
import re

import pytest
from omegaconf import OmegaConf

import smartpretrain.ssl.forward_dynamics
import smartpretrain.ssl.hindsight
import smartpretrain.ssl.inverse_dynamics
import smartpretrain.ssl.mae
import smartpretrain.ssl.tcl
import smartpretrain.ssl.trl
from smartpretrain.ssl.objective import (
    MOMENTUM_B,
    ONLINE_A,
    Branch,
    Controls,
    Encoding,
    Form,
    ObjectiveNeeds,
    Queries,
    Scenes,
    SSLInputs,
    SSLObjective,
    View,
)
from smartpretrain.tasks.pretrain import PretrainTask
from tests.conftest import REPO
from tests.ssl.inputs import FakeBackbone, fake_batch

DOC = REPO / "docs" / "ssl.md"
SHIPPED_MODULES = (
    smartpretrain.ssl.tcl, smartpretrain.ssl.trl, smartpretrain.ssl.mae, smartpretrain.ssl.forward_dynamics,
    smartpretrain.ssl.inverse_dynamics, smartpretrain.ssl.hindsight,
)  # fmt: skip
REMOVED_FLAGS = (
    "needs_momentum_keys", "needs_online_view_b", "uses_partial_queries", "needs_full_scene", "uses_views",
    "needs_backbone_at_init",
)  # fmt: skip


def _section(title: str) -> str:
    """The text under the heading ``title`` (any level) up to the next heading of the same or a higher level."""
    lines = DOC.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"(#+) (.*)", line)
        if match and match.group(2) == title:
            level = len(match.group(1))
            end = next(
                (j for j in range(i + 1, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[j])),
                len(lines),
            )
            return "\n".join(lines[i + 1 : end])
    raise AssertionError(f"docs/ssl.md has no heading {title!r}")


def _cells(row: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", row.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def _tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table of ``text``: rows as {header: cell}."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            header = _cells(block[0])
            tables.append([dict(zip(header, _cells(r), strict=True)) for r in block[2:]])
            block = []
    return tables


def _code(cell: str) -> str:
    assert cell.startswith("`") and cell.endswith("`"), cell
    return cell[1:-1]


def _doc_fields(table: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(_code(row["field"]), _code(row["type"])) for row in table]


def _code_fields(cls: type) -> list[tuple[str, str]]:
    return [(f.name, str(f.type)) for f in dataclasses.fields(cls)]


def test_the_needs_fields_are_those_of_the_doc() -> None:
    (table,) = _tables(_section("What an objective declares: `ObjectiveNeeds`"))
    assert _doc_fields(table) == _code_fields(ObjectiveNeeds)


def test_the_inputs_fields_are_those_of_the_doc() -> None:
    tables = _tables(_section("What it receives: `SSLInputs`"))
    assert [_doc_fields(t) for t in tables] == [_code_fields(c) for c in (SSLInputs, Queries, Controls, Scenes)]


def _needs_of_row(row: dict[str, str]) -> ObjectiveNeeds:
    def flag(cell: str) -> bool:
        assert cell in ("yes", "no"), cell
        return cell == "yes"

    encodes = set()
    if row["encodes"] != "—":
        for pair in row["encodes"].split(", "):
            view, branch = pair.split("/")
            encodes.add(Encoding(View[view], Branch(branch)))
    return ObjectiveNeeds(
        encodes=encodes,
        form=Form(row["form"]),
        partial_queries=flag(row["partial_queries"]),
        full_scene=flag(row["full_scene"]),
        backbone_at_init=flag(row["backbone_at_init"]),
        controls=flag(row["controls"]),
    )


def _shipped_rows() -> list[tuple[type, dict[str, object], ObjectiveNeeds]]:
    """(class, constructor arguments, declared needs) of every row of the doc's table."""
    (table,) = _tables(_section("What the shipped objectives declare"))
    out = []
    for row in table:
        call = ast.parse(_code(row["objective"]), mode="eval").body
        target = call.func if isinstance(call, ast.Call) else call
        module, name = ast.unparse(target).rsplit(".", 1)
        cls = getattr(importlib.import_module(f"smartpretrain.ssl.{module}"), name)
        kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords} if isinstance(call, ast.Call) else {}
        out.append((cls, kwargs, _needs_of_row(row)))
    return out


def test_the_declared_needs_of_the_shipped_objectives_are_those_of_the_doc() -> None:
    rows = _shipped_rows()
    assert len(rows) == 10
    for cls, kwargs, needs in rows:
        if kwargs:  # arguments that change the needs: the instance's declaration
            assert cls(**kwargs).declared_needs() == needs, (cls.__name__, kwargs)
        else:
            assert cls.needs == needs, cls.__name__


def test_every_shipped_objective_has_a_row() -> None:
    documented = {cls for cls, kwargs, _ in _shipped_rows() if not kwargs}
    defined = {
        obj
        for module in SHIPPED_MODULES
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, SSLObjective) and obj.__module__ == module.__name__
    }
    configured = set()
    for path in sorted((REPO / "configs" / "ssl").glob("*.yaml")):
        for spec in (OmegaConf.to_container(OmegaConf.load(path)).get("objectives") or {}).values():
            module, name = spec["_target_"].rsplit(".", 1)
            configured.add(getattr(importlib.import_module(module), name))
    assert defined and configured <= defined
    assert documented == defined


def test_the_doc_example_runs_in_the_pretrain_task() -> None:
    (source,) = re.findall(r"```python\n(.*?)```", _section("Example"), flags=re.DOTALL)
    namespace: dict[str, object] = {"__name__": "ssl_doc_example"}
    exec(compile(source, str(DOC), "exec"), namespace)
    objective = namespace["CrossViewCosine"]()
    assert objective.declared_needs() == ObjectiveNeeds(encodes={ONLINE_A, MOMENTUM_B}, form=Form.VECTOR)
    task = PretrainTask(FakeBackbone(), {"cosine": objective}, window=5, proj_hidden_dim=8, proj_dim=4).train()
    out = task.losses(fake_batch())
    assert math.isfinite(float(out["cosine"].detach())) and out["loss"].requires_grad
    # what the text says: online branch on view A, momentum branch on view B, nothing else
    assert task.branch.backbone.calls == ["a"] and task.momentum_branch.backbone.calls == ["b"]


@pytest.mark.parametrize("flag", REMOVED_FLAGS)
def test_the_doc_names_no_removed_capability_flag(flag: str) -> None:
    assert flag not in DOC.read_text()
    assert not any(hasattr(cls, flag) for cls, _, _ in _shipped_rows())
