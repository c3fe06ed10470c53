"""Run outputs shared by the drivers: resumable stage results, per-epoch logger curves, JSON reports."""

from __future__ import annotations

import json
from pathlib import Path

from smartpretrain.io.run_outputs import epoch_metrics, load_stage_result, machine_info, write_report


def _log(run_dir: Path, version: int, text: str) -> None:
    logs = run_dir / "logs" / f"version_{version}"
    logs.mkdir(parents=True)
    (logs / "metrics.csv").write_text(text)


def test_epoch_metrics_reads_the_newest_csv_logger(tmp_path: Path) -> None:
    _log(tmp_path, 2, "epoch,step,val_minFDE_6\n0,1,9.0\n")
    _log(tmp_path, 10, (  # version_10 is newer than version_2 (numeric, not lexical order)
        "epoch,step,train_loss,val_minFDE_6,val_minADE_6,val_extra\n"
        "0,9,5.0,,,\n0,9,,4.5,2.0,\n1,19,4.0,,,\n1,19,,4.0,1.8,\n1,19,,,,7.0\n2,29,3.0,,,\n"
    ))  # fmt: skip
    curve = epoch_metrics(tmp_path, ("minFDE_6", "minADE_6", "extra"), prefix="val_")
    assert curve == [
        {"epoch": 0, "minFDE_6": 4.5, "minADE_6": 2.0},
        {"epoch": 1, "minFDE_6": 4.0, "minADE_6": 1.8, "extra": 7.0},  # rows of one epoch merge
    ]  # epoch 2 has no val row: dropped
    assert epoch_metrics(tmp_path, ("minADE_6", "minFDE_6"), prefix="val_", trigger="minFDE_6")[0]["minFDE_6"] == 4.5
    assert epoch_metrics(tmp_path / "absent", ("val_loss",)) == []


def test_stage_results_and_reports(tmp_path: Path) -> None:
    assert load_stage_result(tmp_path / "final_metrics.json") is None
    write_report(tmp_path / "deep" / "report.json", {"results": [1, 2]})
    report = load_stage_result(tmp_path / "deep" / "report.json")
    assert report is not None and report["results"] == [1, 2] and report["machine"] == machine_info()
    assert report["machine"]["cpu_count"] >= 1 and not list((tmp_path / "deep").glob("*.tmp*"))
    custom = {"machine": {"cpu_count": 64}, "results": []}
    write_report(tmp_path / "custom.json", custom)
    assert json.loads((tmp_path / "custom.json").read_text())["machine"] == {"cpu_count": 64}
