"""docs/cluster.md's wall-time table is what ``scripts/cluster_plan.py`` derives from the measured conversion rates
(``benchmarks/results/convert.json``), and the derivation is the documented model."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.conftest import REPO


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cluster_plan", REPO / "scripts" / "cluster_plan.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["cluster_plan"] = module
    spec.loader.exec_module(module)
    return module


def test_the_docs_table_is_derived_from_the_committed_rates() -> None:
    plan = _script()
    per_case, machine = plan.rates()
    text = plan.render(plan.plan(per_case, [1, 4, 16], 32, [1.0, 10.0]), machine)
    doc = (REPO / "docs" / "cluster.md").read_text()
    block = doc.split(f"<!-- {plan.MARKER}:begin -->\n", 1)[1].split(f"<!-- {plan.MARKER}:end -->", 1)[0]
    assert block == text, "run: python scripts/cluster_plan.py --write-doc"


def test_wall_time_is_cpu_time_over_cores_and_bytes_over_read_rate() -> None:
    plan = _script()
    result = plan.plan({"av2_fixture": 6.0, "womd_fixture": 30.0, "av1_val": 3.0}, [1, 4], 32, [2.0])
    av2 = next(s for s in result["splits"] if s["dataset"] == "av2")
    assert av2["cpu_hours"] == pytest.approx(199_908 * 6.0 / 1000 / 3600, abs=0.01)
    assert av2["cpu_bound_s"]["4"] == pytest.approx(199_908 * 6.0 / 1000 / 128, abs=0.1)
    assert av2["read_bound_s"]["2"] == pytest.approx(199_908 * 223_248 / 1e9 / 2.0, abs=0.1)
    with pytest.raises(SystemExit, match="no single-worker result for case 'womd_fixture'"):
        plan.plan({"av2_fixture": 6.0, "av1_val": 3.0}, [1], 32, [1.0])
