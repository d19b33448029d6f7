"""The lab's models: the norm is their only parameter that changes between runs.

``build_model(kind, norm, input_shape, num_classes)`` with ``kind`` one of

* ``"resnet"`` — a small ResNet for images ``(C, H, W)``: a 3x3 stem, three stages of two
  BasicBlocks (widths w, 2w, 4w; stride 2 between stages, 1x1-conv + norm shortcuts), global
  average pooling and a linear classifier (He et al. 2016, the CIFAR variant, shallower);
* ``"cnn1d"`` — a 1-D CNN for sequences ``(C, L)`` such as MNIST-1D: three conv-norm-ReLU
  blocks (kernel 5; strides 1, 2, 2), global average pooling, linear;
* ``"mlp"`` — a multilayer perceptron on the flattened input: ``depth`` linear-norm-ReLU layers
  of ``width`` units, then a linear classifier (the norm sees ``(N, width)``).

Every hidden layer is ``linear/conv (no bias) → norm → ReLU``; ``norm="none"`` puts an identity
there. Biases before a norm are dropped because the norm's mean subtraction removes them (they
are kept when ``norm="none"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor, nn

from normlab import errors, registry

NormLayer = Callable[[int], nn.Module]
MODELS = ("resnet", "cnn1d", "mlp")
NO_NORM = "none"

# A method's main argument (its entry's ``spec_arg``: GN's and EvoNorm-S0's groups, Ghost BN's
# ghost batch size) defaults to values meant for wide ImageNet networks; the lab's widths are
# 16-256 channels and its batches 2-256, so it uses 8 unless the spec gives a value (``gn:4``).
_LAB_SPEC_VALUE = "8"


def resolve_norm(spec: str) -> str:
    """The spec a run uses: ``"gn"`` becomes ``"group_norm:8"``; ``"none"`` stays ``"none"``.

    Raises `normlab.errors.UnknownNameError` (with did-you-mean) for an unknown name.
    """
    if spec == NO_NORM:
        return spec
    name, sep, value = spec.partition(":")
    if name == NO_NORM:
        raise errors.bad_spec(spec, "'none' takes no value")
    entry = registry.lookup(name)
    if not sep and entry.spec_arg is not None:
        return f"{entry.name}:{_LAB_SPEC_VALUE}"
    registry.factory(spec)  # fail on a bad value now, not inside a worker
    return f"{entry.name}{sep}{value}"


def norm_layer(spec: str, **kwargs: object) -> NormLayer:
    """A ``norm_layer(num_features)`` callable for a resolved spec (identity for ``"none"``)."""
    if spec == NO_NORM:
        return lambda _: nn.Identity()
    return registry.factory(spec, **kwargs)


class BasicBlock(nn.Module):
    """Two 3x3 conv-norm layers with an identity (or 1x1 conv-norm) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: NormLayer, bias: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)
        self.norm1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=bias)
        self.norm2 = norm(c_out)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=bias), norm(c_out)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


def resnet(
    input_shape: Sequence[int], num_classes: int, norm: NormLayer, *, width: int, bias: bool
) -> nn.Module:
    c_in = input_shape[0]
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, width, 3, padding=1, bias=bias), norm(width), nn.ReLU()
    ]
    c = width
    for stage, c_out in enumerate((width, 2 * width, 4 * width)):
        layers.append(BasicBlock(c, c_out, 1 if stage == 0 else 2, norm, bias))
        layers.append(BasicBlock(c_out, c_out, 1, norm, bias))
        c = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers)


def cnn1d(
    input_shape: Sequence[int], num_classes: int, norm: NormLayer, *, width: int, bias: bool
) -> nn.Module:
    c_in = input_shape[0]
    layers: list[nn.Module] = []
    for stride in (1, 2, 2):
        layers += [nn.Conv1d(c_in, width, 5, stride=stride, padding=2, bias=bias), norm(width)]
        layers.append(nn.ReLU())
        c_in = width
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(width, num_classes)]
    return nn.Sequential(*layers)


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    norm: NormLayer,
    *,
    width: int,
    bias: bool,
    depth: int = 3,
) -> nn.Module:
    features = 1
    for size in input_shape:
        features *= size
    layers: list[nn.Module] = [nn.Flatten()]
    for _ in range(depth):
        layers += [nn.Linear(features, width, bias=bias), norm(width), nn.ReLU()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


_BUILDERS = {"resnet": resnet, "cnn1d": cnn1d, "mlp": mlp}
DEFAULT_WIDTH = {"resnet": 16, "cnn1d": 32, "mlp": 256}


def default_model(input_shape: Sequence[int]) -> str:
    """``resnet`` for images ``(C, H, W)``, ``cnn1d`` for sequences ``(C, L)``, else ``mlp``."""
    return {3: "resnet", 2: "cnn1d"}.get(len(input_shape), "mlp")


def build_model(
    kind: str,
    norm: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    width: int | None = None,
    norm_kwargs: dict[str, object] | None = None,
) -> nn.Module:
    """A fresh model of ``kind`` whose every norm layer is built from the spec ``norm``."""
    if kind not in _BUILDERS:
        raise errors.unknown_choice("model", kind, MODELS)
    needed = {"resnet": 3, "cnn1d": 2}.get(kind)
    if needed is not None and len(input_shape) != needed:
        raise errors.ConfigError(
            f"--model {kind} needs inputs of {needed} dimensions per example; the data has "
            f"shape {tuple(input_shape)}. Use --model {default_model(input_shape)} or mlp."
        )
    layer = norm_layer(resolve_norm(norm), **(norm_kwargs or {}))
    return _BUILDERS[kind](
        input_shape,
        num_classes,
        layer,
        width=width or DEFAULT_WIDTH[kind],
        bias=norm == NO_NORM,
    )
