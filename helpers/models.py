"""The assignment's two CIFAR-10 networks, built from torch modules or from the Q1 ops.

Both nets are eight 3x3 convolutions (padding 1) in four blocks of two, each convolution followed by
a ReLU, a 2x2 max pool after each of the first three blocks, then a global average pool, a flatten
and a linear classifier: 294,810 parameters. The ``bn`` net adds ``BatchNorm2d`` after every ReLU;
by default without the learnable scale and shift (``affine=False``), so it too counts 294,810
parameters, matching the assignment's table (``affine=True`` adds 2 x 16+16+32+32+64+64+128+128 = 960).

``ops="scratch"`` builds the same nets whose convolution, max pool, batch norm, average pool and
flatten run the Q1 implementations of :mod:`helpers.ops` (``conv2d``, ``max_pool2d``,
``batch_norm``, ``avg_pool2d``, ``flatten``); ReLU and the linear layer stay torch's, as they are
not Q1 ops. Each scratch layer subclasses the torch layer and only replaces ``forward`` (the
adaptive average pool also checks its ``output_size``), so it holds the same parameters and buffers
under the same names, draws the same initial weights from the same seed, and a checkpoint of one
variant loads into the other. The training loss of a scratch net, ``helpers.ops.cross_entropy``,
is chosen by ``helpers.training.train(..., ops="scratch")``.
"""

import contextlib
import copy
import io
from collections import OrderedDict

import torch
from torch import nn
from torchsummary import summary

MODEL_NAMES = ("plain", "bn")
OPS_CHOICES = ("torch", "scratch")
INPUT_SIZE = (3, 32, 32)
NUM_CLASSES = 10
PARAMETER_COUNT = 294_810
# Output channels of the eight convolutions; a 2x2 max pool follows the 2nd, 4th and 6th.
CONV_CHANNELS = (16, 16, 32, 32, 64, 64, 128, 128)
POOL_AFTER = (2, 4, 6)
FINAL_MAP_SIZE = INPUT_SIZE[1] // 2 ** len(POOL_AFTER)
SCRATCH_OPS = ("conv2d", "max_pool2d", "batch_norm", "avg_pool2d", "flatten")


def build_model(name="plain", affine=False, ops="torch"):
    """Return the assignment's ``plain`` or ``bn`` CNN (see the module docstring).

    ``affine`` (bn net only) gives the batch norms a learnable scale and shift. ``ops`` chooses
    torch's layers (``"torch"``) or the Q1 implementations of :mod:`helpers.ops` (``"scratch"``).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"name must be one of {MODEL_NAMES}, got {name!r}")
    if not isinstance(affine, bool):
        raise TypeError(f"affine must be a bool, got {affine!r}")
    if affine and name != "bn":
        raise ValueError("affine=True only applies to the 'bn' net (the plain net has no batch norm)")
    if ops not in OPS_CHOICES:
        raise ValueError(f"ops must be one of {OPS_CHOICES}, got {ops!r}")
    if ops == "scratch":
        _require_scratch_ops()
    layers = _torch_layers() if ops == "torch" else _scratch_layers()
    return _build(layers, batch_norm=name == "bn", affine=affine)


def make_plain_cnn(ops="torch"):
    """Return the assignment's plain CNN (convolutions and ReLUs, no batch norm)."""
    return build_model("plain", ops=ops)


def make_bn_cnn(affine=False, ops="torch"):
    """Return the assignment's CNN with a ``BatchNorm2d`` after every ReLU."""
    return build_model("bn", affine=affine, ops=ops)


def count_parameters(model):
    """Return the number of learnable parameters of ``model``."""
    return sum(parameter.numel() for parameter in model.parameters())


def summary_table(model, input_size=INPUT_SIZE):
    """Return torchsummary's layer table of ``model`` for one ``input_size`` image, as a string.

    torchsummary runs a forward pass in whatever mode the model is in, which in training mode would
    update batch-norm statistics; it therefore runs on a copy, on the CPU, and ``model`` is untouched.
    """
    model_copy = copy.deepcopy(model).to("cpu", memory_format=torch.contiguous_format)
    captured = io.StringIO()
    with contextlib.redirect_stdout(captured), torch.no_grad():
        summary(model_copy, tuple(input_size), device="cpu")
    return captured.getvalue()


def _build(layers, batch_norm, affine):
    """Assemble the net from ``layers`` (a dict of layer classes) as a named ``nn.Sequential``."""
    modules = OrderedDict()
    in_channels = INPUT_SIZE[0]
    for index, out_channels in enumerate(CONV_CHANNELS, start=1):
        modules[f"conv{index}"] = layers["conv"](in_channels, out_channels, kernel_size=3, padding=1)
        modules[f"relu{index}"] = nn.ReLU()
        if batch_norm:
            modules[f"bn{index}"] = layers["batch_norm"](out_channels, affine=affine)
        if index in POOL_AFTER:
            modules[f"pool{POOL_AFTER.index(index) + 1}"] = layers["max_pool"](kernel_size=2)
        in_channels = out_channels
    # The same global average over the final 4x4 maps either way; the two layer types reproduce
    # the assignment's two torchsummary tables (AvgPool2d in Q2a, AdaptiveAvgPool2d in Q2b).
    if batch_norm:
        modules["avgpool"] = layers["adaptive_avg_pool"](1)
    else:
        modules["avgpool"] = layers["avg_pool"](FINAL_MAP_SIZE)
    modules["flatten"] = layers["flatten"]()
    modules["fc"] = nn.Linear(in_channels, NUM_CLASSES)
    model = nn.Sequential(modules)
    _initialize(model)
    return model


