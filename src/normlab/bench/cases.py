"""What ``normlab bench`` runs: the settings, each layer's module and input, and its baselines.

A *setting* is a shape given channels-first, ``(N, C, *S)``, a layout, a mode, a dtype and a
device. The channels-last layout of a rank-3 shape is the sequence layout ``(N, L, C)`` (the
layer gets ``channel_dim=-1``); of a rank-4 or rank-5 shape, torch's ``channels_last`` memory
format (same logical shape, ``channel_dim=1``).

For each registered norm layer the candidates are the layer itself, its torch.nn counterpart
where torch.nn computes the same thing (`torch_counterpart`), native ``nn.GroupNorm`` on a
tensor of the same shape, the layer's eager composition (the differentiable composition of ATen
operations that graph capture traces instead of its fast path:
`normlab.core.tracing.eager_composition`), and, with ``--compile``, ``torch.compile`` of the
layer. A weight-side method (weight norm, spectral norm, weight standardization, ...) is timed
on the convolution (or, for ``(N, L, C)`` input and ``(N, C)`` input, the linear layer) it
parametrizes, against torch's own parametrization where there is one, else the bare layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from normlab import registry
from normlab.core.tracing import eager_composition
from normlab.errors import NormlabError

LAYOUTS = ("channels_first", "channels_last")
MODES = ("train", "eval")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
          "float16": torch.float16}
# a small map, a medium map and the map DESIGN.md quotes its kernel costs on
DEFAULT_SHAPES = ((8, 64, 8, 8), (16, 64, 16, 16), (32, 64, 32, 32))
_MEMORY_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


@dataclass(frozen=True)
class Setting:
    """One shape, layout, mode, dtype and device to time every layer at."""

    shape: tuple[int, ...]
    layout: str = "channels_first"
    mode: str = "train"
    dtype: str = "float32"
    device: str = "cpu"

    @property
    def sequence(self) -> bool:
        """True for the ``(N, L, C)`` layout (channels-last of a rank-3 shape)."""
        return self.layout == "channels_last" and len(self.shape) == 3

    @property
    def channel_dim(self) -> int:
        return -1 if self.sequence else 1

    @property
    def label(self) -> str:
        """``8x64x8x8``; the sequence layout as ``N x L x C`` (``8x128x64 (N, L, C)``)."""
        if self.sequence:
            n, c, length = self.shape
            return f"{n}x{length}x{c} (N, L, C)"
        return "x".join(map(str, self.shape))

    def tensor(self, seed: int, channels_first: bool = False) -> Tensor:
        """A standard-normal input in this setting's layout (or channels-first, contiguous)."""
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(self.shape, generator=gen, dtype=torch.float32)
        x = x.to(device=self.device, dtype=DTYPES[self.dtype])
        if channels_first or self.layout == "channels_first":
            return x
        if self.sequence:
            return x.transpose(1, 2).contiguous()
        return x.contiguous(memory_format=_MEMORY_FORMATS[x.dim()])


def layouts_of(shape: tuple[int, ...], layouts: tuple[str, ...]) -> tuple[str, ...]:
    """The layouts a shape has: channels-last needs rank 3 (N, L, C), 4 or 5."""
    return tuple(lay for lay in layouts if lay == "channels_first" or 3 <= len(shape) <= 5)


@dataclass
class Candidate:
    """A module to time on an input, inside ``context`` (e.g. `eager_composition`)."""

    label: str
    module: Callable[[Tensor], Tensor]
    x: Tensor
    context: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext


class Skip(Exception):
    """A layer (or a baseline) that cannot run in a setting; the message says why."""


def _placed(module: nn.Module, s: Setting) -> nn.Module:
    module = module.to(device=s.device, dtype=DTYPES[s.dtype])
    return module.train(s.mode == "train")


def _errors() -> tuple[type[BaseException], ...]:
    return (NormlabError, RuntimeError, TypeError, NotImplementedError)


