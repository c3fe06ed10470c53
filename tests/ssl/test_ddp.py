"""DDP on CPU (2 processes, gloo): the SSL losses and gradients equal those of one process over the global batch.

Design under test (:mod:`smartpretrain.ssl.distributed`): losses are normalised by *global* counts and rank r
returns ``W * sum_r / N``, so DDP's gradient averaging reproduces the single-process gradient; TCL's momentum
keys are all-gathered (ranks may hold different numbers of rows, zero included); the heads' BatchNorm uses the
statistics of the global batch through differentiable all-reduces.

Two processes are spawned once (module fixture) and run every case; each rank writes its results to a file, and
the tests compare them with a run of the same code in this process (no process group) over the whole global
batch:

* level 1: a linear "backbone" + projector + TCL + TRL on hand-made per-query tensors (ranks hold 5 and 3
  queries; 5 and 3 with no valid query on rank 1; 6 and 0);
* level 2: the full ``PretrainTask.losses`` path with a tiny QCNet on synthetic 50-step scenes (2 scenes per rank;
  and a batch where rank 1 has no query observed over window B), in float64 (level 1 is float32);
* the control-centric terms (forward / inverse dynamics, masked hindsight control): on hand-made vectors and controls
  (ranks hold 5 and 3 queries; 6 and 0), and with TCL + TRL in the level-2 path, the controls derived from the
  scenes (their hindsight masks come from the data's per-scene draws, so they are the same on either side).

Tolerance 1e-5 (atol and rtol). Both levels use DDP without ``find_unused_parameters``: every parameter must get a
gradient on every rank, the one without queries included, or the step would not complete.
"""

from __future__ import annotations

import os
import socket
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from smartpretrain.ssl.distributed import gather_rows
from smartpretrain.ssl.forward_dynamics import ForwardDynamicsLoss
from smartpretrain.ssl.heads import ProjectionMLP
from smartpretrain.ssl.hindsight import MaskedHindsightControlLoss
from smartpretrain.ssl.inverse_dynamics import InverseDynamicsLoss
from smartpretrain.ssl.momentum import make_momentum_copy
from smartpretrain.ssl.objective import MOMENTUM_A, MOMENTUM_B, ONLINE_A, Controls, Form
from smartpretrain.ssl.tcl import TrajectoryContrastiveLoss
from smartpretrain.ssl.trl import TrajectoryReconstructionLoss
from tests.ssl.inputs import query_inputs

WORLD = 2
ATOL = RTOL = 1e-5
JOIN_TIMEOUT_S = 150

# --- level 1: heads + objectives on hand-made tensors ----------------------------------------------------------
D_IN, PROJ_HIDDEN, PROJ_DIM, Q_STEPS, H1 = 16, 32, 8, 3, 6
#: case -> per-rank full_b patterns (their lengths are the per-rank query counts)
LEVEL1_CASES: dict[str, tuple[tuple[bool, ...], ...]] = {
    "mixed": ((True, True, False, True, True), (True, False, True)),
    "rank1_no_valid": ((True, False, True, True, True), (False, False, False)),
    "rank1_empty": ((True, True, False, True, True, True), ()),
}


def _level1_data(case: str) -> dict[str, Tensor]:
    """The global batch of a level-1 case (deterministic)."""
    full_b = torch.tensor([b for part in LEVEL1_CASES[case] for b in part], dtype=torch.bool)
    p = full_b.numel()
    g = torch.Generator().manual_seed(11)
    start_a = torch.randint(0, 10, (p,), generator=g)
    valid = torch.rand(p, H1, generator=g) > 0.3
    valid[full_b] = True
    valid[~full_b, 1] = False  # a partially observed query is never full
    target = torch.randn(p, H1, 2, generator=g) * 2.0
    return {
        "x_a": torch.randn(p, Q_STEPS, D_IN, generator=g),
        "x_b": torch.randn(p, Q_STEPS, D_IN, generator=g),
        "full_b": full_b,
        "start_a": start_a,
        "start_b": start_a + H1 + torch.randint(0, 5, (p,), generator=g),
        "target": torch.where(valid[..., None], target, torch.zeros_like(target)),
        "target_valid": valid,
    }


