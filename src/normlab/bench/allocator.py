"""``normlab bench --allocator keep``: glibc's allocator keeps the memory a process frees.

By default glibc serves a large block with ``mmap`` (above 128 KiB, a threshold it raises as
such blocks are freed) and returns freed memory at the top of the heap to the OS above a trim
threshold. A step that allocates fresh full-size buffers then pays a page fault for every 4 KiB
it touches in some rounds and not in others, depending on what ran before it: measured on the
project's 2-core CPU (1 thread, process time, (32, 64, 32, 32) fp32, forward + backward),
``nn.GroupNorm(32, 64)`` took 2.5-6.0 ms and normlab's Bounded BN 3.9-11.2 ms over 15 rounds
of one process; with both thresholds at 1 GiB, 2.4-3.0 ms and 3.7-4.1 ms.

``keep`` sets both thresholds (``mallopt``) before anything is timed, so every candidate's
buffers come from memory the process already touched, as under a caching allocator (jemalloc,
tcmalloc). ``default`` leaves the C library as it is: what a plain process pays.
"""

from __future__ import annotations

import ctypes
import ctypes.util

from normlab.errors import ConfigError

ALLOCATORS = ("default", "keep")
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BYTES = 1 << 30


def keep_freed_memory() -> None:
    """No mmap for blocks below 1 GiB and no trimming below 1 GiB free: glibc only."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError, TypeError):
        raise ConfigError(
            "--allocator keep: needs glibc's mallopt (Linux); this C library has none. Run "
            "with --allocator default, or preload a caching allocator (jemalloc, tcmalloc)."
        ) from None
    if not (mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) and mallopt(M_TRIM_THRESHOLD, KEEP_BYTES)):
        raise ConfigError(
            f"--allocator keep: glibc refused mallopt thresholds of {KEEP_BYTES} bytes. Run "
            "with --allocator default."
        )
