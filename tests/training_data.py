"""Tiny learnable data sets and a simulated kill, shared by the training tests."""

import torch


class SimulatedKill(Exception):
    """Raised from a forward hook to stop a run mid-epoch, like a kill."""


def learnable_images(count, seed=0):
    """uint8 images whose class is written in the image: a bright square at a class-specific spot."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    images = torch.randint(0, 96, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    for label in range(10):
        row, column = divmod(label, 4)
        images[labels == label, :, 8 * row : 8 * row + 8, 8 * column : 8 * column + 8] = 255
    return images, labels
