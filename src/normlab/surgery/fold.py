"""Fold BN-family layers into the conv / linear layer before them, for inference.

In eval mode a BN-family layer is a per-channel affine map of its input z (BN's inference
function, Ioffe & Szegedy 2015, arXiv:1502.03167):

$$ \\mathrm{BN}(z) = \\gamma \\frac{z - \\hat\\mu}{\\sqrt{\\hat\\sigma^2 + \\epsilon}} + \\beta
   = z \\cdot s + t, \\quad s = \\frac{\\gamma}{\\sqrt{\\hat\\sigma^2 + \\epsilon}}, \\quad
   t = \\beta - \\hat\\mu \\, s $$

with μ̂, σ̂² the running statistics (γ = 1, β = 0 without affine). When z = conv(x) = W ⋆ x + b,
BN(conv(x)) = (W·s) ⋆ x + (b·s + t): the BN disappears into the conv's weight and bias, scaled
along the conv's *output-channel* axis:

* Conv1d/2d/3d and Linear: weight (C_out, C_in / groups, *k) or (C_out, C_in): axis 0.
* ConvTranspose1d/2d/3d: weight (C_in, C_out / groups, *k). Output channel o = g·(C_out/groups)
  + j (group g, index j within it) is column j of the rows g·(C_in/groups) ... of group g, so
  the factor of weight[i, j] is s[(i // (C_in/groups))·(C_out/groups) + j] (scaling axis 0, or
  axis 1 without the group offset, is the bug of pytorch PR #184076 and ultralytics PR #25364).
* bias: b' = (b or 0)·s + t (scaling b is what ultralytics/yolov3#807 forgot).

Folded layers: torch.nn BatchNorm1d/2d/3d / SyncBatchNorm and normlab BatchNorm, GhostBatchNorm
and BatchRenorm in eval mode, FrozenBatchNorm in any mode (its forward is always BN eval);
BatchRenorm stores its moving std σ as ``running_var`` = σ² − ε, so its eval is BN's eval and
needs no special case. The arithmetic runs in float64 (float32 on MPS) and is cast back to the
conv's dtype; the weight keeps its memory format (channels_last weights are never ``.view``-ed:
ultralytics PR #25363). The BN becomes ``nn.Identity`` at the same path, so module paths and
state_dict keys of everything else stay stable. timm's BN + activation layers
(BatchNormAct2d, SyncBatchNormAct, FrozenBatchNormAct2d: BN, then ``drop``, then ``act``) fold
the same way and become ``nn.Sequential(drop=..., act=...)``, their drop (dropout, DropBlock)
and activation kept at the same paths.

Three layers, as in ``torch.nn.utils.fusion``: `fold_bn_weights` on tensors, `fold_pair` on a
(conv, bn) pair, `fold` / `fold_with_report` on a model. Pairs are found with torch.fx
(`find_fold_pairs`): a call of a conv / linear module whose only consumer is a call of a
BN-family module. A model torch.fx cannot trace (data-dependent control flow) needs
``pairs=[(conv path, bn path), ...]``, which is trusted to describe the forward (the BN must
directly and only consume the conv's output) and checked for everything that can be checked
without running it. Refused, with a ConfigError naming the paths and the fix: a BN in training
mode or without running statistics, a conv output that has another consumer (a residual, a
second head: folding would change what that consumer sees), channel counts that differ, a BN
with ``channel_dim=-1`` after a conv, a module registered at two paths or called twice, tied
conv parameters, a conv weight with forward pre-hooks or with parametrizations that are not
normlab's (torch's weight norm would recompute the weight), and subclasses that override
``forward`` (their function may not be conv / BN). Every folded pair is logged on
``logging.getLogger("normlab.surgery")``.

Weight-side methods: normlab's parametrizations (weight norm, spectral norm, weight
standardization) are baked into plain weights everywhere in the model, in eval mode (no power
iteration), before folding: the folded model is a deployment model (`normlab.unparametrize`).

Linear + BN: the BN's channels must be the Linear's features, i.e. (N, F) input to a torch
BatchNorm1d / normlab BatchNorm, or any (N, *, F) with a normlab BN of ``channel_dim=-1``
(torch BatchNorm1d on (N, F, L) normalizes dim 1, which a Linear does not produce).
"""

from __future__ import annotations

