"""Exceptions and the checks that raise them: every user-facing message is built here.

All exceptions subclass :class:`ValueError`, so ``except ValueError`` keeps working. Each message
names the argument, the value received and a fix.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Sequence

__all__ = [
    "ConfigError",
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


def check_num_features(num_features: object, owner: str = "num_features") -> int:
    if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= 0:
        raise ConfigError(
            f"{owner} must be a positive int; got {num_features!r}. "
            "Pass the number of channels of the input, e.g. 64."
        )
    return num_features


def check_eps(eps: object) -> float:
    if (
        isinstance(eps, bool)
        or not isinstance(eps, (int, float))
        or not math.isfinite(eps)
        or eps <= 0
    ):
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
    if channel_dim not in (1, -1) or isinstance(channel_dim, bool):
        raise ConfigError(
            f"channel_dim must be 1 (input (N, C, *S)) or -1 (input (N, *S, C)); "
            f"got {channel_dim!r}."
        )
    return int(channel_dim)  # type: ignore[call-overload]  # checked above: 1 or -1


def check_groups(
    num_features: int, num_groups: int | None, group_size: int | None, default: int = 32
) -> int:
    """Resolve ``num_groups`` / ``group_size`` into a number of groups that divides C."""
    if num_groups is not None and group_size is not None:
        raise ConfigError(
            f"pass num_groups or group_size, not both; got num_groups={num_groups!r}, "
            f"group_size={group_size!r}."
        )
    if group_size is not None:
        check_num_features(group_size, "group_size")
        if num_features % group_size:
            raise ConfigError(
                f"num_features ({num_features}) must be divisible by group_size ({group_size}); "
                f"choose a group_size among {_divisors(num_features)}."
            )
        return num_features // group_size
    groups = default if num_groups is None else num_groups
    check_num_features(groups, "num_groups")
    if num_features % groups:
        raise ConfigError(
            f"num_features ({num_features}) must be divisible by num_groups ({groups}); "
            f"choose num_groups among {_divisors(num_features)} or pass group_size=."
        )
    return groups


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def check_input(layer: str, x: object, num_features: int, channel_dim: int) -> None:
    """Check rank, dtype and channel count of a forward input."""
    import torch

    if not isinstance(x, torch.Tensor):
        raise InputError(f"{layer} expected a torch.Tensor input; got {type(x).__name__}.")
    expected = _expected_shape(num_features, channel_dim)
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
    if x.shape[channel_dim] != num_features:
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


def _expected_shape(num_features: int, channel_dim: int) -> str:
    return f"(N, {num_features}, *S)" if channel_dim == 1 else f"(N, *S, {num_features})"


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


# -- Switchable Norm and Batch-Instance Norm (issue 3) ---------------------------------------------


def check_branches(branches: object, known: Sequence[str]) -> tuple[str, ...]:
    """A non-empty, repeat-free subset of ``known``, returned in ``known``'s order."""
    items: tuple[object, ...] = ()
    if not isinstance(branches, str) and isinstance(branches, Iterable):
        items = tuple(branches)
    if (
        not items
        or any(b not in known for b in items)
        or len(set(items)) != len(items)
    ):
        raise ConfigError(
            f"branches must be a non-empty tuple of distinct names among {tuple(known)}; got "
            f"{branches!r}. For a single branch write a tuple, e.g. branches=('bn',)."
        )
    return tuple(b for b in known if b in items)


def instance_branch_needs_positions(layer: str, shape: Sequence[int]) -> InputError:
    return InputError(
        f"{layer}: the IN branch computes each statistic over the positions *S, and input of "
        f"shape {tuple(shape)} has 1 position per (sample, channel), so instance statistics "
        "are undefined. For (N, C) input drop the IN branch: branches=('ln', 'bn') (what the "
        "reference's SwitchNorm1d uses)."
    )


def gate_out_of_range(layer: str, problem: str) -> ConfigError:
    return ConfigError(
        f"{layer}: cannot load 'gate': {problem}. The gate ρ must lie in [0, 1] (the paper "
        "clips it after every optimizer step). Clamp it before loading "
        "(state['gate'].clamp_(0, 1)) and train with "
        "normlab.norms.batch_instance_norm.clamp_gates_after_step(optimizer, model)."
    )


