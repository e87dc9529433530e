"""The grader (`helpers.grade`): full marks for the teacher's Q1 notebook, and mutants of it that each
lose exactly the points of their op and kind, with a reason a student understands.

Grading runs child processes that import torch, so each notebook is graded once (module-scoped
fixtures) and the tests read its results. The mutants change one op's reference cell each; they are
graded together in one notebook, which also shows that what one op does (loop forever, fail to
compile) costs no other op anything.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import grade
from helpers.exercise import SOURCE

TIMEOUT = 5  # seconds per op for the mutants: the infinite loop costs this much


def _cell_by_id(notebook, cell_id):
    return next(cell for cell in notebook["cells"] if cell.get("id") == cell_id)


def _append_to_cell(notebook, cell_id, code):
    """Add `code` at the end of a reference cell: a later `def` of the same name replaces the function."""
    cell = _cell_by_id(notebook, cell_id)
    cell["source"] = "".join(cell["source"]).rstrip("\n") + "\n\n\n" + code.strip("\n") + "\n"


# Each mutant: (op, how its reference cell changes, the tests it must lose, a phrase of the reason).
CALLS_TORCH = """
def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
"""
OFF_BY_A_CONSTANT = """
_exact_mse_loss = mse_loss


def mse_loss(*args, **kwargs):
    return _exact_mse_loss(*args, **kwargs) + 1e-3
"""
HALVED_GRADIENT = """
class _HalfGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, output):
        return output.clone()

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output / 2


_exact_sigmoid = sigmoid


def sigmoid(input):
    return _HalfGradient.apply(_exact_sigmoid(input))
"""
DETACHED = """
_exact_max_pool2d = max_pool2d


def max_pool2d(input, *args, **kwargs):
    return _exact_max_pool2d(input.detach(), *args, **kwargs)
"""
CALLS_TORCH_FLATTEN = """
def flatten(input, start_dim=0, end_dim=-1):
    return input.flatten(start_dim, end_dim)
"""
LOOPS_FOREVER = """
def avg_pool2d(*args, **kwargs):
    while True:
        pass
"""
BREAKS_TORCH_FOR_EVERYONE = """
torch.exp = torch.zeros_like  # in its own process only: sigmoid, graded later, must not notice
"""
ALLOCATES_8_GIB = """
def cross_entropy(*args, **kwargs):
    return torch.empty(2**33, dtype=torch.uint8)
"""
ALL_TESTS = set(grade.TESTS)


def _def_line(op):
    """The line of the teacher's reference cell of `op` that opens its function (where the syntax error goes)."""
    source = "".join(_cell_by_id(json.loads(SOURCE.read_text(encoding="utf-8")), f"ref-{op}")["source"])
    return next(number for number, line in enumerate(source.splitlines(), 1) if line.startswith(f"def {op}("))


MUTANTS = {
    "conv2d": (CALLS_TORCH, {"from scratch"}, r"ran torch's own kernels? .*aten::convolution"),
    "mse_loss": (OFF_BY_A_CONSTANT, {"assignment case", "random cases"}, r"values differ: max \|diff\| = 0\.001"),
    "sigmoid": (HALVED_GRADIENT, {"gradients"}, r"gradient of input: values differ"),
    "max_pool2d": (DETACHED, {"gradients"}, r"no gradient flows back: the output is detached"),
    # Tensor.flatten reaches the dispatcher as a plain view: the grader catches it by the function's name
    "flatten": (CALLS_TORCH_FLATTEN, {"from scratch"}, r"ran torch's own kernel torch\.flatten"),
    "avg_pool2d": (LOOPS_FOREVER, ALL_TESTS, rf"timed out after {TIMEOUT} s"),
    "conv_transpose2d": (BREAKS_TORCH_FOR_EVERYONE, set(), None),
    "cross_entropy": (ALLOCATES_8_GIB, ALL_TESTS, r"ran out of memory: the grader lets an op allocate 4 GiB"),
    "roi_pool": (None, ALL_TESTS, rf"SyntaxError in its cell \(cell \d+\), line {_def_line('roi_pool')}:"),
}


def _mutated_notebook():
    notebook = json.loads(SOURCE.read_text(encoding="utf-8"))
    for op, (code, _, _) in MUTANTS.items():
        if code is None:  # the syntax error: an unclosed parenthesis in the def line
            cell = _cell_by_id(notebook, f"ref-{op}")
            cell["source"] = "".join(cell["source"]).replace(f"def {op}(", f"def {op}((", 1)
        else:
            _append_to_cell(notebook, f"ref-{op}", code)
    return notebook


