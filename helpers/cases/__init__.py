"""Random configurations and invalid calls for each Q1 op, with torch's function as the oracle.

Each op has an `OpCases`: torch's reference function, a generator of random valid configurations
spanning the op's parameter space, and a list of invalid calls. `helpers.checks` runs them; the Q1
notebook's sweeps and `tests/` share them. The ops are grouped by module: `pooling` (max_pool2d,
avg_pool2d, roi_pool), `convolution` (conv2d, conv_transpose2d), `layers` (flatten, sigmoid,
batch_norm) and `losses` (cross_entropy, mse_loss).
"""

import importlib
import random
import warnings
from dataclasses import dataclass, field, replace
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


# How many random configurations `OpCases.draw_in_scope` tries for one in-scope configuration.
SCOPE_ATTEMPTS = 1000


@dataclass
class OpCases:
    """torch's function for one op, a random-case generator, and the invalid calls.

    The short reference implementation of an op (``helpers.ops.reference``) takes only part of torch's
    parameters: `reference_omits` names the torch parameters it leaves out, with torch's default for
    each, and `in_reference_scope(kwargs)` says whether a call (with those parameters removed) is one
    it handles. `draw_in_scope` draws such calls.
    """

    reference: Callable
    make: Callable  # (rng: random.Random, generator: torch.Generator, dtype) -> Case
    bad: Callable  # () -> list[BadCase]
    rtol: float = None
    atol: float = None
    in_reference_scope: Callable = None  # (kwargs) -> bool; None: every call torch accepts
    reference_omits: dict = field(default_factory=dict)  # parameter name -> torch's default

    def draw(self, seed, dtype):
        """The configuration numbered `seed`: the same parameters whatever `dtype` is."""
        return self.make(random.Random(seed), torch.Generator().manual_seed(seed), dtype)

    def draw_in_scope(self, seed, dtype):
        """The in-scope configuration numbered `seed`: the same parameters whatever `dtype` is.

        Walks the configurations numbered seed * SCOPE_ATTEMPTS + 0, 1, ... (so two seeds never share
        one) and returns the first in the reference's scope, without its `reference_omits` arguments.
        In scope: every omitted parameter is absent or at torch's default, `in_reference_scope` holds,
        and torch accepts the call (the references do not check their arguments). A configuration
        must be in scope in float32 and float64 alike (a few draw, say, a NaN in one dtype only), so
        that the sweeps' float32 values and float64 gradients check the same configuration.
        """
        dtypes = dict.fromkeys((torch.float64, torch.float32, dtype))
        for attempt in range(SCOPE_ATTEMPTS):
            candidate = seed * SCOPE_ATTEMPTS + attempt
            if all(self._in_scope(self.draw(candidate, each)) for each in dtypes):
                return self._without_omitted(self.draw(candidate, dtype))
        raise RuntimeError(f"no configuration in the reference's scope among {SCOPE_ATTEMPTS} draws from seed {seed}")

    def _without_omitted(self, case):
        kwargs = {name: value for name, value in case.kwargs.items() if name not in self.reference_omits}
        return replace(case, kwargs=kwargs)

    def _in_scope(self, case):
        at_default = all(
            name not in case.kwargs or _same(case.kwargs[name], default) for name, default in self.reference_omits.items()
        )
        if not at_default:
            return False
        kwargs = self._without_omitted(case).kwargs
        if self.in_reference_scope is not None and not self.in_reference_scope(kwargs):
            return False
        return _torch_accepts(self.reference, kwargs)


def _same(value, default):
    """`value == default`, also for None and bools (True == 1 is not torch's default 1)."""
    return type(value) is type(default) and value == default


def _torch_accepts(function, kwargs):
    """Whether torch's `function` runs on (copies of) `kwargs` without raising; its warnings are silenced."""
    copies = {name: v.clone() if isinstance(v, torch.Tensor) else v for name, v in kwargs.items()}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            function(**copies)
    except Exception:
        return False
    return True


GROUPS = ("pooling", "convolution", "layers", "losses")


def _collect():
    registry = {}
    for group in GROUPS:
        registry.update(importlib.import_module(f"{__name__}.{group}").CASES)
    return registry


OPS = _collect()
