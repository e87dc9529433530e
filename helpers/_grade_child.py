"""The child process of `helpers.grade`: runs a notebook's reference cells and scores them against torch.

It is started by the grader, never by hand. It reads one JSON job on stdin (the ops to grade, each
with the source of the cell that defines it, and the settings) and imports torch once. Then, for each
op, it forks a process of its own that draws the op's cases (trusted code, not timed), limits its
CPU time and address space, writes ``{"event": "start", "op": ...}``, runs the student's code (the
cell, in a fresh namespace, and the function on every case) and writes ``{"event": "result", "op":
..., "tests": [...]}``. Whatever that process did (changed torch's global state, exited, crashed),
this one then writes ``{"event": "ended", "op": ..., "exit_code": ...}`` and forks the next op from
its own untouched state. The grader times each op from its "start" line, and kills this process
group when one runs too long, then starts another child for the ops left.

The protocol goes to a private copy of the original stdout; file descriptor 1 (and sys.stdout) is
pointed at stderr, so what a student's code prints cannot mix with it.
"""

import json
import os
import resource
import sys
import traceback
import warnings

import torch
from torch.overrides import TorchFunctionMode

from helpers.cases import OPS
from helpers.cases.assignment import assignment_cases
from helpers.checks import FORBIDDEN_WORDS, RecordOperators, _clone_kwargs, compare_gradients, compare_values

# The four tests of each op, in order, and their points (`helpers.grade` documents them).
TESTS = ("assignment case", "random cases", "gradients", "from scratch")
# How many of the random cases (in float64) "from scratch" runs forward and backward, besides the
# assignment's own.
SCRATCH_RANDOM_CASES = 3
# torch.flatten and Tensor.flatten become views before the dispatcher sees them, so the recorder of
# aten operators misses them: the torch functions called directly are recorded as well, by name.
FORBIDDEN_FUNCTIONS = ("flatten",)
# CPU seconds allowed per op besides its time-out (drawing its cases) before RLIMIT_CPU stops this process.
CPU_SECONDS_PER_OP = 60


def _protocol_stream():
    """A private copy of stdout for the protocol; fd 1 and sys.stdout then go to stderr."""
    stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return stream


