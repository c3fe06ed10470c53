"""GPU-ready training as config (``configs/performance/``): TF32 matmuls, cuDNN autotuning, ``torch.compile``, and
the DataLoader's pinned memory, persistent workers and prefetching, for pre-training and fine-tuning runs.

* :func:`performance_settings`: the typed :class:`PerformanceSettings` of ``cfg.performance``, every ``auto``
  resolved (against ``trainer.accelerator`` and ``num_workers``); a bad value is a
  :class:`~smartpretrain.runs.guards.RunConfigError` whose one line names the option;
* :func:`apply_global_settings`: the process-wide ones (float32 matmul precision, ``cudnn.benchmark``, glibc's
  allocator for CPU training: :func:`tune_cpu_malloc`), set before the Trainer is built (Lightning keeps the
  ``cudnn.benchmark`` it finds);
* :func:`compile_module`: ``nn.Module.compile`` in place, so state-dict keys, and so checkpoints, are unchanged;
* :meth:`PerformanceSettings.loader_kwargs`: the data module's loader options.

Mixed precision itself is the Trainer's ``trainer.precision`` (``bf16-mixed``); where the tasks keep float32
under it: :mod:`smartpretrain.tasks.precision`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from smartpretrain.runs.guards import RunConfigError, check_range

__all__ = [
    "COMPILE_MODES",
    "MATMUL_PRECISIONS",
    "CompileSettings",
    "PerformanceSettings",
    "apply_global_settings",
    "compile_module",
    "performance_settings",
    "training_on_cuda",
    "tune_cpu_malloc",
]

#: ``torch.set_float32_matmul_precision`` values ("high": TF32 matmuls on GPUs that have them)
MATMUL_PRECISIONS = ("highest", "high", "medium")
#: ``torch.compile`` modes; all but ``default`` are the inductor backend's
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
#: ``trainer.accelerator`` values that mean CUDA
CUDA_ACCELERATORS = ("gpu", "cuda")
_OPTIONS = ("float32_matmul_precision", "cudnn_benchmark", "compile", "pin_memory", "persistent_workers",
            "prefetch_factor", "cpu_malloc")  # fmt: skip
#: glibc ``mallopt`` parameters and the values :func:`tune_cpu_malloc` sets: serve allocations up to 32 MiB (the
#: largest threshold glibc accepts) from the heap instead of fresh ``mmap`` pages, and keep up to 1 GiB of freed
#: heap instead of handing it back to the OS after every step
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
MMAP_THRESHOLD_BYTES, TRIM_THRESHOLD_BYTES = 32 << 20, 1 << 30
_COMPILE_OPTIONS = ("enabled", "mode", "dynamic", "backend", "fullgraph")


@dataclass(frozen=True)
class CompileSettings:
    """``performance.compile``: the arguments of ``nn.Module.compile`` and whether to call it at all."""

    enabled: bool = False
    mode: str = "default"
    dynamic: bool | None = True
    backend: str = "inductor"
    fullgraph: bool = False


@dataclass(frozen=True)
class PerformanceSettings:
    """``cfg.performance`` with every ``auto`` resolved.

    Attributes:
        on_cuda: the run trains on CUDA (:func:`training_on_cuda`), what the ``auto`` values follow.
        float32_matmul_precision: for ``torch.set_float32_matmul_precision``; None leaves torch's setting alone.
        cudnn_benchmark: ``torch.backends.cudnn.benchmark``.
        compile: how the backbone is compiled (:func:`compile_module`).
        pin_memory, persistent_workers, prefetch_factor: the data module's loader options (the last two only
            matter with ``num_workers > 0``).
        cpu_malloc: tune glibc's allocator for training on CPU (:func:`tune_cpu_malloc`).
    """

    on_cuda: bool = False
    float32_matmul_precision: str | None = None
    cudnn_benchmark: bool = False
    compile: CompileSettings = field(default_factory=CompileSettings)
    pin_memory: bool = False
    persistent_workers: bool = False
    prefetch_factor: int | None = None
    cpu_malloc: bool = False

    def loader_kwargs(self) -> dict[str, Any]:
        """``SceneDataModule``'s ``pin_memory``, ``persistent_workers`` and ``prefetch_factor``."""
        return {
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
            "prefetch_factor": self.prefetch_factor,
        }


def training_on_cuda(cfg: DictConfig) -> bool:
    """``trainer.accelerator`` is ``gpu`` / ``cuda``, or ``auto`` (the default when absent) with a CUDA device."""
    trainer = cfg.get("trainer") or {}
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    return accelerator in CUDA_ACCELERATORS or (accelerator == "auto" and torch.cuda.is_available())


def _choices(allowed: tuple[str, ...]) -> str:
    return f"{', '.join(allowed[:-1])} or {allowed[-1]}"


def _flag(name: str, value: Any, auto: bool | None = None) -> bool:
    """A boolean option; ``auto`` (where the option has one, ``auto`` given) resolves to ``auto``."""
    if isinstance(value, bool):
        return value
    if auto is not None and value == "auto":
        return auto
    expected = "auto, true or false" if auto is not None else "true or false"
    raise RunConfigError(f"performance.{name}={value!r}: expected {expected}")


