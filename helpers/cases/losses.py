"""Random configurations and invalid calls for cross_entropy and mse_loss.

Parameters come from `rng` and tensors from `generator` (drawn in float64, then cast), so one seed
gives the same configuration in float32 and float64. A few configurations are ones torch refuses
(the runner then requires ours to raise the same exception class). The deprecated `size_average` /
`reduce` arguments and broadcast sizes make torch (and ours) warn; callers may silence that.
"""

import torch
import torch.nn.functional as F

from helpers.cases import BadCase, Case, OpCases
from helpers.cases.layers import _maybe_strided, _rand, _randn


def _reduction_kwargs(rng):
    """reduction='none'/'mean'/'sum' (or left at its default), or now and then the legacy pair."""
    if rng.random() < 0.08:
        legacy = {}
        for name in ("size_average", "reduce"):
            value = rng.choice([None, True, False])
            if value is not None:
                legacy[name] = value
        return legacy or {"reduce": False}
    choice = rng.choice(["none", "mean", "sum", "default"])
    return {} if choice == "default" else {"reduction": choice}


# ----------------------------------------------------------------------------------- cross_entropy


def _make_cross_entropy(rng, generator, dtype):
    layout = rng.choices(["unbatched", "batched", "k-dimensional"], weights=[1, 4, 3])[0]
    classes = 1 if rng.random() < 0.04 else rng.randint(2, 12)
    batch = 0 if rng.random() < 0.03 else rng.randint(1, 8)
    spatial = [rng.randint(1, 4) for _ in range(rng.randint(1, 3))] if layout == "k-dimensional" else []
    shape = (classes,) if layout == "unbatched" else (batch, classes, *spatial)
    scale = rng.choice([1.0, 1.0, 3.0, 10.0, 1000.0])
    input, strided = _maybe_strided(rng, generator, shape, dtype, probability=0.15, scale=scale)
    kwargs = {"input": input}
    probabilities = rng.random() < 0.3
    label = f"cross_entropy {layout} {tuple(shape)} {strided} scale={scale}"
    if probabilities:
        kind = rng.choice(["softmax", "uniform", "one-hot", "unnormalised"])
        if kind == "softmax":
            target = _randn(generator, shape, dtype, scale=2.0).softmax(dim=0 if layout == "unbatched" else 1)
        elif kind == "uniform":
            target = torch.full(shape, 1.0 / classes, dtype=dtype)
        elif kind == "one-hot":
            index = torch.randint(classes, () if layout == "unbatched" else (batch, *spatial), generator=generator)
            target = F.one_hot(index, classes).movedim(-1, 0 if layout == "unbatched" else 1).to(dtype)
        else:
            target = _rand(generator, shape, dtype, 0.0, 2.0)
        kwargs["target"] = target
        if rng.random() < 0.2:
            kwargs["ignore_index"] = -1 if rng.random() < 0.9 else 0  # torch refuses a class index here
        label += f" probabilities ({kind})"
        grad_wrt = ("input", "target")
    else:
        target_shape = (() if rng.random() < 0.8 else (1,)) if layout == "unbatched" else (batch, *spatial)
        target = torch.randint(classes, target_shape, generator=generator)
        roll = rng.random()
        if roll < 0.35:
            ignore_index = rng.choice([rng.randint(0, classes - 1), -1, -100])
            ignored = torch.rand(target_shape, generator=generator) < (1.0 if rng.random() < 0.15 else 0.3)
            target = target.masked_fill(ignored, ignore_index)
            if ignore_index != -100 or rng.random() < 0.5:
                kwargs["ignore_index"] = ignore_index
            label += f" ignore_index={ignore_index} ({int(ignored.sum())} ignored)"
        elif roll < 0.37 and target.numel():  # torch refuses: a class index out of range
            target.view(-1)[0] = classes
            label += " target out of range"
        uint8 = rng.random() < 0.05 and kwargs.get("ignore_index", -100) < 0 and bool((target >= 0).all())
        if uint8:
            target = target.to(torch.uint8)
            label += " uint8 target"
        kwargs["target"] = target
        # torch's backward fails for an unbatched input with a (1,)-shaped target, and for some uint8
        # targets: compare values only there.
        grad_wrt = ("input",) if target_shape != (1,) and not uint8 else ()
    if rng.random() < 0.35:
        weight = _rand(generator, classes, dtype, 0.2, 2.0)
        if classes > 2 and rng.random() < 0.2:
            weight[rng.randrange(classes)] = 0.0
        kwargs["weight"] = weight
        label += " weighted"
    kwargs.update(_reduction_kwargs(rng))
    roll = rng.random()
    if roll < 0.4:
        kwargs["label_smoothing"] = rng.uniform(0.0, 1.0)
    elif roll < 0.45:
        kwargs["label_smoothing"] = rng.choice([1.0, -0.2, 0.0])  # 1: uniform target; < 0: torch ignores it
    label += " " + " ".join(f"{k}={kwargs[k]}" for k in ("reduction", "size_average", "reduce", "label_smoothing") if k in kwargs)
    return Case(kwargs=kwargs, label=label, grad_wrt=grad_wrt)


