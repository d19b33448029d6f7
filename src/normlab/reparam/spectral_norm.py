"""Spectral Normalization (Miyato, Kataoka, Koyama & Yoshida 2018, arXiv:1802.05957).

$$ W_{SN} = L\\,\\frac{W}{\\hat σ(W)}, \\qquad \\hat σ(W) = u^\\top A\\, v, $$

with A the weight as a (units, fan-in) matrix (the paper's surrogate) or, with
``exact_conv=True``, the convolution the layer computes at one input size (Sedghi et al. 2019,
arXiv:1805.10408; Gouk et al. 2021, arXiv:1804.04368), and u, v the persistent power-iteration
estimates of its leading singular vectors. L (``lipschitz``) is 1 in the paper.
"""

from __future__ import annotations

import functools
import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from normlab.errors import ConfigError, InputError
from normlab.reparam._base import (
    WeightParametrization,
    applied_twice,
    as_matrix,
    check_dim,
    find,
    from_matrix,
    no_such_tensor,
    not_a_module,
    output_dim,
    register_once,
    weight_of,
)
from normlab.reparam._entry import WeightEntry
from normlab.reparam._power_iteration import (
    ConvGeometry,
    conv_apply,
    conv_geometry,
    power_iterate_,
    random_unit,
)

# torch's parametrizations.spectral_norm starts u, v this warm (pytorch/pytorch PR #59564)
_WARM_UP_ITERATIONS = 15

# -- errors raised here ----------------------------------------------------------------------------


def bad_iterations(value: object) -> ConfigError:
    return ConfigError(
        f"spectral_norm: n_power_iterations must be an int >= 1; got {value!r}. One iteration "
        "per training forward is the paper's default (u persists between forwards)."
    )


def bad_eps(value: object) -> ConfigError:
    return ConfigError(
        f"spectral_norm: eps must be a positive finite float; got {value!r}. It is the norm "
        "below which a power-iteration step keeps the previous vector; the usual value is 1e-12."
    )


def bad_lipschitz(value: object) -> ConfigError:
    return ConfigError(
        f"spectral_norm: lipschitz must be a positive finite float; got {value!r}. It is the "
        "spectral norm the weight is scaled to; the paper uses 1.0."
    )


def dim_with_exact_conv(dim: object) -> ConfigError:
    return ConfigError(
        f"spectral_norm: dim={dim!r} has no meaning with exact_conv=True (the operator is the "
        "convolution itself, not a reshaped matrix). Leave dim=None."
    )


def input_size_without_exact_conv(input_size: object) -> ConfigError:
    return ConfigError(
        f"spectral_norm: input_size={input_size!r} is only used with exact_conv=True; pass "
        "exact_conv=True too, or drop input_size for the reshaped-matrix norm."
    )


def scalar_weight(module: nn.Module, name: str) -> ConfigError:
    return ConfigError(
        f"spectral_norm: {type(module).__name__}.{name} is a 0-dimensional tensor, which has no "
        "spectral norm; apply it to a weight with at least one dimension."
    )


def bad_vector(which: str, got: tuple[int, ...], expected: tuple[int, ...]) -> InputError:
    return InputError(
        f"spectral_normalized_weight: {which} has shape {got}; the weight's (units, fan-in) "
        f"matrix needs {expected}. u has one entry per output unit (along dim), v one per fan-in."
    )


# -- validation ------------------------------------------------------------------------------------


def _check_iterations(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise bad_iterations(value)
    return value


def _check_positive(value: object, error: Any) -> float:
    finite = not isinstance(value, bool) and isinstance(value, (int, float))
    if not finite or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type]  # a number here
        raise error(value)
    return float(value)  # type: ignore[arg-type]  # checked above


# -- the math --------------------------------------------------------------------------------------


def _scale(sigma: Tensor, lipschitz: float) -> Tensor:
    # σ̂ = 0 only for a zero weight (or u, v orthogonal to it): dividing by 1 instead keeps the
    # result 0 and its gradient finite (lipschitz · g) where W/σ̂ would be 0/0 = NaN.
    return lipschitz / sigma.masked_fill(sigma == 0, 1.0)


