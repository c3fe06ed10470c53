"""What every converter provides, and the errors and reasons it reports.

A converter knows one raw format. It lists its raw inputs (one item = one scenario) in a stable order, and
turns one item into a :class:`~smartpretrain.data.scene.Scene`. A bad item raises :class:`ConversionError`
with a :class:`DropReason`; a repairable oddity is returned as a :class:`Repair` so that the conversion
report counts it (and ``strict=true`` refuses it).
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

from smartpretrain.data.scene import Scene
from smartpretrain.data.taxonomy import Dataset


class DropReason(StrEnum):
    """Why a raw scenario was not converted. The string is what the manifest records."""

    CORRUPT_FILE = "corrupt_file"
    MISSING_FILE = "missing_file"
    MISSING_COLUMNS = "missing_columns"
    EMPTY_FILE = "empty_file"
    NON_FINITE_VALUES = "non_finite_values"
    NO_FOCAL_AGENT = "no_focal_agent"
    MULTIPLE_FOCAL_AGENTS = "multiple_focal_agents"
    DUPLICATE_ROWS = "duplicate_rows"
    WRONG_NUM_STEPS = "wrong_num_steps"
    BAD_MAP = "bad_map"
    INVALID_SCENE = "invalid_scene"
    REPAIR_REFUSED = "repair_refused"
    UNEXPECTED_ERROR = "unexpected_error"


class RepairKind(StrEnum):
    """A raw oddity the converter fixed; counted in the manifest, refused under ``strict=true``."""

    UNKNOWN_OBJECT_TYPE = "unknown_object_type"
    ROWS_OUT_OF_ORDER = "rows_out_of_order"
    NO_TRACKS_TO_PREDICT = "no_tracks_to_predict"  # WOMD: the sdc became the focal agent


class ConversionError(Exception):
    """A raw scenario cannot be converted. The message names the file, the scene and what is wrong."""

    def __init__(self, reason: DropReason, path: Path | str, message: str, scenario_id: str | None = None) -> None:
        self.reason = DropReason(reason)
        self.path = str(path)
        self.scenario_id = scenario_id
        self.detail = message
        scene = f" (scene {scenario_id})" if scenario_id else ""
        super().__init__(f"{self.path}{scene}: {self.reason.value}: {message}")


@dataclass
class Repair:
    """One repaired oddity: what kind, in which file, and a human-readable detail (e.g. the raw label)."""

    kind: RepairKind
    path: str
    detail: str
    count: int = 1


@dataclass
class ConvertedScene:
    """A converted scene plus the repairs made while converting it."""

    scene: Scene
    repairs: list[Repair] = field(default_factory=list)


class SceneConverter(abc.ABC):
    """Base class of the per-dataset converters."""

    dataset: Dataset

    def __init__(self, raw_root: str | Path, split: str) -> None:
        self.raw_root = Path(raw_root)
        self.split = split

    @abc.abstractmethod
    def list_items(self) -> list[str]:
        """Raw scenario items of the split, sorted (stable across runs and machines, so shards agree)."""

    @abc.abstractmethod
    def convert(self, item: str) -> ConvertedScene:
        """Convert one item; raise :class:`ConversionError` when it cannot be converted."""

    def item_path(self, item: str) -> Path:
        """The file an item's errors should name (the item itself by default)."""
        return Path(item)

    def item_files(self, item: str) -> list[Path]:
        """Every file converting ``item`` reads (its raw-input fingerprint); ``[item_path(item)]`` by default."""
        return [self.item_path(item)]

    def describe(self) -> dict[str, object]:
        """Converter settings recorded in the manifest."""
        return {"dataset": self.dataset.value, "raw_root": str(self.raw_root), "split": self.split}

    def settings(self) -> dict[str, object]:
        """Everything that changes the converted output, as plain JSON values (what the fingerprint hashes).

        By default :meth:`describe` plus every public attribute of the converter (so an option a subclass keeps
        as an attribute is covered even when ``describe`` forgets it), minus ``raw_root``: where the raw data
        lives does not change the output (the raw files themselves are fingerprinted through
        :meth:`item_files`), and shards converted on machines that mount the data at other paths must agree.
        Override when an option lives elsewhere or an attribute is not an option.
        """
        out: dict[str, object] = {k: _plain(v) for k, v in self.describe().items()}
        for name, value in sorted(vars(self).items()):
            if not name.startswith("_") and name not in out:
                out[name] = _plain(value)
        out.pop("raw_root", None)
        return out

    def settings_fingerprint(self) -> str:
        """A stable hash of :meth:`settings` (16 hex digits)."""
        blob = json.dumps(self.settings(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """A JSON value standing for a setting, equal across runs and processes for equal settings."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Enum):
        return _plain(value.value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted((_plain(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return _plain(value.tolist())
    # an object whose repr may hold a memory address: only its type is stable (override settings() to cover it)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def count_repairs(repairs: list[Repair]) -> Counter[str]:
    """Counts by ``kind`` for a list of repairs."""
    counts: Counter[str] = Counter()
    for r in repairs:
        counts[r.kind.value] += r.count
    return counts
