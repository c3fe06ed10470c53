"""Peak memory of one training step on a batch holding one very large scene, without and with the agent cap.

    python scripts/bench_memory.py                                   # qcnet_small + forecast_mae, 2,000 agents
    python scripts/bench_memory.py --models qcnet_small --agents 2000 --caps 128 256 --budget-gib 4

The batch is 4 scenes: the AV2 fixture scene (58 agents, 77 map polygons) grown to ``--agents`` agents, plus three
copies of the plain fixture scene. The added agents are vehicles on straight tracks: at the present each is on a
random point of a lane centreline (jittered up to 1.5 m across it), heading along the lane at 0-12 m/s, observed
over a random span around the present (1-50 history steps, 0-60 future steps; AV2's own tracks are mostly partial).
So they lie in the ~100 x 200 m of the fixture's map, within Forecast-MAE's 150 m radius and 5 m of a lane at the
present (its adapter keeps them), and QCNet keeps every agent observed in the history; the cap's nearest agents lie
within ~30 m of the focal agent, so nearly all their pairs are within QCNet's 50 m ``a2a_radius``.

One step is the fine-tuning step of ``scripts/bench_train.py`` (forecasting forward + loss + backward + AdamW), built
the same way (``compose_config("train", ["data=av2", "model=..."])``) and measured with its helpers. Cases:

* "before": no cap, for each of ``--uncapped-agents`` (default: the full size, then smaller ones only while the
  previous one did not fit under the guard);
* "after": :class:`~smartpretrain.data.agent_cap.AgentCap` ``(max_agents)`` on every scene of the batch, for each
  of ``--caps``.

Each case runs in a fresh subprocess, with ``--threads`` intra-op threads (default 1: on a shared 2-core machine
oversubscribed OpenMP threads spin and triple the step time). Its peak is the child's ``ru_maxrss`` (the whole
process: Python, torch, model, batch, activations, gradients and AdamW state, over the warm-up and timed steps; by
default one step in all). The parent polls the child's resident memory and kills it past ``--guard-gib`` (or after
``--timeout-s``), recording "exceeded N GiB" and the RSS seen so far instead of a figure, so the benchmark cannot
take the machine down. ``pass`` is ``peak < --budget-gib``. The report goes to ``benchmarks/results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_train's helpers, also when loaded from elsewhere

import bench_train
from bench_train import FIXTURE, REPO, batch_sizes, fixture_scene, memory, start_memory, time_steps, timing

from smartpretrain.io.run_outputs import write_report

MODELS = ("qcnet_small", "forecast_mae")
GIB = 2**30


def grow_scene(scene: Any, num_agents: int, seed: int = 0) -> Any:
    """``scene`` with vehicles added on straight lane-aligned tracks until it has ``num_agents`` agents."""
    import dataclasses

    import numpy as np

    from smartpretrain.data.scene import AgentTracks
    from smartpretrain.data.taxonomy import AgentRole, AgentType, PolygonType, Side

    a, m = scene.agents, scene.map
    extra = num_agents - a.num_agents
    if extra <= 0:
        return scene
    rng = np.random.default_rng(seed)
    lanes = np.flatnonzero(m.polygon_type != PolygonType.CROSSWALK)
    centre = [
        line for line in range(m.num_polylines)
        if m.polyline_side[line] == Side.CENTER and m.polyline_polygon[line] in set(lanes.tolist())
        and len(m.polyline(line)) >= 2
    ]  # fmt: skip
    segments = np.concatenate([np.stack([m.polyline(line)[:-1, :2], m.polyline(line)[1:, :2]], 1) for line in centre])
    seg = segments[rng.integers(len(segments), size=extra)]
    start, end = seg[:, 0].astype(np.float64), seg[:, 1].astype(np.float64)
    direction = (end - start) / np.maximum(np.linalg.norm(end - start, axis=1, keepdims=True), 1e-6)
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=1)
    anchor = start + rng.uniform(0, 1, (extra, 1)) * (end - start) + rng.uniform(-1.5, 1.5, (extra, 1)) * normal
    speed = rng.uniform(0.0, 12.0, (extra, 1))
    t = (np.arange(scene.num_steps) - scene.current_step) * scene.dt  # the anchor is the position at the present
    xy = anchor[:, None, :] + t[None, :, None] * (speed * direction)[:, None, :]
    position = np.concatenate([xy, np.zeros((extra, scene.num_steps, 1))], axis=2).astype(np.float32)
    velocity = np.repeat((speed * direction)[:, None, :], scene.num_steps, axis=1).astype(np.float32)
    heading = np.repeat(np.arctan2(direction[:, 1], direction[:, 0])[:, None], scene.num_steps, axis=1)

    # observed over a random span around the present: 1-50 history steps up to it, 0-60 future steps after it
    steps = np.arange(scene.num_steps)
    first = rng.integers(max(scene.current_step - 49, 0), scene.current_step + 1, size=(extra, 1))
    last = rng.integers(scene.current_step, scene.num_steps, size=(extra, 1))
    valid = (steps >= first) & (steps <= last)
    position[~valid], velocity[~valid], heading[~valid] = 0.0, 0.0, 0.0

    def cat(old: np.ndarray | None, new: np.ndarray) -> np.ndarray | None:
        return None if old is None else np.concatenate([old, new.astype(old.dtype)])

    agents = AgentTracks(
        ids=[*a.ids, *(f"extra-{i}" for i in range(extra))],
        type=cat(a.type, np.full(extra, AgentType.VEHICLE)),
        role=cat(a.role, np.full(extra, AgentRole.UNSCORED)),
        is_sdc=cat(a.is_sdc, np.zeros(extra, bool)),
        position=cat(a.position, position),
        heading=cat(a.heading, heading),
        velocity=cat(a.velocity, velocity),
        valid=cat(a.valid, valid),
        size=cat(a.size, np.tile([4.5, 2.0, 1.6], (extra, 1))),
        difficulty=cat(a.difficulty, np.zeros(extra)),
        of_interest=cat(a.of_interest, np.zeros(extra, bool)),
    )
    grown = dataclasses.replace(scene, agents=agents, scenario_id=f"{scene.scenario_id}+{extra}")
    grown.validate()
    return grown


def run_case(model_name: str, num_agents: int, cap: int | None, steps: int, threads: int = 1) -> dict[str, Any]:
    """One fine-tuning case in this process: build model and batch, time the steps, read the peak RSS."""
    import torch
    from hydra.utils import instantiate

    from smartpretrain.config import compose_config
    from smartpretrain.data.agent_cap import AgentCap

    torch.set_num_threads(threads)

    cfg = compose_config("train", ["data=av2", f"model={model_name}"])
    torch.manual_seed(0)
    backbone = instantiate(cfg.model).train()
    adapter = backbone.make_adapter()
    base = fixture_scene()
    scenes = [grow_scene(base, num_agents), base, base, base]
    before = sum(scene.agents.num_agents for scene in scenes)
    if cap is not None:
        scenes = [AgentCap(cap)(scene) for scene in scenes]  # what a training pipeline puts before the adapter
    batch = adapter.collate([adapter(scene) for scene in scenes])
    optimizer = torch.optim.AdamW(backbone.parameters(), lr=1e-4)

    def step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        loss = backbone.loss(batch, backbone(batch))["loss"]
        loss.backward()
        optimizer.step()
        return loss

    rss_before = start_memory("cpu")
    times, loss = time_steps(step, steps, "cpu")
    return {
        "scene_agents": [s.agents.num_agents for s in scenes],
        "dropped": before - sum(scene.agents.num_agents for scene in scenes),
        "batch": batch_sizes(backbone, batch),  # agents (with targets) and map elements the model sees
        **timing(times, len(scenes)),
        "loss_finite": bool(torch.isfinite(loss)),
        **memory("cpu", rss_before),
    }


def _rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def spawn(model: str, agents: int, cap: int | None, args: argparse.Namespace) -> dict[str, Any]:
    """Run one case in a child; kill it past the guard or the timeout."""
    cmd = [sys.executable, __file__, "--case", model, str(agents), str(cap or 0), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--threads", str(args.threads)]  # fmt: skip
    head = {"model": model, "agents": agents, "cap": cap}
    start, seen, killed = time.monotonic(), 0, None
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while child.poll() is None:
        seen = max(seen, _rss_bytes(child.pid))
        if seen > args.guard_gib * GIB:
            killed = f"exceeded {args.guard_gib:g} GiB"
        elif time.monotonic() - start > args.timeout_s:
            killed = f"exceeded {args.timeout_s:g} s"
        if killed:
            child.kill()
            break
        time.sleep(0.1)
    stdout, stderr = child.communicate()
    wall = round(time.monotonic() - start, 1)
    if killed:
        return {**head, "status": killed, "peak_rss_gib": round(seen / GIB, 2), "wall_s": wall, "pass": False}
    if child.returncode != 0:
        sys.stderr.write(stderr)
        raise SystemExit(f"case {model} {agents} agents cap {cap} failed (exit {child.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    peak = result["peak_rss_mib"] / 1024
    return {**head, "status": "ok", **result, "peak_rss_gib": round(peak, 2), "wall_s": wall,
            "pass": peak < args.budget_gib}  # fmt: skip


def table(rows: list[dict[str, Any]], budget: float) -> str:
    head = ["model", "agents in the big scene", "cap", "peak RSS GiB", "ms/step", f"within {budget:g} GiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] == "ok":
            peak = f"{r['peak_rss_gib']:.2f}"
        elif r["status"].endswith("GiB"):  # killed at the guard
            peak = f"> {r['status'].split()[1]} (killed)"
        else:  # killed at the timeout: the RSS it had reached
            peak = f">= {r['peak_rss_gib']:.2f} (killed after {r['status'].split()[1]} s)"
        ms = f"{r['step_ms_median']:.0f}" if r["status"] == "ok" else "-"
        cells = [r["model"], f"{r['agents']:,}", str(r["cap"] or "none"), peak, ms, "yes" if r["pass"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--agents", type=int, default=2000, help="agents of the big scene (capped cases)")
    parser.add_argument(
        "--uncapped-agents", type=int, nargs="+", default=[2000, 1000, 500],
        help="big-scene sizes tried without a cap, largest first, until one fits under the guard",
    )  # fmt: skip
    parser.add_argument("--caps", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--budget-gib", type=float, default=4.0, help="a row passes when its peak RSS is below this")
    parser.add_argument("--guard-gib", type=float, default=12.0, help="kill a case whose RSS goes past this")
    parser.add_argument("--timeout-s", type=float, default=180.0, help="kill a case that runs longer than this")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=0, help="untimed steps before them (default: one step in all)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per case")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "memory.json")
    parser.add_argument("--case", nargs=3, default=None, help=argparse.SUPPRESS)  # internal: MODEL AGENTS CAP
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0 or min(args.caps) <= 0:
        parser.error("need --steps >= 1, --warmup >= 0 and every cap > 0")
    if not FIXTURE.exists():
        raise SystemExit(f"{FIXTURE} not found: this benchmark needs ../shared beside the repository")
    bench_train.WARMUP_STEPS = args.warmup  # read by bench_train.time_steps
    if args.case is not None:
        model, agents, cap = args.case[0], int(args.case[1]), int(args.case[2]) or None
        print(json.dumps(run_case(model, agents, cap, args.steps, args.threads)))
        return

    rows = []
    for model in args.models:
        for agents in sorted(args.uncapped_agents, reverse=True):
            rows.append(spawn(model, agents, None, args))
            print(f"{model} {agents} agents, no cap: {rows[-1]['status']}, peak {rows[-1]['peak_rss_gib']} GiB",
                  flush=True)  # fmt: skip
            if rows[-1]["status"] == "ok":
                break
        for cap in args.caps:
            rows.append(spawn(model, args.agents, cap, args))
            print(f"{model} {args.agents} agents, cap {cap}: peak {rows[-1]['peak_rss_gib']} GiB", flush=True)
    print(table(rows, args.budget_gib))
    notes = []
    for model in args.models:
        uncapped = [r for r in rows if r["model"] == model and r["cap"] is None]
        if uncapped and uncapped[0]["status"] != "ok":
            fitted = [r["agents"] for r in uncapped if r["status"] == "ok"]
            notes.append(
                f"{model}: uncapped at {uncapped[0]['agents']} agents {uncapped[0]['status']} and was killed; "
                f"largest uncapped size measured: {fitted[0] if fitted else 'none'} agents"
            )
            print(notes[-1])
    report = {
        "settings": {
            "batch": "1 fixture scene grown to N agents + 3 copies of the AV2 fixture scene (58 agents)",
            "step": "fine-tune: forward + loss + backward + AdamW (scripts/bench_train.py)",
            "device": "cpu",
            "precision": "fp32",
            "steps": args.steps,
            "warmup_steps": args.warmup,
            "threads": args.threads,
            "budget_gib": args.budget_gib,
            "guard_gib": args.guard_gib,
            "timeout_s": args.timeout_s,
            "agents": args.agents,
        },
        "notes": notes,
        "results": rows,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
