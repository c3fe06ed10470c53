"""The steps every converter shares (converters/base.py): validation, label mapping, raw reads, item outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smartpretrain.data.converters.base import (
    ConversionError,
    ConvertedScene,
    DroppedItem,
    DropReason,
    Repair,
    RepairKind,
    SceneConverter,
    StrictModeError,
    map_labels,
    read_raw,
    validated,
)
from smartpretrain.data.taxonomy import AV2_AGENT_TYPES, AgentType, Dataset
from tests.helpers import make_tiny_scene


class _Items(SceneConverter):
    """``ok`` converts, ``repaired`` converts with one repair, ``bad`` is dropped, ``buggy`` raises a bug."""

    dataset = Dataset.SYNTHETIC

    def list_items(self) -> list[str]:
        return ["ok", "repaired", "bad", "buggy"]

    def convert(self, item: str) -> ConvertedScene:
        if item == "bad":
            raise ConversionError(DropReason.EMPTY_FILE, self.item_path(item), "nothing here", item)
        if item == "buggy":
            raise KeyError("oops")
        repairs = []
        if item == "repaired":
            repairs.append(Repair(RepairKind.ROWS_OUT_OF_ORDER, str(self.item_path(item)), "sorted"))
        return validated(make_tiny_scene(item), self.item_path(item), repairs)


def test_convert_or_drop_outcomes_and_records() -> None:
    conv = _Items("/raw", "val")
    ok = conv.convert_or_drop("ok")
    assert isinstance(ok, ConvertedScene) and ok.scene.scenario_id == "ok" and ok.repairs == []
    repaired = conv.convert_or_drop("repaired")
    assert isinstance(repaired, ConvertedScene)
    assert [r.record() for r in repaired.repairs] == [
        {"kind": "rows_out_of_order", "file": "repaired", "detail": "sorted", "count": 1}
    ]
    bad = conv.convert_or_drop("bad")
    assert bad == DroppedItem("bad", "bad", DropReason.EMPTY_FILE, "nothing here")
    assert bad.record() == {"item": "bad", "file": "bad", "reason": "empty_file", "message": "nothing here"}
    buggy = conv.convert_or_drop("buggy")
    assert isinstance(buggy, DroppedItem) and buggy.reason is DropReason.UNEXPECTED_ERROR
    assert buggy.message == "KeyError('oops')" and buggy.path == "buggy"


def test_convert_or_drop_strict() -> None:
    conv = _Items("/raw", "val")
    assert isinstance(conv.convert_or_drop("ok", strict=True), ConvertedScene)
    with pytest.raises(StrictModeError, match="strict=true: repaired: rows_out_of_order: sorted"):
        conv.convert_or_drop("repaired", strict=True)
    with pytest.raises(StrictModeError, match="empty_file: nothing here"):
        conv.convert_or_drop("bad", strict=True)
    with pytest.raises(KeyError, match="oops"):  # a converter bug keeps its own traceback
        conv.convert_or_drop("buggy", strict=True)


def test_validated_names_file_and_scene() -> None:
    scene = make_tiny_scene("broken")
    scene.agents.role[:] = 0  # no focal agent left: Scene.validate refuses it
    with pytest.raises(ConversionError) as err:
        validated(scene, Path("/raw/broken.bin"), [])
    assert err.value.reason is DropReason.INVALID_SCENE
    assert (err.value.path, err.value.scenario_id) == ("/raw/broken.bin", "broken")


def test_map_labels() -> None:
    values, unknown = map_labels(AV2_AGENT_TYPES, ["bus", "zeppelin", "vehicle", "ufo"], AgentType.UNKNOWN)
    assert values.dtype == np.int8
    assert values.tolist() == [AgentType.BUS, AgentType.UNKNOWN, AgentType.VEHICLE, AgentType.UNKNOWN]
    assert unknown == [1, 3]
    empty, none = map_labels(AV2_AGENT_TYPES, [], AgentType.UNKNOWN)
    assert empty.shape == (0,) and none == []


def test_read_raw(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"x,y\n")
    assert read_raw(path, "CSV") == b"x,y\n"
    with pytest.raises(ConversionError) as err:
        read_raw(tmp_path / "b.csv", "CSV", "b")
    assert err.value.reason is DropReason.MISSING_FILE and err.value.detail == "CSV not found"
    assert err.value.scenario_id == "b"
    with pytest.raises(ConversionError) as err:
        read_raw(tmp_path, "CSV")  # a folder: readable neither as a file nor missing
    assert err.value.reason is DropReason.CORRUPT_FILE and err.value.detail.startswith("cannot read CSV")
