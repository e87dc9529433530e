"""`python -m helpers.train`: help, one-line errors, and a tiny run end to end (with resume)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import train as cli
from helpers.data import CLASSES
from helpers.training import TTA_SHIFTS
from support import TEST_PER_CLASS


pytestmark = pytest.mark.usefixtures("restore_threads")


def run_cli(*arguments):
    return subprocess.run(
        [sys.executable, "-m", "helpers.train", *arguments], capture_output=True, text=True, timeout=120
    )


def test_help_documents_every_option():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for action in cli.build_parser()._actions:
        for option in action.option_strings:
            assert option in result.stdout
    for option in ("--model", "--affine", "--augment", "--resume", "--run-dir", "--quick", "--label-smoothing"):
        assert option in result.stdout


def test_a_bad_value_is_a_one_line_error_in_a_subprocess():
    result = run_cli("--model", "resnet")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert error_lines == [error_lines[0]] and "--model" in error_lines[0] and "resnet" in error_lines[0]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--lr", "-0.1"], "argument --lr: must be a number > 0"),
        (["--epochs", "two"], "argument --epochs: must be an int >= 1"),
        (["--augment", "flip+blur"], "argument --augment: cannot parse augment spec"),
        (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice"),
        (["--momentum", "1.5"], "argument --momentum: must be a number in [0, 1), got '1.5'"),
        (["--label-smoothing", "1"], "argument --label-smoothing: must be a number in [0, 1), got '1'"),
        (["--nesterov", "--optimizer", "adam"], "argument --nesterov: needs --optimizer sgd and --momentum > 0"),
        (["--nesterov", "--momentum", "0"], "argument --nesterov: needs --optimizer sgd and --momentum > 0"),
        (["--warmup-epochs", "1"], "argument --warmup-epochs: only applies to --schedule cosine"),
        (["--warmup-epochs", "3", "--schedule", "cosine", "--epochs", "3"],
         "argument --warmup-epochs: must be less than the 3 epochs, got 3"),
        (["--quick", "--train-subset", "50"],
         "argument --quick: it sets --train-subset itself; drop --quick, or that option"),
        (["--quick", "--epochs", "2", "--val-size", "0"],
         "argument --quick: it sets --epochs, --val-size itself; drop --quick, or those options"),
        (["--affine"], "--affine: only applies to --model bn"),
        (["--tta", "rotate"], "argument --tta: invalid choice"),
    ],
)
def test_bad_values_exit_2_with_one_error_line(arguments, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)
    assert exit_info.value.code == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and message in error_lines[0]


def test_a_tiny_run_writes_history_and_metrics_then_resumes(small_loader, tmp_path, capsys):
    run_dir = tmp_path / "run"
    arguments = [
        "--model", "bn", "--epochs", "2", "--batch-size", "32", "--lr", "0.05", "--schedule", "onecycle",
        "--augment", "flip+crop", "--data-dir", str(small_loader), "--val-size", "20",
        "--run-dir", str(run_dir), "--no-progress", "--threads", "1", "--tta",
    ]
    cli.main(arguments)
    history = json.loads((run_dir / "history.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert history["status"] == "completed" and len(history["train_loss"]) == 2
    assert len(history["val_accuracy"]) == 2 and history["val_accuracy"][0] is not None
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert list(metrics["per_class_accuracy"]) == list(CLASSES)
    assert np.array(metrics["confusion"]).shape == (10, 10) and np.sum(metrics["confusion"]) == 10 * TEST_PER_CLASS
    assert metrics["config"]["augment"] == {"flip": True, "crop_padding": 4, "rotation_degrees": 0.0}
    assert metrics["data"] == {"source": str(small_loader), "train": 80, "val": 20, "test": 30}
    assert (run_dir / "checkpoint.pt").is_file() and (run_dir / "curves.png").is_file()
    assert metrics["tta"] == "flip"  # --tta without a value
    assert "test accuracy" in capsys.readouterr().err

    cli.main([*arguments, "--resume"])  # already complete: loads, tests, rewrites the same metrics
    assert json.loads((run_dir / "metrics.json").read_text()) == metrics

    with pytest.raises(SystemExit) as exit_info:
        cli.main([*arguments, "--resume", "--lr", "0.1"])
    assert exit_info.value.code == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == (f"python -m helpers.train: error: cannot resume {run_dir}: it was saved with --lr 0.05, "
                     "given --lr 0.1; run the command it was saved with, or use another --run-dir")

    with pytest.raises(SystemExit) as exit_info:
        cli.main(arguments)  # without --resume an existing run is not overwritten
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"python -m helpers.train: error: {run_dir} already holds a run: add --resume to continue it, "
        "or use another --run-dir"
    ]


def test_ops_scratch_builds_the_scratch_net_and_trains_with_the_q1_loss(small_loader, tmp_path, monkeypatch):
    pytest.importorskip("helpers.ops")
    seen = {}
    real_train = cli.train

    def recorded_train(model, *args, **kwargs):
        seen["layers"] = {type(module).__name__ for module in model.modules()}
        seen["ops"] = kwargs["ops"]
        return real_train(model, *args, **kwargs)

    monkeypatch.setattr(cli, "train", recorded_train)
    run_dir = tmp_path / "run"
    cli.main([
        "--model", "plain", "--ops", "scratch", "--epochs", "1", "--batch-size", "32",
        "--data-dir", str(small_loader), "--val-size", "20", "--run-dir", str(run_dir),
        "--no-progress", "--threads", "1",
    ])
    assert seen["ops"] == "scratch"
    assert {"ScratchConv2d", "ScratchMaxPool2d", "ScratchAvgPool2d", "ScratchFlatten"} <= seen["layers"]
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["ops"] == "scratch"
    assert json.loads((run_dir / "metrics.json").read_text())["model"]["ops"] == "scratch"


def test_the_default_run_dir_names_scratch_runs():
    def default_name(*argv):
        arguments = cli.build_parser().parse_args(argv)
        return cli.default_run_dir(arguments, cli.config_from(arguments)).name

    assert default_name() == "plain-sgd-lr0.05-bs128-seed0"
    assert default_name("--ops", "scratch") == "plain-scratch-sgd-lr0.05-bs128-seed0"
    assert default_name("--ops", "scratch", "--quick") == "plain-scratch-sgd-lr0.05-bs128-seed0-quick"


def test_a_diverged_run_is_reported_not_raised(small_loader, tmp_path, capsys):
    run_dir = tmp_path / "run"
    cli.main([
        "--model", "plain", "--lr", "1e6", "--momentum", "0", "--batch-size", "16", "--epochs", "2",
        "--data-dir", str(small_loader), "--val-size", "20", "--run-dir", str(run_dir),
        "--no-progress", "--threads", "1",
    ])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "diverged" and "test_accuracy" not in metrics
    assert json.loads((run_dir / "history.json").read_text())["status"] == "diverged"
    assert "run diverged: non-finite training loss" in capsys.readouterr().err


def test_missing_data_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--data-dir", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "run"), "--no-progress"])
    assert exit_info.value.code == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "does not exist" in lines[0]


def test_tta_takes_flip_without_a_value_and_none_without_the_flag():
    parse = cli.build_parser().parse_args
    assert parse([]).tta == "none"
    assert parse(["--tta"]).tta == "flip"
    assert parse(["--tta", "flip+shifts"]).tta == "flip+shifts"


def test_precision_reaches_the_config_and_auto_asks_the_machine(monkeypatch):
    parse = cli.build_parser().parse_args
    assert cli.config_from(parse(["--precision", "float32"])).precision == "float32"
    assert cli.config_from(parse(["--precision", "bfloat16"])).precision == "bfloat16"
    asked = []

    def bfloat16_machine(device):
        asked.append(device)
        return "bfloat16", "bfloat16: this CPU has AMX-BF16, which runs bfloat16 natively"

    monkeypatch.setattr(cli, "choose_precision", bfloat16_machine)
    assert cli.config_from(parse([])).precision == "bfloat16"
    assert cli.config_from(parse(["--device", "cpu"])).precision == "bfloat16"
    assert asked[-1] == torch.device("cpu")


def test_tta_choices_are_the_evaluate_options_of_each_view():
    assert cli.TTA_CHOICES == {
        "none": {},
        "flip": {"tta_flip": True},
        "flip+shifts": {"tta_flip": True, "tta_shifts": TTA_SHIFTS},
    }