# -- Batch Renormalization (issue 3) ---------------------------------------------------------------


def check_rmax(rmax: object) -> float:
    """r_max of Batch Renorm: a finite number >= 1 (r is clipped to [1/r_max, r_max])."""
    if (
        isinstance(rmax, bool)
        or not isinstance(rmax, (int, float))
        or not math.isfinite(rmax)
        or rmax < 1
    ):
        raise ConfigError(
            f"rmax must be a finite float >= 1; got {rmax!r}. r = σ_B/σ is clipped to "
            "[1/rmax, rmax], so rmax < 1 would be an empty range; rmax=1 turns the correction "
            "off (plain BN) and the paper ends its schedule at rmax=3."
        )
    return float(rmax)


def check_dmax(dmax: object) -> float:
    """d_max of Batch Renorm: a finite number >= 0 (d is clipped to [-d_max, d_max])."""
    if (
        isinstance(dmax, bool)
        or not isinstance(dmax, (int, float))
        or not math.isfinite(dmax)
        or dmax < 0
    ):
        raise ConfigError(
            f"dmax must be a finite float >= 0; got {dmax!r}. d = (μ_B − μ)/σ is clipped to "
            "[-dmax, dmax]; dmax=0 turns the shift off (plain BN) and the paper ends its "
            "schedule at dmax=5."
        )
    return float(dmax)


def check_renorm_schedule(
    warmup_steps: object, rmax_ramp_end: object, dmax_ramp_end: object
) -> tuple[int, int, int]:
    """Step counts of Batch Renorm's clip schedule: ints >= 0, each ramp ending after warm-up."""
    given = {
        "warmup_steps": warmup_steps,
        "rmax_ramp_end": rmax_ramp_end,
        "dmax_ramp_end": dmax_ramp_end,
    }
    steps: dict[str, int] = {}
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"{name} must be an int >= 0 (a number of training steps); got {value!r}. "
                "Pass warmup_steps=0, rmax_ramp_end=0, dmax_ramp_end=0 to clip with the final "
                "rmax and dmax from the first step."
            )
        steps[name] = int(value)
    for name in ("rmax_ramp_end", "dmax_ramp_end"):
        if steps[name] < steps["warmup_steps"]:
            raise ConfigError(
                f"{name} ({steps[name]}) must be >= warmup_steps ({steps['warmup_steps']}): the "
                "ramp starts when the warm-up ends, so the schedule would not be monotone. Raise "
                f"{name} or lower warmup_steps (the paper: warmup_steps=5000, then "
                "rmax_ramp_end=40000, dmax_ramp_end=25000)."
            )
    return steps["warmup_steps"], steps["rmax_ramp_end"], steps["dmax_ramp_end"]


def invalid_parameter_state(layer: str, key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"{layer}: cannot load {key!r}: {problem}. {fix}")


# -- Ghost Batch Norm and Frozen Batch Norm (issue 3) ----------------------------------------------


def check_ghost_batch_size(ghost_batch_size: object) -> int:
    """Samples per ghost batch of Ghost BN: a positive int."""
    if (
        isinstance(ghost_batch_size, bool)
        or not isinstance(ghost_batch_size, int)
        or ghost_batch_size <= 0
    ):
        raise ConfigError(
            f"ghost_batch_size must be a positive int; got {ghost_batch_size!r}. It is the number "
            "of samples per ghost batch, each normalized with its own statistics; the paper uses "
            "128. Pass e.g. ghost_batch_size=32 (a value >= the batch size gives plain BN)."
        )
    return ghost_batch_size


def nothing_to_freeze(source: str, problem: str) -> ConfigError:
    return ConfigError(
        f"FrozenBatchNorm.from_batch_norm: cannot freeze {source}: {problem}. Pass a BatchNorm "
        "with running statistics (track_running_stats=True), e.g. torch.nn.BatchNorm2d or "
        "normlab.BatchNorm, or build FrozenBatchNorm(num_features) and load a state_dict."
    )


# -- EvoNorm (issue 3) -----------------------------------------------------------------------------