def _sigma(weight: Tensor, u: Tensor, v: Tensor, dim: int) -> Tensor:
    return torch.vdot(u, torch.mv(as_matrix(weight, dim), v))


@torch.library.custom_op("normlab::matrix_spectral_norm", mutates_args=())
def _matrix_spectral_norm_op(
    weight: Tensor, u: Tensor, v: Tensor, lipschitz: float, dim: int
) -> Tensor:
    """``L · W / σ̂`` with σ̂ = uᵀ W_mat v (u, v constants) and a backward of three passes over W:

    $$ \\partial W = s\\,\\Big(G - \\frac{\\langle G, W\\rangle}{\\hat σ}\\, u v^\\top\\Big),
       \\qquad s = L / \\hat σ, $$

    (G the gradient of the result) where autograd's composition of the same ops makes six
    weight-sized temporaries (1.3-1.4x a Linear(1024, 1024) step instead of 1.1x). The σ̂ term
    is dropped where σ̂ = 0 was replaced by 1. The backward recomputes σ̂ from W (one read of
    W) in differentiable ops, so a second derivative (a gradient penalty's) is exact.
    """
    return weight * _scale(_sigma(weight, u, v, dim), lipschitz)


@_matrix_spectral_norm_op.register_fake
def _(weight: Tensor, u: Tensor, v: Tensor, lipschitz: float, dim: int) -> Tensor:
    return torch.empty_like(weight)


def _save(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    weight, u, v, lipschitz, dim = inputs
    ctx.save_for_backward(weight, u, v)
    ctx.lipschitz, ctx.dim = lipschitz, dim


def _matrix_spectral_norm_backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None, None]:
    weight, u, v = ctx.saved_tensors
    sigma = _sigma(weight, u, v, ctx.dim)
    scale = _scale(sigma, ctx.lipschitz)
    grad_weight = (grad * scale).contiguous()
    inner = torch.vdot(grad.reshape(-1), weight.reshape(-1))
    coefficient = (inner * scale / sigma).masked_fill(sigma == 0, 0.0)
    if ctx.dim == 0:  # a view of grad_weight: the rank-one term is added in place
        grad_weight.view(u.shape[0], -1).addr_(u * coefficient, v, alpha=-1)
    else:
        grad_weight.sub_(from_matrix(torch.outer(u * coefficient, v), weight, ctx.dim))
    return grad_weight, None, None, None, None


_matrix_spectral_norm_op.register_autograd(_matrix_spectral_norm_backward, setup_context=_save)


class _MatrixSpectralNormFunction(torch.autograd.Function):
    """`_matrix_spectral_norm_op` for eager mode: the same forward and backward, without the
    custom op's dispatch (about 1 ms of Python per Linear(1024, 1024) step)."""

    @staticmethod
    def forward(  # type: ignore[override]  # autograd.Function's signature is (ctx, *args)
        ctx: Any, weight: Tensor, u: Tensor, v: Tensor, lipschitz: float, dim: int
    ) -> Tensor:
        _save(ctx, (weight, u, v, lipschitz, dim), weight)
        return weight * _scale(_sigma(weight, u, v, dim), lipschitz)

    @staticmethod
    def backward(  # type: ignore[override]  # see forward
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor, None, None, None, None]:
        return _matrix_spectral_norm_backward(ctx, grad)


def _matrix_spectral_norm(
    weight: Tensor, u: Tensor, v: Tensor, lipschitz: float, dim: int
) -> Tensor:
    # dynamo traces an autograd.Function through a path that raises a DeprecationWarning
    # (an error under this project's filterwarnings); the custom op compiles cleanly.
    if torch.compiler.is_compiling():
        return _matrix_spectral_norm_op(weight, u, v, lipschitz, dim)
    return _MatrixSpectralNormFunction.apply(weight, u, v, lipschitz, dim)


