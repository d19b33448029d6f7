"""``normlab bench``: speed and saved memory of every layer, against torch.nn and references.

Prints a markdown table (and writes it with ``--markdown FILE``); ``--json FILE`` keeps every
raw number (the per-round times), the configuration and the machine. Both files are written
at the end, atomically: an interrupted run (Ctrl-C) prints the rows that finished and writes
no file. See `normlab.bench.run` for what is timed and what each ratio means.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

from normlab import errors, registry
from normlab.bench import cases, report
from normlab.bench.allocator import ALLOCATORS, keep_freed_memory
from normlab.bench.run import Config, run
from normlab.bench.timing import clock
from normlab.cli_lab import _positive_int, comma_list
from normlab.errors import ConfigError, NormlabError

_SHAPE = re.compile(r"^\d+([,x]\d+)+$")


def parse_shape(text: str) -> tuple[int, ...]:
    """``"8,64,8,8"`` or ``"8x64x8x8"`` -> ``(8, 64, 8, 8)``: channels-first (N, C, *S)."""
    compact = text.strip().lower().replace(" ", "")
    if not _SHAPE.match(compact) or ("," in compact and "x" in compact):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a shape: expected the form N,C,H,W or NxCxHxW (positive "
            "integers, channels second, at least N and C), e.g. 8,64,8,8 or 16x64x128")
    shape = tuple(int(t) for t in re.split("[,x]", compact))
    if 0 in shape:
        raise argparse.ArgumentTypeError(
            f"{text!r} has a zero size: every size must be at least 1, e.g. 8,64,8,8")
    return shape


def _count(text: str) -> int:
    """A non-negative integer (warm-up calls)."""
    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} must be a non-negative integer")
    return int(text)


def add_bench_parser(sub: Any) -> argparse.ArgumentParser:
    shapes = " ".join("x".join(map(str, s)) for s in cases.DEFAULT_SHAPES)
    p = sub.add_parser(
        "bench",
        help="speed and saved memory of every layer against torch.nn and references",
        description="Time every registered layer and weight-side method (forward, and forward "
        "+ backward) in alternating rounds, and print its ratios to its torch.nn counterpart, "
        "to native nn.GroupNorm on the same shape, to its eager composition and to the "
        "memory-traffic floor, with the bytes it saves for backward.",
    )
    p.add_argument("--layers", type=comma_list, default=None,
                   help="registry names, aliases or specs, comma-separated, e.g. bn,gn:8,wn "
                   "(default: every layer and weight-side method)")
    p.add_argument("--shapes", type=parse_shape, nargs="+", default=None, metavar="SHAPE",
                   help=f"channels-first shapes N,C,H,W or NxCxHxW (default {shapes})")
    p.add_argument("--dtype", choices=tuple(cases.DTYPES), default="float32")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--rounds", type=_positive_int, default=15,
                   help="alternating timed rounds (default 15)")
    p.add_argument("--warmup", type=_count, default=3,
                   help="untimed calls of every candidate first (default 3)")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="torch CPU threads (default 1: timed in process CPU time, which other "
                   "processes on the machine do not disturb; more: wall time)")
    p.add_argument("--train", action="store_true", help="training mode (default: both modes)")
    p.add_argument("--eval", action="store_true", help="eval mode (default: both modes)")
    p.add_argument("--channels-last", action="store_true",
                   help="also time the channels-last layout: (N, L, C) for rank-3 shapes, "
                   "torch.channels_last memory for rank 4 and 5")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile of every layer (ratio column ÷ torch.compile)")
    p.add_argument("--allocator", choices=ALLOCATORS, default="default",
                   help="'keep': glibc keeps freed memory (no page faults from fresh buffers "
                   "in some rounds and not others; see normlab.bench.allocator); 'default': "
                   "the C library as it is")
    p.add_argument("--json", metavar="FILE", default=None,
                   help="write every raw number, the configuration and the machine")
    p.add_argument("--markdown", metavar="FILE", default=None, help="write the table too")
    return p


def _check_layers(layers: tuple[str, ...]) -> None:
    """Every spec names a registered layer or weight-side method, in a valid form."""
    known = sorted({*registry.known_names(), *registry.known_weight_names()})
    for spec in layers:
        key = spec.strip().lower().replace("-", "_")
        if key in registry.known_weight_names():
            continue
        if key.partition(":")[0] not in registry.known_names():
            raise errors.UnknownNameError(
                f"--layers: {errors.unknown_choice('layer', spec, known)} "
                "'normlab list' shows them all.")
        try:
            registry.factory(spec)
        except NormlabError as err:
            raise ConfigError(f"--layers: {err}") from None


def _check_output(option: str, path: str | None) -> None:
    if path is not None and not Path(path).resolve().parent.is_dir():
        raise ConfigError(f"{option} {path!r}: the directory {str(Path(path).parent)!r} does "
                          "not exist; create it or give a path in an existing directory.")


def config_of(args: argparse.Namespace) -> Config:
    """The run's `Config` from the parsed options; raises `NormlabError` on a bad value."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"--device 'cuda': CUDA is not available here (torch {torch.__version__}, "
            "torch.cuda.is_available() is False). Run with --device cpu, or on a machine "
            "with a GPU and a CUDA build of torch.")
    layers = args.layers or (*registry.available("layer"), *registry.available("weight"))
    _check_layers(layers)
    _check_output("--json", args.json)
    _check_output("--markdown", args.markdown)
    modes = tuple(m for m, on in (("train", args.train), ("eval", args.eval)) if on)
    layouts = ("channels_first", "channels_last") if args.channels_last else ("channels_first",)
    return Config(layers=tuple(layers), shapes=tuple(args.shapes or cases.DEFAULT_SHAPES),
                  layouts=layouts, modes=modes or cases.MODES, dtype=args.dtype,
                  device=args.device, rounds=args.rounds, warmup=args.warmup,
                  threads=args.threads, compile=args.compile)