def _bad_cross_entropy():
    logits = torch.zeros(4, 5)
    classes = torch.tensor([0, 1, 2, 3])
    probabilities = torch.full((4, 5), 0.2)
    return [
        BadCase(dict(input=logits, target=torch.tensor([0, 1, 5, 3])), r"Target 5 is out of bounds", "class index = C"),
        BadCase(dict(input=logits, target=torch.tensor([0, -1, 2, 3])), r"Target -1 is out of bounds", "negative class index"),
        BadCase(dict(input=logits, target=torch.tensor([0, 1, 7, 3]), label_smoothing=0.2, weight=torch.ones(5)),
                r"Target 7 is out of bounds", "out of range with smoothing and weight"),
        BadCase(dict(input=logits, target=torch.tensor([0, 1, 2])), r"input batch_size \(4\).*target batch_size \(3\)", "batch sizes differ"),
        BadCase(dict(input=torch.zeros(2, 5, 3, 4), target=torch.zeros(2, 3, 5, dtype=torch.int64)),
                r"expected target size \[2, 3, 4\]", "K-dimensional target of the wrong size"),
        BadCase(dict(input=torch.zeros(2, 5, 3), target=torch.zeros(2, dtype=torch.int64)),
                r"expected target size \[2, 3\]", "K-dimensional target without its spatial dimension"),
        BadCase(dict(input=logits, target=torch.zeros(4, 2, dtype=torch.int64)), r"0D or 1D target", "2-D target for 2-D input"),
        BadCase(dict(input=torch.zeros(5), target=torch.tensor([1, 2])), r"1D target must have size 1", "unbatched, two targets"),
        BadCase(dict(input=torch.tensor(1.0), target=torch.tensor([0])), r"input must have a class dimension", "0-d input"),
        BadCase(dict(input=logits, target=classes, weight=torch.ones(4)), r"weight tensor should be defined .* all 5 classes", "weight of the wrong size"),
        BadCase(dict(input=logits, target=probabilities, weight=torch.ones(4)), r"weight tensor should be defined .* all 5 classes", "weight of the wrong size, probabilities"),
        BadCase(dict(input=logits, target=classes, weight=torch.ones(5, dtype=torch.float64)), r"weight of scalar type", "float64 weight, float32 input"),
        BadCase(dict(input=logits, target=classes, label_smoothing=1.5), r"label_smoothing must be between 0.0 and 1.0", "label_smoothing > 1"),
        BadCase(dict(input=logits, target=probabilities, label_smoothing=1.5), r"label_smoothing must be between 0.0 and 1.0", "label_smoothing > 1, probabilities"),
        BadCase(dict(input=logits, target=classes, reduction="avg"), r"avg is not a valid value for reduction", "unknown reduction"),
        BadCase(dict(input=logits, target=probabilities, reduction=None), r"None is not a valid value for reduction", "reduction=None"),
        BadCase(dict(input=logits, target=classes.int()), r"target dtype to be Long or Byte", "int32 class indices"),
        BadCase(dict(input=logits, target=classes.float()), r"target dtype to be Long or Byte", "float class indices"),
        BadCase(dict(input=logits, target=torch.ones(4, 5, dtype=torch.int64)), r"floating point type for target with class probabilities", "integer probabilities"),
        BadCase(dict(input=logits, target=probabilities, ignore_index=0), r"ignore_index is not supported for floating point target", "ignore_index with probabilities"),
        BadCase(dict(input=torch.zeros(4, 5, dtype=torch.int64), target=classes), r"input must be floating point", "integer logits"),
        BadCase(dict(input=logits, target=classes, ignore_index=1.0), r"ignore_index.*must be int", "float ignore_index"),
        BadCase(dict(input=[0.0, 1.0], target=classes), r"input.*must be Tensor", "a list as input"),
    ]


