"""`RayExecutor`: each run a Ray task (``--executor ray``; the ``ray`` extra).

The driver connects to the cluster named by ``address`` (``"auto"``: the one in ``RAY_ADDRESS``
or the one ``ray start`` made on this machine; ``"HOST:6379"``: a head node;
``"ray://HOST:10001"``: a remote head through Ray Client), or starts a local Ray instance when
none is given (and stops it at the end). When this process already joined Ray (``ray.init``
in a script or a test), the executor uses that connection as it is.

Each task asks for ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs, and runs
`normlab.lab.work.compute_run`, as a local worker does. The task returns the run's record to the
driver, which alone writes the results store. Ray retries a task whose worker or node died; a
run whose driver died is not recorded, and a resume reruns it. Progress is reported per finished
run (a task sends nothing while it trains).
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence
from typing import Any

from normlab.lab.config import RunConfig
from normlab.lab.executors import Compute, Finished, needs
from normlab.lab.runner import ProgressFn
from normlab.lab.work import compute_run

POLL_S = 0.5  # the longest ray.wait blocks, so that Ctrl-C is handled promptly


class RayExecutor:
    """Every run a Ray task with ``num_cpus=cpus_per_run`` and ``num_gpus=gpus_per_run``."""

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_run: float = 1,
        gpus_per_run: float = 0,
        compute: Compute = compute_run,
    ) -> None:
        self._ray = needs("ray", "ray")
        self.compute = compute
        self.address = address
        self.cpus_per_run = cpus_per_run
        self.gpus_per_run = gpus_per_run
        self._pending: dict[Any, RunConfig] = {}
        self._started = False  # this executor's ray.init made the connection

    def _connect(self) -> bool:
        """Join the cluster (or start a local instance); True when this call started Ray."""
        ray = self._ray
        if ray.is_initialized():
            return False
        if self.address is None:  # "local": a new instance, even where RAY_ADDRESS is set
            ray.init(address="local", include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
        return True

    def submit(
        self, configs: Sequence[RunConfig], progress: ProgressFn | None = None
    ) -> Generator[Finished, None, None]:
        if not configs:
            return
        ray = self._ray
        started = self._started = self._connect()
        try:
            task = ray.remote(self.compute).options(
                num_cpus=self.cpus_per_run, num_gpus=self.gpus_per_run
            )
            self._pending = {task.remote(config): config for config in configs}
            while self._pending:
                ready, _ = ray.wait(list(self._pending), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    config = self._pending.pop(ref)
                    yield config, ray.get(ref)
        except BaseException:
            self.cancel()
            raise
        finally:
            self._pending = {}
            if started:
                ray.shutdown()
                self._started = False

    def cancel(self) -> None:
        # A connection this executor made is closed: Ray ends the driver's job and kills its
        # tasks. Cancelling task by task raced replies already in flight and aborted the driver
        # inside Ray ("Tried to complete task that was not pending", Ray 2.60, in a loaded
        # make test), with force=True and force=False alike. A connection the caller made stays
        # open, so its tasks are cancelled one by one (force=False: a running task gets
        # KeyboardInterrupt and ends as cancelled).
        pending, self._pending = list(self._pending), {}
        if self._started:
            self._ray.shutdown()
            self._started = False
            return
        for ref in pending:
            self._ray.cancel(ref, force=False)