import copy
import itertools
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.nn.utils import parametrize

from normlab import errors
from normlab.errors import ConfigError, did_you_mean
from normlab.norms._base import Norm
from normlab.norms.frozen_batch_norm import FrozenBatchNorm, _is_batch_norm
from normlab.surgery.layers import (
    channels,
    frozen_stats,
    has_custom_forward,
    is_norm_act,
    norm_act_tail,
)
from normlab.surgery.parametrize import only_normlab_parametrizations, unparametrize
from normlab.surgery.walker import Replacement, copy_model, not_a_model, replace_modules

__all__ = [
    "FoldResult",
    "FoldedPair",
    "find_fold_pairs",
    "fold",
    "fold_bn_weights",
    "fold_pair",
    "fold_with_report",
    "pair_problem",
]


# -- errors raised here ----------------------------------------------------------------------------


def fold_refused(problem: str, fix: str) -> ConfigError:
    """``fold: <what cannot be folded and why>. <how to fix it>``."""
    return ConfigError(f"fold: {problem}. {fix}.")


def fold_bn_in_training(bn: str) -> ConfigError:
    return ConfigError(
        f"fold requires eval mode: call model.eval() first ({bn} is in training mode, where "
        "it normalizes with the batch's statistics; folding bakes in its running statistics)."
    )


def fold_untraceable(where: str, reason: str, candidates: Sequence[tuple[str, str]]) -> ConfigError:
    """torch.fx could not trace the model: name the module and suggest explicit pairs."""
    if candidates:
        listed = ", ".join(f"({c!r}, {b!r})" for c, b in candidates)
        hint = (
            f" Candidates in registration order (check them against the forward): pairs=[{listed}]."
        )
    else:
        hint = ""
    return ConfigError(
        f"fold: torch.fx could not trace {where} ({reason}), so the (conv, BN) pairs cannot be "
        "found automatically. Pass them explicitly, each conv / linear path with the BN path "
        "that directly and only consumes its output: fold(model, pairs=[(\"layer1.0.conv1\", "
        f"\"layer1.0.bn1\"), ...]).{hint}"
    )


def fold_unknown_path(role: str, path: object, known: Sequence[str]) -> ConfigError:
    """A path in ``pairs=`` names no module of the model (did-you-mean over ``known``)."""
    hint = did_you_mean(str(path), known)
    shown = ", ".join(repr(k) for k in known[:20]) + (", ..." if len(known) > 20 else "")
    return ConfigError(
        f"fold: pairs= names the {role} {path!r}, which is not a module path of the model.{hint} "
        f"Paths of that kind: {shown or 'none'} (see model.named_modules())."
    )


def fold_with_pairs_hint(error: ConfigError, pairs: Sequence[tuple[str, str]]) -> ConfigError:
    """``error`` plus the explicit ``pairs=`` that folds every other pair torch.fx found."""
    if not pairs:
        return ConfigError(f"{error} torch.fx found no other pair that could be folded.")
    listed = ", ".join(f"({c!r}, {b!r})" for c, b in pairs)
    return ConfigError(
        f"{error} To fold only the other pairs torch.fx found: fold(model, pairs=[{listed}])."
    )


logger = logging.getLogger("normlab.surgery")

CONVS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
TRANSPOSED_CONVS: tuple[type[nn.Module], ...] = (
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
)
FOLD_TARGETS: tuple[type[nn.Module], ...] = (*CONVS, *TRANSPOSED_CONVS, nn.Linear)
_TARGET_NAMES = "Conv1d/2d/3d, ConvTranspose1d/2d/3d or Linear"
_PAIRS_EXAMPLE = 'e.g. pairs=[("layer1.0.conv1", "layer1.0.bn1")]'

Pair = tuple[str, str]


# -- tensors --------------------------------------------------------------------------------------


def _acc_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


def _output_channel_factor(
    scale: Tensor, weight_shape: torch.Size, transposed: bool, groups: int
) -> Tensor:
    """``scale`` (one per output channel) arranged to broadcast against the weight."""
    spatial = (1,) * (len(weight_shape) - 2)
    if not transposed:
        return scale.reshape(-1, 1, *spatial)
    in_channels, out_per_group = weight_shape[0], weight_shape[1]
    per_row = scale.reshape(groups, 1, out_per_group).expand(
        groups, in_channels // groups, out_per_group
    )
    return per_row.reshape(in_channels, out_per_group, *spatial)


