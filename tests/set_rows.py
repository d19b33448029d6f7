"""float64 references in the "one row per normalization set" form, shared by the property and
numerics tests: reshape (N, C, *S) so that each row holds the values that share one statistic,
compute two-pass moments per row, reshape back. Independent of normlab."""

from __future__ import annotations

import torch

F64 = torch.float64


def to_rows(t: torch.Tensor, kind: str, groups: int) -> torch.Tensor:
    """(N, C, *S) -> (number of sets, set size): one row per normalization set."""
    n, c = t.shape[:2]
    if kind == "bn":
        return t.transpose(0, 1).reshape(c, -1)
    if kind == "ln":
        return t.reshape(n, -1)
    if kind == "in":
        return t.reshape(n * c, -1)
    if kind == "gn":
        return t.reshape(n * groups, -1)
    return t.movedim(1, -1).reshape(-1, c)  # ln_pp, rms: one set per (sample, position)


def from_rows(r: torch.Tensor, kind: str, shape: tuple[int, ...]) -> torch.Tensor:
    n, c, *spatial = shape
    if kind == "bn":
        return r.reshape(c, n, *spatial).transpose(0, 1)
    if kind in ("ln", "in", "gn"):
        return r.reshape(shape)
    return r.reshape(n, *spatial, c).movedim(-1, 1)


def row_moments(r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-pass mean and biased variance of each row."""
    mean = r.sum(1, keepdim=True) / r.shape[1]
    var = ((r - mean) ** 2).sum(1, keepdim=True) / r.shape[1]
    return mean, var


def ref_forward(x: torch.Tensor, kind: str, groups: int, eps: float) -> torch.Tensor:
    """float64 normalized output, no affine (RMSNorm: no centering)."""
    r = to_rows(x.to(F64), kind, groups)
    if kind == "rms":
        out = r / torch.sqrt((r * r).sum(1, keepdim=True) / r.shape[1] + eps)
    else:
        mean, var = row_moments(r)
        out = (r - mean) / torch.sqrt(var + eps)
    return from_rows(out, kind, tuple(x.shape))
