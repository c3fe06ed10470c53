"""The study and benchmark scripts: the study's aggregation (:mod:`smartpretrain.runs.comparison`), the benchmark
report's rendering (``scripts/bench_report.py``, a docs tool loaded from its file), a tiny end-to-end study that
resumes, and the GPU preset of ``scripts/bench_train.py`` (its values, its refusal without CUDA, its path on CPU)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from smartpretrain.data.conversion import ConversionSettings, convert_split
from smartpretrain.data.converters.av1 import Av1Converter
from smartpretrain.data.synthetic import generate_av1
from smartpretrain.runs.comparison import markdown_table, parse_epochs, summarise
from tests.conftest import AV2_FIXTURE_ROOT, REPO, require_shared


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import does: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


report = load_script("bench_report")


def _run(arm: str, fraction: float, seed: int, fde: float) -> dict:
    metrics = {"minADE_6": fde / 2, "minFDE_6": fde, "MR_6": 0.5, "brier-minFDE_6": fde + 0.5}
    return {"arm": arm, "fraction": fraction, "seed": seed, "metrics": metrics, "curve": []}


def test_summary_means_stds_and_change_vs_scratch() -> None:
    runs = [_run("scratch", 0.1, s, v) for s, v in enumerate([4.0, 4.2, 4.4])]
    runs += [_run("tcl_trl", 0.1, s, v) for s, v in enumerate([3.6, 3.8, 3.7])]
    runs += [_run("scratch", 1.0, 0, 3.0)]
    summary = summarise(runs, ["scratch", "tcl_trl"], [0.1, 1.0])
    scratch, ours = summary["0.1"]["scratch"], summary["0.1"]["tcl_trl"]
    assert scratch["minFDE_6"]["mean"] == pytest.approx(4.2)
    assert scratch["minFDE_6"]["std"] == pytest.approx(0.2)  # sample std over seeds
    assert ours["minFDE_6_change_pct"] == pytest.approx((3.7 - 4.2) / 4.2 * 100)
    assert "minFDE_6_change_pct" not in scratch
    assert summary["1"]["scratch"]["minFDE_6"]["std"] == 0.0 and "tcl_trl" not in summary["1"]
    table = markdown_table(summary, num_train=1956)
    assert "| 10 % (196) | TCL + TRL | 3 | 1.850 ± 0.050 | 3.700 ± 0.100 |" in table
    assert "-11.9 %" in table


def test_finetune_budget_must_cover_every_fraction() -> None:
    assert parse_epochs(["0.1=20", "1.0=4"], [0.1, 1.0]) == {0.1: 20, 1.0: 4}
    with pytest.raises(SystemExit, match="no budget for fraction"):
        parse_epochs(["0.1=20"], [0.1, 1.0])


def test_bench_report_renders_and_detects_stale_docs(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    machine = {"cpu_count": 2, "python": "3.11", "platform": "Linux"}
    convert = {"machine": machine, "results": [
        {"case": "av1_val", "scenes": 579, "workers": w, "ms_per_scene_per_core_cpu_median": 1.6, "kib_per_scene": 13.5,
         "scenes_per_s_wall_median": 500.0 * w, "random_read_ms_per_scene": 0.2} for w in (1, 2)]}  # fmt: skip
    (results / "convert.json").write_text(json.dumps(convert))
    loading = {"machine": machine, "batch_size": 8, "results": [
        {"dataset": "av1", "pipeline": "finetune", "model": "qcnet", "workers": w, "scenes_per_s": 100.0 * max(w, 1),
         "scenes_per_s_per_worker": 100.0} for w in (0, 1, 2)]}  # fmt: skip
    loading["results"] += [  # packed transfer rows (newer reports); the rows above have no "transfer": per-tensor
        {"dataset": "av1", "pipeline": "finetune", "model": "qcnet", "workers": w, "transfer": "packed",
         "scenes_per_s": 300.0 * w, "scenes_per_s_per_worker": 300.0} for w in (1, 2)]  # fmt: skip
    (results / "loading.json").write_text(json.dumps(loading))
    formats = {"machine": machine, "scene_sets": {"av1_val_100": 100},
               "results": {"av1_val_100": {"cache_record_zstd3": {"kib_per_scene": 13.46, "encode_ms": 0.41,
                                                                   "decode_ms": 0.12}}}}  # fmt: skip
    (results / "cache_formats.json").write_text(json.dumps(formats))
    text = report.render(results)
    assert "| av1_val_100 (100) | cache_record_zstd3 | 13.46 | 0.410 | 0.120 |" in text
    assert "| av1_val | 579 | 2 | 1.60 | 1000 | 13.5 | 0.20 |" in text
    assert "av1_val 2.00×" in text
    assert (
        "| main process | 1 worker, packed | 2 workers, packed | 1 worker, per-tensor | 2 workers, per-tensor |" in text
    )
    assert "| av1 | finetune | qcnet | 100 (100) | 300 (300) | 600 (300) | 100 (100) | 200 (100) |" in text
    assert "Not run yet: train*.json" in text
    doc = tmp_path / "bench.md"
    doc.write_text(f"# B\n{report.BEGIN}old\n{report.END}\ntail\n")
    script = [sys.executable, str(REPO / "scripts" / "bench_report.py"), "--results", str(results), "--doc", str(doc)]
    assert subprocess.run([*script, "--check"], capture_output=True).returncode == 1
    subprocess.run(script, check=True, capture_output=True)
    assert subprocess.run([*script, "--check"], capture_output=True).returncode == 0
    assert doc.read_text().endswith(f"{report.END}\ntail\n") and "| av1_val |" in doc.read_text()


def test_tiny_study_end_to_end_and_resume(tmp_path: Path) -> None:
    """Two arms x two seeds x two label fractions on generated AV1-format scenes; a second call reuses every stage."""
    raw, cache = tmp_path / "raw", tmp_path / "cache"
    generate_av1(raw, "train", 16, seed=0)
    generate_av1(raw, "val", 6, seed=1)
    for split in ("train", "val"):
        convert_split(Av1Converter(raw, split), cache / "av1" / split, ConversionSettings(progress=False))
    out = tmp_path / "study"
    command = [
        sys.executable, str(REPO / "scripts" / "study_av1.py"), "--out", str(out), "--cache-root", str(cache),
        "--arms", "scratch", "tcl_trl", "--seeds", "0", "1", "--fractions", "0.5", "1.0",
        "--finetune-epochs", "0.5=2", "1.0=1", "--val-every", "0.5=1", "1.0=1", "--pretrain-epochs", "1",
        "--batch-size", "4", "--workers", "0",
        "--model-overrides", "model.embed_dim=32", "model.encoder_depth=1", "model.num_heads=2",
        "--pretrain-overrides", "+trainer.enable_progress_bar=false",
        "--finetune-overrides", "+trainer.enable_progress_bar=false",
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    result = json.loads((out / "results.json").read_text())
    assert len(result["runs"]) == 8 and result["num_train_scenes"] == 16
    half = [r for r in result["runs"] if r["fraction"] == 0.5]
    assert all(len(r["curve"]) == 2 for r in half)  # one val point per fine-tuning epoch
    config = (out / "finetune_f0.5_tcl_trl_s1" / "config.yaml").read_text()
    assert "train_fraction: 0.5" in config and "seed: 1" in config and "pretrained_ckpt:" in config
    assert (out / "finetune_f0.5_tcl_trl_s1" / "transfer_report.json").exists()
    assert list(out.glob("pretrain_*")) == [out / "pretrain_tcl_trl_s0"]  # one pre-training feeds every seed
    assert set(result["summary"]) == {"0.5", "1"} and "minFDE_6_change_pct" in result["summary"]["0.5"]["tcl_trl"]
    assert (out / "curves.png").stat().st_size > 10_000 and "| 50 % (8) | TCL + TRL | 2 |" in (
        out / "results.md"
    ).read_text()
    paired = [line for line in (out / "results.md").read_text().splitlines() if line.startswith("| 50 % | TCL + TRL |")]
    scratch = {r["seed"]: r["metrics"]["minFDE_6"] for r in half if r["arm"] == "scratch"}
    tcl_trl = {r["seed"]: r["metrics"]["minFDE_6"] for r in half if r["arm"] == "tcl_trl"}
    first = (tcl_trl[0] - scratch[0]) / scratch[0] * 100.0  # the per-seed comparison, seed 0 first
    assert len(paired) == 1 and paired[0].split(" | ")[3].startswith(f"{first:+.1f} %")
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/checkpoints/last.ckpt")}
    assert len(stamps) == 9  # 8 fine-tunes + 1 pre-training
    again = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing re-trained
    assert "pre-trained tcl_trl" not in again.stdout and "0.5 tcl_trl seed 1: minFDE_6" in again.stdout
    assert json.loads((out / "results.json").read_text())["summary"] == result["summary"]

    # a study whose run folders are gone (another machine, a new session) takes the recorded runs instead
    recorded = tmp_path / "recorded.json"
    recorded.write_text((out / "results.json").read_text())
    elsewhere = tmp_path / "elsewhere"
    moved = [*command[:3], str(elsewhere), *command[4:], "--reuse-results", str(recorded)]
    third = subprocess.run(moved, check=True, capture_output=True, text=True, cwd=REPO)
    assert "0.5 tcl_trl seed 1: recorded in --reuse-results" in third.stdout
    assert not list(elsewhere.glob("*/checkpoints"))  # nothing trained
    assert json.loads((elsewhere / "results.json").read_text())["summary"] == result["summary"]


def test_committed_benchmark_summary_matches_the_committed_results() -> None:
    """docs/benchmarks.md's summary block is what bench_report.py renders from benchmarks/results/."""
    results = REPO / "benchmarks" / "results"
    assert (results / "convert.json").exists(), "run scripts/bench_all.sh and commit benchmarks/results/"
    check = subprocess.run([sys.executable, str(REPO / "scripts" / "bench_report.py"), "--check"], capture_output=True,
                           text=True, cwd=REPO)  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_probe_study_rank_correlation() -> None:
    spearman = load_script("study_probe").spearman
    assert spearman([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (0.5, 0.5, 2) against (0, 1, 2)
    assert spearman([1.0, 1.0, 5.0], [1.0, 2.0, 3.0]) == pytest.approx(0.8660254, abs=1e-6)
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_run_logged_names_the_failed_stage_and_its_log(tmp_path: Path) -> None:
    from smartpretrain.io.run_outputs import run_logged

    log = tmp_path / "stage" / "run.log"
    run_logged([sys.executable, "-c", "print('fine')"], log)
    assert log.read_text().strip() == "fine"
    with pytest.raises(SystemExit, match=r"failed \(exit 3\); see .*run\.log"):
        run_logged([sys.executable, "-c", "import sys; print('bad'); sys.exit(3)"], log)
    assert log.read_text().strip() == "bad"


def _bench_args(bench: ModuleType, *argv: str) -> object:
    return bench.resolve(bench.build_parser().parse_args(list(argv)))


def test_bench_train_gpu_preset_and_what_overrides_it() -> None:
    bench = load_script("bench_train")
    gpu = _bench_args(bench, "--preset", "gpu")
    assert gpu.models == ["qcnet", "forecast_mae"] and gpu.kinds == ["finetune", "ssl"]
    assert (gpu.device, gpu.precision, gpu.matmul_precision, gpu.steps) == ("cuda", "bf16", "high", 20)
    assert gpu.batch_sizes == {"qcnet": [4, 8], "forecast_mae": [32, 64]}
    assert gpu.out == REPO / "benchmarks" / "results" / "train_gpu.json"
    cpu = _bench_args(bench, "--preset", "gpu", "--device", "cpu", "--models", "qcnet_small", "--batch-sizes", "1",
                      "--steps", "1", "--out", "x.json")  # fmt: skip
    assert (cpu.device, cpu.models, cpu.batch_sizes, cpu.steps, cpu.out) == (
        "cpu", ["qcnet_small"], {"qcnet_small": [1]}, 1, Path("x.json"),
    )  # fmt: skip
    assert (cpu.precision, cpu.matmul_precision, cpu.kinds) == ("bf16", "high", ["finetune", "ssl"])  # the preset's
    mixed = _bench_args(bench, "--preset", "gpu", "--models", "qcnet", "qcnet_small", "--precision", "fp32")
    assert mixed.batch_sizes == {"qcnet": [4, 8], "qcnet_small": [1, 2, 4]} and mixed.precision == "fp32"
    plain = _bench_args(bench)
    assert (plain.models, plain.batch_sizes, plain.device, plain.precision, plain.matmul_precision, plain.steps) == (
        ["qcnet"], {"qcnet": [1, 2, 4]}, "cpu", "fp32", None, 5,
    )  # fmt: skip
    assert plain.out.name == "train.json" and plain.preset is None


def test_bench_train_on_cuda_without_a_device_measures_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import torch

    bench = load_script("bench_train")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as stopped:
        bench.main(["--preset", "gpu", "--out", str(tmp_path / "train_gpu.json")])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "bench_train.py: error: no CUDA device is available (--device cuda); nothing was measured"
    ]
    assert not (tmp_path / "train_gpu.json").exists()


def test_bench_train_gpu_preset_path_on_cpu(tmp_path: Path) -> None:
    """The preset's code path (bf16 autocast, TF32 setting, the fine-tuning task's and the pre-training task's
    steps) on CPU, one step of QCNet-small: every case reports steps/s."""
    require_shared(AV2_FIXTURE_ROOT)
    out = tmp_path / "train_gpu.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_train.py"), "--preset", "gpu", "--device", "cpu",
           "--models", "qcnet_small", "--batch-sizes", "1", "--steps", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    settings = report["settings"]
    assert (settings["preset"], settings["device"], settings["precision"]) == ("gpu", "cpu", "bf16")
    assert settings["float32_matmul_precision"] == "high" and settings["steps"] == 1
    assert [(r["model"], r["kind"], r["batch_size"]) for r in report["results"]] == [
        ("qcnet_small", "finetune", 1), ("qcnet_small", "ssl", 1),
    ]  # fmt: skip
    for result in report["results"]:
        assert result["steps_per_s"] > 0 and result["loss_finite"]
        assert result["float32_matmul_precision"] == "high" and result["precision"] == "bf16"
    assert "fine-tune steps/s" in proc.stdout and "steps/s," in proc.stdout