@torch.no_grad()
def fold_bn_weights(
    weight: Tensor,
    bias: Tensor | None,
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    bn_weight: Tensor | None = None,
    bn_bias: Tensor | None = None,
    *,
    transposed: bool = False,
    groups: int = 1,
) -> tuple[Tensor, Tensor]:
    r"""The weight and bias of conv followed by BN eval, as one conv: (W·s, b·s + t).

    $$ s = \frac{\gamma}{\sqrt{\hat\sigma^2 + \epsilon}}, \quad t = \beta - \hat\mu\, s $$

    ``weight`` is a Conv / Linear weight (C_out, C_in / groups, *k), or with
    ``transposed=True`` a ConvTranspose weight (C_in, C_out / groups, *k); s multiplies each
    output channel's slice. Computed in float64; returns new tensors with ``weight``'s dtype,
    device and memory format (the bias: ``bias``'s dtype, else ``weight``'s). Pure.

    Example:
        >>> w, b = fold_bn_weights(torch.ones(2, 1), None, torch.tensor([1.0, 0.0]),
        ...                        torch.tensor([4.0, 1.0]), 0.0, torch.tensor([2.0, 3.0]))
        >>> w.flatten().tolist(), b.tolist()
        ([1.0, 3.0], [-1.0, 0.0])
    """
    if groups < 1 or weight.dim() < 2 or (transposed and weight.shape[0] % groups):
        raise fold_refused(
            f"a weight of shape {tuple(weight.shape)} with groups={groups} is not a conv weight",
            "Pass a Conv / Linear weight (C_out, C_in / groups, *k) or, with transposed=True, a "
            "ConvTranspose weight (C_in, C_out / groups, *k)",
        )
    out_channels = weight.shape[1] * groups if transposed else weight.shape[0]
    if running_mean.shape != (out_channels,) or running_var.shape != (out_channels,):
        raise fold_refused(
            f"the BN statistics have shape {tuple(running_mean.shape)} but the weight of shape "
            f"{tuple(weight.shape)} has {out_channels} output channels",
            "The BN must normalize the conv's output channels: num_features == out_channels",
        )
    acc = _acc_dtype(weight.device)

    def wide(t: Tensor) -> Tensor:
        return t.detach().to(device=weight.device, dtype=acc)

    scale = (wide(running_var) + eps).rsqrt()
    if bn_weight is not None:
        scale = scale * wide(bn_weight)
    beta = torch.zeros_like(scale) if bn_bias is None else wide(bn_bias)
    shift = beta - wide(running_mean) * scale
    factor = _output_channel_factor(scale, weight.shape, transposed, groups)
    # empty_like keeps the weight's strides (channels_last stays channels_last), copy_ rounds
    new_weight = torch.empty_like(weight.detach()).copy_(wide(weight) * factor)
    new_bias = shift if bias is None else wide(bias) * scale + shift
    return new_weight, new_bias.to(weight.dtype if bias is None else bias.dtype)


# -- one pair -------------------------------------------------------------------------------------


def _named(role: str, path: str | None, module: nn.Module) -> str:
    """``conv 'layer1.0.conv1' (Conv2d)``: how errors name a layer."""
    where = "" if path is None else f" {path!r}"
    return f"{role}{where} ({type(module).__name__})"


def _overrides_conv(module: nn.Module) -> bool:
    """A user subclass that changes how the conv computes (forward, _conv_forward, children).

    normlab's weight-side parametrizations are not such a change: they are baked first."""
    if parametrize.is_parametrized(module) and only_normlab_parametrizations(module):
        if set(module._modules) != {"parametrizations"}:
            return True
    elif has_custom_forward(module):
        return True
    if not hasattr(module, "_conv_forward"):
        return False
    owner = next(k for k in type(module).__mro__ if "_conv_forward" in vars(k))
    return not owner.__module__.startswith("torch.nn.modules.")


