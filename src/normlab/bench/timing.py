"""Timing primitives of ``normlab bench``: clocks, samples, alternating rounds, saved bytes.

A *step* is one call to time (a forward, or a forward + backward). A *sample* runs a step
``calls`` times and returns seconds per call; ``calls`` is picked once, after warm-up, so that
one sample lasts at least ``target_s`` (short steps are below the clock's useful resolution).
`rotated_rounds` takes one sample of every candidate per round, in an order rotated by one and
reversed every other round, with the garbage collector off, so that drift in clock speed or
machine load hits every candidate alike; a ratio is then the median over rounds of the
per-round ratio (`ratio`), not a ratio of medians.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Step = Callable[[], object]
Sample = Callable[[], float]


def clock(threads: int, device: str) -> tuple[str, Callable[[], int]]:
    """(name, nanosecond clock): this process's CPU time with one CPU thread (other processes
    on the machine do not count against it), otherwise wall time; CUDA steps synchronize."""
    if device == "cuda":
        def wall_synced() -> int:
            torch.cuda.synchronize()
            return time.perf_counter_ns()

        return "perf_counter, CUDA synchronized", wall_synced
    if threads == 1:
        return "process_time", time.process_time_ns
    return "perf_counter", time.perf_counter_ns


def sampler(step: Step, now: Callable[[], int], target_s: float, most: int = 1000) -> Sample:
    """A sample of ``step``: seconds per call over ``calls`` calls. ``calls`` doubles from 1
    (run now, after the caller's warm-up) until that many calls last ``target_s / 2``, then
    scales to about ``target_s`` (one slow first call does not set it)."""
    calls, elapsed = 1, 0.0
    while calls < most:
        start = now()
        for _ in range(calls):
            step()
        elapsed = max(now() - start, 1) * 1e-9
        if elapsed >= target_s / 2:
            break
        calls *= 2
    calls = max(1, min(most, round(calls * target_s / elapsed)))

    def sample() -> float:
        begin = now()
        for _ in range(calls):
            step()
        return (now() - begin) * 1e-9 / calls

    sample.calls = calls  # type: ignore[attr-defined]  # reported in the JSON
    return sample


def rotated_rounds(samples: dict[str, Sample], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of every candidate, one entry per round (see the module docstring)."""
    names = list(samples)
    times: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            k = r % len(names)
            order = names[k:] + names[:k]
            if r % 2:
                order.reverse()
            for name in order:
                times[name].append(samples[name]())
    finally:
        gc.enable()
    return times


def ratio(times: Sequence[float], base: Sequence[float], scale: float = 1.0) -> float:
    """Median over rounds of ``times[r] / (scale * base[r])``."""
    return statistics.median(t / (scale * b) for t, b in zip(times, base, strict=True))


def spread(times: Sequence[float]) -> tuple[float, float]:
    """(first quartile, third quartile) of the per-round times; both the value for one round."""
    if len(times) < 2:
        return times[0], times[0]
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return q1, q3


def saved_bytes(run: Step) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``run()`` runs (the
    input counts when it is saved; a storage saved twice counts once)."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


__all__ = ["Sample", "Step", "clock", "ratio", "rotated_rounds", "sampler", "saved_bytes",
           "spread"]
