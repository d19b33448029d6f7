"""Float64 references for BN-LSTM (Cooijmans et al. 2017) and LN-LSTM (Ba et al. 2016).

Written from the papers' equations with explicit loops over layers, time steps and samples,
and statistics as plain sums; nothing here calls normlab. Gate order i, f, g, o (torch's).

BN-LSTM, per step t over the sequences still running (len > t):
    gates = BN_t(W_h h; γ_h) + BN_t(W_x x; γ_x) + b
    c = σ(f) c + σ(i) tanh(g);  h = σ(o) tanh(BN_t(c; γ_c, β_c))
training: μ_t, σ²_t (biased) over those sequences; afterwards slot t ← (1 − m) slot t + m μ_t
(variance: m σ²_t n/(n − 1)) for every t with n ≥ 2 running and t < T_max. Eval: slot
min(t, tracked − 1), the reuse rule. LN-LSTM: the same with LN over the units of one sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Running:
    """One BN's per-step running statistics: mean, var (T_max, C) and the steps tracked."""

    mean: Tensor
    var: Tensor
    tracked: int


@dataclass
class LayerParams:
    w_x: Tensor
    w_h: Tensor
    b: Tensor
    # BN: "x", "h", "c" -> (γ, β or None); LN: "x", "h", "c" -> (α, β)
    norm: dict[str, tuple[Tensor, Tensor | None]] = field(default_factory=dict)
    running: dict[str, Running] = field(default_factory=dict)


def sigmoid(z: Tensor) -> Tensor:
    return 1.0 / (1.0 + torch.exp(-z))


def bn_over(
    vectors: list[Tensor], gamma: Tensor, beta: Tensor | None, eps: float
) -> tuple[list[Tensor], Tensor, Tensor]:
    """BN of the vectors, per unit, with the moments of those vectors (biased variance)."""
    n = len(vectors)
    mean = sum(vectors) / n
    var = sum((v - mean) ** 2 for v in vectors) / n
    out = [gamma * (v - mean) / torch.sqrt(var + eps) for v in vectors]
    if beta is not None:
        out = [o + beta for o in out]
    return out, mean, var


def bn_running(
    v: Tensor, run: Running, t: int, gamma: Tensor, beta: Tensor | None, eps: float
) -> Tensor:
    s = min(t, max(run.tracked - 1, 0))  # the reuse rule
    y = gamma * (v - run.mean[s]) / torch.sqrt(run.var[s] + eps)
    return y if beta is None else y + beta


def ln(v: Tensor, alpha: Tensor, beta: Tensor | None, eps: float) -> Tensor:
    h = v.numel()
    mu = v.sum() / h
    var = ((v - mu) ** 2).sum() / h
    y = alpha * (v - mu) / math.sqrt(var + eps)
    return y if beta is None else y + beta


def lstm_layer(
    p: LayerParams,
    x: Tensor,
    lengths: list[int],
    h0: Tensor,
    c0: Tensor,
    norm: str | None,
    training: bool,
    eps: float,
    momentum: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer over x (T, N, I); returns outputs (T, N, H) zero past each length, h_n, c_n.
    BN running statistics in ``p.running`` are updated in place in training."""
    steps, n_seq = x.shape[0], x.shape[1]
    hid = p.w_h.shape[1]
    h = [h0[n].clone() for n in range(n_seq)]
    c = [c0[n].clone() for n in range(n_seq)]
    out = torch.zeros(steps, n_seq, hid, dtype=x.dtype)
    batch_moments: dict[str, list[tuple[Tensor, Tensor, int]]] = {"x": [], "h": [], "c": []}

    def normalize(key: str, vectors: list[Tensor], t: int) -> list[Tensor]:
        gamma, beta = p.norm[key]
        if norm == "ln":
            return [ln(v, gamma, beta, eps) for v in vectors]
        if training:
            y, mean, var = bn_over(vectors, gamma, beta, eps)
            batch_moments[key].append((mean, var, len(vectors)))
            return y
        return [bn_running(v, p.running[key], t, gamma, beta, eps) for v in vectors]

    for t in range(steps):
        live = [n for n in range(n_seq) if lengths[n] > t]
        if not live:
            break
        wx = [p.w_x @ x[t, n] for n in live]
        wh = [p.w_h @ h[n] for n in live]
        if norm is not None:
            wx, wh = normalize("x", wx, t), normalize("h", wh, t)
        new_c, outs_o = [], []
        for k, n in enumerate(live):
            a = wh[k] + wx[k] + p.b
            i, f, g, o = a[:hid], a[hid : 2 * hid], a[2 * hid : 3 * hid], a[3 * hid :]
            new_c.append(sigmoid(f) * c[n] + sigmoid(i) * torch.tanh(g))
            outs_o.append(sigmoid(o))
        cn = new_c if norm is None else normalize("c", new_c, t)
        for k, n in enumerate(live):
            c[n] = new_c[k]
            h[n] = outs_o[k] * torch.tanh(cn[k])
            out[t, n] = h[n]
    if norm == "bn" and training:
        for key, run in p.running.items():
            max_length = run.mean.shape[0]
            for t, (mean, var, count) in enumerate(batch_moments[key]):
                if count < 2 or t >= max_length:
                    break
                run.mean[t] = (1 - momentum) * run.mean[t] + momentum * mean
                run.var[t] = (1 - momentum) * run.var[t] + momentum * var * count / (count - 1)
                run.tracked = max(run.tracked, t + 1)
    return out, torch.stack(h), torch.stack(c)


def lstm(
    layers: list[LayerParams],
    x: Tensor,
    lengths: list[int],
    h0: Tensor,
    c0: Tensor,
    norm: str | None,
    training: bool,
    eps: float = 1e-5,
    momentum: float = 0.1,
) -> tuple[Tensor, Tensor, Tensor]:
    """A stack of layers over x (T, N, I), h0/c0 (L, N, H): (outputs, h_n, c_n)."""
    hs, cs = [], []
    for k, p in enumerate(layers):
        x, h, c = lstm_layer(p, x, lengths, h0[k], c0[k], norm, training, eps, momentum)
        hs.append(h)
        cs.append(c)
    return x, torch.stack(hs), torch.stack(cs)