def _target_problem(name: str, conv: nn.Module) -> errors.ConfigError | None:
    if not isinstance(conv, FOLD_TARGETS):
        return fold_refused(
            f"{name} is not a {_TARGET_NAMES} layer",
            "Each pair is (path of the layer whose output the BN normalizes, path of the BN), "
            + _PAIRS_EXAMPLE,
        )
    if isinstance(conv.weight, nn.parameter.UninitializedParameter):
        return fold_refused(
            f"{name} is a lazy layer that has not seen input yet", "Run one forward pass first"
        )
    if (parametrize.is_parametrized(conv) and not only_normlab_parametrizations(conv)) or (
        conv._forward_pre_hooks
    ):
        return fold_refused(
            f"{name} has a parametrized weight or forward pre-hooks (weight norm / spectral "
            "norm recompute the weight at every call and would overwrite the folded one)",
            "Remove them first (torch.nn.utils.parametrize.remove_parametrizations(layer, "
            "'weight') or torch.nn.utils.remove_weight_norm(layer)), or leave this pair out",
        )
    if _overrides_conv(conv):
        return fold_refused(
            f"{name} is a subclass that overrides forward or _conv_forward (or holds child "
            "modules), so its output may not be the plain conv that folding assumes",
            "Leave this pair out (pass pairs= without it) or replace the layer by a plain one",
        )
    return None


def _in_training(bn: nn.Module) -> bool:
    """In training mode a BN normalizes with batch statistics (FrozenBatchNorm never does)."""
    return bn.training and not isinstance(bn, FrozenBatchNorm) and not frozen_stats(bn)


def _is_bn(module: nn.Module) -> bool:
    """A BN-family layer, or timm's BN + activation (BatchNormAct2d, SyncBatchNormAct,
    FrozenBatchNormAct2d: BN eval, then ``drop``, then ``act``, which stay)."""
    return _is_batch_norm(module) or (is_norm_act(module) and frozen_stats(module))


def _folded_away(bn: nn.Module) -> nn.Module:
    """What replaces a folded BN: ``nn.Identity``, or for timm's BatchNormAct2d its drop and
    activation, ``nn.Sequential(drop=..., act=...)`` (their paths and state_dict keys stay)."""
    tail = norm_act_tail(bn)
    new = nn.Sequential(OrderedDict(tail)) if tail else nn.Identity()
    return new.train(bn.training)


def _bn_problem(name: str, bn: nn.Module) -> errors.ConfigError | None:
    if not _is_bn(bn):
        return fold_refused(
            f"{name} is not a BN-family layer (torch.nn BatchNorm*d / SyncBatchNorm, normlab "
            "BatchNorm, GhostBatchNorm, BatchRenorm, FrozenBatchNorm)",
            "Only layers whose eval function is BN's fold into a conv; " + _PAIRS_EXAMPLE,
        )
    if has_custom_forward(bn) and not is_norm_act(bn):
        return fold_refused(
            f"{name} is a subclass that overrides forward (or holds child modules), so its eval "
            "function may not be BN's (timm's BatchNormAct2d adds an activation)",
            "Leave this pair out (pass pairs= without it) or replace the layer by a plain BN",
        )
    if _in_training(bn):
        return fold_bn_in_training(name)
    mean, var = getattr(bn, "running_mean", None), getattr(bn, "running_var", None)
    if not isinstance(mean, Tensor) or not isinstance(var, Tensor):
        if getattr(bn, "track_running_stats", None) is False:
            why = (f"{name} keeps no running statistics (track_running_stats=False), so in eval "
                   "it normalizes with each batch's statistics, which no weight can hold")
        else:
            missing = [k for k, v in (("running_mean", mean), ("running_var", var))
                       if not isinstance(v, Tensor)]
            why = (f"{name} has no {' and no '.join(missing)}, and the folded weight and bias "
                   "are made from both running statistics")
        return fold_refused(
            why,
            "Fold only BNs with running statistics (recalibrate them first, or convert the "
            "layer to FrozenBatchNorm with known statistics)",
        )
    if isinstance(mean, nn.parameter.UninitializedBuffer):
        return fold_refused(
            f"{name} is a lazy layer that has not seen input yet", "Run one forward pass first"
        )
    return None


def _out_channels(conv: nn.Module) -> int:
    return int(conv.out_features if isinstance(conv, nn.Linear) else conv.out_channels)


