"""Measurements that show what batch normalisation does, for the Q2b notebook.

Each function takes a model (the assignment's ``bn`` net, or any net with ``BatchNorm2d`` layers)
and data, and returns numbers: per-channel statistics before and after a batch norm, the path of
its running statistics, how much one sample's output depends on the rest of its batch, accuracy in
training versus evaluation mode, and a step-by-step comparison of two nets trained side by side.
The ``format_*`` functions turn those numbers into the tables the notebook prints.

A forward pass in training mode updates every batch norm's running statistics, so whatever runs
in training mode runs on a deep copy: the model passed in is never changed. Everything runs without
gradients except :func:`rescaling_effect`, which measures one, and :func:`compare_training`, which
trains (copies of) its two nets.
"""

import contextlib
import copy
import itertools

import torch
from torch import nn
from torch.nn import functional as F

from helpers.data import Batches
from helpers.training import describe

# check_training_comparison's default: in float32 two implementations of the same net start ~1e-5
# apart (rounding) and a few SGD steps carry that to ~1e-4; pass a tighter one for float64 (~1e-13).
DEFAULT_TOLERANCE = 1e-3


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the layer of interest has run."""


# --------------------------------------------------------------------------------------------
# Looking inside a layer
# --------------------------------------------------------------------------------------------


def channel_moments(tensor):
    """Return the per-channel mean and biased variance of ``tensor`` [N, C, ...] as float64 [C] tensors.

    The statistics run over every dimension but the channel dimension 1 (N, H, W for images), the
    axes ``BatchNorm2d`` normalises over; biased means divided by the count, as batch norm does when
    it normalises.
    """
    if not isinstance(tensor, torch.Tensor) or tensor.dim() < 2:
        found = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise ValueError(f"tensor must be a tensor [N, C, ...] with at least 2 dimensions, got {found}")
    dims = [0, *range(2, tensor.dim())]
    var, mean = torch.var_mean(tensor.double(), dim=dims, correction=0)
    return mean, var


def get_layer(model, layer_name, kind=nn.Module):
    """Return the submodule of ``model`` called ``layer_name`` (as in ``named_modules``), of type ``kind``."""
    modules = dict(model.named_modules())
    layer = modules.get(layer_name)
    if layer is None or not isinstance(layer, kind):
        names = [name for name, module in modules.items() if name and isinstance(module, kind)]
        raise ValueError(f"layer_name must name a {kind.__name__} of the model, one of {names}; got {layer_name!r}")
    return layer


def layer_input_output(model, layer_name, inputs, training=True):
    """Run ``inputs`` through ``model`` up to the layer ``layer_name``; return that layer's (input, output).

    The forward pass stops right after the layer, so the layers behind it cost nothing. ``training``
    chooses the mode (batch statistics or running statistics in the batch norms); it runs on a copy
    of the model, without gradients, so the model's running statistics and mode stay as they are.
    """
    model = _copy_in_mode(model, training)
    layer = get_layer(model, layer_name)
    with torch.no_grad():
        captured = _run_until(model, layer, _on_device_of(model, inputs))
    return captured["input"], captured["output"]


def normalisation_statistics(model, layer_name, inputs):
    """Per-channel statistics of the batch norm ``layer_name`` in training mode, on the batch ``inputs``.

    Returns a dict of float64 [C] tensors: ``input_mean``, ``input_var``, ``output_mean``,
    ``output_var`` (biased variances over N, H, W), and ``normalised_mean``, ``normalised_var``: the
    statistics of x_hat = (x - mean) / sqrt(var + eps), which is the output itself without the
    affine parameters and (output - beta) / gamma with them. ``expected_var`` = var / (var + eps) is
    x_hat's exact variance: 1 unless a channel hardly varies (a dead ReLU channel has var 0, so 0).
    ``weight`` and ``bias`` hold gamma and beta (None without them).
    """
    layer = get_layer(model, layer_name, nn.BatchNorm2d)
    layer_input, layer_output = layer_input_output(model, layer_name, inputs, training=True)
    input_mean, input_var = channel_moments(layer_input)
    output_mean, output_var = channel_moments(layer_output)
    if layer.affine:
        shape = (1, -1) + (1,) * (layer_output.dim() - 2)
        normalised = (layer_output.double() - layer.bias.detach().double().view(shape)) / layer.weight.detach().double().view(shape)
        normalised_mean, normalised_var = channel_moments(normalised)
    else:
        normalised_mean, normalised_var = output_mean, output_var
    return {
        "input_mean": input_mean,
        "input_var": input_var,
        "output_mean": output_mean,
        "output_var": output_var,
        "normalised_mean": normalised_mean,
        "normalised_var": normalised_var,
        "expected_var": input_var / (input_var + layer.eps),
        "weight": layer.weight.detach().double().clone() if layer.affine else None,
        "bias": layer.bias.detach().double().clone() if layer.affine else None,
    }


def format_normalisation_statistics(statistics, channels=6):
    """A printable table of :func:`normalisation_statistics`: the first ``channels`` channels, then the
    largest deviations from mean 0 and variance 1 over all channels."""
    _check_positive_int("channels", channels)
    affine = statistics["weight"] is not None
    header = f"{'channel':>7}{'input mean':>12}{'input var':>12}{'x_hat mean':>13}{'x_hat var':>12}"
    if affine:
        header += f"{'gamma':>9}{'beta':>9}{'out mean':>10}{'out var':>10}"
    lines = [header, "-" * len(header)]
    count = len(statistics["input_mean"])
    for channel in range(min(channels, count)):
        line = (
            f"{channel:>7}{statistics['input_mean'][channel]:>12.4f}{statistics['input_var'][channel]:>12.4f}"
            f"{statistics['normalised_mean'][channel]:>13.1e}{statistics['normalised_var'][channel]:>12.6f}"
        )
        if affine:
            line += (
                f"{statistics['weight'][channel]:>9.3f}{statistics['bias'][channel]:>9.3f}"
                f"{statistics['output_mean'][channel]:>10.3f}{statistics['output_var'][channel]:>10.3f}"
            )
        lines.append(line)
    mean_deviation = statistics["normalised_mean"].abs().max().item()
    var_deviation = (statistics["normalised_var"] - 1).abs().max().item()
    formula_deviation = (statistics["normalised_var"] - statistics["expected_var"]).abs().max().item()
    quiet = int((statistics["expected_var"] < 0.99).sum())
    lines += [
        "",
        f"over all {count} channels: input  max |mean| {statistics['input_mean'].abs().max():.3f}, "
        f"max |var - 1| {(statistics['input_var'] - 1).abs().max():.3f}",
        f"over all {count} channels: x_hat  max |mean| {mean_deviation:.1e}, max |var - 1| {var_deviation:.1e}, "
        f"max |var - var_in / (var_in + eps)| {formula_deviation:.1e}",
        f"channels whose input variance is below 100 eps (x_hat var < 0.99): {quiet}",
    ]
    if affine:
        lines.append("with the affine parameters the layer outputs gamma * x_hat + beta: mean beta, variance gamma^2")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Running statistics
# --------------------------------------------------------------------------------------------


def layer_input_moments(model, layer_name, batches):
    """The per-channel mean and biased variance of the input of ``layer_name`` over all of ``batches``.

    ``batches`` yields ``(inputs, labels)`` (a :class:`helpers.data.Batches`) or input tensors. The
    model runs in training mode (on a copy, without gradients), as when its running statistics are
    updated, and only up to the layer. Each batch's sums are accumulated in float64: the result is
    the population statistic of the whole data, as float64 [C] tensors.
    """
    model = _copy_in_mode(model, training=True)
    layer = get_layer(model, layer_name)
    count, total, total_squares = 0, None, None
    with torch.no_grad():
        for batch in batches:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            layer_input = _run_until(model, layer, _on_device_of(model, inputs))["input"]
            dims = [0, *range(2, layer_input.dim())]
            # float32 within a batch (torch sums pairwise: accurate to ~1e-7), float64 across batches
            sums = layer_input.sum(dims).double()
            sums_of_squares = layer_input.square().sum(dims).double()
            total = sums if total is None else total + sums
            total_squares = sums_of_squares if total_squares is None else total_squares + sums_of_squares
            count += layer_input.numel() // layer_input.shape[1]
    if count == 0:
        raise ValueError("batches is empty: give at least one batch")
    mean = total / count
    return mean.cpu(), (total_squares / count - mean.square()).clamp_min(0).cpu()


def track_running_statistics(model, layer_name, batches, steps):
    """Reset the running statistics of the batch norm ``layer_name`` and follow them for ``steps`` batches.

    On a copy of the model, in training mode and without gradients (the weights stay fixed, so the
    statistics chase a fixed target): reset to mean 0 and variance 1, then feed ``steps`` batches
    from ``batches`` (an iterable of ``(inputs, labels)`` or of input tensors; see
    :func:`repeat_epochs`), each only up to the layer. Returns ``{"mean": [steps + 1, C],
    "var": [steps + 1, C]}``: row k holds running_mean and running_var after k batches.
    """
    _check_positive_int("steps", steps)
    model = _copy_in_mode(model, training=True)
    layer = get_layer(model, layer_name, nn.BatchNorm2d)
    if not layer.track_running_stats:
        raise ValueError(f"layer {layer_name!r} keeps no running statistics (track_running_stats=False)")
    layer.reset_running_stats()
    means, variances = [layer.running_mean.clone()], [layer.running_var.clone()]
    with torch.no_grad():
        for batch in itertools.islice(batches, steps):
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            _run_until(model, layer, _on_device_of(model, inputs))
            means.append(layer.running_mean.clone())
            variances.append(layer.running_var.clone())
    if len(means) != steps + 1:
        raise ValueError(f"batches ran out after {len(means) - 1} batches; steps={steps} needs more")
    return {"mean": torch.stack(means).double().cpu(), "var": torch.stack(variances).double().cpu()}


def repeat_epochs(batches):
    """Yield the batches of a :class:`helpers.data.Batches` epoch after epoch, forever (each epoch reshuffled)."""
    for epoch in itertools.count():
        batches.set_epoch(epoch)
        yield from batches


def running_gap_table(trace, target_mean, target_var, momentum=0.1, at_steps=(0, 1, 10, 50, 100)):
    """Rows (dicts) of the largest gap between the running statistics of ``trace`` and the targets.

    ``trace`` is :func:`track_running_statistics`'s result. After k updates the running value is
    (1 - momentum)^k * initial + a momentum-weighted average of the batches, so the gap to the
    target shrinks like (1 - momentum)^k times the initial gap, down to the batch-to-batch noise;
    each row also gives that prediction (``predicted_mean_gap``, ``predicted_var_gap``).
    """
    steps = trace["mean"].shape[0] - 1
    target_mean, target_var = target_mean.double().cpu(), target_var.double().cpu()
    initial_mean_gap = (trace["mean"][0] - target_mean).abs()
    initial_var_gap = (trace["var"][0] - target_var).abs()
    rows = []
    for step in (step for step in at_steps if step <= steps):
        decay = (1 - momentum) ** step
        rows.append({
            "step": step,
            "weight_of_initial": decay,
            "mean_gap": (trace["mean"][step] - target_mean).abs().max().item(),
            "predicted_mean_gap": (decay * initial_mean_gap).max().item(),
            "var_gap": (trace["var"][step] - target_var).abs().max().item(),
            "predicted_var_gap": (decay * initial_var_gap).max().item(),
        })
    return rows


def format_running_gap_table(rows):
    """:func:`running_gap_table`'s rows as a printable table (m: the momentum; "first": the gap at step 0)."""
    header = (f"{'step k':>7}{'(1-m)^k':>10}{'max |mean gap|':>16}{'(1-m)^k x first':>17}"
              f"{'max |var gap|':>15}{'(1-m)^k x first':>17}")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['step']:>7}{row['weight_of_initial']:>10.2e}{row['mean_gap']:>16.4f}{row['predicted_mean_gap']:>17.4f}"
            f"{row['var_gap']:>15.4f}{row['predicted_var_gap']:>17.4f}"
        )
    return "\n".join(lines)


