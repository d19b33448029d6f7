"""The claims ledger: every claim of the normalization literature put to the test.

`CLAIMS` maps each id (``C01`` ... ``C25``, from ``docs/CLAIMS.md``) to its `Claim`: the
experiment, the decision rule fixed in code before the run, and the words printed with the
result. `run_ledger` runs a selection into a run directory (resumable); ``normlab claims`` is its
command line.
"""

from __future__ import annotations

from normlab.claims import (
    batch_composition,
    batch_instance,
    batch_mates,
    batch_noise,
    batch_size,
    domain,
    exact,
    gan,
    learning_rate,
    propagation,
    recurrent,
    reparam_training,
    weight_decay,
)
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
    learning_rate.C01,
    batch_size.C03, batch_size.C17, batch_size.C22, batch_size.C25,
    batch_composition.C08, batch_composition.C14,
    propagation.C02, propagation.C16, weight_decay.C20,
    reparam_training.C19, reparam_training.C21, reparam_training.C23, gan.C10,
    recurrent.C06, recurrent.C18, domain.C12, domain.C13, batch_noise.C24,
    batch_mates.C11, batch_instance.C09,
)

CLAIMS: dict[str, Claim] = {c.id: c for c in sorted(_ALL, key=lambda c: c.id)}
"""Every claim of the ledger by id, in id order."""