def _limit_cpu_time(extra_seconds):
    """A backstop should the grader die without killing this process: it is killed once it has used
    `extra_seconds` more of CPU time (the grader's wall-clock limit comes well before)."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    limit = int(used.ru_utime + used.ru_stime + extra_seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (limit, limit))


def _limit_address_space(extra_bytes):
    """Let this process's address space grow by at most `extra_bytes` beyond what it uses now
    (torch's import takes a few GiB of it). A larger allocation then fails with an error."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            size_kib = next(int(line.split()[1]) for line in status if line.startswith("VmSize:"))
    except (OSError, StopIteration):
        return  # not Linux: no /proc, and RLIMIT_AS is not enforced anyway
    limit = size_kib * 1024 + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _send(protocol, **message):
    protocol.write(json.dumps(message) + "\n")


def main():
    protocol = _protocol_stream()
    job = json.loads(sys.stdin.read())
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for op in job["ops"]:
        pid = os.fork()
        if pid == 0:
            _grade_in_this_process(op, job, protocol)
        _, status = os.waitpid(pid, 0)
        _send(protocol, event="ended", op=op["name"], exit_code=os.waitstatus_to_exitcode(status))


def _grade_in_this_process(op, job, protocol):
    """In the forked process: grade one op, send its start and result, and exit (never returns)."""
    try:
        cases = _draw_cases(op["name"], job["cases"], job["seed"])
        _limit_cpu_time(job["timeout"] + CPU_SECONDS_PER_OP)
        _limit_address_space(job["memory_bytes"])
        _send(protocol, event="start", op=op["name"])
        tests = _grade_op(op, cases, job["notebook_name"], job["memory_bytes"])
        _send(protocol, event="result", op=op["name"], tests=tests)
    except BaseException:  # noqa: BLE001 - the grader's own failure (the student's are caught inside)
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def _draw_cases(name, count, seed):
    """The cases of op `name`: the assignment's (float32 as given), `count` random ones in the
    reference's scope in the dtype they are compared in (float32), and float64 copies of both for
    the gradients and the from-scratch record."""
    spec = OPS[name]
    seeds = [seed * 1000 + index for index in range(count)]
    random32 = [spec.draw_in_scope(case_seed, torch.float32) for case_seed in seeds]
    random64 = [spec.draw_in_scope(case_seed, torch.float64) for case_seed in seeds]
    assignment64 = assignment_cases(name, torch.float64)
    return dict(assignment=assignment_cases(name), random=random32, float64=assignment64 + random64, spec=spec)


def _grade_op(op, cases, notebook_name, memory_bytes):
    """The four tests of one op, as dicts {test, passed, output}."""
    name = op["name"]
    function, problem = _load_function(name, op["cell_index"], op["source"], notebook_name, memory_bytes)
    if problem is None and _not_implemented(function, cases["assignment"][0]):
        problem = "not implemented yet"
    if problem is not None:
        return [dict(test=test, passed=False, output=problem) for test in TESTS]
    checks = (_assignment_test, _random_test, _gradient_test, _scratch_test)
    results = []
    for test, check in zip(TESTS, checks):
        try:
            with torch.enable_grad():  # whatever the cell did to autograd's global switch
                problem = check(function, cases)
        except BaseException as error:  # noqa: BLE001 - a student's exit() or error costs this test only
            problem = _describe_error(error, memory_bytes)
        output = "matched torch" if problem is None else _with_memory_note(problem, memory_bytes)
        results.append(dict(test=test, passed=problem is None, output=output))
    if results[3]["passed"]:
        results[3]["output"] = "no built-in kernel of a Q1 op ran"
    return results


def _load_function(name, cell_index, source, notebook_name, memory_bytes):
    """Run the cell that defines `name` in a fresh namespace; return (function, None) or (None, why)."""
    namespace = {"__name__": f"reference_{name}"}
    try:
        code = compile(source, f"{notebook_name}[cell {cell_index}]", "exec")
        exec(code, namespace)  # noqa: S102 - untrusted, but this process is the grader's child
    except BaseException as error:  # noqa: BLE001
        return None, f"its cell (cell {cell_index}) raised {_describe_error(error, memory_bytes)}"
    function = namespace.get(name)
    if not callable(function):
        return None, f"its cell (cell {cell_index}) does not define a function named {name}"
    return function, None


def _not_implemented(function, case):
    """Whether `function` raises NotImplementedError on `case` (the student version's stub)."""
    try:
        function(**_clone_kwargs(case.kwargs))
    except NotImplementedError:
        return True
    except BaseException:  # noqa: BLE001 - any other error is for the tests to report
        return False
    return False


def _describe_error(error, memory_bytes):
    """`Type: message` (first line) of an exception raised by a student's code."""
    message = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {message[0]}" if message else type(error).__name__
    return _with_memory_note(text, memory_bytes, isinstance(error, MemoryError))


def _with_memory_note(text, memory_bytes, out_of_memory=False):
    """`text`, with the grader's memory limit named when it says an allocation failed."""
    if (out_of_memory or "can't allocate memory" in text) and "(ran out of memory" not in text:
        text += f" (ran out of memory: the grader lets an op allocate {memory_bytes / 2**30:g} GiB)"
    return text


def _assignment_test(function, cases):
    """Values on the assignment's own case(s); None if every one matches torch."""
    spec = cases["spec"]
    for case in cases["assignment"]:
        problem = compare_values(function, spec.reference, case, spec.rtol, spec.atol)
        if problem is not None:
            return f"{case.label}: {problem}"
    return None


def _random_test(function, cases):
    """Values on the random cases in the reference's scope; None if all match torch."""
    spec = cases["spec"]
    failures = []
    for case in cases["random"]:
        problem = compare_values(function, spec.reference, case, spec.rtol, spec.atol)
        if problem is not None:
            failures.append(f"{case.label}: {problem}")
    if not failures:
        return None
    total = len(cases["random"])
    return f"{total - len(failures)}/{total} matched torch; first: {failures[0]}"


def _gradient_test(function, cases):
    """float64 gradients through the function against torch's, on the assignment and random cases."""
    spec = cases["spec"]
    checked = [case for case in cases["float64"] if case.grad_wrt]
    failures = []
    for case in checked:
        problem = _gradient_problem(function, spec.reference, case)
        if problem is not None:
            failures.append(f"{case.label}: {problem}")
    if not failures:
        return None
    return f"{len(checked) - len(failures)}/{len(checked)} matched torch (float64); first: {failures[0]}"


def _gradient_problem(function, reference, case):
    """Why the gradients of `function` differ from `reference`'s on `case`, or None."""
    problem = compare_gradients(function, reference, case)  # a student's error is a reason, not a crash
    if problem is not None and _output_is_detached(function, case):
        return "no gradient flows back: the output is detached from the inputs (no autograd graph)"
    return problem


def _output_is_detached(function, case):
    """Whether no output of `function` on `case` (inputs requiring grad) is part of an autograd graph."""
    kwargs = _clone_kwargs(case.kwargs, requires_grad=case.grad_wrt)
    try:
        outputs = function(**kwargs)
    except Exception:  # noqa: BLE001 - the error itself is the reason given
        return False
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return not any(isinstance(output, torch.Tensor) and output.requires_grad for output in outputs)


class RecordFunctions(TorchFunctionMode):
    """Within ``with RecordFunctions() as recorder:``, lists in ``recorder.seen`` the __name__ of every
    torch function or Tensor method called directly (not those torch calls inside them)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(getattr(func, "__name__", repr(func)))
        return func(*args, **(kwargs or {}))


def _scratch_test(function, cases):
    """Forward and backward on the assignment's cases and a few random ones, recording every aten
    operator and every torch function called: none may be a Q1 op's own kernel or F.unfold/F.fold."""
    operators, functions = RecordOperators(), RecordFunctions()
    ran, first_error = 0, None
    chosen = cases["float64"][: len(cases["assignment"]) + SCRATCH_RANDOM_CASES]
    for case in chosen:
        kwargs = _clone_kwargs(case.kwargs, requires_grad=case.grad_wrt)
        try:
            with operators, functions:
                outputs = function(**kwargs)
                outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
                ran += 1
                differentiable = [o for o in outputs if isinstance(o, torch.Tensor) and o.requires_grad]
                if differentiable:
                    torch.autograd.backward(differentiable, [torch.ones_like(o) for o in differentiable])
        except Exception as error:  # noqa: BLE001 - the values and gradient tests report it
            first_error = first_error or error
    kernels = sorted({name for name in operators.seen if any(word in name for word in FORBIDDEN_WORDS)})
    kernels += sorted({f"torch.{name}" for name in functions.seen if name in FORBIDDEN_FUNCTIONS})
    if kernels:
        return f"ran torch's own kernel{'s' if len(kernels) > 1 else ''} {', '.join(kernels[:4])}"
    if not ran:
        return f"could not be checked: it raised on every case (first: {type(first_error).__name__}: {first_error})"
    return None


if __name__ == "__main__":
    main()