def _progress(done: int, total: int, record: dict[str, Any]) -> None:
    what = "ok" if record["status"] == "ok" else "skipped"
    print(f"[{done}/{total}] {record['layer']} {record['label']} {record['layout']} "
          f"{record['mode']}: {what}", file=sys.stderr, flush=True)


def bench(args: argparse.Namespace) -> int:
    config = config_of(args)
    if args.allocator == "keep":
        keep_freed_memory()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:  # main() may run in a process that goes on (a test, a notebook)
        return _bench(args, config)
    finally:
        torch.set_num_threads(threads)


def _bench(args: argparse.Namespace, config: Config) -> int:
    torch.manual_seed(0)
    clock_name, now = clock(config.threads, config.device)
    info = {**report.machine(config.device, clock_name), "allocator": args.allocator}
    load_before = report.load_average()
    records: list[dict[str, Any]] = []
    start = time.monotonic()
    try:
        for record in run(config, now, _progress):
            records.append(record)
    except KeyboardInterrupt:
        doc = report.document(dataclasses.asdict(config), info, records, load_before,
                              report.load_average())
        print(report.markdown(doc), end="")
        print(f"normlab bench: interrupted after {len(records)} of {len(config.plan())} "
              "results (above); no file written.", file=sys.stderr)
        return 130
    doc = report.document(dataclasses.asdict(config), info, records, load_before,
                          report.load_average())
    text = report.markdown(doc)
    print(text, end="")
    for path, content in ((args.json, report.to_json(doc)), (args.markdown, text)):
        if path is not None:
            report.write_atomic(path, content)
            print(f"written to {os.fspath(path)}", file=sys.stderr)
    print(f"normlab bench: {len(records)} results in {time.monotonic() - start:.0f} s",
          file=sys.stderr)
    return 0


__all__ = ["add_bench_parser", "bench", "config_of", "parse_shape"]
