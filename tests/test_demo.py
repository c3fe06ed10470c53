"""The README's main job runs end to end on the embedded synthetic default (small sizes here): generate, convert,
pre-train, fine-tune from the pre-trained weights and from scratch, evaluate both, print the table; and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smartpretrain.data.cache import SceneCache
from smartpretrain.demo import main
from smartpretrain.runs.comparison import side_by_side


def test_side_by_side_table() -> None:
    table = side_by_side({"pretrained": {"minFDE_6": 0.9, "MR_6": 0.1}, "scratch": {"minFDE_6": 1.0, "MR_6": 0.1}})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "pretrained", "scratch", "change"]
    assert lines[2].split() == ["minFDE_6", "0.9000", "1.0000", "-10.0%"]


@pytest.mark.slow
def test_demo_runs_and_resumes(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    argv = ["--out", str(out), "--av2-scenes", "6", "--train-scenes", "16", "--val-scenes", "6", "--workers", "1",
            "--pretrain-epochs", "1", "--finetune-epochs", "1", "--batch-size", "4"]  # fmt: skip
    results = main(argv)
    printed = capsys.readouterr().out
    assert "av1/train: 16 scenes in cache" in printed and "av2/val: 6 scenes in cache" in printed
    assert (out / "scene.png").stat().st_size > 10_000
    assert json.loads((out / "demo_config.json").read_text())["seed"] == "0"
    for split, n in (("av2/val", 6), ("av1/train", 16), ("av1/val", 6)):
        manifest = json.loads((out / "cache" / split / "manifest.json").read_text())
        assert manifest["num_scenes"] == n and manifest["num_dropped"] == 0 and manifest["complete"]
        assert (out / "cache" / split / "convert_config.yaml").exists()
    assert SceneCache(out / "cache" / "av1" / "val")[0].map.num_polygons > 0  # AV1 maps were attached

    # pre-training -> transfer -> both fine-tunes -> both evaluations -> the table
    runs = out / "runs"
    for run in ("pretrain", "finetune_pretrained", "finetune_scratch"):
        assert (runs / run / "config.yaml").exists() and (runs / run / "seed.json").exists()
        assert (runs / run / "checkpoints" / "last.ckpt").exists()
    report = json.loads((runs / "finetune_pretrained" / "transfer_report.json").read_text())
    assert report["strict_loaded"] > 0 and not [k for k in report["missing"] if k.startswith("encoder.")]
    assert not (runs / "finetune_scratch" / "transfer_report.json").exists()
    assert set(results) == {"pretrained", "scratch"}
    assert results["pretrained"]["minFDE_6"] != results["scratch"]["minFDE_6"]  # the initialisation mattered
    assert "pretrained" in printed and "scratch" in printed and "minFDE_6" in printed
    assert sum(line.startswith("minFDE_6 ") for line in (out / "results.md").read_text().splitlines()) == 1

    main(argv)  # second run: everything resumed
    again = capsys.readouterr().out
    assert "this run 0 items" in again and "pre-training: val SSL loss" in again
