"""NormLSTM (norm="ln", "bn", None) against torch.nn.LSTM, forward + backward (issue 12: <= 3x).

Sequence-first input (T, N, I) fp32, one layer, training mode, the sum of the outputs
backpropagated; rotated rounds in one process (bench_classic.rotated_rounds), median of the
per-round ratios to nn.LSTM.

    python benchmarks/bench_norm_lstm.py [--seq 50] [--batch 32] [--input 64] [--hidden 128]
                                         [--rounds 21] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from bench_classic import rotated_rounds, start_run
from normlab.rnn import NormLSTM


def stepper(model: nn.Module, x: torch.Tensor) -> Callable[[], float]:
    def step() -> float:
        start = time.perf_counter()
        out, _ = model(x)
        out.sum().backward()
        return time.perf_counter() - start

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=50)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--input", type=int, default=64)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    load = start_run(a.threads)
    x = torch.randn(a.seq, a.batch, a.input, requires_grad=True)
    models: dict[str, nn.Module] = {"nn.LSTM": nn.LSTM(a.input, a.hidden)}
    for norm in ("ln", "bn", None):
        models[f"NormLSTM({norm!r})"] = NormLSTM(a.input, a.hidden, norm=norm)
    times = rotated_rounds({k: stepper(m, x) for k, m in models.items()}, a.rounds, warmup=2)
    base = times["nn.LSTM"]
    print(f"T={a.seq} N={a.batch} I={a.input} H={a.hidden}, {a.threads} thread(s), load {load:.2f}")
    print("| layer | median ms | ratio to nn.LSTM (median per round) |\n|---|---|---|")
    for name, ts in times.items():
        ratio = statistics.median(t / b for t, b in zip(ts, base, strict=True))
        print(f"| {name} | {statistics.median(ts) * 1e3:.1f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
