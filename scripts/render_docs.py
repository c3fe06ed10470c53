"""Refresh the generated blocks of the docs from the code: the taxonomy tables of docs/data_format.md and the
dataset registry table of docs/datasets.md."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from smartpretrain.data import registry, taxonomy

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: (doc, marker, renderer): the text between ``<!-- marker:begin -->`` and ``<!-- marker:end -->``
BLOCKS: tuple[tuple[str, str, Callable[[], str]], ...] = (
    ("data_format.md", "taxonomy", taxonomy.render_markdown),
    ("datasets.md", "registry", registry.render_markdown),
)


def main() -> None:
    for name, marker, render in BLOCKS:
        doc = DOCS / name
        head, rest = doc.read_text().split(f"<!-- {marker}:begin -->\n", 1)
        _, tail = rest.split(f"<!-- {marker}:end -->", 1)
        doc.write_text(f"{head}<!-- {marker}:begin -->\n{render()}<!-- {marker}:end -->{tail}")
        print(f"updated {doc}")


if __name__ == "__main__":
    main()
