"""flatten, sigmoid and batch_norm beyond the generic sweeps: signatures, views, extremes, running statistics."""

import inspect
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import ops
from helpers.checks import RecordOperators


def _parameters(function):
    """(name, default, kind) of each parameter: what a drop-in must reproduce (annotations aside)."""
    return [(p.name, p.default, p.kind) for p in inspect.signature(function).parameters.values()]


def _double(*shape, generator=None, scale=1.0, offset=0.0):
    return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale + offset




# ----------------------------------------------------------------------------------------- flatten


def test_flatten_signature_is_torchs():
    # torch.flatten is a builtin without an inspectable signature: its docstring states it.
    assert torch.flatten.__doc__.lstrip().startswith("flatten(input, start_dim=0, end_dim=-1)")
    assert str(inspect.signature(ops.flatten)) == "(input, start_dim=0, end_dim=-1)"


@pytest.mark.parametrize(
    "shape, start_dim, end_dim",
    [((2, 3, 4, 5), 0, -1), ((2, 3, 4, 5), 1, -1), ((2, 3, 4, 5), 1, 2), ((2, 3, 4, 5), -3, -2), ((2, 3, 4, 5), -1, -1),
     ((7,), 0, 0), ((2, 0, 3), 1, 2), ((0, 3, 2), 0, 1), ((1, 1, 1), 0, 2)],
)
def test_flatten_matches_torch_and_shares_memory_like_it(shape, start_dim, end_dim):
    x = torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)
    ours, theirs = ops.flatten(x, start_dim, end_dim), torch.flatten(x, start_dim, end_dim)
    assert ours.shape == theirs.shape and torch.equal(ours, theirs)
    assert (ours._base is x or ours is x) == (theirs._base is x or theirs is x)
    assert (ours is x) == (theirs is x)  # start_dim == end_dim returns the input itself, as torch


def test_flatten_copies_when_torch_does_and_views_otherwise():
    x = torch.randn(2, 3, 4, 5).transpose(1, 2)  # (2, 4, 3, 5), non-contiguous
    for start_dim, end_dim in [(0, -1), (1, 2), (2, 3), (0, 1), (1, 3)]:
        ours, theirs = ops.flatten(x, start_dim, end_dim), torch.flatten(x, start_dim, end_dim)
        assert torch.equal(ours, theirs)
        assert (ours.data_ptr() == x.data_ptr() and ours._base is x) == (theirs.data_ptr() == x.data_ptr() and theirs._base is x)
    channels_last = torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last)
    assert torch.equal(ops.flatten(channels_last, 1), torch.flatten(channels_last, 1))


def test_flatten_of_a_0d_tensor_is_a_one_element_1d_view():
    x = torch.tensor(3.5)
    for start_dim, end_dim in [(0, -1), (-1, 0), (0, 0), (-1, -1)]:
        ours = ops.flatten(x, start_dim, end_dim)
        assert ours.shape == (1,) and ours.item() == 3.5 and ours._base is x


def test_flatten_accepts_what_torch_takes_as_an_int():
    x = torch.randn(2, 3, 4)
    assert torch.equal(ops.flatten(x, np.int64(1)), torch.flatten(x, np.int64(1)))
    assert torch.equal(ops.flatten(x, torch.tensor(1)), torch.flatten(x, torch.tensor(1)))


def test_flatten_keeps_integer_dtype_and_gradients():
    x = torch.arange(24).reshape(2, 3, 4)
    assert ops.flatten(x, 1).dtype == torch.int64
    leaf = _double(2, 3, 4).requires_grad_()
    ops.flatten(leaf, 1).backward(torch.arange(24.0, dtype=torch.float64).reshape(2, 12))
    assert torch.equal(leaf.grad, torch.arange(24.0, dtype=torch.float64).reshape(2, 3, 4))


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(start_dim=2, end_dim=1), RuntimeError, r"start_dim cannot come after end_dim"),
        (dict(start_dim=3), IndexError, r"start_dim.*\[-3, 2\].*got 3"),
        (dict(end_dim=-4), IndexError, r"end_dim.*\[-3, 2\].*got -4"),
        (dict(start_dim=1.0), TypeError, r"start_dim.*int"),
        (dict(start_dim="a"), TypeError, r"start_dim.*int"),
    ],
)
def test_flatten_refuses_like_torch(kwargs, error, pattern):
    x = torch.zeros(2, 3, 4)
    with pytest.raises(error):
        torch.flatten(x, **kwargs)
    with pytest.raises(error, match=pattern):
        ops.flatten(x, **kwargs)


