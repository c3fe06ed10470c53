"""Generated doc blocks must not drift from the code: the mapping tables (docs/data_format.md), the registry
(docs/datasets.md)."""

from __future__ import annotations

from smartpretrain.data.taxonomy import render_markdown
from tests.conftest import REPO


def test_taxonomy_tables_in_docs_match_code() -> None:
    text = (REPO / "docs" / "data_format.md").read_text()
    begin, end = "<!-- taxonomy:begin -->\n", "<!-- taxonomy:end -->"
    assert begin in text and end in text, "docs/data_format.md lost its taxonomy markers"
    block = text.split(begin, 1)[1].split(end, 1)[0]
    assert block == render_markdown(), "run: python scripts/render_docs.py to refresh docs/data_format.md"


def test_registry_table_in_docs_matches_code() -> None:
    from smartpretrain.data.registry import render_markdown as render_registry

    text = (REPO / "docs" / "datasets.md").read_text()
    begin, end = "<!-- registry:begin -->\n", "<!-- registry:end -->"
    assert begin in text and end in text, "docs/datasets.md lost its registry markers"
    block = text.split(begin, 1)[1].split(end, 1)[0]
    assert block == render_registry(), "run: python scripts/render_docs.py to refresh docs/datasets.md"