class _Level1Model(nn.Module):
    """Online side: backbone + projector + objectives; forward gives (total, tcl, trl) from per-query tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(D_IN, D_IN), ProjectionMLP(D_IN, PROJ_HIDDEN, PROJ_DIM))
        self.objectives = nn.ModuleDict(
            {
                "tcl": TrajectoryContrastiveLoss(dim=PROJ_DIM, hidden_dim=PROJ_HIDDEN),
                "trl": TrajectoryReconstructionLoss(
                    dim=PROJ_DIM, hidden_dim=PROJ_HIDDEN, window=H1, chunk_fractions=None, require_full_target=True
                ),
            }
        )

    def forward(self, data: dict[str, Tensor], key_a: Tensor, key_b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        inputs = query_inputs(
            {ONLINE_A: self.branch(data["x_a"]), MOMENTUM_A: key_a, MOMENTUM_B: key_b},
            full_b=data["full_b"],
            start_a=data["start_a"],
            start_b=data["start_b"],
            window=H1,
            target=data["target"],
            target_valid=data["target_valid"],
        )
        tcl, trl = self.objectives["tcl"](inputs), self.objectives["trl"](inputs)
        return tcl + trl, tcl, trl


def _build_level1() -> tuple[_Level1Model, nn.Module]:
    torch.manual_seed(0)
    model = _Level1Model()
    momentum = make_momentum_copy(model.branch)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # a momentum branch that differs from the online one, as after some EMA steps
        for p in momentum.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model, momentum


def _buffers(module: nn.Module, prefix: str) -> dict[str, Tensor]:
    return {f"{prefix}{name}": b.detach().clone() for name, b in module.named_buffers()}


def _grads(module: nn.Module) -> dict[str, Tensor]:
    return {
        name: (p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p))
        for name, p in module.named_parameters()
        if p.requires_grad
    }


def run_level1(case: str, rank: int, world: int) -> dict[str, Any]:
    """One training step of a level-1 case on this rank's slice (the whole batch when ``world == 1``)."""
    data = _level1_data(case)
    if world > 1:
        sizes = [len(part) for part in LEVEL1_CASES[case]]
        lo = sum(sizes[:rank])
        data = {k: v[lo : lo + sizes[rank]] for k, v in data.items()}
    model, momentum = _build_level1()
    full = data["full_b"]
    with torch.no_grad():  # momentum keys of the full queries, as PretrainTask.losses
        keys = []
        for x in (data["x_a"], data["x_b"]):
            key = x.new_zeros(x.size(0), Q_STEPS, PROJ_DIM)
            key[full] = momentum(x[full])
            keys.append(key)
    net: nn.Module = DistributedDataParallel(model) if world > 1 else model
    total, tcl, trl = net(data, *keys)
    total.backward()
    out: dict[str, Any] = {
        "loss": total.detach(),
        "tcl": tcl.detach(),
        "trl": trl.detach(),
        "grads": _grads(model),
        "buffers": {**_buffers(model, "online."), **_buffers(momentum, "momentum.")},
        "key_a": keys[0],
        "key_a_full": F.normalize(keys[0][full], dim=-1),
    }
    # what TCL gathers: every rank's keys in rank order, and this rank's offset in them
    out["gathered_all"], out["offset_all"] = gather_rows(keys[0])
    out["gathered_full"], out["offset_full"] = gather_rows(F.normalize(keys[0][full], dim=-1))
    return out


# --- the control-centric terms on hand-made vectors and controls ---------------------------------------------
CONTROL_TERMS = ("forward_dynamics", "inverse_dynamics", "masked_hindsight")
#: case -> queries per rank (all full in window B, as the task hands them to these objectives)
CONTROL_CASES: dict[str, tuple[int, ...]] = {"mixed": (5, 3), "rank1_empty": (6, 0)}
K_CONTROLS = 9


