"""Run a function on N real torch.distributed processes on this machine, and collect the results.

``run_ranks(world_size, fn, *args)`` spawns ``world_size`` processes; each joins a process group
(gloo by default, rendezvous through a file in a temporary directory, so no port can be taken by
someone else in between), calls ``fn(rank, world_size, *args)`` and hands its return value back.
The results come back in rank order.

Every rank is bounded: the collectives time out after ``timeout`` seconds and the parent kills
what is left ``timeout + 30`` seconds after the start, so a failing or hanging rank raises
instead of hanging its caller; a rank's exception is re-raised in the parent with its
traceback. ``fn`` must be importable by name (a module-level function) and its arguments and
results picklable. The claims ledger (C11) and the distributed tests use it.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(
    rank: int,
    world_size: int,
    out_dir: str,
    timeout: float,
    backend: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
) -> None:
    torch.set_num_threads(1)
    path = Path(out_dir) / f"rank{rank}.pt"
    try:
        if backend == "nccl":  # one GPU per rank
            torch.cuda.set_device(rank)
        dist.init_process_group(
            backend,
            init_method=f"file://{Path(out_dir) / 'rendezvous'}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
        try:
            result = fn(rank, world_size, *args)
        finally:
            dist.destroy_process_group()
        torch.save({"ok": True, "result": result}, path)
    except BaseException:  # reported to the parent, which re-raises
        torch.save({"ok": False, "error": traceback.format_exc()}, path)


def run_ranks(
    world_size: int,
    fn: Callable[..., Any],
    *args: Any,
    timeout: float = 60.0,
    backend: str = "gloo",
) -> list[Any]:
    """``[fn(rank, world_size, *args) for rank in range(world_size)]``, each on its own process.

    ``backend="nccl"`` puts rank r on ``cuda:r`` (it needs ``world_size`` GPUs). Raises
    ``RuntimeError`` naming the rank when one fails (with its traceback) or returns nothing.
    """
    with tempfile.TemporaryDirectory() as out_dir:
        context = mp.get_context("spawn")
        procs: list[Any] = []
        env_threads = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"  # inherited at spawn: ranks share the machine
        try:
            procs = [
                context.Process(
                    target=_worker,
                    args=(rank, world_size, out_dir, timeout, backend, fn, args),
                    daemon=True,
                )
                for rank in range(world_size)
            ]
            for p in procs:
                p.start()
            deadline = time.monotonic() + timeout + 30
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
        finally:
            if env_threads is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = env_threads
            for p in procs:
                if p.is_alive():
                    p.kill()
                    p.join()
        results = []
        for rank in range(world_size):
            path = Path(out_dir) / f"rank{rank}.pt"
            if not path.exists():
                raise RuntimeError(f"rank {rank} of {world_size} died or hung (no result)")
            record = torch.load(path, weights_only=False)
            if not record["ok"]:
                raise RuntimeError(f"rank {rank} of {world_size} failed:\n{record['error']}")
            results.append(record["result"])
        return results
