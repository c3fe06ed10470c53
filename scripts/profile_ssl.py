"""Where one SmartPretrain pre-training step spends its time: ``torch.profiler`` by stage, on the step that
``scripts/bench_train.py --kinds ssl`` times (the same task, batch and optimizer: ``bench_train.ssl_setup``).

    python scripts/profile_ssl.py --model qcnet --batch-size 4 --steps 3
    python scripts/profile_ssl.py --model qcnet --batch-size 4 --cpu-malloc off     # glibc's default allocator
    python scripts/profile_ssl.py --model forecast_mae --batch-size 4 --out benchmarks/results/profile_ssl_fmae.json

Stages are ``record_function`` labels: the step's parts (EMA update, the forward of the losses, backward, AdamW),
inside the forward each branch's backbone modules two levels deep (QCNet: ``encoder.map_encoder``,
``encoder.agent_encoder``; the decoder's ``propose_queries``), their graph building (``build_graphs``), the
projectors and each objective's ``compute``. Times are the profiler's CPU totals per step (a stage includes the
stages inside it; the momentum branch's labels add up its views A and B). The data stage (view sampling + the
backbone adapter + collate, what a DataLoader worker does) is timed apart, without the profiler. Also printed: the
ops with the most self time.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import REPO, WARMUP_STEPS, SSLSetup, machine_info, ssl_setup  # a script beside this one

#: methods that build graphs or run a stage outside ``forward``, labelled where a backbone module has them
METHODS = ("build_graphs", "propose_queries")
STEP_STAGES = ("ema_update", "losses (forward)", "backward", "optimizer")


def _labelled(fn: Any, label: str) -> Any:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.profiler.record_function(label):
            return fn(*args, **kwargs)

    return run


def _hook_module(module: nn.Module, label: str) -> None:
    """``module``'s forward inside ``record_function(label)`` (pre- and post-forward hooks)."""
    open_ranges: list[Any] = []

    def enter(*_: Any) -> None:
        rf = torch.profiler.record_function(label)
        rf.__enter__()
        open_ranges.append(rf)

    def leave(*_: Any) -> None:
        open_ranges.pop().__exit__(None, None, None)

    module.register_forward_pre_hook(enter)
    module.register_forward_hook(leave)


def attach_labels(task: Any) -> list[str]:
    """Label every stage of ``task``'s forward (see the module docstring); returns the labels."""
    labels: list[str] = []
    for branch_name, branch in (("online", task.branch), ("momentum", task.momentum_branch)):
        backbone = branch.backbone
        for name in ("encode", "agent_embeddings"):
            setattr(backbone, name, _labelled(getattr(backbone, name), f"{branch_name}.{name}"))
            labels.append(f"{branch_name}.{name}")
        for name, module in backbone.named_modules():
            depth = name.count(".") + 1 if name else 0
            if depth > 2 or isinstance(module, (nn.ModuleList, nn.ModuleDict)):
                continue
            if depth > 0:
                _hook_module(module, f"{branch_name}.{name}")
                labels.append(f"{branch_name}.{name}")
            for method in METHODS:
                if callable(getattr(type(module), method, None)):
                    label = f"{branch_name}.{name + '.' if name else ''}{method}"
                    setattr(module, method, _labelled(getattr(module, method), label))
                    labels.append(label)
        _hook_module(branch.projector, f"{branch_name}.projector")
        labels.append(f"{branch_name}.projector")
    for name, objective in task.objectives.items():
        objective.compute = _labelled(objective.compute, f"objective.{name}")
        labels.append(f"objective.{name}")
    return labels


def data_stage_ms(setup: SSLSetup, batch_size: int, repeats: int = 5) -> float:
    """Median ms of building one batch as a DataLoader worker does: views + adapter per scene, then collate."""
    transform, scene = setup.transform, setup.scene
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        transform.collate([transform(scene) for _ in range(batch_size)])
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def profile(
    model: str, batch_size: int, steps: int, device: str, precision: str, top: int, cpu_malloc: bool = True
) -> dict[str, Any]:
    malloc_tuned = False
    if cpu_malloc and not device.startswith("cuda"):  # as a training run on CPU does (performance.cpu_malloc)
        from smartpretrain.runs.performance import tune_cpu_malloc

        malloc_tuned = tune_cpu_malloc()
    setup = ssl_setup(model, batch_size, device, precision)
    task, step = setup.task, setup.step
    labels = attach_labels(task)
    for _ in range(WARMUP_STEPS):
        step()
    walls = []
    for _ in range(steps):  # without the profiler: the step's own time
        start = time.perf_counter()
        step()
        walls.append(time.perf_counter() - start)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
    events = {e.key: e for e in prof.key_averages()}
    stages = {}
    for label in (*STEP_STAGES, *labels):
        if label in events:
            stages[label] = {
                "ms_per_step": round(events[label].cpu_time_total / steps / 1e3, 2),
                "calls_per_step": round(events[label].count / steps, 2),
            }
    ops = sorted(
        (e for e in prof.key_averages() if e.key not in stages and not e.key.startswith("ProfilerStep")),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )[:top]
    top_ops = [
        {"op": e.key, "self_ms_per_step": round(e.self_cpu_time_total / steps / 1e3, 2),
         "calls_per_step": round(e.count / steps, 1)}
        for e in ops
    ]  # fmt: skip
    return {
        "model": model,
        "batch_size": batch_size,
        "device": device,
        "precision": precision,
        "steps": steps,
        "threads": torch.get_num_threads(),
        "cpu_malloc_tuned": malloc_tuned,
        "step_ms_median": round(1e3 * statistics.median(walls), 1),
        "data_ms_per_batch": round(data_stage_ms(setup, batch_size), 1),
        "stages": stages,
        "top_self_ops": top_ops,
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"{result['model']} batch {result['batch_size']} ({result['device']}, {result['precision']}, "
        f"{result['threads']} threads, malloc {'tuned' if result['cpu_malloc_tuned'] else 'default'}): "
        f"{result['step_ms_median']} ms/step without the profiler; data stage "
        f"(views + adapter + collate, one worker) {result['data_ms_per_batch']} ms/batch",
        "",
        "| stage | ms/step | calls/step |",
        "|---|---|---|",
    ]
    for label, row in result["stages"].items():
        indent = "&nbsp;&nbsp;" * label.count(".") if label not in STEP_STAGES else ""
        lines.append(f"| {indent}{label} | {row['ms_per_step']} | {row['calls_per_step']} |")
    lines += ["", "| op (self time) | ms/step | calls/step |", "|---|---|---|"]
    lines += [f"| `{o['op']}` | {o['self_ms_per_step']} | {o['calls_per_step']} |" for o in result["top_self_ops"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="qcnet")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help=f"profiled steps (after {WARMUP_STEPS} warm-ups)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--top", type=int, default=15, help="ops listed by self time")
    parser.add_argument("--cpu-malloc", choices=["on", "off"], default="on", help="performance.cpu_malloc on CPU")
    parser.add_argument("--out", type=Path, default=None, help="JSON report (default: benchmarks/results/...)")
    args = parser.parse_args()
    result = profile(
        args.model, args.batch_size, args.steps, args.device, args.precision, args.top, args.cpu_malloc == "on"
    )
    result["machine"] = machine_info()
    print(render(result))
    out = args.out or REPO / "benchmarks" / "results" / f"profile_ssl_{args.model}_b{args.batch_size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
