"""docs/data_format.md carries the mapping tables rendered from the code; they must not drift."""

from __future__ import annotations

from smartpretrain.data.taxonomy import render_markdown
from tests.conftest import REPO


def test_taxonomy_tables_in_docs_match_code() -> None:
    text = (REPO / "docs" / "data_format.md").read_text()
    begin, end = "<!-- taxonomy:begin -->\n", "<!-- taxonomy:end -->"
    assert begin in text and end in text, "docs/data_format.md lost its taxonomy markers"
    block = text.split(begin, 1)[1].split(end, 1)[0]
    assert block == render_markdown(), "run: python scripts/render_docs.py to refresh docs/data_format.md"
