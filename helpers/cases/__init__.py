"""Random configurations and invalid calls for each Q1 op, with torch's function as the oracle.

Each op has an `OpCases`: torch's reference function, a generator of random valid configurations
spanning the op's parameter space, and a list of invalid calls. `helpers.checks` runs them; the Q1
notebook's sweeps and `tests/` share them. The ops are grouped by module: `pooling` (max_pool2d,
avg_pool2d, roi_pool), `convolution` (conv2d, conv_transpose2d), `layers` (flatten, sigmoid,
batch_norm) and `losses` (cross_entropy, mse_loss).
"""

import importlib
import random
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class Case:
    """One call: keyword arguments for both functions, a short label, and what to differentiate."""

    kwargs: dict
    label: str
    grad_wrt: tuple = ("input",)


@dataclass
class BadCase:
    """An invalid call, and a regex that our error message must match (argument name and rule)."""

    kwargs: dict
    match: str
    label: str


@dataclass
class OpCases:
    """torch's function for one op, a random-case generator, and the invalid calls."""

    reference: Callable
    make: Callable  # (rng: random.Random, generator: torch.Generator, dtype) -> Case
    bad: Callable  # () -> list[BadCase]
    rtol: float = None
    atol: float = None

    def draw(self, seed, dtype):
        """The configuration numbered `seed`: the same parameters whatever `dtype` is."""
        return self.make(random.Random(seed), torch.Generator().manual_seed(seed), dtype)


GROUPS = ("pooling", "convolution", "layers", "losses")


def _collect():
    registry = {}
    for group in GROUPS:
        registry.update(importlib.import_module(f"{__name__}.{group}").CASES)
    return registry


OPS = _collect()
