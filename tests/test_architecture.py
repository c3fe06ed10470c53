"""The layering of docs/architecture.md, checked on the source: who may import whom, and who may read a batch.

* entry points (``python -m smartpretrain.<name>``) are thin: none imports another, and nothing in the package
  or in ``scripts/`` imports one (the run layer, :mod:`smartpretrain.runs`, holds the work);
* data flows one way: ``data`` imports no model, task, run or SSL module; ``backbones`` import no task, run or
  entry point; ``io`` imports neither the scene cache nor a task;
* outside a backbone's folder, a batch is read only through its :class:`~smartpretrain.backbones.base.BatchDescription`
  and ``Backbone`` methods: no module subscripts a batch with a backbone's own keys (QCNet's node types,
  Forecast-MAE's tensor names) or reads the ids a backbone batch happens to carry.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartpretrain.backbones.base import DESCRIPTION_KEY

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "smartpretrain"
#: the modules run as ``python -m smartpretrain.<name>`` (each has a ``main``)
ENTRY_POINTS = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__" and "def main(" in p.read_text())


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources(*roots: Path) -> Iterator[Path]:
    for root in roots:
        yield from sorted(p for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (function-level imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from smartpretrain import finetune`
    return found


def _imports_any(path: Path, prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in _imports(path) if any(m == p or m.startswith(p + ".") for p in prefixes))


def test_entry_points_are_found() -> None:
    assert {"convert", "evaluate", "finetune", "pretrain"} <= set(ENTRY_POINTS)


def test_no_module_imports_an_entry_point() -> None:
    entry = tuple(f"smartpretrain.{name}" for name in ENTRY_POINTS)
    offenders = {
        str(path.relative_to(REPO)): hits
        for path in _sources(PACKAGE, REPO / "scripts")
        if (hits := [m for m in _imports_any(path, entry) if m != _module_name(path)])
    }
    assert offenders == {}, f"entry points must stay thin and unimported: {offenders}"


@pytest.mark.parametrize(
    ("layer", "forbidden"),
    [
        ("data", ("smartpretrain.backbones", "smartpretrain.ssl", "smartpretrain.tasks", "smartpretrain.runs",
                  "smartpretrain.embeddings", "smartpretrain.metrics")),
        ("backbones", ("smartpretrain.tasks", "smartpretrain.runs", "smartpretrain.embeddings")),
        ("io", ("smartpretrain.data.cache", "smartpretrain.tasks", "smartpretrain.runs", "smartpretrain.ssl",
                "smartpretrain.backbones")),
        ("metrics", ("smartpretrain.backbones", "smartpretrain.tasks", "smartpretrain.runs", "smartpretrain.ssl")),
        ("ssl", ("smartpretrain.tasks", "smartpretrain.runs", "smartpretrain.data")),
        ("tasks", ("smartpretrain.runs",)),
    ],
)  # fmt: skip
def test_layers_import_one_way(layer: str, forbidden: tuple[str, ...]) -> None:
    offenders = {
        str(path.relative_to(REPO)): hits
        for path in _sources(PACKAGE / layer)
        if (hits := _imports_any(path, forbidden))
    }
    assert offenders == {}, f"{layer}/ imports against the flow of docs/architecture.md: {offenders}"


def _backbone_batch_keys() -> tuple[set[str], set[str]]:
    """The keys of real QCNet and Forecast-MAE batches (node / edge types and stored tensors, dict keys), and
    QCNet's node and edge types alone."""
    from smartpretrain.backbones.forecast_mae.model import ForecastMAE
    from smartpretrain.backbones.qcnet.model import QCNet
    from tests.helpers import make_tiny_scene

    scenes = [make_tiny_scene("tiny-0"), make_tiny_scene("tiny-1")]  # 20 steps, present = step 9
    keys: set[str] = set()
    qcnet = QCNet(
        hidden_dim=16, num_historical_steps=10, num_future_steps=10, num_recurrent_steps=2, num_heads=2, head_dim=8,
        num_map_layers=1, num_agent_layers=1, num_dec_layers=1, num_t2m_steps=10,
    )  # fmt: skip
    adapter = qcnet.make_adapter()
    batch = adapter.collate([adapter(s) for s in scenes])
    for store in batch.stores:
        keys.update(k for k in store.keys() if isinstance(k, str))
    node_types = set(batch.node_types)
    keys |= node_types | {"/".join(edge) for edge in batch.edge_types}
    fmae = ForecastMAE(num_historical_steps=10, num_future_steps=10)
    adapter = fmae.make_adapter()
    keys.update(adapter.collate([adapter(s) for s in scenes]).keys())
    keys.discard(DESCRIPTION_KEY)
    return keys, node_types


#: modules that receive collated backbone batches and must read them through the description
BATCH_CONSUMERS = ("ssl", "tasks", "metrics", "io", "runs", "embeddings", "viz")


#: attributes a backbone batch carries that are not what the description offers (ids, frames, node types are
#: added to these by the test); tensor names like ``target`` also exist on the data layer's view batches
BATCH_ATTRIBUTES = {"scenario_id", "origin", "city", "track_ids", "scene_origin", "frame_origin", "agent_index"}


def _batch_reads(path: Path, keys: set[str], attributes: set[str]) -> list[str]:
    """``batch[<backbone key>]`` / ``batch.<backbone attribute>`` on any name that holds a batch (``*batch*``)."""
    hits: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            key, target, wanted = node.slice.value, node.value, keys
        elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Tuple):  # an edge type
            parts = [e.value for e in node.slice.elts if isinstance(e, ast.Constant)]
            key, target, wanted = "/".join(map(str, parts)), node.value, keys
        elif isinstance(node, ast.Attribute):
            key, target, wanted = node.attr, node.value, attributes
        elif (  # getattr(batch, "<name>", ...)
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            key, target, wanted = node.args[1].value, node.args[0], keys | attributes | {"num_graphs"}
        else:
            continue
        name = target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")
        if isinstance(key, str) and key in wanted and "batch" in name.lower():
            where = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
            hits.append(f"{where}:{node.lineno} {name}[{key!r}]")
    return hits


def test_no_module_outside_a_backbone_reads_its_batch_fields() -> None:
    keys, node_types = _backbone_batch_keys()
    assert {"agent", "map_polygon", "x", "lane_centers"} <= keys  # the scan looks for the right names
    roots = [PACKAGE / name for name in BATCH_CONSUMERS if (PACKAGE / name).exists()]
    files = [*_sources(*roots), *(PACKAGE / f"{name}.py" for name in ENTRY_POINTS)]
    assert len(files) > 30
    hits = [hit for path in files for hit in _batch_reads(path, keys, BATCH_ATTRIBUTES | node_types)]
    assert hits == [], "read batches through describe_batch() / Backbone methods:\n" + "\n".join(hits)


def test_the_scan_catches_a_batch_read(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text(
        "def f(batch):\n"
        '    return batch["agent"]["position"], batch.scenario_id, batch["agent", "to", "agent"], batch.target\n'
        'def g(batch):\n    return getattr(batch, "num_graphs", 1)\n'
    )
    assert len(_batch_reads(bad, {"agent", "agent/to/agent"}, {"scenario_id"})) == 4
