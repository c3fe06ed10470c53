"""Training-step cost of a backbone: steps/s, ms per scene and peak memory of one optimisation step, on AV2-fixture
batches.

    python scripts/bench_train.py --model qcnet --batch-sizes 1 2 4 --steps 5 --out benchmarks/results/train.json
    python scripts/bench_train.py --model qcnet_small --batch-sizes 4 --kinds ssl finetune
    python scripts/bench_train.py --device cuda --precision bf16 ...          # on a GPU machine
    python scripts/bench_train.py --preset gpu                                # the GPU preset (below)
    python scripts/bench_train.py --preset gpu --device cpu --models qcnet_small --batch-sizes 1 --steps 1  # on CPU
    python scripts/bench_train.py --model forecast_mae qcnet_small --kinds ssl --batch-sizes 4 \
        --ssl-arms tcl_trl control fd id mhc tcl_trl_control --ssl-experiment smartpretrain_forecast_mae_cpu_small \
        --out benchmarks/results/train_control_forecast_mae_cpu.json
    python scripts/bench_train.py --kinds forward forward_backward --batch-sizes 1 4 8 \
        --trees before=../before after=. --repeats 2 --out benchmarks/results/qcnet_speed.json
    python scripts/bench_train.py --models qcnet forecast_mae --kinds ssl --batch-sizes 1 4 8 --steps 3 \
        --trees before=../before after=. --cpu-malloc off --out benchmarks/results/ssl_speed_code.json

On CPU each case tunes glibc's allocator as a training run does (``performance.cpu_malloc``, where the tree timed
has it); ``--cpu-malloc off`` keeps glibc's defaults (to time code changes alone). The SSL step's setup is
``ssl_setup``, shared with ``scripts/profile_ssl.py`` (its stage profile).

Kinds of step (``--kinds``, default ``finetune ssl``):

* ``finetune``: :meth:`~smartpretrain.tasks.finetune.FinetuneTask.training_step` (the backbone's forecasting
  forward + loss, float32 past the backbone under bf16) + backward + AdamW step (``configs/train.yaml``).
* ``ssl``: one SmartPretrain pre-training step of :class:`~smartpretrain.tasks.pretrain.PretrainTask` as built by
  :func:`smartpretrain.runs.pretraining.build_task` from ``configs/pretrain.yaml`` (the model with its
  ``pretrain_overrides``, e.g. QCNet's single-mode propose stack, plus the SSL heads of the model's SSL experiment,
  see ``SSL_EXPERIMENTS``):
  the schedule values and momentum (EMA) update of ``on_train_batch_start``, the online branch on view A, the momentum
  branch on views A and B (no grad), TCL + TRL, backward and AdamW step. Its batches are the same scene copies cut
  into two temporal views (``SSLViewTransform(TemporalViewSampler(view_window), adapter)``, windows drawn from a
  seeded generator).

  ``--ssl-arms`` times other objective sets (the study arms of ``smartpretrain.runs.comparison.PRETRAIN_ARMS``,
  e.g. ``tcl_trl control fd id mhc tcl_trl_control``), each beside TCL + TRL (the default, ``tcl_trl``); an arm
  with control-centric terms also derives the views' transition controls, as the data module does.

* ``forward``: the backbone's forecasting forward pass alone, in eval mode without autograd (validation / test).
* ``forward_backward``: the forecasting forward + loss + backward in train mode, without the optimizer step.

``--preset gpu`` is the GPU training benchmark: QCNet and Forecast-MAE, fine-tuning and SSL steps, on ``cuda`` in
bf16 autocast with TF32 matmuls (``torch.set_float32_matmul_precision("high")``, what
``performance.float32_matmul_precision=auto`` sets for training on CUDA), at the per-GPU batch sizes of their
training recipes and twice those (``PRESETS``), 20 timed steps, into ``benchmarks/results/train_gpu.json``.
Arguments given on the command line override the preset's values (``--device cpu`` runs the same path on CPU).
A run on ``cuda`` without a CUDA device measures nothing and exits with status 2.

Every case reports steps/s (of the median step), ms per step and per scene, and peak memory: GPU memory
(``torch.cuda.max_memory_allocated``) on CUDA, and the process's max RSS.

``--trees NAME=PATH ...`` times the same cases with the ``smartpretrain`` package of other checkouts (e.g. the
commit before a speed change, ``git worktree add ../before <commit>``), interleaved case by case and repeated
``--repeats`` times so that the machine's drift hits every tree alike; the report then gives each later tree's
median step time and peak memory over the first tree's.

When both ``finetune`` and ``ssl`` run, the report compares them per (model, batch): SSL ms/scene over fine-tune
ms/scene. Each (model, batch, kind) case runs in a fresh subprocess so the CPU peak (max RSS) is its own. The batch
holds copies of the real AV2 fixture scene (58 agents, 71 lanes + 6 crossings -> 83 QCNet polygons).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smartpretrain.config import compose_config
from smartpretrain.io.run_outputs import machine_info, write_report
from smartpretrain.runs.comparison import PRETRAIN_ARMS

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "av2"
FIXTURE_ID = "0a1e6f0a-1817-4a98-b02e-db8c9327d151"
WARMUP_STEPS = 2
KINDS = ("finetune", "ssl", "forward", "forward_backward")
DEFAULT_KINDS = ("finetune", "ssl")
#: the values of the options that neither the command line nor a preset gives
DEFAULTS: dict[str, Any] = {
    "models": ["qcnet"],
    "batch_sizes": [1, 2, 4],
    "steps": 5,
    "kinds": list(DEFAULT_KINDS),
    "device": "cpu",
    "precision": "fp32",
    "matmul_precision": None,
    "out": REPO / "benchmarks" / "results" / "train.json",
}
#: ``--preset NAME``: option values (``batch_sizes`` per model) that explicit command-line arguments override
PRESETS: dict[str, dict[str, Any]] = {
    "gpu": {
        "models": ["qcnet", "forecast_mae"],
        "kinds": ["finetune", "ssl"],
        "device": "cuda",
        "precision": "bf16",
        "matmul_precision": "high",  # TF32
        # the per-GPU batch of each model's training recipe, and twice that (headroom on a large GPU): QCNet trains
        # (and SmartPretrain pre-trains it) with 4 scenes per GPU on 8 GPUs, 32 in all
        # (configs/experiment/smartpretrain_qcnet_av2.yaml); Forecast-MAE with 32 per GPU on 4 GPUs
        # (configs/experiment/smartpretrain_forecast_mae_av2.yaml)
        "batch_sizes": {"qcnet": [4, 8], "forecast_mae": [32, 64]},
        "steps": 20,
        "out": REPO / "benchmarks" / "results" / "train_gpu.json",
    }
}
#: the pre-training experiment whose SSL heads go with each model (anything else: ``configs/ssl`` defaults)
SSL_EXPERIMENTS = {
    "qcnet": "smartpretrain_qcnet_av2",
    "qcnet_small": "smartpretrain_cpu_small",
    "forecast_mae": "smartpretrain_forecast_mae_av2",
}


def batch_sizes(backbone: Any, batch: Any) -> dict[str, int]:
    """Agents (with targets) and map elements of a batch, whatever the backbone's input format."""
    agents = int(backbone.eval_targets(batch).role.numel())
    try:
        polygons = int(batch["map_polygon"].num_nodes)  # QCNet (HeteroData)
    except (KeyError, AttributeError, TypeError):
        polygons = int((~batch["lane_key_padding_mask"]).sum())  # Forecast-MAE lanes
    return {"agents": agents, "polygons": polygons}


