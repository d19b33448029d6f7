"""The demo (examples/compare_norms.py) trains with every norm it lists by default."""

from __future__ import annotations

import math

import pytest

from catalogue import load_script

pytest.importorskip("sklearn")


def test_every_default_norm_trains_a_step() -> None:
    demo = load_script("examples/compare_norms.py")
    x_train, y_train, x_test, y_test = demo.load_data()
    data = (x_train[:96], y_train[:96], x_test[:32], y_test[:32])
    defaults = [n for n in demo.normlab.available() if n not in demo.NOT_FROM_SCRATCH]
    assert "virtual_batch_norm" in defaults and "batch_instance_norm" in defaults
    for spec in [*defaults, "none"]:
        loss, error = demo.train(spec, 32, 1, data)
        assert math.isfinite(loss) and 0.0 <= error <= 1.0, spec
