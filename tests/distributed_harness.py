"""Run a function on N real torch.distributed processes (gloo on 127.0.0.1) from a test.

``run_ranks(world_size, fn, *args)`` spawns the processes, each calling
``fn(rank, world_size, *args)`` after ``init_process_group("gloo")``, and returns the list of
their return values (rank order). Every rank is bounded: the collectives time out after
``timeout`` seconds and the parent kills what is left after ``timeout + 30`` seconds, so a
failing or hanging rank fails the test instead of hanging the suite; a rank's exception is
re-raised in the parent with its traceback. ``fn`` must be importable (a module-level
function of a test helper module) and its arguments and results picklable.
"""

from __future__ import annotations

import datetime
import os
import socket
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank: int,
    world_size: int,
    port: int,
    timeout: float,
    out_dir: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    backend: str,
) -> None:
    torch.set_num_threads(1)
    path = Path(out_dir) / f"rank{rank}.pt"
    try:
        if backend == "nccl":  # one GPU per rank
            torch.cuda.set_device(rank)
        dist.init_process_group(
            backend,
            init_method=f"tcp://127.0.0.1:{port}",
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
    """``[fn(rank, world_size, *args) for each rank]``, run on ``world_size`` processes.

    ``backend="nccl"`` puts rank r on ``cuda:r`` (it needs ``world_size`` GPUs)."""
    with tempfile.TemporaryDirectory() as out_dir:
        context = mp.get_context("spawn")
        procs: list[Any] = []
        env_threads = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            port = _free_port()
            procs = [
                context.Process(
                    target=_worker,
                    args=(rank, world_size, port, timeout, out_dir, fn, args, backend),
                    daemon=True,
                )
                for rank in range(world_size)
            ]
            for p in procs:
                p.start()
            for p in procs:
                p.join(timeout + 30)
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
