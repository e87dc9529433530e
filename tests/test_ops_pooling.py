"""max_pool2d, avg_pool2d and roi_pool beyond the generic sweeps: signatures, torch's special rules, layouts."""

import inspect

import pytest
import torch
import torch.nn.functional as F
import torchvision

from helpers import ops
from helpers.cases import OPS
from helpers.checks import RecordOperators

NAN, INF = float("nan"), float("inf")


def _parameters(function):
    """(name, default, kind) of each parameter: what a drop-in must reproduce (annotations aside)."""
    return [(p.name, p.default, p.kind) for p in inspect.signature(function).parameters.values()]




def _grad(fn, x, *args, cotangent=None, **kwargs):
    """Output and input gradient of fn(x, ...) for a fresh leaf copy of x."""
    leaf = x.detach().clone().requires_grad_()
    out = fn(leaf, *args, **kwargs)
    values = out[0] if isinstance(out, tuple) else out
    values.backward(torch.ones_like(values) if cotangent is None else cotangent)
    return out, leaf.grad


# ----------------------------------------------------------------------------------------- signatures


def test_max_pool2d_signature_is_torchs():
    # F.max_pool2d dispatches on return_indices through a (*args, **kwargs) wrapper; both targets share
    # the signature
    assert _parameters(ops.max_pool2d) == _parameters(F.max_pool2d_with_indices)
    assert _parameters(ops.max_pool2d) == _parameters(torch.nn.functional._max_pool2d)


def test_avg_pool2d_signature_is_torchs():
    # F.avg_pool2d is a builtin without an inspectable signature: its docstring states it
    stated = F.avg_pool2d.__doc__.lstrip().splitlines()[0]
    assert stated.startswith("avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None)")
    assert str(inspect.signature(ops.avg_pool2d)) == (
        "(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None)"
    )


def test_roi_pool_signature_is_torchvisions():
    ours = [(name, default) for name, default, _ in _parameters(ops.roi_pool)]
    theirs = [(name, default) for name, default, _ in _parameters(torchvision.ops.roi_pool)]
    assert ours == theirs


# ----------------------------------------------------------------------------------------- the assignment's cases


def _assignment_input():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_assignment_max_pool_2x2_stride_1():
    x = _assignment_input()
    expected = torch.nn.MaxPool2d(kernel_size=2, stride=1)(x)
    ours = ops.max_pool2d(x, kernel_size=2, stride=1)
    assert ours.shape == (1, 3, 31, 31) and torch.equal(ours, expected)


def test_assignment_avg_pool_2x2_stride_1():
    x = _assignment_input()
    expected = torch.nn.AvgPool2d(2, 1)(x)
    ours = ops.avg_pool2d(x, 2, 1)
    assert ours.shape == (1, 3, 31, 31) and torch.allclose(ours, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 1 / 16])
def test_assignment_roi_pool_box(spatial_scale):
    x = _assignment_input()
    boxes = torch.tensor([[0, 0, 0, 6.5, 6.5]])
    expected = torchvision.ops.roi_pool(x, boxes=boxes, output_size=(3, 3), spatial_scale=spatial_scale)
    ours = ops.roi_pool(x, boxes=boxes, output_size=(3, 3), spatial_scale=spatial_scale)
    assert torch.equal(ours, expected)


def test_roi_pool_bins_overlap_as_torchvision_says():
    # box 0..6.5 rounds to 0..7: 8 cells in 3 bins, rows [0, 3), [2, 6), [5, 8); a map holding its
    # flat position shows which cell each bin picked
    x = torch.arange(64.0).view(1, 1, 8, 8)
    out = ops.roi_pool(x, torch.tensor([[0, 0, 0, 6.5, 6.5]]), (3, 3))
    assert out[0, 0].tolist() == [[18.0, 21.0, 23.0], [42.0, 45.0, 47.0], [58.0, 61.0, 63.0]]
    assert torch.equal(out, torchvision.ops.roi_pool(x, torch.tensor([[0, 0, 0, 6.5, 6.5]]), (3, 3)))


