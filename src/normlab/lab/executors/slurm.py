"""`SlurmExecutor`: each run a SLURM job submitted through submitit (``--executor slurm``; the
``slurm`` extra).

The runs go out as one job array (submitit's ``batch``), each job asking for ``cpus`` CPUs,
``gpus`` GPUs and ``time_min`` minutes on ``partition``; submitit keeps its job scripts, logs and
pickled results in ``folder``. Each job runs `normlab.lab.work.compute_run`, as a local worker
does, and the driver polls the jobs, reads each record back and alone writes the results store.
A job that failed raises its error in the driver (the finished runs are kept); cancelling
(Ctrl-C) cancels the jobs not finished yet. ``cluster="local"`` is submitit's local executor:
the jobs run as processes on this machine (all at once), which tests a setup without a cluster.
Progress is reported per finished run.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from normlab.lab.config import RunConfig
from normlab.lab.executors import Compute, Finished, needs
from normlab.lab.runner import ProgressFn
from normlab.lab.work import compute_run

POLL_S = 1.0  # between two looks at the jobs' states
CLUSTERS = ("slurm", "local")


class SlurmExecutor:
    """Every run a SLURM job (an array job per submission)."""

    def __init__(
        self,
        folder: Path,
        *,
        partition: str | None = None,
        time_min: int = 60,
        cpus: int = 1,
        gpus: int = 0,
        cluster: str = "slurm",
        compute: Compute = compute_run,
    ) -> None:
        self._submitit = needs("submitit", "slurm")
        self.compute = compute
        self.folder = Path(folder)
        self.parameters: dict[str, Any] = {
            "name": "normlab-sweep", "timeout_min": time_min, "cpus_per_task": cpus,
            "gpus_per_node": gpus,
        }
        if partition is not None:
            self.parameters["slurm_partition"] = partition
        self.cluster = cluster
        self._pending: list[tuple[Any, RunConfig]] = []

    def submit(
        self, configs: Sequence[RunConfig], progress: ProgressFn | None = None
    ) -> Generator[Finished, None, None]:
        if not configs:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        executor = self._submitit.AutoExecutor(folder=self.folder, cluster=self.cluster)
        executor.update_parameters(**self.parameters)
        try:
            with executor.batch():
                jobs = [executor.submit(self.compute, config) for config in configs]
            self._pending = list(zip(jobs, configs, strict=True))
            while self._pending:
                done = [item for item in self._pending if item[0].done()]
                if not done:
                    time.sleep(POLL_S)
                for item in done:
                    self._pending.remove(item)
                    job, config = item
                    yield config, job.result()
        except BaseException:
            self.cancel()
            raise
        finally:
            self._pending = []

    def cancel(self) -> None:
        for job, _ in self._pending:
            job.cancel(check=False)
        self._pending = []
