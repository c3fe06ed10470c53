"""Same seed, same machine, same config -> the same numbers: a pre-training and the fine-tuning from its
checkpoint, run twice as separate processes (as a user re-runs a study: each its own hash seed) with the default
trainer settings and one DataLoader worker, give bit-identical weights and metrics; another seed gives other ones.

Forecast-MAE at its reference width and batch 16 exercises the CPU kernel that is nondeterministic by default: the
backward of indexing a tensor with repeated indices (its type embeddings) is a parallel atomic accumulation
(PyTorch's ``index_put_`` with ``accumulate=True``, above 32768 elements and with more than one thread) whose float
additions land in another order each run unless deterministic algorithms are on (``trainer.deterministic``, on by
default on CPU): with it off, the pre-training's val losses differ in the 7th digit. ``qcnet_small``'s tensors stay
under that size; its test guards the rest of the path (seeding, workers, the order batches and draws arrive in).
:func:`test_the_atomic_kernel_is_nondeterministic_here_unless_deterministic_algorithms_are_on` checks the kernel
itself on this machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, make_av1_cache

QUIET = ["+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false", "trainer.log_every_n_steps=1"]
#: pre-training preset and model per backbone (reference widths: the kernels above need large enough tensors)
BACKBONES = {
    "qcnet": ("smartpretrain_cpu_small", "qcnet_small"),
    "forecast_mae": ("smartpretrain_forecast_mae_cpu_small", "forecast_mae"),
}
COMMON = ["data=av1", "batch_size=16", "num_workers=1", "max_epochs=1", "checkpoint.every_n_minutes=null"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic AV1 with maps: 32 train scenes (two batches of 16) and 4 val scenes."""
    return make_av1_cache(tmp_path_factory, 32, 4, seed=5)


def _cli(module: str, overrides: list[str], run_dir: Path) -> dict:
    """``python -m smartpretrain.<module>`` in a fresh process; its final metrics."""
    cmd = [sys.executable, "-m", f"smartpretrain.{module}", *overrides, f"hydra.run.dir={run_dir}", *QUIET]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PYTHONHASHSEED", None)  # each process its own hash seed, as two runs by hand have
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((run_dir / "final_metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int, str], tuple[Path, dict]]:
    """``runs(backbone, seed, tag)``: the run folder and final metrics of that pipeline, run once per module."""
    done: dict[tuple[str, int, str], tuple[Path, dict]] = {}

    def get(backbone: str, seed: int, tag: str) -> tuple[Path, dict]:
        key = (backbone, seed, tag)
        if key not in done:
            out = tmp_path_factory.mktemp(f"{backbone}-s{seed}-{tag}")
            done[key] = out, _pretrain_then_finetune(backbone, cache, out, seed)
        return done[key]

    return get


def _pretrain_then_finetune(backbone: str, cache: Path, out: Path, seed: int) -> dict[str, dict]:
    experiment, model = BACKBONES[backbone]
    data = [*COMMON, f"cache_root={cache}", f"seed={seed}"]
    pre = _cli("pretrain", [f"experiment={experiment}", *data], out / "pretrain")
    checkpoint = out / "pretrain" / "checkpoints" / "last.ckpt"
    fine = _cli("finetune", [f"model={model}", *data, f"pretrained_ckpt={checkpoint}"], out / "finetune")
    return {"pretrain": pre, "finetune": fine}


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


def _differing(a: Path, b: Path) -> list[str]:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    return [name for name in wa if not torch.equal(wa[name], wb[name])]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_the_same_seed_twice_gives_bit_identical_weights_and_metrics(backbone: str, runs: Callable) -> None:
    (first_dir, first), (second_dir, second) = runs(backbone, 3, "first"), runs(backbone, 3, "second")
    for stage in ("pretrain", "finetune"):  # every final metric, to the last bit (JSON floats round-trip exactly)
        assert first[stage].keys() == second[stage].keys()
        numbers = [k for k, v in first[stage].items() if isinstance(v, (int, float))]  # not the run folder's paths
        differ = {k: (first[stage][k], second[stage][k]) for k in numbers if first[stage][k] != second[stage][k]}
        assert len(numbers) > 5 and not differ, (stage, differ)
        assert _differing(first_dir / stage, second_dir / stage) == [], stage
    assert "val_minFDE_6" in first["finetune"] and "val_loss" in first["pretrain"]


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_another_seed_gives_other_weights_and_metrics(backbone: str, runs: Callable) -> None:
    (first_dir, first), (other_dir, other) = runs(backbone, 3, "first"), runs(backbone, 4, "first")
    assert first["finetune"]["val_minFDE_6"] != other["finetune"]["val_minFDE_6"]
    assert first["pretrain"]["val_loss"] != other["pretrain"]["val_loss"]
    for stage in ("pretrain", "finetune"):
        assert len(_differing(first_dir / stage, other_dir / stage)) > 0, stage


def test_the_atomic_kernel_is_nondeterministic_here_unless_deterministic_algorithms_are_on() -> None:
    """What the default ``trainer.deterministic=true`` guards against, on this machine: the backward of indexing
    with duplicate indices differs between identical calls with the default settings (if this machine ran it
    serially the run tests above could not fail, and this test says so), and never with deterministic algorithms."""
    if torch.get_num_threads() < 2:
        pytest.skip("one intra-op thread: PyTorch runs the accumulation serially, deterministic anyway")
    weight = torch.randn(5, 128, requires_grad=True)
    index = torch.randint(0, 5, (20000,), generator=torch.Generator().manual_seed(0))
    upstream = torch.randn(20000, 128, generator=torch.Generator().manual_seed(1))

    def gradients(deterministic: bool) -> list[torch.Tensor]:
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(deterministic)
        try:
            out = []
            for _ in range(20):
                weight.grad = None
                (weight[index] * upstream).sum().backward()
                out.append(weight.grad.clone())
            return out
        finally:
            torch.use_deterministic_algorithms(before)

    plain, deterministic = gradients(False), gradients(True)
    assert all(torch.equal(deterministic[0], g) for g in deterministic)
    assert not all(torch.equal(plain[0], g) for g in plain), "the atomic path was deterministic on this machine"