def _control_data(case: str) -> dict[str, Tensor]:
    p = sum(CONTROL_CASES[case])
    g = torch.Generator().manual_seed(13)
    length = torch.randint(4, K_CONTROLS + 1, (p,), generator=g)
    valid = (torch.arange(K_CONTROLS)[None] < length[:, None]) & (torch.rand(p, K_CONTROLS, generator=g) > 0.2)
    values = torch.randn(p, K_CONTROLS, 2, generator=g) * torch.tensor([1.5, 0.3])
    return {
        "x_a": torch.randn(p, D_IN, generator=g),
        "x_b": torch.randn(p, D_IN, generator=g),
        "values": torch.where(valid[..., None], values, torch.zeros_like(values)),
        "valid": valid,
        "length": length,
        "draws": torch.rand(p, K_CONTROLS + 2, generator=g),
    }


class _ControlModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.Linear(D_IN, D_IN), ProjectionMLP(D_IN, PROJ_HIDDEN, PROJ_DIM))
        self.objectives = nn.ModuleDict(
            {
                "forward_dynamics": ForwardDynamicsLoss(dim=PROJ_DIM, hidden_dim=PROJ_HIDDEN, control_dim=8),
                "inverse_dynamics": InverseDynamicsLoss(dim=PROJ_DIM, hidden_dim=PROJ_HIDDEN, max_steps=16),
                "masked_hindsight": MaskedHindsightControlLoss(dim=PROJ_DIM, model_dim=8, num_heads=2, max_steps=16),
            }
        )

    def forward(self, data: dict[str, Tensor], key_b: Tensor) -> dict[str, Tensor]:
        p = data["x_a"].size(0)
        controls = Controls(data["values"], data["valid"], data["length"], data["draws"])
        inputs = query_inputs(
            {ONLINE_A: self.branch(data["x_a"]), MOMENTUM_B: key_b},
            full_b=torch.ones(p, dtype=torch.bool),
            start_a=torch.zeros(p, dtype=torch.long),
            start_b=data["length"],
            window=H1,
            target=torch.zeros(p, H1, 2),
            target_valid=torch.ones(p, H1, dtype=torch.bool),
            controls=controls,
            form=Form.VECTOR,
        )
        out = {name: objective(inputs) for name, objective in self.objectives.items()}
        out["loss"] = sum(out.values())
        return out


def run_control(case: str, rank: int, world: int) -> dict[str, Any]:
    """One step of the three control-centric terms on this rank's queries (all of them when ``world == 1``)."""
    data = _control_data(case)
    if world > 1:
        sizes = CONTROL_CASES[case]
        lo = sum(sizes[:rank])
        data = {k: v[lo : lo + sizes[rank]] for k, v in data.items()}
    torch.manual_seed(0)
    model = _ControlModel()
    momentum = make_momentum_copy(model.branch)
    with torch.no_grad():
        key_b = momentum(data["x_b"])
    net: nn.Module = DistributedDataParallel(model) if world > 1 else model
    out = net(data, key_b)
    out["loss"].backward()
    return {
        **{name: value.detach() for name, value in out.items()},
        "grads": _grads(model),
        "buffers": {**_buffers(model, "online."), **_buffers(momentum, "momentum.")},
    }


# --- level 2: PretrainTask.losses with a tiny QCNet ------------------------------------------------------------
NUM_STEPS, WINDOW, NUM_AGENTS = 50, 20, 5
#: case -> per scene of the global batch: (agents with a gap in window B, agents with a gap in window A)
LEVEL2_CASES: dict[str, tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]] = {
    "mixed": (((2,), (4,)), ((1, 3), ()), ((), (3,)), ((0, 4), (2,))),
    "rank1_no_valid": (((2,), (4,)), ((1, 3), ()), ((0, 1, 2, 3, 4), ()), ((0, 1, 2, 3), (4,))),
}


