"""The training engine on tiny synthetic data: learning, exact resume, divergence, checkpoints, evaluation, plots."""

import io
import json

import matplotlib
import pytest
import torch
from torch.nn import functional as F

from helpers import training
from helpers.data import CLASSES, Augment, normalize, shift
from helpers.models import build_model
from helpers.plots import (
    accuracy_table,
    feature_map_summary,
    feature_maps,
    format_feature_map_summary,
    plot_confusion,
    plot_curves,
    plot_feature_maps,
    plot_mean_abs_maps,
    plot_sweep,
    sweep_record,
    sweep_table,
)
from helpers.training import History, TrainConfig, evaluate, evaluate_views, load_checkpoint, save_atomic, train
from support import SimulatedKill, quick_config

matplotlib.use("Agg")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Train on one thread: on a busy 2-core machine two threads are many times slower, not faster."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run(model, config, *data, **options):
    """``train`` without progress bars, on one thread."""
    return train(model, config, *data, progress=False, num_threads=1, **options)


def fresh_model(name="bn", seed=0):
    torch.manual_seed(seed)
    return build_model(name)


def states_equal(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


def test_a_short_run_learns(tiny):
    history = run(fresh_model(), quick_config(epochs=4), *tiny)
    assert history.status == "completed" and history.epochs == 4
    assert history.train_loss[-1] < 0.3 * history.train_loss[0]
    assert history.train_accuracy[-1] > 0.9
    assert history.val_accuracy[-1] > 0.5  # chance is 0.1
    assert len(history.lr) == len(history.seconds) == 4 and all(seconds > 0 for seconds in history.seconds)


@pytest.mark.parametrize(
    "changes",
    [
        {"schedule": "onecycle", "augment": Augment(flip=True, crop_padding=2)},
        {"optimizer": "adam", "lr": 1e-3, "schedule": "cosine", "warmup_epochs": 0.5, "weight_decay": 1e-4},
        {"precision": "bfloat16", "schedule": "onecycle", "nesterov": True, "label_smoothing": 0.1},
    ],
    ids=["sgd-onecycle-augment", "adam-cosine-warmup", "bfloat16"],
)
def test_resume_after_a_kill_gives_bitwise_the_uninterrupted_weights(tiny, tmp_path, changes):
    config = quick_config(**changes)
    uninterrupted = fresh_model()
    expected_history = run(uninterrupted, config, *tiny, run_dir=tmp_path / "whole")

    killed = fresh_model()
    forward_calls = []

    def kill_in_the_second_epoch(module, inputs, output):
        forward_calls.append(1)
        if len(forward_calls) == 5 + 1 + 3:  # epoch 1: 5 training batches, 1 validation batch
            raise SimulatedKill

    hook = killed.register_forward_hook(kill_in_the_second_epoch)
    with pytest.raises(SimulatedKill):
        run(killed, config, *tiny, run_dir=tmp_path / "killed")
    hook.remove()
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["epoch"] == 1

    resumed = fresh_model(seed=123)  # its own initial weights are replaced by the checkpoint's
    history = run(resumed, config, *tiny, run_dir=tmp_path / "killed", resume=True)
    assert history.status == "completed"
    assert states_equal(resumed.state_dict(), uninterrupted.state_dict())
    assert history.train_loss == expected_history.train_loss
    assert history.val_accuracy == expected_history.val_accuracy


def test_resuming_a_completed_run_changes_nothing(tiny, tmp_path):
    config = quick_config(epochs=1)
    model = fresh_model()
    history = run(model, config, *tiny, run_dir=tmp_path)
    again = fresh_model(seed=5)
    repeated = run(again, config, *tiny, run_dir=tmp_path, resume=True)
    assert repeated == history
    assert states_equal(again.state_dict(), model.state_dict())


def test_resume_with_a_different_config_is_refused(tiny, tmp_path):
    run(fresh_model(), quick_config(epochs=1), *tiny, run_dir=tmp_path)
    with pytest.raises(ValueError, match=r"different config \(lr: saved 0.05, given 0.1\)"):
        run(fresh_model(), quick_config(epochs=1, lr=0.1), *tiny, run_dir=tmp_path, resume=True)
    differs = r"the network differs from the one saved there \(24 tensors not in this network\)"
    with pytest.raises(ValueError, match=differs):
        run(fresh_model("plain"), quick_config(epochs=1), *tiny, run_dir=tmp_path, resume=True)


def test_an_existing_checkpoint_is_not_overwritten_without_resume(tiny, tmp_path):
    run(fresh_model(), quick_config(epochs=1), *tiny, run_dir=tmp_path)
    with pytest.raises(FileExistsError, match="resume=True"):
        run(fresh_model(), quick_config(epochs=1), *tiny, run_dir=tmp_path)


def test_divergence_stops_the_run_with_status_diverged(tiny, tmp_path):
    history = run(fresh_model("plain"), quick_config(lr=1e6, momentum=0.0), *tiny, run_dir=tmp_path)
    assert history.status == "diverged"
    assert "non-finite training loss in epoch" in history.message
    assert history.epochs < 2
    assert json.loads((tmp_path / "history.json").read_text())["status"] == "diverged"


def test_checkpoint_loads_with_weights_only_and_holds_the_run(tiny, tmp_path):
    config = quick_config(epochs=1, augment=Augment(flip=True))
    model = fresh_model()
    history = run(model, config, *tiny, run_dir=tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert checkpoint["config"] == config.to_dict()
    assert TrainConfig.from_dict(checkpoint["config"]) == config
    assert History.from_dict(checkpoint["history"]) == history
    assert states_equal(checkpoint["model"], model.state_dict())
    assert {"optimizer", "scheduler", "rng"} <= checkpoint.keys()
    assert isinstance(checkpoint["rng"]["torch"], torch.Tensor)
    assert json.loads((tmp_path / "history.json").read_text()) == history.to_dict()


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_atomic({"epoch": 1, "weights": torch.ones(3)}, path)
    before = path.read_bytes()
    real_save = torch.save

    def save_half_then_fail(obj, file):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        file.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_atomic({"epoch": 2, "weights": torch.zeros(3)}, path)
    assert path.read_bytes() == before
    assert [entry.name for entry in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left
    assert load_checkpoint(path)["epoch"] == 1


def test_a_failed_save_during_training_keeps_the_last_epoch(tiny, tmp_path, monkeypatch):
    real_save = torch.save
    saves = []

    def fail_on_the_second_save(obj, file):
        saves.append(1)
        if len(saves) == 2:
            raise OSError("disk full")
        real_save(obj, file)

    monkeypatch.setattr(torch, "save", fail_on_the_second_save)
    with pytest.raises(OSError, match="disk full"):
        run(fresh_model(), quick_config(epochs=2), *tiny, run_dir=tmp_path)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"lr": float("nan")}, "lr must be a finite number"),
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"epochs": 2.0}, "epochs must be an int"),
        ({"batch_size": True}, "batch_size must be an int"),
        ({"momentum": 1.0}, "momentum must be < 1"),
        ({"weight_decay": -1e-4}, "weight_decay must be >= 0"),
        ({"schedule": "step"}, "schedule must be one of"),
        ({"label_smoothing": 1.0}, "label_smoothing must be < 1"),
        ({"nesterov": True, "optimizer": "adam"}, "nesterov=True needs optimizer='sgd'"),
        ({"nesterov": True, "momentum": 0.0}, "momentum > 0"),
        ({"warmup_epochs": 1.0}, "warmup_epochs applies to schedule='cosine' only"),
        ({"warmup_epochs": 2.0, "schedule": "cosine"}, "warmup_epochs must be less than epochs"),
        ({"augment": "flip"}, "augment must be a helpers.data.Augment"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"precision": "float16"}, r"precision must be one of \('float32', 'bfloat16'\), got 'float16'"),
    ],
)
def test_config_validation_names_the_argument_and_the_rule(changes, message):
    with pytest.raises((ValueError, TypeError), match=message):
        quick_config(**changes)