def norm_layer(spec: str, s: Setting) -> tuple[str, nn.Module]:
    """(the spec used, the layer) for a registry spec; a method whose default does not fit the
    channel count (GroupNorm's 32 groups for C = 8) falls back to its ``fitting`` spec."""
    entry = registry.lookup(spec.partition(":")[0])
    kwargs = {"channel_dim": -1} if s.sequence else {}
    c = s.shape[1]
    try:
        layer = registry.create(spec, c, **kwargs)
    except NormlabError as err:
        if ":" in spec or entry.fitting is None:
            raise Skip(str(err)) from None
        try:
            spec, layer = entry.fitting, registry.create(entry.fitting, c, **kwargs)
        except NormlabError:
            raise Skip(str(err)) from None
    layer = _placed(layer, s)
    if hasattr(layer, "set_reference"):  # Virtual BN: a fixed reference batch, the same shape
        with torch.no_grad():
            layer.set_reference(s.tensor(seed=1))
    return spec, layer


def _batch_norm_class(rank: int) -> type[nn.Module]:
    return {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank]


class _ChannelsLast(nn.Module):
    """Apply a module that works on the last dimension to the channels of (N, C, *S)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(x.movedim(1, -1)).movedim(-1, 1)


def torch_counterpart(name: str, layer: nn.Module, s: Setting) -> tuple[str, nn.Module]:
    """(label, module): the torch.nn layer that computes what ``layer`` computes. Raises `Skip`
    (with the reason) when torch.nn has none, or none for this layout."""
    c, rank = s.shape[1], len(s.shape)
    affine = bool(getattr(layer, "affine", True))
    if name == "rms_norm":  # over C at each position
        inner = nn.RMSNorm(c, eps=getattr(layer, "eps", None))
        if s.sequence:
            return f"nn.RMSNorm({c})", _placed(inner, s)
        return f"nn.RMSNorm({c}) on x.movedim(1, -1)", _placed(_ChannelsLast(inner), s)
    if s.sequence:
        raise Skip("torch.nn's counterpart takes channels at dim 1, not (N, L, C)")
    if name in ("batch_norm", "frozen_batch_norm"):
        cls = _batch_norm_class(rank)
        twin = cls(c, affine=affine, track_running_stats=True)
        if name == "frozen_batch_norm":  # fixed statistics and affine: BN eval, no gradients
            twin = _placed(twin, s).eval().requires_grad_(False)
            return f"nn.{cls.__name__}({c}).eval(), frozen", twin
        return f"nn.{cls.__name__}({c})", _placed(twin, s)
    if name == "group_norm":
        g = int(layer.num_groups)
        return f"nn.GroupNorm({g}, {c})", _placed(nn.GroupNorm(g, c, affine=affine), s)
    if name == "layer_norm" and not getattr(layer, "per_position", False):
        return f"nn.GroupNorm(1, {c})", _placed(nn.GroupNorm(1, c, affine=affine), s)
    if name == "instance_norm" and rank in (3, 4, 5):
        cls = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}[rank]
        track = bool(getattr(layer, "track_running_stats", False))
        twin = cls(c, affine=affine, track_running_stats=track)
        return f"nn.{cls.__name__}({c})", _placed(twin, s)
    raise Skip("torch.nn has no layer computing the same")


def group_norm_baseline(s: Setting) -> Candidate:
    """Native ``nn.GroupNorm`` (groups: the largest divisor of C up to 32) on a tensor of the
    same shape; channels-first for the (N, L, C) layout, where GroupNorm needs dim 1."""
    c = s.shape[1]
    g = max(d for d in range(1, min(c, 32) + 1) if c % d == 0)
    module = _placed(nn.GroupNorm(g, c), s)
    return Candidate(f"nn.GroupNorm({g}, {c})", module, s.tensor(0, channels_first=s.sequence))


def composition(layer: nn.Module, x: Tensor) -> Candidate:
    """The layer inside `eager_composition`. Raises `Skip` when the layer has no separate
    composition (its forward is a native kernel, or already a composition) or when the
    composition fails in eager mode."""
    try:
        with eager_composition() as asked:
            layer(x.detach().requires_grad_())
    except _errors() as err:
        raise Skip(f"the eager composition fails: {type(err).__name__}: {err}") from None
    if not asked():
        raise Skip("no separate composition: the forward is a native kernel or already one")
    return Candidate("eager composition", layer, x, eager_composition)


def compiled(layer: nn.Module, x: Tensor) -> Candidate:
    """``torch.compile(layer)``; raises `Skip` when it cannot compile here (no C++ compiler)."""
    module = torch.compile(layer)
    try:
        y = module(x.detach().requires_grad_())
        y.sum().backward()
    except Exception as err:  # inductor raises many kinds; any of them means "not here"
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise Skip(f"torch.compile fails here: {type(err).__name__}: {first}") from None
    return Candidate("torch.compile(layer)", module, x)


def _host(s: Setting) -> tuple[str, nn.Module]:
    """The layer a weight-side method parametrizes in this setting, and its label."""
    c, rank = s.shape[1], len(s.shape)
    if rank == 2 or s.sequence:
        return f"nn.Linear({c}, {c})", nn.Linear(c, c)
    cls = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}.get(rank)
    if cls is None:
        raise Skip(f"no convolution for rank-{rank} input")
    return f"nn.{cls.__name__}({c}, {c}, 3, padding=1)", cls(c, c, 3, padding=1)


_TORCH_PARAMETRIZATIONS = {
    "weight_norm": nn.utils.parametrizations.weight_norm,
    "spectral_norm": nn.utils.parametrizations.spectral_norm,
}


def _own_layer(entry: registry.WeightEntry, host: nn.Module, label: str) -> Candidate:
    """A method published as layers (``CosineConv2d``, ``NormPropLinear``): its layer of the
    host's kind, built with the host's arguments. Raises `Skip` when it has none (an
    initializer or a projection step runs once, not in every forward)."""
    kind = type(host).__name__
    names = [getattr(x, "__name__", str(x)) for x in entry.exports]
    for cls in entry.exports:
        if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__name__.endswith(kind):
            c = host.weight.shape[1]
            module = cls(c, c) if kind == "Linear" else cls(c, c, 3, padding=1)
            return Candidate(f"normlab.{cls.__name__}{label[len('nn.' + kind):]}", module,
                             torch.empty(0))
    if any(isinstance(x, type) for x in entry.exports):
        raise Skip(f"no {kind} form here (its layers and helpers: {', '.join(names)})")
    raise Skip(f"not a layer: {', '.join(names)} run once on a model, not in every forward")


def weight_side(name: str, s: Setting) -> tuple[Candidate, Candidate]:
    """(the parametrized layer, torch's parametrization of the same layer or the bare layer).
    A method published as layers (cosine norm, normalization propagation) is its layer of the
    same kind against the bare torch layer. Raises `Skip` for an initializer or a projection
    step."""
    entry = registry.lookup_weight(name)
    label, host = _host(s)
    x = s.tensor(0)
    if entry.apply is None:
        own = _own_layer(entry, host, label)
        return (Candidate(own.label, _placed(own.module, s), x),
                Candidate(f"{label}, plain", _placed(host, s), x))
    ours = _placed(entry.apply(host), s)
    _, bare = _host(s)  # its own random weights: the cost does not depend on them
    if name in _TORCH_PARAMETRIZATIONS:
        twin = _placed(_TORCH_PARAMETRIZATIONS[name](bare), s)
        twin_label = f"torch.nn.utils.parametrizations.{name}({label})"
    else:
        twin, twin_label = _placed(bare, s), f"{label} without parametrization"
    return (Candidate(f"normlab.{entry.apply.__name__}({label})", ours, x),
            Candidate(twin_label, twin, x))


def is_weight_side(name: str) -> bool:
    key = name.strip().lower().replace("-", "_")
    return key in registry.known_weight_names()


def canonical(spec: str) -> str:
    """The registry name a spec or alias stands for: ``"gn:8"`` -> ``"group_norm"``."""
    if is_weight_side(spec):
        return registry.lookup_weight(spec).name
    return registry.lookup(spec.partition(":")[0]).name


__all__ = ["DEFAULT_SHAPES", "DTYPES", "LAYOUTS", "MODES", "Candidate", "Setting", "Skip",
           "canonical", "compiled", "composition", "group_norm_baseline", "is_weight_side",
           "layouts_of", "norm_layer", "torch_counterpart", "weight_side"]