def evo_norm_parameter_shape(
    layer: str, name: str, shape: Sequence[int], channels: int
) -> InputError:
    return InputError(
        f"{layer}: {name} must have shape ({channels},), one value per channel of the input; "
        f"got {tuple(shape)}. Pass a per-channel tensor of length {channels}."
    )


def evo_norm_v_without_nonlinearity(layer: str) -> InputError:
    return InputError(
        f"{layer}: v was given with nonlinearity=False, where the layer is the affine map "
        "y = weight·x + bias and has no v. Pass v=None, or nonlinearity=True to use it."
    )


# -- Virtual Batch Normalization (issue 3) ---------------------------------------------------------


def missing_reference(layer: str) -> ConfigError:
    return ConfigError(
        f"{layer} has no reference batch: virtual batch norm normalizes every example with the "
        "statistics of a fixed reference batch R merged with its own. Set R first, either with "
        "layer.set_reference(x_ref) (x_ref = this layer's input for R) or, for a whole model, "
        "with `with normlab.norms.virtual_batch_norm.reference_pass(model): model(x_ref)` "
        "(the paper repeats that pass every training step); or load a state_dict that holds "
        "reference_mean / reference_var / reference_size."
    )


def bad_reference(layer: str, problem: str, fix: str) -> InputError:
    return InputError(f"{layer}: invalid reference batch x_ref: {problem}. {fix}")


def invalid_reference_state(layer: str, key: str, problem: str) -> ConfigError:
    return ConfigError(
        f"{layer}: cannot load {key!r}: {problem}. The checkpoint is corrupted or belongs to "
        "another layer; load a valid state, or call reset_reference() and set_reference(x_ref)."
    )


def frozen_eps_not_positive(source: str, eps: object) -> ConfigError:
    return ConfigError(
        f"FrozenBatchNorm.from_batch_norm: cannot freeze {source}: its eps is {eps!r}, and a "
        "frozen BN needs eps > 0 (with eps=0 a running_var that is 0, e.g. underflowed in fp16, "
        "gives inf/NaN). Set a positive eps on the source first (e.g. bn.eps = 1e-5, which "
        "changes its output slightly) or build FrozenBatchNorm(num_features, eps=...) and load "
        "its state_dict."
    )



# -- Lab report (issue 4) --------------------------------------------------------------------------


def no_run_to_report(run_dir: object, problem: str) -> ConfigError:
    """``normlab report RUN_DIR`` on a directory that holds no sweep (yet)."""
    return ConfigError(
        f"normlab report: {problem}. Run `normlab sweep --out {run_dir}` first, or pass the "
        "directory a sweep wrote (the one holding meta.json and results.jsonl)."
    )


def no_finished_run(results: object) -> ConfigError:
    """``results.jsonl`` exists but holds no complete line: the sweep's first run is not done."""
    return ConfigError(
        f"normlab report: no finished run yet in {results}: every run appends its line when "
        "it ends. Wait for the first run to finish, then run `normlab report` again."
    )


def report_not_writable(run_dir: object, name: str, reason: object) -> ConfigError:
    """A report file could not be written; the files already in the directory are untouched."""
    return ConfigError(
        f"normlab report: cannot write {name} in {run_dir} ({reason}). Make the directory "
        "writable (chmod u+w) or copy the run directory somewhere writable and report there."
    )


def bad_run_record(results: object, record_id: object, problem: str) -> ConfigError:
    """A line of ``results.jsonl`` that is complete JSON but not a run record the report reads."""
    return ConfigError(
        f"normlab report: the record {record_id!r} in {results} {problem}. The file was edited "
        "or written by another tool; remove that line (the sweep's --resume redoes the run)."
    )


# -- Lab data and batch orders (issue 4) -----------------------------------------------------------


class DataError(NormlabError):
    """A data set named with ``--data`` cannot be loaded: missing, misplaced or corrupt files."""


def data_error(spec: str, problem: str, fix: str) -> DataError:
    """``--data SPEC: <what is wrong>. <how to fix it>`` for every data loading failure."""
    return DataError(f"--data {spec}: {problem}. {fix}")


