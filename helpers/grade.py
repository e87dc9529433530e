"""Grade the ten Q1 functions of a notebook against torch: ``python -m helpers.grade NOTEBOOK``.

Reads only the code cells of NOTEBOOK tagged ``reference`` (never its other cells), finds which of
the ten functions each defines, and runs them in child processes (`helpers._grade_child`), with a
wall-clock limit per op and a limit on the memory they may allocate, so that an infinite loop or a
runaway allocation costs that op and nothing else. Each op gets four tests, of one point each (see
`DESCRIPTION`). Prints a table, and with --json writes Gradescope's results.json.

This is not a sandbox: the graded code runs as the user who runs the grader, with their files and
network. Run it in a container (as Gradescope does) to isolate untrusted submissions.
"""

import argparse
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from helpers.op_names import Q1_FUNCTIONS

REPO = Path(__file__).resolve().parent.parent
REFERENCE_TAG = "reference"
# The ten functions graded, in the notebook's order (those of helpers.ops, from a module that imports no torch).
OP_NAMES = Q1_FUNCTIONS
TESTS = ("assignment case", "random cases", "gradients", "from scratch")
POINTS_PER_TEST = 1
# How long a child may take to import torch and draw an op's cases before the op starts.
STARTUP_SECONDS = 300
TOP_LEVEL_DEF = re.compile(r"^def\s+(\w+)\s*\(", re.MULTILINE)
TIMED_OUT = object()  # what _wait_for returns when no message came in time

DESCRIPTION = f"""\
Grade the ten Q1 functions of NOTEBOOK against torch.

Reads only the code cells tagged 'reference' and runs each in a child process, one op at a time,
with a wall-clock limit per op (--timeout) and a limit on the memory it may allocate (--memory).
Each of the ten ops ({", ".join(OP_NAMES)}) has four tests of {POINTS_PER_TEST} point each:
  assignment case  its values on the assignment's own call(s) match torch's (both of conv2d's);
  random cases     its values match torch's on every one of --cases seeded random calls within the
                   reference's scope (float32);
  gradients        float64 gradients through it (autograd) match torch's, on all of those calls;
  from scratch     no built-in kernel of a Q1 op (convolution, pooling, batch_norm, softmax,
                   nll_loss, sigmoid, mse_loss, flatten, ...) nor F.unfold/F.fold runs in its forward
                   or backward.
A test scores only when every call in it passes. A function that raises NotImplementedError, that
times out, or whose cell fails, scores 0 on all four. Exits 0 once graded, whatever the score; 2 when
NOTEBOOK is not a readable notebook or has no reference cells.

This is NOT a sandbox: the graded code runs as you, with your files and network; the limits only
contain loops and allocations. Grade untrusted submissions inside a container."""


class NotebookError(Exception):
    """NOTEBOOK cannot be graded: unreadable, not a notebook, or without reference cells."""


class GraderError(Exception):
    """The grader itself failed: a child process stopped before running any submitted code."""


@dataclass
class TestResult:
    """One test of one op: passed or not, and what a student reads about it."""

    op: str
    test: str
    passed: bool
    output: str

    @property
    def score(self):
        return POINTS_PER_TEST if self.passed else 0


@dataclass
class OpJob:
    """An op to run in a child: its name and the cell that defines it."""

    name: str
    cell_index: int
    source: str


@dataclass
class Grading:
    """Every op's test results, in OP_NAMES order, and how long the grading took."""

    notebook: Path
    results: dict = field(default_factory=dict)  # op name -> [TestResult] * 4
    seconds: float = 0.0

    @property
    def score(self):
        return sum(test.score for tests in self.results.values() for test in tests)

    @property
    def max_score(self):
        return len(OP_NAMES) * len(TESTS) * POINTS_PER_TEST


def all_failed(op, why):
    """The four tests of `op`, all lost for the same reason."""
    return [TestResult(op, test, False, why) for test in TESTS]


def reference_cells(notebook):
    """[(cell_index, source)] of the code cells of `notebook` tagged 'reference'; NotebookError if it
    is not a readable notebook or has none."""
    try:
        cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
        found = [
            (index, "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"])
            for index, cell in enumerate(cells)
            if cell.get("cell_type") == "code" and REFERENCE_TAG in cell.get("metadata", {}).get("tags", [])
        ]
    except (OSError, UnicodeDecodeError) as error:
        raise NotebookError(f"cannot read {notebook}: {error.strerror if isinstance(error, OSError) else error}")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise NotebookError(f"{notebook} is not a readable notebook (.ipynb JSON with cells): {error}")
    if not found:
        raise NotebookError(f"{notebook} has no code cells tagged '{REFERENCE_TAG}': nothing to grade")
    return found


def defined_names(source):
    """The names in OP_NAMES that `source` defines with a `def` at the top level (a line starting
    ``def name(``), read as text so that a cell with a syntax error still says whose it is."""
    return [name for name in TOP_LEVEL_DEF.findall(source) if name in OP_NAMES]


