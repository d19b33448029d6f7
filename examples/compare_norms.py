"""Train a tiny CNN on scikit-learn's 8x8 digits with every registered norm, at two batch sizes.

Each norm is plugged in with ``normlab.factory(spec)`` as a ``norm_layer=`` callable (plus
``"none"``, no normalization). CPU, fixed seeds, deterministic algorithms: the table is the same
on every run with the same thread count.

One thread by default: on 8x8 images a second intra-op thread makes no step faster, and when the
other core is busy (say, ``make test`` running alongside) it makes steps 10-100x slower.

    python examples/compare_norms.py [--epochs 8] [--batch-sizes 32 4] [--norms bn gn:8 none]

Methods that need more than a layer swap get what their papers prescribe: Virtual BN propagates a
fixed reference batch (64 training images, drawn once) through the current model before every
step (`normlab.reference_pass`); Batch-Instance Norm's gates are clipped into [0, 1] after every
optimizer step; Batch Renorm's schedule (5k / 25k / 40k steps in the paper) is shortened to this
run's few thousand steps. Frozen BN is left out by default: with nothing to freeze from, it is
a fixed affine map.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import Tensor, nn

import normlab

NormLayer = Callable[[int], nn.Module]
WIDTH = 32
# the spec used for a registered name when its defaults do not suit WIDTH=32 channels
SPECS = {"group_norm": "group_norm:8", "evo_norm_s0": "evo_norm_s0:8", "ghost_batch_norm": "gbn:8"}
# keyword arguments for a registered name, where its defaults suit much longer training
KWARGS = {"batch_renorm": {"warmup_steps": 200, "dmax_ramp_end": 600, "rmax_ramp_end": 1000}}
NOT_FROM_SCRATCH = {"frozen_batch_norm"}
REFERENCE_SIZE = 64


def load_data() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """1797 digits, 8x8 grey levels 0..16 -> standardized (N, 1, 8, 8); 20% held out."""
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x.astype(np.float32), y, test_size=0.2, random_state=0, stratify=y
    )
    mean, std = x_train.mean(), x_train.std()

    def prep(a: np.ndarray) -> Tensor:
        return torch.from_numpy((a - mean) / std).reshape(-1, 1, 8, 8)

    return prep(x_train), torch.from_numpy(y_train), prep(x_test), torch.from_numpy(y_test)


def make_model(norm_layer: NormLayer) -> nn.Module:
    """conv-norm-relu x3 (8x8 -> 4x4 -> 2x2), global average pool, linear."""

    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        return [conv, norm_layer(c_out), nn.ReLU()]

    return nn.Sequential(
        *block(1, WIDTH, 1), *block(WIDTH, WIDTH, 2), *block(WIDTH, WIDTH, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(WIDTH, 10),
    )


def norm_layer_for(spec: str) -> NormLayer:
    if spec == "none":
        return lambda _: nn.Identity()
    return normlab.factory(SPECS.get(spec, spec), **KWARGS.get(spec, {}))


def train(
    spec: str, batch_size: int, epochs: int, data: tuple[Tensor, Tensor, Tensor, Tensor]
) -> tuple[float, float]:
    """Returns (mean training loss over the last epoch, test error in eval mode)."""
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(0)
    model = make_model(norm_layer_for(spec))
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    normlab.clamp_gates_after_step(opt, model)  # Batch-Instance Norm's ρ; no-op otherwise
    order = torch.Generator().manual_seed(1)
    uses_reference = any(isinstance(m, normlab.VirtualBatchNorm) for m in model.modules())
    x_ref = x_train[torch.randperm(len(x_train), generator=order)[:REFERENCE_SIZE]]
    steps = len(x_train) // batch_size  # drop the last partial batch
    loss_sum = 0.0
    for _ in range(epochs):
        perm = torch.randperm(len(x_train), generator=order)
        model.train()
        loss_sum = 0.0
        for i in range(steps):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            if uses_reference:  # R through the current weights, every step (Salimans et al.)
                with normlab.reference_pass(model):
                    model(x_ref)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
    model.eval()
    with torch.no_grad():
        if uses_reference:
            with normlab.reference_pass(model):
                model(x_ref)
        wrong = (model(x_test).argmax(1) != y_test).sum().item()
    return loss_sum / steps, wrong / len(x_test)


def markdown(results: dict[tuple[str, int], tuple[float, float]], batch_sizes: list[int]) -> str:
    head = ["norm"]
    for bs in batch_sizes:
        head += [f"train loss (bs {bs})", f"test error (bs {bs})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for spec in dict.fromkeys(s for s, _ in results):
        cells = [SPECS.get(spec, spec)]
        for bs in batch_sizes:
            loss, err = results[spec, bs]
            cells += [f"{loss:.3f}", f"{100 * err:.1f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 4])
    default = [n for n in normlab.available() if n not in NOT_FROM_SCRATCH]
    parser.add_argument("--norms", nargs="+", default=[*default, "none"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    data = load_data()
    start = time.perf_counter()
    results = {}
    for spec in args.norms:
        for bs in args.batch_sizes:
            t0 = time.perf_counter()
            results[spec, bs] = train(spec, bs, args.epochs, data)
            loss, err = results[spec, bs]
            print(f"  {spec:<14} bs {bs:<3} loss {loss:.3f}  test error {100 * err:5.1f}%"
                  f"  ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    total = time.perf_counter() - start
    print(f"Tiny CNN on sklearn digits ({len(data[0])} train / {len(data[2])} test), "
          f"{args.epochs} epochs, SGD lr 0.02 momentum 0.9, CPU x{torch.get_num_threads()}\n")
    print(markdown(results, args.batch_sizes))
    print(f"\nTotal time: {total:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
