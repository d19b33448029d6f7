"""An independent set of semantic mutants for issue 17, written by a reviewer from the source
alone (before reading the tests): data for scripts/semantic_mutants.py (``--set review``).

Each patch is a bug a maintainer could plausibly make in core/ (moments, the running-statistics
writer), the shared kernels, the classic layers and their functional forms, a few newer methods
(Batch Renorm, Ghost BN, Switchable Norm, EvoNorm, FRN, Streaming Norm), the argument checks,
and surgery/ (convert, fold, freeze, recalibrate, walker, parametrize). ``tests`` names what a
maintainer would expect to catch it, chosen after the patch was written. Same rules as
`gaps.PATCHES`: ``old`` occurs exactly once in ``path`` (tests/test_semantic_mutants.py checks
it), and the patch is applied to a temporary copy of the tree only. Not collected by pytest.
"""

from __future__ import annotations

from gaps import Patch

CORE = "src/normlab/core/"
NORMS = "src/normlab/norms/"
SURGERY = "src/normlab/surgery/"
MOMENTS = CORE + "moments.py"
RUNNING = CORE + "running.py"
BASE = NORMS + "_base.py"
T = "tests/"

PATCHES: tuple[Patch, ...] = (
    # -- core: moments ---------------------------------------------------------------------------
    Patch(
        "r01", "Moments.from_tensor normalizes with the unbiased variance",
        MOMENTS,
        "var, mean = torch.var_mean(xs, dim=dims, correction=0)",
        "var, mean = torch.var_mean(xs, dim=dims, correction=1)",
        (T + "test_core_moments.py",),
    ),
    Patch(
        "r02", "Moments.merge forgets the between-set term δ²·n_a·n_b/n²",
        MOMENTS,
        "var = self.var * wa + other.var * wb + delta.square() * (wa * wb)",
        "var = self.var * wa + other.var * wb",
        (T + "test_core_moments.py",),
    ),
    Patch(
        "r03", "merge_equal_counts averages the variances without the spread of the means",
        MOMENTS,
        "var = torch.addcmul(var, dev, dev).mean(dim, keepdim=keepdim)",
        "var = var.mean(dim, keepdim=keepdim)",
        (T + "test_core_moments.py", T + "test_switchable_norm.py"),
    ),
    Patch(
        "r04", "Bessel correction skipped for two values per statistic (n > 2 guard)",
        MOMENTS,
        "return self.var * (n / (n - 1)) if n > 1 else self.var",
        "return self.var * (n / (n - 1)) if n > 2 else self.var",
        (T + "test_core_moments.py", T + "test_state.py"),
    ),
    # -- core: the running-statistics writer ----------------------------------------------------
    Patch(
        "r05", "native-kernel EMA weight is 1 − momentum (Keras's convention)",
        RUNNING,
        "    if momentum is not None:\n        return momentum\n    return 1.0 / max(",
        "    if momentum is not None:\n        return 1 - momentum\n    return 1.0 / max(",
        (T + "test_parity_torch.py", T + "test_state.py"),
    ),
    Patch(
        "r06", "cumulative average (momentum=None) weighs the kernel's batch 1/(t−1)",
        RUNNING,
        "    out = kernel(_factor_now(num_batches_tracked, momentum, t=1))",
        "    out = kernel(_factor_now(num_batches_tracked, momentum, t=0))",
        (T + "test_state.py", T + "test_core_running.py"),
    ),
    Patch(
        "r07", "EMA writer updates again when checkpoint recomputes the forward",
        RUNNING,
        "    if recomputing():\n        return\n    # no torch.no_grad() here",
        "    # no torch.no_grad() here",
        (T + "test_state.py::test_checkpoint_recompute_updates_stats_once",),
    ),
    Patch(
        "r08", "native-kernel EMA keeps a non-finite batch's statistics",
        RUNNING,
        "    else:\n        _restore(buffers, backup)\n    return out",
        "    return out",
        (T + "test_state.py::test_nonfinite_batch_leaves_buffers_unchanged",
         T + "test_core_running.py"),
    ),
    # -- the shared kernels ------------------------------------------------------------------------
    Patch(
        "r09", "outputs of channels_last input handed back contiguous",
        BASE,
        "            return torch.channels_last\n",
        "            return torch.contiguous_format\n",
        (T + "test_ghost_batch_norm.py", T + "test_instance_affine.py",
         T + "test_evo_norm.py"),
    ),
    Patch(
        "r10", "normalize_by_moments adds ε outside the square root",
        BASE,
        "    scale = (moments.var + eps).rsqrt()\n",
        "    scale = (moments.var.sqrt() + eps).reciprocal()\n",
        (T + "test_streaming_norm.py", T + "test_batch_renorm.py"),
    ),
    Patch(
        "r11", "a counter-less checkpoint resets num_batches_tracked to 0",
        BASE,
        "        return counter.detach().clone()",
        "        return torch.zeros_like(counter)",
        (T + "test_state.py::test_missing_counter_loads_as_torch_batch_norm_loads_it",),
    ),
    Patch(
        "r12", "a negative running variance loads",
        BASE,
        'if key.endswith("_var") and (value < 0).any():',
        'if key.endswith("_var") and (value < -1).any():',
        (T + "test_state.py::test_load_rejects_invalid_running_var",
         T + "test_frozen_batch_norm.py::test_load_rejects_invalid_statistics"),
    ),
    Patch(
        "r13", "running statistics of the wrong length are not refused by normlab",
        BASE,
        "            if value.shape != (self.num_features,):",
        "            if value.dim() != 1:",
        (T + "test_state.py::test_load_rejects_invalid_running_var",
         T + "test_state.py::test_load_refuses_statistics_of_another_length_and_loads_nothing",
         T + "test_frozen_batch_norm.py::test_load_rejects_invalid_statistics"),
    ),
    Patch(
        "r14", "reset_running_stats leaves num_batches_tracked",
        BASE,
        "            self.running_var.fill_(1)\n            self.num_batches_tracked.zero_()",
        "            self.running_var.fill_(1)",
        (T + "test_state.py::test_reset_running_stats",),
    ),
    Patch(
        "r15", "group-norm kernel runs channels_last input in place (one-pass variance)",
        BASE,
        "    x, layout = dense(x)\n    weight, bias = kernel_params(x, weight, bias, c)\n"
        "    positions",
        "    layout = layout_of(x)\n    weight, bias = kernel_params(x, weight, bias, c)\n"
        "    positions",
        (T + "test_numerics.py", T + "test_parity_torch.py",
         T + "test_contract.py::test_fp32_accuracy_with_large_mean_in_every_layout"),
    ),
    Patch(
        "r16", "per-channel training BN keeps the unbiased variance as its batch variance",
        NORMS + "_per_instance.py",
        "return y, Moments(mean, unbiased * ((n - 1) / n), n)",
        "return y, Moments(mean, unbiased, n)",
        (T + "test_ghost_batch_norm.py", T + "test_state.py"),
    ),
    Patch(
        "r18", "instance_moments returns σ instead of σ²",
        NORMS + "_per_instance.py",
        "    return mean, rstd.pow(-2)",
        "    return mean, rstd.pow(-1)",
        (T + "test_evo_norm.py", T + "test_switchable_norm.py", T + "test_instance_affine.py"),
    ),
    Patch(
        "r19", "moments_grad: Q subtracts P·μ once instead of count·P·μ",
        NORMS + "_instance_affine.py",
        "q = torch.addcmul(g_mean, p, mean, value=-count).div_(count)",
        "q = torch.addcmul(g_mean, p, mean, value=-1).div_(count)",
        (T + "test_instance_affine.py", T + "test_switchable_norm.py"),
    ),
    Patch(
        "r20", "composed BN backward divides by M − 1",
        NORMS + "_batch_norm_composed.py",
        "inv = -1.0 / (n * x3.shape[2])",
        "inv = -1.0 / (n * x3.shape[2] - 1)",
        (T + "test_batch_norm_composed.py",),
    ),
    Patch(
        "r21", "composed BN: ∂L/∂γ (and dx) without the −μ·Σdy term",
        NORMS + "_batch_norm_composed.py",
        "sum_dyxhat = torch.addcmul(sum_dyx, mean, sum_dy, value=-1).mul_(rstd)",
        "sum_dyxhat = sum_dyx.mul(rstd)",
        (T + "test_batch_norm_composed.py",),
    ),
    Patch(
        "r22", "composed BN reports the per-slice count: running variance's Bessel factor off",
        NORMS + "_batch_norm_composed.py",
        "return y, Moments(mean, var, x.numel() // c)",
        "return y, Moments(mean, var, x.numel() // (n * c))",
        (T + "test_batch_norm_composed.py",),
    ),
    Patch(
        "r23", "_batch_affine backward: ∂σ²/∂x taken as 1/M instead of 2(x − μ)/M",
        NORMS + "_batch_affine.py",
        "            p = g_var * (2.0 / count)",
        "            p = g_var * (1.0 / count)",
        (T + "test_streaming_norm.py",),
    ),
    Patch(
        "r24", "_batch_affine analytic VJP: ∂L/∂σ² with r instead of r²",
        NORMS + "_batch_affine.py",
        "g_var = -0.5 * scale * rstd.square() * centered",
        "g_var = -0.5 * scale * rstd * centered",
        (T + "test_streaming_norm.py",),
    ),
    # -- frozen BN ---------------------------------------------------------------------------------
    Patch(
        "r25", "FrozenBatchNorm's fast backward forgets γ",
        NORMS + "frozen_batch_norm.py",
        "        if weight is not None:\n            scale = scale * weight.to(acc)\n"
        "        ctx.save_for_backward(scale)",
        "        ctx.save_for_backward(scale)",
        (T + "test_frozen_batch_norm.py",),
    ),
    Patch(
        "r26", "FrozenBatchNorm.from_batch_norm drops the source's counter",
        NORMS + "frozen_batch_norm.py",
        "                frozen.num_batches_tracked = count.detach().clone()",
        "                pass",
        (T + "test_frozen_batch_norm.py",),
    ),
    Patch(
        "r27", "FrozenBatchNorm.from_batch_norm ignores the source's training flag",
        NORMS + "frozen_batch_norm.py",
        "        return frozen.train(bn.training)",
        "        return frozen",
        (T + "test_frozen_batch_norm.py",),
    ),
    # -- classic layers and their functional forms ------------------------------------------------
    Patch(
        "r28", "functional batch_norm ignores training=True when running stats are given",
        NORMS + "batch_norm.py",
        "    use_batch = training or running_mean is None",
        "    use_batch = running_mean is None",
        (T + "test_parity_torch.py", T + "test_functional_validation.py"),
    ),
    Patch(
        "r29", "BatchNorm in eval normalizes with the batch's statistics",
        NORMS + "batch_norm.py",
        "            self.training or running_mean is None, self.eps,",
        "            True, self.eps,",
        (T + "test_parity_torch.py", T + "test_state.py"),
    ),
    Patch(
        "r30", "per-position LayerNorm transposes instead of moving the channel axis",
        NORMS + "layer_norm.py",
        "xl = x if channel_dim == -1 else x.movedim(1, -1)",
        "xl = x if channel_dim == -1 else x.transpose(1, -1)",
        (T + "test_parity_torch.py", T + "test_properties.py"),
    ),
    Patch(
        "r31", "InstanceNorm's running variance keeps the kernel's ε",
        NORMS + "instance_norm.py",
        "var = (rstd.detach().double().pow(-2) - eps).clamp(min=0).to(rstd.dtype)",
        "var = rstd.detach().double().pow(-2).to(rstd.dtype)",
        (T + "test_parity_torch.py", T + "test_state.py"),
    ),
    Patch(
        "r32", "InstanceNorm's running variance: Bessel factor over N·|S| instead of |S|",
        NORMS + "instance_norm.py",
        "batch = Moments(moments.mean.mean(0), moments.var.mean(0), moments.count)",
        "batch = Moments(moments.mean.mean(0), moments.var.mean(0), moments.count * xc.shape[0])",
        (T + "test_parity_torch.py", T + "test_state.py"),
    ),
    Patch(
        "r33", "RMSNorm (any layout) adds ε to the RMS instead of the mean square",
        NORMS + "rms_norm.py",
        "return (norm.square() / x.shape[dim] + eps).rsqrt()",
        "return (norm / x.shape[dim] ** 0.5 + eps).reciprocal()",
        (T + "test_parity_torch.py", T + "test_numerics.py"),
    ),
    Patch(
        "r34", "RMSNorm backward: ∂L/∂γ = Σ g instead of Σ g·x̂",
        NORMS + "rms_norm.py",
        "grad_weight = (grad * x_hat).sum(others).to(weight.dtype)",
        "grad_weight = grad.sum(others).to(weight.dtype)",
        (T + "test_parity_torch.py", T + "test_numerics.py",
         T + "test_contract.py::test_channel_dim_last_matches_channel_dim_1",
         T + "test_contract.py::test_strided_input_matches_contiguous"),
    ),
    Patch(
        "r35", "channels-first RMSNorm backward with r² instead of r³",
        NORMS + "_rms_channels_first.py",
        ".mul_(rc.square().mul_(rc)).div_(-c)",
        ".mul_(rc.square()).div_(-c)",
        (T + "test_rms_norm_channels_first.py",),
    ),
    # -- newer methods -----------------------------------------------------------------------------
    Patch(
        "r36", "Batch Renorm's r inverted (σ/σ_B)",
        NORMS + "batch_renorm.py",
        "    r = sigma_b.div_(sigma)",
        "    r = sigma.div(sigma_b)",
        (T + "test_batch_renorm.py",),
    ),
    Patch(
        "r37", "Batch Renorm's ∂L/∂γ forgets the d term",
        NORMS + "batch_renorm.py",
        "dw = sum_dy_xhat * r + sum_dy * d if need_w else None",
        "dw = sum_dy_xhat * r if need_w else None",
        (T + "test_batch_renorm.py",),
    ),
    Patch(
        "r38", "Batch Renorm's moving mean moves with weight 1 − α",
        NORMS + "batch_renorm.py",
        "new_mean = torch.lerp(running_mean, batch.mean.to(running_mean.dtype), factor)",
        "new_mean = torch.lerp(running_mean, batch.mean.to(running_mean.dtype), keep)",
        (T + "test_batch_renorm.py",),
    ),
    Patch(
        "r39", "Batch Renorm: a step ramp switches on one step late",
        NORMS + "batch_renorm.py",
        "else float(step >= w)",
        "else float(step > w)",
        (T + "test_batch_renorm.py",),
    ),
    Patch(
        "r40", "Ghost BN's running EMA weighs its ghost batches in reverse order",
        NORMS + "_ghost_running.py",
        "momentum * (1 - momentum) ** (k - 1 - i) / f",
        "momentum * (1 - momentum) ** i / f",
        (T + "test_ghost_batch_norm.py",),
    ),
    Patch(
        "r41", "Ghost BN stores each ghost batch's biased variance",
        NORMS + "_ghost_running.py",
        "uvar = chunk_var * chunk_var.new_tensor([n / (n - 1) for n in counts]).unsqueeze(1)",
        "uvar = chunk_var",
        (T + "test_ghost_batch_norm.py",),
    ),
    Patch(
        "r42", "Ghost BN split='count' rounds the chunk size down",
        NORMS + "ghost_batch_norm.py",
        'else -(-batch // (batch // ghost_batch_size))',
        'else batch // (batch // ghost_batch_size)',
        (T + "test_ghost_batch_norm.py",),
    ),
    Patch(
        "r43", "Ghost BN backward: ∂σ²_k/∂μ_i with factor 1 instead of 2",
        NORMS + "ghost_batch_norm.py",
        "g_mean = torch.addcmul(a * s_dy * -inv, mu, g_var, value=-2)",
        "g_mean = torch.addcmul(a * s_dy * -inv, mu, g_var, value=-1)",
        (T + "test_ghost_batch_norm.py",),
    ),
    Patch(
        "r44", "Switchable Norm mixes variances with the mean's importance weights",
        NORMS + "switchable_norm.py",
        "    w_var = torch.softmax(var_logits, 0, dtype=dtype)",
        "    w_var = torch.softmax(mean_logits, 0, dtype=dtype)",
        (T + "test_switchable_norm.py",),
    ),
    Patch(
        "r45", "Switchable Norm backward: merged variance's ∂/∂μ_i with 1/n instead of 2/n",
        NORMS + "switchable_norm.py",
        "g_mean = torch.addcmul(g_mean, wv[k], g_var_k * parts[key], value=2 / size)",
        "g_mean = torch.addcmul(g_mean, wv[k], g_var_k * parts[key], value=1 / size)",
        (T + "test_switchable_norm.py",),
    ),
    Patch(
        "r46", "EvoNorm-B0 in eval uses the batch variance",
        NORMS + "evo_norm.py",
        "        b0 = _B0(self.eps, None if use_batch else self.running_var)",
        "        b0 = _B0(self.eps, None)",
        (T + "test_evo_norm.py",),
    ),
    Patch(
        "r47", "EvoNorm-B0's instance σ adds ε outside the square root",
        NORMS + "evo_norm.py",
        "        sigma_inst = (var + eps).sqrt()",
        "        sigma_inst = var.sqrt() + eps",
        (T + "test_evo_norm.py",),
    ),
    Patch(
        "r48", "FRN's ∂L/∂τ has its sign flipped",
        NORMS + "filter_response_norm.py",
        "sum_g - d_beta if sum_g is not None else None",
        "d_beta - sum_g if sum_g is not None else None",
        (T + "test_filter_response_norm.py",),
    ),
    Patch(
        "r49", "FRN's ν² is the sum of squares, not their mean",
        NORMS + "filter_response_norm.py",
        "nu2 = torch.linalg.vector_norm(rows.x3, dim=2, dtype=acc).square_().div_(rows.length)",
        "nu2 = torch.linalg.vector_norm(rows.x3, dim=2, dtype=acc).square_()",
        (T + "test_filter_response_norm.py",),
    ),
    Patch(
        "r50", "Streaming Norm's mixture drops the spread between the two means",
        NORMS + "streaming_norm.py",
        "var = alpha * long_var + beta * short_var + alpha * beta * (long_mean - short_mean)"
        ".square()",
        "var = alpha * long_var + beta * short_var",
        (T + "test_streaming_norm.py",),
    ),
    Patch(
        "r51", "Streaming Norm's window folds step j with weight 1/(j+1)",
        NORMS + "streaming_norm.py",
        "j = (self.short_steps - 1) % self.window + 1",
        "j = self.short_steps % self.window + 1",
        (T + "test_streaming_norm.py",),
    ),
    Patch(
        "r52", "Streaming Norm's VJP drops the long-term spread term",
        NORMS + "streaming_norm.py",
        "d_var = (2 * beta) * (f * (1 - f) * to_short + alpha * (m - f) * spread)",
        "d_var = (2 * beta) * (f * (1 - f) * to_short)",
        (T + "test_streaming_norm.py",),
    ),
    Patch(
        "r53", "Streaming Norm's reset leaves the window's step counter",
        NORMS + "streaming_norm.py",
        "        self.short_var.fill_(1)\n        self.short_steps.zero_()",
        "        self.short_var.fill_(1)",
        (T + "test_streaming_norm.py", T + "test_state.py::test_reset_running_stats",
         T + "test_state.py::test_reset_layer_trains_like_a_freshly_built_one"),
    ),
    # -- argument checks ---------------------------------------------------------------------------
    Patch(
        "r54", "eps=0 accepted",
        "src/normlab/errors.py",
        "if not is_finite_number(eps) or eps <= 0:",
        "if not is_finite_number(eps) or eps < 0:",
        (T + "test_errors.py", T + "test_frozen_batch_norm.py::test_eps_must_be_positive"),
    ),
    # -- surgery -----------------------------------------------------------------------------------
    Patch(
        "r55", "fold adds the conv bias unscaled (b + t instead of b·s + t)",
        SURGERY + "fold.py",
        "new_bias = shift if bias is None else wide(bias) * scale + shift",
        "new_bias = shift if bias is None else wide(bias) + shift",
        (T + "test_surgery_fold.py",),
    ),
    Patch(
        "r56", "fold forgets the conv's own bias",
        SURGERY + "fold.py",
        "new_bias = shift if bias is None else wide(bias) * scale + shift",
        "new_bias = shift",
        (T + "test_surgery_fold.py",),
    ),
    Patch(
        "r57", "fold drops ε (torchvision's old FrozenBatchNorm2d bug)",
        SURGERY + "fold.py",
        "scale = (wide(running_var) + eps).rsqrt()",
        "scale = wide(running_var).rsqrt()",
        (T + "test_surgery_fold.py",),
    ),
    Patch(
        "r58", "fold of a grouped transposed conv assigns weight rows to groups round-robin",
        SURGERY + "fold.py",
        "per_row = scale.reshape(groups, 1, out_per_group).expand(\n"
        "        groups, in_channels // groups, out_per_group\n    )",
        "per_row = scale.reshape(1, groups, out_per_group).expand(\n"
        "        in_channels // groups, groups, out_per_group\n    )",
        (T + "test_surgery_fold.py",),
    ),
    Patch(
        "r59", "freeze(affine=True) leaves requires_grad on",
        SURGERY + "freeze.py",
        "                    param.requires_grad_(False)",
        "                    pass",
        (T + "test_surgery_freeze.py",),
    ),
    Patch(
        "r60", "a frozen layer is left in training mode after its forward",
        SURGERY + "freeze.py",
        "    module.training = getattr(module, _STATE).training.pop()",
        "    getattr(module, _STATE).training.pop()\n    module.training = True",
        (T + "test_surgery_freeze.py",),
    ),
    Patch(
        "r61", "recalibrate stores the biased population variance in a BN",
        SURGERY + "recalibrate.py",
        "var = self.moments.var if biased else self.moments.unbiased_var",
        "var = self.moments.var",
        (T + "test_surgery_recalibrate.py",),
    ),
    Patch(
        "r62", "recalibrate keeps only the last batch's moments",
        SURGERY + "recalibrate.py",
        "self.moments = m if self.moments is None else self.moments.merge(m)",
        "self.moments = m",
        (T + "test_surgery_recalibrate.py",),
    ),
    Patch(
        "r63", "recalibrate averages biased instance variances for a tracked InstanceNorm",
        SURGERY + "recalibrate.py",
        "means, variances = m.mean.sum(0), m.unbiased_var.sum(0)",
        "means, variances = m.mean.sum(0), m.var.sum(0)",
        (T + "test_surgery_recalibrate.py",),
    ),
    Patch(
        "r64", "recalibrate runs the whole model in training mode (dropout on)",
        SURGERY + "recalibrate.py",
        "        model.eval()\n        for _, m in targets:",
        "        model.train()\n        for _, m in targets:",
        (T + "test_surgery_recalibrate.py",),
    ),
    Patch(
        "r65", "convert drops the source's affine setting",
        SURGERY + "convert.py",
        '    if "affine" in accepted:\n        kw["affine"] = layers.is_affine(module)\n',
        "",
        (T + "test_surgery_convert.py",),
    ),
    Patch(
        "r66", "convert makes frozen γ, β trainable again",
        SURGERY + "convert.py",
        "                    dst.requires_grad_(src.requires_grad)",
        "                    pass",
        (T + "test_surgery_convert.py",),
    ),
    Patch(
        "r67", "convert carries BN's momentum into a layer whose momentum means else",
        SURGERY + "convert.py",
        'carry = hasattr(module, "momentum") and not layers.frozen_stats(module) and same_law',
        'carry = hasattr(module, "momentum") and not layers.frozen_stats(module)',
        (T + "test_surgery_convert.py",),
    ),
    Patch(
        "r68", "convert returns a layer in training mode whatever the source's mode",
        SURGERY + "convert.py",
        "    new.train(module.training)\n    return new, tuple(carried)",
        "    return new, tuple(carried)",
        (T + "test_surgery_convert.py",),
    ),
    Patch(
        "r69", "convert drops num_batches_tracked",
        SURGERY + "convert.py",
        'for name in ("running_mean", "running_var", "num_batches_tracked"):',
        'for name in ("running_mean", "running_var"):',
        (T + "test_surgery_convert.py",),
    ),
    Patch(
        "r70", "replace_modules(inplace=False) modifies the caller's model",
        SURGERY + "walker.py",
        "    root = model if inplace else copy_model(model)",
        "    root = model",
        (T + "test_surgery_walker.py",),
    ),
    Patch(
        "r71", "a path selector does not select the modules below it",
        SURGERY + "walker.py",
        'prefixes = [path[:i] for i, ch in enumerate(path) if ch == "."] + [path]',
        "prefixes = [path]",
        (T + "test_surgery_walker.py",),
    ),
    Patch(
        "r72", "parametrize(inplace=False) modifies the caller's model",
        SURGERY + "parametrize.py",
        'check_selectors("parametrize", model, skip=skip, only=only)\n'
        "    root = model if inplace else copy_model(model)",
        'check_selectors("parametrize", model, skip=skip, only=only)\n    root = model',
        (T + "test_surgery_parametrize.py",),
    ),
    Patch(
        "r73", "unparametrize bakes in the module's current mode (a power iteration runs)",
        SURGERY + "parametrize.py",
        "        bake_weight(module, name)\n        return",
        "        torch_parametrize.remove_parametrizations(module, name, leave_parametrized=True)"
        "\n        return",
        (T + "test_surgery_parametrize.py",),
    ),
)
