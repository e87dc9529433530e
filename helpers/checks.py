"""Run an op of `helpers.ops` against torch's own over random configurations: values, gradients, errors.

The configurations live in `helpers.cases` (one `OpCases` per op). This module only runs them, so the
Q1 notebook's sweeps and the tests in `tests/` check the same things the same way.
"""

from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers.cases import OPS
from helpers.compare import mismatch


@dataclass
class SweepResult:
    """How many random configurations of one op matched torch, and the first few that did not."""

    op: str
    dtype: torch.dtype
    cases: int = 0
    matched: int = 0
    grads_checked: int = 0
    grads_matched: int = 0
    failures: list = field(default_factory=list)

    @property
    def ok(self):
        return self.matched == self.cases and self.grads_matched == self.grads_checked

    def __str__(self):
        text = (
            f"{self.op} sweep ({str(self.dtype).replace('torch.', '')}): values matched torch in "
            f"{self.matched}/{self.cases} random configurations"
        )
        if self.grads_checked:
            text += f", float64 gradients in {self.grads_matched}/{self.grads_checked}"
        return text


def _clone_kwargs(kwargs, requires_grad=()):
    """Fresh copies of every tensor argument, so that in-place updates of one call cannot leak."""
    def copy(name, value):
        if isinstance(value, torch.Tensor):
            value = value.detach().clone().requires_grad_(name in requires_grad)
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
            value = type(value)(v.detach().clone() for v in value)
        return value

    return {name: copy(name, value) for name, value in kwargs.items()}


def _as_tuple(output):
    return tuple(output) if isinstance(output, (tuple, list)) else (output,)


def compare_values(ours_fn, torch_fn, case, rtol=None, atol=None):
    """Call both functions on copies of `case.kwargs`; return None if they agree, else the reason.

    Compares every output (values, indices) and every tensor argument afterwards (in-place updates
    such as batch_norm's running statistics). An error raised by one side only is a mismatch.
    """
    ours_kwargs, torch_kwargs = _clone_kwargs(case.kwargs), _clone_kwargs(case.kwargs)
    try:
        expected = _as_tuple(torch_fn(**torch_kwargs))
    except Exception as error:  # torch refuses this configuration: ours must refuse it too
        try:
            ours_fn(**ours_kwargs)
        except type(error):
            return None
        except Exception as ours_error:
            return f"torch raised {type(error).__name__}, ours {type(ours_error).__name__}: {ours_error}"
        return f"torch raised {type(error).__name__} ({error}), ours returned"
    try:
        actual = _as_tuple(ours_fn(**ours_kwargs))
    except Exception as error:
        return f"ours raised {type(error).__name__}: {error}"
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, torch returns {len(expected)}"
    for position, (mine, theirs) in enumerate(zip(actual, expected)):
        problem = mismatch(mine, theirs, rtol, atol)
        if problem:
            return f"output {position}: {problem}"
    for name, theirs in torch_kwargs.items():
        if isinstance(theirs, torch.Tensor):
            problem = mismatch(ours_kwargs[name], theirs, rtol, atol)
            if problem:
                return f"argument {name} after the call: {problem}"
    return None


def compare_gradients(ours_fn, torch_fn, case, rtol=1e-7, atol=1e-9):
    """Backpropagate the same random cotangent through both; None if every gradient agrees.

    `case` should be float64. Gradients are taken with respect to `case.grad_wrt` (those that are
    tensors), through every floating-point output.
    """
    names = [name for name in case.grad_wrt if isinstance(case.kwargs.get(name), torch.Tensor)]
    if not names:
        return None
    gradients = []
    for fn in (torch_fn, ours_fn):
        kwargs = _clone_kwargs(case.kwargs, requires_grad=names)
        outputs = [o for o in _as_tuple(fn(**kwargs)) if o.is_floating_point() and o.requires_grad]
        generator = torch.Generator().manual_seed(1234)
        cotangents = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in outputs]
        inputs = [kwargs[name] for name in names]
        gradients.append(torch.autograd.grad(outputs, inputs, cotangents, allow_unused=True))
    for name, theirs, mine in zip(names, *gradients):
        if theirs is None and mine is None:
            continue
        if theirs is None or mine is None:
            return f"gradient of {name}: {'ours' if mine is None else 'torch'} gives none"
        problem = mismatch(mine, theirs, rtol, atol)
        if problem:
            return f"gradient of {name}: {problem}"
    return None


