"""conv2d and conv_transpose2d beyond the generic sweeps: signatures, special semantics, both algorithms."""

import inspect
import re
import warnings

import pytest
import torch
import torch.nn.functional as F

from helpers import ops
from helpers.cases import OPS
from helpers.compare import mismatch
from helpers.checks import RecordOperators


def _torch_signature(function):
    """The parameter list of a torch builtin, read from the first line of its docstring."""
    first_line = function.__doc__.strip().splitlines()[0]
    return re.match(r"\w+\((.*)\)", first_line).group(1)


def _our_signature(function):
    return str(inspect.signature(function))[1:-1]


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_signature_matches_torch(name):
    assert _our_signature(getattr(ops, name)) == _torch_signature(getattr(F, name))


def test_conv_transpose2d_takes_groups_before_dilation_positionally():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 5, 5, generator=generator)
    w = torch.randn(4, 3, 3, 3, generator=generator)
    # stride, padding, output_padding, groups, dilation
    expected = F.conv_transpose2d(x, w, None, 2, 1, 1, 2, 3)
    assert mismatch(ops.conv_transpose2d(x, w, None, 2, 1, 1, 2, 3), expected) is None


def _assert_same_gradients(ours, expected, inputs, cotangent, **tolerances):
    """The gradients of `ours` and torch's `expected` output with respect to `inputs` agree."""
    gradients = torch.autograd.grad(ours, inputs, cotangent), torch.autograd.grad(expected, inputs, cotangent)
    for mine, theirs in zip(*gradients):
        assert mismatch(mine, theirs, **tolerances) is None