def spectral_normalized_weight(
    weight: Tensor, u: Tensor, v: Tensor, *, dim: int = 0, lipschitz: float = 1.0
) -> Tensor:
    """``lipschitz · W / (uᵀ W_mat v)``, the spectrally normalized weight for given u, v (pure).

    $$ W_{SN} = L\\,\\frac{W}{u^\\top W_{mat}\\, v} $$

    with W_mat the weight as a (units, fan-in) matrix, units along ``dim`` (Miyato et al.
    2018, eq. 12). Nothing is mutated and no power iteration runs: pass converged u, v (or
    the ``_u`` / ``_v`` buffers of a `spectral_norm` module). A zero σ̂ (zero weight) gives
    ``lipschitz · W``, i.e. zero, never NaN.

    Args:
        weight: a tensor with at least two dimensions.
        u: the left singular vector estimate, shape (units,).
        v: the right singular vector estimate, shape (fan-in,).
        dim: the dimension of the output units (1 for a ConvTranspose weight).
        lipschitz: the spectral norm L of the result.

    Example:
        >>> w = torch.diag(torch.tensor([3.0, 1.0]))
        >>> spectral_normalized_weight(w, torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]))
        tensor([[1.0000, 0.0000],
                [0.0000, 0.3333]])
    """
    matrix_dim = check_dim("spectral_normalized_weight", dim, max(weight.ndim, 1))
    matrix = as_matrix(weight, matrix_dim)
    for which, vector, size in (("u", u, matrix.shape[0]), ("v", v, matrix.shape[1])):
        if tuple(vector.shape) != (size,):
            raise bad_vector(which, tuple(vector.shape), (size,))
    return _matrix_spectral_norm(weight, u, v, lipschitz, matrix_dim)


# -- the parametrization ---------------------------------------------------------------------------


class SpectralNorm(WeightParametrization):
    """``forward(W) = lipschitz · W / σ̂(W)`` with persistent power-iteration vectors.

    Buffers ``_u`` and ``_v`` (the names of ``torch.nn.utils.parametrizations.spectral_norm``,
    so its state dicts load as they are): shape (units,) and (fan-in,) for the matrix, or one
    output and one input of the convolution (``exact_conv``). ``n_power_iterations`` steps of
    v ← Aᵀu/‖Aᵀu‖, u ← Av/‖Av‖ run in place, without autograd, on every forward in training
    mode only; σ̂ = uᵀAv is then computed from clones of u, v, so gradients flow through W
    alone (Miyato et al. 2018 §2.1) and a second forward never changes what the first one's
    backward needs. A 1-D weight is divided by its exact norm, with no buffers.
    """

    method: ClassVar[str] = "spectral_norm"
    has_state: ClassVar[bool] = True

    def __init__(
        self,
        weight: Tensor,
        *,
        n_power_iterations: int = 1,
        eps: float = 1e-12,
        lipschitz: float = 1.0,
        dim: int = 0,
        geometry: ConvGeometry | None = None,
    ) -> None:
        super().__init__()
        self.n_power_iterations = n_power_iterations
        self.eps = eps
        self.lipschitz = lipschitz
        self.dim = dim
        self.geometry = geometry
        if weight.ndim > 1:
            operator = self._operator(weight.detach())
            if geometry is None:
                u_shape, v_shape = (operator.shape[0],), (operator.shape[1],)
            else:
                u_shape, v_shape = geometry.output_shape, geometry.input_shape
            self.register_buffer("_u", random_unit(u_shape, weight))
            self.register_buffer("_v", random_unit(v_shape, weight))
            power_iterate_(operator, self._u, self._v, _WARM_UP_ITERATIONS, eps, geometry)

    def _operator(self, weight: Tensor) -> Tensor:
        return weight if self.geometry is not None else as_matrix(weight, self.dim)

    def forward(self, weight: Tensor) -> Tensor:
        if weight.ndim == 1:
            return weight * _scale(torch.linalg.vector_norm(weight), self.lipschitz)
        operator = self._operator(weight)
        if self.training:
            power_iterate_(
                operator, self._u, self._v, self.n_power_iterations, self.eps, self.geometry
            )
        # Clones: the in-place updates of a later forward (GAN's D(real) then D(fake)) must not
        # change the u, v that this forward's backward reads.
        u = self._u.clone(memory_format=torch.contiguous_format)
        v = self._v.clone(memory_format=torch.contiguous_format)
        if self.geometry is None:
            return _matrix_spectral_norm(weight, u, v, self.lipschitz, self.dim)
        sigma = torch.vdot(u.reshape(-1), conv_apply(weight, v, self.geometry).reshape(-1))
        return weight * _scale(sigma, self.lipschitz)

    def right_inverse(self, value: Tensor) -> Tensor:
        """Assigning ``module.weight = W`` stores W as the unnormalized original."""
        return value

    def warm_vectors(self, weight: Tensor) -> tuple[Tensor, Tensor]:
        """New u, v: 15 power iterations on ``weight``, started from this module's."""
        u, v = self._u.clone(), self._v.clone()
        operator = self._operator(weight.detach().to(u))
        power_iterate_(operator, u, v, _WARM_UP_ITERATIONS, self.eps, self.geometry)
        return u, v

    def extra_repr(self) -> str:
        mode = (
            "matrix"
            if self.geometry is None
            else f"exact_conv, input {self.geometry.input_shape[2:]}"
        )
        return (
            f"{mode}, n_power_iterations={self.n_power_iterations}, eps={self.eps}, "
            f"lipschitz={self.lipschitz}, dim={self.dim}"
        )


