"""Training throughput of the engine's ``train()`` against a bare training loop, in images/s.

Both train the same net (same initial weights, channels_last) with the same optimizer on the same
images already in memory. The bare loop is the least a training loop can do: it normalises the
whole set once, then per step indexes a shuffled batch, runs forward, backward and the optimizer
step. ``train()`` adds its per-batch data pipeline (``helpers.data.Batches``: gather and normalise),
the per-batch learning-rate schedule, the on-device loss and accuracy sums and the progress
bookkeeping; without ``--checkpoint`` it writes no checkpoints and gets no validation set. With
``--precision bfloat16`` both run their forward under ``torch.autocast`` in bfloat16 (mixed precision).

Images: the first ``--images`` training images of CIFAR-10 when $CIFAR10_DIR is set, else random
ones (the speed does not depend on the pixels). Runs alternate (bare, engine, bare, engine, ...)
so that a neighbour's load hits both alike; the best of ``--repeats`` runs of each is reported,
per second of wall time and per second of this process's CPU time. On a machine that other
processes load, the CPU-time figures (with ``--threads 1``) compare the two loops most fairly:
wall time then mostly measures the neighbours.

    .venv/bin/python benchmarks/training_speed.py [--images 5120] [--epochs 2] [--repeats 3]
"""

import argparse
import copy
import os
import tempfile
import time
from typing import NamedTuple

import torch
from torch import nn

from helpers.data import Augment, Batches, load_cifar10, normalize
from helpers.models import build_model
from helpers.training import PRECISIONS, TrainConfig, precision_context, train


def main():
    arguments = parse_arguments()
    torch.set_num_threads(arguments.threads)
    images, labels, source = load_images(arguments.images)
    torch.manual_seed(0)
    initial_model = build_model(arguments.model).to(memory_format=torch.channels_last)
    config = TrainConfig(
        optimizer="sgd", lr=0.01, momentum=0.9, epochs=arguments.epochs,
        batch_size=arguments.batch_size, augment=Augment(), precision=arguments.precision,
    )
    print(f"{arguments.model} net, {len(images)} images ({source}), batch {arguments.batch_size}, "
          f"{arguments.precision}, {arguments.epochs} epoch(s) per run, {torch.get_num_threads()} threads")

    warm_up(copy.deepcopy(initial_model), images, labels, config)
    bare_speeds, engine_speeds = [], []
    for repeat in range(arguments.repeats):
        bare_speeds.append(bare_loop_speed(copy.deepcopy(initial_model), images, labels, config))
        engine_speeds.append(engine_speed(copy.deepcopy(initial_model), images, labels, config, arguments.checkpoint))
        bare, engine = bare_speeds[-1], engine_speeds[-1]
        print(f"run {repeat + 1}: bare loop {bare.wall:6.0f} images/s ({bare.cpu:6.0f} per CPU s), "
              f"train() {engine.wall:6.0f} images/s ({engine.cpu:6.0f} per CPU s)")
    for clock in ("wall", "cpu"):
        bare = max(getattr(speed, clock) for speed in bare_speeds)
        engine = max(getattr(speed, clock) for speed in engine_speeds)
        unit = "images/s" if clock == "wall" else "images per CPU second"
        print(f"best ({clock} time): bare loop {bare:.0f}, train() {engine:.0f} {unit}; "
              f"ratio train()/bare = {engine / bare:.3f}")


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("plain", "bn"), default="bn", help="net to train (default: bn)")
    parser.add_argument("--images", type=int, default=5120, help="training images per epoch (default: 5120)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed run (default: 2)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size (default: 128)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each loop (default: 3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--precision", choices=PRECISIONS, default="float32",
                        help="float32, or bfloat16 mixed precision (default: float32)")
    parser.add_argument("--checkpoint", action="store_true", help="let train() write its per-epoch checkpoints")
    arguments = parser.parse_args()
    for name in ("images", "epochs", "batch_size", "repeats", "threads"):
        if getattr(arguments, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return arguments


def load_images(count):
    """The first ``count`` CIFAR-10 training images if $CIFAR10_DIR is set, else random ones."""
    if os.environ.get("CIFAR10_DIR"):
        data = load_cifar10()
        return data.train_images[:count], data.train_labels[:count], f"CIFAR-10 from {data.source}"
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (count,), generator=generator)
    return images, labels, "random, CIFAR10_DIR unset"


def warm_up(model, images, labels, config):
    """A few steps so that one-time kernel set-up counts in neither measurement."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batch_size = config.batch_size
    for inputs, targets in Batches(images[: 4 * batch_size], labels[: 4 * batch_size], batch_size):
        optimizer.zero_grad(set_to_none=True)
        with precision_context(config.precision, "cpu"):
            logits = model(inputs).float()
        nn.functional.cross_entropy(logits, targets).backward()
        optimizer.step()


class Speed(NamedTuple):
    """Images per second of wall time and per second of this process's CPU time."""

    wall: float
    cpu: float


class Stopwatch:
    """Wall and process CPU time since it was started."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def speed(self, images):
        return Speed(images / (time.perf_counter() - self.wall), images / (time.process_time() - self.cpu))


def bare_loop_speed(model, images, labels, config):
    """Speed of a minimal loop over images normalised once in memory."""
    inputs = normalize(images)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    loss_function = nn.CrossEntropyLoss()
    model.train()
    stopwatch = Stopwatch()
    for epoch in range(config.epochs):
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(epoch))
        for batch in order.split(config.batch_size):
            with precision_context(config.precision, "cpu"):
                logits = model(inputs[batch]).float()
            loss = loss_function(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return stopwatch.speed(config.epochs * len(inputs))


def engine_speed(model, images, labels, config, checkpoint):
    """Speed of ``train()`` (no validation set, no progress bars)."""
    with tempfile.TemporaryDirectory() as run_dir:
        stopwatch = Stopwatch()
        history = train(model, config, images, labels, run_dir=run_dir if checkpoint else None,
                        progress=False, device="cpu", num_threads=torch.get_num_threads())
        speed = stopwatch.speed(config.epochs * len(images))
    if history.status != "completed":
        raise RuntimeError(f"the engine's run ended with status {history.status}: {history.message}")
    return speed


if __name__ == "__main__":
    main()