def test_train_checks_its_data_before_any_work(tiny):
    train_images, train_labels, val_images, val_labels = tiny
    with pytest.raises(ValueError, match="train_images must be a uint8 tensor"):
        run(fresh_model(), quick_config(), train_images.float(), train_labels)
    with pytest.raises(ValueError, match="same, non-zero number"):
        run(fresh_model(), quick_config(), train_images, train_labels[:-1])
    with pytest.raises(ValueError, match="both val_images and val_labels"):
        run(fresh_model(), quick_config(), train_images, train_labels, val_images)
    with pytest.raises(ValueError, match="resume=True needs the run_dir"):
        run(fresh_model(), quick_config(), train_images, train_labels, resume=True)


def test_train_refuses_an_unknown_ops_before_any_work(tiny):
    model = fresh_model()
    with pytest.raises(ValueError, match=r"ops must be one of \('torch', 'scratch'\), got 'numpy'"):
        run(model, quick_config(), *tiny, ops="numpy")
    assert model.conv1.weight.is_contiguous()  # not yet moved to channels_last: nothing ran


def test_the_loss_follows_ops(tiny, monkeypatch):
    torch_loss = training.make_loss_function("torch", label_smoothing=0.1)
    assert isinstance(torch_loss, torch.nn.CrossEntropyLoss) and torch_loss.label_smoothing == 0.1
    ops = pytest.importorskip("helpers.ops")
    calls, cross_entropy = [], ops.cross_entropy

    def recorded_cross_entropy(*args, **kwargs):
        calls.append(kwargs)
        return cross_entropy(*args, **kwargs)

    monkeypatch.setattr(ops, "cross_entropy", recorded_cross_entropy)
    history = run(fresh_model("plain"), quick_config(epochs=1, label_smoothing=0.1), *tiny, ops="scratch")
    assert history.epochs == 1 and history.status != "diverged"
    assert calls == [{"label_smoothing": 0.1}] * 5  # 160 images in batches of 32; validation is torch's
    monkeypatch.delattr(ops, "cross_entropy")
    with pytest.raises(ImportError, match=r"helpers.ops defines no cross_entropy\(\)"):
        run(fresh_model(), quick_config(), *tiny, ops="scratch")