def fixture_scene() -> Any:
    from smartpretrain.data.converters.av2 import Av2Converter

    return Av2Converter(FIXTURE, "val").convert(FIXTURE_ID).scene


def time_steps(step: Callable[[], Any], steps: int, device: str) -> tuple[list[float], Any]:
    """Run ``step`` ``WARMUP_STEPS + steps`` times; wall seconds of the last ``steps`` and the last return value."""
    import torch

    cuda = device.startswith("cuda")
    times, out = [], None
    for i in range(steps + WARMUP_STEPS):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = step()
        if cuda:
            torch.cuda.synchronize()
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    return times, out


def forecasting_setup(model_name: str, batch_size: int, device: str, precision: str, train: bool) -> tuple:
    """``(backbone, batch, autocast dtype or None)``: ``configs/train.yaml``'s model (seed 0) in train or eval mode
    and a batch of ``batch_size`` copies of the fixture scene through its adapter."""
    import torch
    from hydra.utils import instantiate

    cfg = compose_config("train", ["data=av2", f"model={model_name}"])
    torch.manual_seed(0)
    backbone = instantiate(cfg.model).to(device).train(train)
    adapter = backbone.make_adapter()
    scene = fixture_scene()
    batch = adapter.collate([adapter(scene) for _ in range(batch_size)]).to(device)
    return backbone, batch, {"fp32": None, "bf16": torch.bfloat16}[precision]


