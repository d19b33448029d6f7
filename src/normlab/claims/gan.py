"""C10: spectral normalization of the discriminator stabilises GAN training (Miyato et al. 2018).

A tiny GAN learns 8 Gaussians on a ring (radius 2, σ = 0.05), the standard mode-collapse test
(Metz et al. 2017). A generated sample is *high quality* when it lies within 3σ of a mode; a
mode is *covered* when at least 2% of the generated samples (a fair share is 12.5%) are high
quality samples of that mode. Both nets use Adam at lr 1e-3, β = (0.5, 0.9): an aggressive
learning rate of the kind under which Miyato et al. report unconstrained discriminators failing
and SN holding (here with one D step per G step).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

import normlab
from normlab.claims.ledger import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, Claim, Numbers, Size
from normlab.claims.mlp_runs import one_thread, show
from normlab.claims.rules import clearly_below, mean

__all__ = ["C10"]

MODES = 8
RADIUS = 2.0
SIGMA = 0.05
COVERED_SHARE = 0.02
QUALITY_POINTS = 10.0  # SN's final high-quality share may not be clearly below by more than this
Z_DIM = 4
WIDTH = 128
BATCH = 256
SAMPLES = 2000
SIZES: dict[str, dict[str, int]] = {
    "smoke": {"steps": 20, "seeds": 2},
    "quick": {"steps": 2000, "seeds": 3},
    "full": {"steps": 6000, "seeds": 5},
}


def _centres() -> Tensor:
    angles = torch.arange(MODES) * (2 * math.pi / MODES)
    return RADIUS * torch.stack([angles.cos(), angles.sin()], 1)


def _real(n: int, g: torch.Generator) -> Tensor:
    modes = torch.randint(MODES, (n,), generator=g)
    return _centres()[modes] + SIGMA * torch.randn(n, 2, generator=g)


def _mlp(fan_in: int, out: int, act: Callable[[], nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(fan_in, WIDTH), act(), nn.Linear(WIDTH, WIDTH), act(), nn.Linear(WIDTH, out),
    )


def mode_stats(samples: Tensor) -> dict[str, float]:
    """Modes covered (>= 2% of the samples within 3σ of it) and % of high-quality samples."""
    dist = torch.cdist(samples, _centres())
    nearest, which = dist.min(1)
    good = nearest <= 3 * SIGMA
    counts = torch.bincount(which[good], minlength=MODES)
    return {
        "modes": int((counts >= COVERED_SHARE * len(samples)).sum().item()),
        "quality": round(100 * good.float().mean().item(), 3),
    }


def _train(seed: int, steps: int, spectral: bool) -> dict[str, Any]:
    torch.manual_seed(seed)
    gen = _mlp(Z_DIM, 2, nn.ReLU)
    disc = _mlp(2, 1, lambda: nn.LeakyReLU(0.2))
    if spectral:
        for m in disc:
            if isinstance(m, nn.Linear):
                normlab.spectral_norm(m)
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.9))
    bce = nn.functional.binary_cross_entropy_with_logits
    g = torch.Generator().manual_seed(seed)
    z_eval = torch.randn(SAMPLES, Z_DIM, generator=torch.Generator().manual_seed(10_000 + seed))
    ones, zeros = torch.ones(BATCH, 1), torch.zeros(BATCH, 1)
    every = max(1, steps // 4)
    record: dict[str, Any] = {"modes": [], "quality": []}
    for step in range(1, steps + 1):
        fake = gen(torch.randn(BATCH, Z_DIM, generator=g))
        d_loss = bce(disc(_real(BATCH, g)), ones) + bce(disc(fake.detach()), zeros)
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        g_loss = bce(disc(fake), ones)
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        if step % every == 0:
            with torch.no_grad():
                samples = gen(z_eval)
            if not torch.isfinite(samples).all():
                samples = torch.full_like(samples, 1e6)  # a diverged generator covers nothing
            stats = mode_stats(samples)
            record["modes"].append(stats["modes"])
            record["quality"].append(stats["quality"])
    record["samples"] = [[round(v, 3) for v in p] for p in samples[:400].tolist()]
    return record


def measure_c10(size: Size) -> Numbers:
    cfg = SIZES[size]
    with one_thread():
        return {
            "steps": [cfg["steps"] * i // 4 for i in range(1, 5)],
            "plain": [_train(s, cfg["steps"], False) for s in range(cfg["seeds"])],
            "spectral_norm": [_train(s, cfg["steps"], True) for s in range(cfg["seeds"])],
        }


def coverage(n: Mapping[str, Any], name: str) -> list[float]:
    """Per seed: modes covered, averaged over the last 3 of the 4 evaluations."""
    return [sum(r["modes"][-3:]) / 3 for r in n[name]]


def final_quality(n: Mapping[str, Any], name: str) -> list[float]:
    return [r["quality"][-1] for r in n[name]]


def decide_c10(n: Mapping[str, Any]) -> str:
    plain, sn = coverage(n, "plain"), coverage(n, "spectral_norm")
    if clearly_below(sn, plain, 1.0):
        return CONTRADICTED
    quality_kept = not clearly_below(
        final_quality(n, "spectral_norm"), final_quality(n, "plain"), QUALITY_POINTS
    )
    if clearly_below(plain, sn, 1.0) and quality_kept:
        return REPRODUCED
    return NOT_REPRODUCED


def figure_c10(n: Mapping[str, Any]) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.2))
    ax = fig.add_subplot(1, 3, 1)
    for name in ("plain", "spectral_norm"):
        per_step = list(zip(*(r["modes"] for r in n[name]), strict=True))
        ax.plot(n["steps"], [mean(v) for v in per_step], marker="o", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(f"modes covered (of {MODES})")
    ax.legend(fontsize=7)
    centres = _centres()
    for i, name in enumerate(("plain", "spectral_norm")):
        sub = fig.add_subplot(1, 3, 2 + i)
        xy = n[name][0]["samples"]
        sub.scatter([p[0] for p in xy], [p[1] for p in xy], s=2, alpha=0.5)
        sub.scatter(centres[:, 0], centres[:, 1], marker="x", color="k")
        sub.set_xlim(-3, 3)
        sub.set_ylim(-3, 3)
        sub.set_title(f"{name}, seed 0, final", fontsize=8)
    fig.suptitle("C10: GAN on 8 Gaussians, with and without spectral norm on D", fontsize=9)
    fig.tight_layout()
    return fig


C10 = Claim(
    id="C10",
    claim="Spectral Norm stabilises GAN training",
    source="Miyato et al. 2018",
    kind="X",
    rule=f"GAN on 8 Gaussians on a ring (radius {RADIUS:g}, σ {SIGMA:g}); G and D are "
    f"2-hidden-layer MLPs of width {WIDTH}, non-saturating loss, Adam lr 1e-3 β (0.5, 0.9), "
    f"batch {BATCH}, 2000 steps, 3 seeds, D with and without normlab.spectral_norm on every "
    f"Linear. Every 500 steps {SAMPLES} samples: a mode is covered when >= "
    f"{COVERED_SHARE:.0%} of them lie within 3σ of it; coverage = modes covered averaged over "
    "the last 3 evaluations. Reproduced if SN's coverage is clearly above the plain GAN's "
    "(gap >= 1 mode and > both spreads) and SN's final share of samples within 3σ of a mode is "
    f"not clearly below the plain GAN's by more than {QUALITY_POINTS:g} points; contradicted if "
    "the plain GAN's coverage is clearly above SN's by the same rule; otherwise not reproduced.",
    measure=measure_c10,
    decide=decide_c10,
    figure=figure_c10,
    summarize=lambda n: (
        f"modes covered plain {show(coverage(n, 'plain'))}, SN "
        f"{show(coverage(n, 'spectral_norm'))}; final high-quality % plain "
        f"{show(final_quality(n, 'plain'))}, SN {show(final_quality(n, 'spectral_norm'))}"
    ),
)