def _scene(scenario_id: str, seed: int, b_gaps: tuple[int, ...], a_gaps: tuple[int, ...]) -> Any:
    """A 50-step scene on the tiny test map; the listed agents miss one step of window B / window A."""
    from smartpretrain.data.scene import AgentTracks, Scene
    from smartpretrain.data.taxonomy import AgentRole, AgentType, Dataset
    from smartpretrain.data.views import TemporalViewSampler
    from tests.helpers import make_tiny_scene

    windows = TemporalViewSampler(WINDOW, deterministic=True).sample_windows(NUM_STEPS, scenario_id)
    rng = np.random.default_rng(seed)
    n, t = NUM_AGENTS, np.arange(NUM_STEPS, dtype=np.float64)
    theta = rng.uniform(-0.4, 0.4, (n, 1)) + rng.uniform(-0.01, 0.01, (n, 1)) * t  # slowly turning
    speed = rng.uniform(0.3, 1.2, (n, 1))  # metres per step
    position = np.zeros((n, NUM_STEPS, 3))
    position[..., 0] = rng.uniform(0.0, 30.0, (n, 1)) + np.cumsum(speed * np.cos(theta), axis=1)
    position[..., 1] = rng.uniform(-5.0, 8.0, (n, 1)) + np.cumsum(speed * np.sin(theta), axis=1)
    velocity = np.gradient(position[..., :2], 0.1, axis=1)
    heading = np.arctan2(velocity[..., 1], velocity[..., 0])
    valid = np.ones((n, NUM_STEPS), bool)
    for i in b_gaps:
        valid[i, windows.start_b + 3 + i] = False
    for i in a_gaps:
        valid[i, windows.start_a + 2 + i] = False
    position[~valid], velocity[~valid], heading[~valid] = 0.0, 0.0, 0.0
    agents = AgentTracks(
        ids=[f"a{i}" for i in range(n)],
        type=np.full(n, AgentType.VEHICLE, np.int8),
        role=np.array([AgentRole.FOCAL] + [AgentRole.SCORED] * (n - 1), np.int8),
        is_sdc=np.arange(n) == 1,
        position=position.astype(np.float32),
        heading=heading.astype(np.float32),
        velocity=velocity.astype(np.float32),
        valid=valid,
        size=np.tile(np.array([[4.5, 2.0, 1.6]], np.float32), (n, 1)),
    )
    scene = Scene(
        scenario_id=scenario_id,
        dataset=Dataset.SYNTHETIC,
        city="testville",
        num_steps=NUM_STEPS,
        current_step=19,
        origin=np.zeros(3),
        agents=agents,
        map=make_tiny_scene(scenario_id).map,
    )
    scene.validate()
    return scene


