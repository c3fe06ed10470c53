"""GPU-ready training as config (``configs/performance/``, :mod:`smartpretrain.runs.performance`), on CPU.

* the settings: ``auto`` resolved against the trainer's accelerator and ``num_workers``, explicit values kept, bad
  values refused with one line naming the option (also by the entry points: exit status 2, before any work);
* the global settings applied, and a module compiled in place (its state-dict keys unchanged);
* real ``python -m smartpretrain.pretrain`` / ``finetune`` runs with bf16 autocast, ``torch.compile`` (the
  ``eager`` backend: no C++ compiler needed), pinned memory and persistent workers: finite losses, and checkpoints
  whose state-dict keys are those of an uncompiled fp32 run.

What needs CUDA (TF32 itself, pinning, inductor kernels) is not exercised here; ``scripts/bench_train.py --preset
gpu`` measures it on a GPU machine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from smartpretrain.config import compose_config
from smartpretrain.runs.guards import RunConfigError
from smartpretrain.runs.performance import (
    CompileSettings,
    PerformanceSettings,
    apply_global_settings,
    compile_module,
    performance_settings,
    training_on_cuda,
)
from tests.conftest import REPO
from tests.runs.test_exact_resume import QUIET

#: the tiny Forecast-MAE of the run tests (compiling it takes seconds, a QCNet tens of seconds on this CPU)
TINY_FMAE = ["model.embed_dim=32", "model.encoder_depth=1", "model.num_heads=2"]
SHORT = ["data=av1", "max_epochs=1", "batch_size=2", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
FAST_PATHS = [
    "trainer.precision=bf16-mixed", "performance.compile.enabled=true", "performance.compile.backend=eager",
    "performance.pin_memory=true", "num_workers=1", "performance.persistent_workers=true",
]  # fmt: skip
RUNS = {
    "pretrain": ("pretrain", ["experiment=smartpretrain_forecast_mae_cpu_small", *TINY_FMAE]),
    "finetune": ("train", ["model=forecast_mae", *TINY_FMAE]),
}


@pytest.fixture
def restore_torch_globals() -> Iterator[None]:
    """Put back the process-wide settings a test changes."""
    matmul, benchmark = torch.get_float32_matmul_precision(), torch.backends.cudnn.benchmark
    yield
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.benchmark = benchmark


# --- the settings ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", ["pretrain", "train"])
def test_defaults_on_cpu_change_nothing_but_keep_workers_alive(config: str) -> None:
    settings = performance_settings(compose_config(config, ["num_workers=2"]))
    assert settings == PerformanceSettings(persistent_workers=True, cpu_malloc=True)
    assert settings.compile == CompileSettings(enabled=False, mode="default", dynamic=True, backend="inductor")
    assert performance_settings(compose_config(config, ["num_workers=0"])).persistent_workers is False


def test_auto_values_follow_a_cuda_trainer() -> None:
    settings = performance_settings(compose_config("train", ["trainer=gpu", "num_workers=2"]))
    assert settings.on_cuda and settings.float32_matmul_precision == "high" and settings.pin_memory
    assert settings.persistent_workers and not settings.cpu_malloc  # CUDA tensors have their own allocator
    assert settings.loader_kwargs() == {"pin_memory": True, "persistent_workers": True, "prefetch_factor": None}


@pytest.mark.parametrize(("accelerator", "cuda", "expected"), [
    ("auto", True, True), ("auto", False, False), ("cuda", False, True), ("cpu", True, False),
])  # fmt: skip
def test_training_on_cuda(monkeypatch: pytest.MonkeyPatch, accelerator: str, cuda: bool, expected: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    cfg = compose_config("pretrain", [f"trainer.accelerator={accelerator}"])
    assert training_on_cuda(cfg) is expected
    assert performance_settings(cfg).pin_memory is expected


def test_explicit_values_override_auto() -> None:
    cfg = compose_config("train", [
        "trainer=gpu", "trainer.deterministic=false", "num_workers=2", "performance.float32_matmul_precision=medium",
        "performance.pin_memory=false",
        "performance.persistent_workers=false", "performance.prefetch_factor=4", "performance.cudnn_benchmark=true",
        "performance.compile.enabled=true", "performance.compile.backend=aot_eager", "performance.compile.dynamic=null",
        "performance.compile.fullgraph=true",
    ])  # fmt: skip
    settings = performance_settings(cfg)
    assert settings.float32_matmul_precision == "medium" and settings.cudnn_benchmark
    assert settings.loader_kwargs() == {"pin_memory": False, "persistent_workers": False, "prefetch_factor": 4}
    assert settings.compile == CompileSettings(True, "default", None, "aot_eager", True)
    cpu = performance_settings(compose_config("train", ["performance.float32_matmul_precision=highest"]))
    assert cpu.float32_matmul_precision == "highest"  # an explicit value applies on CPU too


BAD_VALUES = [
    ("performance.float32_matmul_precision=fast",
     "performance.float32_matmul_precision='fast': expected auto, highest, high or medium"),
    ("performance.pin_memory=sometimes", "performance.pin_memory='sometimes': expected auto, true or false"),
    ("performance.persistent_workers=1", "performance.persistent_workers=1: expected auto, true or false"),
    ("performance.cudnn_benchmark=auto", "performance.cudnn_benchmark='auto': expected true or false"),
    ("performance.cpu_malloc=jemalloc", "performance.cpu_malloc='jemalloc': expected auto, true or false"),
    ("performance.prefetch_factor=0", "performance.prefetch_factor must be >= 1, got 0"),
    ("performance.compile.enabled=yes_please", "performance.compile.enabled='yes_please': expected true or false"),
    ("performance.compile.mode=fastest", "performance.compile.mode='fastest': expected default, reduce-overhead, "
                                         "max-autotune or max-autotune-no-cudagraphs"),
    ("performance.compile.dynamic=sometimes", "performance.compile.dynamic='sometimes': expected true, false or null"),
    ("performance.compile.mode=max-autotune performance.compile.backend=eager",
     "performance.compile.mode='max-autotune' is the inductor backend's, not backend='eager'"),
    ("performance.compile.enabled=true performance.compile.backend=no_such_backend",
     "performance.compile.backend='no_such_backend': expected one of "),
    ("+performance.turbo=true", "performance: unknown option(s) ['turbo']; known: float32_matmul_precision, "),
    ("performance.cudnn_benchmark=true trainer.deterministic=true",
     "performance.cudnn_benchmark=true with trainer.deterministic=true: "),
    ("performance.cudnn_benchmark=true trainer=gpu",  # the GPU default, deterministic=warn
     "performance.cudnn_benchmark=true with trainer.deterministic=warn: "),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "message"), BAD_VALUES)
def test_bad_values_are_refused_in_one_line_naming_the_option(overrides: str, message: str) -> None:
    with pytest.raises(RunConfigError) as raised:
        performance_settings(compose_config("pretrain", overrides.split()))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


@pytest.mark.parametrize("config", ["pretrain", "train"])
def test_a_config_without_the_group_gets_the_defaults(config: str) -> None:
    cfg = compose_config(config, ["~performance", "num_workers=0"])
    assert "performance" not in cfg
    assert performance_settings(cfg) == PerformanceSettings(cpu_malloc=True)


# --- applying them ---------------------------------------------------------------------------------------------
FAULTS = """
import resource, sys, torch
if sys.argv[1] == "tuned":
    from smartpretrain.runs.performance import tune_cpu_malloc
    assert tune_cpu_malloc()