def finetune_case(model_name: str, batch_size: int, steps: int, device: str, precision: str) -> dict[str, object]:
    """Forecasting step: build the model and batch, time ``steps`` optimizer steps after the warm-ups. The step is
    the fine-tuning task's own (:meth:`FinetuneTask.training_step`; its logging does nothing without a Trainer)."""
    import warnings

    import torch

    from smartpretrain.tasks.finetune import FinetuneTask

    backbone, batch, dtype = forecasting_setup(model_name, batch_size, device, precision, train=True)
    task = FinetuneTask(backbone).to(device)
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-4)

    def step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = task.training_step(batch, 0)
        loss.backward()
        optimizer.step()
        return loss

    rss_before = start_memory(device)
    with warnings.catch_warnings():  # self.log() without a Trainer warns at every step
        warnings.simplefilter("ignore")
        times, loss = time_steps(step, steps, device)
    return {
        **batch_sizes(backbone, batch),
        **timing(times, batch_size),
        "loss_finite": bool(torch.isfinite(loss)),
        "parameters": sum(p.numel() for p in backbone.parameters()),
        **memory(device, rss_before),
    }


def pass_case(model_name: str, batch_size: int, steps: int, device: str, precision: str, backward: bool) -> dict:
    """The forecasting forward (eval, no autograd) or forward + loss + backward (train mode), no optimizer."""
    import torch

    backbone, batch, dtype = forecasting_setup(model_name, batch_size, device, precision, train=backward)

    def step() -> Any:
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            if not backward:
                with torch.no_grad():
                    return backbone(batch).loc
            loss = backbone.loss(batch, backbone(batch))["loss"]
        backbone.zero_grad(set_to_none=True)
        loss.backward()
        return loss

    rss_before = start_memory(device)
    times, out = time_steps(step, steps, device)
    return {
        **batch_sizes(backbone, batch),
        **timing(times, batch_size),
        "output_finite": bool(torch.isfinite(out).all()),
        "parameters": sum(p.numel() for p in backbone.parameters()),
        **memory(device, rss_before),
    }


@dataclass
class SSLSetup:
    """One SmartPretrain step on copies of the fixture scene: ``step()`` runs it and returns the losses."""

    task: Any
    batch: Any
    step: Callable[[], Any]
    cfg: Any
    experiment: str | None
    """the pre-training preset whose SSL heads the task has (None: ``configs/ssl`` defaults)"""
    transform: Any
    """the views + adapter of one scene (what a DataLoader worker runs; the profile times it)"""
    scene: Any


