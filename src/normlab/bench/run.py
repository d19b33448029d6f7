"""Run ``normlab bench``: every (setting, layer) pair, one result record each.

For one pair, every candidate (the layer, its baselines, a ``clone`` of the input) is warmed
up, then timed in alternating rounds (`normlab.bench.timing`). Two phases are timed: the
forward (in eval mode without gradients, as inference runs it) and the forward + backward
(gradients of the input and of the trainable parameters, a fixed random grad_output).

A ratio is the layer's time over a baseline's, the median of the per-round ratios:

* ``torch``: the torch.nn counterpart (`normlab.bench.cases.torch_counterpart`);
* ``group_norm``: native ``nn.GroupNorm`` on a tensor of the same shape;
* ``composition``: the layer's eager composition (below 1: the fast path pays off);
* ``compiled`` (``--compile``): ``torch.compile`` of the layer (above 1: compiling pays off);
* ``floor``: the memory-traffic floor, the bytes a phase must move at least over the copy
  bandwidth measured in the same round. A forward reads x and writes y, as ``x.clone()``
  does: floor = t_clone. A forward + backward also reads x and dy and writes dx: 5 tensor
  passes, floor = 2.5·t_clone.

Saved bytes: the distinct storages autograd keeps for backward of one training forward
(`normlab.bench.timing.saved_bytes`), for the layer and its torch.nn counterpart.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from normlab.bench import cases, timing
from normlab.bench.cases import Candidate, Setting, Skip

PHASES = ("forward", "forward+backward")
BASELINES = ("torch", "group_norm", "composition", "compiled")
_FLOOR_PASSES = {"forward": 1.0, "forward+backward": 2.5}  # in units of one x.clone()


@dataclass(frozen=True)
class Config:
    """What to run: layer specs, channels-first shapes, layouts, modes, dtype, device, rounds."""

    layers: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...] = cases.DEFAULT_SHAPES
    layouts: tuple[str, ...] = ("channels_first",)
    modes: tuple[str, ...] = cases.MODES
    dtype: str = "float32"
    device: str = "cpu"
    rounds: int = 15
    warmup: int = 3
    threads: int = 1
    compile: bool = False
    target_s: float = 0.002  # the least time of one sample (see `timing.sampler`)

    def settings(self) -> list[Setting]:
        return [Setting(shape, layout, mode, self.dtype, self.device)
                for shape in self.shapes for layout in cases.layouts_of(shape, self.layouts)
                for mode in self.modes]

    def plan(self) -> list[tuple[str, Setting]]:
        return [(spec, s) for s in self.settings() for spec in self.layers]


def _steps(c: Candidate, mode: str) -> dict[str, timing.Step]:
    """The candidate's forward and forward + backward steps; runs each once (errors show
    here, before timing)."""
    x = c.x.detach().requires_grad_()
    module = c.module
    params = [p for p in module.parameters() if p.requires_grad] \
        if isinstance(module, nn.Module) else []
    with c.context():
        dy = torch.randn_like(module(x))

    def forward() -> None:
        with c.context(), torch.set_grad_enabled(mode == "train"):
            module(x)

    def forward_backward() -> None:
        with c.context():
            torch.autograd.grad(module(x), [x, *params], dy, allow_unused=True)

    forward_backward()
    return {"forward": forward, "forward+backward": forward_backward}


def _candidates(spec: str, s: Setting, compile_: bool) -> tuple[
        dict[str, Candidate], dict[str, str], dict[str, Any]]:
    """(candidates by role, reasons for the roles left out, facts about the layer)."""
    reasons: dict[str, str] = {}
    if cases.is_weight_side(spec):
        name = cases.canonical(spec)
        ours, twin = cases.weight_side(name, s)
        found = {"layer": ours, "torch": twin, "group_norm": cases.group_norm_baseline(s)}
        reasons["composition"] = "a weight-side method has no separate eager composition"
        reasons["floor"] = "a convolution or linear layer is compute-bound: no traffic floor"
        return found, reasons, {"kind": "weight", "spec": spec}
    name = cases.canonical(spec)
    used, layer = cases.norm_layer(spec, s)
    x = s.tensor(0)
    found = {"layer": Candidate(f"normlab.{type(layer).__name__}", layer, x)}
    try:
        label, twin = cases.torch_counterpart(name, layer, s)
        found["torch"] = Candidate(label, twin, x)
    except Skip as why:
        reasons["torch"] = str(why)
    found["group_norm"] = cases.group_norm_baseline(s)
    makers: dict[str, Callable[[nn.Module, Tensor], Candidate]] = {"composition": cases.composition}
    if compile_:
        makers["compiled"] = cases.compiled
    for role, make in makers.items():
        try:
            found[role] = make(layer, x)
        except Skip as why:
            reasons[role] = str(why)
    return found, reasons, {"kind": "layer", "spec": used}


def run_one(spec: str, s: Setting, config: Config, now: Callable[[], int]) -> dict[str, Any]:
    """The result record of one layer spec in one setting (status "ok" or "skipped")."""
    record: dict[str, Any] = {"layer": cases.canonical(spec), "requested": spec,
                              "shape": list(s.shape), "label": s.label, "layout": s.layout,
                              "mode": s.mode, "dtype": s.dtype, "device": s.device}
    try:
        found, reasons, facts = _candidates(spec, s, config.compile)
        steps = {"layer": _steps(found["layer"], s.mode)}
    except Skip as why:
        return {**record, "status": "skipped", "reason": str(why)}
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as err:
        return {**record, "status": "skipped", "reason": f"{type(err).__name__}: {err}"}
    record.update(facts)
    for role in BASELINES:
        if role in found:
            try:
                steps[role] = _steps(found[role], s.mode)
            except (RuntimeError, TypeError, ValueError, NotImplementedError) as err:
                reasons[role] = f"fails in this setting: {type(err).__name__}: {err}"
    x = found["layer"].x
    flat = {f"{role}/{phase}": step for role, pair in steps.items()
            for phase, step in pair.items()}
    flat["copy"] = x.clone
    try:
        for _ in range(config.warmup):
            for step in flat.values():
                step()
        samples = {key: timing.sampler(step, now, config.target_s) for key, step in flat.items()}
        times = timing.rotated_rounds(samples, config.rounds)
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as err:
        # a step that ran once and fails later (state drifting, memory): report, go on
        return {**record, "status": "skipped",
                "reason": f"failed while timing: {type(err).__name__}: {err}"}
    ratios: dict[str, dict[str, float]] = {}
    for phase in PHASES:
        layer_times = times[f"layer/{phase}"]
        ratios[phase] = {role: timing.ratio(layer_times, times[f"{role}/{phase}"])
                         for role in steps if role != "layer"}
        if "floor" not in reasons:
            ratios[phase]["floor"] = timing.ratio(layer_times, times["copy"],
                                                  _FLOOR_PASSES[phase])
    return {
        **record, "status": "ok", "timed": found["layer"].label, "input_shape": list(x.shape),
        "baselines": {role: found[role].label for role in steps if role != "layer"},
        "not_compared": reasons,
        "calls_per_sample": {k: v.calls for k, v in samples.items()},  # type: ignore[attr-defined]
        "times_s": times,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "quartiles_s": {k: list(timing.spread(v)) for k, v in times.items()},
        "ratios": ratios,
        "saved_bytes": _saved(found, x),
    }


def _saved(found: dict[str, Candidate], x: Tensor) -> dict[str, int]:
    """Bytes saved for backward by one forward of the layer and of its torch.nn counterpart
    (gradients on, whatever the mode), and the input's own bytes."""
    out = {"input": x.numel() * x.element_size()}
    for role in ("layer", "torch"):
        if role in found:
            c = found[role]
            xg = c.x.detach().requires_grad_()
            with torch.enable_grad():
                out[role] = timing.saved_bytes(lambda c=c, xg=xg: c.module(xg))
    return out


def run(config: Config, now: Callable[[], int],
        progress: Callable[[int, int, dict[str, Any]], None] | None = None,
        ) -> Iterator[dict[str, Any]]:
    """Yield the record of every (setting, layer) pair of ``config.plan()`` as it finishes."""
    plan = config.plan()
    for i, (spec, s) in enumerate(plan):
        record = run_one(spec, s, config, now)
        if progress is not None:
            progress(i + 1, len(plan), record)
        yield record


__all__ = ["BASELINES", "PHASES", "Config", "run", "run_one"]
