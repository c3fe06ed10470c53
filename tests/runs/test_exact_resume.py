"""Kill -9 a training run at a step, resume it from its last checkpoint: the final weights and metrics equal an
uninterrupted run's (fine-tuning, pre-training, and pre-training on a dataset mixture).

The interrupted run is a real process killed with SIGKILL by :class:`tests.runs.killer.KillAtStep` (no clean-up,
no checkpoint written on the way out); ``checkpoint.every_n_train_steps=1`` refreshes ``last.ckpt`` after every
step, so the kill lands mid-epoch with a checkpoint of the step before. The uninterrupted and the resumed runs
go through the same entry function in this process. One DataLoader worker, ``trainer.deterministic=true``.
Equality is exact: same machine, same kernels, same order of operations.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from smartpretrain.config import compose_config
from smartpretrain.runs import finetuning, pretraining
from tests.conftest import REPO
from tests.tasks.test_mix_pretrain import _mix_overrides, mix_cache  # noqa: F401  (module fixture)

QUIET = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "trainer.log_every_n_steps=1"]
COMMON = ["trainer.deterministic=true", "checkpoint.every_n_train_steps=1", "checkpoint.every_n_minutes=null"]


def _killed_run(module: str, overrides: list[str], run_dir: Path, step: int) -> Path:
    """Run ``python -m module`` until KillAtStep SIGKILLs it after ``step`` steps; returns its last.ckpt."""
    cmd = [
        sys.executable, "-m", module, *overrides, f"hydra.run.dir={run_dir}",
        "+callbacks.kill._target_=tests.runs.killer.KillAtStep", f"+callbacks.kill.step={step}",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert last.is_file(), "no checkpoint before the kill"
    assert not (run_dir / "final_metrics.json").exists()
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == step, "the kill should land right after the checkpoint of step `step`"
    return last


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def _compare(reference: Path, resumed: Path, keys: tuple[str, ...]) -> None:
    ref = json.loads((reference / "final_metrics.json").read_text())
    got = json.loads((resumed / "final_metrics.json").read_text())
    for key in keys:
        assert got[key] == ref[key], (key, got[key], ref[key])
    a, b = _weights(reference / "checkpoints" / "last.ckpt"), _weights(resumed / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


#: entry point -> the run-layer module that does its work
RUNS = {"finetune": finetuning, "pretrain": pretraining}


def _resume_and_compare(module: str, config: str, overrides: list[str], tmp_path: Path, step: int,
                        keys: tuple[str, ...]) -> None:  # fmt: skip
    RUNS[module].run(compose_config(config, overrides), tmp_path / "reference")
    last = _killed_run(f"smartpretrain.{module}", overrides, tmp_path / "killed", step)
    RUNS[module].run(compose_config(config, [*overrides, f"resume={last}"]), tmp_path / "resumed")
    _compare(tmp_path / "reference", tmp_path / "resumed", keys)


@pytest.mark.slow
def test_finetune_resumes_exactly_after_kill_in_epoch_one(av1_cache: Path, tmp_path: Path) -> None:
    overrides = [
        "model=qcnet_small", "data=av1", f"cache_root={av1_cache}", "max_epochs=2", "batch_size=2",
        "num_workers=1", "model.dropout=0.1", *COMMON, *QUIET,
    ]  # fmt: skip
    # 4 steps per epoch: killed after step 5 = in the middle of epoch 1
    _resume_and_compare("finetune", "train", overrides, tmp_path, 5, ("val_minFDE_6", "val_minADE_6", "val_loss"))


def test_finetune_killed_in_epoch_zero_has_a_checkpoint_and_resumes_exactly(av1_cache: Path, tmp_path: Path) -> None:
    overrides = [
        "model=qcnet_small", "data=av1", f"cache_root={av1_cache}", "max_epochs=1", "batch_size=2",
        "num_workers=1", "model.dropout=0.1", *COMMON, *QUIET,
    ]  # fmt: skip
    _resume_and_compare("finetune", "train", overrides, tmp_path, 2, ("val_minFDE_6", "val_loss"))


def test_pretrain_resumes_exactly_after_kill(av1_cache: Path, tmp_path: Path) -> None:
    overrides = [
        "experiment=smartpretrain_cpu_small", "data=av1", f"cache_root={av1_cache}", "max_epochs=2",
        "batch_size=2", "num_workers=1", "model.dropout=0.1", *COMMON, *QUIET,
    ]  # fmt: skip
    _resume_and_compare("pretrain", "pretrain", overrides, tmp_path, 5, ("val_loss", "val_tcl", "val_trl"))


def test_mixture_pretrain_resumes_exactly_after_kill(mix_cache: Path, tmp_path: Path) -> None:  # noqa: F811
    base = [o for o in _mix_overrides(mix_cache) if not o.startswith(("num_workers", "+trainer", "trainer."))]
    overrides = [*base, "max_epochs=2", "batch_size=3", "num_workers=1", "data.mixture.num_samples=9", *COMMON, *QUIET]
    _resume_and_compare("pretrain", "pretrain", overrides, tmp_path, 4, ("val_loss",))


def test_a_requeued_job_resumes_exactly_from_its_own_folder_with_resume_auto(av1_cache: Path, tmp_path: Path) -> None:
    """A cluster job stopped by its time limit and requeued into the same run folder (submitit's
    ``max_num_timeout``, the same command line): ``resume=auto`` starts afresh the first time (no last.ckpt yet)
    and picks up the folder's last.ckpt the second, to the uninterrupted run's result."""
    overrides = [
        "model=qcnet_small", "data=av1", f"cache_root={av1_cache}", "max_epochs=1", "batch_size=2",
        "num_workers=1", "model.dropout=0.1", "resume=auto", *COMMON, *QUIET,
    ]  # fmt: skip
    finetuning.run(compose_config("train", overrides), tmp_path / "reference")  # resume=auto on an empty folder
    _killed_run("smartpretrain.finetune", overrides, tmp_path / "job", 2)
    finetuning.run(compose_config("train", overrides), tmp_path / "job")
    _compare(tmp_path / "reference", tmp_path / "job", ("val_minFDE_6", "val_loss"))


def test_resuming_a_finished_run_keeps_its_final_metrics(av1_cache: Path, tmp_path: Path) -> None:
    from smartpretrain.runs.finetuning import run

    overrides = [
        "model=qcnet_small", "data=av1", f"cache_root={av1_cache}", "max_epochs=1", "batch_size=4",
        "num_workers=0", *QUIET,
    ]  # fmt: skip
    out = tmp_path / "run"
    run(compose_config("train", overrides), out)
    before = (out / "final_metrics.json").read_text()
    assert json.loads(before)
    again = run(compose_config("train", [*overrides, f"resume={out / 'checkpoints' / 'last.ckpt'}"]), out)
    assert (out / "final_metrics.json").read_text() == before
    assert again == json.loads(before)


def _cli(module: str, overrides: list[str], run_dir: Path) -> None:
    cmd = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_ddp_finetune_resumes_exactly_after_both_ranks_are_killed(av1_cache: Path, tmp_path: Path) -> None:
    """2 processes (gloo): both ranks are SIGKILLed after step 3 (of 2 x 2 per rank), then resumed under DDP."""
    overrides = [
        "model=qcnet_small", "data=av1", f"cache_root={av1_cache}", "max_epochs=2", "batch_size=2",
        "num_workers=1", "model.dropout=0.1", "trainer.devices=2", "trainer.strategy=ddp", *COMMON, *QUIET,
    ]  # fmt: skip
    _cli("smartpretrain.finetune", overrides, tmp_path / "reference")
    last = _killed_run("smartpretrain.finetune", overrides, tmp_path / "killed", 3)
    _cli("smartpretrain.finetune", [*overrides, f"resume={last}"], tmp_path / "resumed")
    _compare(tmp_path / "reference", tmp_path / "resumed", ("val_minFDE_6", "val_minADE_6", "val_loss"))
