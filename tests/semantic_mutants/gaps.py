"""The gaps of issue 17 as deliberately broken patches: data for scripts/semantic_mutants.py.

Each patch replaces one exact text of one source file (in a temporary copy of the tree, never in
place) and names the tests that must fail on it. A patch whose text no longer occurs exactly
once fails the runner loudly, so the set cannot rot silently when the source is edited: update
the patch together with the code. Not collected by pytest (tests/conftest.py ignores this
folder).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Patch:
    """One semantic mutant: in ``path``, ``old`` (occurring exactly once) becomes ``new``."""

    gap: str
    title: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MOMENTS = "src/normlab/core/moments.py"
BASE = "src/normlab/norms/_base.py"

PATCHES: tuple[Patch, ...] = (
    Patch(
        "1", "inverted Bessel factor with tensor counts",
        MOMENTS,
        "torch.where(n > 1, self.var * n / (n - 1).clamp(min=1), self.var)",
        "torch.where(n > 1, self.var * (n - 1) / n.clamp(min=1), self.var)",
        ("tests/test_core_moments.py::"
         "test_unbiased_var_with_per_set_counts_applies_each_sets_bessel_factor",),
    ),
    Patch(
        "2", "convert carries instance statistics into a BatchNorm",
        "src/normlab/surgery/convert.py",
        "        if kind is not None and kind == layers.stats_kind(new):\n",
        "        if kind is not None:\n",
        ("tests/test_surgery_convert.py::test_instance_statistics_never_become_batch_statistics",),
    ),
    Patch(
        "3", "variance overflow guard watches the mean, not the variance",
        "src/normlab/core/running.py",
        "    if _finite_now((buffers[watch],)):",
        "    if _finite_now((buffers[0],)):",
        ("tests/test_state.py::test_batch_whose_variance_overflows_leaves_buffers_unchanged",),
    ),
    Patch(
        "4", "fold gives a frozen conv a trainable bias",
        "src/normlab/surgery/fold.py",
        "conv.bias = nn.Parameter(bias, requires_grad=conv.weight.requires_grad)",
        "conv.bias = nn.Parameter(bias)",
        ("tests/test_surgery_fold.py::"
         "test_bias_created_by_fold_is_trainable_exactly_when_the_conv_weight_is",),
    ),
    Patch(
        "5a", "missing counter migrated whatever the checkpoint's version",
        BASE,
        'if key not in state_dict and (local_metadata.get("version") or 0) < 2:',
        "if key not in state_dict:",
        ("tests/test_state.py::test_missing_counter_loads_as_torch_batch_norm_loads_it",),
    ),
    Patch(
        "5b", "negative num_batches_tracked loaded",
        BASE,
        "if count.numel() == 1 and count.item() < 0:",
        "if count.numel() == 1 and count.item() < -1:",
        ("tests/test_state.py::test_negative_counter_is_refused_and_nothing_is_loaded",),
    ),
    Patch(
        "5c", "FrozenBatchNorm resets its counter on a counter-less checkpoint",
        "src/normlab/norms/frozen_batch_norm.py",
        "state_dict[key] = self.num_batches_tracked.detach().clone()",
        "state_dict[key] = torch.zeros_like(self.num_batches_tracked)",
        ("tests/test_frozen_batch_norm.py::test_checkpoint_without_counter_loads",),
    ),
    Patch(
        "6a", "functional group_norm without its groups check",
        "src/normlab/norms/group_norm.py",
        "    errors.check_groups(x.shape[channel_dim], num_groups, None)\n",
        "",
        ("tests/test_functional_validation.py::test_group_norm_functional_checks_its_groups",),
    ),
    Patch(
        "6b", "per-position layer_norm checks the layer's set size",
        "src/normlab/norms/layer_norm.py",
        '    check_set_size("layer_norm", axes, x, channel_dim)',
        '    check_set_size("layer_norm", axes_lib.LAYER, x, channel_dim)',
        ("tests/test_functional_validation.py::"
         "test_per_position_layer_norm_with_one_channel_is_an_error_not_zeros",),
    ),
    Patch(
        "6c", "channel_dim=True accepted as 1",
        "src/normlab/errors.py",
        "if index not in (1, -1) or isinstance(channel_dim, bool):",
        "if index not in (1, -1):",
        ("tests/test_functional_validation.py::"
         "test_channel_dim_must_be_1_or_minus_1_in_every_functional_form",),
    ),
    Patch(
        "7", "Batch Renorm skips the schedule when only one limit is ramped",
        "src/normlab/norms/batch_renorm.py",
        "if rmax_ramp_end == 0 and dmax_ramp_end == 0:",
        "if rmax_ramp_end == 0 or dmax_ramp_end == 0:",
        ("tests/test_batch_renorm.py::test_schedule_drives_the_forward",),
    ),
)
