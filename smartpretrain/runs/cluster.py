"""Running under a cluster launcher: what started this process, and how Lightning joins the others.

Training scales out on engines users already have, never a scheduler of ours:

* **torchrun** (``torchrun --nnodes N --node-rank i --nproc-per-node G --rdzv-endpoint HOST:PORT -m
  smartpretrain.pretrain ...``): Lightning's ``TorchElasticEnvironment`` reads the ranks torchrun exported;
* **submitit** through Hydra's launcher (``-m hydra/launcher=slurm`` or ``=local``): each task of the job runs the
  Hydra job; :class:`~smartpretrain.runs.submitit_environment.SubmititEnvironment` hands Lightning the ranks of
  ``submitit.JobEnvironment`` (the same code path for a SLURM job and for the local executor, which is how it is
  tested without a cluster);
* plain ``srun`` inside ``sbatch``: Lightning's own ``SLURMEnvironment``.

:func:`detect_launch` names the launcher and world; :func:`check_launch` refuses, before any work, a Trainer whose
``devices`` x ``num_nodes`` is not the launched world (every rank would otherwise hang at the rendezvous or train
a different split of the data); :func:`cluster_plugins` is what :func:`~smartpretrain.runs.trainer.build_trainer`
passes to the Trainer. :func:`run_stamp` (the ``sp.run_stamp`` resolver of the configs' ``hydra.run.dir``) gives
every rank of one launch the same run folder: processes started by torchrun or srun each compose their own config,
and a time stamp read on each of them may differ by a second.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from omegaconf import DictConfig, OmegaConf

from smartpretrain.runs.guards import RunConfigError

__all__ = [
    "Launch",
    "Launcher",
    "check_launch",
    "cluster_plugins",
    "detect_launch",
    "register_resolvers",
    "run_stamp",
    "submitit_job",
    "unshared_run_folder",
]


class Launcher(str, Enum):
    """What started this process."""

    NONE = "none"  # a plain `python -m ...` (Lightning may still spawn its own DDP processes)
    TORCHRUN = "torchrun"
    SUBMITIT = "submitit"  # a submitit task (SLURM or the local executor)
    SLURM = "slurm"  # srun inside an allocation, without submitit


@dataclass(frozen=True)
class Launch:
    """The world a launcher started: ``world_size`` processes on ``num_nodes`` nodes, ``processes_per_node`` each.

    ``run_id`` is what every process of this launch shares (torchrun's ``--rdzv-id``, the SLURM or submitit job
    id); None when there is none to share (a plain process, or torchrun's default rendezvous id ``none``)."""

    launcher: Launcher
    world_size: int = 1
    num_nodes: int = 1
    processes_per_node: int = 1
    run_id: str | None = None

    @property
    def external(self) -> bool:
        """The launcher, not Lightning, started the training processes."""
        return self.launcher is not Launcher.NONE


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def submitit_job() -> Any | None:
    """The ``submitit.JobEnvironment`` of this process, or None outside a submitit job (or without submitit)."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    try:
        import submitit
    except ImportError:
        return None
    return submitit.JobEnvironment()


def detect_launch() -> Launch:
    """The launcher of this process and the world it started, read from the environment it exported."""
    job = submitit_job()
    if job is not None:
        tasks, nodes = int(job.num_tasks), int(job.num_nodes)
        return Launch(Launcher.SUBMITIT, tasks, nodes, tasks // max(nodes, 1), str(job.job_id))
    if "TORCHELASTIC_RUN_ID" in os.environ and "WORLD_SIZE" in os.environ:
        world = _int_env("WORLD_SIZE", 1)
        local = _int_env("LOCAL_WORLD_SIZE", world)
        run_id = os.environ["TORCHELASTIC_RUN_ID"]
        nodes = max(world // max(local, 1), 1)
        return Launch(Launcher.TORCHRUN, world, nodes, local, None if run_id == "none" else run_id)
    if "SLURM_NTASKS" in os.environ and "SLURM_PROCID" in os.environ:
        world = _int_env("SLURM_NTASKS", 1)
        nodes = _int_env("SLURM_JOB_NUM_NODES", _int_env("SLURM_NNODES", 1))
        if world > 1:  # a single SLURM task is trained like a plain process (Lightning may spawn its devices)
            return Launch(Launcher.SLURM, world, nodes, world // max(nodes, 1), os.environ.get("SLURM_JOB_ID"))
    return Launch(Launcher.NONE)


def check_launch(cfg: DictConfig, launch: Launch | None = None) -> Launch:
    """Under an external launcher, ``trainer.devices`` x ``trainer.num_nodes`` must be its world (one process per
    device), else one line naming both; returns the launch. A plain process is not checked (Lightning spawns
    ``devices`` processes itself)."""
    launch = launch or detect_launch()
    if not launch.external:
        return launch
    trainer = cfg.get("trainer") or {}
    devices, nodes = trainer.get("devices", 1), trainer.get("num_nodes", 1)
    if not isinstance(devices, int) or isinstance(devices, bool) or not isinstance(nodes, int):
        raise RunConfigError(
            f"trainer.devices={devices!r} trainer.num_nodes={nodes!r}: under {launch.launcher.value} give both as "
            f"integers (processes per node and nodes; this launch: {launch.processes_per_node} x {launch.num_nodes})"
        )
    if devices * nodes != launch.world_size or devices != launch.processes_per_node:
        raise RunConfigError(
            f"trainer.devices={devices} trainer.num_nodes={nodes}, but {launch.launcher.value} started "
            f"{launch.world_size} processes on {launch.num_nodes} node(s) ({launch.processes_per_node} per node); "
            f"set trainer.devices={launch.processes_per_node} trainer.num_nodes={launch.num_nodes}"
        )
    return launch


def cluster_plugins(launch: Launch | None = None) -> list[Any]:
    """The Trainer plugins of this launch: a
    :class:`~smartpretrain.runs.submitit_environment.SubmititEnvironment` in a submitit task, else none (Lightning
    detects torchrun and srun itself)."""
    launch = launch or detect_launch()
    if launch.launcher is not Launcher.SUBMITIT:
        return []
    from smartpretrain.runs.submitit_environment import SubmititEnvironment  # Lightning: only where it trains

    return [SubmititEnvironment(submitit_job())]


def unshared_run_folder(argv: list[str]) -> str | None:
    """Why the processes of this launch would not agree on one run folder (torchrun started several with the
    default rendezvous id ``none`` and ``argv`` names no ``hydra.run.dir=``), or None when they would."""
    launch = detect_launch()
    if launch.launcher is not Launcher.TORCHRUN or launch.world_size <= 1 or launch.run_id is not None:
        return None
    if any(a.lstrip("+").startswith("hydra.run.dir=") for a in argv):
        return None
    return (
        f"torchrun started {launch.world_size} processes with --rdzv-id none: give --rdzv-id <id> (the same on "
        "every node) or hydra.run.dir=<shared folder> so that every rank writes to one run folder"
    )


def run_stamp(pattern: str = "%Y-%m-%d_%H-%M-%S") -> str:
    """The run-folder stamp every process of one launch agrees on: the time (``pattern``) for a plain process;
    ``<launcher>-<id>`` for several processes started by torchrun (its ``--rdzv-id``) or srun (the job and step).

    Raises:
        RunConfigError: torchrun started several processes with the default rendezvous id ``none``: they cannot
            agree on a folder (give ``--rdzv-id`` or ``hydra.run.dir=``).
    """
    launch = detect_launch()
    if launch.world_size <= 1 or launch.launcher is Launcher.SUBMITIT:  # submitit: the launcher made the folder
        return datetime.now().strftime(pattern)
    if launch.launcher is Launcher.TORCHRUN:
        if launch.run_id is None:  # the entry points refuse this first, in one line (refuse_unshared_launch)
            raise RunConfigError(str(unshared_run_folder([])))
        return f"torchrun-{_safe(launch.run_id)}"
    step = os.environ.get("SLURM_STEP_ID")
    return f"slurm-{_safe(str(launch.run_id))}" + (f".{_safe(step)}" if step else "")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", text)


def register_resolvers() -> None:
    """``${sp.run_stamp:PATTERN}`` (:func:`run_stamp`) and ``${sp.gpus_per_node:ACCELERATOR,DEVICES}`` (the GPUs a
    launcher reserves per node: ``DEVICES`` for a gpu / cuda accelerator, else none), for the configs."""
    if not OmegaConf.has_resolver("sp.run_stamp"):
        OmegaConf.register_new_resolver("sp.run_stamp", run_stamp)
    if not OmegaConf.has_resolver("sp.gpus_per_node"):
        OmegaConf.register_new_resolver(
            "sp.gpus_per_node", lambda accelerator, devices: devices if str(accelerator) in ("gpu", "cuda") else None
        )
