"""The Q1 notebook teaches each op in the same seven parts, in this order: a picture, the maths, the
short reference, the assignment's call side by side with torch, the drop-in (folded), the checks, and
two check-yourself questions with folded answers. These tests read the committed notebook."""

import json
import re

import pytest

from helpers import ops

CELLS = json.loads(ops.NOTEBOOK.read_text(encoding="utf-8"))["cells"]
HEADING = re.compile(r"^## (\d+)\. (\w+)", re.MULTILINE)
SECTIONS = ["max_pool2d", "avg_pool2d", "conv2d", "conv2d", "conv_transpose2d", "flatten", "sigmoid", "roi_pool",
            "batch_norm", "cross_entropy", "mse_loss"]


def _source(cell):
    return "".join(cell["source"])


def _tags(cell):
    return cell["metadata"].get("tags", [])


def _sections():
    """[(op name, [cells of its section])] for the eleven numbered sections, in order."""
    sections = []
    for cell in CELLS:
        match = HEADING.match(_source(cell)) if cell["cell_type"] == "markdown" else None
        if match:
            sections.append((match[2], []))
        elif _source(cell).startswith("## "):
            sections.append((None, []))  # a closing section such as "Under the hood"
        if sections:
            sections[-1][1].append(cell)
    return [(name, cells) for name, cells in sections if name]


def _first(cells, predicate):
    """Index of the first cell of `cells` for which `predicate` holds (len(cells) if none)."""
    return next((index for index, cell in enumerate(cells) if predicate(cell)), len(cells))


def test_eleven_sections_in_the_assignments_order():
    assert [name for name, _ in _sections()] == SECTIONS


@pytest.mark.parametrize("number", range(1, 12))
def test_each_section_has_its_seven_parts_in_order(number):
    name, cells = _sections()[number - 1]
    is_code = lambda cell: cell["cell_type"] == "code"  # noqa: E731
    picture = _first(cells, lambda c: is_code(c) and "figures." in _source(c) and "plt.show()" in _source(c))
    maths = _first(cells, lambda c: c["cell_type"] == "markdown" and "$$" in _source(c))
    reference = _first(cells, lambda c: "reference" in _tags(c))
    case = _first(cells, lambda c: is_code(c) and f'assignment_case("{name}", reference.{name}, drop_in=ops.{name}' in _source(c))
    drop_in = _first(cells, lambda c: "op" in _tags(c))
    checks = _first(cells, lambda c: is_code(c) and (f'drop_in_checks("{name}"' in _source(c) or "verdict(" in _source(c))
                    and cells.index(c) > case)
    questions = _first(cells, lambda c: "### Check yourself" in _source(c) and "<details>" in _source(c))
    parts = dict(picture=picture, maths=maths, case=case, checks=checks, questions=questions)
    if number != 4:  # section 4 is conv2d again: its reference and drop-in are those of section 3
        parts.update(reference=reference, drop_in=drop_in)
    missing = [part for part, index in parts.items() if index == len(cells)]
    assert not missing, f"section {number} ({name}) lacks {missing}"
    order = ["picture", "maths", "reference", "case", "drop_in", "checks", "questions"]
    positions = [parts[part] for part in order if part in parts]
    assert positions == sorted(positions), f"section {number}: parts out of order: {parts}"
    answers = re.search(r"<details>.*?</details>", _source(cells[questions]), re.DOTALL)[0]
    assert re.search(r"^1\. .*^2\. ", _source(cells[questions]).split("<details>")[0], re.DOTALL | re.MULTILINE)
    assert re.search(r"^1\. .*^2\. ", answers, re.DOTALL | re.MULTILINE), f"section {number}: two answers"


def test_drop_in_cells_are_folded_and_reference_cells_are_not():
    for cell in CELLS:
        hidden = cell["metadata"].get("jupyter", {}).get("source_hidden", False)
        if "op" in _tags(cell):
            assert hidden, f"op cell {cell['id']} is not folded"
        else:
            assert not hidden, f"cell {cell['id']} is folded but is no drop-in"


def test_reference_sweeps_run_within_scope_for_each_op():
    sources = "\n".join(_source(cell) for cell in CELLS if cell["cell_type"] == "code")
    for name in ops.REFERENCE_NAMES:
        assert f'sweep("{name}", SWEEP_CASES, seed=SEED, ours=reference.{name}, scope="reference")' in sources
        assert f'drop_in_checks("{name}", {name}, reference.{name}' in sources


def test_at_least_nine_figures_render():
    images = [output for cell in CELLS if cell["cell_type"] == "code" for output in cell.get("outputs", [])
              if "image/png" in output.get("data", {})]
    assert len(images) >= 9, f"{len(images)} figures in the committed notebook"


def test_no_stray_figure_text_warnings_or_errors_in_the_outputs():
    for cell in CELLS:
        for output in cell.get("outputs", []):
            text = "".join(output.get("text", "")) + "".join(output.get("data", {}).get("text/plain", ""))
            assert output.get("output_type") != "error", f"cell {cell['id']} raised"
            assert output.get("name") != "stderr", f"cell {cell['id']} wrote to stderr: {text[:200]}"
            stray = "image/png" not in output.get("data", {})  # beside its image, the repr is the plain-text alternative
            assert not (stray and "<Figure size" in text), f"cell {cell['id']} shows a Figure's repr instead of the figure"


def test_solution_cells_are_only_about_the_drop_ins():
    """The student version keeps every cell not tagged op/solution: none of those may use a drop-in's extra
    arguments through its plain name after the op cells (it is the student's reference there)."""
    for cell in CELLS:
        if cell["cell_type"] == "code" and not set(_tags(cell)) & {"op", "solution", "reference"}:
            source = _source(cell)
            assert "drop_in_checks(" not in source and "return_indices" not in source, cell["id"]
