"""The exception hierarchy and the generic validators that every layer shares.

All exceptions subclass :class:`ValueError`, so ``except ValueError`` keeps working. Each message
names the argument, the value received and a fix. A message that belongs to one method, to the
lab or to model surgery lives beside the check that raises it, in that module.
"""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Iterable, Sequence

__all__ = [
    "ConfigError",
    "DataError",
    "InputError",
    "NormlabError",
    "UnknownNameError",
]


class NormlabError(ValueError):
    """Base class of every error normlab raises for bad user input."""


class ConfigError(NormlabError):
    """A constructor argument or a loaded state is invalid."""


class InputError(NormlabError):
    """A forward input does not fit the layer."""


class UnknownNameError(NormlabError):
    """A registry lookup named no known method."""


class DataError(NormlabError):
    """A data set named with ``--data`` cannot be loaded: missing, misplaced or corrupt files."""


def is_positive_int(value: object) -> bool:
    """An int (not a bool) > 0: what every count argument must be."""
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_at_least(name: str, value: object, least: float, why: str) -> float:
    """``value`` as a float when it is a finite number >= ``least``; else a ConfigError naming
    ``name``, the value and ``why`` (what the argument means and which values make sense)."""
    if not is_finite_number(value) or value < least:  # type: ignore[operator]
        raise ConfigError(f"{name} must be a finite float >= {least:g}; got {value!r}. {why}")
    return float(value)  # type: ignore[arg-type]


def check_num_features(num_features: object, owner: str = "num_features") -> int:
    if not is_positive_int(num_features):
        raise ConfigError(
            f"{owner} must be a positive int; got {num_features!r}. "
            "Pass the number of channels of the input, e.g. 64."
        )
    return num_features


def is_finite_number(value: object) -> bool:
    """An int or float (not a bool) that is finite: what every numeric hyperparameter must be."""
    return (
        not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    )


def check_eps(eps: object) -> float:
    if not is_finite_number(eps) or eps <= 0:  # type: ignore[operator]
        raise ConfigError(
            f"eps must be a positive finite float; got {eps!r}. "
            "It keeps the division stable; the usual value is 1e-5."
        )
    return float(eps)


def check_optional_eps(eps: object) -> float | None:
    return None if eps is None else check_eps(eps)


def check_momentum(momentum: object) -> float | None:
    if momentum is None:
        return None
    if (
        isinstance(momentum, bool)
        or not isinstance(momentum, (int, float))
        or not 0.0 <= momentum <= 1.0  # also false for NaN
    ):
        raise ConfigError(
            f"momentum must be in [0, 1] or None; got {momentum!r}. It is the weight of the "
            "new batch in the running average (PyTorch convention; 0.1 is the usual value, "
            "None gives a cumulative average). A TF/Keras decay d corresponds to 1 - d."
        )
    return float(momentum)


def check_channel_dim(channel_dim: object) -> int:
    try:
        index = operator.index(channel_dim)  # type: ignore[arg-type]  # ints, not 1.0 or "1"
    except TypeError:
        index = None
    if index not in (1, -1) or isinstance(channel_dim, bool):
        raise ConfigError(
            f"channel_dim must be 1 (input (N, C, *S)) or -1 (input (N, *S, C)); "
            f"got {channel_dim!r}."
        )
    return int(index)  # type: ignore[arg-type]  # checked above: 1 or -1