def variance_conventions(layer, inputs):
    """Which variance a batch norm layer uses where: one training-mode step of ``layer`` on ``inputs``.

    On a copy of ``layer``: the output's biased variance per channel, and running_var after the
    step next to what the update rule gives with the biased batch variance and with the unbiased
    one (n / (n - 1) times larger, n = N x H x W values per channel). torch normalises with the
    biased variance (the output's variance is var / (var + eps), about 1, not (n - 1) / n) and
    updates running_var with the unbiased one. Returns a dict of float64 [C] tensors and ``count`` n.
    """
    if not isinstance(layer, nn.BatchNorm2d) or not layer.track_running_stats:
        raise ValueError("layer must be a BatchNorm2d that tracks running statistics")
    layer = copy.deepcopy(layer).train()
    momentum = layer.momentum if layer.momentum is not None else 1.0 / (float(layer.num_batches_tracked) + 1)
    before = layer.running_var.detach().double().clone()
    _, biased = channel_moments(inputs)
    count = inputs.numel() // inputs.shape[1]
    with torch.no_grad():
        output = layer(inputs.to(layer.running_var.device))
        if layer.affine:
            shape = (1, -1) + (1,) * (output.dim() - 2)
            output = (output - layer.bias.view(shape)) / layer.weight.view(shape)
    return {
        "count": count,
        "batch_var_biased": biased,
        "output_var": channel_moments(output)[1],
        "running_var": layer.running_var.detach().double().cpu(),
        "if_biased": ((1 - momentum) * before + momentum * biased.to(before.device)).cpu(),
        "if_unbiased": ((1 - momentum) * before + momentum * biased.to(before.device) * count / (count - 1)).cpu(),
    }


