"""The Q1 ops, loaded from the notebook that shows them.

`notebooks/q1_ops.ipynb` is the only place the ops are written. Its code cells tagged ``op`` hold
the implementations (and nothing else: no demonstrations, no prints); this module runs exactly those
cells, in notebook order, in its own namespace, so that ``from helpers import ops`` then
``ops.conv2d(...)`` calls the very code the notebook shows. Tracebacks point at the notebook cell.
"""

import json
from pathlib import Path

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "q1_ops.ipynb"
OP_TAG = "op"
# The eleven ops of the assignment: conv2d counts twice (stride 1; stride 2 with dilation 2).
__all__ = [
    "max_pool2d",
    "avg_pool2d",
    "conv2d",
    "conv_transpose2d",
    "flatten",
    "sigmoid",
    "roi_pool",
    "batch_norm",
    "cross_entropy",
    "mse_loss",
]


def op_cell_sources(notebook=NOTEBOOK):
    """Return the source of each code cell tagged ``op``, in notebook order, with its cell index."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    return [
        (index, "".join(cell["source"]))
        for index, cell in enumerate(cells)
        if cell["cell_type"] == "code" and OP_TAG in cell.get("metadata", {}).get("tags", [])
    ]


def _load_into(namespace, notebook=NOTEBOOK):
    for index, source in op_cell_sources(notebook):
        code = compile(source, f"{Path(notebook).name}[cell {index}]", "exec")
        exec(code, namespace)  # noqa: S102 - the notebook is this repository's own source
    missing = [name for name in __all__ if not callable(namespace.get(name))]
    if missing:
        raise ImportError(f"{notebook} defines no op cell for: {', '.join(missing)}")


_load_into(globals())
