"""Random configurations and invalid calls for max_pool2d, avg_pool2d and roi_pool.

max_pool2d and avg_pool2d draw kernel_size, stride (None, empty, int or pair), padding up to half the
kernel, dilation (max_pool2d), ceil_mode, return_indices (max_pool2d), count_include_pad and
divisor_override (avg_pool2d), each in the forms torch accepts (int, 1-tuple, pair, list), and an input
size the kernel fits. The input is batched or not (sometimes an empty batch), contiguous, channels_last
or a strided view, and often holds ties (integer values, as after a ReLU), sometimes NaN or -inf.
roi_pool draws boxes inside, across and outside the map, with spatial_scale 1, 2, 0.5, 0.3, 1/4 or
1/16, corners that land exactly on halves after scaling (rounding), malformed boxes, a Tensor[K, 5] or
a list of Tensor[L, 4], and output_size as an int or a pair.
"""

import torch
import torch.nn.functional as F
import torchvision

from helpers.cases import BadCase, Case, OpCases


def _form(rng, pair):
    """A pair of ints in one of the forms torch accepts: int (when equal), 1-tuple, tuple or list."""
    if pair[0] == pair[1]:
        return rng.choice([pair[0], pair[0], (pair[0],), tuple(pair), list(pair)])
    return rng.choice([tuple(pair), tuple(pair), list(pair)])


def _values(rng, generator, shape, dtype):
    """Random input values: normal, or small integers (ties, as after a ReLU), sometimes with NaN or -inf."""
    choice = rng.random()
    if choice < 0.3:
        values = torch.randint(-1, 3, shape, generator=generator).clamp(min=0).to(dtype)
    else:
        values = torch.randn(shape, generator=generator, dtype=dtype)
    special = rng.random()
    if special < 0.08:
        values[torch.rand(shape, generator=generator) < 0.1] = float("nan")
    elif special < 0.16:
        values[torch.rand(shape, generator=generator) < 0.3] = -float("inf")
    return values


def _layout(rng, generator, shape, dtype):
    """A tensor of `shape`: usually contiguous, sometimes channels_last or a strided (non-contiguous) view."""
    choice = rng.random()
    if choice < 0.3 and len(shape) == 4:
        return _values(rng, generator, shape, dtype).to(memory_format=torch.channels_last)
    if choice < 0.4:
        wide = _values(rng, generator, (*shape[:-1], 2 * shape[-1]), dtype)
        return wide[..., ::2]
    if choice < 0.45:
        swapped = _values(rng, generator, (*shape[:-2], shape[-1], shape[-2]), dtype)
        return swapped.transpose(-1, -2)
    return _values(rng, generator, shape, dtype)


def _batch(rng):
    """None (unbatched), 0 (empty batch, rarely) or a small batch size."""
    choice = rng.random()
    if choice < 0.2:
        return None
    if choice < 0.23:
        return 0
    return rng.randint(1, 3)