# -- checkpoints -----------------------------------------------------------------------------------


def _located(module: nn.Module, name: str) -> tuple[int, SpectralNorm] | None:
    found = find(module, name, SpectralNorm)
    if found is None:
        return None
    return list(module.parametrizations[name]).index(found), found  # type: ignore[return-value]


def load_checkpoint_hook(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: dict[str, Any],
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
    *,
    name: str,
) -> None:
    """Rewrite other spectral-norm checkpoints of ``module.<name>`` into normlab's keys.

    - ``torch.nn.utils.spectral_norm`` (hook-based): ``<name>_orig``, ``<name>_u``,
      ``<name>_v`` become ``parametrizations.<name>.original`` and ``….<i>._u`` / ``._v``
      (same vectors, same roles).
    - ``torch.nn.utils.parametrizations.spectral_norm``: already normlab's keys.
    - A plain layer's ``<name>``: becomes the original.
    In every case u, v that are missing or of another shape (a checkpoint of the other mode)
    are re-estimated with 15 power iterations on the loaded weight.
    """
    located = _located(module, name)
    if located is None:  # unparametrized since: a plain module loads as usual
        return
    index, sn = located
    original = f"{prefix}parametrizations.{name}.original"
    u_key, v_key = (
        f"{prefix}parametrizations.{name}.{index}._u",
        f"{prefix}parametrizations.{name}.{index}._v",
    )
    if original not in state_dict:
        if f"{prefix}{name}_orig" in state_dict:
            state_dict[original] = state_dict.pop(f"{prefix}{name}_orig")
            for old, new in ((f"{prefix}{name}_u", u_key), (f"{prefix}{name}_v", v_key)):
                if old in state_dict:
                    state_dict[new] = state_dict.pop(old)
        elif f"{prefix}{name}" in state_dict:
            state_dict[original] = state_dict.pop(f"{prefix}{name}")
    weight = state_dict.get(original)
    if (
        index != 0  # the original is an earlier parametrization's input, not spectral norm's
        or not hasattr(sn, "_u")
        or not isinstance(weight, Tensor)
        or weight.shape != weight_of(module, name).shape
    ):
        return
    stored = (state_dict.get(u_key), state_dict.get(v_key))
    if any(
        not isinstance(s, Tensor) or s.shape != b.shape
        for s, b in zip(stored, (sn._u, sn._v), strict=True)
    ):
        state_dict[u_key], state_dict[v_key] = sn.warm_vectors(weight)


# -- the public function ---------------------------------------------------------------------------


