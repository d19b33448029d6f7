"""The exact claims (kind E): identities checked in float64 to floating-point precision.

Each experiment measures the deviation of the identity the claim states and, as a control, the
deviation of a case where the identity must *not* hold (so that a check that cannot fail is
seen as such: `normlab.claims.rules.exact_verdict`). ε is set to 1e-12 where the claim is an
identity of the ε-free equations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

import normlab
from normlab.claims.ledger import Claim, Numbers, Size
from normlab.claims.rules import exact_verdict

__all__ = ["C04", "C05", "C07", "C15"]

F64 = torch.float64
EPS = 1e-12
TOLERANCE = 1e-9
GROSS = 1e-4
CONTROL_MIN = 1e-3


def _max_rel(a: Tensor, b: Tensor) -> float:
    """max |a − b| / max |b| (0 when both are 0)."""
    scale = b.abs().max().item()
    return (a - b).abs().max().item() / scale if scale > 0 else (a - b).abs().max().item()


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _leaves(numbers: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in numbers.items():
        if isinstance(value, Mapping):
            out.update(_leaves(value, f"{prefix}{key}."))
        elif isinstance(value, float):
            out[f"{prefix}{key}"] = value
    return out


def summarize_exact(numbers: Mapping[str, Any]) -> str:
    """``largest deviation 3e-12 (of 12 checks); control 2.04``."""
    leaves = _leaves(numbers)
    holds = {k: v for k, v in leaves.items() if "control" not in k}
    controls = {k: v for k, v in leaves.items() if "control" in k}
    worst = max(holds, key=lambda k: holds[k])
    text = f"largest deviation {holds[worst]:.2g} ({worst}; {len(holds)} checks)"
    if controls:
        text += "; smallest control " + f"{min(controls.values()):.3g}"
    return text


# ---------------------------------------------------------------- C04: batch size one


def _per_sample_layers(channels: int) -> dict[str, nn.Module]:
    return {
        "group_norm": normlab.GroupNorm(channels, num_groups=4, dtype=F64),
        "layer_norm": normlab.LayerNorm(channels, dtype=F64),
        "instance_norm": normlab.InstanceNorm(channels, dtype=F64),
    }


def measure_c04(size: Size) -> Numbers:
    g = _generator(4)
    channels = 8
    x = torch.randn(8, channels, 6, 6, generator=g, dtype=F64)
    bn = normlab.BatchNorm(channels, dtype=F64).train()
    try:
        bn(torch.randn(1, channels, generator=g, dtype=F64))
        refuses = False
    except ValueError:
        refuses = True
    # With spatial positions a batch of one is accepted, but its statistics are the sample's own:
    # BatchNorm degenerates into InstanceNorm.
    one = x[:1]
    as_instance = normlab.InstanceNorm(channels, dtype=F64)(one)
    degenerate = _max_rel(bn(one), as_instance)
    changed = {}
    for name, layer in _per_sample_layers(channels).items():
        layer.train()
        changed[name] = _max_rel(layer(one), layer(x)[:1])
    bn_changed = _max_rel(normlab.BatchNorm(channels, dtype=F64).train()(x)[:1], bn(one))
    return {
        "batch_norm_refuses_batch_of_one": refuses,
        "batch_norm_batch_of_one_minus_instance_norm": degenerate,
        "per_sample_norms_batch_of_one_vs_batch_of_8": changed,
        "control_batch_norm_batch_of_one_vs_batch_of_8": bn_changed,
    }


def decide_c04(n: Mapping[str, Any]) -> str:
    holds = {
        "refuses": 0.0 if n["batch_norm_refuses_batch_of_one"] else float("inf"),
        "degenerate": n["batch_norm_batch_of_one_minus_instance_norm"],
        **n["per_sample_norms_batch_of_one_vs_batch_of_8"],
    }
    controls = {"bn": n["control_batch_norm_batch_of_one_vs_batch_of_8"]}
    return exact_verdict(holds, TOLERANCE, GROSS, controls, CONTROL_MIN)


C04 = Claim(
    id="C04",
    claim="BN at batch size 1 is impossible in training / degenerates; per-sample norms are "
    "unaffected",
    source="Wu & He 2018",
    kind="E",
    rule=f"reproduced if BatchNorm refuses a (1, C) batch in training, its output on a "
    f"(1, C, H, W) batch equals InstanceNorm's (max relative deviation <= {TOLERANCE:g}), and "
    f"GroupNorm, LayerNorm and InstanceNorm give a sample the same output alone as in a batch "
    f"of 8 (<= {TOLERANCE:g}), while BatchNorm's output changes (control > {CONTROL_MIN:g}); "
    f"contradicted if BatchNorm accepts a (1, C) batch or a deviation exceeds {GROSS:g}; "
    f"otherwise not reproduced. float64.",
    measure=measure_c04,
    decide=decide_c04,
    summarize=lambda n: ("BatchNorm refuses (1, C): "
                         f"{n['batch_norm_refuses_batch_of_one']}; " + summarize_exact(n)),
)


# ---------------------------------------------------------------- C05: scale invariance


def _scale_case(norm: nn.Module, scale: float, g: torch.Generator) -> dict[str, float]:
    """Deviations of BN((aW)u) = BN(Wu), ∂/∂u unchanged, and a·∂/∂(aW) = ∂/∂W."""
    weight = torch.randn(32, 16, generator=g, dtype=F64)
    u = torch.randn(16, 16, generator=g, dtype=F64)
    probe = torch.randn(16, 32, generator=g, dtype=F64)

    def run(w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        w = w.clone().requires_grad_(True)
        x = u.clone().requires_grad_(True)
        y = norm(x @ w.T)
        du, dw = torch.autograd.grad((y * probe).sum(), (x, w))
        return y.detach(), du, dw

    y1, du1, dw1 = run(weight)
    y2, du2, dw2 = run(scale * weight)
    return {
        "output": _max_rel(y2, y1),
        "grad_input": _max_rel(du2, du1),
        "grad_weight_times_a": _max_rel(scale * dw2, dw1),
    }


def measure_c05(size: Size) -> Numbers:
    g = _generator(5)
    scales = (0.1, 0.5, 3.0, 100.0)
    norms = {
        "batch_norm": normlab.BatchNorm(32, eps=EPS, affine=False, dtype=F64),
        "layer_norm": normlab.LayerNorm(32, eps=EPS, affine=False, dtype=F64),
        "group_norm": normlab.GroupNorm(32, num_groups=4, eps=EPS, affine=False, dtype=F64),
    }
    deviations = {
        f"{name}@a={a:g}": _scale_case(norm.train(), a, g)
        for name, norm in norms.items() for a in scales
    }
    # The control: without a norm, the output scales with a.
    weight = torch.randn(32, 16, generator=g, dtype=F64)
    u = torch.randn(16, 16, generator=g, dtype=F64)
    control = _max_rel(u @ (3.0 * weight).T, u @ weight.T)
    return {"scales": list(scales), "deviations": deviations, "control_no_norm_a=3": control}


def decide_c05(n: Mapping[str, Any]) -> str:
    holds = {
        f"{case}:{what}": value
        for case, values in n["deviations"].items() for what, value in values.items()
    }
    controls = {"no_norm": n["control_no_norm_a=3"]}
    return exact_verdict(holds, TOLERANCE, GROSS, controls, CONTROL_MIN)


C05 = Claim(
    id="C05",
    claim="Scale invariance: BN((aW)u) = BN(Wu); d/du unchanged; gradient w.r.t. aW scaled by 1/a",
    source="Ioffe & Szegedy 2015",
    kind="E",
    rule=f"Linear(16→32) then BatchNorm, LayerNorm or GroupNorm(4) in training mode, ε = "
    f"{EPS:g}, float64, a in (0.1, 0.5, 3, 100): reproduced if the output, ∂/∂u and a·∂/∂(aW) "
    f"each deviate from the a = 1 values by <= {TOLERANCE:g} (relative), while the unnormalized "
    f"output changes (control > {CONTROL_MIN:g}); contradicted if any deviation exceeds "
    f"{GROSS:g}; otherwise not reproduced.",
    measure=measure_c05,
    decide=decide_c05,
    summarize=summarize_exact,
)


# ---------------------------------------------------------------- C07: contrast invariance


def measure_c07(size: Size) -> Numbers:
    g = _generator(7)
    x = torch.randn(4, 3, 8, 8, generator=g, dtype=F64)
    contrast = torch.tensor([0.1, 1.0, 3.0, 10.0], dtype=F64).view(4, 1, 1, 1)
    brightness = torch.tensor([-2.0, 0.0, 0.5, 7.0], dtype=F64).view(4, 1, 1, 1)
    per_channel = torch.rand(4, 3, 1, 1, generator=g, dtype=F64) * 5 + 0.2
    instance = normlab.InstanceNorm(3, eps=EPS, dtype=F64)
    batch = normlab.BatchNorm(3, eps=EPS, dtype=F64).train()
    changed = contrast * x + brightness
    return {
        "instance_norm_per_image_contrast_and_brightness": _max_rel(instance(changed), instance(x)),
        "instance_norm_per_image_per_channel_contrast": _max_rel(
            instance(per_channel * x - brightness), instance(x)
        ),
        "control_batch_norm_per_image_contrast_and_brightness": _max_rel(batch(changed), batch(x)),
    }


def decide_holds_and_controls(n: Mapping[str, Any]) -> str:
    """`exact_verdict` of flat numbers: keys starting with ``control`` are the controls."""
    holds = {k: v for k, v in n.items() if not k.startswith("control")}
    controls = {k: v for k, v in n.items() if k.startswith("control")}
    return exact_verdict(holds, TOLERANCE, GROSS, controls, CONTROL_MIN)


C07 = Claim(
    id="C07",
    claim="Instance Norm removes per-image contrast: output invariant to per-instance affine "
    "changes of the input",
    source="Ulyanov et al. 2016",
    kind="E",
    rule=f"InstanceNorm (ε = {EPS:g}, float64) of x and of a·x + b with a per-image (and a "
    f"per-image-and-channel) contrast a > 0 and brightness b: reproduced if the outputs "
    f"deviate by <= {TOLERANCE:g} (relative) while BatchNorm's change (control > "
    f"{CONTROL_MIN:g}); contradicted if they deviate by more than {GROSS:g}; otherwise not "
    f"reproduced.",
    measure=measure_c07,
    decide=decide_holds_and_controls,
    summarize=summarize_exact,
)


# ---------------------------------------------------------------- C15: Virtual BN


def measure_c15(size: Size) -> Numbers:
    g = _generator(15)
    reference = torch.randn(16, 6, 5, 5, generator=g, dtype=F64)
    example = torch.randn(1, 6, 5, 5, generator=g, dtype=F64)
    mates_a = torch.randn(7, 6, 5, 5, generator=g, dtype=F64)
    mates_b = 3.0 * torch.randn(3, 6, 5, 5, generator=g, dtype=F64) + 2.0
    vbn = normlab.VirtualBatchNorm(6, dtype=F64).train()
    with torch.no_grad():
        vbn.set_reference(reference)
        in_a = vbn(torch.cat([example, mates_a]))[:1]
        in_b = vbn(torch.cat([mates_b, example]))[-1:]
        alone = vbn(example)
        bn = normlab.BatchNorm(6, dtype=F64).train()
        bn_a = bn(torch.cat([example, mates_a]))[:1]
        bn_b = bn(torch.cat([mates_b, example]))[-1:]
    return {
        "virtual_batch_norm_batch_a_vs_batch_b": _max_rel(in_a, in_b),
        "virtual_batch_norm_batch_a_vs_alone": _max_rel(in_a, alone),
        "control_batch_norm_batch_a_vs_batch_b": _max_rel(bn_a, bn_b),
    }


C15 = Claim(
    id="C15",
    claim="Virtual BN makes an example's output independent of its batch mates",
    source="Salimans et al. 2016",
    kind="E",
    rule=f"VirtualBatchNorm with a fixed reference batch of 16, training mode, float64: "
    f"reproduced if an example's output is the same in two batches with different mates and "
    f"alone (max relative deviation <= {TOLERANCE:g}) while BatchNorm's differs (control > "
    f"{CONTROL_MIN:g}); contradicted if it deviates by more than {GROSS:g}; otherwise not "
    f"reproduced.",
    measure=measure_c15,
    decide=decide_holds_and_controls,
    summarize=summarize_exact,
)
