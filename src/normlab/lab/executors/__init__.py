"""Where a sweep's runs execute: worker processes here (`local`), Ray tasks (`ray`) or SLURM jobs
through submitit (`slurm`).

Every executor has the same small interface, `Executor`: ``submit(configs)`` yields each finished
``(config, record)`` in completion order, and ``cancel()`` stops the runs not finished yet. Each
run is the executor's ``compute`` function wherever it executes (`normlab.lab.work.compute_run`
for a sweep's `RunConfig`; the claims ledger passes its own, one claim per item), so its record
does not depend on the executor; the caller (the driver) alone writes the results store. Ray
and submitit are imported only when their executor is built (`needs`), so ``import normlab``
never requires them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator, Sequence
from types import ModuleType
from typing import Any, Protocol

from normlab.errors import ConfigError
from normlab.lab.config import RunConfig
from normlab.lab.runner import ProgressFn

__all__ = ["EXECUTORS", "Compute", "Executor", "Finished", "needs"]

EXECUTORS = ("local", "ray", "slurm")

Finished = tuple[RunConfig, dict[str, Any]]
"""A finished run: its configuration and its record (see `normlab.lab.store`)."""

Compute = Callable[..., dict[str, Any]]
"""``compute(item, progress=None) -> record``: a module-level (picklable) pure function."""


class Executor(Protocol):
    """Runs pure run configurations somewhere and hands their records back to the driver."""

    def submit(
        self, configs: Sequence[RunConfig], progress: ProgressFn | None = None
    ) -> Generator[Finished, None, None]:
        """Start every run of ``configs``; yield each one as it finishes (completion order).

        ``progress`` receives the runs' `normlab.lab.runner.Progress` reports where the executor
        can relay them (the remote ones report a run when it finishes). Closing the iterator
        releases what the executor started (worker processes, a local Ray instance)."""
        ...

    def cancel(self) -> None:
        """Stop every run submitted and not finished yet (a resume reruns them)."""
        ...


_EXTRA_NAMES = {"ray": "Ray", "submitit": "submitit"}


def needs(module: str, extra: str) -> ModuleType:
    """Import the optional ``module`` for ``--executor EXTRA``, or fail naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"--executor {extra} needs {_EXTRA_NAMES.get(module, module)}: "
            f"pip install 'normlab[{extra}]'"
        ) from None
