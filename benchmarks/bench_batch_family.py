"""Forward + backward time of the batch-statistics family against native kernels and against a
straightforward eager composition of tensor operations, plus the memory saved for backward.

Each row runs in one process on the same fp32 (32, 64, 32, 32) data in training mode (FrozenBN:
its only mode), with a random grad_output; a step computes the gradients of the input and of the
trainable parameters. Sides run alternately after a warm-up (see bench_classic.py); a ratio is
the median of the per-round ratios. Targets (issue 3): Ghost BN, Batch Renorm and Frozen BN
<= 1.15x their native BatchNorm counterpart; the others <= 2.0x native GroupNorm(32, 64); every
method >= 3x faster than its eager composition; saved bytes <= 1.5x the input.

    python benchmarks/bench_batch_family.py [--repeats 40] [--eager-repeats 12] [--threads 2]

Prints a Markdown table and writes it, with the date and machine, to
benchmarks/results/batch_family.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import normlab
from bench_classic import NCHW, Side, measure, start_run, write_results
from bench_classic import Case as Pair
from eager.batch_instance_norm import eager_batch_instance_norm
from eager.batch_renorm import eager_batch_renorm
from eager.evo_norm import eager_evo_norm_b0, eager_evo_norm_s0
from eager.frozen_batch_norm import eager_frozen_batch_norm
from eager.ghost_batch_norm import eager_ghost_batch_norm
from eager.switchable_norm import eager_switchable_norm
from eager.virtual_batch_norm import eager_virtual_batch_norm

RESULTS = Path(__file__).parent / "results" / "batch_family.md"
C = NCHW[1]
Eager = Callable[[nn.Module, Tensor], Tensor]


@dataclass
class Row:
    layer: str
    make: Callable[[], nn.Module]  # the normlab layer, ready for training-mode steps
    native_name: str
    make_native: Callable[[], nn.Module]
    eager: Eager
    target: float  # the bound on the native ratio


def frozen_native() -> nn.Module:
    bn = nn.BatchNorm2d(C).eval()
    bn.requires_grad_(False)  # FrozenBatchNorm's affine is frozen too: same work on both sides
    return bn


def with_reference(m: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    m.set_reference(torch.randn(NCHW, generator=g))
    return m


def rows() -> list[Row]:
    gn = ("nn.GroupNorm(32, 64)", lambda: nn.GroupNorm(32, C))
    bn = ("nn.BatchNorm2d(64)", lambda: nn.BatchNorm2d(C))
    return [
        Row("GhostBatchNorm(64, ghost_batch_size=8)",
            lambda: normlab.GhostBatchNorm(C, ghost_batch_size=8), *bn,
            eager_ghost_batch_norm, 1.15),
        Row("BatchRenorm(64), clipping active",
            lambda: normlab.BatchRenorm(C, warmup_steps=0, rmax_ramp_end=0, dmax_ramp_end=0),
            *bn, eager_batch_renorm, 1.15),
        Row("FrozenBatchNorm(64)", lambda: normlab.FrozenBatchNorm(C),
            "nn.BatchNorm2d(64).eval(), affine frozen", frozen_native,
            eager_frozen_batch_norm, 1.15),
        Row("SwitchableNorm(64)", lambda: normlab.SwitchableNorm(C), *gn,
            eager_switchable_norm, 2.0),
        Row("BatchInstanceNorm(64)", lambda: normlab.BatchInstanceNorm(C), *gn,
            eager_batch_instance_norm, 2.0),
        Row("VirtualBatchNorm(64), fixed reference",
            lambda: with_reference(normlab.VirtualBatchNorm(C)), *gn,
            eager_virtual_batch_norm, 2.0),
        Row("EvoNormB0(64)", lambda: normlab.EvoNormB0(C), *gn, eager_evo_norm_b0, 2.0),
        Row("EvoNormS0(64)", lambda: normlab.EvoNormS0(C), *gn, eager_evo_norm_s0, 2.0),
    ]


def saved_ratio(module: nn.Module) -> float:
    """Bytes saved for backward by one training step (distinct storages) / the input's bytes."""
    x = torch.randn(NCHW, requires_grad=True)
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return sum(storages.values()) / (x.numel() * x.element_size())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--eager-repeats", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="run the rows whose name contains this")
    parser.add_argument("--no-save", action="store_true", help="do not write the results file")
    args = parser.parse_args(argv)
    load_before = start_run(args.threads)

    lines = [
        "| layer | native | normlab ms | native ms | ratio | target | eager ms | eager / normlab "
        "| saved / input |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    for row in rows():
        if args.only not in row.layer:
            continue
        layer = row.make()
        native = Pair(row.layer, row.native_name, "NCHW", Side(layer, NCHW),
                      Side(row.make_native(), NCHW))
        ta, tn, ratio = measure(native, args.repeats, args.warmup)
        eager = Pair(row.layer, "eager", "NCHW", Side(layer, NCHW),
                     Side(layer, NCHW, row.eager))
        _, te, eager_ratio = measure(eager, args.eager_repeats, 1)
        line = (f"| {row.layer} | {row.native_name} | {1e3 * ta:.2f} | {1e3 * tn:.2f} | "
                f"{ratio:.2f} | {row.target:.2f} | {1e3 * te:.2f} | {1 / eager_ratio:.1f} | "
                f"{saved_ratio(row.make().train()):.2f} |")
        lines.append(line)
        print(line, flush=True)

    setup = (
        f"fp32 NCHW {NCHW}, forward + backward, random grad_output; medians of "
        f"{args.repeats} (native) / {args.eager_repeats} (eager) interleaved rounds; "
        f"ratio = normlab / native (< 1: normlab faster); eager / normlab = speed-up over the "
        f"eager composition in benchmarks/eager/; saved = bytes kept for backward / input bytes"
    )
    if not args.no_save and not args.only:
        write_results(
            RESULTS, "Batch-statistics family: normlab vs native kernels and eager compositions",
            setup, lines, load_before,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
