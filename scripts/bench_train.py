"""Training-step cost of a backbone: forward+backward ms per scene and peak memory, on AV2-fixture batches.

    python scripts/bench_train.py --model qcnet --batch-sizes 1 2 4 --steps 5 --out bench_out/bench_train.json
    python scripts/bench_train.py --device cuda --precision bf16 ...          # on a GPU machine

Each (batch size) case runs in a fresh subprocess so the CPU peak (max RSS) is its own. The batch holds copies of
the real AV2 fixture scene (58 agents, 71 lanes + 6 crossings -> 83 QCNet polygons).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from smartpretrain.data.cache import atomic_write_text

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO.parent / "shared" / "fixtures" / "av2"
FIXTURE_ID = "0a1e6f0a-1817-4a98-b02e-db8c9327d151"


def run_case(model_name: str, batch_size: int, steps: int, device: str, precision: str) -> dict[str, object]:
    """One case in this process: build the model and batch, time ``steps`` optimizer steps after 2 warm-ups."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from smartpretrain.data.converters.av2 import Av2Converter

    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=av2", f"model={model_name}"])
    torch.manual_seed(0)
    backbone = instantiate(cfg.model).to(device).train()
    adapter = backbone.make_adapter()
    scene = Av2Converter(FIXTURE, "val").convert(FIXTURE_ID).scene
    batch = adapter.collate([adapter(scene) for _ in range(batch_size)]).to(device)
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-4)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[precision]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(steps + 2):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.split(":")[0], dtype=dtype, enabled=dtype is not None):
            loss = backbone.loss(batch, backbone(batch))["loss"]
        loss.backward()
        optimizer.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if step >= 2:
            times.append(time.perf_counter() - start)
    ms = 1e3 * statistics.median(times)
    result: dict[str, object] = {
        "model": model_name,
        "device": device,
        "precision": precision,
        "batch_size": batch_size,
        "agents": int(batch["agent"].num_nodes),
        "polygons": int(batch["map_polygon"].num_nodes),
        "step_ms_median": round(ms, 1),
        "ms_per_scene": round(ms / batch_size, 1),
        "loss_finite": bool(torch.isfinite(loss)),
        "parameters": sum(p.numel() for p in backbone.parameters()),
        "threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    result["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["rss_growth_mib"] = round((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qcnet")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "bench_train.json")
    parser.add_argument("--case", type=int, default=None, help=argparse.SUPPRESS)  # internal: run one case
    args = parser.parse_args()
    if not FIXTURE.exists():
        raise SystemExit(f"{FIXTURE} not found: this benchmark needs ../shared beside the repository")
    if args.case is not None:
        print(json.dumps(run_case(args.model, args.case, args.steps, args.device, args.precision)))
        return
    results = []
    for bs in args.batch_sizes:
        cmd = [sys.executable, __file__, "--model", args.model, "--steps", str(args.steps), "--device", args.device,
               "--precision", args.precision, "--case", str(bs)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        peak = f"peak GPU {result['peak_gpu_mib']} MiB, " if "peak_gpu_mib" in result else ""
        print(
            f"{args.model} {args.device} {args.precision} batch {bs}: {result['step_ms_median']} ms/step, "
            f"{result['ms_per_scene']} ms/scene (fwd+bwd+AdamW), {peak}peak RSS {result['peak_rss_mib']} MiB",
            flush=True,
        )
    report = {
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