def pair_problem(conv_name: str, conv: nn.Module, bn_name: str, bn: nn.Module
                 ) -> errors.ConfigError | None:
    """Why (conv, bn) cannot be folded, as the error to raise; None when it can."""
    problem = _target_problem(conv_name, conv) or _bn_problem(bn_name, bn)
    if problem is not None:
        return problem
    if getattr(bn, "channel_dim", 1) != 1 and not isinstance(conv, nn.Linear):
        return fold_refused(
            f"{bn_name} normalizes the last dim (channel_dim=-1), but the output channels of "
            f"{conv_name} are at dim 1",
            "Only a BN over the conv's output channels folds; leave this pair out",
        )
    if bn.running_mean.shape[0] != _out_channels(conv):
        return fold_refused(
            f"{bn_name} has {bn.running_mean.shape[0]} channels but {conv_name} produces "
            f"{_out_channels(conv)}",
            "A pair is a layer and the BN that normalizes its output; check the paths in pairs=",
        )
    return None


def _fold_into(conv: nn.Module, bn: nn.Module) -> None:
    """Write bn's eval affine into conv's weight and bias, in place (keeps the Parameters)."""
    weight, bias = fold_bn_weights(
        conv.weight, conv.bias, bn.running_mean, bn.running_var, float(bn.eps),
        getattr(bn, "weight", None), getattr(bn, "bias", None),
        transposed=isinstance(conv, TRANSPOSED_CONVS), groups=int(getattr(conv, "groups", 1)),
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if conv.bias is None:
            conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)
        else:
            conv.bias.copy_(bias)