def test_a_resume_with_other_ops_is_refused(tiny, tmp_path):
    pytest.importorskip("helpers.ops")
    run(fresh_model(), quick_config(epochs=1), *tiny, run_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    assert load_checkpoint(path)["ops"] == "torch"
    refused = r"cannot resume .*checkpoint.pt with a different config \(ops: saved 'torch', given 'scratch'\)"
    with pytest.raises(ValueError, match=refused):
        run(fresh_model(), quick_config(epochs=1), *tiny, run_dir=tmp_path, resume=True, ops="scratch")
    # a checkpoint written before ops was recorded was trained with torch's loss
    checkpoint = load_checkpoint(path)
    del checkpoint["ops"]
    save_atomic(checkpoint, path)
    assert run(fresh_model(), quick_config(epochs=1), *tiny, run_dir=tmp_path, resume=True).status == "completed"
    with pytest.raises(ValueError, match=refused):
        run(fresh_model(), quick_config(epochs=1), *tiny, run_dir=tmp_path, resume=True, ops="scratch")


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_precision_sets_the_dtype_of_the_training_forward_only(tiny, precision):
    model = fresh_model()
    seen = []  # (training?, dtype of conv1's output, dtype of conv1's weight) at every forward
    model.conv1.register_forward_hook(
        lambda module, inputs, output: seen.append((module.training, output.dtype, module.weight.dtype))
    )
    history = run(model, quick_config(epochs=1, precision=precision), *tiny)
    assert history.status == "completed" and history.train_loss[0] < 2.3  # it learns, in either precision
    compute = torch.bfloat16 if precision == "bfloat16" else torch.float32
    # 5 training batches, then 1 validation batch
    assert seen == [(True, compute, torch.float32)] * 5 + [(False, torch.float32, torch.float32)]
    assert all(value.dtype == torch.float32 for value in model.state_dict().values() if value.is_floating_point())


def test_a_checkpoint_older_than_a_config_field_resumes_with_its_default(tiny, tmp_path):
    config = quick_config(epochs=1)
    run(fresh_model(), config, *tiny, run_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    checkpoint = load_checkpoint(path)
    del checkpoint["config"]["precision"]  # written before precision existed: trained in float32
    save_atomic(checkpoint, path)
    assert run(fresh_model(), config, *tiny, run_dir=tmp_path, resume=True).status == "completed"
    refused = r"different config \(precision: saved 'float32', given 'bfloat16'\)"
    with pytest.raises(ValueError, match=refused):
        run(fresh_model(), quick_config(epochs=1, precision="bfloat16"), *tiny, run_dir=tmp_path, resume=True)


def test_schedules_follow_their_shapes():
    assert training.cosine_factor(0, warmup_steps=4, total_steps=20) == 0.25
    assert training.cosine_factor(4, warmup_steps=4, total_steps=20) == 1.0
    assert training.cosine_factor(12, warmup_steps=4, total_steps=20) == pytest.approx(0.5)
    assert training.cosine_factor(20, warmup_steps=4, total_steps=20) == pytest.approx(0.0)
    model = torch.nn.Linear(2, 2)
    config = quick_config(schedule="onecycle", epochs=2)
    optimizer = training.make_optimizer(model, config)
    scheduler = training.make_scheduler(optimizer, config, steps_per_epoch=10)
    learning_rates = []
    for _ in range(20):
        learning_rates.append(optimizer.param_groups[0]["lr"])  # the rate this batch trains with
        optimizer.step()
        scheduler.step()
    assert max(learning_rates) == pytest.approx(config.lr, rel=0.05)
    assert learning_rates[-1] < config.lr / 1000
    assert optimizer.param_groups[0]["momentum"] == config.momentum  # onecycle leaves momentum alone


@pytest.mark.parametrize("tta_flip", [False, True])
def test_evaluate_matches_a_direct_computation(tiny, tta_flip):
    _, _, images, labels = tiny
    model = fresh_model().eval()
    result = evaluate(model, images, labels, batch_size=16, tta_flip=tta_flip)
    with torch.no_grad():
        inputs = normalize(images)
        probabilities = F.softmax(model(inputs), dim=1)
        if tta_flip:
            probabilities = (probabilities + F.softmax(model(inputs.flip(3)), dim=1)) / 2
    predictions = probabilities.argmax(dim=1)
    assert result.accuracy == pytest.approx((predictions == labels).float().mean().item())
    assert result.loss == pytest.approx(F.nll_loss(probabilities.log(), labels).item(), rel=1e-4)
    assert result.confusion.dtype == torch.int64 and result.confusion.shape == (10, 10)
    assert result.confusion.sum() == len(labels)
    assert torch.equal(result.confusion.sum(dim=1), torch.bincount(labels, minlength=10))
    assert result.confusion[3, 5] == ((labels == 3) & (predictions == 5)).sum()
    torch.testing.assert_close(result.per_class_accuracy, result.confusion.diagonal() / result.confusion.sum(dim=1))


def test_evaluate_with_shifts_averages_the_softmax_of_every_view(tiny):
    _, _, images, labels = tiny
    model = fresh_model().eval()
    shifts = [(1, 1), (-1, -1), (1, 1), (0, 0)]  # a repeated shift and (0, 0) count once
    result = evaluate(model, images, labels, batch_size=16, tta_flip=True, tta_shifts=shifts)
    with torch.no_grad():
        views = [images, shift(images, 1, 1), shift(images, -1, -1)]
        views += [view.flip(3) for view in views]
        probabilities = torch.stack([F.softmax(model(normalize(view)), dim=1) for view in views]).mean(0)
    predictions = probabilities.argmax(dim=1)
    assert result.accuracy == pytest.approx((predictions == labels).float().mean().item())
    assert result.loss == pytest.approx(F.nll_loss(probabilities.log(), labels).item(), rel=1e-4)
    assert torch.equal(result.confusion.diagonal().sum(), (predictions == labels).sum())


@pytest.mark.parametrize("shifts, message", [([(1,)], "pairs of ints"), ([(0, 32)], "right must be an int"),
                                             ([(0.5, 0)], "down must be an int"), ([3], "pairs of ints")])
def test_evaluate_refuses_bad_shifts_before_running_the_model(tiny, shifts, message):
    _, _, images, labels = tiny
    model = fresh_model()
    calls = []
    model.register_forward_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=message):
        evaluate(model, images, labels, tta_shifts=shifts)
    assert not calls


def test_evaluate_views_reports_each_test_time_augmentation(tiny):
    _, _, images, labels = tiny
    model = fresh_model().eval()
    results = evaluate_views(model, images, labels)
    assert list(results) == ["single view", "flips", "10 views"]
    for name, options in training.TEST_TIME_VIEWS.items():
        expected = evaluate(model, images, labels, **options)
        assert results[name].accuracy == expected.accuracy
        assert torch.equal(results[name].confusion, expected.confusion)
    assert training.TEST_TIME_VIEWS["10 views"]["tta_shifts"] == training.TTA_SHIFTS


def test_accuracy_table_has_a_column_per_evaluation_and_a_row_per_class():
    confusion = torch.diag(torch.arange(1, 11)) + 1  # class k: k + 1 right out of k + 10
    per_class = confusion.diagonal() / confusion.sum(dim=1)
    evaluation = training.Evaluation(accuracy=0.125, per_class_accuracy=per_class, confusion=confusion, loss=1.0)
    perfect = training.Evaluation(accuracy=1.0, per_class_accuracy=torch.ones(10), confusion=confusion, loss=0.0)
    lines = accuracy_table({"image": evaluation, "a longer name": perfect}, CLASSES).splitlines()
    assert lines[0].split() == ["class", "image", "a", "longer", "name"]
    assert lines[1].split() == ["all", "12.50%", "100.00%"]
    assert [line.split()[0] for line in lines[2:]] == list(CLASSES)
    assert lines[2].split()[1:] == [f"{2 / 11:.1%}", "100.0%"]
    assert lines[-1].split()[1:] == [f"{11 / 20:.1%}", "100.0%"]
    assert len({len(line) for line in lines}) == 1  # the columns line up
    with pytest.raises(ValueError, match="'image' has 10 per-class accuracies, but classes has 3 names"):
        accuracy_table({"image": evaluation}, CLASSES[:3])


def test_history_and_plots(tiny):
    first = History(train_loss=[2.0, 1.5], train_accuracy=[0.2, 0.4], val_loss=[1.9, 1.6],
                    val_accuracy=[0.25, 0.35], lr=[0.1, 0.1], seconds=[1.0, 1.0], status="completed")
    diverged = History(status="diverged", message="non-finite training loss in epoch 1")
    figure = plot_curves({"sgd": first, "adam": diverged.to_dict()})
    loss_axes, accuracy_axes = figure.axes
    assert loss_axes.get_xlabel() == "epoch" and "loss" in loss_axes.get_title().lower()
    labels = [text.get_text() for text in accuracy_axes.get_legend().get_texts()]
    assert "sgd: train" in labels and "sgd: validation" in labels and "adam (diverged): train" in labels
    figure.savefig(io.BytesIO(), format="png")

    config = quick_config()
    results = [
        sweep_record(config, first),
        sweep_record(quick_config(lr=10.0), diverged),
        sweep_record(quick_config(batch_size=64, optimizer="adam"), first),
    ]
    figure = plot_sweep(results)
    texts = [text.get_text() for axes in figure.axes for text in axes.texts]
    assert "diverged" in texts and "35.0%" in texts
    assert [axes.get_title() for axes in figure.axes[:2]] == ["adam: best validation accuracy", "sgd: best validation accuracy"]
    table = sweep_table(results).splitlines()
    assert "35.0%" in table[2] and "diverged" in table[-1]

    confusion = torch.arange(100).reshape(10, 10)
    figure = plot_confusion(confusion, CLASSES)
    axes = figure.axes[0]
    assert axes.get_xlabel() == "predicted class" and axes.get_ylabel() == "true class"
    assert [label.get_text() for label in axes.get_yticklabels()] == list(CLASSES)
    with pytest.raises(ValueError, match="one row per class"):
        plot_confusion(confusion[:3], CLASSES)


def test_feature_map_plots_and_summary(tiny):
    maps = feature_maps(fresh_model("plain"), tiny[0][0])
    figure = plot_feature_maps(maps, max_channels=4)
    assert len(figure.axes) == 8 * 4 and figure.axes[0].get_ylabel().startswith("conv1")
    assert "raw channels" in figure._suptitle.get_text()
    figure = plot_mean_abs_maps(maps)
    assert [axes.get_title().split("\n")[0] for axes in figure.axes[:8]] == list(maps)
    rows = feature_map_summary(maps)
    assert [row["layer"] for row in rows] == list(maps)
    assert rows[0]["shape"] == [16, 32, 32] and rows[-1]["shape"] == [128, 4, 4]
    assert all(0.0 <= row["zero_fraction"] <= 1.0 and row["mean"] >= 0 for row in rows)  # after ReLU
    table = format_feature_map_summary(rows)
    assert table.splitlines()[0].split() == ["layer", "shape", "mean", "std", "zeros"]
    assert len(table.splitlines()) == 2 + 8


# --- device and precision chosen by the machine ------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected", "why"),
    [({"avx2", "avx512_bf16"}, "bfloat16", "AVX512-BF16"), ({"avx2", "amx_bf16", "amx_tile"}, "bfloat16", "AMX-BF16"),
     ({"avx2", "avx512f"}, "float32", "neither AVX512-BF16 nor AMX-BF16")],
)
def test_choose_precision_on_the_cpu_follows_its_bfloat16_instructions(monkeypatch, flags, expected, why):
    monkeypatch.setattr(training, "_cpu_flags", lambda: flags)
    precision, reason = training.choose_precision("cpu")
    assert precision == expected and reason.startswith(f"{expected}: ") and why in reason
    assert "\n" not in reason


