"""Refresh the generated blocks of docs/data_format.md (the taxonomy tables) from the code."""

from __future__ import annotations

from pathlib import Path

from smartpretrain.data.taxonomy import render_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "data_format.md"


def main() -> None:
    text = DOC.read_text()
    head, rest = text.split("<!-- taxonomy:begin -->\n", 1)
    _, tail = rest.split("<!-- taxonomy:end -->", 1)
    DOC.write_text(f"{head}<!-- taxonomy:begin -->\n{render_markdown()}<!-- taxonomy:end -->{tail}")
    print(f"updated {DOC}")


if __name__ == "__main__":
    main()
