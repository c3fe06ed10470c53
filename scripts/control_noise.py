"""How noisy are the kinematic controls derived from real trajectories (``smartpretrain/data/controls.py``)?

    python scripts/control_noise.py                       # AV1 val (579 scenes) + the AV2 and WOMD fixtures
    python scripts/control_noise.py --out outputs/control_noise.json

For each least-squares window (``ssl.controls.fit_window_s``) it prints the |longitudinal acceleration| and
|yaw rate| percentiles of **parked** agents (observed >= 2 s, never more than 0.5 m from their mean position:
the true controls are 0, so everything is noise) and of **moving** ones (vehicles covering > 20 m while
observed), and the share of moving agents' controls the plausibility bounds (10 m/s^2, 2 rad/s) reject. Reads
``../shared`` (skips what is absent); the figures are in docs/ssl.md.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

from smartpretrain.data.controls import ControlSpec, kinematic_controls
from smartpretrain.data.scene import Scene
from smartpretrain.data.taxonomy import AgentType
from smartpretrain.io.atomic import atomic_write_text

SHARED = Path(__file__).resolve().parents[2] / "shared"
WINDOWS_S = (0.0, 0.4, 1.0, 2.0)
MIN_OBSERVED_S = 2.0


def _scenes() -> dict[str, list[Scene]]:
    from smartpretrain.data.converters.av1 import Av1Converter
    from smartpretrain.data.converters.av2 import Av2Converter
    from smartpretrain.data.converters.womd import WomdConverter

    out: dict[str, list[Scene]] = {}
    if (SHARED / "data" / "av1" / "val").is_dir():
        conv = Av1Converter(SHARED / "data" / "av1", "val")
        out["AV1 val"] = [conv.convert(item).scene for item in conv.list_items()]
    if (SHARED / "fixtures" / "av2" / "val").is_dir():
        conv = Av2Converter(SHARED / "fixtures" / "av2", "val")
        out["AV2 fixture"] = [conv.convert(item).scene for item in conv.list_items()]
    womd = SHARED / "fixtures" / "womd" / "motion_data_one_scenario.tfrecord"
    if womd.is_file():
        conv = WomdConverter(womd, "val")
        out["WOMD fixture"] = [conv.convert(item).scene for item in conv.list_items()]
    return out


def _agents(scenes: Iterable[Scene]) -> tuple[list[tuple[Scene, int]], list[tuple[Scene, int]]]:
    """(parked, moving) agents: (scene, index)."""
    parked, moving = [], []
    for scene in scenes:
        a = scene.agents
        for i in range(a.num_agents):
            m = a.valid[i]
            if m.sum() * scene.dt < MIN_OBSERVED_S:
                continue
            p = a.position[i, m, :2].astype(np.float64)
            if np.linalg.norm(p - p.mean(axis=0), axis=1).max() < 0.5:
                parked.append((scene, i))
            elif a.type[i] == AgentType.VEHICLE and np.linalg.norm(np.diff(p, axis=0), axis=1).sum() > 20.0:
                moving.append((scene, i))
    return parked, moving


def _percentiles(values: np.ndarray) -> list[float]:
    return [round(float(v), 3) for v in np.percentile(np.abs(values), [50, 90, 99])] if values.size else []


def measure(scenes: list[Scene], fit_window_s: float) -> dict[str, object]:
    bounded = ControlSpec(fit_window_s=fit_window_s)
    unbounded = replace(bounded, max_accel=np.inf, max_yaw_rate=np.inf)
    parked, moving = _agents(scenes)
    result: dict[str, object] = {"fit_window_s": fit_window_s, "parked_agents": len(parked),
                                 "moving_agents": len(moving)}  # fmt: skip
    cache = {id(s): (kinematic_controls(s.agents, s.dt, unbounded), kinematic_controls(s.agents, s.dt, bounded))
             for s in scenes}  # fmt: skip
    for name, group in (("parked", parked), ("moving", moving)):
        accel, yaw, kept, total = [], [], 0, 0
        for scene, i in group:
            (values, valid), (_, valid_bounded) = cache[id(scene)]
            accel.append(values[i, valid[i], 0])
            yaw.append(values[i, valid[i], 1])
            kept, total = kept + int(valid_bounded[i].sum()), total + int(valid[i].sum())
        a = np.concatenate(accel) if accel else np.zeros(0)
        w = np.concatenate(yaw) if yaw else np.zeros(0)
        result[name] = {"abs_accel_p50_p90_p99": _percentiles(a), "abs_yaw_rate_p50_p90_p99": _percentiles(w),
                        "rejected_share": round(1.0 - kept / total, 4) if total else None}  # fmt: skip
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    data = _scenes()
    if not data:
        raise SystemExit(f"no real data under {SHARED}: the measurement needs ../shared beside the repository")
    report = {name: [measure(scenes, w) for w in WINDOWS_S] for name, scenes in data.items()}
    print("| data | window (s) | agents parked / moving | parked abs(a) p50/p90/p99 (m/s²) | "
          "moving abs(a) p50/p90/p99 | moving abs(ω) p50/p90/p99 (rad/s) | moving rejected |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for name, rows in report.items():
        for row in rows:
            parked, moving = row["parked"], row["moving"]
            share = moving["rejected_share"]
            print(
                f"| {name} | {row['fit_window_s']:g} | {row['parked_agents']} / {row['moving_agents']} | "
                f"{' / '.join(map(str, parked['abs_accel_p50_p90_p99'])) or '—'} | "
                f"{' / '.join(map(str, moving['abs_accel_p50_p90_p99'])) or '—'} | "
                f"{' / '.join(map(str, moving['abs_yaw_rate_p50_p90_p99'])) or '—'} | "
                f"{'—' if share is None else f'{share * 100:.1f} %'} |"
            )
    if args.out is not None:
        atomic_write_text(args.out, json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