def fold_pair(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``conv`` with ``bn``'s eval function folded in: new(x) = bn.eval()(conv(x)).

    ``conv``: Conv1d/2d/3d, ConvTranspose1d/2d/3d (any groups) or Linear, with or without bias;
    ``bn``: a BN-family layer in eval mode with running statistics (see the module docstring).
    Neither argument is modified.

    Example:
        >>> conv, bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).eval()
        >>> x = torch.randn(2, 3, 8, 8)
        >>> torch.allclose(fold_pair(conv, bn)(x), bn(conv(x)), atol=1e-6)
        True
    """
    problem = pair_problem(_named("conv", None, conv), conv, _named("bn", None, bn), bn)
    if problem is not None:
        raise problem
    folded = copy.deepcopy(conv)
    _fold_into(folded, bn)
    return folded


# -- finding pairs --------------------------------------------------------------------------------


class _PairTracer(fx.Tracer):
    """Keeps conv / linear / norm layers whole (normlab norms check shapes in Python, which a
    symbolic trace cannot run) and remembers the innermost module a failure came from."""

    def __init__(self) -> None:
        super().__init__()
        self.failed_in: str | None = None  # the failing module, as the error names it

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, (*FOLD_TARGETS, Norm)) or _is_bn(m) or is_norm_act(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(
        self,
        m: nn.Module,
        forward: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                path = next((p for p, mod in self.root.named_modules() if mod is m), None)
                self.failed_in = _named("module", path, m) if path is not None else (
                    f"a {type(m).__name__} that is not a submodule of the model (held in a "
                    "plain list or dict, not an nn.ModuleList / nn.ModuleDict)"
                )
            raise


def _registration_candidates(model: nn.Module) -> list[Pair]:
    """(conv, BN) leaves registered one after the other with matching channels: a guess."""
    leaves = [(p, m) for p, m in model.named_modules() if not m._modules]
    return [
        (p, q)
        for (p, m), (q, n) in itertools.pairwise(leaves)
        if isinstance(m, FOLD_TARGETS) and _is_bn(n)
        and channels(n) == _out_channels(m)
    ]


def _consumer(node: fx.Node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    if node.op == "output":
        return "the model's output"
    name = getattr(node.target, "__name__", node.target)
    return f"{name}()" if node.op == "call_function" else f".{name}()"


def _trace(model: nn.Module) -> fx.Graph:
    tracer = _PairTracer()
    try:
        return tracer.trace(model)
    except Exception as err:  # any failure of symbolic tracing means: pass pairs= instead
        where = tracer.failed_in or f"the forward of {type(model).__name__}"
        first = str(err).splitlines()[0] if str(err) else ""  # a bare `raise TypeError`: ""
        reason = f"{type(err).__name__}: {first}" if first else type(err).__name__
        raise fold_untraceable(where, reason, _registration_candidates(model)) from None


def _find(model: nn.Module) -> list[Pair]:
    """Pairs found with torch.fx, every one checked; raises for the first that cannot fold."""
    graph = _trace(model)
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    found: list[tuple[Pair, errors.ConfigError | None]] = []
    for node in graph.nodes:
        if node.op != "call_module" or not _is_bn(model.get_submodule(node.target)):
            continue
        source = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
        if not (isinstance(source, fx.Node) and source.op == "call_module"):
            continue
        conv_path, bn_path = str(source.target), str(node.target)
        conv, bn = model.get_submodule(conv_path), model.get_submodule(bn_path)
        if not isinstance(conv, FOLD_TARGETS):
            continue
        conv_name, bn_name = _named("conv", conv_path, conv), _named("bn", bn_path, bn)
        if _in_training(bn):  # the fix is model.eval(), whatever else is found
            raise fold_bn_in_training(bn_name)
        problem = pair_problem(conv_name, conv, bn_name, bn)
        if problem is None and len(source.users) > 1:
            others = [_consumer(u) for u in source.users if u is not node]
            problem = fold_refused(
                f"the output of {conv_name} is also used by {', '.join(others)}, not only by "
                f"{bn_name}; folding would change what that consumer sees",
                "Leave this pair out, or let that consumer read the BN's output instead",
            )
        if problem is None and max(calls[conv_path], calls[bn_path]) > 1:
            twice = conv_name if calls[conv_path] > 1 else bn_name
            problem = fold_refused(
                f"{twice} is called more than once in the forward, so folding this pair would "
                "change its other calls too",
                "Give each call its own module (copy.deepcopy), or leave this pair out",
            )
        found.append(((conv_path, bn_path), problem))
    for _, problem in found:
        if problem is not None:
            raise fold_with_pairs_hint(problem, [p for p, bad in found if bad is None])
    return [pair for pair, _ in found]


def find_fold_pairs(model: nn.Module) -> list[Pair]:
    """The (conv path, bn path) pairs `fold` folds, found with torch.fx, in forward order.

    A pair is a call of a Conv1d/2d/3d, ConvTranspose1d/2d/3d or Linear module whose only
    consumer is a call of a BN-family module. Raises a ConfigError when the model cannot be
    traced (suggesting ``pairs=``) or when a pair cannot be folded (module docstring).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
        >>> find_fold_pairs(net)
        [('0', '1')]
    """
    if not isinstance(model, nn.Module):
        raise not_a_model("find_fold_pairs", model)
    return _find(model)


def _given_pairs(model: nn.Module, pairs: object) -> list[Pair]:
    """``pairs=`` checked: a list of (conv path, bn path) str tuples naming foldable layers."""
    items = None
    if isinstance(pairs, Iterable) and not isinstance(pairs, (str, bytes)):
        items = list(pairs)
    if items is None or not all(
        isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(s, str) for s in p)
        for p in items
    ):
        raise fold_refused(
            f"pairs must be a list of (conv path, bn path) tuples of str; got {pairs!r}",
            f"Pass {_PAIRS_EXAMPLE}, or leave pairs=None to find them with torch.fx",
        )
    modules = dict(model.named_modules())
    checked: list[Pair] = []
    for conv_path, bn_path in items:
        for role, path, kind in (("conv", conv_path, FOLD_TARGETS), ("bn", bn_path, None)):
            if path not in modules:
                known = [
                    p for p, m in modules.items()
                    if (isinstance(m, kind) if kind else _is_bn(m))
                ]
                raise fold_unknown_path(role, path, known)
        conv, bn = modules[conv_path], modules[bn_path]
        problem = pair_problem(
            _named("conv", conv_path, conv), conv, _named("bn", bn_path, bn), bn
        )
        if problem is not None:
            raise problem
        checked.append((conv_path, bn_path))
    return checked


def _check_unshared(model: nn.Module, pairs: list[Pair]) -> None:
    """Every folded module is used once: one path, not in two pairs, parameters not tied."""
    paths: dict[int, list[str]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        paths.setdefault(id(module), []).append(path)
    names: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    seen: dict[int, Pair] = {}
    for pair, path in ((q, p) for q in pairs for p in q):
        module = model.get_submodule(path)
        where = _named("module", path, module)
        if id(module) in seen:
            raise fold_refused(
                f"{where} appears in two pairs of pairs=, {seen[id(module)]!r} and {pair!r}",
                "Each conv and each BN folds once; remove the duplicate from pairs=",
            )
        seen[id(module)] = pair
        if len(paths[id(module)]) > 1:
            raise fold_refused(
                f"{where} is registered at several paths ({', '.join(paths[id(module)])}), so "
                "folding would change every use of it",
                "Give each use its own module (copy.deepcopy) before folding, or leave it out",
            )
        for param in module.parameters(recurse=False):
            if len(names[id(param)]) > 1:
                raise fold_refused(
                    f"{where} shares a parameter with another module ({', '.join(names[id(param)])}"
                    "), so folding would change that module too",
                    "Untie the weights first, or leave this pair out",
                )


# -- models ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoldedPair:
    """One BN folded into the layer before it; the BN's path now holds ``nn.Identity`` (or,
    for timm's BatchNormAct2d, ``kept``: its drop and activation, in an ``nn.Sequential``)."""

    conv: str
    bn: str
    conv_type: type
    bn_type: type
    kept: tuple[str, ...] = ()

    def __str__(self) -> str:
        into = f"Sequential({', '.join(self.kept)})" if self.kept else "Identity"
        return (f"{self.bn}: {self.bn_type.__name__} -> {into} (folded into {self.conv}, "
                f"{self.conv_type.__name__})")