# ----------------------------------------------------------------------------------------- sigmoid


def test_sigmoid_signature_is_torchs():
    assert torch.sigmoid.__doc__.lstrip().startswith("sigmoid(input, *, out=None)")
    assert str(inspect.signature(ops.sigmoid)) == "(input, *, out=None)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_extremes_are_exact_without_nan_or_warning(dtype):
    x = torch.tensor([-1000.0, -100.0, -20.0, 0.0, 20.0, 100.0, 1000.0, float("inf"), -float("inf")], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = ops.sigmoid(x)
    assert not ours.isnan().any()
    assert ours[0].item() == 0.0 and ours[-3].item() == 1.0  # the exact limits at -1000 and +1000
    assert ours[-2].item() == 1.0 and ours[-1].item() == 0.0
    assert ours[3].item() == 0.5
    torch.testing.assert_close(ours, torch.sigmoid(x))


def test_sigmoid_propagates_nan():
    assert ops.sigmoid(torch.tensor([float("nan")])).isnan().all()


def test_sigmoid_relative_precision_in_float32():
    x = torch.linspace(-85.0, 85.0, 200_001)
    reference = torch.sigmoid(x.double())
    relative = ((ops.sigmoid(x).double() - reference).abs() / reference).max().item()
    assert relative < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sigmoid_gradient_is_torchs(dtype):
    x = torch.cat([torch.randn(50, dtype=dtype) * 5, torch.tensor([-1000.0, -30.0, 30.0, 1000.0], dtype=dtype)])
    grads = []
    for function in (torch.sigmoid, ops.sigmoid):
        leaf = x.clone().requires_grad_()
        function(leaf).backward(torch.linspace(-1, 1, x.numel(), dtype=dtype))
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[1], grads[0])
    assert not grads[1].isnan().any()


def test_sigmoid_supports_double_backward():
    x = _double(6).requires_grad_()
    assert torch.autograd.gradgradcheck(ops.sigmoid, (x,))


def test_sigmoid_runs_no_sigmoid_kernel_forward_or_backward():
    recorder = RecordOperators()
    x = torch.tensor([-1000.0, 0.5, 1000.0], requires_grad=True)
    with recorder:
        ops.sigmoid(x).sum().backward()
    assert not [name for name in recorder.seen if "sigmoid" in name or "expit" in name or "logistic" in name]


def test_sigmoid_of_integers_is_float_like_torch():
    x = torch.arange(-3, 4)
    assert ops.sigmoid(x).dtype == torch.sigmoid(x).dtype == torch.get_default_dtype()
    torch.testing.assert_close(ops.sigmoid(x), torch.sigmoid(x))
    torch.testing.assert_close(ops.sigmoid(torch.tensor([True, False])), torch.sigmoid(torch.tensor([True, False])))


def test_sigmoid_out_argument():
    x = torch.randn(3, 4)
    out = torch.empty(0)
    result = ops.sigmoid(x, out=out)
    assert result is out and out.shape == (3, 4)
    torch.testing.assert_close(out, torch.sigmoid(x))
    with pytest.raises(RuntimeError, match="automatic differentiation"):
        ops.sigmoid(x.requires_grad_(), out=torch.empty(3, 4))


# -------------------------------------------------------------------------------------- batch_norm


def test_batch_norm_signature_is_torchs():
    assert _parameters(ops.batch_norm) == _parameters(F.batch_norm)


@pytest.mark.parametrize("momentum", [0.1, 0.0, 1.0, 0.37])
def test_training_updates_running_stats_in_place_with_unbiased_variance(momentum):
    generator = torch.Generator().manual_seed(0)
    x = _double(8, 3, 4, 5, generator=generator, scale=2.0, offset=1.0)
    mean, var = _double(3, generator=generator), torch.rand(3, generator=generator, dtype=torch.float64) + 0.5
    ours_mean, ours_var, torch_mean, torch_var = mean.clone(), var.clone(), mean.clone(), var.clone()
    pointers = (ours_mean.data_ptr(), ours_var.data_ptr())
    out = ops.batch_norm(x, ours_mean, ours_var, training=True, momentum=momentum)
    expected = F.batch_norm(x, torch_mean, torch_var, training=True, momentum=momentum)
    torch.testing.assert_close(out, expected)
    assert (ours_mean.data_ptr(), ours_var.data_ptr()) == pointers  # the same tensors, updated in place
    torch.testing.assert_close(ours_mean, torch_mean)
    torch.testing.assert_close(ours_var, torch_var)
    unbiased = x.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(ours_var, (1 - momentum) * var + momentum * unbiased)
    torch.testing.assert_close(ours_mean, (1 - momentum) * mean + momentum * x.mean(dim=(0, 2, 3)))