def ssl_setup(
    model_name: str,
    batch_size: int,
    device: str,
    precision: str,
    arm: str = "tcl_trl",
    experiment: str | None = None,
) -> SSLSetup:
    """The :class:`SSLSetup` of one SmartPretrain step (EMA update, momentum views A+B, online view A, the arm's
    objectives (default TCL + TRL), backward, AdamW). Shared with ``scripts/profile_ssl.py``."""
    import numpy as np
    import torch

    from smartpretrain.data.views import SSLViewTransform, TemporalViewSampler
    from smartpretrain.runs.comparison import PRETRAIN_ARMS
    from smartpretrain.runs.pretraining import build_task, control_spec
    from smartpretrain.ssl.momentum import ema_update

    overrides = ["data=av2", f"model={model_name}"]
    experiment = experiment or SSL_EXPERIMENTS.get(model_name)
    if experiment is not None:
        overrides.append(f"experiment={experiment}")
    cfg = compose_config("pretrain", [*overrides, *PRETRAIN_ARMS[arm][0]])
    torch.manual_seed(0)
    task = build_task(cfg).to(device).train()
    window = int(cfg.ssl.window)  # = data.view_window, as build_datamodule
    controls = control_spec(cfg) if task.needs.controls else None
    transform = SSLViewTransform(
        TemporalViewSampler(window), task.backbone.make_adapter(), with_full=task.needs.full_scene, controls=controls
    )
    scene = fixture_scene()
    np.random.seed(0)  # the sampler draws the windows from numpy's global generator
    batch = transform.collate([transform(scene) for _ in range(batch_size)]).to(device)
    optimizer = task.configure_optimizers()
    values = task.schedule(0.0)  # what on_train_batch_start sets at the first step
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]

    def step() -> Any:
        for group in optimizer.param_groups:  # on_train_batch_start, without a trainer
            group["lr"] = values["lr"]
            if group.get("decayed", False):
                group["weight_decay"] = values["weight_decay"]
        with torch.profiler.record_function("ema_update"):
            ema_update(task.momentum_branch, task.branch, values["momentum"])
        optimizer.zero_grad(set_to_none=True)
        with torch.profiler.record_function("losses (forward)"):
            with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
                out = task.losses(batch)
        with torch.profiler.record_function("backward"):
            out["loss"].backward()
        with torch.profiler.record_function("optimizer"):
            optimizer.step()
        return out

    return SSLSetup(task, batch, step, cfg, experiment, transform, scene)


def ssl_case(
    model_name: str,
    batch_size: int,
    steps: int,
    device: str,
    precision: str,
    arm: str = "tcl_trl",
    experiment: str | None = None,
) -> dict[str, object]:
    """SmartPretrain step (EMA update, online view A, momentum views A+B, the arm's objectives (default TCL + TRL),
    backward, AdamW)."""
    import torch

    setup = ssl_setup(model_name, batch_size, device, precision, arm, experiment)
    task, batch, step, cfg, experiment = setup.task, setup.batch, setup.step, setup.cfg, setup.experiment
    window = int(cfg.ssl.window)

    rss_before = start_memory(device)
    times, out = time_steps(step, steps, device)
    losses = {name: round(float(value), 4) for name, value in out.items() if name != "num_queries"}
    trainable = [p for p in task.parameters() if p.requires_grad]
    return {
        **batch_sizes(task.backbone, batch.view_a),  # per view
        "ssl_arm": arm,
        "view_window": window,
        "objectives": {name: task.objective_weights[name] for name in task.objectives},
        "proj_hidden_dim": int(cfg.ssl.proj_hidden_dim),
        "proj_dim": int(cfg.ssl.proj_dim),
        "ssl_experiment": experiment,
        # queries in the SSL losses (observed over both windows), and candidates (observed over window A)
        "queries_per_scene": round(float(out["num_queries"]) / batch_size, 2),
        "window_a_queries_per_scene": round(len(batch.query_agent) / batch_size, 2),
        **timing(times, batch_size),
        "loss_finite": bool(torch.isfinite(out["loss"])),
        "losses": losses,
        "parameters": sum(p.numel() for p in trainable),  # online branch + objective heads (what AdamW updates)
        "momentum_parameters": sum(p.numel() for p in task.momentum_branch.parameters()),
        **memory(device, rss_before),
    }


