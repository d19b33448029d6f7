"""``normlab sweep``: every (norm, batch size, seed) run of a grid, in parallel, resumable.

Each run is a pure function of its `RunConfig` (see ``runner``). An executor
(`normlab.lab.executors`: worker processes here, Ray tasks or SLURM jobs) computes the runs and
hands each finished record back; this process alone appends it to ``results.jsonl``, one whole
line each, so a sweep killed at any moment resumes (``--resume``, with any executor) with exactly
the unfinished runs. Every run trains with one intra-op thread, so its numbers depend neither on
``--jobs`` nor on the executor.
"""

from __future__ import annotations

import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import normlab
from normlab import errors
from normlab.lab import store
from normlab.lab.config import TRAINING_KEYS, Sweep
from normlab.lab.data import DataSet
from normlab.lab.executors import Executor
from normlab.lab.executors.local import LocalExecutor
from normlab.lab.models import build_model, default_model
from normlab.lab.progress import SweepProgress
from normlab.lab.runner import check_run_length, uses_reference
from normlab.lab.sampling import check_batch_sizes, check_order
from normlab.lab.work import cached_data


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
    executor: Executor | None = None,
    resume: bool = False,
    quiet: bool = False,
    command: str = "",
) -> list[dict[str, Any]]:
    """Run every unfinished run of ``sweep`` into ``out``; returns all finished records.

    The runs go to ``executor`` (default: ``jobs`` local worker processes). On any exception,
    Ctrl-C included, the runs not finished are cancelled and the finished ones stay recorded."""
    data = cached_data(sweep.data, sweep.max_train)
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
    executor = executor if executor is not None else LocalExecutor(jobs)
    runs = executor.submit(todo, progress=bar.report)
    try:
        for config, record in runs:
            store.append_record(out, record)
            finished.append(record)
            bar.finished(record, config.total_steps(n_train))
    except BaseException:
        executor.cancel()
        raise
    finally:
        runs.close()  # the executor releases its workers (or its local Ray instance)
        bar.close()
    return finished