count, floats = int(sys.argv[2]), int(sys.argv[3])
def step():  # what a training step does to the allocator: many large blocks, all freed at its end
    blocks = [torch.ones(floats) for _ in range(count)]
    del blocks
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
@pytest.mark.parametrize(("count", "mib"), [(64, 8), (8, 48)], ids=["8MiB-blocks", "48MiB-blocks"])
def test_tuned_cpu_malloc_keeps_a_steps_memory_instead_of_faulting_it_in_again(count: int, mib: int) -> None:
    """Four more "steps" of 384-512 MiB fault their pages in again with glibc's defaults (the freed heap is handed
    back to the OS, blocks above the mmap threshold are fresh mappings); tuned, they reuse them. Blocks of 48 MiB
    are above the largest mmap threshold glibc accepts (32 MiB): only ``M_MMAP_MAX`` 0 keeps them."""
    faults = {}
    for mode in ("plain", "tuned"):
        proc = subprocess.run(
            [sys.executable, "-c", FAULTS, mode, str(count), str(mib << 18)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        faults[mode] = int(proc.stdout.strip())
    pages = 4 * count * (mib << 20) // 4096
    assert faults["plain"] > pages // 4  # at least a quarter of the blocks' pages, every step
    assert faults["tuned"] < faults["plain"] / 10, faults


@pytest.mark.usefixtures("restore_torch_globals")
def test_global_settings_are_applied_and_auto_on_cpu_leaves_torch_alone() -> None:
    torch.set_float32_matmul_precision("highest")
    apply_global_settings(PerformanceSettings(float32_matmul_precision=None, cudnn_benchmark=True))
    assert torch.get_float32_matmul_precision() == "highest" and torch.backends.cudnn.benchmark
    apply_global_settings(PerformanceSettings(float32_matmul_precision="high", cudnn_benchmark=False))
    assert torch.get_float32_matmul_precision() == "high" and not torch.backends.cudnn.benchmark


def test_compile_module_compiles_in_place_and_keeps_the_state_dict_keys() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    keys = list(module.state_dict())
    x = torch.randn(5, 3)
    module.eval()
    expected = module(x)
    assert not compile_module(module, CompileSettings(enabled=False)) and module._compiled_call_impl is None
    assert compile_module(module, CompileSettings(enabled=True, backend="eager"))
    assert module._compiled_call_impl is not None  # compiled in place, not wrapped in an OptimizedModule
    assert list(module.state_dict()) == keys
    torch.testing.assert_close(module(x), expected)


@pytest.mark.parametrize("model", [["experiment=smartpretrain_cpu_small"],
                                   ["experiment=smartpretrain_forecast_mae_cpu_small", *TINY_FMAE]],
                         ids=["qcnet", "fmae"])  # fmt: skip
def test_pinned_memory_reaches_every_tensor_of_an_ssl_batch(
    av1_cache: Path, monkeypatch: pytest.MonkeyPatch, model: list[str]
) -> None:
    """``DataLoader(pin_memory=True)`` pins a batch type it does not know through its ``pin_memory``: an SSL batch
    pins its own tensors and both views (QCNet's graphs, Forecast-MAE's dicts). Pinning needs CUDA, so a stand-in
    records the tensors it was asked to pin."""
    from smartpretrain.runs.pretraining import build_datamodule, build_task

    cfg = compose_config("pretrain", [*model, *SHORT, f"cache_root={av1_cache}", "num_workers=0"])
    task = build_task(cfg)
    datamodule = build_datamodule(cfg, task.backbone)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    pinned: set[int] = set()

    def pin(tensor: torch.Tensor, *args: object) -> torch.Tensor:
        copy = tensor.clone()
        pinned.add(id(copy))
        return copy

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin)
    out = batch.pin_memory()
    assert type(out) is type(batch) and out.scenario_ids == batch.scenario_ids

    def tensors(view: object) -> list[torch.Tensor]:
        stores = getattr(view, "stores", None)  # a PyG graph, or a dict batch
        values = [v for store in stores for v in store.values()] if stores is not None else list(view.values())
        return [v for v in values if isinstance(v, torch.Tensor)]

    for view in (out.view_a, out.view_b):
        assert type(view) is type(batch.view_a) and tensors(view)
        assert all(id(t) in pinned for t in tensors(view))
    assert all(id(getattr(out, name)) in pinned for name in ("start_a", "query_agent", "target", "target_valid"))


# --- the entry points ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["pretrain", "finetune"])
def test_bad_option_is_refused_before_any_work(av1_cache: Path, tmp_path: Path, entry: str) -> None:
    from smartpretrain.runs import finetuning, pretraining

    config, model = RUNS[entry]
    run = pretraining.run if entry == "pretrain" else finetuning.run
    cfg = compose_config(config, [*model, *SHORT, f"cache_root={av1_cache}", "performance.prefetch_factor=0"])
    out = tmp_path / "run"
    with pytest.raises(RunConfigError, match=r"^performance.prefetch_factor must be >= 1, got 0$"):
        run(cfg, out)
    assert not out.exists()  # nothing written: not even the run folder


@pytest.mark.parametrize("entry", ["pretrain", "finetune"])
def test_cli_refuses_a_bad_option_with_exit_2_and_one_line(av1_cache: Path, tmp_path: Path, entry: str) -> None:
    _, model = RUNS[entry]
    cmd = [sys.executable, "-m", f"smartpretrain.{entry}", *model, *SHORT, f"cache_root={av1_cache}",
           "performance.float32_matmul_precision=fast", f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    expected = "performance.float32_matmul_precision='fast': expected auto, highest, high or medium"
    assert lines == [f"smartpretrain.{entry}: error: {expected}"]


def _state_dict_keys(run_dir: Path) -> list[str]:
    return list(torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"])


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["pretrain", "finetune"])
def test_bf16_compiled_run_with_pinned_persistent_workers(av1_cache: Path, tmp_path: Path, entry: str) -> None:
    """Every GPU-ready option at once on CPU: the run finishes with finite losses, and its checkpoint holds the
    keys of an uncompiled fp32 run (compiling in place changes no name)."""
    from smartpretrain.runs import finetuning, pretraining

    config, model = RUNS[entry]
    overrides = [*model, *SHORT, f"cache_root={av1_cache}", *QUIET]
    cmd = [sys.executable, "-m", f"smartpretrain.{entry}", *overrides, *FAST_PATHS,
           f"hydra.run.dir={tmp_path / 'fast'}"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    metrics = json.loads((tmp_path / "fast" / "final_metrics.json").read_text())
    assert math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])
    config_written = (tmp_path / "fast" / "config.yaml").read_text()
    assert "precision: bf16-mixed" in config_written and "backend: eager" in config_written

    run = pretraining.run if entry == "pretrain" else finetuning.run
    run(compose_config(config, [*overrides, "num_workers=0"]), tmp_path / "plain")
    assert _state_dict_keys(tmp_path / "fast") == _state_dict_keys(tmp_path / "plain")
