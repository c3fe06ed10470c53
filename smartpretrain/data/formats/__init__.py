"""Raw dataset formats, one module each (schema, reader and writer side by side).

A format module knows one dataset's files: their names, columns, keys and types. The converters read raw data
through it and the synthetic generator writes raw data through it, so the two sides cannot drift apart. A format
module knows nothing about :class:`~smartpretrain.data.scene.Scene`: turning raw records into scenes is the
converters' job.
"""

from __future__ import annotations

from pathlib import Path


class FormatError(ValueError):
    """A raw file breaks its format; names the file and what is wrong (converters turn it into a drop reason)."""

    def __init__(self, path: Path | str, detail: str) -> None:
        self.path = str(path)
        self.detail = detail
        super().__init__(f"{self.path}: {detail}")


class MissingColumnsError(FormatError):
    """A table lacks columns its format requires."""

    def __init__(self, path: Path | str, missing: list[str], present: list[str]) -> None:
        self.missing = missing
        self.present = present
        super().__init__(path, f"missing columns {missing}")


__all__ = ["FormatError", "MissingColumnsError"]
