"""Methods defined outside normlab and registered the way a plugin registers its own.

Each module of this package is written as a method file of ``normlab/norms/`` is (its functional
form, its layer, and an ``ENTRIES`` block at its end); `normlab.norms.discover` finds them here
and `normlab.registry.register` adds them, so every catalogue-driven test runs on them too
(tests/conftest.py imports this package once). It proves that a new method needs its file, its
catalogue case (tests/cases_<method>.py) and its unique tests, and no edit anywhere else.
"""

from __future__ import annotations

import sys

from normlab import norms, registry

ENTRIES = norms.discover(sys.modules[__name__])
for _entry in ENTRIES:
    registry.register(_entry)
