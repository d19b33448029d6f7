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
                   help="worker processes (default: the CPU cores this process may use)")
    p.add_argument("--out", default=None,
                   help="run directory (default runs/DATA-MODEL-TIMESTAMP)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out (default: the latest under runs/), "
                   "keeping its finished runs; its options are read from its meta.json (any "
                   "given again must agree)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    return p


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
    from normlab.lab import store
    from normlab.lab.config import DEMO, SWEEP_KEYS, Sweep, resumed_options
    from normlab.lab.report import write_report
    from normlab.lab.sweep import latest_sweep, run_sweep, usable_cores

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
    command = shlex.join(["normlab", *sys.argv[1:]]) if sys.argv else "normlab sweep"
    try:
        records = run_sweep(
            plan, out, jobs=args.jobs or usable_cores(), resume=args.resume,
            quiet=args.quiet, command=command,
        )
    except KeyboardInterrupt:
        done = len(store.read_records(out))
        print(
            f"normlab: interrupted: {done} finished runs are kept in {out}/{store.RESULTS}; "
            f"continue with: normlab sweep --resume --out {out}",
            file=sys.stderr,
        )
        return 130
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
