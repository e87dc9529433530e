"""`python -m helpers.train` when things go wrong: Ctrl-C, bad checkpoints, other options, missing data.

Each failure must end the program with one line that names the option or file and the fix, and no
traceback. Ctrl-C is sent to a real subprocess; the other cases run ``main`` in this process.
"""

import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import train as cli
from helpers.training import CHECKPOINT_NAME, load_checkpoint, save_atomic
from support import TEST_PER_CLASS, TRAIN_PER_CLASS

PROGRAM = "python -m helpers.train"
# Runs the command line on the tiny tree (the real loader expects 50,000 / 10,000 images), with
# Python's own SIGINT handler: a shell that starts jobs in the background may have left SIGINT ignored.
DRIVER = """
import functools, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from helpers import data, train as cli
cache_dir, train_count, test_count, *argv = sys.argv[1:]
cli.load_cifar10 = functools.partial(data.load_cifar10, cache_dir=cache_dir,
                                     expected_counts=(int(train_count), int(test_count)))
cli.main(argv)
"""


pytestmark = pytest.mark.usefixtures("restore_threads")


def tiny_run_arguments(data_dir, run_dir, *more):
    return ["--epochs", "1", "--batch-size", "32", "--data-dir", str(data_dir), "--val-size", "20",
            "--run-dir", str(run_dir), "--no-progress", "--threads", "1", *more]


def error_lines(capsys, expected_code, arguments):
    """Run ``main(arguments)``, check its exit code, and return its stderr's lines."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == expected_code
    return capsys.readouterr().err.strip().splitlines()


# --- Ctrl-C -----------------------------------------------------------------------------------


def start_and_interrupt(command, run_dir, after_epochs):
    """Start ``command``, send it SIGINT (Ctrl-C) once ``run_dir`` holds ``after_epochs`` saved epochs,
    and return (exit code, stderr)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    checkpoint = run_dir / CHECKPOINT_NAME
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoint.exists() and load_checkpoint(checkpoint)["epoch"] >= after_epochs:
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def test_ctrl_c_in_training_is_one_line_and_the_resumed_run_says_where_it_resumes(tiny_cifar, tmp_path):
    run_dir = tmp_path / "run"
    epochs = 500  # far more than run before the interrupt
    command = [sys.executable, "-c", DRIVER, str(tmp_path / "cache"), str(10 * TRAIN_PER_CLASS),
               str(10 * TEST_PER_CLASS), "--epochs", str(epochs), "--lr", "0.01", "--batch-size", "20",
               "--data-dir", str(tiny_cifar), "--val-size", "0", "--run-dir", str(run_dir), "--threads", "1",
               "--no-progress"]
    code, stderr = start_and_interrupt(command, run_dir, after_epochs=1)
    assert code == cli.INTERRUPTED_STATUS and "Traceback" not in stderr
    saved = load_checkpoint(run_dir / CHECKPOINT_NAME)["epoch"]
    assert stderr.splitlines()[-1] == (f"{PROGRAM}: interrupted in epoch {saved + 1} of {epochs}; "
                                       "run the same command with --resume to continue")

    code, stderr = start_and_interrupt([*command, "--resume"], run_dir, after_epochs=saved + 1)
    assert code == cli.INTERRUPTED_STATUS and "Traceback" not in stderr
    assert f"resuming {run_dir} from epoch {saved + 1} of {epochs}" in stderr.splitlines()
    assert stderr.splitlines()[-1].startswith(f"{PROGRAM}: interrupted in epoch ")


# --- bad checkpoints --------------------------------------------------------------------------


def write_checkpoint(path, kind):
    """Write a checkpoint.pt that cannot be resumed: empty, truncated, corrupted, or not a run."""
    path.parent.mkdir(parents=True)
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        save_atomic({"epoch": 1, "model": {"weight": torch.randn(1000)}}, path)
        path.write_bytes(path.read_bytes()[:2000])
    elif kind == "corrupted":
        path.write_bytes(bytes(range(256)) * 20)
    else:
        save_atomic({"weights": torch.randn(3)}, path)