def test_training_normalises_with_the_biased_variance():
    x = _double(4, 2, 3)
    out = ops.batch_norm(x, None, None, training=True, eps=1e-5)
    biased = x.var(dim=(0, 2), unbiased=False, keepdim=True)
    torch.testing.assert_close(out, (x - x.mean(dim=(0, 2), keepdim=True)) / torch.sqrt(biased + 1e-5))


def test_evaluation_uses_the_running_stats_only():
    generator = torch.Generator().manual_seed(1)
    x = _double(6, 4, 5, 5, generator=generator)
    mean, var = _double(4, generator=generator), torch.rand(4, generator=generator, dtype=torch.float64) + 0.5
    full = ops.batch_norm(x, mean, var)
    torch.testing.assert_close(full[:1], ops.batch_norm(x[:1], mean, var))  # independent of the batch
    torch.testing.assert_close(full, (x - mean.view(1, 4, 1, 1)) / torch.sqrt(var.view(1, 4, 1, 1) + 1e-5))
    before = mean.clone(), var.clone()
    ops.batch_norm(x, mean, var, training=False)
    assert torch.equal(mean, before[0]) and torch.equal(var, before[1])


def test_the_write_ups_var_minus_eps_is_not_torchs():
    generator = torch.Generator().manual_seed(2)
    x = _double(1, 3, 8, 8, generator=generator)
    mean, var = torch.rand(3, dtype=torch.float64, generator=generator), torch.rand(3, dtype=torch.float64, generator=generator) + 0.5
    shape = (1, 3, 1, 1)
    expected = F.batch_norm(x, mean, var, training=False, eps=0.1)
    torch.testing.assert_close(ops.batch_norm(x, mean, var, training=False, eps=0.1), expected)
    write_up = (x - mean.view(shape)) / torch.sqrt(var.view(shape) - 0.1)
    assert not torch.allclose(write_up, expected)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 7), (2, 3, 4, 5), (2, 3, 2, 3, 4)])
@pytest.mark.parametrize("affine", [True, False])
def test_values_and_gradients_match_torch_for_every_rank(training, shape, affine):
    generator = torch.Generator().manual_seed(len(shape) * 10 + training)
    channels = shape[1]
    x = _double(*shape, generator=generator, scale=3.0, offset=2.0)
    mean, var = _double(channels, generator=generator), torch.rand(channels, generator=generator, dtype=torch.float64) + 0.5
    weight = _double(channels, generator=generator) if affine else None
    bias = _double(channels, generator=generator) if affine else None
    cotangent = _double(*shape, generator=generator)
    results = []
    for function in (F.batch_norm, ops.batch_norm):
        leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, weight, bias)]
        stats = mean.clone(), var.clone()
        out = function(leaves[0], *stats, leaves[1], leaves[2], training, 0.2, 1e-3)
        grads = torch.autograd.grad(out, [t for t in leaves if t is not None], cotangent)
        results.append((out, stats, grads))
    (out_t, stats_t, grads_t), (out_o, stats_o, grads_o) = results
    torch.testing.assert_close(out_o, out_t)
    torch.testing.assert_close(stats_o, stats_t)
    torch.testing.assert_close(grads_o, grads_t)


@pytest.mark.parametrize("training", [True, False])
def test_channels_last_stays_channels_last(training):
    x = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    out = ops.batch_norm(x, torch.zeros(3), torch.ones(3), training=training)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, F.batch_norm(x, torch.zeros(3), torch.ones(3), training=training))
    out.backward(torch.randn_like(out))
    assert x.grad.shape == x.shape


def test_precision_far_from_zero_is_comparable_to_torchs():
    # A mean 100 standard deviations away from 0 in float32: both lose digits; ours no more than torch.
    generator = torch.Generator().manual_seed(3)
    x64 = _double(16, 4, 6, 6, generator=generator, scale=0.1, offset=-10.0)
    reference = F.batch_norm(x64, None, None, training=True)
    x = x64.float()
    ours = (ops.batch_norm(x, None, None, training=True).double() - reference).abs().max().item()
    theirs = (F.batch_norm(x, None, None, training=True).double() - reference).abs().max().item()
    assert ours < 4 * theirs + 1e-6


