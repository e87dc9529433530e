"""The assignment's own calls of the ten Q1 functions, as `Case`s (torch's function is the oracle).

Each call runs on the write-up's input: a seeded (1, 3, 32, 32) tensor from
``torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(SEED))``; the other tensors a call
needs (a target, class indices) come next from the same generator, and the layers' weights from
``torch.manual_seed(SEED)`` as in the Q1 notebook. conv2d has two calls: ``Conv2d(3, 6, 3)`` and
``Conv2d(3, 6, 5, stride=2, dilation=2)``. The write-up does not say how batch_norm's running
statistics were made; they are the input's own per-channel mean and (unbiased) variance here.

Only the arguments the short references take are passed (torch's defaults for the others, as in
the write-up's calls). Every lookup builds fresh tensors, so an in-place update cannot leak:
``ASSIGNMENT_CASES["conv2d"]`` is a new list of float32 Cases each time, and
``assignment_cases("conv2d", torch.float64)`` the same calls in float64 (the same values, cast).
"""

from collections.abc import Mapping

import torch

from helpers.cases import Case

SEED = 0


def _input(dtype):
    """The seeded (1, 3, 32, 32) input, and its generator (to draw what the call needs next)."""
    generator = torch.Generator().manual_seed(SEED)
    return torch.randn(1, 3, 32, 32, generator=generator).to(dtype), generator


def _seeded_layer(make_layer, dtype):
    """`make_layer()` after ``torch.manual_seed(SEED)``, without changing the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return make_layer().to(dtype)


def _layer_kwargs(layer, *names):
    """A convolution layer's weight, bias and the named hyper-parameters, as keyword arguments."""
    kwargs = dict(weight=layer.weight.detach().clone(), bias=layer.bias.detach().clone())
    kwargs.update({name: getattr(layer, name) for name in names})
    return kwargs


def _max_pool2d(dtype):
    input, _ = _input(dtype)
    kwargs = dict(input=input, kernel_size=2, stride=1, padding=0, dilation=1)
    return [Case(kwargs, "MaxPool2d(kernel_size=2, stride=1)")]


def _avg_pool2d(dtype):
    input, _ = _input(dtype)
    kwargs = dict(input=input, kernel_size=2, stride=1, padding=0, count_include_pad=True)
    return [Case(kwargs, "AvgPool2d(kernel_size=2, stride=1)")]


def _conv2d(dtype):
    cases = []
    for label, make_layer in [
        ("Conv2d(3, 6, 3)", lambda: torch.nn.Conv2d(3, 6, 3)),
        ("Conv2d(3, 6, 5, stride=2, dilation=2)", lambda: torch.nn.Conv2d(3, 6, 5, stride=2, dilation=2)),
    ]:
        layer = _seeded_layer(make_layer, dtype)
        input, _ = _input(dtype)
        kwargs = dict(input=input, **_layer_kwargs(layer, "stride", "padding", "dilation", "groups"))
        cases.append(Case(kwargs, label, grad_wrt=("input", "weight", "bias")))
    return cases


def _conv_transpose2d(dtype):
    layer = _seeded_layer(lambda: torch.nn.ConvTranspose2d(3, 4, 3), dtype)
    input, _ = _input(dtype)
    names = ("stride", "padding", "output_padding", "groups", "dilation")
    kwargs = dict(input=input, **_layer_kwargs(layer, *names))
    return [Case(kwargs, "ConvTranspose2d(3, 4, 3)", grad_wrt=("input", "weight", "bias"))]


def _flatten(dtype):
    input, _ = _input(dtype)
    return [Case(dict(input=input, start_dim=0, end_dim=-1), "flatten(start_dim=0, end_dim=-1)")]


def _sigmoid(dtype):
    input, _ = _input(dtype)
    return [Case(dict(input=input), "sigmoid")]


def _roi_pool(dtype):
    input, _ = _input(dtype)
    boxes = torch.tensor([[0, 0, 0, 6.5, 6.5]], dtype=dtype)
    kwargs = dict(input=input, boxes=boxes, output_size=(3, 3))
    return [Case(kwargs, "roi_pool(boxes=[[0, 0, 0, 6.5, 6.5]], output_size=(3, 3))")]


def _batch_norm(dtype):
    input, _ = _input(dtype)
    kwargs = dict(
        input=input,
        running_mean=input.mean((0, 2, 3)),
        running_var=input.var((0, 2, 3)),
        weight=None,
        bias=None,
        training=False,
        momentum=0.1,
        eps=1e-05,
    )
    return [Case(kwargs, "batch_norm(evaluation, running statistics = the input's per-channel mean and variance)")]


def _cross_entropy(dtype):
    input, generator = _input(dtype)
    target = torch.randint(3, (1, 32, 32), generator=generator)  # a class in [0, 3) per pixel
    kwargs = dict(input=input, target=target, weight=None, ignore_index=-100, reduction="mean")
    return [Case(kwargs, "cross_entropy((1, 3, 32, 32) logits, (1, 32, 32) class indices)")]


def _mse_loss(dtype):
    input, generator = _input(dtype)
    target = torch.randn(1, 3, 32, 32, generator=generator).to(dtype)
    return [Case(dict(input=input, target=target, reduction="mean"), "mse_loss(input, target)", grad_wrt=("input", "target"))]


_BUILDERS = {
    "max_pool2d": _max_pool2d,
    "avg_pool2d": _avg_pool2d,
    "conv2d": _conv2d,
    "conv_transpose2d": _conv_transpose2d,
    "flatten": _flatten,
    "sigmoid": _sigmoid,
    "roi_pool": _roi_pool,
    "batch_norm": _batch_norm,
    "cross_entropy": _cross_entropy,
    "mse_loss": _mse_loss,
}


def assignment_cases(op, dtype=torch.float32):
    """A fresh list of the assignment's calls of `op`, with tensors in `dtype`."""
    return _BUILDERS[op](dtype)


class _FreshCases(Mapping):
    """op name -> a fresh list of its assignment Cases (float32) on every lookup."""

    def __getitem__(self, op):
        return assignment_cases(op)

    def __iter__(self):
        return iter(_BUILDERS)

    def __len__(self):
        return len(_BUILDERS)

    def __repr__(self):
        return f"ASSIGNMENT_CASES({', '.join(_BUILDERS)})"


ASSIGNMENT_CASES = _FreshCases()