@pytest.mark.parametrize(
    ("kind", "problem"),
    [("empty", "the file is empty"), ("truncated", "it is truncated or corrupted"),
     ("corrupted", "it is truncated or corrupted"), ("not a run", "it holds no training run")],
)
def test_an_unreadable_checkpoint_is_one_line_naming_the_file_before_any_work(kind, problem, tmp_path, capsys):
    run_dir = tmp_path / "run"
    write_checkpoint(run_dir / CHECKPOINT_NAME, kind)
    # The data folder does not exist: the checkpoint is read first.
    lines = error_lines(capsys, 1, tiny_run_arguments(tmp_path / "nowhere", run_dir, "--resume"))
    assert len(lines) == 1
    assert lines[0].startswith(f"{PROGRAM}: error: cannot read the checkpoint {run_dir / CHECKPOINT_NAME}: {problem}")
    assert lines[0].endswith("delete it to start afresh, or use another --run-dir")
    assert "weights_only" not in lines[0]


def test_a_checkpoint_of_another_model_or_recipe_names_the_options(small_loader, tmp_path, capsys):
    run_dir = tmp_path / "run"
    arguments = tiny_run_arguments(small_loader, run_dir, "--model", "plain", "--precision", "float32")
    cli.main(arguments)
    capsys.readouterr()
    advice = "run the command it was saved with, or use another --run-dir"
    lines = error_lines(capsys, 1, [*arguments, "--resume", "--model", "bn"])
    assert lines == [f"{PROGRAM}: error: cannot resume {run_dir}: it was saved with --model plain, "
                     f"given --model bn; {advice}"]
    lines = error_lines(capsys, 1, [*arguments, "--resume", "--augment", "flip", "--precision", "bfloat16"])
    assert lines == [f"{PROGRAM}: error: cannot resume {run_dir}: it was saved with --augment none "
                     f"--precision float32, given --augment flip --precision bfloat16; {advice}"]


def test_a_resume_without_a_checkpoint_says_it_starts_afresh(small_loader, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cli.main(tiny_run_arguments(small_loader, run_dir, "--resume"))
    assert f"no checkpoint in {run_dir} yet: starting a fresh run" in capsys.readouterr().err.splitlines()
    cli.main(tiny_run_arguments(small_loader, run_dir, "--resume"))
    assert f"resuming {run_dir}: all 1 epochs are done, testing only" in capsys.readouterr().err.splitlines()


# --- options and data ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--train-subset", "11"],
      "argument --train-subset: at most 10 (the training images of class 'airplane'), got 11"),
     (["--test-subset", "4"], "argument --test-subset: at most 3 (the test images of class 'airplane'), got 4")],
)
def test_a_subset_larger_than_a_class_names_the_option_and_the_class(small_loader, tmp_path, capsys,
                                                                     arguments, message):
    lines = error_lines(capsys, 1, tiny_run_arguments(small_loader, tmp_path / "run", *arguments))
    assert lines[-1] == f"{PROGRAM}: error: {message}"
    assert all(line.startswith("helpers.data: decod") for line in lines[:-1])  # the first load's decoding


def test_a_missing_data_dir_is_named_as_the_option(tmp_path, capsys):
    lines = error_lines(capsys, 1, tiny_run_arguments(tmp_path / "nowhere", tmp_path / "run"))
    assert len(lines) == 1
    assert f"CIFAR-10 folder {tmp_path / 'nowhere'} (from --data-dir) does not exist. Point --data-dir at" in lines[0]
    assert "root argument" not in lines[0] and "Set CIFAR10_DIR" not in lines[0]


def test_bad_options_print_a_short_usage_and_one_error_line(capsys):
    lines = error_lines(capsys, 2, ["--quick", "--train-subset", "50"])
    assert lines == [
        f"usage: {PROGRAM} [options]  (--help lists them)",
        f"{PROGRAM}: error: argument --quick: it sets --train-subset itself; drop --quick, or that option",
    ]
