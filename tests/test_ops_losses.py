"""cross_entropy and mse_loss beyond the generic sweeps: signatures, weights, ignore_index, smoothing, legacy args."""

import inspect
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F

from helpers import ops
from helpers.checks import RecordOperators


def _parameters(function):
    """(name, default, kind) of each parameter: what a drop-in must reproduce (annotations aside)."""
    return [(p.name, p.default, p.kind) for p in inspect.signature(function).parameters.values()]




def _both(function_name, kwargs, grad_wrt=("input",), cotangent_seed=0):
    """Values and float64 gradients of torch's function and ours on copies of `kwargs`."""
    results = []
    for function in (getattr(F, function_name), getattr(ops, function_name)):
        copies = {k: v.clone().requires_grad_(k in grad_wrt) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        out = function(**copies)
        cotangent = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(cotangent_seed))
        leaves = [copies[k] for k in grad_wrt if isinstance(copies.get(k), torch.Tensor)]
        grads = torch.autograd.grad(out, leaves, cotangent) if leaves else ()
        results.append((out, grads))
    return results


def _assert_same(results):
    (out_t, grads_t), (out_o, grads_o) = results
    torch.testing.assert_close(out_o, out_t, equal_nan=True)
    for ours, theirs in zip(grads_o, grads_t):
        torch.testing.assert_close(ours, theirs, equal_nan=True)


# ----------------------------------------------------------------------------------- cross_entropy


def test_cross_entropy_signature_is_torchs():
    assert _parameters(ops.cross_entropy) == _parameters(F.cross_entropy)


def _logits(*shape, seed=0, scale=2.0):
    return torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)) * scale


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 2])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25, 1.0])
def test_weight_ignore_index_and_smoothing_together(reduction, weighted, ignore_index, label_smoothing):
    input = _logits(6, 5, seed=1)
    target = torch.tensor([0, 2, 4, 2, 1, 3])
    weight = torch.tensor([0.5, 2.0, 1.5, 0.25, 1.0], dtype=torch.float64) if weighted else None
    kwargs = dict(input=input, target=target, weight=weight, ignore_index=ignore_index, reduction=reduction,
                  label_smoothing=label_smoothing)
    _assert_same(_both("cross_entropy", kwargs))


def test_weighted_mean_divides_by_the_weights_of_the_targets_kept():
    input, target = _logits(4, 3, seed=2), torch.tensor([0, 1, 2, 1])
    weight = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    ours = ops.cross_entropy(input, target, weight=weight, ignore_index=2)
    per_target = ops.cross_entropy(input, target, weight=weight, ignore_index=2, reduction="none")
    torch.testing.assert_close(ours, per_target.sum() / (1.0 + 2.0 + 2.0))


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_an_all_ignored_batch_gives_nan_and_zero_gradients_like_torch(label_smoothing, weighted):
    input, target = _logits(3, 4, seed=3), torch.full((3,), -100)
    weight = torch.rand(4, dtype=torch.float64) + 0.5 if weighted else None
    results = _both("cross_entropy", dict(input=input, target=target, weight=weight, label_smoothing=label_smoothing))
    _assert_same(results)
    assert results[1][0].isnan()
    assert torch.equal(results[1][1][0], torch.zeros(3, 4, dtype=torch.float64))
    assert ops.cross_entropy(input, target, reduction="sum").item() == 0.0


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_class_probabilities_with_gradients_for_input_and_target(label_smoothing, weighted, reduction):
    input = _logits(2, 4, 3, 2, seed=4)
    target = torch.rand(2, 4, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5)).softmax(dim=1)
    weight = torch.tensor([1.0, 0.5, 2.0, 1.5], dtype=torch.float64) if weighted else None
    kwargs = dict(input=input, target=target, weight=weight, reduction=reduction, label_smoothing=label_smoothing)
    _assert_same(_both("cross_entropy", kwargs, grad_wrt=("input", "target")))


def test_k_dimensional_and_unbatched_inputs():
    image = _logits(2, 3, 4, 5, seed=6)
    pixels = torch.randint(3, (2, 4, 5), generator=torch.Generator().manual_seed(7))
    _assert_same(_both("cross_entropy", dict(input=image, target=pixels, reduction="none")))
    _assert_same(_both("cross_entropy", dict(input=_logits(5, seed=8), target=torch.tensor(3), label_smoothing=0.1)))
    # torch also takes a (1,)-shaped target for a (C,) input (its backward then fails: compare values only)
    vector = _logits(5, seed=9)
    for reduction in ("none", "mean", "sum"):
        ours = ops.cross_entropy(vector, torch.tensor([3]), reduction=reduction)
        theirs = F.cross_entropy(vector, torch.tensor([3]), reduction=reduction)
        assert ours.shape == theirs.shape == ()
        torch.testing.assert_close(ours, theirs)


