"""One small description per registered norm (and per notable variant), plus test helpers.

Contract, parity and state tests are parametrized over ``CASES``; a test fails when a name in
``normlab.available()`` has no case here, so no method lands untested. Methods beyond the five
classic ones describe their cases in ``tests/cases_<method>.py`` (a ``CASES`` tuple), collected at
the bottom of this file. Nothing here lists methods by name: a case's class, and what a method
keeps, come from the registry (``normlab.registry.lookup(case.name)``) and from the layers.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

import normlab.functional as NF
import oracles
from normlab import registry
from normlab.surgery.layers import class_stats_kind

# -- case description -----------------------------------------------------------------------------

Reference = Callable[[nn.Module, Tensor], Tensor]
Functional = Callable[[nn.Module, Tensor], Tensor]


@dataclass(frozen=True)
class TorchTwin:
    """A torch.nn module equal to a normlab layer, and how to feed it (N, C, *S) data."""

    module: nn.Module
    to_torch: Callable[[Tensor], Tensor]
    from_torch: Callable[[Tensor], Tensor]


TorchBuilder = Callable[[nn.Module, int], TorchTwin]
# (buffers before the step, the batch, momentum) -> expected buffers after one training step
RunningStep = Callable[[Mapping[str, Tensor], Tensor, Any], dict[str, Tensor]]

@dataclass(frozen=True)
class Case:
    """One layer configuration. Shapes are channels-first (N, C, *S)."""

    name: str  # the registry's canonical name
    reference: Reference  # float64 oracle driven by the module's own mode / params / buffers
    functional: Functional  # the normlab.functional twin, same mode / params / buffers
    variant: str = ""
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    num_features: int = 6
    shapes: tuple[tuple[int, ...], ...] = ((4, 6), (3, 6, 5), (2, 6, 4, 3), (2, 6, 3, 2, 3))
    grad_shape: tuple[int, ...] = (3, 6, 4)
    has_running_stats: bool = False
    train_eval_differ: bool = False
    per_sample: bool = True
    torch_equivalent: TorchBuilder | None = None
    # float64 oracle of one running-statistics step; None = torch BatchNorm's law (IN's for IN)
    running_step: RunningStep | None = None
    momenta: tuple[Any, ...] = (0.0, 0.1, 1.0, None)  # momentum values the state laws are run at
    # parameters that live in [0, 1] (randomize_ draws them there), e.g. a gate
    unit_params: frozenset[str] = frozenset()
    # the exact state_dict keys where they are not weight/bias plus the three running buffers
    state_keys: frozenset[str] | None = None

    @property
    def id(self) -> str:
        return f"{self.name}-{self.variant}" if self.variant else self.name

    @property
    def cls(self) -> type[nn.Module]:
        return registry.lookup(self.name).cls

    def make(self, num_features: int | None = None, **kw: Any) -> nn.Module:
        """The layer with this case's kwargs, overridden by ``kw``."""
        n = self.num_features if num_features is None else num_features
        return self.cls(n, **{**self.kwargs, **kw})

    def shapes_of_rank(self, *ranks: int) -> list[tuple[int, ...]]:
        return [s for s in self.shapes if len(s) in ranks]


# -- references (oracles driven by a module) ------------------------------------------------------


