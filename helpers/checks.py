"""Run an op of `helpers.ops` against torch's own over random configurations: values, gradients, errors.

The configurations live in `helpers.cases` (one `OpCases` per op). This module only runs them, so the
Q1 notebook's sweeps and the tests in `tests/` check the same things the same way.
"""

import ast
import contextlib
import functools
import io
import os
import sys
import tokenize
import warnings
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from helpers.cases import OPS
from helpers.compare import max_abs_diff, mismatch, preview, slice_text

# torch's warnings for the calls the loss cases make on purpose (our ops raise the same): the deprecated
# size_average/reduce arguments, and mse_loss broadcasting a target of another size. The checks below
# silence these two, and only these, so that any other warning still shows.
DELIBERATE_CASE_WARNINGS = (
    r"size_average and reduce args will be deprecated",
    r"Using a target size \(.*\) that is different to the input size",
)


@contextlib.contextmanager
def deliberate_warnings_ignored():
    """Within ``with deliberate_warnings_ignored():`` the warnings of :data:`DELIBERATE_CASE_WARNINGS` are silenced."""
    with warnings.catch_warnings():
        for message in DELIBERATE_CASE_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=UserWarning)
        yield


def ignoring_deliberate_warnings(function):
    """Decorate ``function`` to run within :func:`deliberate_warnings_ignored`."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with deliberate_warnings_ignored():
            return function(*args, **kwargs)

    return wrapper


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
    scope: str = None  # None: every configuration; "reference": those within the reference's scope

    @property
    def ok(self):
        return self.matched == self.cases and self.grads_matched == self.grads_checked

    def __str__(self):
        text = (
            f"{self.op}{' ' + self.scope if self.scope else ''} sweep ({str(self.dtype).replace('torch.', '')}): "
            f"values matched torch in {self.matched}/{self.cases} random configurations"
        )
        if self.scope:
            text += " within its scope"
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


@ignoring_deliberate_warnings
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
    except NotImplementedError:
        raise  # a function not written yet (the student version): not a mismatch
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


def _differentiated(case):
    """The names of `case.grad_wrt` whose arguments are tensors: those a gradient comparison differentiates."""
    return [name for name in case.grad_wrt if isinstance(case.kwargs.get(name), torch.Tensor)]


def _gradients(fn, kwargs, names):
    """The gradients of the named arguments when a fixed random output gradient flows back through `fn`."""
    kwargs = _clone_kwargs(kwargs, requires_grad=names)
    outputs = [o for o in _as_tuple(fn(**kwargs)) if o.is_floating_point() and o.requires_grad]
    generator = torch.Generator().manual_seed(1234)
    output_gradients = [torch.randn(o.shape, generator=generator, dtype=o.dtype) for o in outputs]
    return torch.autograd.grad(outputs, [kwargs[name] for name in names], output_gradients, allow_unused=True)


@ignoring_deliberate_warnings
def compare_gradients(ours_fn, torch_fn, case, rtol=1e-7, atol=1e-9):
    """Backpropagate the same random output gradient through both; None if every gradient agrees.

    `case` should be float64. Gradients are taken with respect to `case.grad_wrt` (those that are
    tensors), through every floating-point output.
    """
    names = _differentiated(case)
    if not names:
        return None
    gradients = [_gradients(torch_fn, case.kwargs, names)]
    try:
        gradients.append(_gradients(ours_fn, case.kwargs, names))
    except NotImplementedError:
        raise  # a function not written yet (the student version): not a mismatch
    except Exception as error:  # ours fails in its forward or backward pass: a mismatch, not a crash
        return f"ours raised {type(error).__name__}: {error}"
    for name, theirs, mine in zip(names, *gradients):
        if theirs is None and mine is None:
            continue
        if theirs is None or mine is None:
            return f"gradient of {name}: {'ours' if mine is None else 'torch'} gives none"
        problem = mismatch(mine, theirs, rtol, atol)
        if problem:
            return f"gradient of {name}: {problem}"
    return None


@ignoring_deliberate_warnings
def sweep(op, cases=50, seed=0, dtype=torch.float32, gradients=True, ours=None, scope=None):
    """Check `ours` (default: `helpers.ops.<op>`) against torch on `cases` random configurations.

    Each configuration is drawn from `helpers.cases.OPS[op]` with its own seed; values are compared
    in `dtype`, and with `gradients` the same configuration is redrawn in float64 and the gradients
    compared. With ``scope="reference"`` the configurations are those within the scope of the short
    reference implementation (`OpCases.draw_in_scope`), and `ours` defaults to
    `helpers.ops.reference.<op>`. Returns a `SweepResult`.
    """
    if scope not in (None, "reference"):
        raise ValueError(f"scope must be None or 'reference', not {scope!r}")
    if ours is None:
        from helpers import ops

        ours = getattr(ops.reference if scope == "reference" else ops, op)
    spec = OPS[op]
    draw = spec.draw_in_scope if scope == "reference" else spec.draw
    result = SweepResult(op=op, dtype=dtype, scope=scope)
    for index in range(cases):
        case_seed = seed * 100_003 + index
        case = draw(case_seed, dtype)
        result.cases += 1
        problem = compare_values(ours, spec.reference, case, spec.rtol, spec.atol)
        if problem is None:
            result.matched += 1
        else:
            result.failures.append(f"{case.label}: {problem}")
        if gradients and case.grad_wrt:
            case64 = draw(case_seed, torch.float64)
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


@dataclass
class BackwardResult:
    """How many in-scope float64 configurations gave the drop-in's gradients equal to autograd's through
    the reference implementation, and the first few that did not."""

    op: str
    cases: int = 0
    matched: int = 0
    failures: list = field(default_factory=list)

    @property
    def ok(self):
        return self.matched == self.cases

    def __str__(self):
        return (
            f"{self.op} backward (float64): the drop-in's gradients matched autograd through the reference "
            f"in {self.matched}/{self.cases} random configurations within its scope"
        )


@ignoring_deliberate_warnings
def compare_backward(op, cases=30, seed=0, ours=None, reference=None):
    """Check the drop-in's backward (`ours`, default `helpers.ops.<op>`) against autograd through the
    reference implementation (`reference`, default `helpers.ops.reference.<op>`).

    Uses `compare_gradients` with the reference as the oracle, on `cases` float64 configurations
    within the reference's scope that have something to differentiate (drawn with the seeds of
    `sweep`). Returns a `BackwardResult`.
    """
    from helpers import ops

    ours = getattr(ops, op) if ours is None else ours
    reference = getattr(ops.reference, op) if reference is None else reference
    result = BackwardResult(op=op)
    for index in range(10 * cases):  # a few configurations have no gradient (integer inputs)
        if result.cases == cases:
            break
        case = OPS[op].draw_in_scope(seed * 100_003 + index, torch.float64)
        if not _differentiated(case):
            continue
        result.cases += 1
        problem = compare_gradients(ours, reference, case)
        if problem is None:
            result.matched += 1
        else:
            result.failures.append(f"{case.label}: {problem}")
    return result


def _shown(output):
    """A short text of an op's output: a scalar's value, else the top-left corner of its first map."""
    if output.dim() == 0:
        return f" {output.item():.4f}"
    return "\n" + str(preview(output.detach()))


@ignoring_deliberate_warnings
def assignment_case(op, reference, drop_in=None, index=None):
    """Run the assignment's own call(s) of `op` through `reference` (and `drop_in`) and torch, side by side.

    Prints the call, torch's output and the reference's (a corner of the first map, or the value of a
    loss), then one line per implementation: the largest difference from torch in float32 and whether
    its float64 gradients equal torch's. `index` picks one call of an op that has several (conv2d).
    Raises AssertionError when an implementation differs from torch.
    """
    from helpers.cases.assignment import assignment_cases

    torch_fn = OPS[op].reference
    cases, cases64 = assignment_cases(op), assignment_cases(op, torch.float64)
    if index is not None:
        cases, cases64 = cases[index : index + 1], cases64[index : index + 1]
    implementations = {"reference": reference} if drop_in is None else {"reference": reference, "drop-in": drop_in}
    for case, case64 in zip(cases, cases64):
        expected = torch_fn(**_clone_kwargs(case.kwargs))
        outputs = {name: fn(**_clone_kwargs(case.kwargs)) for name, fn in implementations.items()}
        print(f"{case.label}: input {tuple(case.kwargs['input'].shape)} -> output {tuple(expected.shape)}")
        for name, output in (("torch", expected), ("reference", outputs["reference"])):
            print(f"{name}{slice_text(output)}:{_shown(output)}")
        gradients = ", ".join(_differentiated(case))
        problems = []
        for name, output in outputs.items():
            problem = mismatch(output, expected)
            if problem is None:
                problem = compare_gradients(implementations[name], torch_fn, case64)
            difference = max_abs_diff(output, expected) if output.shape == expected.shape else float("nan")
            print(f"{name:9} vs torch: max |difference| = {difference:.1e}; "
                  f"float64 gradients of {gradients} {'differ' if problem else 'equal'}")
            if problem:
                problems.append(f"{name}: {problem}")
        if problems:
            raise AssertionError(f"{op}, {case.label}: " + "; ".join(problems))


def drop_in_checks(op, drop_in, reference, cases=40, seed=0, backward_cases=20):
    """The checks of a drop-in `op`, each printed in one line, raising AssertionError on the first that fails:
    its values and float64 gradients against torch on `cases` random configurations (`sweep`), its
    gradients against autograd through `reference` (`compare_backward`), and every invalid call of
    `helpers.cases` refused like torch (`check_errors`)."""
    result = sweep(op, cases, seed=seed, ours=drop_in)
    print(result)
    assert result.ok, result.failures[:3]
    backward = compare_backward(op, backward_cases, seed=seed, ours=drop_in, reference=reference)
    print(backward)
    assert backward.ok, backward.failures[:3]
    problems = check_errors(op, ours=drop_in)
    assert not problems, problems
    print(f"{op}: each of the {len(OPS[op].bad())} invalid calls listed for it is refused like torch")


@contextlib.contextmanager
def native_stderr_silenced():
    """Within ``with native_stderr_silenced():`` what native code writes to file descriptor 2 goes to
    /dev/null: torchvision's kernels print a C++ stack trace there before raising some of the errors
    that the invalid calls provoke on purpose, and the Python exception already says it all."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@ignoring_deliberate_warnings
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
            with native_stderr_silenced():
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


