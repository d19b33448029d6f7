"""What ``normlab sweep`` and ``normlab report`` do (their options live in ``normlab.cli_lab``)."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime
from pathlib import Path

from normlab.cli_lab import DEFAULTS
from normlab.lab import store
from normlab.lab.report import write_report
from normlab.lab.sweep import Sweep, latest_sweep, run_sweep, usable_cores

RUNS_ROOT = Path("runs")


def sweep(args: argparse.Namespace) -> int:
    epochs = args.epochs if args.epochs or args.steps else DEFAULTS["epochs"]
    plan = Sweep(
        data=args.data, norms=args.norms, batch_sizes=args.batch_sizes, seeds=args.seeds,
        model=args.model, epochs=epochs, steps=args.steps, lr=args.lr,
        lr_scaling=args.lr_scaling, base_batch_size=args.base_batch_size, order=args.order,
        width=args.width, max_train=args.max_train,
    )
    if args.out is not None:
        out = Path(args.out)
    elif args.resume:
        out = latest_sweep(RUNS_ROOT)
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        name = f"{args.data.split(':')[0]}-{args.model}-{stamp}"
        out = RUNS_ROOT / name
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
            f"continue with: normlab sweep --resume --out {out} (and the same options)",
            file=sys.stderr,
        )
        return 130
    diverged = sum(r["status"] != "ok" for r in records)
    print(f"{len(records)} runs in {out}/results.jsonl ({diverged} diverged)")
    if not args.no_report:
        print(f"report: {write_report(out)}")
    return 0


def report(args: argparse.Namespace) -> int:
    print(f"report: {write_report(Path(args.run_dir))}")
    return 0
