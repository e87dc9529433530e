"""The assignment's nets: parameter counts, the summary table, shapes, the from-scratch variant."""

import sys
import types

import pytest
import torch
from torch.nn import functional as F

import helpers

from helpers.models import build_model, count_parameters, make_bn_cnn, make_plain_cnn, summary_table
from support import needs_scratch_ops

CONV_NAMES = [f"conv{index}" for index in range(1, 9)]




@pytest.mark.parametrize(
    ("name", "affine", "expected"),
    [("plain", False, 294_810), ("bn", False, 294_810), ("bn", True, 295_770)],
)
def test_parameter_counts(name, affine, expected):
    assert count_parameters(build_model(name, affine=affine)) == expected


def test_make_functions_build_the_same_nets():
    assert str(make_plain_cnn()) == str(build_model("plain"))
    assert str(make_bn_cnn(affine=True)) == str(build_model("bn", affine=True))


def test_plain_summary_table_lists_the_layers_and_the_total():
    table = summary_table(build_model("plain"))
    assert "Total params: 294,810" in table
    assert "Trainable params: 294,810" in table
    for layer in ("Conv2d-1", "ReLU-2", "MaxPool2d-5", "AvgPool2d-20", "Flatten-21", "Linear-22"):
        assert layer in table
    assert table.count("Conv2d-") == 8 and "BatchNorm2d" not in table
    assert "[-1, 10]" in table and "[-1, 128, 4, 4]" in table
    # the sizes of the assignment's Q2a table
    assert "Forward/backward pass size (MB): 0.99" in table
    assert "Estimated Total Size (MB): 2.13" in table


def test_bn_summary_table_counts_the_batch_norms():
    table = summary_table(build_model("bn"))
    assert "Total params: 294,810" in table
    assert table.count("BatchNorm2d-") == 8
    # the layers and sizes of the assignment's Q2b table
    assert "AdaptiveAvgPool2d-28" in table and "Linear-30" in table
    assert "Forward/backward pass size (MB): 1.46" in table
    assert "Estimated Total Size (MB): 2.60" in table
    assert "Total params: 295,770" in summary_table(build_model("bn", affine=True))


@needs_scratch_ops
@pytest.mark.parametrize("name", ["plain", "bn"])
def test_scratch_summary_table_has_the_torch_table_s_shapes(name):
    """Same rows, shapes and parameter counts; only the layer names say Scratch."""
    def rows(table):
        return [line.replace("Scratch", "").split() for line in table.splitlines()]

    table = summary_table(build_model(name))
    scratch_table = summary_table(build_model(name, ops="scratch"))
    assert rows(scratch_table) == rows(table)
    average_pool = "ScratchAvgPool2d-20" if name == "plain" else "ScratchAdaptiveAvgPool2d-28"
    assert average_pool in scratch_table


def test_summary_table_leaves_the_model_untouched():
    model = build_model("bn")
    before = {name: value.clone() for name, value in model.state_dict().items()}
    summary_table(model)
    after = model.state_dict()
    assert all(torch.equal(before[name], after[name]) for name in before)


@pytest.mark.parametrize("name", ["plain", "bn"])
def test_output_shape_in_both_memory_formats(name):
    model = build_model(name).eval()
    images = torch.randn(5, 3, 32, 32)
    logits = model(images)
    assert logits.shape == (5, 10)
    channels_last = model.to(memory_format=torch.channels_last)(images.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(channels_last, logits, rtol=1e-4, atol=1e-5)


def test_bn_net_puts_a_batch_norm_after_every_relu():
    names = [name for name, _ in build_model("bn").named_children()]
    for index in range(1, 9):
        assert names.index(f"bn{index}") == names.index(f"relu{index}") + 1 == names.index(f"conv{index}") + 2
    batch_norms = [module for module in build_model("bn").modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert len(batch_norms) == 8 and all(not module.affine for module in batch_norms)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "resnet"}, "name must be one of"),
        ({"name": "plain", "affine": True}, "affine=True only applies"),
        ({"name": "bn", "affine": 1}, "affine must be a bool"),
        ({"name": "bn", "ops": "numpy"}, "ops must be one of"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        build_model(**kwargs)


@needs_scratch_ops
def test_scratch_net_matches_the_torch_net():
    """The bn net with affine batch norms uses every scratch layer (the Q1 ops are slow: small images)."""
    torch.manual_seed(0)
    reference = build_model("bn", affine=True)
    torch.manual_seed(0)
    scratch = build_model("bn", affine=True, ops="scratch")
    assert list(scratch.state_dict()) == list(reference.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(scratch.state_dict().values(), reference.state_dict().values()))
    images = torch.randn(2, 3, 16, 16)
    for train_mode in (True, False):  # training mode also updates the batch-norm running statistics
        reference.train(train_mode)
        scratch.train(train_mode)
        torch.testing.assert_close(scratch(images), reference(images), rtol=1e-4, atol=1e-4)
    for (key, ours), theirs in zip(scratch.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5, msg=key)
    scratch.train()
    reference.train()
    scratch(images).square().sum().backward()
    reference(images).square().sum().backward()
    for (key, ours), theirs in zip(scratch.named_parameters(), reference.parameters()):
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-3, atol=1e-4, msg=key)