# ----------------------------------------------------------------------------------------- max_pool2d rules


def test_max_pool2d_ties_pick_the_first_maximum_for_indices_and_gradient():
    x = torch.tensor([[[[1.0, 2.0, 2.0, 0.0], [2.0, 0.0, 0.0, 0.0], [3.0, 3.0, 0.0, 0.0], [3.0, 3.0, 0.0, 0.0]]]])
    for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1), dict(kernel_size=2, dilation=2)):
        (ours, ours_idx), ours_grad = _grad(ops.max_pool2d, x, return_indices=True, **kwargs)
        (theirs, theirs_idx), theirs_grad = _grad(F.max_pool2d, x, return_indices=True, **kwargs)
        assert torch.equal(ours, theirs) and torch.equal(ours_idx, theirs_idx) and torch.equal(ours_grad, theirs_grad)
    _, grad = _grad(ops.max_pool2d, torch.zeros(1, 1, 4, 4), 2)
    assert grad[0, 0].tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]


def test_max_pool2d_propagates_nan_and_points_at_the_last_nan():
    x = torch.tensor([[[[1.0, NAN, 3.0, NAN], [NAN, 2.0, 5.0, 5.0], [-INF, -INF, 0.0, 0.0], [-INF, -INF, 0.0, 0.0]]]])
    for layout in (torch.contiguous_format, torch.channels_last):
        xx = x.repeat(2, 3, 1, 1).contiguous(memory_format=layout)
        for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=1, padding=1)):
            (ours, ours_idx), ours_grad = _grad(ops.max_pool2d, xx, return_indices=True, **kwargs)
            (theirs, theirs_idx), theirs_grad = _grad(F.max_pool2d, xx, return_indices=True, **kwargs)
            assert torch.equal(ours_idx, theirs_idx) and torch.allclose(ours, theirs, equal_nan=True)
            assert torch.equal(ours_grad, theirs_grad)
    _, indices = ops.max_pool2d(x, 2, return_indices=True)
    assert indices[0, 0].tolist() == [[4, 3], [8, 10]]  # last NaN; an all -inf window: its first element


def test_max_pool2d_tiled_gradient_with_relu_zeros_and_nonfinite_cotangent():
    # the fast 2x2 path routes with 0/1 masks; ties (ReLU zeros) and an infinite or NaN upstream gradient
    # must still give torch's gradient exactly
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 8, 6, 6, generator=generator).clamp(min=0)
    for layout in (torch.contiguous_format, torch.channels_last):
        xx = x.contiguous(memory_format=layout)
        cotangent = torch.randn(4, 8, 3, 3, generator=generator)
        for special in (None, INF, NAN):
            if special is not None:
                cotangent[0, 0, 0, 0] = special
            ours, ours_grad = _grad(ops.max_pool2d, xx, 2, cotangent=cotangent)
            theirs, theirs_grad = _grad(F.max_pool2d, xx, 2, cotangent=cotangent)
            assert torch.equal(ours, theirs) and torch.allclose(ours_grad, theirs_grad, equal_nan=True)