def _initialize(model):
    """He (Kaiming) initialisation for the ReLU convolutions, as torchvision's VGG does.

    torch's default (uniform with a = sqrt(5)) leaves the eighth ReLU's output ten times weaker
    (std 0.012 against 0.12 for a unit-variance input), and without batch norm plain SGD then
    stays near chance through its first epoch.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.01)
            nn.init.zeros_(module.bias)


def _torch_layers():
    return {
        "conv": nn.Conv2d,
        "max_pool": nn.MaxPool2d,
        "batch_norm": nn.BatchNorm2d,
        "avg_pool": nn.AvgPool2d,
        "adaptive_avg_pool": nn.AdaptiveAvgPool2d,
        "flatten": nn.Flatten,
    }


def _scratch_layers():
    return {
        "conv": ScratchConv2d,
        "max_pool": ScratchMaxPool2d,
        "batch_norm": ScratchBatchNorm2d,
        "avg_pool": ScratchAvgPool2d,
        "adaptive_avg_pool": ScratchAdaptiveAvgPool2d,
        "flatten": ScratchFlatten,
    }


def scratch_op(name):
    """Return the Q1 op ``name`` from :mod:`helpers.ops`, imported only when a scratch net (or its
    training loss, see :func:`helpers.training.make_loss_function`) needs it."""
    from helpers import ops  # noqa: PLC0415 - the ops notebook loads only for scratch nets

    op = getattr(ops, name, None)
    if not callable(op):
        raise ImportError(
            f"helpers.ops defines no {name}(); the scratch nets need {', '.join(SCRATCH_OPS)} "
            "and their training needs cross_entropy"
        )
    return op


def _require_scratch_ops():
    for name in SCRATCH_OPS:
        scratch_op(name)


class ScratchConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose forward runs :func:`helpers.ops.conv2d`."""

    def forward(self, input):
        if self.padding_mode != "zeros":
            raise ValueError(f"ScratchConv2d supports padding_mode='zeros' only, got {self.padding_mode!r}")
        conv2d = scratch_op("conv2d")
        return conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ScratchMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` whose forward runs :func:`helpers.ops.max_pool2d`."""

    def forward(self, input):
        max_pool2d = scratch_op("max_pool2d")
        return max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation,
            ceil_mode=self.ceil_mode, return_indices=self.return_indices,
        )


class ScratchBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose forward runs :func:`helpers.ops.batch_norm`.

    The bookkeeping (``num_batches_tracked``, the momentum, batch or running statistics) mirrors
    ``torch.nn.modules.batchnorm._BatchNorm.forward`` so both layers train identically.
    """

    def forward(self, input):
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_statistics = self.training or (self.running_mean is None and self.running_var is None)
        update_running_statistics = not self.training or self.track_running_stats
        batch_norm = scratch_op("batch_norm")
        return batch_norm(
            input,
            self.running_mean if update_running_statistics else None,
            self.running_var if update_running_statistics else None,
            self.weight,
            self.bias,
            use_batch_statistics,
            momentum,
            self.eps,
        )


class ScratchAvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d`` whose forward runs :func:`helpers.ops.avg_pool2d`."""

    def forward(self, input):
        avg_pool2d = scratch_op("avg_pool2d")
        return avg_pool2d(
            input, self.kernel_size, self.stride, self.padding,
            ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad,
            divisor_override=self.divisor_override,
        )


class ScratchAdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``nn.AdaptiveAvgPool2d`` to a 1x1 output (a global average), computed by :func:`helpers.ops.avg_pool2d`.

    With output size 1 the adaptive pool is one window over the whole plane, i.e. ``avg_pool2d``
    with the input's spatial size as kernel. Other output sizes have, in general, windows whose size
    and step vary across the plane, which one ``avg_pool2d`` call cannot express, so they are refused
    when the layer is built.
    """

    def __init__(self, output_size):
        if not _is_one_by_one(output_size):
            raise ValueError(
                f"ScratchAdaptiveAvgPool2d supports output_size=1 or (1, 1) only (a global average), "
                f"got output_size={output_size!r}"
            )
        super().__init__(output_size)

    def forward(self, input):
        avg_pool2d = scratch_op("avg_pool2d")
        return avg_pool2d(input, tuple(input.shape[-2:]))


def _is_one_by_one(output_size):
    """True for an output size of 1 or (1, 1) (ints, not bools or floats)."""
    def is_one(value):
        return isinstance(value, int) and not isinstance(value, bool) and value == 1

    if isinstance(output_size, (tuple, list)):
        return len(output_size) == 2 and all(is_one(value) for value in output_size)
    return is_one(output_size)


class ScratchFlatten(nn.Flatten):
    """``nn.Flatten`` whose forward runs :func:`helpers.ops.flatten`."""

    def forward(self, input):
        flatten = scratch_op("flatten")
        return flatten(input, self.start_dim, self.end_dim)