def _pair_of_calls(fn_ours, fn_torch, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns that 'same' with an even kernel copies the input
        expected = fn_torch(*args, **kwargs)
    return fn_ours(*args, **kwargs), expected


@pytest.mark.parametrize("kernel, dilation", [((4, 2), (1, 1)), ((2, 3), (3, 2)), ((5, 4), (2, 1))])
def test_same_padding_is_asymmetric_like_torch(kernel, dilation):
    """An odd total padding d (k - 1) puts the extra pixel at the bottom/right, as torch does."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 9, 8, dtype=torch.float64, generator=generator, requires_grad=True)
    w = torch.randn(4, 3, *kernel, dtype=torch.float64, generator=generator, requires_grad=True)
    ours, expected = _pair_of_calls(ops.conv2d, F.conv2d, x, w, padding="same", dilation=dilation)
    assert ours.shape == x.shape[:1] + (4,) + x.shape[2:]
    assert mismatch(ours, expected) is None
    cotangent = torch.randn(ours.shape, dtype=torch.float64, generator=generator)
    _assert_same_gradients(ours, expected, (x, w), cotangent)


def test_valid_padding_is_no_padding():
    generator = torch.Generator().manual_seed(2)
    x, w = torch.randn(1, 2, 7, 6, generator=generator), torch.randn(3, 2, 3, 2, generator=generator)
    assert torch.equal(ops.conv2d(x, w, padding="valid"), ops.conv2d(x, w, padding=0))


def test_same_padding_is_refused_with_a_stride():
    with pytest.raises(RuntimeError, match="padding='same' is not supported for strided convolutions"):
        ops.conv2d(torch.randn(1, 2, 8, 8), torch.randn(3, 2, 3, 3), padding="same", stride=(1, 2))


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_unbatched_input_gives_unbatched_output(name):
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, 7, generator=generator)
    w = torch.randn(4, 4, 3, 2, generator=generator)
    b = torch.randn(4, generator=generator)
    ours, expected = getattr(ops, name)(x, w, b, 2, 1), getattr(F, name)(x, w, b, 2, 1)
    assert ours.dim() == 3 and mismatch(ours, expected) is None
    assert ours.is_contiguous()


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize("channels_last_input", [True, False])
def test_memory_format_follows_torch(name, channels_last_input):
    generator = torch.Generator().manual_seed(4)
    x = torch.randn(2, 4, 6, 5, generator=generator)
    if channels_last_input:
        x = x.to(memory_format=torch.channels_last)
    w = torch.randn(4, 4, 3, 3, generator=generator)
    ours, expected = getattr(ops, name)(x, w, padding=1), getattr(F, name)(x, w, padding=1)
    assert mismatch(ours, expected) is None
    for memory_format in (torch.channels_last, torch.contiguous_format):
        assert ours.is_contiguous(memory_format=memory_format) == expected.is_contiguous(memory_format=memory_format)


def test_the_assignment_cases():
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(1, 3, 32, 32, generator=generator)
    torch.manual_seed(0)
    layers = [
        torch.nn.Conv2d(3, 6, 3),
        torch.nn.Conv2d(3, 6, 5, stride=2, dilation=2),
        torch.nn.ConvTranspose2d(3, 4, 3),
    ]
    shapes = [(1, 6, 30, 30), (1, 6, 12, 12), (1, 4, 34, 34)]
    with torch.no_grad():
        for layer, shape in zip(layers, shapes):
            geometry = (layer.stride, layer.padding, layer.dilation, layer.groups)
            if isinstance(layer, torch.nn.ConvTranspose2d):
                stride, padding, dilation, groups = geometry
                geometry = (stride, padding, layer.output_padding, groups, dilation)
                ours = ops.conv_transpose2d(input, layer.weight, layer.bias, *geometry)
            else:
                ours = ops.conv2d(input, layer.weight, layer.bias, *geometry)
            assert ours.shape == shape
            assert mismatch(ours, layer(input)) is None


@pytest.mark.parametrize(
    "settings",
    [
        dict(stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=2),
        dict(stride=1, padding=2, dilation=1, groups=1),
        dict(stride=3, padding=0, dilation=2, groups=4),
    ],
)
def test_conv_transpose2d_is_the_input_gradient_of_conv2d(settings):
    """conv_transpose2d(v, w) = A_w^T v where conv2d(x, w) = A_w x: autograd and the adjoint identity agree."""
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(2, 4, 11, 13, dtype=torch.float64, generator=generator, requires_grad=True)
    w = torch.randn(8, 4 // settings["groups"], 3, 4, dtype=torch.float64, generator=generator)
    y = ops.conv2d(x, w, **settings)
    v = torch.randn(y.shape, dtype=torch.float64, generator=generator)
    (grad_x,) = torch.autograd.grad(y, x, v)
    (torch_grad_x,) = torch.autograd.grad(F.conv2d(x, w, **settings), x, v)
    stride, padding, dilation = (ops._conv2d_pair(settings[k], k) for k in ("stride", "padding", "dilation"))
    output_padding = tuple(
        size + 2 * p - d * (k - 1) - 1 - s * (out - 1)
        for size, p, d, k, s, out in zip(x.shape[2:], padding, dilation, w.shape[2:], stride, y.shape[2:])
    )
    scattered = ops.conv_transpose2d(v, w, output_padding=output_padding, **settings)
    assert mismatch(scattered, torch_grad_x) is None
    assert mismatch(grad_x, torch_grad_x) is None
    assert torch.allclose((y * v).sum(), (x * scattered).sum(), rtol=1e-12)


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_gradcheck(name):
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, generator=generator, requires_grad=True)
    w = torch.randn(4, 2, 3, 2, dtype=torch.float64, generator=generator, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, generator=generator, requires_grad=True)
    function = getattr(ops, name)
    if name == "conv2d":
        assert torch.autograd.gradcheck(lambda x, w, b: function(x, w, b, 2, 1, (1, 2), 2), (x, w, b))
    else:
        assert torch.autograd.gradcheck(lambda x, w, b: function(x, w, b, 2, 1, 1, 2, (1, 2)), (x, w, b))


def _force(monkeypatch, algorithm):
    """Make the ops take one algorithm on these small inputs: the stride-1 tap loop (in blocks of a few
    rows), or im2col built one kernel row at a time."""
    if algorithm == "taps":
        def taps_whenever_possible(padded_size, stride, output_size, groups):
            return stride == (1, 1) and groups == 1

        monkeypatch.setattr(ops, "_conv2d_uses_taps", taps_whenever_possible)
        monkeypatch.setattr(ops, "_CONV2D_TAPS_BLOCK_BYTES", 1000)
    else:
        monkeypatch.setattr(ops, "_conv2d_uses_taps", lambda *args: False)
        monkeypatch.setattr(ops, "_CONV2D_COLUMNS_BYTES", 1)


@pytest.mark.parametrize("algorithm", ["taps", "row_chunks"])
@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_every_algorithm_matches_torch(monkeypatch, algorithm, name):
    """The sweep's small inputs take im2col in one piece; the big-input algorithms must agree too."""
    _force(monkeypatch, algorithm)
    spec = OPS[name]
    from helpers.checks import compare_gradients, compare_values

    for seed in range(40):
        case = spec.draw(1000 + seed, torch.float64)
        assert compare_values(getattr(ops, name), spec.reference, case) is None, case.label
        try:
            spec.reference(**case.kwargs)
        except Exception:
            continue
        assert compare_gradients(getattr(ops, name), spec.reference, case) is None, case.label


@pytest.mark.parametrize(
    "stride, padding, output_padding, dilation, kernel_size",
    [(2, 1, 1, 1, 3), (2, 0, 0, 1, 3), (2, 1, 0, 1, 4), (3, 2, 1, 1, 3), ((2, 3), (1, 0), (1, 2), 1, (3, 2)),
     (2, 2, 1, 2, 3), (2, 1, 0, 2, 4), (3, 0, 2, 1, 1), (2, 0, 1, 1, 1)],
)
def test_strided_conv_transpose2d_on_a_large_image_takes_the_subpixel_pass_and_matches_torch(
    stride, padding, output_padding, dilation, kernel_size
):
    """Output classes s * u + r, some reached by no tap (stride > kernel_size, or dilation and stride
    sharing a factor), each a stride-1 correlation: values and gradients as torch's."""
    generator = torch.Generator().manual_seed(11)
    pair = lambda value: value if isinstance(value, tuple) else (value, value)  # noqa: E731
    x = torch.randn(2, 5, 24, 27, generator=generator, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 3, *pair(kernel_size), generator=generator, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, generator=generator, dtype=torch.float64, requires_grad=True)
    settings = dict(stride=stride, padding=padding, output_padding=output_padding, dilation=dilation)
    expected = F.conv_transpose2d(x, w, b, **settings)
    assert ops._conv_transpose2d_uses_subpixel(
        x.shape[2:], w, pair(stride), pair(padding), pair(dilation), expected.shape[2:], 1
    )
    ours = ops.conv_transpose2d(x, w, b, **settings)
    assert mismatch(ours, expected) is None
    cotangent = torch.randn(ours.shape, generator=generator, dtype=torch.float64)
    _assert_same_gradients(ours, expected, (x, w, b), cotangent)


def test_q2_layer_shape_takes_the_tap_loop_and_matches_torch():
    """A Q2 layer shape (a large image for its kernel) takes the tap loop without forcing it."""
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(16, 16, 32, 32, generator=generator).to(memory_format=torch.channels_last).requires_grad_()
    w = torch.randn(16, 16, 3, 3, generator=generator).mul_(0.1).requires_grad_()
    b = torch.randn(16, generator=generator).requires_grad_()
    x_pad = ops._conv2d_pad(x.detach().permute(0, 2, 3, 1), (1, 1, 1, 1))
    assert ops._conv2d_uses_taps(x_pad.shape[1:3], (1, 1), (32, 32), 1)
    ours, expected = ops.conv2d(x, w, b, padding=1), F.conv2d(x, w, b, padding=1)
    assert mismatch(ours, expected) is None
    cotangent = torch.randn(ours.shape, generator=generator)
    _assert_same_gradients(ours, expected, (x, w, b), cotangent, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    "name, dtype", [("conv2d", torch.int64), ("conv2d", torch.int32), ("conv_transpose2d", torch.int64)]
)
def test_integer_tensors_like_torch(name, dtype):
    generator = torch.Generator().manual_seed(8)
    x = torch.randint(-5, 5, (2, 4, 6, 7), generator=generator, dtype=dtype)
    w = torch.randint(-3, 3, (4, 2, 3, 3), generator=generator, dtype=dtype)
    b = torch.randint(-3, 3, (4,), generator=generator, dtype=dtype)
    settings = dict(stride=2, padding=1, groups=2)
    ours, expected = getattr(ops, name)(x, w, b, **settings), getattr(F, name)(x, w, b, **settings)
    assert ours.dtype == dtype and torch.equal(ours, expected)


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_empty_batch_and_no_bias_gradient(name):
    x = torch.randn(0, 4, 5, 5, requires_grad=True)
    w = torch.randn(4, 4, 3, 3, requires_grad=True)
    ours, expected = getattr(ops, name)(x, w, padding=1), getattr(F, name)(x, w, padding=1)
    assert mismatch(ours, expected) is None
    grad_x, grad_w = torch.autograd.grad(ours.sum(), (x, w))
    assert grad_x.shape == x.shape and torch.equal(grad_w, torch.zeros_like(w))


def test_output_padding_allowed_below_the_dilation_with_stride_1():
    generator = torch.Generator().manual_seed(9)
    x = torch.randn(1, 2, 5, 5, generator=generator)
    w = torch.randn(2, 3, 3, 3, generator=generator)
    ours = ops.conv_transpose2d(x, w, output_padding=(2, 1), dilation=3)
    assert ours.shape == (1, 3, 11 + 2, 11 + 1)  # (5 - 1) + 3 * (3 - 1) + 1 = 11, plus output_padding
    assert mismatch(ours, F.conv_transpose2d(x, w, output_padding=(2, 1), dilation=3)) is None




@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_invalid_calls_raise_before_any_tensor_work(name):
    """Each invalid call raises like torch before a single tensor operation runs."""
    for bad in OPS[name].bad():
        recorder = RecordOperators()
        with pytest.raises(Exception, match=bad.match), recorder:
            getattr(ops, name)(**bad.kwargs)
        assert recorder.seen == [], f"{bad.label}: ran {recorder.seen} before raising"


def test_weight_that_needs_no_gradient_keeps_no_input_copy():
    """With a frozen weight, conv2d saves nothing but the weight for its backward."""
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    w = torch.randn(5, 3, 3, 3)
    out = ops.conv2d(x, w, padding=1)
    saved = [t for t in out.grad_fn.saved_tensors if t is not None]
    assert len(saved) == 1 and saved[0].shape == w.shape
    (grad_x,) = torch.autograd.grad(out.sum(), x)
    (expected,) = torch.autograd.grad(F.conv2d(x, w, padding=1).sum(), x)
    assert mismatch(grad_x, expected) is None


@pytest.mark.parametrize("algorithm", ["default", "taps", "row_chunks"])
@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
@pytest.mark.parametrize(
    "settings",
    [
        dict(stride=2, padding=1, groups=2),
        dict(stride=1, padding=(2, 1), dilation=(1, 2)),
        dict(stride=(1, 3), groups=4),
    ],
)
def test_wide_layers_match_torch(monkeypatch, algorithm, name, settings):
    """Many channels per group take the pixels-by-channels im2col layout (the sweep's narrow layers the other)."""
    if algorithm != "default":
        _force(monkeypatch, algorithm)
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(3, 16, 9, 10, dtype=torch.float64, generator=generator, requires_grad=True)
    groups = settings.get("groups", 1)
    weight_shape = (32, 16 // groups, 3, 2) if name == "conv2d" else (16, 32 // groups, 3, 2)  # 32 outputs
    w = torch.randn(weight_shape, dtype=torch.float64, generator=generator, requires_grad=True)
    b = torch.randn(32, dtype=torch.float64, generator=generator, requires_grad=True)
    ours, expected = getattr(ops, name)(x, w, b, **settings), getattr(F, name)(x, w, b, **settings)
    assert mismatch(ours, expected) is None
    cotangent = torch.randn(ours.shape, dtype=torch.float64, generator=generator)
    _assert_same_gradients(ours, expected, (x, w, b), cotangent)


@pytest.mark.parametrize(
    "settings",
    [
        dict(stride=2, padding=2, dilation=2),
        dict(stride=(2, 3), padding=(1, 2), dilation=(4, 3)),
        dict(stride=(4, 1), padding=(3, 0), dilation=(2, 2), groups=2),
    ],
)
def test_stride_and_dilation_with_a_common_factor(settings):
    """gcd(stride, dilation) > 1: conv2d keeps only the rows and columns the windows read."""
    generator = torch.Generator().manual_seed(11)
    x = torch.randn(2, 4, 17, 15, dtype=torch.float64, generator=generator, requires_grad=True)
    w = torch.randn(6, 4 // settings.get("groups", 1), 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, generator=generator, requires_grad=True)
    ours, expected = ops.conv2d(x, w, b, **settings), F.conv2d(x, w, b, **settings)
    assert mismatch(ours, expected) is None
    cotangent = torch.randn(ours.shape, dtype=torch.float64, generator=generator)
    _assert_same_gradients(ours, expected, (x, w, b), cotangent)


@pytest.mark.parametrize("name", ["conv2d", "conv_transpose2d"])
def test_double_backward_is_refused_rather_than_wrong(name):
    """The backward is hand-written from detached saved tensors: a second derivative raises."""
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    (grad_x,) = torch.autograd.grad(getattr(ops, name)(x, w, padding=1).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError):
        grad_x.sum().backward()