# --------------------------------------------------------------------------------------------
# Batch dependence and the forgotten model.eval()
# --------------------------------------------------------------------------------------------


def batch_dependence(model, sample, batch_a, batch_b):
    """How much the logits of one ``sample`` change when the rest of its batch changes.

    ``sample`` is one normalised input [C, H, W]; ``batch_a`` and ``batch_b`` are two batches
    [B, C, H, W] of other inputs. The sample is put first in each and the model run on both, in
    evaluation mode and in training mode (a copy, without gradients). Returns ``{mode: {"max_abs_difference",
    "prediction_a", "prediction_b", "logits_a", "logits_b"}}`` for ``mode`` in ``("eval", "train")``:
    in evaluation mode each sample is normalised with the fixed running statistics, so the
    difference is 0; in training mode with the statistics of its batch, so it is not.
    """
    if not isinstance(sample, torch.Tensor) or sample.dim() != 3:
        raise ValueError(f"sample must be one input [C, H, W], got {describe(sample)}")
    for name, batch in (("batch_a", batch_a), ("batch_b", batch_b)):
        if not isinstance(batch, torch.Tensor) or batch.dim() != 4 or batch.shape[1:] != sample.shape:
            raise ValueError(f"{name} must be a batch [B, {', '.join(map(str, sample.shape))}], got {describe(batch)}")
    results = {}
    for mode, training in (("eval", False), ("train", True)):
        copy_in_mode = _copy_in_mode(model, training)
        logits = []
        with torch.no_grad():
            for batch in (batch_a, batch_b):
                inputs = torch.cat([sample[None], batch]).contiguous(memory_format=torch.channels_last)
                logits.append(copy_in_mode(_on_device_of(copy_in_mode, inputs))[0].cpu())
        results[mode] = {
            "max_abs_difference": (logits[0] - logits[1]).abs().max().item(),
            "prediction_a": logits[0].argmax().item(),
            "prediction_b": logits[1].argmax().item(),
            "logits_a": logits[0],
            "logits_b": logits[1],
        }
    return results


