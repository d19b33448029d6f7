"""`LocalExecutor`: the runs in worker processes on this machine (``--executor local``, default).

Workers are started with ``spawn`` (never ``fork``, which can deadlock a process that already ran
OpenMP code) and ignore Ctrl-C: the driver stops them itself. Their progress reports come back
through a plain queue handed over at spawn (not a Manager, whose server process would outlive a
driver that is killed). With one job, or one run, the runs execute in the driver itself.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
from collections.abc import Generator, Sequence
from typing import Any

from normlab.lab.config import RunConfig
from normlab.lab.executors import Compute, Finished
from normlab.lab.runner import Progress, ProgressFn
from normlab.lab.work import compute_run

_progress_queue: Any = None
_compute: Compute = compute_run


def _init_worker(progress_queue: Any, compute: Compute) -> None:
    global _progress_queue, _compute
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    _progress_queue = progress_queue
    _compute = compute


def _send(progress: Progress) -> None:
    if _progress_queue is not None:
        _progress_queue.put(progress)


def _work(config: RunConfig) -> dict[str, Any]:
    return _compute(config, progress=_send)


class LocalExecutor:
    """Up to ``jobs`` runs at a time, each in a worker process with one intra-op thread."""

    def __init__(self, jobs: int = 1, compute: Compute = compute_run) -> None:
        self.jobs = jobs
        self.compute = compute
        self._pool: Any = None

    def submit(
        self, configs: Sequence[RunConfig], progress: ProgressFn | None = None
    ) -> Generator[Finished, None, None]:
        if self.jobs <= 1 or len(configs) <= 1:
            for config in configs:
                yield config, self.compute(config, progress=progress)
            return
        context = multiprocessing.get_context("spawn")
        progress_queue = context.Queue()
        self._pool = pool = context.Pool(
            min(self.jobs, len(configs)), _init_worker, (progress_queue, self.compute)
        )
        try:
            pending = [(pool.apply_async(_work, (config,)), config) for config in configs]
            while pending:
                pending[0][0].wait(0.2)
                _drain(progress_queue, progress)
                for item in [p for p in pending if p[0].ready()]:
                    pending.remove(item)
                    result, config = item
                    yield config, result.get()
            pool.close()
        except BaseException:  # an error, Ctrl-C, or the caller closing the iterator early:
            pool.terminate()  # unfinished runs are dropped (a resume redoes them) at once
            raise
        finally:
            pool.join()
            progress_queue.close()
            self._pool = None

    def cancel(self) -> None:
        if self._pool is not None:
            self._pool.terminate()


def _drain(progress_queue: Any, progress: ProgressFn | None) -> None:
    while True:
        try:
            report = progress_queue.get_nowait()
        except queue.Empty:
            return
        if progress is not None:
            progress(report)