def check_groups(
    num_features: int,
    num_groups: int | None,
    group_size: int | None,
    default: int = 32,
    *,
    max_groups: int | None = None,
) -> int:
    """Resolve ``num_groups`` / ``group_size`` / ``max_groups`` (at most one of them) into a
    number of groups that divides C. ``num_groups`` and ``group_size`` are strict (C must be
    divisible); ``max_groups=G`` takes the largest divisor of C that is at most G, so one
    value fits every layer of a model whose channel counts vary (16, 24, 40, ... 576)."""
    given = {k: v for k, v in (("num_groups", num_groups), ("group_size", group_size),
                               ("max_groups", max_groups)) if v is not None}
    if len(given) > 1:
        listed = ", ".join(f"{k}={v!r}" for k, v in given.items())
        raise ConfigError(
            f"pass one of num_groups, group_size and max_groups, not several; got {listed}."
        )
    if max_groups is not None:
        check_num_features(max_groups, "max_groups")
        return max(d for d in _divisors(num_features) if d <= max_groups)
    if group_size is not None:
        check_num_features(group_size, "group_size")
        if num_features % group_size:
            raise ConfigError(
                f"num_features ({num_features}) must be divisible by group_size ({group_size}); "
                f"choose a group_size among {_divisors(num_features)}, or pass "
                f"max_groups={num_features // group_size or 1} (spec 'gn:max"
                f"{num_features // group_size or 1}') for the largest divisor up to it."
            )
        return num_features // group_size
    groups = default if num_groups is None else num_groups
    check_num_features(groups, "num_groups")
    if num_features % groups:
        raise ConfigError(
            f"num_features ({num_features}) must be divisible by num_groups ({groups}); "
            f"choose num_groups among {_divisors(num_features)}, pass group_size=, or pass "
            f"max_groups={groups} (spec 'gn:max{groups}') to use the largest divisor of "
            f"{num_features} up to {groups}."
        )
    return groups


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def channels_of(*per_channel: object) -> int | None:
    """The channel count the first given per-channel tensor implies (None when none is given:
    a functional form without weights or statistics accepts any number of channels)."""
    for t in per_channel:
        if t is not None:
            return int(t.shape[0])  # type: ignore[attr-defined]
    return None


def check_input(layer: str, x: object, num_features: int | None, channel_dim: int) -> None:
    """Check rank, dtype and (unless ``num_features`` is None) channel count of an input."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise InputError(f"{layer} expected a torch.Tensor input; got {type(x).__name__}.")
    expected = _expected_shape("C" if num_features is None else num_features, channel_dim)
    if x.dim() < 2:
        raise InputError(
            f"{layer} expected input of shape {expected} (rank >= 2); got "
            f"{tuple(x.shape)}. Add a batch dimension, e.g. x.unsqueeze(0)."
        )
    if not x.is_floating_point():
        raise InputError(
            f"{layer} expected a floating-point input; got dtype {x.dtype}. Convert it "
            "first, e.g. x.float()."
        )
    if num_features is not None and x.shape[channel_dim] != num_features:
        other = -1 if channel_dim == 1 else 1
        hint = (
            f" For channels-{'last' if other == -1 else 'first'} input pass channel_dim={other}."
            if x.shape[other] == num_features
            else ""
        )
        raise InputError(
            f"{layer} expected input of shape {expected} with channels at dim {channel_dim}; "
            f"got {tuple(x.shape)}.{hint}"
        )


def _expected_shape(num_features: int | str, channel_dim: int) -> str:
    return f"(N, {num_features}, *S)" if channel_dim == 1 else f"(N, *S, {num_features})"


def per_channel_shape(layer: str, name: str, shape: Sequence[int], channels: int) -> InputError:
    return InputError(
        f"{layer}: {name} must have shape ({channels},), one value per channel of the input; "
        f"got {tuple(shape)}. Pass a per-channel tensor of length {channels}."
    )


def one_value_per_statistic(layer: str, over: str, shape: Sequence[int]) -> InputError:
    return InputError(
        f"{layer} computes each statistic {over}, which holds 1 value per statistic for "
        f"input of shape {tuple(shape)}: the output would be a constant. Use a larger batch "
        "(DataLoader(drop_last=True) avoids a last batch of 1), call .eval() to use running "
        "statistics, or use a per-sample norm such as GroupNorm."
    )


def invalid_state(layer: str, key: str, problem: str) -> ConfigError:
    return ConfigError(
        f"{layer}: cannot load {key!r}: {problem}. The checkpoint is corrupted or belongs to "
        "another layer; load a valid state or call reset_running_stats()."
    )


def invalid_parameter_state(layer: str, key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{layer}: cannot load {key!r}: {problem}. {fix}")


def unknown_name(name: str, known: Iterable[str]) -> UnknownNameError:
    return unknown_choice("norm", name, sorted(known))


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` Did you mean 'bn'?`` with up to three close matches of ``name``, or ``""``."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def unknown_choice(what: str, name: str, known: Sequence[str]) -> UnknownNameError:
    """``Unknown <what> 'bnn'. Did you mean 'bn'? Known: ...``: close matches and every choice."""
    hint = did_you_mean(name, known)
    return UnknownNameError(f"Unknown {what} {name!r}.{hint} Known: {', '.join(known)}.")


def bad_spec(spec: str, problem: str) -> ConfigError:
    return ConfigError(
        f"Invalid norm spec {spec!r}: {problem}. Specs look like 'bn', 'gn:32' or 'group_norm'."
    )