def accuracy_in_mode(model, images, labels, batch_size, training):
    """Accuracy of ``model`` on uint8 ``images`` in the given order, cut into batches of ``batch_size``.

    ``training=False`` is the correct evaluation; ``training=True`` is what happens when one forgets
    ``model.eval()``: each batch is normalised with its own statistics. Runs on a copy without
    gradients (training mode would also overwrite the running statistics; see :func:`forgot_eval_pass`).
    """
    _check_positive_int("batch_size", batch_size)
    model = _copy_in_mode(model, training)
    correct = 0
    with torch.no_grad():
        for inputs, batch_labels in Batches(images, labels, batch_size):
            predictions = model(_on_device_of(model, inputs)).argmax(dim=1).cpu()
            correct += (predictions == batch_labels.cpu()).sum().item()
    return correct / len(labels)


def forgot_eval_pass(model, images, batch_size):
    """Return a copy of ``model`` after a forward pass over uint8 ``images`` in training mode.

    What a "forgot model.eval()" evaluation leaves behind: no weight changes (no gradients), but
    every batch norm's running statistics have been overwritten by those of ``images``, batch by
    batch in the given order (the last batches weigh most). The copy is returned in evaluation mode.
    """
    _check_positive_int("batch_size", batch_size)
    model = _copy_in_mode(model, training=True)
    labels = torch.zeros(len(images), dtype=torch.int64)
    with torch.no_grad():
        for inputs, _ in Batches(images, labels, batch_size):
            model(_on_device_of(model, inputs))
    return model.eval()