def test_scratch_layers_call_helpers_ops_with_torch_arguments(monkeypatch):
    """With torch's own functions standing in for the Q1 ops, the scratch net is the torch net exactly."""
    calls = []

    def recorded(function):
        def wrapper(*args, **kwargs):
            calls.append(function.__name__)
            return function(*args, **kwargs)

        return wrapper

    stand_in = types.ModuleType("helpers.ops")
    stand_in.conv2d, stand_in.max_pool2d = recorded(F.conv2d), recorded(F.max_pool2d)
    stand_in.batch_norm, stand_in.flatten = recorded(F.batch_norm), recorded(torch.flatten)
    stand_in.avg_pool2d = recorded(F.avg_pool2d)
    monkeypatch.setitem(sys.modules, "helpers.ops", stand_in)
    monkeypatch.setattr(helpers, "ops", stand_in, raising=False)
    torch.manual_seed(0)
    reference = build_model("bn", affine=True)
    torch.manual_seed(0)
    scratch = build_model("bn", affine=True, ops="scratch")
    images = torch.randn(3, 3, 32, 32)
    # exact but for the global average: F.avg_pool2d over the whole 4x4 plane sums in another order
    # than F.adaptive_avg_pool2d (the plain net below, AvgPool2d both ways, is exact)
    close = dict(rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(scratch(images), reference(images), **close)
    assert sorted(set(calls)) == ["avg_pool2d", "batch_norm", "conv2d", "flatten", "max_pool2d"]
    assert calls.count("conv2d") == 8 and calls.count("batch_norm") == 8 and calls.count("max_pool2d") == 3
    assert calls.count("avg_pool2d") == 1
    assert all(torch.equal(a, b) for a, b in zip(scratch.state_dict().values(), reference.state_dict().values()))
    scratch.eval()
    reference.eval()
    torch.testing.assert_close(scratch(images), reference(images), **close)
    calls.clear()
    torch.manual_seed(0)
    plain_reference = build_model("plain")
    torch.manual_seed(0)
    plain_scratch = build_model("plain", ops="scratch")
    torch.testing.assert_close(plain_scratch(images), plain_reference(images), rtol=0, atol=0)
    assert sorted(set(calls)) == ["avg_pool2d", "conv2d", "flatten", "max_pool2d"]


def test_scratch_net_without_the_ops_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "helpers.ops", types.ModuleType("helpers.ops"))
    monkeypatch.setattr(helpers, "ops", sys.modules["helpers.ops"], raising=False)
    with pytest.raises(ImportError, match=r"helpers.ops defines no conv2d\(\)"):
        build_model("plain", ops="scratch")


@needs_scratch_ops
def test_a_checkpoint_loads_into_either_variant():
    reference = build_model("bn", affine=True)
    scratch = build_model("bn", affine=True, ops="scratch")
    scratch.load_state_dict(reference.state_dict())
    reference.load_state_dict(scratch.state_dict())
    images = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(scratch.eval()(images), reference.eval()(images), rtol=1e-4, atol=1e-4)


def test_feature_maps_are_taken_after_relu_and_after_batch_norm():
    from helpers.plots import feature_maps

    torch.manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    for name in ("plain", "bn"):
        model = build_model(name).train()
        maps = feature_maps(model, image)
        assert model.training  # mode restored
        assert list(maps) == CONV_NAMES
        assert [tuple(activation.shape) for activation in maps.values()] == [
            (16, 32, 32), (16, 32, 32), (32, 16, 16), (32, 16, 16), (64, 8, 8), (64, 8, 8), (128, 4, 4), (128, 4, 4)
        ]
        from helpers.data import normalize

        with torch.no_grad():
            block = [model.conv1, model.relu1] + ([model.bn1] if name == "bn" else [])
            expected = torch.nn.Sequential(*block).eval()(normalize(image[None]))[0]
        torch.testing.assert_close(maps["conv1"], expected)
        if name == "plain":
            assert all(activation.min() >= 0 for activation in maps.values())


def test_he_initialisation_keeps_the_signal_through_eight_relu_convolutions():
    torch.manual_seed(0)
    model = build_model("plain")
    activation = torch.randn(64, 3, 32, 32)
    with torch.no_grad():
        for name, module in model.named_children():
            activation = module(activation)
            if name == "relu8":
                break
    # He initialisation leaves a std of about 0.12 here (input: 1); torch's default initialisation
    # about 0.012, ten times less, as the signal shrinks at every layer
    assert 0.05 < activation.std().item() < 5.0
