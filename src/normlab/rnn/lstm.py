r"""LSTMs with per-time-step normalization: BN-LSTM and LN-LSTM.

BN-LSTM (Cooijmans, Ballas, Laurent, Gülçehre & Courville, ICLR 2017, arXiv:1603.09025):

$$ (\tilde i, \tilde f, \tilde g, \tilde o) = \mathrm{BN}_t(W_h h_{t-1}; γ_h) +
   \mathrm{BN}_t(W_x x_t; γ_x) + b, $$
$$ c_t = σ(\tilde f) ⊙ c_{t-1} + σ(\tilde i) ⊙ \tanh(\tilde g), \qquad
   h_t = σ(\tilde o) ⊙ \tanh(\mathrm{BN}_t(c_t; γ_c, β_c)). $$

The input and recurrent terms are normalized separately, without β (redundant with b); the
cell update itself is not normalized. Statistics are per time step (`StepBatchNorm`): over the
batch at step t in training, running slot ``min(t, T_max - 1)`` in eval. All γ start at 0.1.

LN-LSTM (Ba, Kiros & Hinton 2016, arXiv:1607.06450, its layer-normalized LSTM): the same
equations with LN in place of BN — each LN over the units of its vector (the 4H gate
pre-activations, the H cells) of one sample at one step, gain α (init 1) and bias β (init 0):

$$ (\tilde i, \tilde f, \tilde g, \tilde o) = \mathrm{LN}(W_h h_{t-1}; α_1, β_1) +
   \mathrm{LN}(W_x x_t; α_2, β_2) + b, $$
$$ c_t = σ(\tilde f) ⊙ c_{t-1} + σ(\tilde i) ⊙ \tanh(\tilde g), \qquad
   h_t = σ(\tilde o) ⊙ \tanh(\mathrm{LN}(c_t; α_3, β_3)). $$

``norm=None`` is the plain LSTM of ``torch.nn.LSTM`` (gate order i, f, g, o; b = b_ih + b_hh).

Padded batches (``lengths=`` or a ``PackedSequence``): a sequence's state stops updating after
its last step, its outputs past it are 0, and every statistic is over the sequences still
running at that step only (internally the batch is sorted by length, as packing does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from normlab import errors
from normlab.core.docstrings import append_shared_args
from normlab.core.tracing import fx_leaf, refuse_script
from normlab.errors import ConfigError, InputError
from normlab.rnn._step_batch_norm import StepBatchNorm, StepMoments

NormChoice = Literal["bn", "ln"] | None
NORMS: tuple[NormChoice, ...] = ("bn", "ln", None)
State = tuple[Tensor, Tensor]
Moments3 = tuple[StepMoments, StepMoments, StepMoments] | None


def _check_config(norm: object, max_length: object, momentum: object, gamma_init: object) -> None:
    if not (norm is None or (isinstance(norm, str) and norm in NORMS)):
        hint = errors.did_you_mean(norm, ["bn", "ln"]) if isinstance(norm, str) else ""
        raise ConfigError(
            f"norm must be 'bn' (BN-LSTM), 'ln' (LN-LSTM) or None (a plain LSTM); got "
            f"{norm!r}.{hint}"
        )
    errors.check_num_features(max_length, "max_length")
    if errors.check_momentum(momentum) is None and norm == "bn":
        raise ConfigError(
            "momentum=None (a cumulative average) is not supported by BN-LSTM, whose steps "
            "are seen by different numbers of batches; pass a momentum in (0, 1], e.g. 0.1."
        )
    if not errors.is_finite_number(gamma_init):
        raise ConfigError(
            f"gamma_init must be a finite float; got {gamma_init!r}. The paper uses 0.1 "
            "(1 saturates the tanh, 0.01 or less was unstable)."
        )


#: The arguments NormLSTMCell and NormLSTM share, appended to both docstrings' Args.
SHARED_ARGS = {
    "bias": "learn the gate bias b = b_ih + b_hh (``bias_ih``, ``bias_hh``, as ``nn.LSTM``).",
    "eps": "ε of every BN / LN, added to the variance.",
    "momentum": "BN's running-statistics momentum, per step slot (PyTorch's convention; None, a "
    "cumulative average, is refused: the slots see different numbers of batches). Unused by LN "
    "and ``norm=None``.",
    "device": "device of the parameters and buffers (torch.nn's factory argument).",
    "dtype": "dtype of the parameters and buffers (torch.nn's factory argument).",
}


@fx_leaf  # FX records a call_module, as for nn.LSTM (normlab.core.tracing)
class NormLSTMCell(nn.Module):
    r"""One step of a BN-LSTM, LN-LSTM or plain LSTM (equations: module docstring).

    Args:
        input_size: features of x_t.
        hidden_size: H, features of h_t and c_t.
        norm: ``"bn"`` (Cooijmans et al.), ``"ln"`` (Ba et al.) or None.
        max_length: BN's T_max, the running slots kept (steps past it reuse the last slot).
        gamma_init: the initial γ of the three BNs (the paper's 0.1); LN's α starts at 1.

    Shape:
        input (N, input_size); h, c (N, H). ``forward(x, (h, c), step=t)`` returns (h', c');
        ``step`` picks BN's per-step statistics (a loop over t passes its t).

    Example:
        >>> cell = NormLSTMCell(3, 4, norm="ln")
        >>> h, c = cell(torch.randn(2, 3))
        >>> tuple(h.shape), tuple(c.shape)
        ((2, 4), (2, 4))
    """

    __prepare_scriptable__ = refuse_script  # torch.jit.script: a clear error

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        norm: NormChoice = "bn",
        bias: bool = True,
        max_length: int = 100,
        eps: float = 1e-5,
        momentum: float = 0.1,
        gamma_init: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        errors.check_num_features(input_size, "input_size")
        errors.check_num_features(hidden_size, "hidden_size")
        _check_config(norm, max_length, momentum, gamma_init)
        self.input_size, self.hidden_size, self.norm = input_size, hidden_size, norm
        self.eps = errors.check_eps(eps)
        factory = {"device": device, "dtype": dtype}
        g = 4 * hidden_size
        self.weight_ih = nn.Parameter(torch.empty(g, input_size, **factory))
        self.weight_hh = nn.Parameter(torch.empty(g, hidden_size, **factory))
        self.bias_ih = nn.Parameter(torch.empty(g, **factory)) if bias else None
        self.bias_hh = nn.Parameter(torch.empty(g, **factory)) if bias else None
        self.norm_ih: nn.Module | None = None
        self.norm_hh: nn.Module | None = None
        self.norm_c: nn.Module | None = None
        if norm == "bn":
            kw = {
                "max_length": max_length,
                "gamma_init": float(gamma_init),
                "eps": self.eps,
                "momentum": float(momentum),
                **factory,
            }
            self.norm_ih = StepBatchNorm(g, bias=False, **kw)
            self.norm_hh = StepBatchNorm(g, bias=False, **kw)
            self.norm_c = StepBatchNorm(hidden_size, bias=True, **kw)
        elif norm == "ln":
            self.norm_ih = nn.LayerNorm(g, eps=self.eps, **factory)
            self.norm_hh = nn.LayerNorm(g, eps=self.eps, **factory)
            self.norm_c = nn.LayerNorm(hidden_size, eps=self.eps, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch.nn.LSTM's init for the weights and biases, U(-1/√H, 1/√H); the norms' own."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for p in (self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)
        for m in (self.norm_ih, self.norm_hh, self.norm_c):
            if m is not None:
                m.reset_parameters()  # type: ignore[operator]  # StepBatchNorm or LayerNorm

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, norm={self.norm!r}"

    # -- the pieces NormLSTM runs: the input term of all steps at once, then one step per t ----

    def _moments(self, first: int) -> Moments3:
        if self.norm != "bn" or not self.training:
            return None
        return StepMoments(first), StepMoments(first), StepMoments(first)

    def _commit(self, moments: Moments3, counts: list[int]) -> None:
        if moments is not None:
            for m, mom in zip((self.norm_ih, self.norm_hh, self.norm_c), moments, strict=True):
                m.commit_(mom, counts)  # type: ignore[union-attr]  # BN when moments exist

    def _input_term(self, x: Tensor, mask: Tensor | None, first: int, moments: Moments3) -> Tensor:
        """norm(W_x x_t) + b_ih + b_hh for every step of ``x`` (T, N, input_size)."""
        b = None if self.bias_ih is None else self.bias_ih + self.bias_hh
        if self.norm is None:
            return F.linear(x, self.weight_ih, b)
        m = self.norm_ih
        if isinstance(m, StepBatchNorm):
            # computed batch-major, so that BN's (N, T·4H) view of it needs no copy
            wx = F.linear(x.transpose(0, 1), self.weight_ih).transpose(0, 1)
            y = m.sequence(wx, mask, first, None if moments is None else moments[0])
        else:
            wx = F.linear(x, self.weight_ih)
            y = F.layer_norm(wx, m.normalized_shape, m.weight, m.bias, self.eps)
        return y if b is None else y + b

    def _step(self, xin: Tensor, h: Tensor, c: Tensor, t: int, moments: Moments3) -> State:
        """(h_t, c_t) from the input term ``xin`` (b, 4H) of step t and (h_{t-1}, c_{t-1})."""
        wh = F.linear(h, self.weight_hh)
        m_hh, m_c = self.norm_hh, self.norm_c
        if isinstance(m_hh, StepBatchNorm):
            gates = xin + m_hh.step(wh, t, None if moments is None else moments[1])
        elif m_hh is not None:
            gates = xin + F.layer_norm(wh, m_hh.normalized_shape, m_hh.weight, m_hh.bias, self.eps)
        else:
            gates = xin + wh
        i, f, g, o = gates.unsafe_chunk(4, 1)  # views of fresh memory, as torch's own cell
        c = torch.addcmul(torch.sigmoid(f) * c, torch.sigmoid(i), torch.tanh(g))
        if isinstance(m_c, StepBatchNorm):
            cn = m_c.step(c, t, None if moments is None else moments[2])
        elif m_c is not None:
            cn = F.layer_norm(c, m_c.normalized_shape, m_c.weight, m_c.bias, self.eps)
        else:
            cn = c
        return torch.sigmoid(o) * torch.tanh(cn), c

    def forward(self, input: Tensor, hx: State | None = None, *, step: int = 0) -> State:
        name = f"NormLSTMCell(input_size={self.input_size}, norm={self.norm!r})"
        if not isinstance(input, Tensor) or input.dim() != 2:
            got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
            raise InputError(
                f"{name} expected input of shape (N, {self.input_size}); got {got}. "
                "Add a batch dimension with x.unsqueeze(0)."
            )
        _check_features(name, input, self.input_size)
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise InputError(f"{name}: step must be an int >= 0 (the time index); got {step!r}.")
        n = input.shape[0]
        _check_batch(self, name, n)
        h, c = _initial_state(name, hx, (n, self.hidden_size), input)
        moments = self._moments(step)
        xin = self._input_term(input.unsqueeze(0), None, step, moments)[0]
        h, c = self._step(xin, h, c, step, moments)
        self._commit(moments, [n])
        return h, c


def _check_features(name: str, x: Tensor, size: int) -> None:
    if not x.is_floating_point():
        raise InputError(f"{name} expected a floating-point input; got {x.dtype}. Use x.float().")
    if x.shape[-1] != size:
        raise InputError(
            f"{name} expected input_size={size} features in the last dimension; got shape "
            f"{tuple(x.shape)}. Project the input to {size} features or build the layer with "
            f"input_size={x.shape[-1]}."
        )


def _check_batch(cell: NormLSTMCell, name: str, n: int) -> None:
    if n < 2 and cell.norm == "bn" and cell.training:
        raise errors.one_value_per_statistic(name, "over the batch at each time step", (n,))


def _initial_state(name: str, hx: State | None, shape: Sequence[int], like: Tensor) -> State:
    if hx is None:
        zeros = like.new_zeros(tuple(shape))
        return zeros, zeros
    if not isinstance(hx, (tuple, list)) or len(hx) != 2:
        raise InputError(f"{name}: hx must be a tuple (h0, c0); got {type(hx).__name__}.")
    for label, s in zip(("h0", "c0"), hx, strict=True):
        if not isinstance(s, Tensor) or tuple(s.shape) != tuple(shape):
            got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
            raise InputError(
                f"{name}: {label} must have shape {tuple(shape)}; got {got}. Pass zeros of that "
                "shape, or hx=None for a zero initial state."
            )
    return hx[0], hx[1]


@fx_leaf  # FX records a call_module, as for nn.LSTM (normlab.core.tracing)
class NormLSTM(nn.Module):
    r"""A multi-layer BN-LSTM, LN-LSTM or plain LSTM over whole sequences, like ``nn.LSTM``.

    Each layer is a `NormLSTMCell` (equations: module docstring) run over t = 0 … T − 1; layer
    l + 1 reads layer l's outputs h_t (through dropout in training, as ``nn.LSTM``). With
    ``norm=None`` and copied weights (`from_lstm`) it computes what ``nn.LSTM`` computes.

    Args:
        input_size: features of x_t.
        hidden_size: H, features of h_t and c_t.
        num_layers: stacked cells; layer l + 1 reads layer l's outputs.
        batch_first: input and output (N, T, ·) instead of (T, N, ·).
        dropout: dropout probability on the outputs of every layer but the last, in
            training (as ``nn.LSTM``).
        norm: ``"bn"``, ``"ln"`` or None.
        max_length: BN's T_max, the per-step running slots kept. Training steps from
            ``max_length`` on use batch statistics but are not tracked; eval step t reads slot
            ``min(t, num_steps_tracked - 1)`` (the last trained step's, past the training
            length: the paper's reuse rule).
        gamma_init: the initial γ of every BN (the paper's 0.1).

    Shape:
        input (T, N, input_size), or (N, T, input_size) with ``batch_first``, or a
        ``PackedSequence``; ``lengths`` (N,) ints in [1, T] for padded input; hx = (h0, c0),
        each (num_layers, N, H), zeros when omitted. Returns (output, (h_n, c_n)): output
        (T, N, H) (zero past each length; packed when the input was), h_n and c_n the state
        at each sequence's last step.

    Padding: a step's BN statistics are over the sequences still running at that step; a
    step where only one is running normalizes it with a zero batch variance (as any BN of
    one value) and does not update the running slots — bucket sequences by length to avoid
    it.

    Example:
        >>> lstm = NormLSTM(3, 4, norm="bn", num_layers=2)
        >>> out, (h, c) = lstm(torch.randn(5, 2, 3), lengths=[5, 3])
        >>> tuple(out.shape), tuple(h.shape), bool(out[3:, 1].eq(0).all())
        ((5, 2, 4), (2, 2, 4), True)

    References:
        Cooijmans et al., Recurrent Batch Normalization, ICLR 2017, arXiv:1603.09025.
        Ba, Kiros & Hinton, Layer Normalization, 2016, arXiv:1607.06450.
    """

    __prepare_scriptable__ = refuse_script  # torch.jit.script: a clear error

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        *,
        norm: NormChoice = "bn",
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        max_length: int = 100,
        eps: float = 1e-5,
        momentum: float = 0.1,
        gamma_init: float = 0.1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        errors.check_num_features(num_layers, "num_layers")
        if not errors.is_finite_number(dropout) or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {dropout!r}. 0 turns it off.")
        self.input_size, self.hidden_size, self.norm = input_size, hidden_size, norm
        self.num_layers, self.batch_first, self.dropout = num_layers, bool(batch_first), dropout
        kw = {
            "norm": norm,
            "bias": bias,
            "max_length": max_length,
            "eps": eps,
            "momentum": momentum,
            "gamma_init": gamma_init,
            "device": device,
            "dtype": dtype,
        }
        self.cells = nn.ModuleList(
            NormLSTMCell(input_size if k == 0 else hidden_size, hidden_size, **kw)  # type: ignore[arg-type]  # kw holds each argument's declared type
            for k in range(num_layers)
        )

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, norm={self.norm!r}, "
            f"num_layers={self.num_layers}, batch_first={self.batch_first}"
        )

    @classmethod
    def from_lstm(cls, lstm: nn.LSTM, *, norm: NormChoice = None, **kwargs: object) -> NormLSTM:
        """A NormLSTM with ``lstm``'s sizes, options and weights (the norms start fresh)."""
        if lstm.bidirectional or lstm.proj_size:
            raise ConfigError(
                "NormLSTM.from_lstm copies unidirectional LSTMs without projections; got "
                f"bidirectional={lstm.bidirectional}, proj_size={lstm.proj_size}."
            )
        w = lstm.weight_ih_l0
        model = cls(
            lstm.input_size,
            lstm.hidden_size,
            norm=norm,
            num_layers=lstm.num_layers,
            bias=lstm.bias,
            batch_first=lstm.batch_first,
            dropout=lstm.dropout,
            device=w.device,
            dtype=w.dtype,
            **kwargs,
        )  # type: ignore[arg-type]  # kwargs: NormLSTM's keyword arguments
        with torch.no_grad():
            for k, cell in enumerate(model.cells):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    p = getattr(cell, name)
                    if p is not None:
                        p.copy_(getattr(lstm, f"{name}_l{k}"))
        return model

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: State | None = None,
        *,
        lengths: Tensor | Sequence[int] | None = None,
    ) -> tuple[Tensor | PackedSequence, State]:
        name = f"NormLSTM(input_size={self.input_size}, norm={self.norm!r})"
        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise InputError(f"{name}: pass lengths= or a PackedSequence, not both.")
            x, lengths = pad_packed_sequence(packed)
        else:
            if not isinstance(input, Tensor) or input.dim() != 3:
                got = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
                layout = "(N, T, input_size)" if self.batch_first else "(T, N, input_size)"
                raise InputError(
                    f"{name} expected input of shape {layout}; got {got}. Add the missing "
                    "batch dimension with unsqueeze, or pack the sequences (PackedSequence)."
                )
            x = input.transpose(0, 1) if self.batch_first else input
        _check_features(name, x, self.input_size)
        steps, n = x.shape[0], x.shape[1]
        if steps == 0 or n == 0:
            raise InputError(
                f"{name}: got an empty input of shape {tuple(x.shape)}; need T, N >= 1."
            )
        _check_batch(self.cells[0], name, n)  # type: ignore[arg-type]  # cells holds NormLSTMCells
        lens = _check_lengths(name, lengths, steps, n)
        h0, c0 = _initial_state(name, hx, (self.num_layers, n, self.hidden_size), x)

        order = mask = None
        run = steps if lens is None else int(lens.max())
        counts = [n] * run
        if lens is not None and bool((lens == run).all()):
            lens = None  # every sequence runs the same number of steps: nothing to mask
        if lens is not None:
            order = torch.argsort(lens, descending=True, stable=True)
            lens = lens[order]
            alive = torch.arange(run).unsqueeze(1) < lens.unsqueeze(0)
            counts = alive.sum(1).tolist()
            mask = alive.to(device=x.device, dtype=x.dtype).unsqueeze(-1)
            dev_order = order.to(x.device)
            x, h0, c0 = (
                x.index_select(1, dev_order),
                h0.index_select(1, dev_order),
                c0.index_select(1, dev_order),
            )
        layer_in = x[:run]
        hs, cs = [], []
        for k, cell in enumerate(self.cells):
            layer_in, h, c = _run_layer(cell, layer_in, h0[k], c0[k], counts, mask)  # type: ignore[arg-type]  # a NormLSTMCell
            hs.append(h)
            cs.append(c)
            if self.dropout and self.training and k < self.num_layers - 1:
                layer_in = F.dropout(layer_in, self.dropout, True)
        out, h_n, c_n = layer_in, torch.stack(hs), torch.stack(cs)
        if order is not None:
            back = torch.argsort(order).to(x.device)
            out, h_n, c_n = (
                out.index_select(1, back),
                h_n.index_select(1, back),
                c_n.index_select(1, back),
            )
        if run < steps:
            out = torch.cat([out, out.new_zeros(steps - run, *out.shape[1:])])
        if packed is not None:
            srt = packed.sorted_indices
            data = pack_padded_sequence(
                out if srt is None else out.index_select(1, srt),
                lengths if srt is None else lengths[srt.cpu()],  # type: ignore[index]  # a Tensor from pad_packed_sequence
            ).data
            return PackedSequence(data, packed.batch_sizes, srt, packed.unsorted_indices), (
                h_n,
                c_n,
            )
        return (out.transpose(0, 1) if self.batch_first else out), (h_n, c_n)


def _check_lengths(name: str, lengths: object, steps: int, n: int) -> Tensor | None:
    if lengths is None:
        return None
    lens = torch.as_tensor(lengths).cpu()
    if lens.dim() != 1 or lens.numel() != n or lens.is_floating_point() or lens.is_complex():
        raise InputError(
            f"{name}: lengths must be {n} ints, one per sequence of the batch; got {lengths!r}."
        )
    bad = ((lens < 1) | (lens > steps)).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        raise InputError(
            f"{name}: lengths[{i}] = {int(lens[i])} is outside [1, {steps}] (T = {steps}): every "
            "sequence needs at least one step and at most T. Drop empty sequences from the batch."
        )
    return lens.long()


def _run_layer(
    cell: NormLSTMCell, x: Tensor, h: Tensor, c: Tensor, counts: list[int], mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """One layer over ``x`` (T, N, ·), batch sorted by length when ``mask`` is given; returns
    the outputs (T, N, H), zero past each length, and the state at each last step."""
    n = x.shape[1]
    moments = cell._moments(0)
    # unbind, not xin[t]: each xin[t]'s backward would fill a zero tensor of all of xin
    xin = cell._input_term(x, mask, 0, moments).unbind(0)
    outs, final_h, final_c = [], [], []
    alive = n
    for t, b in enumerate(counts):
        if b < alive:  # sequences b … alive − 1 ended at step t − 1: keep their state
            final_h.append(h[b:])
            final_c.append(c[b:])
            h, c = h[:b], c[:b]
            alive = b
        h, c = cell._step(xin[t] if b == n else xin[t][:b], h, c, t, moments)
        outs.append(h)
    cell._commit(moments, counts)
    if mask is None:
        return torch.stack(outs), h, c
    out = pad_packed_sequence(PackedSequence(torch.cat(outs), torch.tensor(counts)))[0]
    return out, torch.cat([h, *final_h[::-1]]), torch.cat([c, *final_c[::-1]])


for _layer in (NormLSTMCell, NormLSTM):
    append_shared_args(_layer, SHARED_ARGS)