def bad_batch_size(batch_size: object) -> ConfigError:
    return ConfigError(
        f"batch size must be a positive int; got {batch_size!r}. Pass --batch-sizes with "
        "values >= 1, e.g. --batch-sizes 2,4,8,16,32."
    )


def batch_size_too_large(batch_size: int, n_train: int, data_name: str) -> ConfigError:
    return ConfigError(
        f"batch size {batch_size} is larger than the {n_train} training examples of "
        f"{data_name}; use --batch-sizes up to {n_train}."
    )


def bad_batch_order(order: object, problem: str, fix: str) -> ConfigError:
    return ConfigError(f"--order {order}: {problem}. {fix}")


# -- Model surgery: walker, convert, freeze, recalibrate (issue 5) ---------------------------------


def not_a_model(function: str, model: object) -> ConfigError:
    return ConfigError(
        f"{function}: model must be a torch.nn.Module; got {type(model).__name__}. Pass the "
        "network itself (e.g. a torchvision or timm model), not its state_dict or output."
    )


def bad_replacement(path: str, value: object) -> ConfigError:
    return ConfigError(
        f"replace_modules: the callback returned {type(value).__name__} for {path or '<root>'!r}; "
        "it must return a torch.nn.Module (the replacement) or None (keep the module)."
    )


def bad_selector(argument: str, value: object) -> ConfigError:
    return ConfigError(
        f"{argument} must be a module path or fnmatch pattern (str), a module class, or a list "
        f"of those; got {value!r}. Examples: {argument}='layer1', {argument}='*.bn2', "
        f"{argument}=torch.nn.BatchNorm1d, {argument}=['head', 'stem.*']."
    )


def cannot_convert(layer: str, path: str, problem: str, fix: str) -> ConfigError:
    """``convert: <path (type with C channels)>: <problem>. <fix> Or skip='<path>'.``"""
    return ConfigError(
        f"convert: {layer}: {problem}. {fix} Or leave this layer as it is with skip={path!r}."
    )


def nothing_to_recalibrate(model: str, problem: str) -> ConfigError:
    return ConfigError(
        f"recalibrate: {model} {problem}. Recalibration (precise BN / AdaBN) re-estimates the "
        "running statistics of BatchNorm-like layers (torch.nn BatchNorm*d / SyncBatchNorm, "
        "normlab BatchNorm, GhostBatchNorm, BatchRenorm, SwitchableNorm, BatchInstanceNorm, "
        "EvoNormB0, InstanceNorm with track_running_stats=True); layers frozen by "
        "normlab.freeze or FrozenBatchNorm keep theirs. Unfreeze them first if you mean to."
    )


def no_batches(num_batches: object) -> ConfigError:
    return ConfigError(
        f"recalibrate: batches yielded no batch (num_batches={num_batches!r}). Pass a non-empty "
        "iterable of input batches, e.g. a DataLoader over the training set (precise BN) or "
        "over unlabeled target-domain data (AdaBN)."
    )


def bad_num_batches(num_batches: object) -> ConfigError:
    return ConfigError(
        f"recalibrate: num_batches must be a positive int or None (all batches); got "
        f"{num_batches!r}. The precise-BN paper uses a few hundred batches, e.g. num_batches=200."
    )


def bad_batch(index: int, problem: str) -> InputError:
    return InputError(
        f"recalibrate: batch {index}: {problem}. A batch is a tensor, an (inputs, targets) "
        "tuple or list (the first element is fed to the model), or a dict with key 'x'; for "
        "anything else pass forward=lambda model, batch: model(...)."
    )


def non_finite_statistics(layer: str, index: int) -> InputError:
    return InputError(
        f"recalibrate: the input of {layer} holds NaN or Inf values in batch {index}; the "
        "population statistics would be NaN. Check the data and the layers before it; every "
        "running statistic was left as it was."
    )


# -- Model surgery: fold (issue 5) -----------------------------------------------------------------


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


def lazy_layer_not_materialized(function: str, layer: str) -> ConfigError:
    return ConfigError(
        f"{function}: {layer} is a lazy layer that has not seen input yet, so it has no "
        "statistics to work on. Run one forward pass first (it materializes the layer)."
    )
