"""The README's main job runs end to end on the embedded synthetic default (tiny sizes here): generate, convert,
pre-train, fine-tune from the pre-trained weights and from scratch, evaluate both, print the table; and resumes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smartpretrain.data.cache import SceneCache
from smartpretrain.runs.comparison import side_by_side
from tests.conftest import REPO


def test_side_by_side_table() -> None:
    table = side_by_side({"pretrained": {"minFDE_6": 0.9, "MR_6": 0.1}, "scratch": {"minFDE_6": 1.0, "MR_6": 0.1}})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "pretrained", "scratch", "change"]
    assert lines[2].split() == ["minFDE_6", "0.9000", "1.0000", "-10.0%"]


TINY = ["--unlabelled-scenes", "16", "--labelled-scenes", "8", "--val-scenes", "6", "--av2-scenes", "2",
        "--pretrain-epochs", "1", "--finetune-epochs", "2", "--batch-size", "4"]  # fmt: skip
#: what library chatter looks like (Lightning's device summary and tips, Python warnings, deprecations)
NOISE = re.compile(r"warning|deprecat|tip:|💡|GPU available|TPU available|litlogger|UserWarning", re.IGNORECASE)


def _demo(out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "smartpretrain.demo", "--out", str(out), *TINY, *extra]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_demo_runs_quietly_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = _demo(out)
    assert done.returncode == 0, done.stderr[-3000:]
    noise = [line for line in (done.stdout + done.stderr).replace("\r", "\n").splitlines() if NOISE.search(line)]
    assert not noise, noise[:5]
    stdout = done.stdout.splitlines()
    # one line per stage, then the table, then where the outputs are
    assert [line.split("]")[0] for line in stdout if line.startswith("[")] == [f"[{i}/5" for i in range(1, 6)]
    assert sum(line.startswith("minFDE_6 ") for line in stdout) == 1 and f"Outputs in {out}/:" in done.stdout
    # stderr holds the progress bars only
    assert all("%|" in line or not line.strip() for line in done.stderr.replace("\r", "\n").splitlines())

    assert (out / "scene.png").stat().st_size > 10_000 and (out / "demo.png").stat().st_size > 20_000
    assert json.loads((out / "demo_config.json").read_text())["seed"] == "0"
    for split, n in (("av2/val", 2), ("av1/train", 16), ("av1/val", 6)):
        manifest = json.loads((out / "cache" / split / "manifest.json").read_text())
        assert manifest["num_scenes"] == n and manifest["num_dropped"] == 0 and manifest["complete"]
    assert SceneCache(out / "cache" / "av1" / "val")[0].map.num_polygons > 0  # AV1 maps were attached
    assert "av1/train: 16 scenes in cache" in (out / "logs" / "convert.log").read_text()

    # pre-training on all 16 train scenes -> transfer -> fine-tuning on the same 8 labelled ones -> evaluation
    runs = out / "runs"
    for run in ("pretrain", "finetune_pretrained", "finetune_scratch"):
        assert (runs / run / "config.yaml").exists() and (runs / run / "seed.json").exists()
        assert (runs / run / "checkpoints" / "last.ckpt").exists()
    for arm in ("pretrained", "scratch"):
        cfg = (runs / f"finetune_{arm}" / "config.yaml").read_text()
        assert "train_fraction: 0.5" in cfg and "max_epochs: 2" in cfg
        (plotted,) = (runs / f"evaluate_{arm}" / "plots").glob("*.npz")
        with np.load(plotted, allow_pickle=False) as f:
            assert f["trajectories"].shape == (6, 30, 2) and f["probabilities"].shape == (6,)
    report = json.loads((runs / "finetune_pretrained" / "transfer_report.json").read_text())
    assert report["strict_loaded"] > 0 and not [k for k in report["missing"] if k.startswith("encoder.")]
    assert not (runs / "finetune_scratch" / "transfer_report.json").exists()
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"pretrained", "scratch"}
    assert results["pretrained"]["minFDE_6"] != results["scratch"]["minFDE_6"]  # the initialisation mattered

    again = _demo(out)  # everything resumed: the same table
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "results.json").read_text()) == results
    assert "this run 0 items" in (out / "logs" / "convert.log").read_text()


def test_demo_help_explains_the_options_and_bad_sizes_are_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "smartpretrain.demo", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)  # fmt: skip
    assert done.returncode == 0
    for option in ("--unlabelled-scenes", "--labelled-scenes", "--quick", "--seed", "--finetune-epochs"):
        assert option in done.stdout
    command = [sys.executable, "-m", "smartpretrain.demo", "--unlabelled-scenes", "10", "--labelled-scenes", "20"]
    bad = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].endswith("--labelled-scenes must be in [1, --unlabelled-scenes=10]")
