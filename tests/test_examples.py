"""The demo (examples/compare_norms.py) trains with every norm it lists by default."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pytest

pytest.importorskip("sklearn")

DEMO = Path(__file__).parents[1] / "examples" / "compare_norms.py"


def _demo() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compare_norms", DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_default_norm_trains_a_step() -> None:
    demo = _demo()
    x_train, y_train, x_test, y_test = demo.load_data()
    data = (x_train[:96], y_train[:96], x_test[:32], y_test[:32])
    defaults = [n for n in demo.normlab.available() if n not in demo.NOT_FROM_SCRATCH]
    assert "virtual_batch_norm" in defaults and "batch_instance_norm" in defaults
    for spec in [*defaults, "none"]:
        loss, error = demo.train(spec, 32, 1, data)
        assert math.isfinite(loss) and 0.0 <= error <= 1.0, spec
