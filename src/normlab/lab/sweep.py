"""``normlab sweep``: every (norm, batch size, seed) run of a grid, in parallel, resumable.

Each run is a pure function of its `RunConfig` (see ``runner``). Finished runs are appended to
``results.jsonl`` by this process only, one whole line each, so a sweep killed at any moment
resumes (``--resume``) with exactly the unfinished runs. Runs go to worker processes started with
``spawn`` (never ``fork``, which can deadlock a process that already ran OpenMP code); each worker
trains with one intra-op thread, so a run's numbers do not depend on ``--jobs``.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import queue
import signal
import tempfile
from collections.abc import Sequence
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

import normlab
from normlab import errors
from normlab.lab import store
from normlab.lab.config import TRAINING_KEYS, RunConfig, Sweep
from normlab.lab.data import DataSet, load_data
from normlab.lab.models import build_model, default_model
from normlab.lab.progress import SweepProgress
from normlab.lab.runner import Progress, check_run_length, train_run, uses_reference
from normlab.lab.sampling import check_batch_sizes, check_order


@lru_cache(maxsize=4)
def _cached_data(spec: str, max_train: int | None) -> DataSet:
    return load_data(spec, max_train=max_train)


_progress_queue: Any = None


def _ignore_interrupt() -> None:
    """Ctrl-C is the main process's to handle: it stops the workers itself."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _init_worker(progress_queue: Any) -> None:
    global _progress_queue
    _ignore_interrupt()
    _progress_queue = progress_queue


def _send(progress: Progress) -> None:
    if _progress_queue is not None:
        _progress_queue.put(progress)


def _work(config: RunConfig) -> dict[str, Any]:
    return train_run(config, _cached_data(config.data, config.max_train), progress=_send)


def check_norms(sweep: Sweep, model: str, data: DataSet) -> None:
    """Each norm resolved (did-you-mean on a typo) and tried once on two examples of the data."""
    x = data.x_train[:2]
    for spec in sweep.norms:
        net = build_model(model, spec, data.input_shape, data.num_classes, width=sweep.width)
        try:
            with torch.no_grad():
                if uses_reference(net):
                    with normlab.reference_pass(net):
                        net(x)
                net(x)
        except errors.NormlabError as err:
            raise errors.ConfigError(
                f"--norms {spec}: cannot be used in the {model} model on {data.name}: "
                f"{' '.join(str(err).split())} Drop it from --norms or pick another --model."
            ) from None