# --------------------------------------------------------------------------------------------
# Scale invariance
# --------------------------------------------------------------------------------------------


def rescaling_effect(model, conv_name, factor, inputs, labels):
    """What multiplying the weight and bias of the convolution ``conv_name`` by ``factor`` does.

    ReLU is positively homogeneous (relu(a z) = a relu(z) for a > 0), so the scaled convolution's
    ReLU output is scaled by ``factor`` too; a batch norm behind it (training mode: batch statistics)
    divides the factor out again and the logits do not change, while the gradient of the scaled
    weights shrinks by ``factor``. Without batch norm the factor reaches the logits. Runs on copies
    in training mode. Returns ``max_abs_logits`` (before), ``logits_change`` (max |after - before|),
    and ``gradient_ratio``: the norm of the loss gradient of the conv weight after over before.
    """
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
        raise ValueError(f"factor must be a positive number, got {factor!r}")
    results = []
    for scale in (1.0, float(factor)):
        copy_in_mode = _copy_in_mode(model, training=True)
        conv = get_layer(copy_in_mode, conv_name, nn.Conv2d)
        with torch.no_grad():
            conv.weight.mul_(scale)
            if conv.bias is not None:
                conv.bias.mul_(scale)
        logits = copy_in_mode(_on_device_of(copy_in_mode, inputs))
        F.cross_entropy(logits, labels.to(logits.device)).backward()
        results.append((logits.detach().cpu(), conv.weight.grad.norm().item()))
    (before, gradient_before), (after, gradient_after) = results
    return {
        "max_abs_logits": before.abs().max().item(),
        "logits_change": (after - before).abs().max().item(),
        "gradient_ratio": gradient_after / gradient_before if gradient_before else float("nan"),
    }


# --------------------------------------------------------------------------------------------
# Two nets trained side by side
# --------------------------------------------------------------------------------------------