# ----------------------------------------------------------------------------------------- mse_loss


def _make_mse_loss(rng, generator, dtype):
    ndim = rng.choice([0, 1, 2, 3, 4, 4])
    shape = [rng.randint(0, 2) if rng.random() < 0.04 else rng.randint(1, 5) for _ in range(ndim)]
    input_shape, target_shape = list(shape), list(shape)
    roll = rng.random()
    if roll < 0.2 and ndim:  # broadcast: dimensions of size 1 or missing on one side (torch warns)
        smaller = rng.choice([input_shape, target_shape])
        for position in range(ndim):
            if rng.random() < 0.4:
                smaller[position] = 1
        if rng.random() < 0.4:
            del smaller[: rng.randint(1, ndim)]
    elif roll < 0.22 and ndim:  # torch refuses: sizes that do not broadcast
        input_shape[-1], target_shape[-1] = 3, 2
    input, strided = _maybe_strided(rng, generator, input_shape, dtype)
    target = _randn(generator, target_shape, dtype, scale=rng.choice([0.1, 1.0, 3.0]))
    kwargs = dict(input=input, target=target, **_reduction_kwargs(rng))
    if rng.random() < 0.2:
        kwargs["weight"] = _rand(generator, input_shape, dtype, 0.0, 2.0)
    label = (
        f"mse_loss input {tuple(input_shape)} {strided} target {tuple(target_shape)} weight={'weight' in kwargs} "
        + " ".join(f"{k}={kwargs[k]}" for k in ("reduction", "size_average", "reduce") if k in kwargs)
    )
    return Case(kwargs=kwargs, label=label, grad_wrt=("input", "target", "weight"))


def _bad_mse_loss():
    x = torch.zeros(3, 4)
    return [
        BadCase(dict(input=x, target=torch.zeros(5)), r"must broadcast", "sizes that do not broadcast"),
        BadCase(dict(input=x, target=torch.zeros(2, 4)), r"must broadcast", "batch sizes that do not broadcast"),
        BadCase(dict(input=x, target=x, reduction="avg"), r"avg is not a valid value for reduction", "unknown reduction"),
        BadCase(dict(input=x, target=x, reduction=None), r"None is not a valid value for reduction", "reduction=None"),
        BadCase(dict(input=x, target=x, weight=torch.ones(4)), r"Weights and input must have the same size", "weight of the wrong size"),
        BadCase(dict(input=x, target=x, weight=torch.ones(3, 4), reduction="avg"), r"Invalid reduction mode: avg", "weighted, unknown reduction"),
        BadCase(dict(input=x.long(), target=x.long()), r"must be floating point", "integer input and target"),
    ]


def _cross_entropy_in_reference_scope(kwargs):
    """Class indices (int64) as target, shaped like the input without its class dimension."""
    input, target = kwargs["input"], kwargs["target"]
    return target.dtype == torch.int64 and target.dim() == input.dim() - 1


CASES = {
    "cross_entropy": OpCases(
        reference=F.cross_entropy,
        make=_make_cross_entropy,
        bad=_bad_cross_entropy,
        in_reference_scope=_cross_entropy_in_reference_scope,
        reference_omits=dict(size_average=None, reduce=None, label_smoothing=0.0),
    ),
    # every call torch accepts without the legacy size_average / reduce and without weight
    "mse_loss": OpCases(
        reference=F.mse_loss,
        make=_make_mse_loss,
        bad=_bad_mse_loss,
        reference_omits=dict(size_average=None, reduce=None, weight=None),
    ),
}
