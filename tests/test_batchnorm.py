"""helpers.batchnorm's measurements, with torch's own batch norm as the oracle; and the Q2b plots."""

import copy
import io

import matplotlib
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helpers import batchnorm
from helpers.data import Batches, normalize
from helpers.models import build_model
from helpers.plots import history_table, plot_running_statistics
from helpers.training import History, evaluate
from support import needs_scratch_ops

matplotlib.use("Agg")


pytestmark = pytest.mark.usefixtures("one_thread")


def bn_net(affine=False, seed=0):
    """The bn net with non-trivial running statistics (and affine parameters, if any)."""
    torch.manual_seed(seed)
    model = build_model("bn", affine=affine)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(0.0, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                if affine:
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.5, 0.5)
    return model


def images(count, seed=0, size=16):
    """Random uint8 images (16x16: the nets take any size divisible by 8, and small is fast)."""
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def states_equal(first, second):
    return first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)




# ------------------------------------------------------------------------------------------------


def test_channel_moments_are_the_biased_statistics_over_all_but_the_channel_axis():
    tensor = torch.randn(4, 3, 5, 6) * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1)
    mean, var = batchnorm.channel_moments(tensor)
    expected_var, expected_mean = torch.var_mean(tensor.double(), dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(var, expected_var)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        batchnorm.channel_moments(torch.randn(5))


def test_get_layer_names_the_choices():
    model = bn_net()
    assert batchnorm.get_layer(model, "bn3", nn.BatchNorm2d) is model.bn3
    with pytest.raises(ValueError, match=r"layer_name must name a BatchNorm2d.*'bn1'.*got 'conv1'"):
        batchnorm.get_layer(model, "conv1", nn.BatchNorm2d)


def test_layer_input_output_stops_after_the_layer_and_leaves_the_model_alone():
    model = bn_net().eval()
    before = copy.deepcopy(model.state_dict())
    inputs = normalize(images(5))
    layer_input, layer_output = batchnorm.layer_input_output(model, "bn2", inputs, training=True)
    with torch.no_grad():
        expected_input = model.relu2(model.conv2(model.bn1.train()(model.relu1(model.conv1(inputs)))))
        model.load_state_dict(before)
        expected_output = F.batch_norm(expected_input, None, None, training=True)
    torch.testing.assert_close(layer_input, expected_input)
    torch.testing.assert_close(layer_output, expected_output)
    model.eval()
    assert states_equal(model.state_dict(), before)
    eval_input, eval_output = batchnorm.layer_input_output(model, "bn2", inputs, training=False)
    with torch.no_grad():
        torch.testing.assert_close(eval_output, model.bn2(eval_input))
    assert not model.training and states_equal(model.state_dict(), before)


@pytest.mark.parametrize("affine", [False, True])
def test_normalisation_statistics_match_torch_batch_norm(affine):
    model = bn_net(affine=affine)
    inputs = normalize(images(6))
    statistics = batchnorm.normalisation_statistics(model, "bn3", inputs)
    layer_input, _ = batchnorm.layer_input_output(model, "bn3", inputs)
    oracle = F.batch_norm(layer_input.double(), None, None, training=True, eps=model.bn3.eps)
    oracle_mean, oracle_var = batchnorm.channel_moments(oracle)
    torch.testing.assert_close(statistics["normalised_mean"], oracle_mean, atol=1e-6, rtol=0)
    torch.testing.assert_close(statistics["normalised_var"], oracle_var, atol=1e-5, rtol=0)
    torch.testing.assert_close(statistics["normalised_var"], statistics["expected_var"], atol=1e-5, rtol=0)
    assert statistics["normalised_mean"].abs().max() < 1e-5
    if affine:
        torch.testing.assert_close(statistics["output_mean"], statistics["bias"], atol=1e-5, rtol=0)
        torch.testing.assert_close(statistics["output_var"], statistics["weight"] ** 2 * oracle_var, atol=1e-4, rtol=1e-4)
    else:
        assert statistics["weight"] is None and statistics["bias"] is None
    table = batchnorm.format_normalisation_statistics(statistics, channels=3)
    assert table.splitlines()[0].split()[:5] == ["channel", "input", "mean", "input", "var"]
    assert "over all 32 channels" in table and ("gamma * x_hat + beta" in table) == affine
    with pytest.raises(ValueError, match="channels must be a positive int"):
        batchnorm.format_normalisation_statistics(statistics, channels=0)


def test_layer_input_moments_are_those_of_the_whole_data():
    model = bn_net()
    data = images(50, seed=1)
    moments = batchnorm.layer_input_moments(model, "bn1", Batches(data, torch.zeros(50, dtype=torch.int64), 16))
    with torch.no_grad():
        expected = batchnorm.channel_moments(model.relu1(model.conv1(normalize(data))))
    torch.testing.assert_close(moments, expected, atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="batches is empty"):
        batchnorm.layer_input_moments(model, "bn1", [])


def test_track_running_statistics_follows_torch_batch_norm_step_by_step():
    model = bn_net()
    before = copy.deepcopy(model.state_dict())
    batches = [normalize(images(4, seed=seed)) for seed in range(5)]
    trace = batchnorm.track_running_statistics(model, "bn2", iter(batches), steps=5)
    assert states_equal(model.state_dict(), before)
    oracle = copy.deepcopy(model).train()
    oracle.bn2.reset_running_stats()
    torch.testing.assert_close(trace["mean"][0], torch.zeros(16, dtype=torch.float64))
    torch.testing.assert_close(trace["var"][0], torch.ones(16, dtype=torch.float64))
    with torch.no_grad():
        for step, inputs in enumerate(batches, start=1):
            oracle(inputs)
            torch.testing.assert_close(trace["mean"][step], oracle.bn2.running_mean.double())
            torch.testing.assert_close(trace["var"][step], oracle.bn2.running_var.double())
    with pytest.raises(ValueError, match="batches ran out after 5 batches"):
        batchnorm.track_running_statistics(model, "bn2", iter(batches), steps=6)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        batchnorm.track_running_statistics(model, "bn2", iter(batches), steps=0)


def test_repeat_epochs_reshuffles_each_epoch():
    data = Batches(images(6), torch.arange(6), 3, shuffle=True, seed=0)
    repeated = batchnorm.repeat_epochs(data)
    labels = [next(repeated)[1] for _ in range(6)]
    first, second, third = (torch.cat(labels[i : i + 2]) for i in (0, 2, 4))
    assert all(sorted(epoch.tolist()) == list(range(6)) for epoch in (first, second, third))
    assert not (torch.equal(first, second) and torch.equal(second, third))


def test_running_gap_table_predicts_the_exponential_approach():
    target_mean, target_var = torch.tensor([2.0, -1.0]).double(), torch.tensor([3.0, 0.5]).double()
    # the noiseless update: every batch has exactly the target statistics
    means, variances = [torch.zeros(2).double()], [torch.ones(2).double()]
    for _ in range(20):
        means.append(0.9 * means[-1] + 0.1 * target_mean)
        variances.append(0.9 * variances[-1] + 0.1 * target_var)
    trace = {"mean": torch.stack(means), "var": torch.stack(variances)}
    rows = batchnorm.running_gap_table(trace, target_mean, target_var, at_steps=(0, 10, 20, 50))
    assert [row["step"] for row in rows] == [0, 10, 20]  # step 50 lies beyond the trace
    for row in rows:
        assert row["mean_gap"] == pytest.approx(row["predicted_mean_gap"])
        assert row["var_gap"] == pytest.approx(row["predicted_var_gap"])
        assert row["mean_gap"] == pytest.approx(2.0 * 0.9 ** row["step"])
    assert len(batchnorm.format_running_gap_table(rows).splitlines()) == 2 + 3


@pytest.mark.parametrize("affine", [False, True])
def test_variance_conventions_biased_for_normalising_unbiased_for_the_running_var(affine):
    layer = bn_net(affine=affine).bn8
    before = layer.running_var.clone()
    inputs = torch.randn(2, 128, 2, 2) * 3 + 1  # n = 8 values per channel: n / (n - 1) = 8 / 7
    result = batchnorm.variance_conventions(layer, inputs)
    assert result["count"] == 8
    torch.testing.assert_close(result["running_var"], result["if_unbiased"], atol=1e-6, rtol=1e-6)
    assert (result["running_var"] - result["if_biased"]).abs().min() > 1e-3
    torch.testing.assert_close(result["output_var"], torch.ones(128, dtype=torch.float64), atol=1e-4, rtol=0)
    assert torch.equal(layer.running_var, before)  # measured on a copy
    with pytest.raises(ValueError, match="BatchNorm2d that tracks running statistics"):
        batchnorm.variance_conventions(nn.Conv2d(1, 1, 1), inputs)


def test_batch_dependence_none_in_eval_mode_some_in_training_mode():
    model = bn_net()
    before = copy.deepcopy(model.state_dict())
    sample = normalize(images(1, seed=3))[0]
    result = batchnorm.batch_dependence(model, sample, normalize(images(7, seed=4)), normalize(images(3, seed=5) // 4))
    assert result["eval"]["max_abs_difference"] < 1e-5
    assert result["train"]["max_abs_difference"] > 1e-3
    with torch.no_grad():
        torch.testing.assert_close(result["eval"]["logits_a"], model.eval()(sample[None])[0], atol=1e-5, rtol=1e-5)
    assert states_equal(model.state_dict(), before)
    with pytest.raises(ValueError, match="sample must be one input"):
        batchnorm.batch_dependence(model, sample[None], sample[None], sample[None])
    with pytest.raises(ValueError, match=r"batch_b must be a batch \[B, 3, 16, 16\]"):
        batchnorm.batch_dependence(model, sample, sample[None], sample)


def test_accuracy_in_mode_agrees_with_evaluate_and_with_a_direct_training_mode_pass():
    model = bn_net()
    before = copy.deepcopy(model.state_dict())
    data, labels = images(24, seed=6), torch.arange(24) % 10
    assert batchnorm.accuracy_in_mode(model, data, labels, 8, training=False) == pytest.approx(
        evaluate(model, data, labels).accuracy
    )
    oracle = copy.deepcopy(model).train()
    with torch.no_grad():
        predictions = torch.cat([oracle(normalize(data[i : i + 8])).argmax(1) for i in range(0, 24, 8)])
    assert batchnorm.accuracy_in_mode(model, data, labels, 8, training=True) == pytest.approx(
        (predictions == labels).double().mean().item()
    )
    assert states_equal(model.state_dict(), before)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        batchnorm.accuracy_in_mode(model, data, labels, 0, training=True)


def test_forgot_eval_pass_overwrites_the_running_statistics_of_a_copy():
    model = bn_net()
    before = copy.deepcopy(model.state_dict())
    data = images(12, seed=7)
    forgot = batchnorm.forgot_eval_pass(model, data, batch_size=4)
    oracle = copy.deepcopy(model).train()
    with torch.no_grad():
        for start in range(0, 12, 4):
            oracle(normalize(data[start : start + 4]))
    assert not forgot.training
    assert states_equal(forgot.state_dict(), oracle.state_dict())
    assert not torch.equal(forgot.bn1.running_mean, model.bn1.running_mean)
    assert states_equal(model.state_dict(), before)


def test_compare_training_of_a_net_with_itself_is_exact_and_a_different_net_is_caught():
    model = bn_net(affine=True)
    batches = [(normalize(images(4, seed=seed)), torch.arange(4)) for seed in range(3)]
    rows = batchnorm.compare_training(model, copy.deepcopy(model), iter(batches), steps=3)
    assert [row["step"] for row in rows] == [1, 2, 3]
    assert all(row[key] == 0.0 for row in rows for key in ("output", "running_mean", "running_var", "weight"))
    assert batchnorm.check_training_comparison(rows).startswith("OK: over 3 steps")
    assert len(batchnorm.format_training_comparison(rows).splitlines()) == 2 + 3

    different = copy.deepcopy(model)
    for module in different.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.2  # a batch norm that updates its running statistics differently
    rows = batchnorm.compare_training(model, different, iter(batches), steps=2)
    assert rows[0]["running_mean"] > 1e-3 and rows[0]["output"] == 0.0
    with pytest.raises(AssertionError, match="differ by more than 0.001 in running_mean, running_var"):
        batchnorm.check_training_comparison(rows)
    with pytest.raises(ValueError, match="rows is empty"):
        batchnorm.check_training_comparison([])
    with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
        batchnorm.compare_training(model, model, iter(batches), steps=1, dtype=torch.float16)


def test_compare_training_synchronised_measures_each_step_alone():
    """With synchronise, the candidate restarts each step from the reference's state: a difference made
    in step 1 (here, a momentum-0.2 batch norm's running statistics) does not carry into step 2."""
    model = bn_net(affine=True)
    batches = [(normalize(images(4, seed=seed)), torch.arange(4)) for seed in range(3)]
    different = copy.deepcopy(model)
    for module in different.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 0.2
    free = batchnorm.compare_training(model, different, iter(batches), steps=3, lr=0.1)
    synchronised = batchnorm.compare_training(model, different, iter(batches), steps=3, lr=0.1, synchronise=True)
    # step 1 is the same either way; afterwards the free-running pair carries step 1's running
    # statistics along, while the synchronised one restarts from the reference's
    assert synchronised[0] == free[0]
    assert all(row["output"] == 0.0 and row["weight"] == 0.0 for row in synchronised)
    assert free[2]["running_mean"] > 1.5 * synchronised[2]["running_mean"] > 0


@needs_scratch_ops
def test_the_scratch_net_trains_like_the_torch_net_in_float64():
    torch.manual_seed(0)
    reference = build_model("bn", affine=True)
    scratch = build_model("bn", affine=True, ops="scratch")
    batches = [(normalize(images(4, seed=seed)), torch.arange(4)) for seed in range(2)]
    rows = batchnorm.compare_training(reference, scratch, iter(batches), steps=2, lr=0.1, dtype=torch.float64)
    assert batchnorm.check_training_comparison(rows, tolerance=1e-9).startswith("OK")


def test_plot_running_statistics_draws_each_channel_and_its_target():
    trace = {"mean": torch.rand(11, 4).double(), "var": torch.rand(11, 4).double()}
    figure = plot_running_statistics(trace, torch.rand(4), torch.rand(4), channels=[0, 2], layer_name="bn1")
    mean_axes, var_axes = figure.axes
    assert mean_axes.get_title() == "bn1 running_mean (momentum 0.1)"
    assert var_axes.get_ylabel() == "running_var" and "step" in var_axes.get_xlabel()
    labels = [text.get_text() for text in mean_axes.get_legend().get_texts()]
    assert labels == ["channel 0", "channel 2", "statistic of the whole training set"]
    assert len(mean_axes.lines) == 2 * 2 + 1  # a curve and a target line per channel, the legend's entry
    figure.savefig(io.BytesIO(), format="png")
    with pytest.raises(ValueError, match=r"channels must be a non-empty list of channel indices in \[0, 4\)"):
        plot_running_statistics(trace, torch.rand(4), torch.rand(4), channels=[4])


def test_history_table_marks_diverged_runs():
    completed = History(train_loss=[2.0, 1.25], train_accuracy=[0.2, 0.5], val_loss=[1.9, 1.3],
                        val_accuracy=[0.3, 0.45], lr=[0.1, 0.1], seconds=[1.0, 1.0], status="completed")
    diverged = History(status="diverged", message="non-finite training loss in epoch 1")
    lines = history_table({"bn": completed, "plain": diverged.to_dict()}).splitlines()
    assert lines[0].split() == ["run", "status", "epochs", "train", "loss", "train", "acc", "val", "acc", "best", "val"]
    assert lines[2].split() == ["bn", "completed", "2", "1.25", "50.0%", "45.0%", "45.0%"]
    assert lines[3].split() == ["plain", "diverged", "0", "n/a", "n/a", "n/a", "n/a"]
    assert lines[4].strip() == "(non-finite training loss in epoch 1)"


def test_rescaling_a_convolution_changes_nothing_behind_a_batch_norm_but_the_gradient():
    inputs, labels = normalize(images(8, seed=8, size=32)), torch.arange(8)  # the plain net needs 32x32
    torch.manual_seed(0)
    with_bn = batchnorm.rescaling_effect(build_model("bn"), "conv3", 10.0, inputs, labels)
    assert with_bn["logits_change"] < 1e-3 * with_bn["max_abs_logits"]
    assert with_bn["gradient_ratio"] == pytest.approx(0.1, rel=1e-3)
    torch.manual_seed(0)
    plain = batchnorm.rescaling_effect(build_model("plain"), "conv3", 10.0, inputs, labels)
    assert plain["logits_change"] == pytest.approx(9 * plain["max_abs_logits"], rel=1e-3)  # the logits scale by 10
    with pytest.raises(ValueError, match="factor must be a positive number"):
        batchnorm.rescaling_effect(build_model("plain"), "conv3", 0, inputs, labels)


def test_plot_curves_can_draw_the_loss_on_a_log_scale():
    from helpers.plots import plot_curves

    exploding = History(train_loss=[2.3, 4e4], train_accuracy=[0.1, 0.1], val_loss=[2.3, 5e4],
                        val_accuracy=[0.1, 0.1], lr=[0.5, 0.5], seconds=[1.0, 1.0], status="completed")
    loss_axes, accuracy_axes = plot_curves({"plain": exploding}, log_loss=True).axes
    assert loss_axes.get_yscale() == "log" and "log scale" in loss_axes.get_ylabel()
    assert accuracy_axes.get_yscale() == "linear"
    assert plot_curves({"plain": exploding}).axes[0].get_yscale() == "linear"
