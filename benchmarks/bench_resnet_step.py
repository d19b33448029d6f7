"""Time of one whole training step of a ResNet-18 with torch.nn BatchNorm2d and with normlab norms.

ResNet-18 (BasicBlock, [2, 2, 2, 2], torchvision's layout; built here because torchvision
does not import beside torch 2.13), batch 16 of 3x64x64, 10 classes, cross-entropy, SGD with
momentum. Variants: the torch.nn BatchNorm2d model, the same model through
``normlab.convert(model, "batch_norm")`` and through ``normlab.convert(model, "switchable_norm")``.
All variants live in one process and run round by round in a rotated order; a ratio is the
median of the per-round ratios variant / torch.nn.

Targets (issue 9): normlab BatchNorm <= 1.02x, SwitchableNorm <= 1.08x.

    python benchmarks/bench_resnet_step.py [--rounds 21] [--steps 3] [--threads 2]
    python benchmarks/bench_resnet_step.py --threads 1 --cpu-time   # robust to other processes
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import normlab
from bench_classic import rotated_rounds, start_run


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, inplanes = [], 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(BasicBlock(inplanes, planes, stride),
                                        BasicBlock(planes, planes)))
            inplanes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def stepper(
    model: nn.Module, steps: int, clock: Callable[[], float] = time.perf_counter
) -> Callable[[], float]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 3, 64, 64, generator=gen)
    target = torch.randint(0, 10, (16,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()

    def step() -> float:
        start = clock()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), target).backward()
            opt.step()
        return (clock() - start) / steps

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed sample")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpu-time", action="store_true",
                        help="time with process_time (robust to other processes; --threads 1)")
    args = parser.parse_args(argv)
    clock = time.process_time if args.cpu_time else time.perf_counter
    start_run(args.threads)
    base = ResNet18()
    variants = {
        "nn.BatchNorm2d": copy.deepcopy(base),
        "normlab BatchNorm": normlab.convert(base, "batch_norm"),
        "normlab SwitchableNorm": normlab.convert(base, "switchable_norm"),
    }
    steps = {name: stepper(m, args.steps, clock) for name, m in variants.items()}
    names = list(steps)
    times = rotated_rounds(steps, args.rounds, args.warmup)
    ref = times["nn.BatchNorm2d"]
    print("| model | step ms | ratio vs nn.BatchNorm2d | target |")
    print("|---|---:|---:|---:|")
    targets = {"normlab BatchNorm": "1.02", "normlab SwitchableNorm": "1.08"}
    for name in names:
        t = times[name]
        ratio = statistics.median(a / b for a, b in zip(t, ref, strict=True))
        print(f"| {name} | {1e3 * statistics.median(t):.1f} | {ratio:.3f} | "
              f"{targets.get(name, '-')} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
