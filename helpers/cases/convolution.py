"""Random configurations and invalid calls for conv2d and conv_transpose2d.

Each configuration draws groups, channels, kernel size, stride, padding (an int, a pair, 'same' or
'valid' for conv2d), dilation, output_padding (conv_transpose2d), bias or none, and an input size that
the kernel fits, from `rng`; the tensors come from `generator`. The argument forms vary (int, 1-tuple,
pair, list), and the input is sometimes unbatched, empty in the batch, channels_last or a strided view.
"""

import warnings

import torch
import torch.nn.functional as F

from helpers.cases import BadCase, Case, OpCases


def _torch_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """torch's conv2d, silencing its UserWarning that 'same' padding of an even kernel may copy the input."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using padding='same'")
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)


def _form(rng, pair):
    """A pair of ints in one of the forms torch accepts: int (when equal), 1-tuple, tuple or list."""
    if pair[0] == pair[1]:
        return rng.choice([pair[0], pair[0], (pair[0],), tuple(pair), list(pair)])
    return rng.choice([tuple(pair), tuple(pair), list(pair)])


def _layout(rng, generator, shape, dtype):
    """A tensor of `shape`: usually contiguous, sometimes channels_last or a strided (non-contiguous) view."""
    choice = rng.random()
    if choice < 0.2 and len(shape) == 4:
        return torch.randn(shape, generator=generator, dtype=dtype).to(memory_format=torch.channels_last)
    if choice < 0.3:
        wide = torch.randn(*shape[:-1], 2 * shape[-1], generator=generator, dtype=dtype)
        return wide[..., ::2]
    if choice < 0.4:
        swapped = torch.randn(*shape[:-2], shape[-1], shape[-2], generator=generator, dtype=dtype)
        return swapped.transpose(-1, -2)
    return torch.randn(shape, generator=generator, dtype=dtype)


def _batch(rng):
    """None (unbatched), 0 (empty batch, rarely) or a small batch size."""
    choice = rng.random()
    if choice < 0.2:
        return None
    if choice < 0.24:
        return 0
    return rng.randint(1, 3)


def _make_conv2d(rng, generator, dtype):
    groups = rng.choice([1, 1, 1, 2, 3])
    in_per_group, out_per_group = rng.randint(1, 4), rng.randint(1, 3)
    kernel = (rng.randint(1, 5), rng.randint(1, 5))
    stride = (rng.randint(1, 3), rng.randint(1, 3)) if rng.random() < 0.6 else (1, 1)
    dilation = (rng.randint(1, 3), rng.randint(1, 3)) if rng.random() < 0.5 else (1, 1)
    mode = rng.random()
    if mode < 0.2:
        padding = "same"
        if rng.random() < 0.9:  # torch refuses 'same' with a stride: kept, but rare
            stride = (1, 1)
    elif mode < 0.3:
        padding = "valid"
    else:
        padding = (rng.randint(0, 3), rng.randint(0, 3))
    pads = (0, 0) if isinstance(padding, str) else padding
    extent = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    size = [max(1, e - 2 * p) + rng.randint(0, 7) for e, p in zip(extent, pads)]
    if rng.random() < 0.03:  # a kernel larger than the padded input: torch refuses it
        size = [max(1, extent[0] - 2 * pads[0] - 1), size[1]]
    batch = _batch(rng)
    shape = ((batch,) if batch is not None else ()) + (groups * in_per_group, *size)
    kwargs = dict(
        input=_layout(rng, generator, shape, dtype),
        weight=torch.randn(groups * out_per_group, in_per_group, *kernel, generator=generator, dtype=dtype),
        bias=torch.randn(groups * out_per_group, generator=generator, dtype=dtype) if rng.random() < 0.7 else None,
        stride=_form(rng, stride),
        padding=padding if isinstance(padding, str) else _form(rng, padding),
        dilation=_form(rng, dilation),
        groups=groups,
    )
    label = (
        f"conv2d(input {tuple(shape)}, weight {tuple(kwargs['weight'].shape)}, bias={kwargs['bias'] is not None}, "
        f"stride={kwargs['stride']}, padding={kwargs['padding']!r}, dilation={kwargs['dilation']}, groups={groups})"
    )
    grad_wrt = ("input", "weight", "bias") if kwargs["bias"] is not None else ("input", "weight")
    return Case(kwargs=kwargs, label=label, grad_wrt=grad_wrt)


def _make_conv_transpose2d(rng, generator, dtype):
    groups = rng.choice([1, 1, 1, 2, 3])
    in_per_group, out_per_group = rng.randint(1, 4), rng.randint(1, 3)
    kernel = (rng.randint(1, 5), rng.randint(1, 5))
    stride = (rng.randint(1, 3), rng.randint(1, 3)) if rng.random() < 0.7 else (1, 1)
    dilation = (rng.randint(1, 3), rng.randint(1, 3)) if rng.random() < 0.5 else (1, 1)
    # output_padding must be smaller than the stride or the dilation (rarely not: torch refuses it)
    limit = 1 if rng.random() < 0.03 else 0
    output_padding = tuple(rng.randint(0, max(s, d) - 1 + limit) for s, d in zip(stride, dilation))
    size = (rng.randint(1, 8), rng.randint(1, 8))
    # the output, (H - 1) s - 2 p + d (k - 1) + output_padding + 1, must stay >= 1 (rarely not: then it is
    # made negative, which every torch backend refuses; an output of exactly 0 rows is refused by torch's
    # reference path but returned empty by its oneDNN float32 path, so it is not drawn)
    room = [(h - 1) * s + d * (k - 1) + e for h, s, d, k, e in zip(size, stride, dilation, kernel, output_padding)]
    padding = tuple(rng.randint(0, min(3, r // 2)) for r in room)
    if rng.random() < 0.03:
        padding = (room[0] // 2 + 2, padding[1])
    batch = _batch(rng)
    if limit and batch == 0:  # torch skips the output_padding check for an empty batch
        batch = 1
    shape = ((batch,) if batch is not None else ()) + (groups * in_per_group, *size)
    kwargs = dict(
        input=_layout(rng, generator, shape, dtype),
        weight=torch.randn(groups * in_per_group, out_per_group, *kernel, generator=generator, dtype=dtype),
        bias=torch.randn(groups * out_per_group, generator=generator, dtype=dtype) if rng.random() < 0.7 else None,
        stride=_form(rng, stride),
        padding=_form(rng, padding),
        output_padding=_form(rng, output_padding),
        groups=groups,
        dilation=_form(rng, dilation),
    )
    label = (
        f"conv_transpose2d(input {tuple(shape)}, weight {tuple(kwargs['weight'].shape)}, "
        f"bias={kwargs['bias'] is not None}, stride={kwargs['stride']}, padding={kwargs['padding']}, "
        f"output_padding={kwargs['output_padding']}, groups={groups}, dilation={kwargs['dilation']})"
    )
    grad_wrt = ("input", "weight", "bias") if kwargs["bias"] is not None else ("input", "weight")
    return Case(kwargs=kwargs, label=label, grad_wrt=grad_wrt)


def _bad_conv2d():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
    one_per_group = torch.randn(6, 1, 3, 3)
    wrong_dims = r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d"

    def call(label, match, **changes):
        return BadCase(dict(dict(input=x, weight=w), **changes), match, label)

    return [
        call("negative padding", r"negative padding", padding=-1),
        call("negative padding in one dimension", r"negative padding", padding=(1, -2)),
        call("zero stride", r"non-positive stride", stride=0),
        call("negative stride", r"non-positive stride", stride=(1, -1)),
        call("zero dilation", r"non-positive dilation", dilation=0),
        call("negative dilation", r"non-positive dilation", dilation=(-1, 1)),
        call("zero groups", r"non-positive groups", groups=0),
        call("negative groups", r"non-positive groups", groups=-2),
        call("out_channels not divisible by groups", r"groups=4.*divisible by 4", weight=one_per_group, groups=4),
        call("in_channels not divisible by groups", r"groups=3.*3 channels, but got 4", weight=one_per_group, groups=3),
        call("weight in_channels differ", r"have 3 channels, but got 4", weight=torch.randn(6, 3, 3, 3)),
        call("weight in_channels times groups differ", r"groups=2.*input.*to have 8 channels", groups=2),
        call(
            "input smaller than the kernel",
            r"Kernel size can't be greater than actual input size",
            input=torch.randn(1, 4, 2, 2),
        ),
        call(
            "input smaller than the dilated kernel",
            r"Kernel size .*dilated.* can't be greater",
            input=torch.randn(1, 4, 4, 9),
            dilation=2,
        ),
        call("2-D input", wrong_dims, input=torch.randn(4, 8)),
        call("5-D input", wrong_dims, input=torch.randn(1, 2, 4, 8, 8)),
        call("3-D weight", r"expected weight to be 4-D", weight=torch.randn(6, 4, 3)),
        call("2-D weight", r"expected weight to be 4-D", weight=torch.randn(6, 4)),
        call("5-D weight", r"expected weight to be 4-D", weight=torch.randn(6, 4, 3, 3, 1)),
        call("bias of the wrong size", r"expected bias to be 1-dimensional with 6 elements", bias=torch.randn(5)),
        call("2-D bias", r"expected bias to be 1-dimensional with 6 elements", bias=torch.randn(6, 1)),
        call("unknown padding string", r"Invalid padding string: 'full'", padding="full"),
        call("padding string in capitals", r"Invalid padding string: 'SAME'", padding="SAME"),
        call("'same' with a stride", r"padding='same' is not supported for strided", padding="same", stride=2),
        call("'same' with a stride in one dim", r"'same' is not supported for strided", padding="same", stride=(1, 2)),
        call("stride with three values", r"stride to be a single integer value or a list of 2", stride=(1, 1, 1)),
        call("float stride", r"stride must be an int", stride=1.5),
        call("weight dtype differs from the input's", r"type .*float32.* and weight type .*float64", weight=w.double()),
        call(
            "bias dtype differs from the input's",
            r"input type .*float32.* and bias type .*float64",
            bias=torch.randn(6, dtype=torch.float64),
        ),
    ]


def _bad_conv_transpose2d():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(4, 3, 3, 3)
    wrong_dims = r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv_transpose2d"
    too_large = r"output padding must be smaller than either stride or dilation"

    def call(label, match, **changes):
        return BadCase(dict(dict(input=x, weight=w), **changes), match, label)

    return [
        call("negative padding", r"negative padding", padding=-1),
        call("zero stride", r"non-positive stride", stride=0),
        call("negative stride", r"non-positive stride", stride=(2, -1)),
        call("zero dilation", r"non-positive dilation", dilation=0),
        call("negative dilation", r"non-positive dilation", dilation=(1, -1)),
        call("zero groups", r"non-positive groups", groups=0),
        call("in_channels not divisible by groups", r"groups=3.*divisible by 3", groups=3),
        call("groups larger than in_channels", r"groups=8.*divisible by 8", groups=8),
        call("weight in_channels differ", r"have 3 channels, but got 4", weight=torch.randn(3, 3, 3, 3)),
        call("output_padding equal to the stride", too_large, stride=2, output_padding=2),
        call("output_padding with stride 1 and dilation 1", too_large, output_padding=1),
        call("output_padding too large in one dimension", too_large, stride=(2, 1), output_padding=(0, 1)),
        call("negative output_padding", r"negative output_padding", output_padding=-1),
        call("output smaller than 1", r"Output size is too small", input=torch.randn(1, 4, 1, 1), padding=2),
        call(
            "output of size 0",
            r"Output size is too small",
            input=torch.randn(1, 4, 1, 1),
            weight=torch.randn(4, 3, 2, 2),
            padding=1,
        ),
        call("2-D input", wrong_dims, input=torch.randn(4, 8)),
        call("5-D input", wrong_dims, input=torch.randn(1, 1, 4, 8, 8)),
        call("3-D weight", r"expected weight to be 4-D", weight=torch.randn(4, 3, 3)),
        call("bias of the wrong size", r"expected bias to be 1-dimensional with 3 elements", bias=torch.randn(4)),
        call("padding given as a string", r"'padding' must be tuple of ints, not str", padding="same"),
        call(
            "output_padding with three values",
            r"expected output_padding to be a single integer value or a list of 2",
            stride=2,
            output_padding=(1, 1, 1),
        ),
        call("weight dtype differs from the input's", r"type .*float32.* and weight type .*float64", weight=w.double()),
    ]


def _int_or_pair(value):
    """Whether `value` is an int or a pair of ints: the forms the reference implementations take."""
    return isinstance(value, int) or (isinstance(value, (tuple, list)) and len(value) == 2)


def _in_reference_scope(kwargs):
    """stride, padding, dilation (and output_padding) as ints or pairs; no 'same' or 'valid' padding."""
    names = ("stride", "padding", "dilation", "output_padding")
    return all(_int_or_pair(kwargs[name]) for name in names if name in kwargs)


CASES = {
    "conv2d": OpCases(
        reference=_torch_conv2d,
        make=_make_conv2d,
        bad=_bad_conv2d,
        rtol=1e-4,
        atol=5e-5,
        in_reference_scope=_in_reference_scope,
    ),
    "conv_transpose2d": OpCases(
        reference=F.conv_transpose2d,
        make=_make_conv_transpose2d,
        bad=_bad_conv_transpose2d,
        rtol=1e-4,
        atol=5e-5,
        in_reference_scope=_in_reference_scope,
    ),
}
