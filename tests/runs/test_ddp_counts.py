"""Under 2-process DDP (gloo, CPU) a validation epoch sees every scene exactly once, and counts are logged as
totals over the ranks: ``val_num_queries`` equals the single-process value on an odd-sized val split.

Before: Lightning's DistributedSampler padded 3 val scenes to 4 (one scene counted twice), and counts were
logged as the mean over ranks (about half the total).
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

OVERRIDES = [
    "experiment=smartpretrain_cpu_small", "data=av1", "max_epochs=1", "batch_size=2", "num_workers=0",
    "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "trainer.log_every_n_steps=1",
]  # fmt: skip


def _val_row(run_dir: Path) -> dict[str, str]:
    (metrics,) = (run_dir / "logs").glob("version_*/metrics.csv")
    with open(metrics, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_num_queries")]
    assert len(rows) == 1, rows
    return rows[0]


def _run(cache: Path, run_dir: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "smartpretrain.pretrain", *OVERRIDES, f"cache_root={cache}",
           f"hydra.run.dir={run_dir}", *extra]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.slow
def test_ddp_counts_are_totals_and_val_scenes_are_seen_once(av1_cache_odd: Path, tmp_path: Path) -> None:
    _run(av1_cache_odd, tmp_path / "single")
    _run(av1_cache_odd, tmp_path / "ddp", "trainer.devices=2", "trainer.strategy=ddp")
    single, ddp = _val_row(tmp_path / "single"), _val_row(tmp_path / "ddp")
    assert float(single["val_num_queries"]) > 0
    assert float(ddp["val_num_queries"]) == float(single["val_num_queries"])
    assert float(ddp["val_num_unembedded"]) == float(single["val_num_unembedded"])
