"""The options of ``normlab sweep`` and ``normlab report`` (argparse only; no lab import).

The defaults are the built-in demo that ``make demo`` runs; ``normlab sweep --help`` shows them.
"""

from __future__ import annotations

import argparse
from typing import Any

# The demo: chosen so that it finishes in a few minutes on 2 CPU cores (see the README).
DEFAULTS: dict[str, Any] = {
    "data": "mnist1d",
    "model": "mlp",
    "norms": "bn,gn,ln,brn,none",
    "batch_sizes": "2,4,8,16,32",
    "seeds": 3,
    "epochs": 4,
    "lr": 0.1,
    "lr_scaling": "linear",
    "base_batch_size": 32,
    "order": "iid",
}


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


def add_sweep_parser(sub: Any) -> argparse.ArgumentParser:
    d = DEFAULTS
    p = sub.add_parser(
        "sweep",
        help="train every norm at every batch size on a data set; write results and a report",
        description="Train one model per (norm, batch size, seed) and report test error against "
        "batch size. With no options: the built-in demo (MNIST-1D, an MLP, "
        f"{d['norms']} at batch sizes {d['batch_sizes']}).",
    )
    p.add_argument("--data", default=d["data"], help="digits, mnist1d, synthetic, "
                   "synthetic-shift, cifar10:PATH, cifar100:PATH or folder:PATH "
                   f"(default {d['data']})")
    p.add_argument("--model", default=d["model"],
                   help=f"resnet, cnn1d or mlp (default {d['model']})")
    p.add_argument("--norms", type=comma_list, default=comma_list(d["norms"]),
                   help=f"registered norm specs and 'none', comma-separated (default {d['norms']})")
    p.add_argument("--batch-sizes", type=comma_ints, default=comma_ints(d["batch_sizes"]),
                   help=f"comma-separated (default {d['batch_sizes']})")
    p.add_argument("--seeds", type=_positive_int, default=d["seeds"],
                   help=f"runs per (norm, batch size), seeds 0..N-1 (default {d['seeds']})")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--epochs", type=_positive_int, default=None,
                        help=f"equal epochs at every batch size (default {d['epochs']})")
    amount.add_argument("--steps", type=_positive_int, default=None,
                        help="equal number of updates at every batch size instead of --epochs")
    p.add_argument("--lr", type=_positive_float, default=d["lr"],
                   help=f"peak learning rate at --base-batch-size (default {d['lr']})")
    p.add_argument("--lr-scaling", choices=("linear", "none"), default=d["lr_scaling"],
                   help="linear: lr x B / base batch size (default); none: the same lr for all")
    p.add_argument("--base-batch-size", type=_positive_int, default=d["base_batch_size"],
                   help=f"the batch size --lr is meant for (default {d['base_batch_size']})")
    p.add_argument("--order", default=d["order"],
                   help="iid, sorted (class-sorted batches) or fewclass:K (default iid)")
    p.add_argument("--width", type=_positive_int, default=None,
                   help="channels / units of the model (default per model)")
    p.add_argument("--max-train", type=_positive_int, default=None,
                   help="use at most this many training examples")
    p.add_argument("--jobs", type=_positive_int, default=None,
                   help="worker processes (default: the CPU cores this process may use)")
    p.add_argument("--out", default=None,
                   help="run directory (default runs/DATA-MODEL-TIMESTAMP)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in --out (default: the latest under runs/), "
                   "keeping its finished runs")
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