@pytest.mark.parametrize(
    "size, kernel, stride, padding, dilation",
    [(5, 3, 3, 1, 1), (5, 2, 2, 0, 1), (6, 3, 2, 1, 1), (7, 3, 2, 1, 2), (4, 2, 2, 1, 1), (8, 4, 3, 2, 1), (9, 2, 4, 1, 3)],
)
def test_ceil_mode_drops_a_last_window_starting_in_the_right_padding(size, kernel, stride, padding, dilation):
    x = torch.randn(1, 2, size, size + 1)
    floor = (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    ceil = -(-(size + 2 * padding - dilation * (kernel - 1) - 1) // stride) + 1
    if (ceil - 1) * stride >= size + padding:
        ceil -= 1
    ours = ops.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=True)
    assert ours.shape[-2] == ceil and torch.equal(ours, F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=True))
    assert ops.max_pool2d(x, kernel, stride, padding, dilation).shape[-2] == floor
    ours_avg = ops.avg_pool2d(x, kernel, stride, min(padding, kernel // 2), ceil_mode=True)
    assert torch.allclose(ours_avg, F.avg_pool2d(x, kernel, stride, min(padding, kernel // 2), ceil_mode=True))


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_layouts_are_kept_and_unbatched_input_works(op):
    ours_fn, torch_fn = getattr(ops, op), getattr(F, op)
    x = torch.randn(2, 5, 8, 6)
    for xx in (x, x.contiguous(memory_format=torch.channels_last), x[0], x.transpose(-1, -2)):
        ours, theirs = ours_fn(xx, 2), torch_fn(xx, 2)
        assert ours.shape == theirs.shape and torch.allclose(ours, theirs)
        if xx.dim() == 4:
            for layout in (torch.contiguous_format, torch.channels_last):
                assert ours.is_contiguous(memory_format=layout) == theirs.is_contiguous(memory_format=layout)
    assert ours_fn(torch.randn(0, 3, 4, 4), 2).shape == (0, 3, 2, 2)


def test_max_pool2d_integer_input_like_torch():
    x = -torch.arange(1, 31).view(1, 5, 6)
    for kwargs in (dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)):
        ours, ours_idx = ops.max_pool2d(x, return_indices=True, **kwargs)
        theirs, theirs_idx = F.max_pool2d(x, return_indices=True, **kwargs)
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs) and torch.equal(ours_idx, theirs_idx)
    assert torch.equal(ops.avg_pool2d(x, 3, 2, 1, ceil_mode=True), F.avg_pool2d(x, 3, 2, 1, ceil_mode=True))


# ----------------------------------------------------------------------------------------- avg_pool2d rules


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("divisor_override", [None, 1, 3, -2])
@pytest.mark.parametrize("ceil_mode", [False, True])
def test_avg_pool2d_divisor_rules_on_a_map_of_ones(count_include_pad, divisor_override, ceil_mode):
    # on ones each output is (elements in the window and the input) / divisor
    x = torch.ones(1, 1, 7, 5, dtype=torch.float64)
    kwargs = dict(ceil_mode=ceil_mode, count_include_pad=count_include_pad, divisor_override=divisor_override)
    for kernel, stride, padding in ((3, 2, 1), ((3, 2), (2, 3), (1, 1)), (2, 2, 0), (3, 3, 1)):
        (ours, ours_grad), (theirs, theirs_grad) = (
            _grad(fn, x, kernel, stride, padding, **kwargs) for fn in (ops.avg_pool2d, F.avg_pool2d)
        )
        assert torch.allclose(ours, theirs) and torch.allclose(ours_grad, theirs_grad)


# ----------------------------------------------------------------------------------------- roi_pool rules


def test_roi_pool_rounds_halves_away_from_zero():
    # 2.5 -> 3 and -0.5 -> -1 in C (torch.round gives 2 and -0): the bins move by one cell
    x = torch.arange(100.0).view(1, 1, 10, 10)
    for box in ([0, 2.5, 2.5, 6.5, 6.5], [0, -0.5, -1.5, 4.5, 3.5], [0, 1.25, 3.75, 7.25, 5.75]):
        for scale in (1.0, 0.5, 2.0):
            boxes = torch.tensor([box])
            assert torch.equal(
                ops.roi_pool(x, boxes, (3, 2), scale), torchvision.ops.roi_pool(x, boxes, (3, 2), scale)
            )


def test_roi_pool_boxes_outside_the_map_and_malformed_boxes():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 7, generator=generator, dtype=torch.float64)
    boxes = torch.tensor(
        [
            [0, -30.0, -30.0, -10.0, -10.0],  # wholly before the map: every bin empty, 0
            [1, 200.0, 10.0, 300.0, 60.0],  # wholly after it
            [1, -20.0, 40.0, 50.0, 500.0],  # partly outside
            [0, 60.0, 50.0, 10.0, 20.0],  # x2 < x1, y2 < y1: forced to one cell
            [1, 0.0, 0.0, 111.0, 143.0],  # the whole map
        ],
        dtype=torch.float64,
    )
    cotangent = torch.randn(5, 3, 4, 3, generator=generator, dtype=torch.float64)
    ours, ours_grad = _grad(ops.roi_pool, x, boxes, (4, 3), 1 / 16, cotangent=cotangent)
    theirs, theirs_grad = _grad(torchvision.ops.roi_pool, x, boxes, (4, 3), 1 / 16, cotangent=cotangent)
    assert torch.equal(ours, theirs) and torch.allclose(ours_grad, theirs_grad)
    assert not ours[0].any() and not ours[1].any()


def test_roi_pool_ties_nan_and_gradient_routing():
    # torchvision's scan keeps the first maximum in row-major order and never picks NaN
    x = torch.zeros(1, 2, 6, 6)
    x[0, 1, 1:5, 1:5] = 1.0
    x[0, 0, 2, 3] = NAN
    boxes = torch.tensor([[0, 0.0, 0.0, 5.0, 5.0], [0, 1.0, 2.0, 4.0, 3.0]])
    for output_size in (1, 2, (3, 2), 6, 7):
        ours, ours_grad = _grad(ops.roi_pool, x, boxes, output_size)
        theirs, theirs_grad = _grad(torchvision.ops.roi_pool, x, boxes, output_size)
        assert torch.equal(ours, theirs) and torch.equal(ours_grad, theirs_grad)


def test_roi_pool_list_and_tensor_boxes_agree_and_empty_inputs():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(3, 4, 12, 10, generator=generator)
    per_image = [torch.rand(n, 4, generator=generator) * 160 for n in (2, 0, 3)]
    rois = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], dim=1) for i, b in enumerate(per_image)])
    assert torch.equal(ops.roi_pool(x, per_image, 3, 1 / 16), ops.roi_pool(x, rois, 3, 1 / 16))
    assert torch.equal(ops.roi_pool(x, per_image, 3, 1 / 16), torchvision.ops.roi_pool(x, per_image, 3, 1 / 16))
    assert ops.roi_pool(x, torch.zeros(0, 5), (2, 3)).shape == (0, 4, 2, 3)
    assert ops.roi_pool(x, rois, 0).shape == torchvision.ops.roi_pool(x, rois, 0).shape == (5, 4, 0, 0)
    _, grad = _grad(ops.roi_pool, x, torch.zeros(0, 5), 2)
    assert grad.shape == x.shape and not grad.any()