class _TaskLosses(nn.Module):
    """What DDP wraps: ``PretrainTask.losses`` as a forward."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(self, batch: Any) -> dict[str, Tensor]:
        return self.task.losses(batch)


def run_level2(case: str, rank: int, world: int, control: bool = False) -> dict[str, Any]:
    """One training step of ``PretrainTask.losses`` on this rank's scenes (all of them when ``world == 1``);
    ``control`` adds the three control-centric terms to TCL + TRL."""
    from smartpretrain.backbones.qcnet import QCNet
    from smartpretrain.data.controls import ControlSpec
    from smartpretrain.data.views import SSLViewTransform, TemporalViewSampler
    from smartpretrain.tasks.pretrain import PretrainTask

    torch.manual_seed(0)
    backbone = QCNet(
        hidden_dim=16, num_heads=2, head_dim=8, num_freq_bands=8, num_agent_layers=1, num_dec_layers=1,
        num_map_layers=1, num_historical_steps=20, num_future_steps=30, num_t2m_steps=20, time_span=5, dropout=0.0,
        num_modes=1, propose_stack_only=True,
    )  # fmt: skip
    objectives = {
        "tcl": TrajectoryContrastiveLoss(dim=16, hidden_dim=32),
        "trl": TrajectoryReconstructionLoss(dim=16, hidden_dim=32, window=WINDOW),
    }
    if control:
        objectives["forward_dynamics"] = ForwardDynamicsLoss(dim=16, hidden_dim=32, control_dim=8)
        objectives["inverse_dynamics"] = InverseDynamicsLoss(dim=16, hidden_dim=32, max_steps=64)
        objectives["masked_hindsight"] = MaskedHindsightControlLoss(dim=16, model_dim=8, num_heads=2, max_steps=64)
    task = PretrainTask(backbone, objectives, window=WINDOW, proj_hidden_dim=32, proj_dim=16).train().double()
    transform = SSLViewTransform(
        TemporalViewSampler(WINDOW, deterministic=True),
        backbone.make_adapter(),
        controls=ControlSpec() if control else None,
    )
    specs = LEVEL2_CASES[case]
    scenes = [_scene(f"{case}-{i}", seed=i, b_gaps=b, a_gaps=a) for i, (b, a) in enumerate(specs)]
    per_rank = len(scenes) // world
    batch = transform.collate([transform(s) for s in scenes[rank * per_rank : (rank + 1) * per_rank]])
    for view in (batch.view_a, batch.view_b):  # float64: QCNet's float32 noise is ~1e-5 on gradients of ~5
        view.apply(lambda t: t.double() if t.is_floating_point() else t)
    batch.target = batch.target.double()
    if batch.controls is not None:
        batch.controls = batch.controls.double()
    wrapper = _TaskLosses(task)
    net: nn.Module = DistributedDataParallel(wrapper) if world > 1 else wrapper
    out = net(batch)
    out["loss"].backward()
    trainable = nn.ModuleDict({"branch": task.branch, "objectives": task.objectives})
    return {
        **{name: value.detach() for name, value in out.items()},
        "grads": _grads(trainable),
        "buffers": _buffers(task, ""),
    }


# --- processes -------------------------------------------------------------------------------------------------
def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD, timeout=timedelta(seconds=60)
        )
        try:
            results = {
                **{("level1", case): run_level1(case, rank, WORLD) for case in LEVEL1_CASES},
                **{("level2", case): run_level2(case, rank, WORLD) for case in LEVEL2_CASES},
                **{("control", case): run_control(case, rank, WORLD) for case in CONTROL_CASES},
                **{("level2_control", case): run_level2(case, rank, WORLD, True) for case in LEVEL2_CASES},
            }
            torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        finally:
            dist.destroy_process_group()
    except BaseException:
        Path(out_dir, f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict[Any, dict[str, Any]]]:
    out_dir = tmp_path_factory.mktemp("ddp")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(out_dir)), daemon=True) for r in range(WORLD)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=JOIN_TIMEOUT_S)
    finally:
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(5)
    errors = "\n".join(f.read_text() for f in sorted(out_dir.glob("rank*.err")))
    assert not hung, f"DDP workers {hung} still running after {JOIN_TIMEOUT_S}s (deadlock?)\n{errors}"
    codes = [p.exitcode for p in procs]
    assert codes == [0] * WORLD, f"DDP workers exited with {codes}\n{errors}"
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The single-process references run on one thread too (the machine's cores are shared; QCNet's many small
    ops are much slower multi-threaded under contention)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- checks ----------------------------------------------------------------------------------------------------
def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _check_step(
    ranks: list[dict[str, Any]], ref: dict[str, Any], what: str, terms: tuple[str, ...] = ("tcl", "trl")
) -> None:
    """Mean over ranks of each loss = the single-process loss; every rank's (averaged) gradients and buffers =
    the single-process ones."""
    for name in ("loss", *terms):
        mean = torch.stack([r[name] for r in ranks]).mean()
        assert torch.allclose(mean, ref[name], atol=ATOL, rtol=RTOL), f"{what} {name}: {mean} vs {ref[name]}"
    assert all(float(ref[name]) > 0 for name in terms)
    for r, res in enumerate(ranks):
        assert res["grads"].keys() == ref["grads"].keys()
        for name, g in ref["grads"].items():
            assert torch.allclose(res["grads"][name], g, atol=ATOL, rtol=RTOL), (
                f"{what} rank {r} grad {name}: max |diff| {_max_diff(res['grads'][name], g):.3g}"
            )
        assert res["buffers"].keys() == ref["buffers"].keys()
        for name, b in ref["buffers"].items():
            assert torch.allclose(res["buffers"][name].double(), b.double(), atol=ATOL, rtol=RTOL), (
                f"{what} rank {r} buffer {name}: max |diff| {_max_diff(res['buffers'][name], b):.3g}"
            )
    # the check is not vacuous: the loss reaches the projector, both objectives' heads, and the backbone
    heads = [n for n in ref["grads"] if "weight" in n and ("projector" in n or "objectives" in n or "branch.1" in n)]
    assert len(heads) >= 8 and all(float(ref["grads"][n].abs().max()) > 0 for n in heads)
    upstream = [g for n, g in ref["grads"].items() if n.startswith(("branch.0", "branch.backbone"))]
    assert any(float(g.abs().max()) > 0 for g in upstream)


@pytest.mark.parametrize("case", list(LEVEL1_CASES))
def test_level1_keys_gathered_are_the_global_batch(ddp_results: list[dict], case: str) -> None:
    ref = run_level1(case, 0, 1)
    sizes = [len(part) for part in LEVEL1_CASES[case]]
    full_sizes = [sum(part) for part in LEVEL1_CASES[case]]
    for r, res in enumerate(ddp_results):
        got = res[("level1", case)]
        assert got["gathered_all"].shape == ref["key_a"].shape
        assert torch.allclose(got["gathered_all"], ref["key_a"], atol=ATOL, rtol=RTOL)
        assert got["offset_all"] == sum(sizes[:r])
        assert torch.allclose(got["gathered_full"], ref["key_a_full"], atol=ATOL, rtol=RTOL)
        assert got["offset_full"] == sum(full_sizes[:r])
        lo = sum(sizes[:r])  # and each rank's own keys are its slice of the single-process keys
        assert torch.allclose(got["key_a"], ref["key_a"][lo : lo + sizes[r]], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("case", list(LEVEL1_CASES))
def test_level1_losses_and_gradients_match_single_process(ddp_results: list[dict], case: str) -> None:
    _check_step([res[("level1", case)] for res in ddp_results], run_level1(case, 0, 1), f"level1/{case}")


@pytest.mark.parametrize("case", list(LEVEL2_CASES))
def test_pretrain_task_losses_and_gradients_match_single_process(ddp_results: list[dict], case: str) -> None:
    ranks = [res[("level2", case)] for res in ddp_results]
    ref = run_level2(case, 0, 1)
    counts = [int(r["num_queries"]) for r in ranks]
    assert sum(counts) == int(ref["num_queries"]) > 0
    if case == "rank1_no_valid":
        assert counts[1] == 0
    else:
        assert min(counts) > 0
    _check_step(ranks, ref, f"level2/{case}")


@pytest.mark.parametrize("case", list(CONTROL_CASES))
def test_control_terms_match_single_process(ddp_results: list[dict], case: str) -> None:
    _check_step([res[("control", case)] for res in ddp_results], run_control(case, 0, 1), f"control/{case}",
                CONTROL_TERMS)  # fmt: skip


@pytest.mark.parametrize("case", list(LEVEL2_CASES))
def test_pretrain_task_with_control_terms_matches_single_process(ddp_results: list[dict], case: str) -> None:
    ranks = [res[("level2_control", case)] for res in ddp_results]
    ref = run_level2(case, 0, 1, control=True)
    assert sum(int(r["num_queries"]) for r in ranks) == int(ref["num_queries"]) > 0
    _check_step(ranks, ref, f"level2_control/{case}", ("tcl", "trl", *CONTROL_TERMS))