def test_uint8_class_indices_are_accepted_like_torch():
    input, target = _logits(4, 5, seed=10), torch.tensor([0, 4, 2, 1], dtype=torch.uint8)
    torch.testing.assert_close(ops.cross_entropy(input, target), F.cross_entropy(input, target))


def test_negative_label_smoothing_is_ignored_like_torch():
    input, target = _logits(4, 5, seed=11), torch.tensor([0, 4, 2, 1])
    torch.testing.assert_close(ops.cross_entropy(input, target, label_smoothing=-0.3), F.cross_entropy(input, target))


@pytest.mark.parametrize("size_average, reduce", list(itertools.product([None, True, False], repeat=2)))
def test_legacy_size_average_and_reduce_map_like_torch(size_average, reduce):
    input, target = _logits(4, 5, seed=12), torch.tensor([0, 4, 2, 1])
    kwargs = dict(size_average=size_average, reduce=reduce, reduction="sum")
    with warnings.catch_warnings(record=True) as caught_torch:
        warnings.simplefilter("always")
        expected = F.cross_entropy(input, target, **kwargs)
    with warnings.catch_warnings(record=True) as caught_ours:
        warnings.simplefilter("always")
        ours = ops.cross_entropy(input, target, **kwargs)
    torch.testing.assert_close(ours, expected)
    assert [str(w.message) for w in caught_ours] == [str(w.message) for w in caught_torch]
    assert all(w.filename == __file__ for w in caught_ours)  # the warning points at the caller


def test_elementwise_mean_is_a_deprecated_mean():
    input, target = _logits(4, 5, seed=13), torch.tensor([0, 4, 2, 1])
    with pytest.warns(UserWarning, match="elementwise_mean"):
        ours = ops.cross_entropy(input, target, reduction="elementwise_mean")
    torch.testing.assert_close(ours, F.cross_entropy(input, target))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_huge_logits_stay_finite_thanks_to_the_log_sum_exp_trick(dtype):
    input = torch.tensor([[1000.0, -1000.0, 0.0], [-1000.0, 999.0, 1000.0]], dtype=dtype)
    target = torch.tensor([1, 0])
    for label_smoothing in (0.0, 0.1):
        results = _both("cross_entropy", dict(input=input, target=target, label_smoothing=label_smoothing))
        _assert_same(results)
        assert results[1][0].isfinite() and results[1][1][0].isfinite().all()


def test_out_of_range_class_index_is_an_index_error_like_torch():
    input = torch.randn(3, 4)
    for bad in (torch.tensor([0, 4, 1]), torch.tensor([0, -1, 1])):
        with pytest.raises(IndexError):
            F.cross_entropy(input, bad)
        with pytest.raises(IndexError, match=rf"Target {bad[1].item()} is out of bounds"):
            ops.cross_entropy(input, bad)
    # ignore_index itself may lie outside [0, C)
    target = torch.tensor([0, 7, 1])
    torch.testing.assert_close(ops.cross_entropy(input, target, ignore_index=7), F.cross_entropy(input, target, ignore_index=7))


def test_cross_entropy_uses_no_softmax_logsumexp_or_nll_kernel():
    recorder = RecordOperators()
    input = torch.randn(4, 5, requires_grad=True)
    with recorder:
        ops.cross_entropy(input, torch.tensor([0, 1, 2, 3]), label_smoothing=0.1).backward()
        ops.cross_entropy(input, torch.rand(4, 5)).backward()
    forbidden = ("softmax", "logsumexp", "nll", "cross_entropy")
    assert not [name for name in recorder.seen if any(word in name for word in forbidden)]


def test_cross_entropy_double_backward_is_refused_for_class_indices():
    input = _logits(3, 4, seed=14).requires_grad_()
    loss = ops.cross_entropy(input, torch.tensor([0, 1, 2]))
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, input, create_graph=True)


# ----------------------------------------------------------------------------------------- mse_loss


