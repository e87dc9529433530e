"""How training runs are reported: progress that reads anywhere, the collapsed status, the sweep's
figures and table, the headline test accuracies, the learning-rate schedule and augmentation figures."""

import io
import math
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from helpers import progress, training
from helpers.data import Augment
from helpers.models import build_model
from helpers.plots import (
    accuracy_headline,
    plot_augmentations,
    plot_curves,
    plot_lr_schedule,
    plot_sweep,
    plot_sweep_curves,
    sweep_record,
    sweep_table,
)
from helpers.training import History, TrainConfig, train
from support import learnable_images, quick_config

REPOSITORY = Path(__file__).resolve().parent.parent


def history(train_loss, val_accuracy, train_accuracy=None, status="completed"):
    epochs = len(train_loss)
    return History(train_loss=list(train_loss), train_accuracy=train_accuracy or [0.5] * epochs,
                   val_loss=[1.0] * epochs, val_accuracy=list(val_accuracy), lr=[0.1] * epochs,
                   seconds=[1.0] * epochs, status=status)


# --- the collapsed status ----------------------------------------------------------------------


def test_a_loss_that_blew_up_is_a_collapse():
    reason = history([4.2e5, 2.31], [0.1, 0.1]).collapse_reason()
    assert reason.startswith("its training loss blew up to 4.2e+05 in epoch 1")


def test_ending_at_chance_no_better_than_a_uniform_guess_is_a_collapse():
    reason = history([2.309, 2.305], [0.11, 0.10]).collapse_reason()
    assert reason.startswith("it ended at 10.0% validation accuracy (chance: 10%)")
    assert history([2.31, 2.2999], [0.1, 0.1]).collapse_reason() is not None  # ln 10 = 2.3026, within 0.01
    without_validation = History(train_loss=[2.31], train_accuracy=[0.1], val_loss=[None], val_accuracy=[None],
                                 lr=[0.1], seconds=[1.0])
    assert "10.0% training accuracy" in without_validation.collapse_reason()


@pytest.mark.parametrize("losses, accuracies", [
    ([2.2, 1.8], [0.3, 0.45]),     # learns
    ([2.29, 2.25], [0.1, 0.11]),   # still near chance, but its loss is well below a uniform guess's: it learns
    ([22.0, 2.0], [0.2, 0.3]),     # a loss just under 10x ln 10 (23.03) is not a blow-up
])
def test_runs_that_learn_did_not_collapse(losses, accuracies):
    assert history(losses, accuracies).collapse_reason() is None