def test_an_empty_batch_leaves_the_running_stats_alone():
    mean, var = torch.zeros(3), torch.ones(3)
    out = ops.batch_norm(torch.randn(0, 3, 2, 2), mean, var, training=True)
    assert out.shape == (0, 3, 2, 2)
    assert torch.equal(mean, torch.zeros(3)) and torch.equal(var, torch.ones(3))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "shape, statistics",
    [((0, 3), 3), ((0, 3), 5), ((4, 3, 0), 3), ((4, 3, 0, 0), 3), ((0, 3, 4, 4), 3), ((4, 0), 0), ((4, 0, 3), 2),
     ((0,), 0), ((0,), 4), ((0, 2, 1, 1, 1), 2), ((2, 3, 2, 1, 2, 2), 3), ((3, 2, 1), 2), ((2, 3, 1, 1), 3)],
)
def test_degenerate_shapes_match_torch(shape, statistics, training):
    # An empty input (even 1-D, even with statistics of the wrong size) is input * weight[0] + bias[0]
    # in torch, and leaves the statistics alone; 6-D and 1x1 images are ordinary inputs.
    generator = torch.Generator().manual_seed(len(shape) + statistics)
    x = _double(*shape, generator=generator)
    mean, var = _double(statistics, generator=generator), torch.rand(statistics, dtype=torch.float64) + 0.5
    weight, bias = _double(statistics, generator=generator, offset=2.0), _double(statistics, generator=generator)
    results = []
    for function in (F.batch_norm, ops.batch_norm):
        leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
        if statistics == 0:
            leaves[1:] = [None, None]  # torch reads weight[0] and bias[0] of an empty input
        stats = mean.clone(), var.clone()
        out = function(leaves[0], *stats, leaves[1], leaves[2], training, 0.3, 1e-3)
        grads = torch.autograd.grad(out, [t for t in leaves if t is not None], torch.ones_like(out))
        results.append((out, stats, grads))
    (out_t, stats_t, grads_t), (out_o, stats_o, grads_o) = results
    torch.testing.assert_close(out_o, out_t)
    torch.testing.assert_close(stats_o, stats_t)
    torch.testing.assert_close(grads_o, grads_t)


def test_a_2d_weight_passes_forward_and_is_refused_by_the_backward_like_torch():
    x = torch.randn(4, 3, 5, requires_grad=True)
    weight = torch.ones(3, 1)
    for training in (True, False):
        expected = F.batch_norm(x, torch.zeros(3), torch.ones(3), weight, training=training)
        out = ops.batch_norm(x, torch.zeros(3), torch.ones(3), weight, training=training)
        torch.testing.assert_close(out, expected)
        with pytest.raises(RuntimeError):
            expected.sum().backward()
        with pytest.raises(RuntimeError, match="weight must be a 1-D tensor"):
            out.sum().backward()


def test_nan_eps_is_accepted_like_torch():
    x = _double(4, 3, 2)
    for training in (True, False):
        ours = ops.batch_norm(x, torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64),
                              training=training, eps=float("nan"))
        assert ours.isnan().all()


def test_half_precision_is_computed_in_float32_like_torch():
    x = torch.randn(8, 3, 4, 4).half()
    for training in (True, False):
        ours = ops.batch_norm(x, torch.zeros(3), torch.ones(3), training=training)
        expected = F.batch_norm(x, torch.zeros(3), torch.ones(3), training=training)
        assert ours.dtype == torch.float16
        torch.testing.assert_close(ours, expected, rtol=1e-3, atol=2e-3)


def test_running_stats_that_require_grad_are_refused_like_torch():
    x, var = torch.randn(4, 3, 2), torch.ones(3)
    mean = torch.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError):
        F.batch_norm(x, mean, var)
    with pytest.raises(RuntimeError, match="running_mean.*requires_grad"):
        ops.batch_norm(x, mean, var)


def test_double_backward_is_refused_not_silently_wrong():
    x = _double(4, 3, 2).requires_grad_()
    out = ops.batch_norm(x, None, None, training=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(out.pow(2).sum(), x, create_graph=True)


def test_batch_norm_runs_no_batch_norm_kernel():
    recorder = RecordOperators()
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    weight, bias = torch.ones(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    with recorder:
        for training in (True, False):
            ops.batch_norm(x, torch.zeros(3), torch.ones(3), weight, bias, training).sum().backward()
    assert not [name for name in recorder.seen if "batch_norm" in name or "var_mean" in name]