def _run_grader(notebook_path, json_path, *options):
    return subprocess.run(
        [sys.executable, "-m", "helpers.grade", str(notebook_path), "--json", str(json_path), *options],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """The teacher's Q1 notebook graded from the command line: (completed process, results.json)."""
    json_path = tmp_path_factory.mktemp("teacher") / "results.json"
    completed = _run_grader(SOURCE, json_path)
    return completed, json.loads(json_path.read_text())


@pytest.fixture(scope="module")
def mutants(tmp_path_factory):
    """The notebook of mutants graded from the command line, with a short time-out per op."""
    folder = tmp_path_factory.mktemp("mutants")
    notebook_path = folder / "mutants.ipynb"
    notebook_path.write_text(json.dumps(_mutated_notebook()), encoding="utf-8")
    completed = _run_grader(notebook_path, folder / "results.json", "--timeout", str(TIMEOUT))
    return completed, json.loads((folder / "results.json").read_text())


def _scores(results):
    """{op: {test: score}} from a results.json."""
    scores = {}
    for test in results["tests"]:
        op, name = test["name"].split(": ", 1)
        scores.setdefault(op, {})[name] = test["score"]
    return scores


def test_the_teachers_notebook_gets_full_marks(teacher):
    completed, results = teacher
    assert completed.returncode == 0, completed.stderr
    assert results["score"] == 40.0
    assert all(test["score"] == test["max_score"] for test in results["tests"]), results["tests"]
    assert re.search(r"^total\s+40\s+40$", completed.stdout, re.MULTILINE), completed.stdout
    assert "Traceback" not in completed.stdout + completed.stderr


def test_the_json_follows_gradescopes_format(teacher):
    _, results = teacher
    assert isinstance(results["score"], float)
    assert isinstance(results["execution_time"], int)
    assert isinstance(results["output"], str)
    assert len(results["tests"]) == len(grade.OP_NAMES) * len(grade.TESTS)
    for test in results["tests"]:
        assert set(test) == {"name", "score", "max_score", "status", "output"}
        assert isinstance(test["name"], str) and test["name"].split(": ")[0] in grade.OP_NAMES
        assert isinstance(test["score"], float) and isinstance(test["max_score"], float)
        assert test["status"] in ("passed", "failed")
        assert isinstance(test["output"], str) and test["output"]
    assert results["score"] == sum(test["score"] for test in results["tests"])


@pytest.mark.parametrize("op", sorted(MUTANTS))
def test_a_mutant_loses_exactly_the_points_of_its_op_and_kind(mutants, op):
    completed, results = mutants
    assert completed.returncode == 0, completed.stderr
    _, lost, reason = MUTANTS[op]
    scores = _scores(results)[op]
    assert {test for test, score in scores.items() if score == 0} == lost, scores
    if not lost:
        return  # a mutant whose own function is right: full marks, and no line of reasons
    outputs = [test["output"] for test in results["tests"] if test["name"].split(": ")[0] == op and not test["score"]]
    assert all(re.search(reason, output) for output in outputs), outputs
    # the table under the op's row says why, in the same words
    assert re.search(reason, completed.stdout), completed.stdout


def test_the_ops_left_alone_keep_full_marks_beside_the_mutants(mutants):
    completed, results = mutants
    untouched = [op for op in grade.OP_NAMES if op not in MUTANTS]
    assert untouched, "every op is mutated: nothing shows that the others keep their points"
    for op in untouched:
        assert set(_scores(results)[op].values()) == {1.0}, (op, completed.stdout)
    assert "Traceback" not in completed.stdout + completed.stderr


def test_a_file_that_is_not_a_notebook_is_a_one_line_error(tmp_path):
    not_json = tmp_path / "essay.ipynb"
    not_json.write_text("my answers are in the appendix")
    no_cells = tmp_path / "empty.ipynb"
    no_cells.write_text(json.dumps({"cells": [{"cell_type": "code", "metadata": {}, "source": "x = 1"}]}))
    for path, message in [
        (not_json, "is not a readable notebook"),
        (tmp_path / "missing.ipynb", "cannot read"),
        (no_cells, "has no code cells tagged 'reference'"),
    ]:
        completed = subprocess.run(
            [sys.executable, "-m", "helpers.grade", str(path)], capture_output=True, text=True, timeout=120
        )
        assert completed.returncode == 2
        assert completed.stdout == ""
        assert completed.stderr.count("\n") == 1 and message in completed.stderr, completed.stderr


def test_the_help_says_it_is_not_a_sandbox():
    completed = subprocess.run(
        [sys.executable, "-m", "helpers.grade", "--help"], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0
    assert "NOT a sandbox" in completed.stdout and "container" in completed.stdout


def test_a_missing_function_scores_zero_with_its_reason():
    cells = [(3, "import torch\n\n\ndef sigmoid(input):\n    return 1 / (1 + torch.exp(-input))\n")]
    jobs, known = grade.plan(cells)
    assert list(jobs) == ["sigmoid"]
    assert set(known) == set(grade.OP_NAMES) - {"sigmoid"}
    assert known["conv2d"][0].output == "no reference cell defines conv2d"


def test_the_grader_grades_the_ten_reference_functions():
    from helpers import ops

    assert list(grade.OP_NAMES) == list(ops.REFERENCE_NAMES)


def test_the_readme_says_what_is_isolated():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## For instructors", 1)[1].split("\n## ", 1)[0]
    assert "python -m helpers.exercise" in section and "python -m helpers.grade" in section
    assert "not a sandbox" in section


def test_a_child_that_cannot_start_is_a_one_line_grader_error(tmp_path):
    """No submitted code has run when a child dies before its first op: that is the grader's failure
    (exit 1), not ten zero scores."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text('raise ImportError("this torch is broken")\n')
    completed = subprocess.run(
        [sys.executable, "-m", "helpers.grade", str(SOURCE)],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
    )
    assert completed.returncode == 1
    assert completed.stdout == ""
    assert completed.stderr.count("\n") == 1 and "ImportError: this torch is broken" in completed.stderr