@ignoring_deliberate_warnings
def show_error(fn, *args, **kwargs):
    """Call `fn` and print the error it raises as `Type: message` (for the notebook's bad-input cells)."""
    try:
        fn(*args, **kwargs)
    except Exception as error:
        print(f"{type(error).__name__}: {error}")
    else:
        raise AssertionError(f"{getattr(fn, '__name__', fn)} accepted invalid arguments")


def code_line_count(source):
    """The number of lines of code in `source`: docstrings, comments and blank lines not counted.

    A line counts when a token other than a comment, a line break or an indentation change is on it
    (a statement spread over several lines counts each of them), unless it lies in a docstring (a
    string that is the first statement of the module, of a function or of a class).
    """
    docstring_lines = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                docstring_lines.update(range(first.lineno, first.end_lineno + 1))
    not_code = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    code_lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in not_code:
            code_lines.update(range(token.start[0], token.end[0] + 1))
    return len(code_lines - docstring_lines)


def forbidden_attributes(source):
    """The attributes named in `source` (``torch.flatten``, ``x.sigmoid()``, ``F.conv2d``, ``nn.MaxPool2d``...)
    that name a Q1 op or im2col/col2im (`FORBIDDEN_WORDS`, case and underscores ignored), or F.unfold/F.fold.

    A static complement to `RecordOperators`: composite functions such as ``torch.flatten`` or
    ``Tensor.unflatten`` reach the dispatcher as plain views, so only the source shows them.
    """
    words = [word.replace("_", "") for word in FORBIDDEN_WORDS]
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr.lower().replace("_", "")
        owner = getattr(node.value, "id", getattr(node.value, "attr", None))  # F in F.unfold, nn in nn.Fold
        if any(word in name for word in words) or (name in ("unfold", "fold") and owner in ("F", "functional", "nn")):
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


# Words in the name of an operator that is torch's (or torchvision's) own kernel for a Q1 op, or
# im2col/col2im (F.unfold/F.fold): none may reach the dispatcher while our ops or references run.
FORBIDDEN_WORDS = (
    "conv",  # convolution, _convolution, mkldnn_convolution, slow_conv*, conv_transpose*, cudnn_*
    "pool",  # max_pool2d*, avg_pool2d*, adaptive_*, torchvision::roi_pool
    "batch_norm",
    "softmax",  # _softmax, _log_softmax and their backwards
    "nll_loss",
    "cross_entropy",
    "sigmoid",
    "mse_loss",
    "im2col",
    "col2im",
    "flatten",
)


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
