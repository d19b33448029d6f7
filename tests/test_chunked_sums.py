"""`normlab.norms._chunked.Sums`, the fused (Σ grad, Σ grad·x) per (n, c) row that every
fast backward of the per-instance and batch families reads its reductions from, against float64
sums written out, over several shapes (one with rows of a single value)."""

from __future__ import annotations

import pytest
import torch

from normlab.norms._chunked import Sums

F64 = torch.float64


@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["fp32", "fp64"])
def test_sums_equal_float64_row_sums(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    for k, c, length in ((1, 3, 5), (4, 3, 5), (2, 6, 9), (7, 2, 1)):
        grad = torch.randn(k, c, length, generator=gen, dtype=dtype)
        x = torch.randn(k, c, length, generator=gen, dtype=dtype)
        sum_grad, sum_grad_x = Sums(k * c, dtype, x.device)(grad, x)
        tol = 1e-12 if dtype == F64 else 1e-5
        torch.testing.assert_close(sum_grad.double(), grad.double().sum(-1), rtol=tol, atol=tol)
        torch.testing.assert_close(sum_grad_x.double(), (grad.double() * x.double()).sum(-1),
                                   rtol=tol, atol=tol)
