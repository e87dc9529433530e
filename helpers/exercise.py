"""Write the student version of the Q1 notebook: ``python -m helpers.exercise [--out PATH]``.

From `notebooks/q1_ops.ipynb` (default) it writes a notebook that gives no answer away:

1. each code cell tagged ``reference`` keeps its import lines, the ``def`` line(s) and the docstring
   of its public function; the body becomes ``raise NotImplementedError("<hint>")``, the hint taken
   from a ``# Hint: ...`` comment in the cell, else a generic one naming the function;
2. cells tagged ``op`` (the fast drop-ins) or ``solution`` (what uses or explains them) are removed;
3. every ``<details>...</details>`` block of a markdown cell (the check-yourself answers) is removed;
4. every output and execution count is cleared, and widget state and execution timings dropped;
5. every other cell is kept as it is (the checks, wrapped in ``with attempt(name):``, print "not
   implemented yet" for a function still raising NotImplementedError), except that the drop-in's
   column of each assignment case, the argument ``drop_in=ops.<name>``, is removed.

A header cell says what the notebook is and how to grade it (`helpers.grade`).
"""

import argparse
import ast
import copy
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "notebooks" / "q1_ops.ipynb"
DEFAULT_OUT = REPO / "exercises" / "q1_ops.ipynb"
REFERENCE_TAG = "reference"
REMOVED_TAGS = ("op", "solution")
HINT = re.compile(r"^[ \t]*#[ \t]*Hint:[ \t]*(?P<hint>.*?)[ \t]*$", re.MULTILINE)
DROP_IN_ARGUMENT = re.compile(r",\s*drop_in=ops\.\w+")
DETAILS = re.compile(r"<details\b.*?</details>", re.DOTALL | re.IGNORECASE)

HEADER = """\
# Q1, student version: write the ten functions

This notebook is the exercise version of `notebooks/q1_ops.ipynb`, written by
`python -m helpers.exercise`. Each cell tagged `reference` holds a function whose body is
`raise NotImplementedError(...)`: replace that line with your implementation, from tensor primitives
(views such as `Tensor.unfold` or `as_strided`, indexing, `matmul`/`einsum`, elementwise maths,
reductions, `F.pad`), never torch's own implementation of the op or of another Q1 op, nor
`F.unfold`/`F.fold`. Keep the signature, and keep each function in its own cell with its imports: the
grader runs those cells alone.

Run the notebook top to bottom as you go: each check prints a verdict against torch, or
"not implemented yet" for a function you have not written. Then grade your work from the
repository's root:

    python -m helpers.grade exercises/q1_ops.ipynb
"""


class ExerciseError(Exception):
    """The source notebook cannot be turned into a student version (one line says why)."""


def _public_function(tree, where):
    """The one top-level function of a reference cell whose name does not start with '_'."""
    functions = [
        node
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_")
    ]
    if len(functions) != 1:
        names = ", ".join(node.name for node in functions) or "none"
        raise ExerciseError(f"{where}: a reference cell must define exactly one public function (found: {names})")
    return functions[0]


def _docstring_node(function):
    first = function.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first
    return None


def _is_code(line):
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _imports_before(tree, lines, start):
    """The cell's top-level import lines above line `start`, with one blank line where the cell
    separates two groups of imports; every other statement (helpers, constants) left out."""
    import_lines = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)) and node.lineno < start:
            import_lines.update(range(node.lineno, node.end_lineno + 1))
    kept = []
    for number in range(min(import_lines, default=1), max(import_lines, default=0) + 1):
        line = lines[number - 1]
        if number in import_lines:
            kept.append(line)
        elif not line.strip() and kept and kept[-1]:
            kept.append("")
    return kept


