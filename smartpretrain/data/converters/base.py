"""What every converter provides, the steps they share, and the errors and reasons they report.

A converter knows one raw format. It lists its raw inputs (one item = one scenario) in a stable order, and
turns one item into a :class:`~smartpretrain.data.scene.Scene`. A bad item raises :class:`ConversionError`
with a :class:`DropReason`; a repairable oddity is returned as a :class:`Repair` so that the conversion
report counts it (and ``strict=true`` refuses it).

The steps every converter shares live here: :func:`validated` (check the assembled scene, drop it as
``invalid_scene`` naming the file and scene), :func:`map_labels` (raw labels through a taxonomy table; the
unknown ones are the caller's repairs), :func:`read_raw` (a raw file's bytes, ``missing_file`` /
``corrupt_file`` when it cannot be read) and :meth:`SceneConverter.convert_or_drop` (one item's outcome as the
manifest records it: a scene with its repairs, or a drop with its reason; ``strict`` refuses either).
"""

from __future__ import annotations

import abc
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum, IntEnum, StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from smartpretrain.data.scene import Scene, SceneValidationError
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


class StrictModeError(RuntimeError):
    """Raised under ``strict=true`` at the first dropped or repaired scene."""


@dataclass
class Repair:
    """One repaired oddity: what kind, in which file, and a human-readable detail (e.g. the raw label)."""

    kind: RepairKind
    path: str
    detail: str
    count: int = 1

    def record(self) -> dict[str, Any]:
        """As the part footer and the manifest record it."""
        return {"kind": self.kind.value, "file": self.path, "detail": self.detail, "count": self.count}


@dataclass
class ConvertedScene:
    """A converted scene plus the repairs made while converting it."""

    scene: Scene
    repairs: list[Repair] = field(default_factory=list)


@dataclass(frozen=True)
class DroppedItem:
    """A raw item that gave no scene: which item, the file to look at, why, and what was wrong."""

    item: str
    path: str
    reason: DropReason
    message: str

    def record(self) -> dict[str, str]:
        """As the part footer and the manifest record it."""
        return {"item": self.item, "file": self.path, "reason": self.reason.value, "message": self.message}


def validated(scene: Scene, path: Path | str, repairs: list[Repair]) -> ConvertedScene:
    """``scene`` with its repairs once :meth:`Scene.validate` passes; else INVALID_SCENE naming ``path`` and the
    scene."""
    try:
        scene.validate()
    except SceneValidationError as exc:
        raise ConversionError(DropReason.INVALID_SCENE, path, str(exc), scene.scenario_id) from exc
    return ConvertedScene(scene, repairs)


def map_labels(table: Mapping[str, IntEnum], labels: Sequence[str], default: IntEnum) -> tuple[np.ndarray, list[int]]:
    """``int8`` values of ``labels`` through a taxonomy table, and the positions of the labels it lacks (these take
    ``default``; the caller reports them as repairs, at its dataset's granularity)."""
    values = np.empty(len(labels), np.int8)
    unknown = []
    for i, label in enumerate(labels):
        value = table.get(label)
        if value is None:
            unknown.append(i)
            value = default
        values[i] = value
    return values, unknown


def read_raw(path: Path, what: str, scenario_id: str | None = None) -> bytes:
    """The bytes of a raw file; MISSING_FILE (``"{what} not found"``) or CORRUPT_FILE when it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConversionError(DropReason.MISSING_FILE, path, f"{what} not found", scenario_id) from None
    except OSError as exc:
        raise ConversionError(DropReason.CORRUPT_FILE, path, f"cannot read {what}: {exc}", scenario_id) from None


class SceneConverter(abc.ABC):
    """Base class of the per-dataset converters.

    A subclass sets :attr:`dataset`, implements :meth:`list_items` and :meth:`convert` (ending in
    :func:`validated`), and overrides :meth:`item_path` / :meth:`item_files` / :meth:`describe` where its items
    are not single files or it has options.
    """

    dataset: ClassVar[Dataset]

    def __init__(self, raw_root: str | Path, split: str) -> None:
        self.raw_root = Path(raw_root)
        self.split = split

    @abc.abstractmethod
    def list_items(self) -> list[str]:
        """Raw scenario items of the split, sorted (stable across runs and machines, so shards agree)."""

    @abc.abstractmethod
    def convert(self, item: str) -> ConvertedScene:
        """Convert one item; raise :class:`ConversionError` when it cannot be converted."""

    def convert_or_drop(self, item: str, strict: bool = False) -> ConvertedScene | DroppedItem:
        """:meth:`convert` one item, a failure becoming a :class:`DroppedItem` (an exception other than
        :class:`ConversionError` as ``unexpected_error``, naming :meth:`item_path`).

        With ``strict``: a drop or a repair raises :class:`StrictModeError` instead (an unexpected exception is
        re-raised as it is, with its traceback).
        """
        try:
            result = self.convert(item)
        except ConversionError as exc:
            if strict:
                raise StrictModeError(f"strict=true: {exc}") from exc
            return DroppedItem(item, exc.path, exc.reason, exc.detail)
        except Exception as exc:
            if strict:
                raise
            return DroppedItem(item, str(self.item_path(item)), DropReason.UNEXPECTED_ERROR, repr(exc))
        if result.repairs and strict:
            r = result.repairs[0]
            raise StrictModeError(f"strict=true: {r.path}: {r.kind.value}: {r.detail}")
        return result

    def item_path(self, item: str) -> Path:
        """The file an item's errors should name (the item itself by default)."""
        return Path(item)

    def item_files(self, item: str) -> list[Path]:
        """Every file converting ``item`` reads (its raw-input fingerprint); ``[item_path(item)]`` by default."""
        return [self.item_path(item)]

    def accounting(self) -> dict[str, Any] | None:
        """What happened to the raw records the items do not show one to one (ETH/UCY: every pedestrian of the
        recordings, whose windows are the items), recorded in the manifest as ``accounting``; None: nothing."""
        return None

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
