"""The README's main job runs end to end on the embedded synthetic default (small sizes here)."""

from __future__ import annotations

import json
from pathlib import Path

from smartpretrain.data.cache import SceneCache
from smartpretrain.demo import main


def test_demo_runs_and_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    main(["--out", str(out), "--av2-scenes", "10", "--av1-scenes", "4", "--workers", "1"])
    printed = capsys.readouterr().out
    assert "av2/train: 8 scenes in cache" in printed and "av1/val: 4 scenes in cache" in printed
    assert (out / "scene.png").stat().st_size > 10_000
    assert json.loads((out / "demo_config.json").read_text())["seed"] == "0"
    for split, n in (("av2/train", 8), ("av2/val", 2), ("av1/val", 4)):
        manifest = json.loads((out / "cache" / split / "manifest.json").read_text())
        assert manifest["num_scenes"] == n and manifest["num_dropped"] == 0 and manifest["complete"]
        assert (out / "cache" / split / "convert_config.yaml").exists()
    assert SceneCache(out / "cache" / "av1" / "val")[0].map.num_polygons > 0  # AV1 maps were attached
    main(["--out", str(out), "--av2-scenes", "10", "--av1-scenes", "4", "--workers", "1"])
    assert "this run 0 items" in capsys.readouterr().out  # second run: everything resumed from the cache