@pytest.mark.parametrize(("native", "expected"), [(True, "bfloat16"), (False, "float32")])
def test_choose_precision_on_a_gpu_asks_torch_for_native_bfloat16(monkeypatch, native, expected):
    asked = []

    def is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return native

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    precision, reason = training.choose_precision("cuda")
    assert precision == expected and reason.startswith(f"{expected}: the Test GPU")
    assert asked == [False]  # emulated bfloat16 is slower than float32: it does not count


def test_choose_device_takes_the_gpu_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    device, reason = training.choose_device()
    assert device == torch.device("cpu") and reason.startswith("cpu (")
    assert training.default_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    device, reason = training.choose_device()
    assert device == torch.device("cuda") and reason.startswith("cuda: Test GPU")


def test_the_real_cpu_flags_are_read():
    flags = training._cpu_flags()
    assert isinstance(flags, set)
    if flags:  # a CPU that torch or /proc/cpuinfo describes: the answer matches its flags
        native = bool({"avx512_bf16", "amx_bf16"} & flags)
        assert training.choose_precision("cpu")[0] == ("bfloat16" if native else "float32")


def test_ctrl_c_during_training_says_which_epoch_and_what_is_saved(tiny, tmp_path):
    model = fresh_model()
    forward_calls = []

    def interrupt_in_the_second_epoch(module, inputs, output):
        forward_calls.append(1)
        if len(forward_calls) == 5 + 1 + 2:  # epoch 1: 5 training batches, 1 validation batch
            raise KeyboardInterrupt

    model.register_forward_hook(interrupt_in_the_second_epoch)
    with pytest.raises(training.TrainingInterrupted) as raised:
        run(model, quick_config(epochs=3), *tiny, run_dir=tmp_path)
    interrupt = raised.value
    assert isinstance(interrupt, KeyboardInterrupt)
    assert (interrupt.epoch, interrupt.epochs, interrupt.saved_epochs) == (2, 3, 1)
    assert str(interrupt) == (f"training interrupted in epoch 2 of 3; 1 completed epochs are saved in {tmp_path}: "
                              "resume=True continues from there")
    assert training.check_resume(tmp_path, quick_config(epochs=3)) == 1


