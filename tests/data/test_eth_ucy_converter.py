"""ETH/UCY: the recording format, windows on the 0.4 s grid, roles, parts of the folds, and the accounting of every
pedestrian; then every fold of the real recordings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smartpretrain.data.cache import SceneCache
from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.eth_ucy import EthUcyConverter, window_starts
from smartpretrain.data.formats import FormatError
from smartpretrain.data.formats import eth_ucy as fmt
from smartpretrain.data.taxonomy import AgentRole, AgentType, Dataset
from tests.conftest import ETH_UCY_RAW, REPO, require_shared


def _walker(ped: int, first_slot: int, num: int, start: tuple[float, float], step: tuple[float, float],
            gaps: tuple[int, ...] = ()) -> list[tuple[int, int, float, float]]:  # fmt: skip
    """Rows of a pedestrian walking ``step`` metres per 0.4 s slot, annotated at ``num`` slots (minus ``gaps``)."""
    rows = []
    for k in range(num):
        if k in gaps:
            continue
        rows.append(((first_slot + k) * 10, ped, start[0] + k * step[0], start[1] + k * step[1]))
    return rows


def _write(path: Path, rows: list[tuple[int, int, float, float]]) -> Path:
    a = np.array(rows, dtype=np.float64)
    return fmt.write_annotations(
        path, fmt.Annotations(frame=a[:, 0].astype(np.int64), ped_id=a[:, 1].astype(np.int64), xy=a[:, 2:4])
    )


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    """All eight recordings; biwi_eth (the ETH fold's test scene) holds known pedestrians, the others one walker."""
    root = tmp_path / "raw"
    rows = (
        _walker(7, 0, 30, (0.0, 0.0), (0.5, 0.0))  # complete in the windows starting at slots 0..10
        + _walker(3, 5, 20, (10.0, 0.0), (0.0, 0.4))  # complete in the window starting at slot 5 only
        + _walker(9, 2, 10, (5.0, 5.0), (0.3, 0.3))  # 10 annotations: context only
        + _walker(4, 0, 25, (-5.0, 0.0), (0.2, 0.0), gaps=(12,))  # a gap at slot 12: never complete in 0..10
    )
    _write(root / "biwi_eth.txt", rows)
    for i, stem in enumerate(s for s in fmt.RECORDINGS if s != "biwi_eth"):
        _write(root / f"{stem}.txt", _walker(1, 0, 60, (float(i), 0.0), (0.4, 0.1)))
    return root


def test_format_round_trip_and_refusals(tmp_path: Path) -> None:
    rows = _walker(2, 0, 3, (1.5, -2.25), (0.5, 0.0)) + _walker(1, 1, 2, (0.0, 0.0), (0.1, 0.1))
    path = _write(tmp_path / "r.txt", rows)
    back = fmt.read_annotations(path)
    assert back.ped_id.tolist() == [1, 1, 2, 2, 2] and back.frame.tolist() == [10, 20, 0, 10, 20]
    np.testing.assert_array_equal(back.xy[2:], [[1.5, -2.25], [2.0, -2.25], [2.5, -2.25]])
    assert path.read_text().splitlines()[0] == "0.0\t2.0\t1.5\t-2.25"  # frame-major, ids as floats: the release's
    bad = {
        "0\t1\t2.0\n": "row 1 has 3 values",
        "0\t1\tx\t2\n": "non-numeric",
        "0\t1\tnan\t2\n": "non-finite",
        "5\t1\t1\t2\n": "frame 5 is not a multiple of 10",
        "0\t1.5\t1\t2\n": "ped_id 1.5 is not an integer",
        "0\t1\t1\t2\n0\t1\t3\t4\n": "two rows for pedestrian 1 at frame 0",
        "\n\n": "no rows",
    }
    for text, message in bad.items():
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(FormatError, match=message) as info:
            fmt.read_annotations(tmp_path / "bad.txt")
        assert str(tmp_path / "bad.txt") in str(info.value)


def test_splits_and_folds() -> None:
    assert fmt.DT == pytest.approx(0.4) and (fmt.NUM_STEPS, fmt.CURRENT_STEP) == (20, 7)
    assert fmt.FOLDS["univ"] == ("students001", "students003")
    assert fmt.fold_recordings("eth", "test") == ("biwi_eth",)
    assert set(fmt.fold_recordings("zara1", "train")) == set(fmt.RECORDINGS) - {"crowds_zara01"}
    assert fmt.parse_split("zara2_val") == ("zara2", "val")
    with pytest.raises(ValueError, match="'eth' is not one of"):
        fmt.parse_split("eth")
    with pytest.raises(ValueError, match="val_fraction"):
        EthUcyConverter("x", "eth_train", val_fraction=1.0)
    # train and val windows of one grid never share a slot; test covers every window
    for n in (20, 39, 40, 100, 137):
        tr, va = window_starts(n, "train", 0.2, 1), window_starts(n, "val", 0.2, 1)
        if len(tr) and len(va):
            assert tr.max() + fmt.NUM_STEPS <= va.min()
        assert window_starts(n, "test", 0.2, 1).tolist() == list(range(n - 19))
    assert window_starts(30, "test", 0.2, 4).tolist() == [0, 4, 8]


def test_test_part_windows_roles_and_kinematics(raw: Path) -> None:
    conv = EthUcyConverter(raw, "eth_test")
    items = conv.list_items()
    # pedestrian 7 is complete for starts 0..10, pedestrian 3 at start 5; the grid has 30 slots -> starts 0..10
    assert items == [f"biwi_eth:{10 * s:07d}" for s in range(11)]
    scene = conv.convert("biwi_eth:0000050").scene
    assert scene.dataset is Dataset.ETH_UCY and scene.scenario_id == "biwi_eth_0000050"
    assert (scene.num_steps, scene.current_step, scene.dt) == (20, 7, pytest.approx(0.4))
    assert scene.agents.ids == ["3", "4", "7", "9"]  # everyone annotated in slots 5..24, ascending ids
    roles = dict(zip(scene.agents.ids, scene.agents.role.tolist(), strict=True))
    assert roles == {"3": AgentRole.FOCAL, "4": AgentRole.UNSCORED, "7": AgentRole.SCORED, "9": AgentRole.UNSCORED}
    assert (scene.agents.type == AgentType.PEDESTRIAN).all() and not scene.agents.is_sdc.any()
    assert scene.map.num_polygons == 0 and scene.agents.size is None
    # origin: the focal pedestrian (3) at the current step (slot 12 -> its 8th annotation)
    np.testing.assert_allclose(scene.origin, [10.0, 0.4 * 7, 0.0])
    i7 = scene.agents.ids.index("7")
    np.testing.assert_allclose(scene.agents.position[i7, :, 0] + scene.origin[0], 0.5 * np.arange(5, 25), atol=1e-5)
    # 0.5 m per 0.4 s = 1.25 m/s along +x; heading 0. Pedestrian 3: 1 m/s along +y, heading pi/2
    np.testing.assert_allclose(scene.agents.velocity[i7], np.tile([1.25, 0.0], (20, 1)), atol=1e-5)
    np.testing.assert_allclose(scene.agents.heading[i7], 0.0, atol=1e-6)
    np.testing.assert_allclose(scene.agents.velocity[0], np.tile([0.0, 1.0], (20, 1)), atol=1e-5)
    np.testing.assert_allclose(scene.agents.heading[0], np.pi / 2, atol=1e-6)
    i4 = scene.agents.ids.index("4")
    assert scene.agents.valid[i4].sum() == 19 and not scene.agents.valid[i4, 12 - 5]  # the gap at slot 12
    i9 = scene.agents.ids.index("9")
    assert scene.agents.valid[i9].tolist() == [True] * 7 + [False] * 13  # slots 5..11 of its 2..11


def test_accounting_names_every_pedestrian(raw: Path) -> None:
    acc = EthUcyConverter(raw, "eth_test").accounting()
    eth = acc["recordings"]["biwi_eth"]
    assert eth == {
        "num_pedestrians": 4, "scored": 2, "context_only": 2, "shorter_than_window": 1, "outside": 0,
        "num_windows": 11, "windows_without_complete_pedestrian": 0, "num_annotations": 30 + 20 + 10 + 24,
    }  # fmt: skip
    for part in ("train", "val"):
        acc = EthUcyConverter(raw, f"eth_{part}").accounting()
        assert set(acc["recordings"]) == set(fmt.RECORDINGS) - {"biwi_eth"}
        for r in acc["recordings"].values():
            assert r["scored"] + r["context_only"] + r["outside"] == r["num_pedestrians"] == 1
            # 60 slots: train windows start at 0..28 (cut at 48), val at 48..40 -> none
            assert r["num_windows"] == (29 if part == "train" else 0)


def test_conversion_manifest_and_cli_errors(raw: Path, tmp_path: Path) -> None:
    out = tmp_path / "cache" / "eth_ucy" / "eth_test"
    manifest = convert_split(EthUcyConverter(raw, "eth_test"), out, ConversionSettings(progress=False))
    assert manifest["complete"] and manifest["num_scenes"] == 11 and manifest["num_dropped"] == 0
    assert manifest["accounting"]["all"]["num_pedestrians"] == 4
    assert SceneCache(out).get("biwi_eth_0000000").dt == pytest.approx(0.4)
    (raw / "biwi_eth.txt").unlink()
    cmd = [sys.executable, "-m", "smartpretrain.convert", "data=eth_ucy", f"data.raw_root={raw}",
           "data.split=eth_test", f"cache_root={tmp_path / 'c2'}", "hydra.run.dir=" + str(tmp_path / "h")]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "biwi_eth.txt: no such ETH/UCY recording" in lines[0], proc.stderr


def test_real_recordings_every_fold_accounts_for_every_pedestrian() -> None:
    root = require_shared(ETH_UCY_RAW)
    totals = {stem: len(fmt.read_annotations(root / f"{stem}.txt").pedestrians()) for stem in fmt.RECORDINGS}
    assert sum(totals.values()) == 2205  # ../shared/DATA.md
    for fold in fmt.FOLDS:
        seen: dict[str, int] = {}
        for part in fmt.PARTS:
            acc = EthUcyConverter(root, f"{fold}_{part}").accounting()
            for stem, r in acc["recordings"].items():
                assert r["scored"] + r["context_only"] + r["outside"] == r["num_pedestrians"] == totals[stem]
                if part == "test":
                    assert r["outside"] == 0  # every pedestrian of the held-out scene is in some test window
                seen[stem] = seen.get(stem, 0) + 1
        assert set(seen) == set(fmt.RECORDINGS)  # each recording is in the fold: test, or train and val


def test_real_folds_convert(tmp_path: Path) -> None:
    root = require_shared(ETH_UCY_RAW)
    for fold in fmt.FOLDS:
        for part in fmt.PARTS:
            split = f"{fold}_{part}"
            conv = EthUcyConverter(root, split)
            manifest = convert_split(conv, tmp_path / split, ConversionSettings(progress=False, num_workers=2))
            assert manifest["complete"] and manifest["num_dropped"] == 0, manifest["dropped_by_reason"]
            assert manifest["num_scenes"] == len(conv.list_items()) > 0
            cache = SceneCache(tmp_path / split)
            scene = cache.get(cache.ids()[0])
            assert int((scene.agents.role == AgentRole.FOCAL).sum()) == 1
