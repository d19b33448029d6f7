"""The lab's layering (issue 9, item 7): one configuration schema, and what a method needs in
training declared by the method (``training_hooks``), never recognised by name in the runner."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

import normlab
from normlab.cli import build_parser
from normlab.lab import runner
from normlab.lab.config import DEMO, GRID_KEYS, TRAINING_KEYS, RunConfig, Settings, Sweep
from normlab.norms._training import NO_HOOKS, TrainingHooks, hooks_of, model_hooks

# ----------------------------------------------------------------------------- one schema


def _sweep_args(*argv: str) -> Any:
    return build_parser().parse_args(["sweep", *argv])


def test_run_config_and_sweep_share_the_settings_declared_once() -> None:
    settings = [f.name for f in dataclasses.fields(Settings)]
    assert list(TRAINING_KEYS) == settings
    assert [f.name for f in dataclasses.fields(RunConfig)] == [*settings, *GRID_KEYS]
    assert [f.name for f in dataclasses.fields(Sweep)] == [
        *settings, "norms", "batch_sizes", "seeds"
    ]
    # one default per setting, read from the declaration
    for f in dataclasses.fields(Settings):
        if f.default is not dataclasses.MISSING:
            assert dataclasses.fields(RunConfig)[settings.index(f.name)].default == f.default


def test_run_config_keeps_its_positional_order() -> None:
    c = RunConfig("digits", "mlp", "bn", 8, 0, steps=12)
    assert (c.data, c.model, c.norm, c.batch_size, c.seed) == ("digits", "mlp", "bn", 8, 0)
    assert c.steps == 12
    assert c.epochs == 4 and c.lr == 0.1
    assert RunConfig(**c.as_dict()) == c


def test_every_sweep_field_is_a_command_line_option_with_the_demo_default() -> None:
    args = _sweep_args()
    for f in dataclasses.fields(Sweep):
        assert hasattr(args, f.name), f"normlab sweep has no option for Sweep.{f.name}"
        if f.name != "epochs":  # None on the command line: --steps may replace it
            assert getattr(args, f.name) == getattr(DEMO, f.name), f.name


def test_the_demo_is_what_the_help_shows() -> None:
    sweep = build_parser()._subparsers._group_actions[0].choices["sweep"]  # type: ignore[union-attr]
    text = " ".join(sweep.format_help().split())
    assert "bn,gn,ln,brn,none at batch sizes 2,4,8,16,32" in text
    assert f"(default {DEMO.epochs})" in text
    assert f"(default {DEMO.data})" in text


def test_configs_carry_every_setting_of_the_sweep() -> None:
    plan = dataclasses.replace(DEMO, seeds=1, lr=0.3, order="sorted", width=16)
    configs = plan.configs("mlp")
    assert len(configs) == len(DEMO.norms) * len(DEMO.batch_sizes)
    for c in configs:
        assert {k: getattr(c, k) for k in TRAINING_KEYS} == {**plan.training_settings(),
                                                              "model": "mlp"}


def test_the_schema_needs_nothing_of_the_lab_extra() -> None:
    code = (
        "import sys, normlab.lab.config; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sklearn', 'matplotlib', 'mnist1d') or m.startswith('normlab.lab.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert proc.stdout.strip() == "['normlab.lab.config']"


# ----------------------------------------------------------------------------- training hooks


def test_methods_declare_their_training_needs() -> None:
    assert hooks_of(normlab.VirtualBatchNorm).reference_pass
    assert hooks_of(normlab.BatchInstanceNorm).param_groups is not None
    assert hooks_of(normlab.BatchInstanceNorm).after_step is not None
    assert hooks_of(normlab.BatchRenorm).schedule_kwargs(1000) == {
        "warmup_steps": 40, "dmax_ramp_end": 200, "rmax_ramp_end": 320
    }
    for cls in (normlab.BatchNorm, normlab.GroupNorm, nn.BatchNorm2d, nn.Linear):
        assert hooks_of(cls) is NO_HOOKS


def test_schedule_is_read_from_the_class_not_the_name() -> None:
    assert runner._norm_kwargs("batch_renorm", 1000) == {
        "warmup_steps": 40, "dmax_ramp_end": 200, "rmax_ramp_end": 320
    }
    assert runner._norm_kwargs("batch_norm", 1000) == {}
    assert runner._norm_kwargs("none", 1000) == {}
    assert runner._norm_kwargs("batch_renorm", 3) == {
        "warmup_steps": 1, "dmax_ramp_end": 1, "rmax_ramp_end": 1
    }


class _NeedsReference(nn.Identity):
    """A layer the runner has never heard of, declaring a reference pass."""

    training_hooks: ClassVar[TrainingHooks] = TrainingHooks(reference_pass=True)


class _OwnGroup(nn.Module):
    """A layer with a parameter that wants its own optimizer group and a post-step hook."""

    steps: ClassVar[list[str]] = []
    training_hooks: ClassVar[TrainingHooks] = TrainingHooks(
        param_groups=lambda model, lr: [
            {"params": [m.knob for m in model.modules() if isinstance(m, _OwnGroup)],
             "lr": lr * 3, "weight_decay": 0.0}
        ],
        after_step=lambda optimizer, model: optimizer.register_step_post_hook(
            lambda *_: _OwnGroup.steps.append("clipped")
        ),
    )

    def __init__(self) -> None:
        super().__init__()
        self.knob = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.knob


def test_runner_reads_hooks_of_any_layer() -> None:
    assert runner.uses_reference(nn.Sequential(nn.Linear(3, 3), _NeedsReference()))
    assert not runner.uses_reference(nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)))
    assert runner.uses_reference(nn.Sequential(normlab.VirtualBatchNorm(3)))

    model = nn.Sequential(nn.Linear(3, 3), _OwnGroup(), _OwnGroup())
    groups = runner._param_groups(model, lr=0.1)
    own = [g for g in groups if g.get("lr") == pytest.approx(0.3)]
    assert len(own) == 1 and {id(p) for p in own[0]["params"]} == {
        id(model[1].knob), id(model[2].knob)
    }
    others = [p for g in groups if g is not own[0] for p in g["params"]]
    assert {id(p) for p in others} == {id(model[0].weight), id(model[0].bias)}
    assert model_hooks(model) == [_OwnGroup.training_hooks]

    _OwnGroup.steps.clear()
    optimizer = runner._optimizer(model, lr=0.1)
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    assert _OwnGroup.steps == ["clipped"]  # registered once, though the layer is there twice


def test_batch_instance_norm_gates_get_their_group_through_the_hooks() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 1), normlab.BatchInstanceNorm(4))
    groups = runner._param_groups(model, lr=0.1)
    gate = [g for g in groups if any(p is model[1].gate for p in g["params"])]
    assert len(gate) == 1
    assert gate[0]["lr"] == pytest.approx(1.0) and gate[0]["weight_decay"] == 0.0
    assert gate[0]["params"] == [model[1].gate]

    optimizer = runner._optimizer(model, lr=0.1)
    with torch.no_grad():
        model[1].gate.fill_(1.5)
    model(torch.randn(2, 3, 4, 4)).sum().backward()
    optimizer.step()
    assert float(model[1].gate.detach().max()) <= 1.0  # clipped after the step, as the paper does


def test_the_report_lists_every_setting_of_the_sweep() -> None:
    pytest.importorskip("numpy")
    from normlab.lab import report

    plan = dataclasses.replace(DEMO, width=24, max_train=500, steps=7, epochs=None)
    meta = {**plan.training_settings(), "norms": list(plan.norms),
            "batch_sizes": list(plan.batch_sizes), "seeds": plan.seeds}
    line = next(x for x in report.report_markdown("run", meta, []).splitlines()
                if x.startswith("- sweep: "))
    for f in dataclasses.fields(Sweep):
        if getattr(plan, f.name) is not None:
            assert f"{f.name.replace('_', ' ')}: " in line or f.name == "order", (f.name, line)
    assert "batch order: iid" in line and "width: 24" in line and "max train: 500" in line
    assert "epochs" not in line  # None: not a setting of this sweep


@pytest.mark.parametrize("name", normlab.available())
def test_the_lab_gives_a_methods_main_argument_a_small_value(name: str) -> None:
    """A method with a ``name:value`` argument (groups, ghost batch size) runs the lab's widths
    at value 8 unless the spec says otherwise; any other method's spec is kept as written."""
    from normlab.lab.models import resolve_norm

    entry = normlab.registry.lookup(name)
    if entry.spec_arg is None:
        assert resolve_norm(name) == name
        return
    assert resolve_norm(entry.aliases[0] if entry.aliases else name) == f"{name}:8"
    assert resolve_norm(f"{name}:2") == f"{name}:2"
    layer = normlab.create(resolve_norm(name), 16)
    assert getattr(layer, entry.spec_arg) == 8
