"""The Q1 ops, and their short reference implementations, loaded from the notebook that shows them.

`notebooks/q1_ops.ipynb` is the only place the ops are written. Its code cells tagged ``op`` hold
the implementations (and nothing else: no demonstrations, no prints); this module runs exactly those
cells, in notebook order, in its own namespace, so that ``from helpers import ops`` then
``ops.conv2d(...)`` calls the very code the notebook shows. Tracebacks point at the notebook cell.

Its code cells tagged ``reference`` hold one short teaching implementation per function (the maths,
in plain tensor code, with autograd for the backward). Each runs in a fresh namespace of its own, so
that none leans on another cell, and its one public function lands in ``ops.reference``:
``ops.reference.conv2d(...)``.
"""

import json
import types
from pathlib import Path

from helpers.op_names import Q1_FUNCTIONS

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "q1_ops.ipynb"
OP_TAG = "op"
REFERENCE_TAG = "reference"
# The eleven ops of the assignment: conv2d counts twice (stride 1; stride 2 with dilation 2).
__all__ = list(Q1_FUNCTIONS)
# One reference implementation per function of __all__.
REFERENCE_NAMES = list(__all__)


def cell_sources(notebook=NOTEBOOK, tag=OP_TAG):
    """Return ``[(cell_index, source)]`` for each code cell tagged `tag`, in notebook order."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    return [
        (index, "".join(cell["source"]))
        for index, cell in enumerate(cells)
        if cell["cell_type"] == "code" and tag in cell.get("metadata", {}).get("tags", [])
    ]


def op_cell_sources(notebook=NOTEBOOK):
    """Return the source of each code cell tagged ``op``, in notebook order, with its cell index."""
    return cell_sources(notebook, OP_TAG)


def _cell_filename(notebook, index):
    return f"{Path(notebook).name}[cell {index}]"


def _load_into(namespace, notebook=NOTEBOOK):
    for index, source in op_cell_sources(notebook):
        code = compile(source, _cell_filename(notebook, index), "exec")
        exec(code, namespace)  # noqa: S102 - the notebook is this repository's own source
    missing = [name for name in __all__ if not callable(namespace.get(name))]
    if missing:
        raise ImportError(f"{notebook} defines no op cell for: {', '.join(missing)}")


def cell_public_functions(source, index, notebook=NOTEBOOK):
    """Run one cell's `source` in a fresh namespace; return ``{name: function}`` for the public
    functions (names without a leading underscore) that the cell itself defines (not those it imports)."""
    filename = _cell_filename(notebook, index)
    namespace = {"__name__": f"{Path(notebook).stem}_cell_{index}"}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - the notebook's own cell
    return {
        name: value
        for name, value in namespace.items()
        if isinstance(value, types.FunctionType)
        and not name.startswith("_")
        and value.__code__.co_filename == filename
    }


def load_references(notebook=NOTEBOOK):
    """A module holding the reference implementation of each of `REFERENCE_NAMES`, one per ``reference`` cell.

    Raises ImportError when a reference cell defines no public function or several, when two cells
    define the same one, or when one of `REFERENCE_NAMES` has no cell.
    """
    module = types.ModuleType(f"{__name__}.reference", "The short reference implementations of the Q1 functions.")
    module.__all__ = REFERENCE_NAMES
    for index, source in cell_sources(notebook, REFERENCE_TAG):
        functions = cell_public_functions(source, index, notebook)
        if len(functions) != 1:
            found = ", ".join(functions) or "none"
            raise ImportError(f"{_cell_filename(notebook, index)}: a reference cell defines one public function, found {found}")
        (name, function), = functions.items()
        if name not in REFERENCE_NAMES:
            raise ImportError(f"{_cell_filename(notebook, index)}: {name} is not one of {', '.join(REFERENCE_NAMES)}")
        if hasattr(module, name):
            raise ImportError(f"{_cell_filename(notebook, index)}: a second reference cell for {name}")
        setattr(module, name, function)
    missing = [name for name in REFERENCE_NAMES if not hasattr(module, name)]
    if missing:
        raise ImportError(f"{notebook} defines no reference cell for: {', '.join(missing)}")
    return module


_load_into(globals())
reference = load_references()