def compare_training(reference, candidate, batches, steps, lr=0.05, momentum=0.9, dtype=torch.float32,
                     synchronise=False):
    """Train copies of ``reference`` and ``candidate`` side by side and measure how far apart they drift.

    The candidate copy first loads the reference's ``state_dict`` (the same weights and running
    statistics); both then take ``steps`` SGD steps (``lr``, ``momentum``, cross-entropy) in
    training mode on the same ``(inputs, labels)`` batches. Returns one dict per step with the
    largest absolute difference of the logits (that step's forward), of any ``running_mean`` and
    any ``running_var`` (after the forward that updated them) and of any parameter (after the step).
    Both copies and the inputs are cast to ``dtype``: in float64 rounding differences start some
    nine orders of magnitude smaller than in float32, which separates a different computation from a
    different rounding of the same one (training amplifies either, step by step: in float32 two
    identical computations rounded differently drift apart within tens of steps). With
    ``synchronise`` the candidate restarts every step from the reference's state (weights, running
    statistics, momentum buffers), so each row measures one step alone.
    """
    _check_positive_int("steps", steps)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    reference = copy.deepcopy(reference).to(dtype).train()
    candidate = copy.deepcopy(candidate).to(dtype).train()
    candidate.load_state_dict(reference.state_dict())
    optimizers = [torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum) for net in (reference, candidate)]
    rows = []
    for step, (inputs, labels) in enumerate(itertools.islice(batches, steps), start=1):
        if synchronise:
            candidate.load_state_dict(reference.state_dict())
            # a deep copy: load_state_dict would otherwise share the reference's momentum buffers
            optimizers[1].load_state_dict(copy.deepcopy(optimizers[0].state_dict()))
        logits = []
        for net, optimizer in zip((reference, candidate), optimizers):
            output = net(_on_device_of(net, inputs).to(dtype))
            loss = F.cross_entropy(output, labels.to(output.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            logits.append(output.detach())
        rows.append({
            "step": step,
            "output": _max_difference([logits[0]], [logits[1]]),
            "running_mean": _max_difference(*(_buffers(net, "running_mean") for net in (reference, candidate))),
            "running_var": _max_difference(*(_buffers(net, "running_var") for net in (reference, candidate))),
            "weight": _max_difference(*([p.detach() for p in net.parameters()] for net in (reference, candidate))),
        })
    if len(rows) != steps:
        raise ValueError(f"batches ran out after {len(rows)} batches; steps={steps} needs more")
    return rows


def format_training_comparison(rows):
    """:func:`compare_training`'s rows as a table of max |differences| (``%.0e``: orders of magnitude)."""
    header = f"{'step':>5}{'logits':>10}{'running_mean':>14}{'running_var':>13}{'parameters':>12}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['step']:>5}{row['output']:>10.0e}{row['running_mean']:>14.0e}"
            f"{row['running_var']:>13.0e}{row['weight']:>12.0e}"
        )
    return "\n".join(lines)


def check_training_comparison(rows, tolerance=DEFAULT_TOLERANCE):
    """Return a one-line verdict on :func:`compare_training`'s rows; raise ``AssertionError`` if any
    difference exceeds ``tolerance`` (or is not finite)."""
    if not rows:
        raise ValueError("rows is empty: pass the result of compare_training()")
    keys = ("output", "running_mean", "running_var", "weight")
    worst = {key: max(row[key] for row in rows) for key in keys}
    failed = [key for key, value in worst.items() if not value <= tolerance]
    summary = ", ".join(f"{key} {value:.0e}" for key, value in worst.items())
    if failed:
        raise AssertionError(
            f"the two nets differ by more than {tolerance:g} in {', '.join(failed)} within {len(rows)} steps "
            f"(largest: {summary})"
        )
    return f"OK: over {len(rows)} steps every difference stays below {tolerance:g} (largest: {summary})"


# --------------------------------------------------------------------------------------------
# Internals
# --------------------------------------------------------------------------------------------


def _copy_in_mode(model, training):
    """A deep copy of ``model`` in training (``True``) or evaluation mode; the original is untouched."""
    if not isinstance(training, bool):
        raise TypeError(f"training must be a bool, got {training!r}")
    return copy.deepcopy(model).train(training)


@contextlib.contextmanager
def _capture(layer):
    """Record the input and output of ``layer`` during a forward pass, then stop that pass."""
    captured = {}

    def hook(module, args, output):
        captured["input"], captured["output"] = args[0].detach(), output.detach()
        raise _StopForward

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _run_until(model, layer, inputs):
    """Run ``model`` on ``inputs`` up to and including ``layer``; return ``{"input", "output"}`` of ``layer``."""
    with _capture(layer) as captured:
        try:
            model(inputs)
        except _StopForward:
            pass
    if not captured:
        raise ValueError("the layer did not run in the model's forward pass")
    return captured


def _on_device_of(model, inputs):
    """``inputs`` as float on the device of ``model``'s first parameter or buffer."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs must be normalised float images, got {inputs.dtype} (use helpers.data.normalize)")
    return inputs.to(device)


def _buffers(model, name):
    return [buffer for buffer_name, buffer in model.named_buffers() if buffer_name.rsplit(".", 1)[-1] == name]


def _max_difference(first, second):
    if len(first) != len(second):
        raise ValueError(f"the two nets hold {len(first)} and {len(second)} tensors to compare")
    if not first:
        return 0.0
    return max((a.double() - b.double()).abs().max().item() for a, b in zip(first, second))


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


__all__ = [
    "accuracy_in_mode",
    "batch_dependence",
    "channel_moments",
    "check_training_comparison",
    "compare_training",
    "forgot_eval_pass",
    "format_normalisation_statistics",
    "format_running_gap_table",
    "format_training_comparison",
    "get_layer",
    "layer_input_moments",
    "layer_input_output",
    "normalisation_statistics",
    "rescaling_effect",
    "repeat_epochs",
    "running_gap_table",
    "track_running_statistics",
    "variance_conventions",
]
