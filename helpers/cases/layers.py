"""Random configurations and invalid calls for flatten, sigmoid and batch_norm.

Parameters come from `rng` and tensors from `generator` (drawn in float64, then cast), so one seed
gives the same configuration in float32 and float64. A few configurations are ones torch refuses
(the runner then requires ours to raise the same exception class).
"""

import math

import torch
import torch.nn.functional as F

from helpers.cases import BadCase, Case, OpCases


def _randn(generator, shape, dtype, scale=1.0, offset=0.0):
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale + offset).to(dtype)


def _rand(generator, shape, dtype, low=0.0, high=1.0):
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low).to(dtype)


def _maybe_strided(rng, generator, shape, dtype, probability=0.2, **kwargs):
    """A tensor of `shape`; now and then a non-contiguous one (every other element of a wider tensor,
    or a transposed one), whose values are the same in float32 and float64."""
    shape = tuple(shape)
    if len(shape) >= 1 and rng.random() < probability:
        if len(shape) >= 2 and rng.random() < 0.5:
            wide = _randn(generator, shape[:-2] + (shape[-1], shape[-2]), dtype, **kwargs)
            return wide.transpose(-1, -2), "transposed"
        wide = _randn(generator, shape[:-1] + (2 * shape[-1],), dtype, **kwargs)
        return wide[..., ::2], "strided"
    return _randn(generator, shape, dtype, **kwargs), ""


# ----------------------------------------------------------------------------------------- flatten


def _make_flatten(rng, generator, dtype):
    ndim = rng.choice([0, 1, 2, 3, 3, 4, 4, 5])
    shape = [rng.randint(0, 3) if rng.random() < 0.05 else rng.randint(1, 5) for _ in range(ndim)]
    input, layout = _maybe_strided(rng, generator, shape, dtype, probability=0.3)
    rank = max(ndim, 1)
    kwargs = {"input": input}
    roll = rng.random()
    if roll < 0.03:  # torch refuses: start_dim after end_dim, or out of range
        start, end = (rank - 1, 0) if rank > 1 else (0, rank)
    elif roll < 0.05:
        start, end = rank, -1
    else:
        start = rng.randint(0, rank - 1)
        end = rng.randint(start, rank - 1)
    if rng.random() < 0.3 and 0 <= start < rank:
        start -= rank
    if rng.random() < 0.4 and 0 <= end < rank:
        end -= rank
    if rng.random() < 0.15 and start in (0, -rank):
        pass  # default start_dim
    else:
        kwargs["start_dim"] = start
    if rng.random() < 0.15 and end in (-1, rank - 1):
        pass  # default end_dim
    else:
        kwargs["end_dim"] = end
    label = f"flatten {tuple(shape)} {layout} start_dim={kwargs.get('start_dim', '-')} end_dim={kwargs.get('end_dim', '-')}"
    return Case(kwargs=kwargs, label=label)


def _bad_flatten():
    x = torch.zeros(2, 3, 4)
    return [
        BadCase(dict(input=x, start_dim=2, end_dim=1), r"start_dim cannot come after end_dim", "start_dim > end_dim"),
        BadCase(dict(input=x, start_dim=-1, end_dim=0), r"start_dim cannot come after end_dim", "negative start_dim after end_dim"),
        BadCase(dict(input=x, start_dim=3), r"start_dim.*out of range", "start_dim out of range"),
        BadCase(dict(input=x, end_dim=-4), r"end_dim.*out of range", "end_dim out of range"),
        BadCase(dict(input=torch.tensor(1.0), start_dim=1), r"start_dim.*out of range.*\[-1, 0\]", "0-d input, start_dim=1"),
        BadCase(dict(input=x, start_dim=1.0), r"start_dim.*must be int", "float start_dim"),
        BadCase(dict(input=x, end_dim=True), r"end_dim.*must be int", "bool end_dim"),
        BadCase(dict(input=[1.0, 2.0]), r"input.*must be Tensor", "a list as input"),
    ]


# ----------------------------------------------------------------------------------------- sigmoid


def _make_sigmoid(rng, generator, dtype):
    ndim = rng.choice([0, 1, 2, 3, 4])
    shape = [rng.randint(0, 2) if rng.random() < 0.05 else rng.randint(1, 6) for _ in range(ndim)]
    scale = rng.choice([1.0, 1.0, 5.0, 30.0, 100.0, 1000.0])
    input, layout = _maybe_strided(rng, generator, shape, dtype, scale=scale)
    label = f"sigmoid {tuple(shape)} {layout} scale={scale}"
    if input.numel() >= 4 and rng.random() < 0.15:
        input = input.clone()
        flat = input.view(-1) if input.is_contiguous() else None
        if flat is not None:
            flat[:4] = torch.tensor([1000.0, -1000.0, float("inf"), -float("inf")], dtype=dtype)
            label += " with +-1000 and +-inf"
    if input.numel() and rng.random() < 0.05:
        return Case(kwargs={"input": (input * 4).round().to(torch.int64)}, label=label + " int64", grad_wrt=())
    return Case(kwargs={"input": input}, label=label)


