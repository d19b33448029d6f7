"""Memory kept for the backward pass: every layer saves at most 1.5x its input.

Counted with ``torch.autograd.graph.saved_tensors_hooks``: each distinct storage once (a view
of the input saved twice costs nothing more), parameters and statistics included.
"""

from __future__ import annotations

import pytest
import torch

from catalogue import CASE_IDS, CASES, Case, make_input, randomize_, saved_storages

LIMIT = 1.5


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_saved_for_backward_at_most_1_5x_input(case: Case, training: bool) -> None:
    if not case.shapes_of_rank(4):
        pytest.skip("no image-shaped input for this case")
    m = randomize_(case.make()).train()
    x = make_input((8, case.num_features, 16, 16), torch.float32, seed=3)
    m(x)  # a first step, so that layers with a reference or warm-up state are set up
    m.train(training)
    x.requires_grad_()
    used = sum(saved_storages(lambda: m(x)).values())
    budget = x.numel() * x.element_size()
    assert used <= LIMIT * budget, f"saved {used / budget:.2f}x the input's bytes"
