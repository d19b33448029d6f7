"""``normlab sweep`` and ``normlab report``: their options and what they do.

The options are the fields of `normlab.lab.config.Sweep`, and their defaults the built-in demo
that ``make demo`` runs (`normlab.lab.config.DEMO`); ``normlab sweep --help`` shows them.
Importing this module imports nothing of the lab: the parser reads the schema (standard library
only) when it is built, and the rest of the lab (which needs the ``lab`` extra) is imported when
a command runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from normlab.errors import NormlabError

RUNS_ROOT = Path("runs")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def _nonnegative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be an integer >= 0")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive finite number")
    return value


def comma_list(text: str) -> tuple[str, ...]:
    """``"bn, gn,ln"`` -> ``("bn", "gn", "ln")``; duplicates dropped, order kept."""
    items = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not items:
        raise argparse.ArgumentTypeError(f"{text!r} names nothing; give a comma-separated list")
    return items


def comma_ints(text: str) -> tuple[int, ...]:
    """``"2,4,8"`` -> ``(2, 4, 8)``; each a positive integer."""
    return tuple(_positive_int(t) for t in comma_list(text))


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value


def _listed(items: tuple[object, ...]) -> str:
    return ",".join(str(i) for i in items)


class _Typed(argparse.Action):
    """Store the value and note the option in ``namespace.typed``: ``--resume`` checks the
    options typed again against the sweep's own, and must tell them from the defaults."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.typed = {*getattr(namespace, "typed", ()), self.dest}