def _bad_sigmoid():
    return [
        BadCase(dict(input=[0.5, 1.0]), r"input.*must be Tensor", "a list as input"),
        BadCase(dict(input=torch.zeros(3), out=torch.empty(3, dtype=torch.int64)), r"can't be cast", "integer out="),
    ]


# -------------------------------------------------------------------------------------- batch_norm


def _batch_norm_shape(rng, training):
    """The input's shape, (N, C, ...) of 2 to 6 dimensions, and the number of values per channel the
    statistics get (C; 0 without a channel dimension, as torch counts).

    Now and then a degenerate shape: an empty one (N = 0, C = 0 or an empty spatial dimension), which
    torch takes in both modes whatever the sizes of the statistics, or a 1-D one, which it takes only
    when empty.
    """
    roll = rng.random()
    if roll < 0.05:  # 1-D: (0,) passes, (L,) is refused (IndexError or RuntimeError, by the statistics)
        return [rng.choice([0, 0, 1, 3])], rng.choice([0, 3])
    ndim = rng.choice([2, 3, 4, 4, 4, 5, 6] if roll < 0.5 else [2, 3, 4, 4, 4, 5])
    batch = rng.choice([1, 2, 2, 3, 4, 8])
    channels = rng.randint(1, 6)
    spatial = [rng.randint(1, 5) for _ in range(ndim - 2)]
    if training and batch * math.prod(spatial) == 1 and rng.random() < 0.8:
        batch = 2  # one value per channel: torch refuses to train on it (kept now and then)
    shape = [batch, channels] + spatial
    if roll > 0.85:  # empty: torch returns input * weight[0] + bias[0] without checking the statistics
        shape[rng.randrange(ndim)] = 0
        return shape, max(shape[1] + rng.choice([0, 0, 0, 1]), 0)
    return shape, channels


def _make_batch_norm(rng, generator, dtype):
    training = rng.random() < 0.55
    shape, channels = _batch_norm_shape(rng, training)
    ndim = len(shape)
    # Means up to 10 standard deviations away from 0: beyond that float32 itself (torch too) loses the
    # digits of the normalised values, and two correct float32 results may differ by more than 1e-5.
    scale = rng.choice([1.0, 1.0, 0.1, 5.0])
    offset = rng.choice([0.0, 0.0, 0.0, 3.0, -10.0]) * scale
    input, layout = _maybe_strided(rng, generator, shape, dtype, probability=0.15, scale=scale, offset=offset)
    if not layout and ndim in (4, 5) and rng.random() < 0.3:
        input = input.contiguous(memory_format=torch.channels_last if ndim == 4 else torch.channels_last_3d)
        layout = "channels_last"
    kwargs = {"input": input}
    if (training or input.numel() == 0) and rng.random() < 0.25:  # evaluation mode needs them, unless empty
        kwargs.update(running_mean=None, running_var=None)
    else:
        kwargs.update(
            running_mean=_randn(generator, channels, dtype, scale=0.5, offset=offset),
            running_var=_rand(generator, channels, dtype, 0.5, 1.5) * scale**2,
        )
    if rng.random() < 0.6:
        kwargs["weight"] = _randn(generator, channels, dtype, scale=0.5, offset=1.0)
    if rng.random() < 0.6:
        kwargs["bias"] = _randn(generator, channels, dtype)
    if training or rng.random() < 0.3:
        kwargs["training"] = training
    if rng.random() < 0.6:
        kwargs["momentum"] = rng.choice([0.1, 0.0, 1.0, 0.3, rng.uniform(0.0, 1.0)])
    if rng.random() < 0.5:
        kwargs["eps"] = rng.choice([1e-5, 1e-3, 0.1, 0.1, float("nan")])  # NaN passes torch's checks
    label = (
        f"batch_norm {tuple(shape)} {layout} statistics of {channels} training={training} "
        f"running={kwargs['running_mean'] is not None} "
        f"weight={'weight' in kwargs} bias={'bias' in kwargs} momentum={kwargs.get('momentum', '-')} "
        f"eps={kwargs.get('eps', '-')} offset={offset} scale={scale}"
    )
    return Case(kwargs=kwargs, label=label, grad_wrt=("input", "weight", "bias"))