def start_memory(device: str) -> int:
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def timing(times: list[float], batch_size: int) -> dict[str, object]:
    ms = 1e3 * statistics.median(times)
    return {
        "steps_per_s": round(1e3 / ms, 3),  # of the median step
        "step_ms_median": round(ms, 1),
        "ms_per_scene": round(ms / batch_size, 1),
        "step_ms_all": [round(1e3 * t, 1) for t in times],
    }


def memory(device: str, rss_before: int) -> dict[str, object]:
    import torch

    result: dict[str, object] = {"threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["peak_rss_mib"] = round(rss / 1024, 1)
    result["rss_growth_mib"] = round((rss - rss_before) / 1024, 1)
    return result


def run_case(
    model_name: str,
    batch_size: int,
    steps: int,
    device: str,
    precision: str,
    kind: str = "finetune",
    arm: str = "tcl_trl",
    experiment: str | None = None,
    matmul_precision: str | None = None,
    cpu_malloc: bool = True,
    deterministic: bool = False,
) -> dict[str, object]:
    """One case in this process (``arm``, ``experiment``: the objectives and preset of an ``ssl`` step;
    ``matmul_precision``: for ``torch.set_float32_matmul_precision``, None leaves torch's default; ``cpu_malloc``:
    glibc's allocator tuned as a training run on CPU tunes it, ``performance.cpu_malloc``, where the package
    timed has it)."""
    import torch

    if matmul_precision is not None:
        torch.set_float32_matmul_precision(matmul_precision)
    torch.use_deterministic_algorithms(deterministic)
    malloc_tuned = False
    if cpu_malloc and not device.startswith("cuda"):
        try:
            from smartpretrain.runs.performance import tune_cpu_malloc
        except ImportError:  # a tree from before the setting
            tune_cpu_malloc = None
        malloc_tuned = bool(tune_cpu_malloc and tune_cpu_malloc())
    if kind in ("forward", "forward_backward"):
        body = pass_case(model_name, batch_size, steps, device, precision, backward=kind == "forward_backward")
    elif kind == "ssl":
        body = ssl_case(model_name, batch_size, steps, device, precision, arm, experiment)
    else:
        body = finetune_case(model_name, batch_size, steps, device, precision)
    head = {"model": model_name, "kind": kind, "device": device, "precision": precision, "batch_size": batch_size,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cpu_malloc_tuned": malloc_tuned,
            "deterministic": torch.are_deterministic_algorithms_enabled()}  # fmt: skip
    return {**head, **body}


def compare_trees(results: list[dict[str, Any]], trees: list[str]) -> list[dict[str, object]]:
    """Per (model, kind, batch): each tree's median step time (over its repeats) and peak memory, and both over
    the first tree's."""
    mem_key = "peak_gpu_mib" if any("peak_gpu_mib" in r for r in results) else "peak_rss_mib"
    rows = []
    cases = dict.fromkeys((r["model"], r["kind"], r["batch_size"]) for r in results)
    for model, kind, bs in cases:
        row: dict[str, object] = {"model": model, "kind": kind, "batch_size": bs}
        base: tuple[float, float] | None = None
        for tree in trees:
            runs = [
                r for r in results if (r["model"], r["kind"], r["batch_size"], r["tree"]) == (model, kind, bs, tree)
            ]
            if not runs:
                continue
            ms = statistics.median(t for r in runs for t in r["step_ms_all"])
            mem = max(float(r[mem_key]) for r in runs)
            row[f"{tree}_step_ms"], row[f"{tree}_{mem_key}"] = round(ms, 1), mem
            if base is None:
                base = (ms, mem)
            else:
                row[f"{tree}_time_ratio"] = round(ms / base[0], 3)
                row[f"{tree}_memory_ratio"] = round(mem / base[1], 3)
        rows.append(row)
    return rows


def _main_arm(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results without the ``ssl`` steps of other arms than TCL + TRL (the comparisons are TCL + TRL's)."""
    return [r for r in results if r.get("ssl_arm", "tcl_trl") == "tcl_trl"]


def compare_arms(results: list[dict[str, Any]]) -> list[dict[str, object]]:
    """Per (model, batch): each SSL arm's step time and peak memory over TCL + TRL's."""
    rows = []
    ssl = [r for r in results if r["kind"] == "ssl"]
    for model, bs in dict.fromkeys((r["model"], r["batch_size"]) for r in ssl):
        base = next((r for r in ssl if (r["model"], r["batch_size"], r.get("ssl_arm")) == (model, bs, "tcl_trl")), None)
        for r in ssl:
            if (r["model"], r["batch_size"]) != (model, bs):
                continue
            row: dict[str, object] = {"model": model, "batch_size": bs, "arm": r.get("ssl_arm", "tcl_trl"),
                                      "objectives": sorted(r["objectives"]), "step_ms": r["step_ms_median"],
                                      "peak_rss_mib": r["peak_rss_mib"]}  # fmt: skip
            if base is not None:
                row["time_over_tcl_trl"] = round(r["step_ms_median"] / base["step_ms_median"], 3)
            rows.append(row)
    return rows


def compare(results: list[dict[str, Any]]) -> list[dict[str, object]]:
    """Per (model, batch): SSL step (TCL + TRL) over fine-tune step, when both were measured."""
    by_key = {(r["model"], r["batch_size"], r["kind"]): r for r in _main_arm(results)}
    rows = []
    for (model, bs, kind), ssl in by_key.items():
        finetune = by_key.get((model, bs, "finetune"))
        if kind != "ssl" or finetune is None:
            continue
        row: dict[str, object] = {
            "model": model,
            "batch_size": bs,
            "finetune_ms_per_scene": finetune["ms_per_scene"],
            "ssl_ms_per_scene": ssl["ms_per_scene"],
            "ssl_over_finetune": round(ssl["step_ms_median"] / finetune["step_ms_median"], 3),
            "queries_per_scene": ssl["queries_per_scene"],
            "finetune_peak_rss_mib": finetune["peak_rss_mib"],
            "ssl_peak_rss_mib": ssl["peak_rss_mib"],
        }
        if "peak_gpu_mib" in ssl and "peak_gpu_mib" in finetune:
            row["finetune_peak_gpu_mib"] = finetune["peak_gpu_mib"]
            row["ssl_peak_gpu_mib"] = ssl["peak_gpu_mib"]
        rows.append(row)
    return rows


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table: one row per (model, batch), both kinds side by side, and their ratio."""
    by_key = {(r["model"], r["batch_size"], r["kind"]): r for r in _main_arm(results)}
    gpu = any("peak_gpu_mib" in r for r in results)
    mem = "peak GPU MiB" if gpu else "peak RSS MiB"
    head = ["model", "batch", "fine-tune steps/s", "SSL steps/s", "fine-tune ms/scene", "SSL ms/scene"]
    head += ["SSL / fine-tune", "SSL queries/scene", f"fine-tune {mem}", f"SSL {mem}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for model, bs in dict.fromkeys((r["model"], r["batch_size"]) for r in results):
        ft, ssl = by_key.get((model, bs, "finetune")), by_key.get((model, bs, "ssl"))

        def get(r: dict[str, Any] | None, key: str) -> str:
            return "-" if r is None or key not in r else str(r[key])

        ratio = f"{ssl['step_ms_median'] / ft['step_ms_median']:.2f}" if ft and ssl else "-"
        mem_key = "peak_gpu_mib" if gpu else "peak_rss_mib"
        cells = [model, str(bs), get(ft, "steps_per_s"), get(ssl, "steps_per_s")]
        cells += [get(ft, "ms_per_scene"), get(ssl, "ms_per_scene"), ratio]
        cells += [get(ssl, "queries_per_scene"), get(ft, mem_key), get(ssl, mem_key)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


STEP_WHAT = {
    "finetune": "fwd+bwd+AdamW",
    "ssl": "EMA+SSL objectives fwd+bwd+AdamW",
    "forward": "eval forward",
    "forward_backward": "fwd+loss+bwd",
}


def run_subprocess(
    args: argparse.Namespace, model: str, bs: int, kind: str, tree: Path | None, arm: str = "tcl_trl"
) -> dict[str, Any]:
    """One case in a fresh process (its own peak RSS), importing ``smartpretrain`` from ``tree`` when given."""
    cmd = [sys.executable, __file__, "--model", model, "--kinds", kind, "--steps", str(args.steps),
           "--device", args.device, "--precision", args.precision, "--case", str(bs), "--ssl-arms", arm]  # fmt: skip
    if args.ssl_experiment:
        cmd += ["--ssl-experiment", args.ssl_experiment]
    if args.matmul_precision:
        cmd += ["--matmul-precision", args.matmul_precision]
    if args.cpu_malloc == "off":
        cmd += ["--cpu-malloc", "off"]
    if args.deterministic == "on":
        cmd += ["--deterministic", "on"]
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [env.get("PYTHONPATH")])])
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.stderr.write(out.stderr)
        raise SystemExit(f"case {model} batch {bs} {kind} failed (exit {out.returncode})")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_parser() -> argparse.ArgumentParser:
    """The command line; options a preset can set default to None (filled in by :func:`resolve`)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None, help="a set of defaults (see above)")
    parser.add_argument("--model", "--models", dest="models", nargs="+", default=None, help="model config(s)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="scenes per batch (every model)")
    parser.add_argument("--steps", type=int, default=None, help=f"timed steps per case (after {WARMUP_STEPS} warm-ups)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=None, help="which steps to time")
    parser.add_argument(
        "--trees",
        nargs="+",
        default=None,
        metavar="NAME=PATH",
        help="checkouts whose smartpretrain package to time, interleaved (the first is the baseline)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="with --trees: rounds over all trees and cases")
    parser.add_argument(
        "--ssl-arms", nargs="+", default=["tcl_trl"], choices=sorted(PRETRAIN_ARMS), help="objective sets of ssl steps"
    )
    parser.add_argument("--ssl-experiment", default=None, help="pre-training preset of ssl steps (default: per model)")
    parser.add_argument("--device", default=None, help="cpu (default), cuda, cuda:N")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None, help="fp32 (default) or bf16 autocast")
    parser.add_argument(
        "--matmul-precision",
        choices=["highest", "high", "medium"],
        default=None,
        help="torch.set_float32_matmul_precision (high: TF32); default: torch's",
    )
    parser.add_argument(
        "--cpu-malloc",
        choices=["on", "off"],
        default="on",
        help="on CPU, tune glibc's allocator as training runs do (performance.cpu_malloc), where the tree has it",
    )
    parser.add_argument(
        "--deterministic",
        choices=["on", "off"],
        default="off",
        help="torch.use_deterministic_algorithms, as trainer.deterministic=true sets it (to time its cost)",
    )
    parser.add_argument("--out", type=Path, default=None, help="the JSON report")
    parser.add_argument("--case", type=int, default=None, help=argparse.SUPPRESS)  # internal: run one case
    return parser


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with every option the command line left out taken from the preset, else from ``DEFAULTS``;
    ``batch_sizes`` becomes one list per model (the preset's per model, unless ``--batch-sizes`` was given)."""
    preset = PRESETS[args.preset] if args.preset else {}
    given_sizes = args.batch_sizes
    for name, default in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, preset.get(name, default))
    if given_sizes is not None:
        args.batch_sizes = {model: list(given_sizes) for model in args.models}
    elif isinstance(args.batch_sizes, dict):
        args.batch_sizes = {model: list(args.batch_sizes.get(model, DEFAULTS["batch_sizes"])) for model in args.models}
    else:
        args.batch_sizes = {model: list(args.batch_sizes) for model in args.models}
    return args


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = resolve(parser.parse_args(argv))
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(
                f"bench_train.py: error: no CUDA device is available (--device {args.device}); nothing was measured",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(2)
    if not FIXTURE.exists():
        raise SystemExit(f"{FIXTURE} not found: this benchmark needs ../shared beside the repository")
    if args.case is not None:
        (model,), (kind,), (arm,) = args.models, args.kinds, args.ssl_arms
        case = run_case(
            model, args.case, args.steps, args.device, args.precision, kind, arm, args.ssl_experiment,
            args.matmul_precision, args.cpu_malloc == "on", args.deterministic == "on",
        )  # fmt: skip
        print(json.dumps(case))
        return
    kinds = [k for k in KINDS if k in args.kinds]
    trees: dict[str, Path | None] = {"this": None}
    if args.trees:
        try:
            trees = {name: Path(path).resolve() for name, path in (spec.split("=", 1) for spec in args.trees)}
        except ValueError:
            parser.error("--trees takes NAME=PATH entries")
        for name, path in trees.items():
            if path is None or not (path / "smartpretrain" / "__init__.py").exists():
                parser.error(f"--trees {name}={path}: no smartpretrain package there")
    results = []
    for round_index in range(max(args.repeats, 1) if args.trees else 1):
        for model in args.models:
            for bs in args.batch_sizes[model]:
                for kind, arm in [(k, a) for k in kinds for a in (args.ssl_arms if k == "ssl" else ["tcl_trl"])]:
                    for tree, path in trees.items():
                        result = run_subprocess(args, model, bs, kind, path, arm)
                        result["tree"], result["round"] = tree, round_index
                        results.append(result)
                        peak = f"peak GPU {result['peak_gpu_mib']} MiB, " if "peak_gpu_mib" in result else ""
                        what = STEP_WHAT[kind]
                        queries = f", {result['queries_per_scene']} queries/scene, arm {arm}" if kind == "ssl" else ""
                        label = f"[{tree}] " if args.trees else ""
                        print(
                            f"{label}{model} {kind} {args.device} {args.precision} batch {bs}: "
                            f"{result['steps_per_s']} steps/s, {result['step_ms_median']} ms/step, "
                            f"{result['ms_per_scene']} ms/scene ({what}), "
                            f"{peak}peak RSS {result['peak_rss_mib']} MiB{queries}",
                            flush=True,
                        )
    report: dict[str, Any] = {
        "machine": machine_info(),
        "settings": {
            "steps": args.steps,
            "warmup_steps": WARMUP_STEPS,
            "preset": args.preset,
            "device": args.device,
            "precision": args.precision,
            "float32_matmul_precision": args.matmul_precision,
            "cpu_malloc": args.cpu_malloc,
            "deterministic": args.deterministic,
            "batch_sizes": args.batch_sizes,
            "kinds": kinds,
            "ssl_arms": args.ssl_arms,
            "ssl_experiment": args.ssl_experiment,
        },
        "results": results,
    }
    if args.trees:
        rows = compare_trees(results, list(trees))
        report["settings"] |= {"trees": {name: str(path) for name, path in trees.items()}, "repeats": args.repeats}
        report["tree_comparison"] = rows
        # the docs summary's table (bench_report.py, beside this script), so the terminal shows what the docs will
        from bench_report import trees_table

        print("\n".join(trees_table(args.out.name, report)))
    else:
        report["comparison"] = compare(results)
        if len(args.ssl_arms) > 1 and "ssl" in kinds:
            report["arm_comparison"] = compare_arms(results)
            from bench_report import arms_table

            print("\n".join(arms_table(args.out.name, report)))
        print(table(results))
    write_report(args.out, report)


if __name__ == "__main__":
    main()