def _unknown(section: str, values: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RunConfigError(f"{section}: unknown option(s) {unknown}; known: {', '.join(known)}")


def _compile_settings(values: dict[str, Any]) -> CompileSettings:
    _unknown("performance.compile", values, _COMPILE_OPTIONS)
    defaults = CompileSettings()
    enabled = _flag("compile.enabled", values.get("enabled", defaults.enabled))
    fullgraph = _flag("compile.fullgraph", values.get("fullgraph", defaults.fullgraph))
    mode = values.get("mode", defaults.mode)
    if mode not in COMPILE_MODES:
        raise RunConfigError(f"performance.compile.mode={mode!r}: expected {_choices(COMPILE_MODES)}")
    dynamic = values.get("dynamic", defaults.dynamic)
    if dynamic is not None and not isinstance(dynamic, bool):
        raise RunConfigError(f"performance.compile.dynamic={dynamic!r}: expected true, false or null")
    backend = values.get("backend", defaults.backend)
    if not isinstance(backend, str) or not backend:
        raise RunConfigError(f"performance.compile.backend={backend!r}: expected a torch.compile backend name")
    if mode != "default" and backend != "inductor":
        raise RunConfigError(f"performance.compile.mode={mode!r} is the inductor backend's, not backend={backend!r}")
    if enabled:  # the registry of backends costs an import of torch._dynamo (~2 s): only when compiling
        known = torch.compiler.list_backends(exclude_tags=())
        if backend not in known:
            raise RunConfigError(f"performance.compile.backend={backend!r}: expected one of {', '.join(known)}")
    return CompileSettings(enabled=enabled, mode=mode, dynamic=dynamic, backend=backend, fullgraph=fullgraph)


def performance_settings(cfg: DictConfig) -> PerformanceSettings:
    """The checked settings of ``cfg.performance`` (defaults where it is absent), ``auto`` resolved: TF32
    (``high``) and pinned memory when training on CUDA, persistent workers whenever ``num_workers > 0``.

    Raises:
        RunConfigError: an unknown option or a bad value (one line naming it), or ``cudnn_benchmark`` with
            ``trainer.deterministic=true``.
    """
    section = cfg.get("performance")
    values: dict[str, Any] = OmegaConf.to_container(section, resolve=True) if section is not None else {}  # type: ignore[assignment]
    _unknown("performance", values, _OPTIONS)
    on_cuda = training_on_cuda(cfg)
    workers = int(cfg.get("num_workers", 0) or 0)

    matmul = values.get("float32_matmul_precision", "auto")
    if matmul != "auto" and matmul not in MATMUL_PRECISIONS:
        raise RunConfigError(
            f"performance.float32_matmul_precision={matmul!r}: expected {_choices(('auto', *MATMUL_PRECISIONS))}"
        )
    benchmark = _flag("cudnn_benchmark", values.get("cudnn_benchmark", False))
    deterministic = (cfg.get("trainer") or {}).get("deterministic", False)
    if benchmark and deterministic not in (False, None):
        raise RunConfigError(
            f"performance.cudnn_benchmark=true with trainer.deterministic={str(deterministic).lower()}: benchmarking "
            "picks kernels by timing them, so runs would not repeat (set trainer.deterministic=false to benchmark)"
        )
    prefetch = values.get("prefetch_factor")
    check_range("performance.prefetch_factor", prefetch, 1, integer=True, allow_none=True)
    return PerformanceSettings(
        on_cuda=on_cuda,
        float32_matmul_precision=("high" if on_cuda else None) if matmul == "auto" else matmul,
        cudnn_benchmark=benchmark,
        compile=_compile_settings(values.get("compile") or {}),
        pin_memory=_flag("pin_memory", values.get("pin_memory", "auto"), auto=on_cuda),
        persistent_workers=_flag("persistent_workers", values.get("persistent_workers", "auto"), auto=workers > 0),
        prefetch_factor=None if prefetch is None else int(prefetch),
        cpu_malloc=_flag("cpu_malloc", values.get("cpu_malloc", "auto"), auto=not on_cuda),
    )


def apply_global_settings(settings: PerformanceSettings) -> None:
    """Set the process-wide options: float32 matmul precision (unless left alone), ``cudnn.benchmark`` and, for
    training on CPU, glibc's allocator (:func:`tune_cpu_malloc`)."""
    if settings.float32_matmul_precision is not None:
        torch.set_float32_matmul_precision(settings.float32_matmul_precision)
    torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    if settings.cpu_malloc:
        tune_cpu_malloc()


def tune_cpu_malloc() -> bool:
    """Keep a CPU training step's memory in the process instead of faulting it in afresh every step; whether it
    could (glibc only: elsewhere nothing changes).

    PyTorch's CPU tensors come from ``malloc``. A training step allocates and frees gigabytes of activations;
    glibc serves large blocks with ``mmap`` and returns freed heap to the OS, so each step faults its pages in
    again (1.6 M minor faults, 4 s of kernel time per QCNet SSL step at batch 4 on the project's VM). With
    ``M_TRIM_THRESHOLD`` at 1 GiB freed heap stays with the process, and with ``M_MMAP_MAX`` 0 (``M_MMAP_THRESHOLD``
    at its 32 MiB maximum as well, for a glibc that refuses 0) blocks of any size come from that heap instead of
    fresh ``mmap`` pages: a QCNet SSL step's per-edge tensors are 40-130 MiB, above any mmap threshold glibc
    accepts. The cost: the process keeps its high-water mark of heap (it plateaus: a step of each batch size
    has been seen once) instead of handing memory back. Forked DataLoader workers inherit the setting. CUDA
    tensors have their own caching allocator and are not affected. Figures: docs/benchmarks.md.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    mapped = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    from_heap = bool(mallopt(M_MMAP_MAX, 0))
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)) and mapped and from_heap


def compile_module(module: nn.Module, settings: CompileSettings) -> bool:
    """Compile ``module``'s ``forward`` in place when enabled (``nn.Module.compile``: the module is not wrapped, so
    its state-dict keys and the checkpoints saved from it stay those of the eager module); whether it did.
    Compilation itself happens at the first call."""
    if not settings.enabled:
        return False
    module.compile(mode=settings.mode, dynamic=settings.dynamic, backend=settings.backend, fullgraph=settings.fullgraph)
    return True