def _bad_batch_norm():
    x = torch.zeros(4, 3, 5, 5)
    mean, var = torch.zeros(3), torch.ones(3)
    return [
        BadCase(dict(input=torch.zeros(1, 3), running_mean=mean, running_var=var, training=True),
                r"more than 1 value per channel", "training with one value per channel"),
        BadCase(dict(input=torch.zeros(1, 3, 1, 1), running_mean=None, running_var=None, training=True),
                r"more than 1 value per channel", "training on a 1x1 image of batch 1"),
        BadCase(dict(input=x, running_mean=torch.zeros(4), running_var=var),
                r"running_mean should contain 3 elements", "running_mean of the wrong size"),
        BadCase(dict(input=x, running_mean=mean, running_var=torch.ones(2), training=True),
                r"running_var should contain 3 elements", "running_var of the wrong size"),
        BadCase(dict(input=x, running_mean=torch.zeros(3, 1), running_var=var),
                r"running_mean .*1-D", "2-D running_mean"),
        BadCase(dict(input=x, running_mean=mean, running_var=var, weight=torch.ones(4)),
                r"weight should contain 3 elements", "weight of the wrong size"),
        BadCase(dict(input=x, running_mean=mean, running_var=var, bias=torch.ones(2)),
                r"bias should contain 3 elements", "bias of the wrong size"),
        BadCase(dict(input=torch.zeros(3), running_mean=mean, running_var=var),
                r"input must have at least 2 dimensions", "1-D input"),
        BadCase(dict(input=torch.zeros(5), running_mean=None, running_var=None, training=True),
                r"input must have at least 2 dimensions", "1-D input in training"),
        BadCase(dict(input=x, running_mean=None, running_var=var),
                r"running_mean must be defined in evaluation mode", "no running_mean in evaluation"),
        BadCase(dict(input=x, running_mean=mean, running_var=None),
                r"running_var must be defined in evaluation mode", "no running_var in evaluation"),
        BadCase(dict(input=x, running_mean=mean, running_var=None, training=True),
                r"running_mean and running_var must either both be None", "only running_mean in training"),
        BadCase(dict(input=x, running_mean=mean, running_var=var, training=True, eps=0.0),
                r"eps must be positive during training", "eps=0 in training"),
        BadCase(dict(input=x, running_mean=mean, running_var=var, eps=-1e-5),
                r"eps must be non-negative", "negative eps"),
        BadCase(dict(input=x, running_mean=mean.double(), running_var=var),
                r"mixed dtype.*running_mean", "float64 running_mean, float32 input"),
        BadCase(dict(input=x, running_mean=mean, running_var=var, weight=torch.ones(3, dtype=torch.float64)),
                r"mixed dtype.*weight", "float64 weight, float32 input"),
        BadCase(dict(input=torch.zeros(4, 3, dtype=torch.int64), running_mean=mean, running_var=var),
                r"floating point", "integer input"),
        BadCase(dict(input=x, running_mean=mean, running_var=var, training=True, momentum=None),
                r"momentum.*must be float", "momentum=None"),
        BadCase(dict(input=x, running_mean=mean, running_var=var, training=1),
                r"training.*must be bool", "training=1"),
        BadCase(dict(input=[1.0, 2.0], running_mean=mean, running_var=var),
                r"input.*must be Tensor", "a list as input"),
        # degenerate shapes: torch's exception class depends on which of its checks fails first
        BadCase(dict(input=torch.zeros(3), running_mean=torch.zeros(0), running_var=torch.ones(0)),
                r"input must have at least 2 dimensions", "1-D input, statistics of 0 elements"),
        BadCase(dict(input=torch.zeros(3), running_mean=None, running_var=None, weight=torch.ones(3), training=True),
                r"weight should contain 0 elements", "1-D input with a weight, training"),
        BadCase(dict(input=torch.tensor(1.0), running_mean=torch.zeros(1), running_var=torch.ones(1)),
                r"running_mean should contain 0 elements", "0-d input"),
        BadCase(dict(input=torch.tensor(1.0), running_mean=None, running_var=None, training=True),
                r"input must have at least 2 dimensions", "0-d input in training"),
        BadCase(dict(input=torch.zeros(1, 0, 1), running_mean=None, running_var=None, training=True),
                r"more than 1 value per channel", "training on an empty input with one value per channel"),
        BadCase(dict(input=torch.zeros(4, 0, 5), running_mean=torch.zeros(0), running_var=torch.ones(0),
                     weight=torch.ones(0)),
                r"weight has no elements", "no channels, with a weight (torch reads weight[0])"),
        BadCase(dict(input=torch.zeros(0, 3), running_mean=mean, running_var=var, bias=torch.ones(0)),
                r"bias has no elements", "empty batch, with a bias of 0 elements"),
        BadCase(dict(input=x, running_mean=mean, running_var=torch.ones(1, 3), training=True),
                r"running_var must be a 1-D tensor", "2-D running_var"),
        BadCase(dict(input=torch.zeros(3), running_mean=None, running_var=None, training=True),
                r"input must have at least 2 dimensions", "1-D input, training, no statistics"),
    ]


def _batch_norm_in_reference_scope(kwargs):
    """The short reference normalises; an input without elements takes torch's shortcut (input * weight[0] +
    bias[0], the statistics unchecked), which only the drop-in reproduces."""
    return kwargs["input"].numel() > 0


CASES = {
    # every call torch accepts is in the reference scope of flatten and sigmoid
    "flatten": OpCases(reference=torch.flatten, make=_make_flatten, bad=_bad_flatten),
    "sigmoid": OpCases(reference=torch.sigmoid, make=_make_sigmoid, bad=_bad_sigmoid),
    "batch_norm": OpCases(reference=F.batch_norm, make=_make_batch_norm, bad=_bad_batch_norm,
                          in_reference_scope=_batch_norm_in_reference_scope),
}