def stub_reference(source, where="reference cell"):
    """The student's version of a reference cell: its imports before the function, the function's
    ``def`` line(s) and docstring, then ``raise NotImplementedError(<hint>)``."""
    try:
        tree = ast.parse(source)
    except SyntaxError as error:
        raise ExerciseError(f"{where}: SyntaxError, line {error.lineno}: {error.msg}") from None
    lines = source.splitlines()
    function = _public_function(tree, where)
    start = min([function.lineno] + [decorator.lineno for decorator in function.decorator_list])
    docstring = _docstring_node(function)
    first_statement = function.body[0]
    if first_statement.lineno == function.lineno:
        raise ExerciseError(f"{where}: the body of {function.name} must start on a line of its own")
    header = lines[start - 1 : first_statement.lineno - 1]
    while header and not _is_code(header[-1]):  # comments or blank lines between the def and its body
        header.pop()
    kept = _imports_before(tree, lines, start)
    if kept:
        kept += ["", ""]
    kept += header
    if docstring is not None:
        kept += lines[docstring.lineno - 1 : docstring.end_lineno]
    match = HINT.search(source)
    hint = match["hint"] if match and match["hint"] else None
    hint = hint or f"write {function.name} from tensor primitives (see its docstring)"
    indent = " " * first_statement.col_offset
    kept.append(f"{indent}raise NotImplementedError({json.dumps(hint, ensure_ascii=False)})")
    return "\n".join(kept) + "\n"


def strip_answers(markdown):
    """`markdown` without its ``<details>...</details>`` blocks, and the blank lines they leave."""
    text = DETAILS.sub("", markdown)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n")


def _source_text(cell):
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _as_lines(text):
    return text.splitlines(keepends=True)


def student_notebook(notebook):
    """The student version of `notebook` (a parsed .ipynb dict), as a new dict."""
    student = copy.deepcopy(notebook)
    student["metadata"].pop("widgets", None)
    cells = []
    references = 0
    for index, cell in enumerate(student["cells"]):
        tags = cell.get("metadata", {}).get("tags", [])
        if any(tag in REMOVED_TAGS for tag in tags):
            continue
        cell.get("metadata", {}).pop("execution", None)
        cell.get("metadata", {}).pop("widgets", None)
        if cell["cell_type"] == "markdown":
            text = strip_answers(_source_text(cell))
            if not text.strip():
                continue
            cell["source"] = _as_lines(text)
        elif cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
            if REFERENCE_TAG in tags:
                cell["source"] = _as_lines(stub_reference(_source_text(cell), f"cell {index}").rstrip("\n"))
                references += 1
            else:
                cell["source"] = _as_lines(DROP_IN_ARGUMENT.sub("", _source_text(cell)))
        cells.append(cell)
    if not references:
        raise ExerciseError(f"the notebook has no code cells tagged '{REFERENCE_TAG}'")
    header = dict(cell_type="markdown", id="student-version", metadata={}, source=_as_lines(HEADER.rstrip("\n")))
    student["cells"] = [header] + cells
    return student


def write_student_notebook(source=SOURCE, out=DEFAULT_OUT):
    """Read the notebook `source`, write its student version to `out`; return `out` as a Path."""
    source, out = Path(source), Path(out)
    try:
        notebook = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ExerciseError(f"{source} is not a readable notebook: {error}") from None
    if not (isinstance(notebook, dict) and isinstance(notebook.get("cells"), list) and "metadata" in notebook):
        raise ExerciseError(f"{source} is not a notebook: it has no list of cells and no metadata")
    student = student_notebook(notebook)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(student, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m helpers.exercise",
        description="Write the student version of the Q1 notebook: reference functions stubbed, "
        "drop-in ops, solutions, check-yourself answers and outputs removed.",
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, type=Path, help=f"where to write it (default {DEFAULT_OUT.relative_to(REPO)})"
    )
    parser.add_argument(
        "--source", default=SOURCE, type=Path, help=f"the teacher's notebook (default {SOURCE.relative_to(REPO)})"
    )
    args = parser.parse_args(argv)
    try:
        out = write_student_notebook(args.source, args.out)
    except ExerciseError as error:
        print(f"exercise: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