def add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    from normlab.lab.config import DEMO as d

    norms, batch_sizes = _listed(d.norms), _listed(d.batch_sizes)
    p = sub.add_parser(
        "sweep",
        help="train every norm at every batch size on a data set; write results and a report",
        description="Train one model per (norm, batch size, seed) and report test error against "
        "batch size. With no options: the built-in demo (MNIST-1D, an MLP, "
        f"{norms} at batch sizes {batch_sizes}).",
    )
    p.add_argument("--data", default=d.data, action=_Typed, help="digits, mnist1d, synthetic, "
                   "synthetic-shift, cifar10:PATH, cifar100:PATH or folder:PATH "
                   f"(default {d.data})")
    p.add_argument("--model", default=d.model, action=_Typed,
                   help=f"resnet, cnn1d or mlp (default {d.model})")
    p.add_argument("--norms", type=comma_list, default=comma_list(norms), action=_Typed,
                   help=f"registered norm specs and 'none', comma-separated (default {norms})")
    p.add_argument("--batch-sizes", type=comma_ints, default=comma_ints(batch_sizes),
                   action=_Typed,
                   help=f"comma-separated (default {batch_sizes})")
    p.add_argument("--seeds", type=_positive_int, default=d.seeds, action=_Typed,
                   help=f"runs per (norm, batch size), seeds 0..N-1 (default {d.seeds})")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--epochs", type=_positive_int, default=None, action=_Typed,
                        help=f"equal epochs at every batch size (default {d.epochs})")
    amount.add_argument("--steps", type=_positive_int, default=None, action=_Typed,
                        help="equal number of updates at every batch size instead of --epochs")
    p.add_argument("--lr", type=_positive_float, default=d.lr, action=_Typed,
                   help=f"peak learning rate at --base-batch-size (default {d.lr})")
    p.add_argument("--lr-scaling", choices=("linear", "none"), default=d.lr_scaling,
                   action=_Typed,
                   help="linear: lr x B / base batch size (default); none: the same lr for all")
    p.add_argument("--base-batch-size", type=_positive_int, default=d.base_batch_size,
                   action=_Typed,
                   help=f"the batch size --lr is meant for (default {d.base_batch_size})")
    p.add_argument("--order", default=d.order, action=_Typed,
                   help="iid, sorted (class-sorted batches) or fewclass:K (default iid)")
    p.add_argument("--width", type=_positive_int, default=None, action=_Typed,
                   help="channels / units of the model (default per model)")
    p.add_argument("--max-train", type=_positive_int, default=None, action=_Typed,
                   help="use at most this many training examples")
    p.add_argument("--jobs", type=_positive_int, default=None,
                   help="worker processes of --executor local (default: the CPU cores this "
                   "process may use)")
    p.add_argument("--out", default=None,
                   help="run directory (default runs/DATA-MODEL-TIMESTAMP)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out (default: the latest under runs/), "
                   "keeping its finished runs; its options are read from its meta.json (any "
                   "given again must agree)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_executor_options(p)
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    return p


# Each option of a remote executor, with the --executor it belongs to (the defaults are None, so
# that an option given to another executor is told from one left out).
_EXECUTOR_OF = {
    "jobs": "local", "ray_address": "ray", "cpus_per_run": "ray", "gpus_per_run": "ray",
    "slurm_partition": "slurm", "slurm_time": "slurm", "slurm_cpus": "slurm",
    "slurm_gpus": "slurm", "slurm_folder": "slurm", "slurm_cluster": "slurm",
}


def add_executor_options(p: argparse.ArgumentParser) -> None:
    """``--executor`` and the options of each executor (for any command that runs runs)."""
    g = p.add_argument_group(
        "where the runs execute",
        "Every executor computes the same numbers; this process alone writes results.jsonl, so "
        "a sweep may be resumed with another executor. A run reads its data where it executes: "
        "the built-in sets are generated there; a PATH must be one that every node sees.",
    )
    g.add_argument("--executor", choices=("local", "ray", "slurm"), default="local",
                   help="local: worker processes here (default); ray: one Ray task per run "
                   "(pip install 'normlab[ray]'); slurm: one SLURM job per run through submitit "
                   "(pip install 'normlab[slurm]')")
    g.add_argument("--ray-address", default=None,
                   help="the Ray cluster to join: auto (RAY_ADDRESS, or the one `ray start` "
                   "made here), HOST:PORT or ray://HOST:10001 (default: start a local Ray "
                   "instance for this sweep)")
    g.add_argument("--cpus-per-run", type=_positive_float, default=None,
                   help="CPUs each Ray task asks for (default 1)")
    g.add_argument("--gpus-per-run", type=_nonnegative_float, default=None,
                   help="GPUs each Ray task asks for, fractions allowed (default 0)")
    g.add_argument("--slurm-partition", default=None, help="SLURM partition (default: the "
                   "cluster's default)")
    g.add_argument("--slurm-time", type=_positive_int, default=None,
                   help="time limit of each job in minutes (default 60)")
    g.add_argument("--slurm-cpus", type=_positive_int, default=None,
                   help="CPUs per job (default 1)")
    g.add_argument("--slurm-gpus", type=_nonnegative_int, default=None,
                   help="GPUs per job (default 0)")
    g.add_argument("--slurm-folder", default=None,
                   help="submitit's job scripts, logs and results (default OUT/slurm)")
    g.add_argument("--slurm-cluster", choices=("slurm", "local"), default=None,
                   help="local: run the jobs as processes here through submitit's local "
                   "executor, to try a setup without a cluster (default slurm)")


def make_executor(args: argparse.Namespace, out: Path, compute: Any = None) -> Any:
    """The executor that ``args`` ask for; an option of another executor is an error (exit 2),
    and so is a missing extra (named with its install command). ``compute``: what each item
    runs (default: a sweep's run, `normlab.lab.work.compute_run`)."""
    misplaced = [
        "--" + key.replace("_", "-") for key, owner in _EXECUTOR_OF.items()
        if getattr(args, key, None) is not None and owner != args.executor
    ]
    if misplaced:
        owners = sorted({_EXECUTOR_OF[m[2:].replace("-", "_")] for m in misplaced})
        raise NormlabError(
            f"{', '.join(misplaced)} {'is' if len(misplaced) == 1 else 'are'} for --executor "
            f"{' / '.join(owners)}, not --executor {args.executor}. Drop "
            f"{'it' if len(misplaced) == 1 else 'them'}, or pass --executor {owners[0]}."
        )
    from normlab.lab.sweep import usable_cores
    from normlab.lab.work import compute_run

    compute = compute or compute_run
    if args.executor == "ray":
        from normlab.lab.executors.ray import RayExecutor

        return RayExecutor(
            args.ray_address,
            cpus_per_run=1 if args.cpus_per_run is None else args.cpus_per_run,
            gpus_per_run=args.gpus_per_run or 0, compute=compute,
        )
    if args.executor == "slurm":
        from normlab.lab.executors.slurm import SlurmExecutor

        return SlurmExecutor(
            Path(args.slurm_folder) if args.slurm_folder else out / "slurm",
            partition=args.slurm_partition, time_min=args.slurm_time or 60,
            cpus=args.slurm_cpus or 1, gpus=args.slurm_gpus or 0,
            cluster=args.slurm_cluster or "slurm", compute=compute,
        )
    from normlab.lab.executors.local import LocalExecutor

    return LocalExecutor(args.jobs or usable_cores(), compute=compute)


def interrupted(command: str, out: Path, args: argparse.Namespace, what: str) -> int:
    """After Ctrl-C: say what ``out`` keeps and the command that continues; exit status 130."""
    from normlab.lab import store

    done = len(store.read_records(out))
    again = shlex.join(["normlab", command, "--resume", "--out", str(out), *executor_args(args)])
    print(f"normlab: interrupted: {done} {what} are kept in {out}/{store.RESULTS}; continue "
          f"with: {again}", file=sys.stderr)
    return 130


def executor_args(args: argparse.Namespace) -> list[str]:
    """The executor options of ``args`` as typed (for the resume command; --jobs left out)."""
    if args.executor == "local":
        return []
    given = [
        ("--" + key.replace("_", "-"), str(getattr(args, key))) for key in _EXECUTOR_OF
        if key != "jobs" and getattr(args, key, None) is not None
    ]
    return ["--executor", args.executor, *(part for pair in given for part in pair)]


def add_report_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="plots, tables and report.md for a (possibly partial) sweep",
        description="Write report.md, error_vs_batch_size.png, training_curves.png, summary.csv "
        "and summary.md into RUN_DIR from its results.jsonl.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by normlab sweep")
    return p


