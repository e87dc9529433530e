"""The student version of Q1 (`helpers.exercise`): nothing gives an answer away, the reference functions
keep their signature and docstring and raise NotImplementedError, and the notebook runs top to bottom
and grades to zero."""

import ast
import json
import subprocess
import sys

import pytest

from helpers import grade
from helpers.exercise import REMOVED_TAGS, stub_reference, strip_answers, student_notebook

CELL = '''import math
import warnings

import torch  # the tensors
import torch.nn.functional as F

SCALE = 2.0


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def avg_pool2d(input, kernel_size,
               stride=None):
    """Average pooling.

    out = sum / count.
    """
    # Hint: unfold the padded input twice, then average the last two dimensions.
    kh, kw = _pair(kernel_size)
    return F.pad(input, (1, 1)).unfold(-2, kh, 1).unfold(-2, kw, 1).mean((-2, -1)) * SCALE / 2
'''

STUB = '''import math
import warnings

import torch  # the tensors
import torch.nn.functional as F


def avg_pool2d(input, kernel_size,
               stride=None):
    """Average pooling.

    out = sum / count.
    """
    raise NotImplementedError("unfold the padded input twice, then average the last two dimensions.")
'''


def test_a_reference_cell_keeps_imports_signature_and_docstring_and_its_hint():
    assert stub_reference(CELL) == STUB


def test_without_a_hint_comment_the_hint_names_the_function():
    stub = stub_reference("import torch\n\n\ndef sigmoid(input):\n    return 1 / (1 + torch.exp(-input))\n")
    assert stub == (
        "import torch\n\n\ndef sigmoid(input):\n"
        '    raise NotImplementedError("write sigmoid from tensor primitives (see its docstring)")\n'
    )


def test_the_check_yourself_answers_go_and_the_rest_stays():
    markdown = (
        "Why?\n\n<details><summary>Answer</summary>\n\nBecause.\n</details>\n\nNext question.\n\n<DETAILS>x</DETAILS>"
    )
    assert strip_answers(markdown) == "Why?\n\nNext question."


def _notebook(cells):
    metadata = {"kernelspec": {"name": "python3"}, "widgets": {"state": {}}}
    return {"cells": cells, "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}


def _code(source, tags=(), cell_id="c"):
    return {
        "cell_type": "code",
        "id": cell_id,
        "metadata": {"tags": list(tags), "execution": {"iopub.status.busy": "2024"}},
        "source": source,
        "outputs": [{"output_type": "stream", "name": "stdout", "text": "42\n"}],
        "execution_count": 7,
    }


def test_a_student_notebook_drops_answers_outputs_and_widget_state():
    teacher = _notebook(
        [
            {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": ["# Q1\n", "\n", "<details>all</details>"]},
            {"cell_type": "markdown", "id": "m2", "metadata": {}, "source": "<details>only an answer</details>"},
            _code(CELL, ["reference"], "ref-avg_pool2d"),
            _code("def avg_pool2d(input, k):\n    return input\n", ["op"], "op"),
            _code("print(avg_pool2d)", ["solution"], "solution"),
            _code("with attempt('avg_pool2d'):\n    avg_pool2d(x, 2)", ["nbval-ignore-output"], "check"),
        ]
    )
    student = student_notebook(teacher)
    ids = [cell["id"] for cell in student["cells"]]
    assert ids == ["student-version", "m1", "ref-avg_pool2d", "check"]
    assert "".join(student["cells"][1]["source"]) == "# Q1"
    assert "".join(student["cells"][2]["source"]) == STUB.rstrip("\n")
    assert "".join(student["cells"][3]["source"]) == teacher["cells"][5]["source"]
    for cell in student["cells"][2:]:
        assert cell["outputs"] == [] and cell["execution_count"] is None and "execution" not in cell["metadata"]
    assert student["cells"][3]["metadata"]["tags"] == ["nbval-ignore-output"]
    assert student["metadata"] == {"kernelspec": {"name": "python3"}}
    assert teacher["cells"][2]["outputs"], "the teacher's notebook is left as it was"


@pytest.fixture(scope="module")
def student_path(tmp_path_factory):
    """The student version of the real Q1 notebook, written from the command line."""
    path = tmp_path_factory.mktemp("exercise") / "q1_ops.ipynb"
    completed = subprocess.run(
        [sys.executable, "-m", "helpers.exercise", "--out", str(path)], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"wrote {path}"
    return path


def _tags(cell):
    return cell.get("metadata", {}).get("tags", [])


def test_the_student_version_holds_no_answer(student_path):
    student = json.loads(student_path.read_text(encoding="utf-8"))
    assert not [cell["id"] for cell in student["cells"] if set(_tags(cell)) & set(REMOVED_TAGS)]
    for cell in student["cells"]:
        text = "".join(cell["source"])
        assert "<details" not in text.lower()
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None
    references = [cell for cell in student["cells"] if "reference" in _tags(cell)]
    assert len(references) == len(grade.OP_NAMES)
    for cell in references:
        tree = ast.parse("".join(cell["source"]))
        functions = [node for node in tree.body if isinstance(node, ast.FunctionDef)]
        assert len(functions) == 1, "private helpers of the reference are gone"
        body = functions[0].body
        if len(body) == 2:  # the docstring, then the raise
            assert isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)
        raise_statement = body[-1]
        assert isinstance(raise_statement, ast.Raise) and raise_statement.exc.func.id == "NotImplementedError"
        assert all(isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef)) for node in tree.body)


def test_the_student_version_grades_to_zero_each_op_not_implemented(student_path, tmp_path):
    json_path = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "helpers.grade", str(student_path), "--json", str(json_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    results = json.loads(json_path.read_text())
    assert results["score"] == 0.0
    assert {test["output"] for test in results["tests"]} == {"not implemented yet"}
    for name in grade.OP_NAMES:
        assert f"    {name}: not implemented yet\n" in completed.stdout
    assert "Traceback" not in completed.stdout + completed.stderr


def test_the_student_version_runs_top_to_bottom(student_path):
    """In a Jupyter kernel of this environment: every check prints "not implemented yet" instead of
    stopping the notebook."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(student_path, as_version=4)
    resources = {"metadata": {"path": str(student_path.parent)}}
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources=resources).execute()
    printed = "".join(
        output.get("text", "") for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    )
    for name in grade.OP_NAMES:
        assert f"{name}: not implemented yet" in printed