def syntax_problem(index, source):
    """'SyntaxError in its cell ...' when `source` does not compile (compiling runs nothing), else None."""
    try:
        compile(source, f"cell {index}", "exec")
    except SyntaxError as error:
        return f"{type(error).__name__} in its cell (cell {index}), line {error.lineno}: {error.msg}"
    except ValueError as error:  # e.g. a null byte in the source
        return f"its cell (cell {index}) cannot be compiled: {error}"
    return None


def plan(cells):
    """Split the ops into jobs for the children and results known without running anything:
    returns ({op: OpJob}, {op: [TestResult]}). The last cell defining an op wins, as in a notebook."""
    defining = {}
    for index, source in cells:
        for name in defined_names(source):
            defining[name] = (index, source)
    jobs, known = {}, {}
    for name in OP_NAMES:
        if name not in defining:
            known[name] = all_failed(name, f"no reference cell defines {name}")
            continue
        index, source = defining[name]
        problem = syntax_problem(index, source)
        if problem:
            known[name] = all_failed(name, problem)
        else:
            jobs[name] = OpJob(name, index, source)
    return jobs, known


class Worker:
    """Grades a list of ops in child processes, one after the other, restarting the child after an
    op that times out or kills it."""

    def __init__(self, jobs, settings):
        self.jobs = list(jobs)
        self.settings = settings
        self.results = {}
        self.child = None
        self.stopped = False
        self.error = None  # a GraderError, raised again by grade() in the main thread

    def run(self):
        try:
            while self.jobs and not self.stopped:
                self._run_child()
        except GraderError as error:
            self.error = error

    def stop(self):
        """Kill the running child and start no other (on Ctrl-C)."""
        self.stopped = True
        if self.child is not None:
            _kill(self.child)

    def _run_child(self):
        """Start a child for every op left; collect results until all are in or one fails."""
        job = dict(self.settings, ops=[asdict(op) for op in self.jobs])
        with tempfile.TemporaryDirectory(prefix="grade-") as workdir, open(Path(workdir) / "stderr", "w+") as stderr:
            child = self.child = subprocess.Popen(
                [sys.executable, "-m", "helpers._grade_child"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                cwd=workdir,
                env=_child_environment(),
                start_new_session=True,  # its own process group, killed as one
                text=True,
            )
            lines = queue.Queue()
            threading.Thread(target=_read_lines, args=(child.stdout, lines), daemon=True).start()
            try:
                child.stdin.write(json.dumps(job))
                child.stdin.close()
            except BrokenPipeError:
                pass  # the child is gone already: its end of output says so below
            try:
                while self.jobs and not self.stopped:
                    if not self._next_op(child, lines, stderr):
                        break
            finally:
                _kill(child)

    def _next_op(self, child, lines, stderr):
        """Wait for the next op's start, result and end; False when the child had to be killed.
        Anything amiss before an op starts is the grader's failure (no submitted code ran yet)."""
        op = self.jobs[0]
        started = _wait_for(lines, STARTUP_SECONDS)
        if started is TIMED_OUT:
            raise GraderError(f"the grader's child process did not reach {op.name} within {STARTUP_SECONDS} s")
        if started is None:
            raise GraderError(f"the grader's child process failed before {op.name}" + _exit_reason(child, stderr))
        if started["event"] != "start":  # the forked process failed in the grader's own code
            code = _exit_code_text(started["exit_code"])
            raise GraderError(f"the grader failed to prepare {op.name} ({code}: {_last_line(stderr)})")
        deadline = time.monotonic() + self.settings["timeout"]
        result = None
        while True:
            message = _wait_for(lines, max(0.0, deadline - time.monotonic()))
            if message is TIMED_OUT:
                why = f"timed out after {self.settings['timeout']:g} s (an endless loop, or far too slow)"
                self._record(op.name, all_failed(op.name, why))
                return False
            if message is None:
                why = "the grader's child process died while running it" + _exit_reason(child, stderr)
                self._record(op.name, all_failed(op.name, why))
                return False
            if message["event"] == "result":
                result = message
            elif message["event"] == "ended":
                break
        if result is None:
            why = f"its process died while running it ({_exit_code_text(message['exit_code'])})"
            self._record(op.name, all_failed(op.name, why))
        else:
            tests = [TestResult(op.name, t["test"], t["passed"], t["output"]) for t in result["tests"]]
            self._record(op.name, tests)
        return True

    def _record(self, name, tests):
        self.results[name] = tests
        self.jobs.pop(0)


def _read_lines(stream, lines):
    """Put each JSON line of `stream` on the queue `lines`, then None at its end."""
    for line in stream:
        try:
            lines.put(json.loads(line))
        except ValueError:
            continue
    lines.put(None)


def _wait_for(lines, seconds):
    """The next message within `seconds`; None at the end of the child's output; else TIMED_OUT."""
    try:
        return lines.get(timeout=seconds)
    except queue.Empty:
        return TIMED_OUT


def _kill(child):
    """Stop `child` and anything it started (its process group)."""
    if child.poll() is None:
        try:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    child.wait()


def _exit_code_text(code):
    """'exit status 3', or 'killed by signal 9, perhaps out of memory' for a negative code."""
    if code >= 0:
        return f"exit status {code}"
    text = f"killed by signal {-code}"
    if -code == signal.SIGKILL:
        text += ", perhaps out of memory"
    if -code == signal.SIGXCPU:
        text += ", out of CPU time"
    return text


def _exit_reason(child, stderr):
    """' (exit status 1: <last line of its stderr>)' or ' (killed by signal 9...)' for the child."""
    try:
        code = child.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return ""
    last = _last_line(stderr)
    return f" ({_exit_code_text(code)}{': ' + last if last and code >= 0 else ''})"


def _last_line(stderr):
    """The last non-blank line written to the children's stderr file (at most 200 characters)."""
    stderr.seek(0)
    return next((line.strip()[:200] for line in reversed(stderr.read().splitlines()) if line.strip()), "")


def _child_environment():
    """The children's environment: one thread, no GPU, and this repository importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def grade(notebook, timeout=20.0, memory_gib=4.0, cases=20, seed=0, jobs=2):
    """Grade the reference cells of `notebook`; return a `Grading`. NotebookError if it cannot."""
    start = time.monotonic()
    notebook = Path(notebook)
    op_jobs, known = plan(reference_cells(notebook))
    settings = dict(
        timeout=timeout, memory_bytes=int(memory_gib * 2**30), cases=cases, seed=seed, notebook_name=notebook.name
    )
    workers = [Worker([], settings) for _ in range(max(1, min(jobs, len(op_jobs))))]
    for position, op in enumerate(op_jobs.values()):
        workers[position % len(workers)].jobs.append(op)
    threads = [threading.Thread(target=worker.run, daemon=True) for worker in workers]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:  # the children run in their own sessions: Ctrl-C does not reach them
        for worker in workers:
            worker.stop()
        raise
    errors = [worker.error for worker in workers if worker.error is not None]
    if errors:
        raise errors[0]
    found = dict(known)
    for worker in workers:
        found.update(worker.results)
    return Grading(notebook, {name: found[name] for name in OP_NAMES}, time.monotonic() - start)


def format_table(grading):
    """The table a student reads: op, points, max points, and under each op one line per lost test
    (one line for the op when all four are lost for the same reason)."""
    width = max(len(name) for name in OP_NAMES) + 2
    lines = [f"{'op':<{width}} points  max", "-" * (width + 13)]
    for name, tests in grading.results.items():
        score, top = sum(t.score for t in tests), len(tests) * POINTS_PER_TEST
        lines.append(f"{name:<{width}} {score:>6}  {top:>3}")
        lost = [t for t in tests if not t.passed]
        if len(lost) == len(tests) and len({t.output for t in lost}) == 1:
            lines.append(f"    {name}: {lost[0].output}")
        else:
            lines.extend(f"    {name} {t.test}: {t.output}" for t in lost)
    lines.append("-" * (width + 13))
    lines.append(f"{'total':<{width}} {grading.score:>6}  {grading.max_score:>3}")
    return "\n".join(lines)


def gradescope_results(grading):
    """Gradescope's autograder results.json: the score and one entry per test (name begins with the op)."""
    return dict(
        score=float(grading.score),
        execution_time=round(grading.seconds),
        output=f"{grading.score}/{grading.max_score} points on the ten Q1 functions (4 tests each).",
        tests=[
            dict(
                name=f"{test.op}: {test.test}",
                score=float(test.score),
                max_score=float(POINTS_PER_TEST),
                status="passed" if test.passed else "failed",
                output=test.output,
            )
            for tests in grading.results.values()
            for test in tests
        ],
    )


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m helpers.grade", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("notebook", metavar="NOTEBOOK", help="the .ipynb to grade (its cells tagged 'reference')")
    parser.add_argument("--json", metavar="PATH", help="also write Gradescope's results.json to PATH")
    parser.add_argument(
        "--timeout", type=_positive(float), default=20.0, metavar="SECONDS", help="wall-clock limit per op (default 20)"
    )
    parser.add_argument(
        "--memory", type=_positive(float), default=4.0, metavar="GIB",
        help="address space the graded code may allocate beyond torch's own (default 4; Linux)",
    )
    parser.add_argument(
        "--cases", type=_positive(int), default=20, metavar="N", help="random calls per op (default 20)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random calls (default 0)")
    parser.add_argument(
        "--jobs", type=_positive(int), default=2, metavar="N", help="child processes run at once (default 2)"
    )
    args = parser.parse_args(argv)
    try:
        grading = grade(args.notebook, args.timeout, args.memory, args.cases, args.seed, args.jobs)
    except NotebookError as error:
        print(f"grade: error: {error}", file=sys.stderr)
        return 2
    except GraderError as error:
        print(f"grade: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("grade: interrupted", file=sys.stderr)
        return 130
    print(format_table(grading))
    print(f"graded {grading.notebook} in {grading.seconds:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(gradescope_results(grading), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