@pytest.mark.parametrize(("content", "problem"), [(b"", "the file is empty"),
                                                  (b"PK\x03\x04 not really a zip", "it is truncated or corrupted")])
def test_an_unreadable_checkpoint_names_the_file_and_never_suggests_weights_only_false(tiny, tmp_path,
                                                                                       content, problem):
    (tmp_path / "checkpoint.pt").write_bytes(content)
    with pytest.raises(training.CheckpointError) as raised:
        run(fresh_model(), quick_config(epochs=1), *tiny, run_dir=tmp_path, resume=True)
    message = str(raised.value)
    assert message.startswith(f"cannot read the checkpoint {tmp_path / 'checkpoint.pt'}: {problem}")
    assert "weights_only" not in message and "delete it" in message


def test_check_resume_refuses_other_model_settings_before_any_work(tiny, tmp_path):
    config = quick_config(epochs=1)
    assert training.check_resume(tmp_path, config) is None  # nothing saved: a fresh start
    run(fresh_model("plain"), config, *tiny, run_dir=tmp_path, model_settings={"model": "plain"})
    assert training.check_resume(tmp_path, config, model_settings={"model": "plain"}) == 1
    with pytest.raises(training.ResumeMismatch) as raised:
        training.check_resume(tmp_path, config, model_settings={"model": "bn"})
    assert raised.value.differences == {"model": ("plain", "bn")}
    with pytest.raises(training.ResumeMismatch, match=r"different config \(model: saved 'plain', given 'bn'\)"):
        run(fresh_model("bn"), config, *tiny, run_dir=tmp_path, resume=True, model_settings={"model": "bn"})