@dataclass(frozen=True)
class FoldResult:
    """What `fold_with_report` did: the model, the folded pairs in order, the walker's
    replacements (path, BN type, Identity) and the BN-family paths left in the model (not
    directly after a conv / linear, or not listed in ``pairs=``)."""

    model: nn.Module
    folded: tuple[FoldedPair, ...]
    replacements: tuple[Replacement, ...]
    unfolded: tuple[str, ...]


def fold_with_report(
    model: nn.Module, *, pairs: Iterable[tuple[str, str]] | None = None, inplace: bool = False
) -> FoldResult:
    """`fold`, returning a `FoldResult` (model and report) instead of the model alone.

    Args:
        pairs: the (conv / linear path, BN path) pairs to fold; None: trace the model.
    """
    if not isinstance(model, nn.Module):
        raise not_a_model("fold", model)
    chosen = _find(model) if pairs is None else _given_pairs(model, pairs)
    _check_unshared(model, chosen)  # everything is checked before anything is changed
    root = model if inplace else copy_model(model)
    unparametrize(root, inplace=True)  # deployment: every weight-side method baked in
    folded = []
    for conv_path, bn_path in chosen:
        conv, bn = root.get_submodule(conv_path), root.get_submodule(bn_path)
        _fold_into(conv, bn)
        kept = tuple(name for name, _ in norm_act_tail(bn))
        folded.append(FoldedPair(conv_path, bn_path, type(conv), type(bn), kept))
        logger.info("fold: %s", folded[-1])
    bn_paths = {bn for _, bn in chosen}
    root, replacements = replace_modules(
        root, lambda path, m: _folded_away(m) if path in bn_paths else None, inplace=True
    )
    unfolded = tuple(p for p, m in root.named_modules() if _is_bn(m))
    return FoldResult(root, tuple(folded), tuple(replacements), unfolded)


def fold(
    model: nn.Module, *, pairs: Iterable[tuple[str, str]] | None = None, inplace: bool = False
) -> nn.Module:
    """Fold every BN-family layer that directly follows a conv / linear layer into it.

    Returns the model with each such BN folded into the weight and bias of the layer before
    it and replaced by ``nn.Identity`` (math, supported layers and refusals: module
    docstring); in eval mode it computes what the original computes, up to rounding. Pairs are
    found with torch.fx unless ``pairs=[(conv path, bn path), ...]`` lists them (needed for
    models torch.fx cannot trace; trusted to match the forward). Deep-copies the model unless
    ``inplace=True``; nothing is changed when an error is raised. `fold_with_report` also
    returns what was folded and which BN layers remain.

    Args:
        pairs: the (conv / linear path, BN path) pairs to fold, instead of those torch.fx
            finds; None: trace the model.

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
        >>> folded = fold(net)
        >>> folded
        Sequential(
          (0): Conv2d(3, 4, kernel_size=(3, 3), stride=(1, 1))
          (1): Identity()
          (2): ReLU()
        )
        >>> x = torch.randn(2, 3, 8, 8)
        >>> torch.allclose(folded(x), net(x), atol=1e-6)
        True
    """
    return fold_with_report(model, pairs=pairs, inplace=inplace).model