# -- what the commands do --------------------------------------------------------------------------


def _lab(command: str) -> None:
    """Fail with the fix when the ``lab`` extra is missing (checked before any work starts)."""
    try:
        import normlab.lab.report
        import normlab.lab.sweep  # noqa: F401
    except ImportError as err:
        raise NormlabError(
            f"normlab {command} needs the lab extra ({err.name} is missing): "
            "pip install 'normlab[lab]'"
        ) from None


def sweep(args: argparse.Namespace) -> int:
    """``normlab sweep``: the options become a `Sweep`, field by field."""
    _lab("sweep")
    from normlab.lab.config import DEMO, SWEEP_KEYS, Sweep, resumed_options
    from normlab.lab.report import write_report
    from normlab.lab.sweep import latest_sweep, run_sweep

    typed = getattr(args, "typed", set())
    if args.resume:
        out = Path(args.out) if args.out is not None else latest_sweep(RUNS_ROOT)
        given = {k: getattr(args, k) for k in SWEEP_KEYS if k in typed}
        options = resumed_options(_sweep_meta(out), given, str(out))
    else:
        options = {f.name: getattr(args, f.name) for f in fields(Sweep)}
        if args.epochs is None and args.steps is None:
            options["epochs"] = DEMO.epochs
        if args.out is not None:
            out = Path(args.out)
        else:
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            name = f"{options['data'].split(':')[0]}-{options['model']}-{stamp}"
            out = RUNS_ROOT / name
    plan = Sweep(**options)
    executor = make_executor(args, out)
    command = shlex.join(["normlab", *sys.argv[1:]]) if sys.argv else "normlab sweep"
    try:
        records = run_sweep(
            plan, out, executor=executor, resume=args.resume,
            quiet=args.quiet, command=command,
        )
    except KeyboardInterrupt:
        return interrupted("sweep", out, args, "finished runs")
    diverged = sum(r["status"] != "ok" for r in records)
    print(f"{len(records)} runs in {out}/results.jsonl ({diverged} diverged)")
    if not args.no_report:
        print(f"report: {write_report(out)}")
    return 0


def _sweep_meta(out: Path) -> dict[str, Any]:
    """``meta.json`` of the sweep to resume, or the error that says there is none."""
    from normlab.lab import store

    try:
        meta = store.read_meta(out) if out.is_dir() else {}
    except (OSError, ValueError) as err:
        raise NormlabError(
            f"--resume {out}: its {store.META} is unreadable ({type(err).__name__}), so its "
            "options are unknown. Start a new sweep with another --out."
        ) from None
    if not isinstance(meta, dict) or not meta:
        problem = "does not exist" if not out.exists() else f"holds no sweep (no {store.META})"
        raise NormlabError(
            f"--resume {out}: {problem}, so there is nothing to resume. Start a sweep there "
            "without --resume, or pass the --out of the sweep to continue."
        )
    return meta


def report(args: argparse.Namespace) -> int:
    """``normlab report RUN_DIR``."""
    _lab("report")
    from normlab.lab.report import write_report

    print(f"report: {write_report(Path(args.run_dir))}")
    return 0
