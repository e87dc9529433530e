"""Execute one notebook top to bottom, as `jupyter nbconvert --execute` does, and report a failure in one line.

    python scripts/execute_notebook.py NOTEBOOK OUTPUT LOG

The notebook runs in its own folder with the python3 kernel and no time limit (nbclient, the engine of
nbconvert --execute). When every cell succeeds, the executed notebook is written to OUTPUT (which may
be NOTEBOOK itself) and one line says where and how long it took. When a cell fails, nothing is
written to OUTPUT; the full traceback (and what the kernel printed to its stderr) goes to LOG, and one
line says which notebook, which cell, the exception and the log's path; the exit status is then 1
(130 for Ctrl-C).
"""

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

INTERRUPTED_STATUS = 130
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path, help="the notebook to execute")
    parser.add_argument("output", type=Path, help="where to write the executed notebook (may be the notebook itself)")
    parser.add_argument("log", type=Path, help="where to write the full traceback if a cell fails")
    arguments = parser.parse_args(argv)
    sys.exit(execute(arguments.notebook, arguments.output, arguments.log))


def execute(notebook, output, log):
    """Execute ``notebook``; write it to ``output``, or on failure the traceback to ``log``. Return the exit status."""
    started = time.perf_counter()
    cells = nbformat.read(notebook, as_version=4)
    cells.metadata.pop("widgets", None)  # a previous run's widget state; nbclient saves this run's, if any
    failed_cell = {}
    client = NotebookClient(
        cells, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}},
        on_cell_error=lambda cell, cell_index, execute_reply: failed_cell.update(index=cell_index),
    )
    # The kernel's own stderr (its start-up notices, or why it died) goes to the log, not the terminal.
    with tempfile.TemporaryFile("w+", encoding="utf-8") as kernel_stderr:
        try:
            client.execute(stderr=kernel_stderr)
        except KeyboardInterrupt:
            print(f"{notebook}: interrupted; it was not written (its training runs resume when it runs again)",
                  file=sys.stderr)
            return INTERRUPTED_STATUS
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
            print(failure_line(notebook, cells, failed_cell.get("index"), error, log), file=sys.stderr)
            kernel_stderr.seek(0)
            write_log(log, error, kernel_stderr.read())
            return 1
    write_atomic(output, nbformat.writes(cells) + "\n")
    print(f"{notebook}: executed in {time.perf_counter() - started:.0f} s, written to {output}")
    return 0


def failure_line(notebook, cells, cell_index, error, log):
    """One line: the notebook, the failing cell (its position among all cells, counted from 1, and the
    code cell's execution number, as Jupyter shows it), the exception's last line, and the log's path."""
    if cell_index is None:  # the kernel died, or a cell ran out of time, before an error came back
        where = "failed"
        what = f"{type(error).__name__}: {last_line(str(error))}"
    else:
        count = cells.cells[cell_index].get("execution_count")
        where = f"failed in cell {cell_index + 1}" + (f" (In [{count}])" if count else "")
        what = f"{error.ename}: {first_line(error.evalue)}" if isinstance(error, CellExecutionError) else str(error)
    return f"{notebook} {where}: {what} - full log: {log}"


def first_line(text):
    """The first non-empty line of an exception's message, without terminal colours ("..." if more follow)."""
    lines = [line.strip() for line in ANSI_ESCAPE.sub("", text).splitlines() if line.strip()]
    return (lines[0] + (" ..." if len(lines) > 1 else "")) if lines else ""


def last_line(text):
    """The last non-empty line of ``text``, without terminal colours."""
    lines = [line.strip() for line in ANSI_ESCAPE.sub("", text).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def write_log(log, error, kernel_stderr):
    """The failing cell's source, its output and the full traceback, then the kernel's stderr, without colours."""
    log.parent.mkdir(parents=True, exist_ok=True)
    text = ANSI_ESCAPE.sub("", str(error)) + "\n"
    if kernel_stderr.strip():
        text += "\n--- the kernel's stderr ---\n" + ANSI_ESCAPE.sub("", kernel_stderr)
    log.write_text(text, encoding="utf-8")


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename: an interrupted write leaves the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o644)  # mkstemp creates it private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    main()
