"""Hypothesis profiles shared by the property-based tests.

Importing this module registers the profiles and loads one of them: ``ci`` by default,
or the profile named by the ``HYPOTHESIS_PROFILE`` environment variable (``nightly`` for
the long T3 run).  The ``ci`` profile is derandomized so that failures reproduce on the
2-core CI machine (RELIABILITY.md section 3.1).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "nightly",
    deadline=None,
    max_examples=1500,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=10,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)

settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