def test_roi_pool_benchmark_shape_matches_torchvision():
    # the benchmark's workload: a 64 x 50 x 50 map, hundreds of boxes, 7 x 7 bins, spatial_scale 1/16
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 64, 50, 50, generator=generator).clamp(min=0)  # ReLU features: many ties
    corner = torch.rand(300, 2, generator=generator) * 800
    size = torch.rand(300, 2, generator=generator) * 500 + 16
    boxes = torch.cat([torch.randint(0, 2, (300, 1), generator=generator).float(), corner, corner + size], dim=1)
    cotangent = torch.randn(300, 64, 7, 7, generator=generator)
    ours, ours_grad = _grad(ops.roi_pool, x, boxes, 7, 1 / 16, cotangent=cotangent)
    theirs, theirs_grad = _grad(torchvision.ops.roi_pool, x, boxes, 7, 1 / 16, cotangent=cotangent)
    assert torch.equal(ours, theirs) and torch.allclose(ours_grad, theirs_grad, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d", "roi_pool"])
def test_invalid_arguments_are_refused_before_any_work(op):
    # no tensor operator runs before the error (except the box concatenation of a list, for roi_pool's
    # dtype checks, which come after it as in torchvision)
    for bad in OPS[op].bad():
        if "dtype" in bad.label or "integer input" in bad.label:
            continue
        recorder = RecordOperators()
        with pytest.raises(Exception, match=bad.match):
            with recorder:
                getattr(ops, op)(**bad.kwargs)
        assert not recorder.seen, f"{bad.label}: ran {recorder.seen}"
