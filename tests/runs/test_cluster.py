"""What started a process (torchrun, submitit, srun, nothing), the checks of the Trainer against it, the run-folder
stamp every rank agrees on, Lightning's submitit environment, and a conversion's sweepable shard option — from the
environment variables the launchers export (no launcher needed; the launched runs are in test_multinode.py and
test_submitit.py)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from smartpretrain.runs.cluster import (
    Launch,
    Launcher,
    check_launch,
    cluster_plugins,
    detect_launch,
    register_resolvers,
    run_stamp,
    unshared_run_folder,
)
from smartpretrain.runs.conversion import shard_spec
from smartpretrain.runs.guards import RunConfigError
from smartpretrain.runs.submitit_environment import PORT_BASE, PORT_SPAN, SubmititEnvironment

LAUNCH_VARIABLES = (
    "SUBMITIT_EXECUTOR", "TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID",
    "SLURM_JOB_NUM_NODES", "SLURM_NNODES", "SLURM_JOB_ID", "SLURM_STEP_ID", "MASTER_ADDR", "MASTER_PORT",
)  # fmt: skip


@pytest.fixture(autouse=True)
def plain_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _torchrun(monkeypatch: pytest.MonkeyPatch, world: int, local: int, run_id: str) -> None:
    for name, value in (("TORCHELASTIC_RUN_ID", run_id), ("WORLD_SIZE", world), ("LOCAL_WORLD_SIZE", local)):
        monkeypatch.setenv(name, str(value))


def _submitit_local(monkeypatch: pytest.MonkeyPatch, tasks: int, rank: int, job_id: str = "4242") -> None:
    values = {"SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_NTASKS": tasks, "SUBMITIT_LOCAL_GLOBALID": rank,
              "SUBMITIT_LOCAL_LOCALID": rank, "SUBMITIT_LOCAL_NODEID": 0, "SUBMITIT_LOCAL_JOB_NUM_NODES": 1,
              "SUBMITIT_LOCAL_JOB_ID": job_id}  # fmt: skip
    for name, value in values.items():
        monkeypatch.setenv(name, str(value))


def _trainer(devices: object = 1, num_nodes: object = 1) -> object:
    return OmegaConf.create({"trainer": {"devices": devices, "num_nodes": num_nodes}})


def test_a_plain_process_is_no_launch_and_is_not_checked() -> None:
    launch = detect_launch()
    assert launch == Launch(Launcher.NONE) and not launch.external
    assert check_launch(_trainer(devices=2)) == launch  # Lightning spawns its own processes
    assert cluster_plugins(launch) == []


def test_torchrun_world_is_read_and_the_trainer_must_match_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _torchrun(monkeypatch, world=8, local=4, run_id="abc")
    launch = detect_launch()
    assert launch == Launch(Launcher.TORCHRUN, world_size=8, num_nodes=2, processes_per_node=4, run_id="abc")
    assert check_launch(_trainer(devices=4, num_nodes=2)) == launch
    assert cluster_plugins(launch) == []  # Lightning's TorchElasticEnvironment
    with pytest.raises(RunConfigError, match=re.escape(
        "trainer.devices=8 trainer.num_nodes=1, but torchrun started 8 processes on 2 node(s) (4 per node); "
        "set trainer.devices=4 trainer.num_nodes=2"
    )):  # fmt: skip
        check_launch(_trainer(devices=8, num_nodes=1))
    with pytest.raises(RunConfigError, match="give both as integers"):
        check_launch(_trainer(devices="auto", num_nodes=2))


def test_srun_without_submitit_is_a_slurm_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in (("SLURM_NTASKS", "16"), ("SLURM_PROCID", "3"), ("SLURM_JOB_NUM_NODES", "2"),
                        ("SLURM_JOB_ID", "77")):  # fmt: skip
        monkeypatch.setenv(name, value)
    assert detect_launch() == Launch(Launcher.SLURM, 16, 2, 8, "77")
    monkeypatch.setenv("SLURM_NTASKS", "1")  # one task: a plain process (Lightning may spawn its devices)
    assert detect_launch().launcher is Launcher.NONE


def test_run_stamp_is_the_time_alone_and_the_launch_id_for_several_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}", run_stamp())
    _torchrun(monkeypatch, world=1, local=1, run_id="none")
    assert re.fullmatch(r"\d{8}", run_stamp("%Y%m%d"))  # one process: nothing to agree on
    _torchrun(monkeypatch, world=2, local=1, run_id="job/42")
    assert run_stamp() == "torchrun-job_42"
    _torchrun(monkeypatch, world=2, local=1, run_id="none")
    with pytest.raises(RunConfigError, match="--rdzv-id none: give --rdzv-id"):
        run_stamp()
    assert "--rdzv-id none" in str(unshared_run_folder(["data=av1"]))
    assert unshared_run_folder(["hydra.run.dir=/shared/run1"]) is None
    for name in ("TORCHELASTIC_RUN_ID", "WORLD_SIZE", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name)
    for name, value in (("SLURM_NTASKS", "8"), ("SLURM_PROCID", "0"), ("SLURM_JOB_ID", "77"), ("SLURM_STEP_ID", "1")):
        monkeypatch.setenv(name, value)
    assert run_stamp() == "slurm-77.1"


def test_submitit_tasks_are_ranks_of_one_lightning_world(monkeypatch: pytest.MonkeyPatch) -> None:
    _submitit_local(monkeypatch, tasks=2, rank=1)
    launch = detect_launch()
    assert launch == Launch(Launcher.SUBMITIT, 2, 1, 2, "4242")
    check_launch(_trainer(devices=2))
    with pytest.raises(RunConfigError, match=re.escape("set trainer.devices=2 trainer.num_nodes=1")):
        check_launch(_trainer(devices=1))
    (env,) = cluster_plugins(launch)
    assert isinstance(env, SubmititEnvironment) and env.creates_processes_externally
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (2, 1, 1, 0)
    assert env.main_address == "127.0.0.1"
    port = env.main_port
    assert PORT_BASE <= port < PORT_BASE + PORT_SPAN
    _submitit_local(monkeypatch, tasks=2, rank=0)  # the other task of the job meets it there
    assert SubmititEnvironment().main_port == port
    monkeypatch.setenv("MASTER_PORT", "29511")
    assert SubmititEnvironment().main_port == 29511
    env.set_world_size(2)
    with pytest.raises(ValueError, match="has 2 tasks"):
        env.set_world_size(4)


def test_a_multi_node_submitit_job_meets_on_its_first_host() -> None:
    job = SimpleNamespace(num_nodes=2, num_tasks=16, global_rank=9, local_rank=1, node=1, job_id="123_4",
                          hostnames=["gpu-017", "gpu-018"])  # fmt: skip
    env = SubmititEnvironment(job)
    assert env.main_address == "gpu-017"
    assert (env.world_size(), env.global_rank(), env.local_rank(), env.node_rank()) == (16, 9, 1, 1)


def test_gpus_per_node_resolver_reserves_gpus_for_gpu_trainers_only() -> None:
    register_resolvers()
    cfg = OmegaConf.create({"gpu": "${sp.gpus_per_node:gpu,8}", "cpu": "${sp.gpus_per_node:cpu,2}"})
    assert cfg.gpu == 8 and cfg.cpu is None


@pytest.mark.parametrize(
    ("shard", "num_shards", "expected"),
    [("0/1", None, "0/1"), (3, 16, "3/16"), ("3/16", 16, "3/16")],
)
def test_shard_spec_takes_i_slash_n_or_a_sweepable_integer(shard: object, num_shards: object, expected: str) -> None:
    assert shard_spec(shard, num_shards) == expected


@pytest.mark.parametrize(
    ("shard", "num_shards", "message"),
    [
        (3, None, "shard=3: give num_shards=<n> too (or shard=3/<n>)"),
        ("3/8", 16, "shard='3/8' with num_shards=16: give shard as an integer 0..15"),
        (1, 0, "num_shards must be a positive integer, got 0"),
        (1, True, "num_shards must be a positive integer, got True"),
    ],
)
def test_shard_spec_refuses_what_does_not_add_up(shard: object, num_shards: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        shard_spec(shard, num_shards)
