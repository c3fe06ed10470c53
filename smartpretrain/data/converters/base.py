"""What every converter provides, and the errors and reasons it reports.

A converter knows one raw format. It lists its raw inputs (one item = one scenario) in a stable order, and
turns one item into a :class:`~smartpretrain.data.scene.Scene`. A bad item raises :class:`ConversionError`
with a :class:`DropReason`; a repairable oddity is returned as a :class:`Repair` so that the conversion
report counts it (and ``strict=true`` refuses it).
"""

from __future__ import annotations

import abc
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

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

    def describe(self) -> dict[str, object]:
        """Converter settings recorded in the manifest."""
        return {"dataset": self.dataset.value, "raw_root": str(self.raw_root), "split": self.split}


def count_repairs(repairs: list[Repair]) -> Counter[str]:
    """Counts by ``kind`` for a list of repairs."""
    counts: Counter[str] = Counter()
    for r in repairs:
        counts[r.kind.value] += r.count
    return counts