def _bn_reference(m: Any, x: Tensor) -> Tensor:
    return oracles.batch_norm_ref(
        x,
        m.weight,
        m.bias,
        m.running_mean,
        m.running_var,
        training=m.training,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _ln_reference(m: Any, x: Tensor) -> Tensor:
    return oracles.layer_norm_ref(
        x, m.weight, m.bias, eps=m.eps, per_position=m.per_position, channel_dim=m.channel_dim
    )


def _in_reference(m: Any, x: Tensor) -> Tensor:
    return oracles.instance_norm_ref(
        x,
        m.weight,
        m.bias,
        m.running_mean,
        m.running_var,
        use_input_stats=m.training or not m.track_running_stats,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _gn_reference(m: Any, x: Tensor) -> Tensor:
    return oracles.group_norm_ref(
        x, m.num_groups, m.weight, m.bias, eps=m.eps, channel_dim=m.channel_dim
    )


def _rms_reference(m: Any, x: Tensor) -> Tensor:
    return oracles.rms_norm_ref(x, m.weight, eps=m.eps, channel_dim=m.channel_dim)


# -- functional twins -----------------------------------------------------------------------------


def _bn_functional(m: Any, x: Tensor) -> Tensor:
    return NF.batch_norm(
        x,
        m.running_mean,
        m.running_var,
        m.weight,
        m.bias,
        training=m.training,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _ln_functional(m: Any, x: Tensor) -> Tensor:
    return NF.layer_norm(
        x, m.weight, m.bias, eps=m.eps, per_position=m.per_position, channel_dim=m.channel_dim
    )


def _in_functional(m: Any, x: Tensor) -> Tensor:
    return NF.instance_norm(
        x,
        m.weight,
        m.bias,
        running_mean=m.running_mean,
        running_var=m.running_var,
        use_input_stats=m.training or not m.track_running_stats,
        eps=m.eps,
        channel_dim=m.channel_dim,
    )


def _gn_functional(m: Any, x: Tensor) -> Tensor:
    return NF.group_norm(x, m.num_groups, m.weight, m.bias, eps=m.eps, channel_dim=m.channel_dim)


def _rms_functional(m: Any, x: Tensor) -> Tensor:
    return NF.rms_norm(x, m.weight, eps=m.eps, channel_dim=m.channel_dim)


# -- torch.nn equivalents -------------------------------------------------------------------------


def _identity(t: Tensor) -> Tensor:
    return t


def _to_last(t: Tensor) -> Tensor:
    return t.movedim(1, -1)


def _to_first(t: Tensor) -> Tensor:
    return t.movedim(-1, 1)


def copy_state(src: nn.Module, dst: nn.Module) -> None:
    """Copy every same-named parameter / buffer (values and dtype) from src into dst."""
    dst_state = dict(dst.named_parameters()) | dict(dst.named_buffers())
    with torch.no_grad():
        for key, value in [*src.named_parameters(), *src.named_buffers()]:
            if key in dst_state and dst_state[key] is not None and value is not None:
                dst_state[key].copy_(value)


def _finish(m: nn.Module, t: nn.Module, channels_last: bool) -> TorchTwin:
    p = next(iter([*m.parameters(), *m.buffers()]), None)
    if p is not None and p.is_floating_point():
        t = t.to(p.dtype)
    copy_state(m, t)
    t.train(m.training)
    if channels_last:
        return TorchTwin(t, _to_last, _to_first)
    return TorchTwin(t, _identity, _identity)


def _torch_bn(m: Any, rank: int) -> TorchTwin:
    cls = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank]
    t = cls(
        m.num_features,
        eps=m.eps,
        momentum=m.momentum,
        affine=m.affine,
        track_running_stats=m.track_running_stats,
    )
    return _finish(m, t, channels_last=False)


def _torch_ln(m: Any, rank: int) -> TorchTwin:
    if m.per_position:
        t: nn.Module = nn.LayerNorm(m.num_features, eps=m.eps, elementwise_affine=m.affine)
        return _finish(m, t, channels_last=True)
    t = nn.GroupNorm(1, m.num_features, eps=m.eps, affine=m.affine)
    return _finish(m, t, channels_last=False)


def _torch_in(m: Any, rank: int) -> TorchTwin:
    cls = {3: nn.InstanceNorm1d, 4: nn.InstanceNorm2d, 5: nn.InstanceNorm3d}[rank]
    t = cls(
        m.num_features,
        eps=m.eps,
        momentum=m.momentum,
        affine=m.affine,
        track_running_stats=m.track_running_stats,
    )
    return _finish(m, t, channels_last=False)


def _torch_gn(m: Any, rank: int) -> TorchTwin:
    t = nn.GroupNorm(m.num_groups, m.num_features, eps=m.eps, affine=m.affine)
    return _finish(m, t, channels_last=False)


def _torch_rms(m: Any, rank: int) -> TorchTwin:
    t = nn.RMSNorm(m.num_features, eps=m.eps, elementwise_affine=m.affine)
    return _finish(m, t, channels_last=True)


# -- the catalogue --------------------------------------------------------------------------------

_SPATIAL = ((3, 6, 5), (2, 6, 4, 3), (2, 6, 3, 2, 3))  # per-instance statistics need *S


def _bn(variant: str = "", **kwargs: Any) -> Case:
    tracking = kwargs.get("track_running_stats", True)
    return Case(
        name="batch_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_bn_reference,
        functional=_bn_functional,
        has_running_stats=tracking,
        train_eval_differ=tracking,
        per_sample=False,
        torch_equivalent=_torch_bn,
    )


def _ln(variant: str = "", **kwargs: Any) -> Case:
    return Case(
        name="layer_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_ln_reference,
        functional=_ln_functional,
        torch_equivalent=_torch_ln,
    )


def _in(variant: str = "", **kwargs: Any) -> Case:
    tracking = kwargs.get("track_running_stats", False)
    return Case(
        name="instance_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_in_reference,
        functional=_in_functional,
        shapes=_SPATIAL,
        has_running_stats=tracking,
        train_eval_differ=tracking,
        # torch's InstanceNorm maps momentum=None to 0.0, not to a cumulative average
        torch_equivalent=_torch_in if kwargs.get("momentum", 0.1) is not None else None,
    )


def _gn(variant: str = "", num_features: int = 6, **kwargs: Any) -> Case:
    shapes = ((4, 6), *_SPATIAL) if num_features == 6 else ((2, 32, 3), (2, 32, 2, 2))
    return Case(
        name="group_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_gn_reference,
        functional=_gn_functional,
        num_features=num_features,
        shapes=shapes,
        grad_shape=(3, 6, 4) if num_features == 6 else (2, 32, 2),
        torch_equivalent=_torch_gn,
    )


def _rms(variant: str = "", **kwargs: Any) -> Case:
    return Case(
        name="rms_norm",
        variant=variant,
        kwargs=kwargs,
        reference=_rms_reference,
        functional=_rms_functional,
        torch_equivalent=_torch_rms,
        state_keys=frozenset({"weight"} if kwargs.get("affine", True) else ()),  # no bias
    )


CASES: tuple[Case, ...] = (
    _bn(),
    _bn("affine_false", affine=False),
    _bn("momentum_none", momentum=None),
    _bn("no_tracking", track_running_stats=False),
    _ln(),
    _ln("per_position", per_position=True),
    _ln("affine_false", affine=False),
    _in(),
    _in("affine", affine=True),
    _in("tracked", affine=True, track_running_stats=True),
    _in("tracked_momentum_none", track_running_stats=True, momentum=None),
    _gn(num_groups=3),
    _gn("group_size", group_size=3),
    _gn("affine_false", num_groups=2, affine=False),
    _gn("default_groups", num_features=32),
    _rms(),
    _rms("affine_false", affine=False),
    _rms("eps", eps=1e-3),
)


def _collect_method_cases() -> tuple[Case, ...]:
    """Cases of the methods described in tests/cases_<method>.py, in file-name order."""
    found: list[Case] = []
    for path in sorted(Path(__file__).parent.glob("cases_*.py")):
        found.extend(importlib.import_module(path.stem).CASES)
    return tuple(found)


CASES = CASES + _collect_method_cases()
CASE_IDS = [c.id for c in CASES]
RUNNING_CASES = tuple(c for c in CASES if c.has_running_stats)
RUNNING_IDS = [c.id for c in RUNNING_CASES]
_UNIT_PARAMS = {c.cls: c.unit_params for c in CASES if c.unit_params}

# -- helpers --------------------------------------------------------------------------------------


def small_spec(name: str) -> str:
    """The registry spec that fits the surgery models (8 to 32 channels, batches of 4): the
    entry's ``fitting`` spec (``"gn:4"``), or the name itself."""
    return registry.lookup(name).small_spec


def statistics_kind(name: str) -> str | None:
    """What running statistics a registered method keeps by default: ``"batch"`` or
    ``"instance"`` (the kind its class declares, when the default layer tracks them), or None."""
    kind = class_stats_kind(registry.lookup(name).cls)
    layer = registry.create(small_spec(name), 8)
    return kind if kind is not None and getattr(layer, "track_running_stats", True) else None


def keeps_bn_statistics(name: str) -> bool:
    """The default layer keeps BatchNorm's running mean and variance over (N, *S) (what
    FrozenBatchNorm is built from)."""
    state = registry.create(small_spec(name), 8).state_dict()
    return statistics_kind(name) == "batch" and {"running_mean", "running_var"} <= set(state)



def output_and_grads(
    m: nn.Module, x: Tensor, upstream: Tensor
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """One forward of ``m`` on a fresh leaf copy of ``x`` and backward of ``upstream``: the
    output, dL/dx and the gradient of every parameter that received one, by name."""
    m.zero_grad(set_to_none=True)
    leaf = x.detach().clone().requires_grad_()
    y = m(leaf)
    y.backward(upstream)
    grads = {k: p.grad for k, p in m.named_parameters() if p.grad is not None}
    return y.detach(), leaf.grad, grads


def make_input(shape: tuple[int, ...], dtype: torch.dtype = torch.float64, seed: int = 0) -> Tensor:
    """Reproducible data with a per-channel offset and scale (so statistics are non-trivial)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    if len(shape) >= 2:
        view = (1, shape[1]) + (1,) * (len(shape) - 2)
        offset = torch.linspace(-1.0, 2.0, shape[1], dtype=torch.float64).reshape(view)
        scale = torch.linspace(0.5, 3.0, shape[1], dtype=torch.float64).reshape(view)
        x = x * scale + offset
    return x.to(dtype)


def randomize_(module: nn.Module, seed: int = 1) -> nn.Module:
    """Non-trivial affine parameters and statistics: weights and variances (``*_var``) in
    [0.5, 2], the parameters a case lists in ``unit_params`` in [0, 1], the rest normal."""
    unit = {key for m in module.modules() for key in _UNIT_PARAMS.get(type(m), ())}
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if not t.is_floating_point():
                continue
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "weight" or leaf.endswith("_var"):  # a scale or a variance: positive
                values = torch.rand(t.shape, generator=g, dtype=torch.float64) * 1.5 + 0.5
            elif leaf in unit:  # e.g. Batch-Instance Norm's gate ρ
                values = torch.rand(t.shape, generator=g, dtype=torch.float64)
            else:
                values = torch.randn(t.shape, generator=g, dtype=torch.float64)
            t.copy_(values.to(t.dtype))
    return module


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    """Detached clones of every entry of the state dict."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def assert_state_equal(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> None:
    """Same keys, and every tensor bitwise equal (dtype included)."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), f"{key}: {a[key]} != {b[key]}"


def param_grads(module: nn.Module) -> dict[str, Tensor]:
    return {
        name: p.grad.detach().clone() for name, p in module.named_parameters() if p.grad is not None
    }


def close(
    actual: Tensor, expected: Tensor, tol: float, *, msg: str = "", scaled: bool = True
) -> None:
    """assert_close with rtol = tol and atol = tol · max(1, max|expected|)."""
    scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() and scaled else 1.0
    torch.testing.assert_close(
        actual, expected, rtol=tol, atol=tol * scale, msg=lambda m: f"{msg}\n{m}"
    )


def load_script(relative_path: str) -> ModuleType:
    """A repository file outside the package (a benchmark baseline, an example) as a module."""
    path = Path(__file__).parents[1] / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def saved_storages(run: Callable[[], object]) -> dict[int, int]:
    """Memory ``run()`` saves for backward: {storage data_ptr: nbytes}, each storage once (a
    view of the input saved twice costs nothing more), counted with saved_tensors_hooks."""
    storages: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return storages