def test_train_marks_a_collapsed_run_in_its_history_and_checkpoint(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(History, "collapse_reason", lambda self: "it ended at chance")
    torch.manual_seed(0)
    result = train(build_model("plain"), quick_config(), *tiny, run_dir=tmp_path, progress=False, num_threads=1)
    assert (result.status, result.message) == ("collapsed", "it ended at chance")
    resumed = train(build_model("plain"), quick_config(), *tiny, run_dir=tmp_path, resume=True, progress=False,
                    num_threads=1)
    assert resumed.status == "collapsed" and resumed.epochs == 2
    assert History.from_dict(training.load_checkpoint(tmp_path / training.CHECKPOINT_NAME)["history"]).status == "collapsed"


def test_a_run_that_learns_is_completed(tiny):
    torch.manual_seed(0)
    config = TrainConfig(optimizer="adam", lr=3e-3, epochs=3, batch_size=16)
    result = train(build_model("plain"), config, *tiny, progress=False, num_threads=1)
    assert result.val_accuracy[-1] > 0.1 + training.COLLAPSE_ACCURACY_MARGIN  # it learned something
    assert (result.status, result.message) == ("completed", "")


# --- progress ----------------------------------------------------------------------------------


def test_progress_in_a_notebook_leaves_one_summary_line_and_no_widget(tmp_path):
    code = f"""import sys; sys.path.insert(0, {str(REPOSITORY)!r})
import torch
from helpers.models import build_model
from helpers.training import TrainConfig, train
from support import learnable_images
images, labels = learnable_images(64, seed=0)
torch.manual_seed(0)
history = train(build_model("plain"), TrainConfig(optimizer="sgd", lr=0.05, epochs=2, batch_size=16), images, labels,
                images[:16], labels[:16], progress="tiny run", num_threads=1)"""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    notebook.cells.insert(0, nbformat.v4.new_code_cell(f"import sys; sys.path.insert(0, {str(REPOSITORY / 'tests')!r})"))
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = notebook.cells[1].outputs
    assert "widgets" not in notebook.metadata
    assert [output.output_type for output in outputs] == ["display_data"]
    assert list(outputs[0].data) == ["text/plain"]
    line = outputs[0].data["text/plain"]
    assert line.startswith("tiny run: completed after 2/2 epochs, ") and "validation accuracy" in line
    assert "\n" not in line


def test_progress_in_a_terminal_is_tqdm_text_on_stderr(tiny, capsys):
    torch.manual_seed(0)
    train(build_model("plain"), quick_config(epochs=1), *tiny, progress="terminal run", num_threads=1)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "terminal run: 100%" in captured.err and "val_acc" in captured.err


def test_summary_line_says_how_a_run_ended():
    line = progress.summary_line("adam", history([2.0, 1.5], [0.3, 0.42], train_accuracy=[0.25, 0.5]), epochs=2)
    assert line == ("adam: completed after 2/2 epochs, 2 s, train loss 1.500, train accuracy 50.00%, "
                    "validation accuracy 42.00%")
    diverged = History(status="diverged", message="non-finite training loss in epoch 1")
    assert progress.summary_line("sgd", diverged, epochs=5) == (
        "sgd: diverged after 0/5 epochs, 0 s (non-finite training loss in epoch 1)")
    stopped = history([2.0], [0.3])
    stopped.status = "running"
    assert progress.summary_line("run", stopped, epochs=4).startswith("run: stopped after 1/4 epochs")


# --- the sweep ---------------------------------------------------------------------------------


@pytest.fixture
def sweep():
    learned = history([2.0, 1.5], [0.25, 0.35])
    better = history([1.9, 1.2], [0.3, 0.55])
    collapsed = history([4.0e5, 2.31], [0.1, 0.1], status="collapsed")
    diverged = History(status="diverged", message="non-finite training loss in epoch 1")
    return [(quick_config(lr=0.01), learned), (quick_config(lr=0.01, batch_size=64), better),
            (quick_config(optimizer="adam", lr=0.1), collapsed), (quick_config(optimizer="adam", lr=0.01), diverged)]


def test_sweep_heatmap_spans_the_runs_that_learned_and_greys_the_others(sweep):
    figure = plot_sweep([sweep_record(config, run) for config, run in sweep])
    texts = [text.get_text() for axes in figure.axes for text in axes.texts]
    assert "collapsed\n10.0%" in texts and "diverged" in texts and "55.0%" in texts
    image = figure.axes[0].images[0]
    low, high = image.get_clim()
    assert low <= 0.35 and high >= 0.55 and high - low < 0.3  # the data's range, not 0 to 1
    assert figure._suptitle.get_text().startswith("Best: sgd, lr 0.01, batch 64 (55.0%)")
    assert figure.axes[-1].get_ylabel() == "validation accuracy"
    figure.savefig(io.BytesIO(), format="png")


def test_sweep_table_puts_collapsed_and_diverged_runs_last(sweep):
    lines = sweep_table([sweep_record(config, run) for config, run in sweep]).splitlines()
    assert [line.split()[-1] for line in lines[2:]] == ["completed", "completed", "collapsed", "diverged"]


def test_sweep_curves_one_row_per_optimizer_log_loss_and_legends_outside(sweep):
    figure = plot_sweep_curves(sweep)
    loss_axes = [axes for axes in figure.axes if axes.get_yscale() == "log"]
    assert [axes.get_title().split(":")[0] for axes in loss_axes] == ["adam", "sgd"]
    legends = [axes.get_legend() for axes in figure.axes if axes.get_legend() is not None]
    assert len(legends) == 2
    labels = [[text.get_text() for text in legend.get_texts()] for legend in legends]
    assert labels == [["lr 0.1, batch 32 (collapsed)", "lr 0.01, batch 32 (diverged)"],
                      ["lr 0.01, batch 32", "lr 0.01, batch 64"]]
    figure.savefig(io.BytesIO(), format="png")
    colours = [line.get_color() for line in figure.axes[-1].lines]
    assert len(set(colours)) == 2  # one colour per run, shared by its training and validation curves
    with pytest.raises(ValueError, match="runs is empty"):
        plot_sweep_curves([])


def test_curves_say_which_runs_collapsed(sweep):
    figure = plot_curves({"adam": sweep[2][1], "sgd": sweep[0][1]})
    labels = [text.get_text() for text in figure.axes[1].get_legend().get_texts()]
    assert "adam (collapsed): train" in labels and "sgd: train" in labels


# --- the headline, the schedule, the augmentations ---------------------------------------------


def test_headline_gives_each_scoring_and_compares_the_single_view_with_the_assignment():
    class Scored:
        def __init__(self, accuracy):
            self.accuracy = accuracy

    lines = accuracy_headline({"single view": Scored(0.8402), "flips": Scored(0.8556), "10 views": Scored(0.8634)},
                              0.827).splitlines()
    assert lines == ["test accuracy (single view): 84.02%", "test accuracy (flips): 85.56%",
                     "test accuracy (10 views): 86.34%",
                     "the assignment's test accuracy (single view): 82.70%; this model's single view: +1.32 points"]
    with pytest.raises(ValueError, match="'single view'"):
        accuracy_headline({"flips": Scored(0.5)}, 0.827)


def test_lr_schedule_is_the_one_training_follows():
    config = TrainConfig(optimizer="adamw", lr=3e-3, epochs=4, schedule="onecycle")
    figure = plot_lr_schedule(config, steps_per_epoch=10)
    (line,) = figure.axes[0].lines
    epochs, rates = line.get_data()
    assert len(rates) == 40 and epochs[10] == 1.0
    assert math.isclose(max(rates), 3e-3) and rates[-1] < 1e-6 and rates[0] < 3e-4  # warm-up, peak, anneal
    assert "onecycle" in figure.axes[0].get_title() and figure.axes[0].get_xlabel() == "epoch (10 steps each)"
    with pytest.raises(ValueError, match="steps_per_epoch"):
        plot_lr_schedule(config, steps_per_epoch=0)


def test_augmentation_figure_shows_each_augmentation_of_each_image():
    images = learnable_images(3, seed=0)[0]
    figure = plot_augmentations(images, {"flip": Augment.parse("flip"), "crop": Augment.parse("crop:4")})
    assert len(figure.axes) == 3 * 3
    assert [axes.get_title() for axes in figure.axes[:3]] == ["original", "flip", "crop"]
    assert (figure.axes[0].images[0].get_array() == images[0].permute(1, 2, 0).numpy()).all()
    with pytest.raises(ValueError, match="uint8 tensor"):
        plot_augmentations(images.float(), {})


def test_the_command_line_names_a_collapse_and_its_reason():
    from helpers.train import summary_line as cli_summary_line

    run = history([2.31, 2.31], [0.1, 0.1], status="collapsed")
    run.message = "it ended at chance"
    assert cli_summary_line(run, {"test_accuracy": 0.1}) == (
        "run collapsed (it ended at chance) after 2 epochs: test accuracy 10.00%, best validation accuracy 10.00%")
    assert cli_summary_line(history([2.0, 1.5], [0.3, 0.4]), {"test_accuracy": 0.4}).startswith(
        "completed after 2 epochs: test accuracy 40.00%")
