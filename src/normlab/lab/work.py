"""One run computed in whatever process runs it: the driver, a worker process, a Ray task or a
SLURM job. Every executor calls `compute_run`, so a run's numbers do not depend on where it ran.

A run reads its data where it runs: the built-in sets (``digits``, ``mnist1d``, ``synthetic``)
are generated there, and a ``PATH`` spec must name a folder that process sees (on a cluster, a
shared filesystem mounted at the same path on every node). The data set is loaded once per
process and kept for the runs that follow.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from normlab.lab.config import RunConfig
from normlab.lab.data import DataSet, load_data
from normlab.lab.runner import ProgressFn, train_run


@lru_cache(maxsize=4)
def cached_data(spec: str, max_train: int | None) -> DataSet:
    """``load_data(spec, max_train=max_train)``, once per process."""
    return load_data(spec, max_train=max_train)


def compute_run(config: RunConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
    """The record of one run (`normlab.lab.runner.train_run` on the run's own data)."""
    return train_run(config, cached_data(config.data, config.max_train), progress=progress)