def spectral_norm(
    module: nn.Module,
    name: str = "weight",
    *,
    n_power_iterations: int = 1,
    eps: float = 1e-12,
    lipschitz: float = 1.0,
    dim: int | None = None,
    exact_conv: bool = False,
    input_size: int | tuple[int, ...] | None = None,
) -> nn.Module:
    """Spectral normalization of ``module.<name>``: divide it by its largest singular value.

    $$ W_{SN} = L\\,\\frac{W}{\\hat σ(W)},\\quad \\hat σ(W) = u^\\top A v,\\quad
       v \\leftarrow \\frac{A^\\top u}{\\lVert A^\\top u \\rVert_2},\\;
       u \\leftarrow \\frac{A v}{\\lVert A v \\rVert_2} $$

    By default A is the weight as a (units, fan-in) matrix, units along ``dim`` — the paper's
    surrogate, which is *not* the operator norm of a convolution. With ``exact_conv=True``, A
    is the convolution itself at inputs of spatial size ``input_size`` (power iteration
    through ``F.conv{n}d`` / ``F.conv_transpose{n}d``, u one output, v one input), so the
    layer's true Lipschitz constant at that size is ``lipschitz``. Inputs of another size run
    as usual, but the bound is then only approximate: the norm of a zero-padded convolution
    depends on the input size (it grows towards the circular-convolution bound of Sedghi et
    al. as the input grows).

    The power iteration runs only in training mode (the parametrization's own ``training``
    flag); u, v start from random unit vectors plus 15 iterations, as in torch. A zero weight
    stays zero (σ̂ = 0 is replaced by 1), with finite gradients, and u, v are kept until the
    weight is nonzero again. A load_state_dict pre-hook on ``module`` reads checkpoints of
    ``torch.nn.utils.spectral_norm`` (``weight_orig``, ``weight_u``, ``weight_v``), of
    ``torch.nn.utils.parametrizations.spectral_norm`` and of the plain layer.

    Args:
        module: the layer (nn.Linear, nn.Conv*d, nn.ConvTranspose*d, nn.Embedding, ...).
        name: the parameter to normalize.
        n_power_iterations: power-iteration steps per training forward (>= 1).
        eps: a step whose image has norm <= eps keeps the previous vector.
        lipschitz: L, the spectral norm of the result.
        dim: the output units' dimension; None: 1 for ConvTranspose, else 0.
        exact_conv: use the convolution operator's norm instead of the reshaped matrix's
            (convolutions with padding_mode='zeros').
        input_size: the spatial size of the layer's input; required with ``exact_conv``.

    Returns:
        ``module``, changed in place (``module.parametrizations.<name>[i]`` is a `SpectralNorm`).

    Raises:
        ConfigError: a bad argument, a missing tensor, spectral norm applied twice, or
            ``exact_conv`` on a layer it cannot handle.

    Example:
        >>> layer = spectral_norm(nn.Linear(20, 40))
        >>> bool(torch.linalg.matrix_norm(layer.eval().weight, 2) <= 1.0 + 1e-4)
        True

    References:
        Miyato, Kataoka, Koyama & Yoshida, "Spectral Normalization for Generative Adversarial
        Networks", ICLR 2018, arXiv:1802.05957. Gouk, Frank, Pfahringer & Cree, "Regularisation
        of neural networks by enforcing Lipschitz continuity", Machine Learning 2021.
    """
    if not isinstance(module, nn.Module):
        raise not_a_module("spectral_norm", module)
    try:
        weight_of(module, name)
    except ConfigError:
        raise no_such_tensor("spectral_norm", module, name) from None
    if find(module, name, SpectralNorm) is not None:
        raise applied_twice("spectral_norm", module, name)
    iterations = _check_iterations(n_power_iterations)
    eps = _check_positive(eps, bad_eps)
    lipschitz = _check_positive(lipschitz, bad_lipschitz)
    weight = getattr(module, name)  # after any earlier parametrization: what spectral norm sees
    if weight.ndim == 0:
        raise scalar_weight(module, name)
    geometry = None
    if exact_conv:
        if dim is not None:
            raise dim_with_exact_conv(dim)
        geometry = conv_geometry(module, input_size)
    elif input_size is not None:
        raise input_size_without_exact_conv(input_size)
    unit_dim = check_dim("spectral_norm", dim, weight.ndim)
    parametrization = SpectralNorm(
        weight,
        n_power_iterations=iterations,
        eps=eps,
        lipschitz=lipschitz,
        dim=output_dim(module) if unit_dim is None else unit_dim,
        geometry=geometry,
    )
    register_once("spectral_norm", module, name, parametrization)
    module.register_load_state_dict_pre_hook(functools.partial(load_checkpoint_hook, name=name))
    return module


ENTRIES = (
    WeightEntry(
        "spectral_norm",
        spectral_norm,
        "Miyato et al. 2018, arXiv:1802.05957",
        parametrization=SpectralNorm,
        aliases=("spectralnorm", "specnorm"),
        functional=(spectral_normalized_weight,),
    ),
)
