"""Helpers shared by several test files: a tiny learnable data set (in memory, or as a CIFAR-10-shaped
image-folder tree), a simulated kill, and the marker that skips the scratch-net tests when the Q1 ops
do not load."""

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.data import CLASSES
from helpers.models import SCRATCH_OPS
from helpers.training import TrainConfig


def _scratch_ops_load():
    """True when helpers.ops loads and defines every op the scratch nets use."""
    try:
        from helpers import ops
    except Exception:  # the Q1 notebook is missing or broken: the scratch tests cannot run
        return False
    return all(callable(getattr(ops, name, None)) for name in SCRATCH_OPS)


needs_scratch_ops = pytest.mark.skipif(
    not _scratch_ops_load(), reason=f"helpers.ops lacks one of {', '.join(SCRATCH_OPS)}"
)


class SimulatedKill(Exception):
    """Raised from a forward hook to stop a run mid-epoch, like a kill."""


def quick_config(**changes):
    """A short SGD recipe (2 epochs, batch 32, learning rate 0.05) with ``changes`` applied."""
    return TrainConfig(**({"optimizer": "sgd", "lr": 0.05, "epochs": 2, "batch_size": 32} | changes))


def learnable_images(count, seed=0):
    """uint8 images whose class is written in the image: a bright square at a class-specific spot."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    images = torch.randint(0, 96, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    for label in range(10):
        row, column = divmod(label, 4)
        images[labels == label, :, 8 * row : 8 * row + 8, 8 * column : 8 * column + 8] = 255
    return images, labels


# Images per class of the tiny CIFAR-10 tree that the command-line tests train on (tests/conftest.py).
TRAIN_PER_CLASS, TEST_PER_CLASS = 10, 3


def write_tiny_cifar(root, train_per_class, test_per_class):
    """Write a CIFAR-10-shaped tree of JPEGs, ``train/<class>/NNNN.jpg`` and ``test/<class>/...``, with
    ``train_per_class`` and ``test_per_class`` images per class, each class marked by a bright square."""
    generator = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                pixels = generator.integers(0, 64, (32, 32, 3), dtype=np.uint8)
                pixels[3 * (label // 4) : 3 * (label // 4) + 8, 8 * (label % 4) : 8 * (label % 4) + 8] = 255
                Image.fromarray(pixels).save(folder / f"{index:04d}.jpg", quality=95)
    return root
