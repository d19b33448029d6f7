"""Inference time of a ResNet-style model with its BN layers folded, against the unfolded model.

The model is ``resnet_like`` from tests/surgery_models.py (stem + three BasicBlocks, 9 conv-BN
pairs) with random running statistics, in eval mode under ``torch.inference_mode``; the folded
copy is ``normlab.surgery.fold.fold(model)``. Both run on the same fp32 input, NCHW and
channels_last (model and input), alternately after a warm-up (A B, B A, ...; see
bench_classic.py), in several trials with freshly built models; a row reports each side's
median forward time, the median of the per-round ratios folded / unfolded over all trials and
the range of the per-trial medians (the machine may be shared: the range shows the noise).
Target (issue 5): ratio <= 1 (folding never slows inference).

    python benchmarks/bench_fold.py [--trials 5] [--repeats 100] [--threads 2] [--width 16]

Prints a Markdown table and writes it, with the date and machine, to benchmarks/results/fold.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from bench_classic import rounds, start_run, write_results
from normlab.surgery.fold import fold

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from surgery_models import resnet_like  # tests/ is not a package

RESULTS = Path(__file__).parent / "results" / "fold.md"


@torch.no_grad()
def randomized(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.normal_()
            m.bias.normal_()
    return model.eval()


def forward_timer(model: nn.Module, x: Tensor) -> Callable[[], float]:
    def run() -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            model(x)
            return time.perf_counter() - start

    return run


def trial(memory_format: torch.memory_format, args: argparse.Namespace
          ) -> tuple[list[float], list[float]]:
    """A fresh model, its folded copy and input; the per-round times of both."""
    model = randomized(resnet_like(width=args.width)).to(memory_format=memory_format)
    folded = fold(model)
    x = torch.randn(args.batch, 3, args.size, args.size).contiguous(memory_format=memory_format)
    with torch.inference_mode():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    return rounds(forward_timer(folded, x), forward_timer(model, x), args.repeats, args.warmup)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=100, help="rounds per trial")
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=32, help="input height and width")
    parser.add_argument("--width", type=int, default=16, help="channels of the first stage")
    parser.add_argument("--no-save", action="store_true", help="do not write results/fold.md")
    args = parser.parse_args(argv)
    load_before = start_run(args.threads)

    shape = (args.batch, 3, args.size, args.size)
    layouts = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}
    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in layouts}
    trial_ratios: dict[str, list[float]] = {k: [] for k in layouts}
    for _ in range(args.trials):  # fresh models per trial: allocation effects average out
        for layout, memory_format in layouts.items():
            ta, tb = trial(memory_format, args)
            times[layout][0].extend(ta)
            times[layout][1].extend(tb)
            trial_ratios[layout].append(
                statistics.median(x / y for x, y in zip(ta, tb, strict=True))
            )
    lines = [
        "| model | layout | folded ms | unfolded ms | ratio folded / unfolded | trials "
        "(min-max) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for layout, (ta, tb) in times.items():
        ratio = statistics.median(x / y for x, y in zip(ta, tb, strict=True))
        spread = trial_ratios[layout]
        lines.append(
            f"| resnet_like(width={args.width}), 9 conv-BN pairs | {layout} | "
            f"{1e3 * statistics.median(ta):.2f} | {1e3 * statistics.median(tb):.2f} | "
            f"{ratio:.3f} | {min(spread):.2f}-{max(spread):.2f} |"
        )
    print("\n".join(lines), flush=True)

    if not args.no_save:
        setup = (
            f"fp32 input {shape}, eval mode, inference_mode; {args.trials} trials (fresh models) "
            f"of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds; ratio = "
            "median over all rounds of per-round folded / unfolded (< 1: folding is faster); "
            "trials: the range of the per-trial medians"
        )
        write_results(RESULTS, "Fold: inference time of a folded ResNet-style model", setup,
                      lines, load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
