"""Lightning's cluster environment for a submitit task (SLURM or the local executor): one Trainer process per task.

Lightning detects torchrun and plain ``srun`` by itself; a submitit task is handed to it through this plugin
(:func:`~smartpretrain.runs.cluster.cluster_plugins`), so that a SLURM job and a local one run the same code.
"""

from __future__ import annotations

import os
import zlib
from typing import Any

from lightning_fabric.plugins.environments import ClusterEnvironment

from smartpretrain.runs.cluster import submitit_job

__all__ = ["PORT_BASE", "PORT_SPAN", "SubmititEnvironment"]

#: ``MASTER_PORT`` of a submitit job that does not export one: a port in [PORT_BASE, PORT_BASE + PORT_SPAN) drawn
#: from the job id, so that two jobs on one node (a local multirun) rarely meet
PORT_BASE, PORT_SPAN = 20000, 20000


class SubmititEnvironment(ClusterEnvironment):
    """Lightning's view of a submitit job: ranks and node from ``submitit.JobEnvironment`` (SLURM or local).

    The main address is ``MASTER_ADDR`` when exported, else 127.0.0.1 on one node and the job's first host on
    several; the port is ``MASTER_PORT``, else one drawn from the job id (the same on every task of the job)."""

    def __init__(self, job_environment: Any | None = None) -> None:
        super().__init__()
        self._job = job_environment if job_environment is not None else submitit_job()
        if self._job is None:
            raise RuntimeError("SubmititEnvironment outside a submitit job (SUBMITIT_EXECUTOR is not set)")

    @property
    def creates_processes_externally(self) -> bool:
        return True

    @property
    def main_address(self) -> str:
        if os.environ.get("MASTER_ADDR"):
            return os.environ["MASTER_ADDR"]
        return "127.0.0.1" if int(self._job.num_nodes) == 1 else str(self._job.hostnames[0])

    @property
    def main_port(self) -> int:
        if os.environ.get("MASTER_PORT"):
            return int(os.environ["MASTER_PORT"])
        # array jobs are "123_4": every task of one job shares the id, two jobs rarely share the port
        return PORT_BASE + zlib.crc32(str(self._job.job_id).encode()) % PORT_SPAN

    @staticmethod
    def detect() -> bool:
        return submitit_job() is not None

    def world_size(self) -> int:
        return int(self._job.num_tasks)

    def set_world_size(self, size: int) -> None:
        if size != self.world_size():
            raise ValueError(f"the submitit job has {self.world_size()} tasks; Lightning asked for {size}")

    def global_rank(self) -> int:
        return int(self._job.global_rank)

    def set_global_rank(self, rank: int) -> None:
        if rank != self.global_rank():
            raise ValueError(f"this submitit task is rank {self.global_rank()}; Lightning asked for {rank}")

    def local_rank(self) -> int:
        return int(self._job.local_rank)

    def node_rank(self) -> int:
        return int(self._job.node)
