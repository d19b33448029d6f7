"""The claims ledger: every claim of the normalization literature put to the test.

`CLAIMS` maps each id (``C01`` ... ``C25``, from ``docs/CLAIMS.md``) to its `Claim`: the
experiment, the decision rule fixed in code before the run, and the words printed with the
result. `run_ledger` runs a selection into a run directory (resumable); ``normlab claims`` is its
command line.
"""

from __future__ import annotations

from normlab.claims import batch_instance, batch_mates, batch_noise, domain, exact, recurrent
from normlab.claims.ledger import (
    CONTRADICTED,
    NOT_REPRODUCED,
    NOT_RUN,
    REPRODUCED,
    SIZES,
    VERDICTS,
    Claim,
)  # fmt: skip

__all__ = [
    "CLAIMS", "CONTRADICTED", "NOT_REPRODUCED", "NOT_RUN", "REPRODUCED", "SIZES", "VERDICTS",
    "Claim",
]  # fmt: skip

_ALL: tuple[Claim, ...] = (
    exact.C04, exact.C05, exact.C07, exact.C15,
    recurrent.C06, recurrent.C18, domain.C12, domain.C13, batch_noise.C24,
    batch_mates.C11, batch_instance.C09,
)

CLAIMS: dict[str, Claim] = {c.id: c for c in sorted(_ALL, key=lambda c: c.id)}
"""Every claim of the ledger by id, in id order."""