def test_mse_loss_signature_is_torchs_including_weight():
    assert _parameters(ops.mse_loss) == _parameters(F.mse_loss)
    assert "weight" in inspect.signature(F.mse_loss).parameters


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("input_shape, target_shape", [((3, 4), (3, 4)), ((3, 4), (4,)), ((4,), (3, 4)), ((2, 1, 4), (3, 1))])
def test_broadcasting_warns_like_torch_and_matches_values_and_gradients(reduction, input_shape, target_shape):
    generator = torch.Generator().manual_seed(15)
    input = torch.randn(input_shape, dtype=torch.float64, generator=generator)
    target = torch.randn(target_shape, dtype=torch.float64, generator=generator)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = _both("mse_loss", dict(input=input, target=target, reduction=reduction), grad_wrt=("input", "target"))
    _assert_same(results)
    messages = [str(w.message) for w in caught if "target size" in str(w.message)]
    assert len(messages) == (0 if input_shape == target_shape else 2) and len(set(messages)) <= 1


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_weighted_mse_loss_like_torch(reduction):
    generator = torch.Generator().manual_seed(16)
    input, target = torch.randn(3, 4, dtype=torch.float64, generator=generator), torch.randn(3, 4, dtype=torch.float64, generator=generator)
    weight = torch.rand(3, 4, dtype=torch.float64, generator=generator)
    kwargs = dict(input=input, target=target, weight=weight, reduction=reduction)
    _assert_same(_both("mse_loss", kwargs, grad_wrt=("input", "target", "weight")))
    if reduction == "mean":
        torch.testing.assert_close(ops.mse_loss(**kwargs), (weight * (input - target) ** 2).sum() / weight.sum())


@pytest.mark.parametrize("size_average, reduce", list(itertools.product([None, True, False], repeat=2)))
def test_mse_legacy_arguments_map_like_torch(size_average, reduce):
    input, target = torch.randn(3, 4), torch.randn(3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = F.mse_loss(input, target, size_average=size_average, reduce=reduce)
        ours = ops.mse_loss(input, target, size_average=size_average, reduce=reduce)
    torch.testing.assert_close(ours, expected)


def test_mse_mixed_dtypes_promote_like_torch():
    input = torch.randn(3, 4, requires_grad=True)
    target = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    ours, theirs = ops.mse_loss(input, target), F.mse_loss(input, target)
    assert ours.dtype == theirs.dtype == torch.float64
    grads_o, grads_t = torch.autograd.grad(ours, [input, target]), torch.autograd.grad(theirs, [input, target])
    assert [g.dtype for g in grads_o] == [g.dtype for g in grads_t]
    torch.testing.assert_close(grads_o, grads_t)
    integer_target = torch.arange(12).reshape(3, 4)
    torch.testing.assert_close(ops.mse_loss(input, integer_target), F.mse_loss(input, integer_target))


def test_mse_of_empty_tensors_is_nan_like_torch():
    assert ops.mse_loss(torch.zeros(0), torch.zeros(0)).isnan() and F.mse_loss(torch.zeros(0), torch.zeros(0)).isnan()
    assert ops.mse_loss(torch.zeros(0), torch.zeros(0), reduction="sum").item() == 0.0


def test_mse_supports_double_backward():
    input = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    target = torch.randn(4, dtype=torch.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for reduction in ("none", "mean", "sum"):
            assert torch.autograd.gradgradcheck(lambda a, b: ops.mse_loss(a, b, reduction=reduction), (input, target))


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        (dict(input=torch.zeros(3, 4), target=torch.zeros(5)), RuntimeError, r"must broadcast"),
        (dict(input=torch.zeros(3, 4), target=torch.zeros(3, 4), reduction="avg"), ValueError, r"avg is not a valid value for reduction"),
        (dict(input=torch.zeros(3, 4), target=torch.zeros(3, 4), weight=torch.ones(4)), ValueError, r"Weights and input must have the same size"),
        (dict(input=torch.zeros(3, 4), target=torch.zeros(3, 4), weight=torch.ones(3, 4), reduction="avg"), ValueError, r"Invalid reduction mode"),
        (dict(input=torch.zeros(3, 4, dtype=torch.int64), target=torch.zeros(3, 4, dtype=torch.int64)), NotImplementedError, r"floating point"),
    ],
)
def test_mse_refuses_like_torch(kwargs, error, pattern):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error):
            F.mse_loss(**kwargs)
        with pytest.raises(error, match=pattern):
            ops.mse_loss(**kwargs)


def test_mse_uses_no_mse_kernel():
    recorder = RecordOperators()
    input = torch.randn(3, 4, requires_grad=True)
    with recorder:
        for reduction in ("none", "mean", "sum"):
            ops.mse_loss(input, torch.randn(3, 4), reduction=reduction).sum().backward()
    assert not [name for name in recorder.seen if "mse" in name]