def test_profile_ssl_labels_every_stage_of_the_step(tmp_path: Path) -> None:
    """``scripts/profile_ssl.py`` on QCNet-small, one profiled step: the step's parts, each branch's encoder
    modules, graph building and decoder queries, the projectors and the objectives each get a time; the data stage
    and the allocator setting are reported."""
    require_shared(AV2_FIXTURE_ROOT)
    out = tmp_path / "profile.json"
    cmd = [sys.executable, str(REPO / "scripts" / "profile_ssl.py"), "--model", "qcnet_small", "--batch-size", "1",
           "--steps", "1", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    stages = result["stages"]
    for label in ("ema_update", "losses (forward)", "backward", "optimizer", "online.encoder.agent_encoder",
                  "momentum.encoder.agent_encoder", "online.encoder.agent_encoder.build_graphs",
                  "online.decoder.propose_queries", "online.projector", "objective.tcl", "objective.trl"):  # fmt: skip
        assert stages[label]["ms_per_step"] > 0, label
    assert stages["momentum.encoder.agent_encoder"]["calls_per_step"] == 2  # views A and B
    assert stages["online.encoder.agent_encoder"]["calls_per_step"] == 1
    assert result["data_ms_per_batch"] > 0 and result["top_self_ops"]
    assert result["cpu_malloc_tuned"] is sys.platform.startswith("linux")
    assert "| stage | ms/step | calls/step |" in proc.stdout
