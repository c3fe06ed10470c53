"""Multi-node DDP through torchrun: two "nodes" of one process each on 127.0.0.1 (gloo), launched as a cluster
would (``torchrun --nnodes 2 --node-rank {0,1} --nproc-per-node 1 --rdzv-endpoint 127.0.0.1:PORT --rdzv-id ID -m
smartpretrain.{pretrain,finetune} trainer.num_nodes=2``), against one process over the same data.

* Pre-training normalises its losses by global counts (:mod:`smartpretrain.ssl.distributed`), so two nodes of
  batch 1 equal one process of batch 2 step for step: the mean of the ranks' losses is the single-process loss and
  the synchronised gradient is its gradient (the sampler gives rank r the scenes ``perm[r::2]``, one process walks
  ``perm`` in order: step k holds the same two scenes either way).
* Fine-tuning uses the backbone's own loss, a mean over the rank's agents (as the official QCNet and Forecast-MAE
  DDP trainings do), so the DDP gradient is the mean of the ranks' gradients. Checked exactly: with the parameters
  held at their initial values (:class:`~tests.runs.grad_probe.GradientRecorder` ``hold_parameters``,
  ``weight_decay=0``), step k of the two nodes equals the mean of single-process steps 2k and 2k+1 (batch 1), and
  each rank's loss is that scene's loss.
* Both nodes agree on one run folder through the torchrun run id (``sp.run_stamp``); a torchrun world that cannot
  agree on one, or a Trainer that does not match the launched world, is refused with one line before any work.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO

COMMON = [
    "data=av1", "max_epochs=1", "num_workers=0", "trainer.limit_val_batches=0",
    "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
    "+callbacks.grad_probe._target_=tests.runs.grad_probe.GradientRecorder",
]  # fmt: skip
PRETRAIN = ["experiment=smartpretrain_cpu_small", *COMMON]
FINETUNE = ["model=qcnet_small", "weight_decay=0", "+callbacks.grad_probe.hold_parameters=true", *COMMON]
TIMEOUT_S = 600
#: float32 sums in another order: relative tolerance of gradients and losses
RTOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _single(module: str, overrides: list[str], run_dir: Path) -> None:
    cmd = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={run_dir}",
           f"+callbacks.grad_probe.out={run_dir / 'probe'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _torchrun_cmd(module: str, node_rank: int, port: int, run_id: str | None, nnodes: int = 2) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--node-rank", str(node_rank),
           "--nproc-per-node", "1", "--rdzv-endpoint", f"127.0.0.1:{port}"]  # fmt: skip
    return [*cmd, *(["--rdzv-id", run_id] if run_id else []), "-m", module]


def _launch_nodes(module: str, overrides: list[str], cwd: Path, run_id: str | None = "job42") -> list[tuple[int, str]]:
    """Both nodes' torchrun (node 1 first: it waits at the rendezvous); their exit status and output."""
    port = _free_port()
    procs = [
        subprocess.Popen([*_torchrun_cmd(module, rank, port, run_id), *overrides], cwd=cwd, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (1, 0)
    ]  # fmt: skip
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
            results.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return results


def _two_nodes(module: str, overrides: list[str], outputs: Path) -> None:
    for code, out in _launch_nodes(module, [*overrides, f"+callbacks.grad_probe.out={outputs / 'probe'}"], outputs):
        assert code == 0, out[-4000:]


def _record(folder: Path, rank: int = 0) -> dict[str, torch.Tensor]:
    return torch.load(folder / f"rank{rank}.pt", weights_only=True)


def _one_process_and_two_nodes(
    module: str, overrides: list[str], single: list[str], nodes: list[str], tmp_path: Path
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """``module`` run once in one process (``overrides + single``) and once on two torchrun nodes of one process
    each (``overrides + nodes``, DDP); the single process's record and the two ranks'."""
    _single(module, [*overrides, *single], tmp_path / "single")
    (tmp_path / "nodes").mkdir()
    _two_nodes(module, [*overrides, *nodes, "trainer.num_nodes=2", "trainer.strategy=ddp"], tmp_path / "nodes")
    return _record(tmp_path / "single" / "probe"), [_record(tmp_path / "nodes" / "probe", r) for r in (0, 1)]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool((a - b).norm() <= RTOL * max(float(b.norm()), 1e-12))


def test_two_node_pretraining_equals_one_process_over_the_global_batch(av1_cache: Path, tmp_path: Path) -> None:
    common = [*PRETRAIN, f"cache_root={av1_cache}", "trainer.limit_train_batches=2"]
    single, ranks = _one_process_and_two_nodes("smartpretrain.pretrain", common, ["batch_size=2"], ["batch_size=1"],
                                               tmp_path)  # fmt: skip

    # one run folder, named by the torchrun run id, whichever node composed its config first
    (run_dir,) = (tmp_path / "nodes" / "outputs" / "pretrain").iterdir()
    assert run_dir.name == "av1_torchrun-job42"
    assert (run_dir / "final_metrics.json").exists() and (run_dir / "checkpoints" / "last.ckpt").exists()

    assert [int(r["world_size"]) for r in ranks] == [2, 2] and int(single["world_size"]) == 1
    assert single["losses"].numel() == 2 and ranks[0]["losses"].numel() == 2
    torch.testing.assert_close((ranks[0]["losses"] + ranks[1]["losses"]) / 2, single["losses"], rtol=RTOL, atol=1e-6)
    for step in range(2):
        assert torch.equal(ranks[0]["gradients"][step], ranks[1]["gradients"][step])  # synchronised
        assert _close(ranks[0]["gradients"][step], single["gradients"][step]), f"step {step}"
        assert float(single["gradients"][step].norm()) > 0


def test_two_node_finetuning_gradient_is_the_mean_of_the_ranks_gradients(av1_cache: Path, tmp_path: Path) -> None:
    common = [*FINETUNE, f"cache_root={av1_cache}", "batch_size=1"]
    single, ranks = _one_process_and_two_nodes("smartpretrain.finetune", common, ["trainer.limit_train_batches=4"],
                                               ["trainer.limit_train_batches=2"], tmp_path)  # fmt: skip
    torch.testing.assert_close(ranks[0]["parameters"], single["parameters"])  # held at the same initial values
    for step in range(2):
        for r in (0, 1):  # rank r holds scene perm[2 * step + r], as the single process's step 2 * step + r
            torch.testing.assert_close(ranks[r]["losses"][step], single["losses"][2 * step + r], rtol=RTOL, atol=1e-6)
        mean = (single["gradients"][2 * step] + single["gradients"][2 * step + 1]) / 2
        assert _close(ranks[0]["gradients"][step], mean), f"step {step}"
        assert not _close(ranks[0]["gradients"][step], single["gradients"][2 * step])  # two scenes, not one


@pytest.mark.parametrize(
    ("extra", "run_id", "expected"),
    [
        (["trainer.num_nodes=1"], "job7", "trainer.devices=1 trainer.num_nodes=1, but torchrun started 2 processes"),
        (["trainer.num_nodes=2"], None, "with --rdzv-id none: give --rdzv-id"),
    ],
    ids=["trainer-does-not-match-the-world", "no-shared-run-id"],
)
def test_a_torchrun_world_the_run_cannot_serve_is_refused_in_one_line(
    av1_cache: Path, tmp_path: Path, extra: list[str], run_id: str | None, expected: str
) -> None:
    overrides = [*FINETUNE, f"cache_root={av1_cache}", "trainer.strategy=ddp", *extra,
                 f"+callbacks.grad_probe.out={tmp_path / 'probe'}"]  # fmt: skip
    # two nodes: each must refuse on its own, before the rendezvous of the process group
    for code, out in _launch_nodes("smartpretrain.finetune", overrides, tmp_path, run_id):
        assert code != 0
        lines = [line for line in out.splitlines() if "smartpretrain.finetune: error:" in line]
        assert len(lines) == 1 and expected in lines[0], out[-3000:]
        assert f'File "{REPO / "smartpretrain"}' not in out  # no traceback of ours (torchrun prints its own report)
    assert not (tmp_path / "probe").exists()
