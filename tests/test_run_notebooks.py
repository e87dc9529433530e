"""The main job's notebook runner: quick runs leave the notebooks alone, a failing cell is one line."""

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
RUNNER = REPO_ROOT / "scripts" / "execute_notebook.py"


def write_notebook(path, *sources):
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [nbformat.v4.new_markdown_cell("# A test notebook")]
    notebook.cells += [nbformat.v4.new_code_cell(source) for source in sources]
    nbformat.write(notebook, path)
    return path


def run_runner(notebook, output, log):
    environment = {name: value for name, value in os.environ.items() if name != "CIFAR10_DIR"}  # as offline
    return subprocess.run([sys.executable, str(RUNNER), str(notebook), str(output), str(log)],
                          capture_output=True, text=True, timeout=300, env=environment)


def test_a_notebook_runs_in_its_own_folder_and_is_written_to_the_output(tmp_path):
    notebook = write_notebook(tmp_path / "ok.ipynb", "import os\nprint(os.getcwd())", "6 * 7")
    before = notebook.read_bytes()
    result = run_runner(notebook, tmp_path / "executed" / "ok.ipynb", tmp_path / "ok.log")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the kernel's own notices go to the log only when something fails
    assert result.stdout.startswith(f"{notebook}: executed in ")
    assert notebook.read_bytes() == before
    executed = nbformat.read(tmp_path / "executed" / "ok.ipynb", as_version=4)
    assert executed.cells[1].outputs[0]["text"] == f"{tmp_path}\n"
    assert executed.cells[2].outputs[0]["data"]["text/plain"] == "42"
    assert not (tmp_path / "ok.log").exists()


def test_a_previous_run_s_widget_state_is_not_carried_over(tmp_path):
    notebook = write_notebook(tmp_path / "widgets.ipynb", "6 * 7")
    with_widgets = nbformat.read(notebook, as_version=4)
    with_widgets.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {"a": {}}}}
    nbformat.write(with_widgets, notebook)
    result = run_runner(notebook, notebook, tmp_path / "widgets.log")
    assert result.returncode == 0, result.stderr
    assert "widgets" not in nbformat.read(notebook, as_version=4).metadata


def test_a_failing_cell_is_one_line_with_the_cell_the_error_and_the_log(tmp_path):
    notebook = write_notebook(
        tmp_path / "offline.ipynb",
        "from helpers.data import load_cifar10",
        f"load_cifar10(cache_dir={str(tmp_path / 'empty')!r}, download=False)",
    )
    log = tmp_path / "logs" / "offline.log"
    result = run_runner(notebook, notebook, log)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"{notebook} failed in cell 3 (In [2]): DatasetError: No CIFAR-10 found: ")
    assert lines[0].endswith(f" - full log: {log}")
    assert "\x1b[" not in lines[0]
    text = log.read_text()
    assert "Traceback" in text and "load_cifar10(cache_dir=" in text and "\x1b[" not in text
    assert not nbformat.read(notebook, as_version=4).cells[2].outputs  # the notebook was not rewritten


@pytest.mark.skipif(not (REPO_ROOT / ".venv" / "bin" / "python").exists(), reason="needs the .venv of setup.sh")
def test_the_quick_main_job_writes_elsewhere_and_leaves_the_notebook_alone(tmp_path):
    name = f"test-quick-job-{os.getpid()}"
    notebook = write_notebook(tmp_path / f"{name}.ipynb", "print('quick')")
    before = notebook.read_bytes()
    executed = REPO_ROOT / "data" / "executed" / f"{name}.ipynb"
    try:
        result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "run_notebooks.sh"), str(notebook)],
                                capture_output=True, text=True, timeout=600, env=os.environ | {"QUICK_MODE": "1"})
        assert result.returncode == 0, result.stderr
        assert "quick mode: the executed notebooks go to data/executed/" in result.stdout
        assert notebook.read_bytes() == before
        assert nbformat.read(executed, as_version=4).cells[1].outputs[0]["text"] == "quick\n"
    finally:
        executed.unlink(missing_ok=True)
    ignored = subprocess.run(["git", "check-ignore", "-q", str(executed)], cwd=REPO_ROOT)
    assert ignored.returncode != 1, "data/executed/ must be git-ignored"  # 128: not a git checkout