def prepare_out(out: Path, meta: dict[str, Any], *, resume: bool) -> list[dict[str, Any]]:
    """Create or reopen the run directory; return the records of runs already finished."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise errors.ConfigError(
            f"--out {str(out)!r} is not a writable directory ({err.strerror or err}). Choose "
            "another --out, or fix its permissions."
        ) from None
    previous = store.read_meta(out)
    finished = store.read_records(out)
    if resume and not previous:
        raise errors.ConfigError(
            f"--resume {str(out)!r}: no sweep there to resume (no {store.META}). Start one "
            "without --resume, or pass the --out of the sweep to continue."
        )
    if previous or finished:
        if not resume:
            raise errors.ConfigError(
                f"--out {str(out)!r} already holds a sweep ({len(finished)} finished runs). Pass "
                "--resume to continue it (finished runs are kept), or choose another --out."
            )
        changed = [k for k in TRAINING_KEYS if k in previous and previous[k] != meta[k]]
        if changed:
            diff = ", ".join(f"{k}={previous[k]!r} (now {meta[k]!r})" for k in changed)
            raise errors.ConfigError(
                f"--resume {str(out)!r}: that sweep was run with {diff}. Resume with the same "
                "settings, or start a new sweep with another --out."
            )
        finished = store.repair(out)
        # the sweep's own command and start, not the resume's (which may give no options)
        kept = {k: previous[k] for k in ("command", "created") if previous.get(k)}
        meta = {**meta, **kept}
    store.write_meta(out, meta)
    return finished


def latest_sweep(root: Path) -> Path:
    """The most recently started sweep under ``root`` (for ``--resume`` without ``--out``)."""
    candidates = sorted(root.glob("*/" + store.META), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise errors.ConfigError(
            f"--resume: no sweep to resume under {str(root)!r}. Pass --out PATH of the sweep to "
            "continue, or start one without --resume."
        )
    return candidates[-1].parent


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), not all the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _meta(sweep: Sweep, model: str, total_runs: int, command: str) -> dict[str, Any]:
    return {
        **sweep.training_settings(), "model": model, "norms": list(sweep.norms),
        "batch_sizes": sorted(sweep.batch_sizes), "seeds": sweep.seeds,
        "protocol": sweep.protocol(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.system()} {platform.machine()}, {usable_cores()} CPU cores",
        "torch": torch.__version__, "normlab": normlab.__version__, "command": command,
        "total_runs": total_runs,
    }


def run_sweep(
    sweep: Sweep,
    out: Path,
    *,
    jobs: int = 1,
    resume: bool = False,
    quiet: bool = False,
    command: str = "",
) -> list[dict[str, Any]]:
    """Run every unfinished run of ``sweep`` into ``out``; returns all finished records."""
    data = _cached_data(sweep.data, sweep.max_train)
    model = sweep.model or default_model(data.input_shape)
    check_batch_sizes(sweep.batch_sizes, len(data.x_train), data.name)
    check_order(sweep.order, data.y_train, sweep.batch_sizes)
    check_norms(sweep, model, data)
    configs = sweep.configs(model)
    for config in configs:
        check_run_length(config, len(data.x_train))
    finished = prepare_out(out, _meta(sweep, model, len(configs), command), resume=resume)
    done = {r["id"] for r in finished}
    todo = [c for c in configs if c.run_id not in done]
    n_train = len(data.x_train)
    bar = SweepProgress(
        len(configs), sum(c.total_steps(n_train) for c in todo),
        done_runs=len(configs) - len(todo), quiet=quiet,
    )
    try:
        if jobs <= 1 or len(todo) <= 1:
            for config in todo:
                record = train_run(config, data, progress=bar.report)
                _finish(out, record, config, n_train, bar, finished)
        else:
            _run_parallel(out, todo, jobs, n_train, bar, finished)
    finally:
        bar.close()
    return finished


def _finish(
    out: Path,
    record: dict[str, Any],
    config: RunConfig,
    n_train: int,
    bar: SweepProgress,
    finished: list[dict[str, Any]],
) -> None:
    store.append_record(out, record)
    finished.append(record)
    bar.finished(record, config.total_steps(n_train))


def _run_parallel(
    out: Path,
    todo: Sequence[RunConfig],
    jobs: int,
    n_train: int,
    bar: SweepProgress,
    finished: list[dict[str, Any]],
) -> None:
    context = multiprocessing.get_context("spawn")
    # A plain queue handed over at spawn, not a Manager: a manager's server process would
    # outlive a main process that is killed.
    progress_queue = context.Queue()
    pool = context.Pool(min(jobs, len(todo)), _init_worker, (progress_queue,))
    try:
        pending = [(pool.apply_async(_work, (config,)), config) for config in todo]
        while pending:
            pending[0][0].wait(0.2)
            _drain(progress_queue, bar)
            for item in [p for p in pending if p[0].ready()]:
                pending.remove(item)
                result, config = item
                _finish(out, result.get(), config, n_train, bar, finished)
        pool.close()
    except BaseException:
        # Unfinished runs are dropped (a resume redoes them): stop the workers now rather
        # than wait for their current runs.
        pool.terminate()
        raise
    finally:
        pool.join()
        progress_queue.close()


def _drain(progress_queue: Any, bar: SweepProgress) -> None:
    while True:
        try:
            bar.report(progress_queue.get_nowait())
        except queue.Empty:
            return
