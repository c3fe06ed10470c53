"""Hydra's submitit launcher (``-m hydra/launcher=local|slurm``): the job code path a SLURM cluster runs, tested on
this machine through submitit's local executor, and the sbatch job that ``hydra/launcher=slurm`` submits.

* A conversion multirun, one job per shard (``shard='range(2)' num_shards=2``), jobs running at once, fills one
  cache folder with the very records (same index, same record checksums) of a one-process conversion.
* ``./train_ssl.sh -m hydra/launcher=local trainer.devices=2`` trains DDP over the job's two submitit tasks
  (:class:`~smartpretrain.runs.submitit_environment.SubmititEnvironment`): losses and gradients equal one process
  over the same global batch.
* ``hydra/launcher=slurm`` asks sbatch for what the Trainer will use (nodes, tasks and GPUs per node), and a
  conversion for one task per shard with its workers' CPUs: checked on the script handed to a stand-in ``sbatch``
  (it records the script and refuses, so nothing waits on a cluster).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from smartpretrain.data.synthetic import generate_av1
from tests.conftest import REPO

TIMEOUT_S = 600
RTOL = 1e-4


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHON": sys.executable, **extra}


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT_S)


def _convert(raw: Path, cache: Path, *extra: str) -> list[str]:
    """The conversion command; a multirun's ``-m`` (first in ``extra``) goes before the overrides, as Hydra wants."""
    multirun = ["-m"] if extra[:1] == ("-m",) else []
    extra = extra[len(multirun) :]
    return [sys.executable, "-m", "smartpretrain.convert", *multirun, "data=av1", f"data.raw_root={raw}",
            "data.split=train", f"data.converter.map_root={raw / 'map_files'}", f"cache_root={cache}",
            "scenes_per_part=2", "progress=false", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def av1_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw-submitit")
    generate_av1(raw, "train", 8, seed=3, with_map=True)
    return raw


def test_conversion_multirun_fills_one_cache_folder_as_one_process_would(av1_raw: Path, tmp_path: Path) -> None:
    proc = _run(_convert(av1_raw, tmp_path / "one"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run(_convert(av1_raw, tmp_path / "sharded", "-m", "hydra/launcher=local", "shard=range(2)",
                         "num_shards=2"), tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]

    one, sharded = tmp_path / "one" / "av1" / "train", tmp_path / "sharded" / "av1" / "train"
    manifest = json.loads((sharded / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_scenes"] == 8 and manifest["num_parts"] == 4
    assert pq.read_table(sharded / "index.parquet").equals(pq.read_table(one / "index.parquet"))  # + record crc32s
    # two jobs, each converting its own shard's units only
    (sweep,) = (tmp_path / "sharded" / ".runs" / "convert" / "av1_train").glob("multirun_*")
    logs = sorted(p.read_text() for p in sweep.glob("job*/*.log"))
    assert len(logs) == 2
    assert "shard 0/2 has 2 units" in logs[0] + logs[1] and "shard 1/2 has 2 units" in logs[0] + logs[1]


def test_an_integer_shard_without_num_shards_is_refused_in_one_line(av1_raw: Path, tmp_path: Path) -> None:
    proc = _run(_convert(av1_raw, tmp_path / "cache", "shard=1"), tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "smartpretrain.convert: error: shard=1: give num_shards=<n> too (or shard=1/<n>)"
    )
    assert not (tmp_path / "cache" / "av1").exists()


PRETRAIN = [
    "experiment=smartpretrain_cpu_small", "data=av1", "max_epochs=1", "num_workers=0", "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=0", "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
    "+callbacks.grad_probe._target_=tests.runs.grad_probe.GradientRecorder",
]  # fmt: skip


def test_train_ssl_on_the_local_launcher_is_ddp_over_the_jobs_tasks(av1_cache: Path, tmp_path: Path) -> None:
    single = tmp_path / "single"
    proc = _run([sys.executable, "-m", "smartpretrain.pretrain", *PRETRAIN, f"cache_root={av1_cache}", "batch_size=2",
                 f"hydra.run.dir={single}", f"+callbacks.grad_probe.out={single / 'probe'}"], REPO)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = tmp_path / "sweep"
    proc = _run(["bash", str(REPO / "train_ssl.sh"), "-m", "hydra/launcher=local", *PRETRAIN, f"cache_root={av1_cache}",
                 "batch_size=1", "trainer.devices=2", "trainer.strategy=ddp", f"hydra.sweep.dir={sweep}",
                 f"+callbacks.grad_probe.out={sweep / 'probe'}"], tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "job0" / "final_metrics.json").exists() and (sweep / "job0" / "checkpoints" / "last.ckpt").exists()

    one = torch.load(single / "probe" / "rank0.pt", weights_only=True)
    ranks = [torch.load(sweep / "probe" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [int(r["world_size"]) for r in ranks] == [2, 2]
    torch.testing.assert_close((ranks[0]["losses"] + ranks[1]["losses"]) / 2, one["losses"], rtol=RTOL, atol=1e-6)
    for step in range(2):
        assert torch.equal(ranks[0]["gradients"][step], ranks[1]["gradients"][step])
        diff = (ranks[0]["gradients"][step] - one["gradients"][step]).norm()
        assert float(diff) <= RTOL * float(one["gradients"][step].norm()), f"step {step}"


@pytest.fixture
def fake_slurm(tmp_path: Path) -> tuple[Path, Path]:
    """A ``srun`` that submitit can find and an ``sbatch`` that records the job script and refuses it."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch.sh"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        '#!/bin/sh\nfor a in "$@"; do last="$a"; done\ncp "$last" "$SBATCH_RECORD"\n'
        'echo "sbatch: error: no cluster here" >&2\nexit 1\n'
    )
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    return bin_dir, record


def _sbatch_lines(fake: tuple[Path, Path], cmd: list[str], cwd: Path) -> set[str]:
    bin_dir, record = fake
    proc = _run(cmd, cwd, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", SBATCH_RECORD=str(record))
    assert "no cluster here" in proc.stderr, proc.stderr[-3000:]
    return {line.strip() for line in record.read_text().splitlines()}


def test_slurm_launcher_asks_for_the_trainers_nodes_tasks_and_gpus(
    fake_slurm: tuple[Path, Path], av1_cache: Path, tmp_path: Path
) -> None:
    cmd = ["bash", str(REPO / "train_ssl.sh"), "-m", "hydra/launcher=slurm", "trainer=gpu", "trainer.devices=8",
           "trainer.num_nodes=4", "hydra.launcher.partition=gpu", "num_workers=6", "data=av1",
           f"cache_root={av1_cache}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    lines = _sbatch_lines(fake_slurm, cmd, tmp_path)
    for wanted in ("--nodes=4", "--ntasks-per-node=8", "--gpus-per-node=8", "--cpus-per-task=6", "--partition=gpu",
                   "--job-name=pretrain", "export SUBMITIT_EXECUTOR=slurm"):  # fmt: skip
        assert f"#SBATCH {wanted}" in lines or wanted in lines, (wanted, sorted(lines))
    assert any(line.startswith("srun ") and "submitit.core._submit" in line for line in lines)


def test_slurm_conversion_is_one_cpu_task_per_shard(
    fake_slurm: tuple[Path, Path], av1_raw: Path, tmp_path: Path
) -> None:
    sweep = ["-m", "hydra/launcher=slurm", "shard=range(4)", "num_shards=4", "num_workers=16"]
    lines = _sbatch_lines(fake_slurm, _convert(av1_raw, tmp_path / "cache", *sweep), tmp_path)
    # one array job of 4 tasks, all running at once (%4), into one cache folder
    for wanted in ("--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=16", "--array=0-3%4"):
        assert f"#SBATCH {wanted}" in lines, (wanted, sorted(lines))
    assert not any("gpus" in line for line in lines)
