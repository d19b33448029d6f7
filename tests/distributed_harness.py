"""The tests' way to run a function on N real torch.distributed processes (gloo on this machine).

``run_ranks(world_size, fn, *args)`` is normlab's own (``normlab.distributed._ranks``), shared
with the claims ledger; ``fn`` must be a module-level function of an importable test module.
"""

from normlab.distributed._ranks import run_ranks

__all__ = ["run_ranks"]