def _output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """torch's pooled size along one dimension (the last window must start inside the input or left padding)."""
    count = (size + 2 * padding - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (count - 1) * stride >= size + padding:
        count -= 1
    return count


def _windows_touch_input(size, kernel, stride, padding, dilation, ceil_mode):
    """Whether every window has an element inside the input. torch's max_pool2d leaves a window lying
    wholly in the padding (possible with dilation) undefined, and its backward then writes out of bounds."""
    count = _output_size(size, kernel, stride, padding, dilation, ceil_mode)
    return all(
        any(0 <= o * stride - padding + a * dilation < size for a in range(kernel)) for o in range(max(count, 0))
    )


def _window_geometry(rng, dilated):
    """kernel, stride, padding, dilation, ceil_mode and an input size (H, W) for a 2D pooling."""
    while True:
        kernel = (rng.randint(1, 4), rng.randint(1, 4))
        stride = kernel if rng.random() < 0.35 else (rng.randint(1, 3), rng.randint(1, 3))
        dilation = (rng.randint(1, 3), rng.randint(1, 3)) if dilated and rng.random() < 0.4 else (1, 1)
        padding = (rng.randint(0, kernel[0] // 2), rng.randint(0, kernel[1] // 2)) if rng.random() < 0.5 else (0, 0)
        ceil_mode = rng.random() < 0.4
        extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
        size = [max(1, e - 2 * p) + rng.randint(0, 7) for e, p in zip(extent, padding)]
        if stride == kernel and rng.random() < 0.5:  # windows that tile the input exactly (the fast path)
            size = [k * rng.randint(1, 4) for k in kernel]
        if rng.random() < 0.03:  # a kernel larger than the padded input: torch refuses it
            size[0] = max(1, extent[0] - 2 * padding[0] - 1)
            if _output_size(size[0], kernel[0], stride[0], padding[0], dilation[0], ceil_mode) < 1:
                return kernel, stride, padding, dilation, ceil_mode, size
            continue  # the padding (or ceil_mode) still fits one window: draw again
        if all(_windows_touch_input(size[d], kernel[d], stride[d], padding[d], dilation[d], ceil_mode) for d in range(2)):
            return kernel, stride, padding, dilation, ceil_mode, size


def _stride_form(rng, stride, kernel):
    """stride as torch may receive it: None or () when it equals kernel_size, else an int, tuple or list."""
    if stride == kernel and rng.random() < 0.5:
        return rng.choice([None, None, ()])
    return _form(rng, stride)


def _make_max_pool2d(rng, generator, dtype):
    kernel, stride, padding, dilation, ceil_mode, size = _window_geometry(rng, dilated=True)
    batch = _batch(rng)
    channels = rng.randint(1, 4)
    shape = ((batch,) if batch is not None else ()) + (channels, *size)
    kwargs = dict(
        input=_layout(rng, generator, shape, dtype),
        kernel_size=_form(rng, kernel),
        stride=_stride_form(rng, stride, kernel),
        padding=_form(rng, padding),
        dilation=_form(rng, dilation),
        ceil_mode=ceil_mode,
        return_indices=rng.random() < 0.4,
    )
    label = (
        f"max_pool2d(input {tuple(shape)}, kernel_size={kwargs['kernel_size']}, stride={kwargs['stride']}, "
        f"padding={kwargs['padding']}, dilation={kwargs['dilation']}, ceil_mode={ceil_mode}, "
        f"return_indices={kwargs['return_indices']})"
    )
    return Case(kwargs=kwargs, label=label)


def _make_avg_pool2d(rng, generator, dtype):
    kernel, stride, padding, _, ceil_mode, size = _window_geometry(rng, dilated=False)
    batch = _batch(rng)
    channels = rng.randint(1, 4)
    shape = ((batch,) if batch is not None else ()) + (channels, *size)
    divisor = None
    if rng.random() < 0.25:
        divisor = rng.choice([1, 2, 3, 5, -2, 0 if rng.random() < 0.1 else 4])  # 0: torch refuses it
    kwargs = dict(
        input=_layout(rng, generator, shape, dtype),
        kernel_size=_form(rng, kernel),
        stride=_stride_form(rng, stride, kernel),
        padding=_form(rng, padding),
        ceil_mode=ceil_mode,
        count_include_pad=rng.random() < 0.5,
        divisor_override=divisor,
    )
    label = (
        f"avg_pool2d(input {tuple(shape)}, kernel_size={kwargs['kernel_size']}, stride={kwargs['stride']}, "
        f"padding={kwargs['padding']}, ceil_mode={ceil_mode}, count_include_pad={kwargs['count_include_pad']}, "
        f"divisor_override={divisor})"
    )
    return Case(kwargs=kwargs, label=label)


def _make_roi_pool(rng, generator, dtype):
    batch, channels = rng.randint(1, 3), rng.randint(1, 4)
    height, width = rng.randint(1, 16), rng.randint(1, 16)
    scale = rng.choice([1.0, 1.0, 2.0, 0.5, 0.5, 0.3, 0.25, 1 / 16])
    count = rng.choice([0, 1, 3, 6, 10])
    # corners in image coordinates, from a little before the map to well past it
    span = max(height, width) / scale
    corners = torch.rand(count, 4, generator=generator, dtype=dtype) * span * 1.5 - span * 0.25
    if rng.random() < 0.4:  # corners that scale to exact halves: C rounding (away from zero) matters
        corners = torch.round(corners * scale * 2) / (2 * scale)
    if rng.random() < 0.8:  # x1 <= x2, y1 <= y2 (otherwise malformed boxes, pooled as one cell wide/high)
        low, high = torch.minimum(corners[:, :2], corners[:, 2:]), torch.maximum(corners[:, :2], corners[:, 2:])
        corners = torch.cat([low, high], dim=1)
    images = torch.randint(0, batch, (count, 1), generator=generator)
    input = _values(rng, generator, (batch, channels, height, width), dtype)
    if rng.random() < 0.2:
        input = input.to(memory_format=torch.channels_last)
    if rng.random() < 0.3:
        boxes = [corners[images[:, 0] == index] for index in range(batch)]
    else:
        boxes = torch.cat([images.to(dtype), corners], dim=1)
    output_size = rng.choice([1, 2, 3, 7, (2, 3), (3, 1), [4, 2]])
    kwargs = dict(input=input, boxes=boxes, output_size=output_size, spatial_scale=scale)
    form = "list of Tensor[L, 4]" if isinstance(boxes, list) else "Tensor[K, 5]"
    label = (
        f"roi_pool(input {tuple(input.shape)}, {count} boxes as {form}, output_size={output_size}, "
        f"spatial_scale={scale:.4g})"
    )
    return Case(kwargs=kwargs, label=label)


def _bad_pool(op):
    """Invalid calls shared by max_pool2d and avg_pool2d (every rule the two check alike)."""
    x = torch.randn(2, 3, 8, 8)

    def call(label, match, **changes):
        return BadCase(dict(dict(input=x, kernel_size=3), **changes), match, label)

    return [
        call("negative padding", r"padding must be non-negative", padding=-1),
        call("negative padding in one dimension", r"padding must be non-negative", padding=(0, -1)),
        call("padding above half the kernel", r"padding must be at most half of kernel_size", padding=2),
        call("padding above half the kernel in one dim", r"padding must be at most half of kernel_size", kernel_size=(3, 2), padding=(1, 2)),
        call("zero stride", r"stride must be greater than zero", stride=0),
        call("negative stride", r"stride must be greater than zero", stride=(1, -1)),
        call("zero kernel_size", r"kernel_size must be greater than zero", kernel_size=0, stride=1),
        call("negative kernel_size", r"kernel_size must be greater than zero", kernel_size=(2, -1)),
        call("output smaller than 1x1", r"output size must be at least 1", input=torch.randn(1, 1, 2, 2)),
        call("output smaller than 1 in one dim", r"output size must be at least 1", input=torch.randn(1, 2, 8, 2)),
        call("5-D input", r"input must be a non-empty 3D .* or 4D", input=torch.randn(1, 1, 2, 8, 8)),
        call("empty channels", r"input must be a non-empty 3D .* or 4D", input=torch.randn(1, 0, 8, 8)),
        call("empty height", r"input must be a non-empty 3D .* or 4D", input=torch.randn(2, 0, 8)),
        call("kernel_size with three values", r"kernel_size must either be a single int, or a tuple of two ints", kernel_size=(2, 2, 2)),
        call("empty kernel_size", r"kernel_size must either be a single int, or a tuple of two ints", kernel_size=()),
        call("stride with three values", r"stride must either be a single int, or a tuple of two ints", stride=(1, 1, 1)),
        call("padding with three values", r"padding must either be a single int, or a tuple of two ints", padding=[1, 1, 1]),
        call("float kernel_size", r"kernel_size must be an int", kernel_size=2.0),
        call("bool kernel_size", r"kernel_size must be an int", kernel_size=True),
        call("float in stride", r"stride must be an int", stride=(1, 1.5)),
    ]


def _bad_max_pool2d():
    x = torch.randn(2, 3, 8, 8)
    return _bad_pool("max_pool2d") + [
        BadCase(dict(input=x, kernel_size=2, dilation=0), r"dilation must be greater than zero", "zero dilation"),
        BadCase(dict(input=x, kernel_size=2, dilation=(1, -2)), r"dilation must be greater than zero", "negative dilation"),
        BadCase(dict(input=x, kernel_size=2, dilation=(1, 1, 1)), r"dilation must either be a single int", "dilation with three values"),
        BadCase(dict(input=torch.randn(8, 8), kernel_size=2), r"input must be a non-empty 3D .* or 4D", "2-D input"),
        BadCase(dict(input=x > 0, kernel_size=2), r"input of dtype torch.bool", "bool input"),
    ]


def _bad_avg_pool2d():
    x = torch.randn(2, 3, 8, 8)
    return _bad_pool("avg_pool2d") + [
        BadCase(dict(input=x, kernel_size=2, divisor_override=0), r"divisor_override must not be zero", "zero divisor_override"),
        BadCase(dict(input=x, kernel_size=2, divisor_override=2.0), r"divisor_override must be an int", "float divisor_override"),
        BadCase(dict(input=torch.randn(8, 8), kernel_size=2), r"input must be a non-empty 3D .* or 4D", "2-D input (IndexError)"),
        BadCase(dict(input=torch.randn(8), kernel_size=2), r"input must be a non-empty 3D .* or 4D", "1-D input (IndexError)"),
    ]


def _bad_roi_pool():
    x = torch.randn(2, 3, 8, 8)
    boxes = torch.tensor([[0, 1.0, 1.0, 5.0, 6.0], [1, 0.0, 2.0, 7.0, 3.0]])

    def call(label, match, **changes):
        return BadCase(dict(dict(input=x, boxes=boxes, output_size=2), **changes), match, label)

    return [
        call("3-D input", r"input must be a 4D", input=x[0]),
        call("2-D input", r"input must be a 4D", input=x[0, 0]),
        call("boxes with 4 columns", r"boxes must be a Tensor\[K, 5\]", boxes=boxes[:, 1:]),
        call("boxes with 6 columns", r"boxes must be a Tensor\[K, 5\]", boxes=torch.zeros(2, 6)),
        call("1-D boxes", r"boxes must be a Tensor\[K, 5\]", boxes=boxes[0]),
        call("list of boxes with 5 columns", r"Tensor\[L, 4\]", boxes=[boxes]),
        call("list of 1-D boxes", r"Tensor\[L, 4\]", boxes=[boxes[0, 1:]]),
        call("boxes neither a tensor nor a list", r"boxes must be a Tensor\[K, 5\] or a list", boxes=boxes.numpy()),
        call("negative output_size", r"output_size must be non-negative", output_size=(2, -1)),
        call("output_size with one value", r"output_size must be an int or \(height, width\)", output_size=(2,)),
        call("float output_size", r"output_size must hold ints", output_size=2.0),
        call("boxes dtype differs from the input's", r"input and boxes must have the same dtype", boxes=boxes.double()),
        call("integer input and boxes", r"input must be float32 or float64", input=x.long(), boxes=boxes.long()),
    ]


def _int_or_pair(value):
    """Whether `value` is an int or a pair of ints: the forms the reference implementations take."""
    return isinstance(value, int) or (isinstance(value, (tuple, list)) and len(value) == 2)


def _max_pool2d_in_reference_scope(kwargs):
    """kernel_size, stride (or None), padding and dilation as ints or pairs, and finite values (ties
    allowed): the gradient of a window holding NaN or only -inf goes, in torch, to an element that the
    first-maximum rule does not pick."""
    return (
        all(_int_or_pair(kwargs[name]) for name in ("kernel_size", "padding", "dilation"))
        and (kwargs["stride"] is None or _int_or_pair(kwargs["stride"]))
        and bool(kwargs["input"].isfinite().all())
    )


def _avg_pool2d_in_reference_scope(kwargs):
    """kernel_size, stride (or None) and padding as ints or pairs."""
    return (
        _int_or_pair(kwargs["kernel_size"])
        and _int_or_pair(kwargs["padding"])
        and (kwargs["stride"] is None or _int_or_pair(kwargs["stride"]))
    )


def _roi_pool_in_reference_scope(kwargs):
    """boxes as one Tensor[K, 5], and finite values (torchvision skips NaN and pools -inf as -FLT_MAX)."""
    return isinstance(kwargs["boxes"], torch.Tensor) and bool(kwargs["input"].isfinite().all())


CASES = {
    "max_pool2d": OpCases(
        reference=F.max_pool2d,
        make=_make_max_pool2d,
        bad=_bad_max_pool2d,
        in_reference_scope=_max_pool2d_in_reference_scope,
        reference_omits=dict(ceil_mode=False, return_indices=False),
    ),
    "avg_pool2d": OpCases(
        reference=F.avg_pool2d,
        make=_make_avg_pool2d,
        bad=_bad_avg_pool2d,
        in_reference_scope=_avg_pool2d_in_reference_scope,
        reference_omits=dict(ceil_mode=False),
    ),
    "roi_pool": OpCases(
        reference=torchvision.ops.roi_pool,
        make=_make_roi_pool,
        bad=_bad_roi_pool,
        in_reference_scope=_roi_pool_in_reference_scope,
    ),
}