def sweep(op, cases=50, seed=0, dtype=torch.float32, gradients=True, ours=None):
    """Check `ours` (default: `helpers.ops.<op>`) against torch on `cases` random configurations.

    Each configuration is drawn from `helpers.cases.OPS[op]` with its own seed; values are compared
    in `dtype`, and with `gradients` the same configuration is redrawn in float64 and the gradients
    compared. Returns a `SweepResult`.
    """
    if ours is None:
        from helpers import ops

        ours = getattr(ops, op)
    spec = OPS[op]
    result = SweepResult(op=op, dtype=dtype)
    for index in range(cases):
        case_seed = seed * 100_003 + index
        case = spec.draw(case_seed, dtype)
        result.cases += 1
        problem = compare_values(ours, spec.reference, case, spec.rtol, spec.atol)
        if problem is None:
            result.matched += 1
        else:
            result.failures.append(f"{case.label}: {problem}")
        if gradients and case.grad_wrt:
            case64 = spec.draw(case_seed, torch.float64)
            try:
                spec.reference(**_clone_kwargs(case64.kwargs))
            except Exception:
                continue  # torch refuses this configuration: there is no gradient to compare
            result.grads_checked += 1
            problem = compare_gradients(ours, spec.reference, case64)
            if problem is None:
                result.grads_matched += 1
            else:
                result.failures.append(f"{case64.label} (float64 gradients): {problem}")
    return result


def check_errors(op, ours=None):
    """For each invalid call in `helpers.cases.OPS[op].bad`, check that torch and ours both refuse it.

    Ours must raise the same exception class as torch (or a subclass), with a message that matches
    the case's pattern (it names the argument and the rule). Returns a list of problems (empty: ok).
    """
    import re

    if ours is None:
        from helpers import ops

        ours = getattr(ops, op)
    problems = []
    for bad in OPS[op].bad():
        try:
            OPS[op].reference(**_clone_kwargs(bad.kwargs))
        except Exception as error:
            expected_type = type(error)
        else:
            problems.append(f"{bad.label}: torch accepts it, so ours should too")
            continue
        try:
            ours(**_clone_kwargs(bad.kwargs))
        except expected_type as error:
            if not re.search(bad.match, str(error)):
                problems.append(f"{bad.label}: message {str(error)!r} does not match {bad.match!r}")
        except Exception as error:
            problems.append(f"{bad.label}: ours raised {type(error).__name__}, torch {expected_type.__name__}")
        else:
            problems.append(f"{bad.label}: ours accepted it, torch raises {expected_type.__name__}")
    return problems


def show_error(fn, *args, **kwargs):
    """Call `fn` and print the error it raises as `Type: message` (for the notebook's bad-input cells)."""
    try:
        fn(*args, **kwargs)
    except Exception as error:
        print(f"{type(error).__name__}: {error}")
    else:
        raise AssertionError(f"{getattr(fn, '__name__', fn)} accepted invalid arguments")


class RecordOperators(TorchDispatchMode):
    """Within ``with RecordOperators() as recorder:``, list in ``recorder.seen`` the name of every
    operator (aten, torchvision) that reaches the dispatcher, forward and backward, in call order.

    The tests use it to prove that no built-in kernel of a Q1 op runs inside ours, and that an
    invalid call raises before any tensor work.
    """

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(func.name())
        return func(*args, **(kwargs or {}))
