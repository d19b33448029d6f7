"""The lab's configuration, declared once: what a run depends on and what a sweep varies.

`Settings` holds every setting that all the runs of a sweep share (and that a resumed sweep must
share with the one it continues); its defaults are the protocol's. `RunConfig` is one run: the
settings plus the grid coordinates (norm, batch size, seed). `Sweep` is a grid: the settings plus
the norms, batch sizes and number of seeds. `DEMO` is the built-in demo (``make demo``,
``normlab sweep`` with no options), whose values are also the command line's defaults.

This module imports nothing beyond the standard library (and `normlab.errors`), so the command
line can read the schema without the ``lab`` extra.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, MISSING, asdict, dataclass, fields
from typing import Any

from normlab.errors import ConfigError

__all__ = [
    "DEMO", "GRID_KEYS", "SWEEP_KEYS", "TRAINING_KEYS", "RunConfig", "Settings", "Sweep",
    "resumed_options",
]  # fmt: skip


@dataclass(frozen=True)
class Settings:
    """What every run of a sweep shares; the defaults after ``data`` and ``model`` are the
    protocol's (see ``normlab.lab.runner``)."""

    data: str
    """A data set spec of `normlab.lab.data.load_data`, e.g. ``"digits"`` or ``"cifar10:PATH"``."""
    model: str | None
    """``resnet``, ``cnn1d`` or ``mlp``; None in a `Sweep`: the data's default model."""
    _: KW_ONLY
    epochs: int | None = 4
    """Equal epochs at every batch size (None when ``steps`` is given)."""
    steps: int | None = None
    """Equal number of updates at every batch size instead of ``epochs``."""
    lr: float = 0.1
    """Peak learning rate at ``base_batch_size``."""
    lr_scaling: str = "linear"
    """``linear``: lr x B / base_batch_size; ``none``: the same lr at every batch size."""
    base_batch_size: int = 32
    order: str = "iid"
    """Batch order: ``iid``, ``sorted`` or ``fewclass:K`` (`normlab.lab.sampling`)."""
    width: int | None = None
    """Channels / units of the model (None: the model's default)."""
    max_train: int | None = None
    """Use at most this many training examples (None: all)."""


# What a sweep varies; every other field of RunConfig is a setting that all its runs share.
GRID_KEYS = ("norm", "batch_size", "seed")
TRAINING_KEYS = tuple(f.name for f in fields(Settings))


@dataclass(frozen=True)
class RunConfig(Settings):
    """Everything a run depends on; two equal configs give the same numbers.

    Positional: ``RunConfig(data, model, norm, batch_size, seed, *, epochs=4, ...)``.
    """

    norm: str
    batch_size: int
    seed: int

    @property
    def run_id(self) -> str:
        """The key a finished run is recorded under; a sweep varies only these three."""
        return f"norm={self.norm}|batch_size={self.batch_size}|seed={self.seed}"

    def peak_lr(self) -> float:
        if self.lr_scaling == "linear":
            return self.lr * self.batch_size / self.base_batch_size
        return self.lr

    def total_steps(self, n_train: int) -> int:
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        return self.epochs * (n_train // self.batch_size)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Sweep(Settings):
    """A grid of runs: every norm x batch size x seed, the settings shared."""

    norms: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    seeds: int

    def configs(self, model: str) -> list[RunConfig]:
        """Seed-major, then batch size ascending (longest runs first), then norm: a partial
        sweep holds whole seeds, and the slow runs start early."""
        shared = {**self.training_settings(), "model": model}
        return [
            RunConfig(norm=norm, batch_size=bs, seed=seed, **shared)
            for seed in range(self.seeds)
            for bs in sorted(self.batch_sizes)
            for norm in self.norms
        ]

    def training_settings(self) -> dict[str, Any]:
        """The settings every run of the sweep shares (``model`` may still be None)."""
        return {key: getattr(self, key) for key in TRAINING_KEYS}

    def protocol(self) -> str:
        amount = (
            f"equal epochs ({self.epochs}): every run sees the same examples, so small batches "
            "take more steps"
            if self.steps is None
            else f"equal steps ({self.steps}): every run makes the same number of updates, so "
            "small batches see fewer examples"
        )
        scaling = (
            f"peak learning rate {self.lr} x B / {self.base_batch_size} (linear scaling rule)"
            if self.lr_scaling == "linear"
            else f"peak learning rate {self.lr} at every batch size"
        )
        return (
            f"{amount}; SGD momentum 0.9, weight decay 5e-4, one-cycle schedule, {scaling}; "
            f"{self.order} batches; test error with the norms in eval mode."
        )


# The demo: chosen so that it finishes in a few minutes on 2 CPU cores (see the README).
DEMO = Sweep(
    data="mnist1d",
    model="mlp",
    norms=("bn", "gn", "ln", "brn", "none"),
    batch_sizes=(2, 4, 8, 16, 32),
    seeds=3,
)


SWEEP_KEYS = tuple(f.name for f in fields(Sweep))
"""Every option of a sweep; ``meta.json`` holds each of them (``model`` resolved)."""


def _canonical(key: str, value: Any) -> Any:
    """A value as compared on resume: lists as tuples, batch sizes and norms as sets."""
    if isinstance(value, (list, tuple)):
        return frozenset(value) if key in ("norms", "batch_sizes") else tuple(value)
    return value


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return repr(value)


def resumed_options(meta: dict[str, Any], given: dict[str, Any], where: str) -> dict[str, Any]:
    """The options of the sweep that ``meta`` (its ``meta.json``) describes, for ``--resume``.

    ``given`` holds the options typed again on the command line; each must agree with the
    stored one, else a `ConfigError` names every conflict. Norms and batch sizes agree when they
    are the same sets (the stored order is kept). ``where`` names the run directory in messages.

    >>> meta = {"data": "digits", "model": "mlp", "norms": ["bn", "gn"], "batch_sizes": [4],
    ...         "seeds": 1, "epochs": None, "steps": 6}
    >>> resumed_options(meta, {"norms": ("gn", "bn")}, "run")["steps"]
    6
    >>> resumed_options(meta, {"epochs": 2}, "run")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    normlab.errors.ConfigError: --resume run: that sweep was run with steps=6, not epochs ...
    """
    missing = [k for k in SWEEP_KEYS if k not in meta and k not in given]
    defaults = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}
    stored = {k: meta[k] if k in meta else given.get(k, defaults.get(k)) for k in SWEEP_KEYS}
    conflicts = []
    for k, v in given.items():
        if _canonical(k, stored[k]) == _canonical(k, v):
            continue
        other = {"epochs": "steps", "steps": "epochs"}.get(k)
        if other and stored[k] is None:  # --steps for a sweep of equal epochs, or back
            conflicts.append(f"{other}={_shown(stored[other])}, not {k} (now {k}={_shown(v)})")
        else:
            conflicts.append(f"{k}={_shown(stored[k])} (now {_shown(v)})")
    if conflicts:
        raise ConfigError(
            f"--resume {where}: that sweep was run with {', '.join(conflicts)}. Leave those "
            "options out to continue it as it was (its options are in its meta.json), or start "
            "a new sweep with another --out."
        )
    required = [k for k in missing if k in ("data", "norms", "batch_sizes", "seeds")]
    if required:
        raise ConfigError(
            f"--resume {where}: its meta.json does not say {', '.join(required)}; give "
            f"{' '.join('--' + k.replace('_', '-') for k in required)} as that sweep had them."
        )
    return {k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()}
