"""Time the input pipeline against a training step: loading + augmenting must stay under 10% of it.

    python benchmarks/data_speed.py [--batch-size 128] [--model bn] [--real] [--threads 2]

For each augmentation it times one batch from `helpers.data.Batches` (index, augment, normalise to
float32 channels_last), then one SGD step (forward, loss, backward, update) of the assignment's net
on a batch of the same size, and prints each as a fraction of the step. Synthetic uint8 images are
used unless --real asks for CIFAR-10 (via load_cifar10, which then needs $CIFAR10_DIR or data/).
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from helpers.data import Augment, Batches, load_cifar10

BUDGET = 0.10
AUGMENTS = ("none", "flip", "crop:4", "rotate:15", "flip+crop:4", "flip+crop:4+rotate:15")


def parse_args():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--batches", type=int, default=40, help="batches timed per augmentation")
    parser.add_argument("--steps", type=int, default=15, help="training steps timed")
    parser.add_argument("--model", choices=("plain", "bn"), default="bn")
    parser.add_argument("--real", action="store_true", help="use CIFAR-10 instead of random images")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    return parser.parse_args()


def make_model(name):
    """The assignment's net from helpers.models, or a VGG-like stand-in of the same shape."""
    try:
        from helpers.models import build_model
    except ImportError:
        return stand_in_net()
    return build_model(name)


def stand_in_net():
    layers, channels = [], 3
    for width in (16, 16, "pool", 32, 32, "pool", 64, 64, "pool", 128, 128):
        if width == "pool":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
            channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def median_seconds(function, repeats):
    """Median wall time of ``function()`` over ``repeats`` calls: robust to a busy shared machine."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def seconds_per_batch(images, labels, batch_size, augment, batches):
    """Median seconds to produce one batch (after one warm-up batch)."""
    loader = Batches(images, labels, batch_size, shuffle=True, augment=augment, drop_last=True)
    iterator = iter(loader)
    next(iterator)
    return median_seconds(lambda: next(iterator), batches)


def seconds_per_step(model, inputs, labels, steps):
    """Median seconds of one SGD step (after three warm-up steps)."""
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(inputs), labels).backward()
        optimizer.step()

    for _ in range(3):
        step()
    return median_seconds(step, steps)


def main():
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    count = args.batch_size * (args.batches + 1)
    if args.real:
        data = load_cifar10()
        images, labels = data.train_images[:count], data.train_labels[:count]
    else:
        images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8)
        labels = torch.randint(0, 10, (count,))
    inputs, step_labels = next(iter(Batches(images, labels, args.batch_size)))

    step = seconds_per_step(make_model(args.model), inputs, step_labels, args.steps)
    print(f"torch threads: {torch.get_num_threads()}; batch size {args.batch_size}")
    print(f"training step ({args.model} net): {step * 1e3:7.2f} ms")
    worst = 0.0
    for spec in AUGMENTS:
        seconds = seconds_per_batch(images, labels, args.batch_size, Augment.parse(spec), args.batches)
        worst = max(worst, seconds / step)
        print(f"batch with {spec:22s}: {seconds * 1e3:7.2f} ms = {seconds / step:6.1%} of a step")
    verdict = "within" if worst <= BUDGET else "OVER"
    print(f"worst ratio {worst:.1%}: {verdict} the {BUDGET:.0%} budget")


if __name__ == "__main__":
    main()
