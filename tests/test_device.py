"""Every Q1 op allocates on its input's device and in its dtype: proven on a CPU-only machine.

The inputs go on a fake device. `OnFakeDevice` wraps a CPU tensor but reports the device "meta";
`DeviceRecorder`, a TorchDispatchMode, runs every aten call on the wrapped CPU data and wraps the
results again. While an op runs forward and backward on its random cases (`helpers.cases`), the
recorder notes every call that creates a tensor on another device (a factory call without
``device=``, ``device="cpu"``, ``.cpu()``, ``torch.tensor(...)`` without ``device=``) or receives a
tensor that is not on the fake device (a CPU tensor made outside the dispatcher, a NumPy round
trip), and every floating-point tensor whose dtype is not the input's (the cases run in float64,
so a float factory call without ``dtype=`` shows up as float32). On a GPU each of these is a device
error or a silent copy to the host. Calls on large images take the paths the small random cases
miss (the conv2d tap loop, the conv_transpose2d sub-pixel pass). The last tests prove the recorder
catches such a line in a deliberately broken copy of an op cell, and in made-up ops.

Why not the meta device alone: meta tensors hold no values, so the ops' data-dependent steps
(``.item()``, ``nonzero``, a finiteness check) cannot run on them, and torch lets some device mixes
through there (an in-place op or an index with a CPU tensor).
"""

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_map

from helpers import ops
from helpers.cases import OPS
from helpers.checks import ignoring_deliberate_warnings

FAKE_DEVICE = torch.device("meta")
CPU = torch.device("cpu")
SEEDS = range(16)  # random cases per op: enough to reach each op's branches, fast on 2 cores


class OnFakeDevice(torch.Tensor):
    """A CPU tensor (`data_on_cpu`) that reports FAKE_DEVICE. Only `DeviceRecorder` computes with it."""

    @staticmethod
    def __new__(cls, data_on_cpu, requires_grad=False):
        wrapper = torch.Tensor._make_wrapper_subclass(
            cls, data_on_cpu.shape, strides=data_on_cpu.stride(), storage_offset=data_on_cpu.storage_offset(),
            dtype=data_on_cpu.dtype, device=FAKE_DEVICE, requires_grad=requires_grad,
        )
        wrapper.data_on_cpu = data_on_cpu
        return wrapper

    def __repr__(self):
        return f"OnFakeDevice({self.data_on_cpu!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise RuntimeError(f"{func}: a fake-device tensor is used outside DeviceRecorder")


def _is_fake_device(device):
    return device is not None and torch.device(device) == FAKE_DEVICE


class _DataConstructors(TorchFunctionMode):
    """torch.tensor / as_tensor / new_tensor build their tensor outside the dispatcher: on the fake device
    they would give an empty meta tensor. Build it on the CPU and wrap it, as a real device would hold it.
    Without a device they build a CPU tensor, which the recorder then sees arrive (`lift_fresh`)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if func is torch.Tensor.new_tensor and isinstance(args[0], OnFakeDevice) and kwargs.get("device") is None:
            kwargs.setdefault("dtype", args[0].dtype)
            kwargs["device"], args = FAKE_DEVICE, args[1:]
            func = torch.tensor
        if func in (torch.tensor, torch.as_tensor, torch.asarray) and _is_fake_device(kwargs.get("device")):
            with _disable_current_modes():
                return OnFakeDevice(func(*args, **{**kwargs, "device": CPU}))
        return func(*args, **kwargs)


class DeviceRecorder(TorchDispatchMode):
    """Run every aten call of fake-device tensors on their CPU data; list in `problems` each call that
    creates or receives a tensor on another device, or a floating-point tensor that is not `dtype`."""

    def __init__(self, dtype=None):
        super().__init__()
        self.dtype = dtype
        self.problems = []
        self.calls = 0
        self._constructors = _DataConstructors()

    def __enter__(self):
        self._constructors.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self._constructors.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        kwargs = dict(kwargs or {})
        device = kwargs.get("device")
        if _is_fake_device(device):
            kwargs["device"] = CPU
        elif device is not None:
            self.problems.append(f"{func} creates a tensor on {device}, not on the input's device")

        def unwrap(value):
            if isinstance(value, OnFakeDevice):
                return value.data_on_cpu
            if isinstance(value, torch.Tensor):
                self.problems.append(f"{func} receives a {value.device} tensor of shape {tuple(value.shape)}")
            return value

        def wrap(value):
            if not isinstance(value, torch.Tensor):
                return value
            if self.dtype is not None and value.is_floating_point() and value.dtype != self.dtype:
                self.problems.append(f"{func} gives a {value.dtype} tensor, not {self.dtype}")
            return OnFakeDevice(value)

        args, kwargs = tree_map(unwrap, (args, kwargs))
        return tree_map(wrap, func(*args, **kwargs))


def on_fake_device(value, requires_grad=False):
    """A tensor argument (or a list of them) moved to the fake device; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return OnFakeDevice(value.detach().clone(), requires_grad=requires_grad)
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return type(value)(OnFakeDevice(v.detach().clone()) for v in value)
    return value


def run_on_fake_device(function, kwargs, grad_wrt, dtype):
    """Call `function` on fake-device copies of `kwargs` under a recorder, then backpropagate ones through
    its differentiable outputs. Returns (recorder, outputs, gradients of the `grad_wrt` arguments)."""
    fake = {name: on_fake_device(value, requires_grad=name in grad_wrt) for name, value in kwargs.items()}
    with DeviceRecorder(dtype) as recorder:
        outputs = function(**fake)
        outputs = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
        differentiable = [o for o in outputs if o.requires_grad]
        if differentiable:
            torch.autograd.backward(differentiable, [torch.ones_like(o) for o in differentiable])
    gradients = [fake[name].grad for name in grad_wrt if differentiable and fake[name].requires_grad]
    return recorder, outputs, gradients


def _floating_dtype(kwargs):
    """The dtype of the first floating-point tensor argument (None: the op has no float input)."""
    for value in kwargs.values():
        for tensor in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                return tensor.dtype
    return None


def _cpu_copy(value):
    """A copy of a tensor argument (or a list of them) on the CPU, for torch's own call."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return type(value)(v.clone() for v in value)
    return value


def _cpu_values(tensor):
    return tensor.data_on_cpu if isinstance(tensor, OnFakeDevice) else tensor


@pytest.mark.parametrize("op", sorted(OPS))
@ignoring_deliberate_warnings
def test_op_allocates_on_the_inputs_device_and_dtype(op):
    function, spec, checked = getattr(ops, op), OPS[op], 0
    for seed in SEEDS:
        case = spec.draw(seed, torch.float64)
        try:
            expected = spec.reference(**{name: _cpu_copy(value) for name, value in case.kwargs.items()})
        except Exception:
            continue  # torch refuses this configuration: nothing to run
        grad_wrt = [name for name in case.grad_wrt if isinstance(case.kwargs.get(name), torch.Tensor)
                    and case.kwargs[name].is_floating_point()]
        recorder, outputs, gradients = run_on_fake_device(function, case.kwargs, grad_wrt, _floating_dtype(case.kwargs))
        assert not recorder.problems, f"{case.label}:\n" + "\n".join(dict.fromkeys(recorder.problems))
        for tensor in [*outputs, *gradients]:
            assert tensor is None or isinstance(tensor, OnFakeDevice), f"{case.label}: a result left the device"
        # the harness changes no value: the first output is torch's (NaN where torch has NaN)
        expected = expected[0] if isinstance(expected, tuple) else expected
        assert torch.allclose(_cpu_values(outputs[0]), expected, rtol=1e-6, atol=1e-9, equal_nan=True), case.label
        checked += 1
    assert checked >= len(SEEDS) // 2, f"only {checked} of {op}'s cases ran"


def _randn(*shape, generator=torch.Generator().manual_seed(0)):
    return torch.randn(shape, generator=generator, dtype=torch.float64)


# The random cases' images are small; these calls take the paths kept for large ones.
LARGE_INPUT_CALLS = {
    "conv2d tap loop": ("conv2d", dict(input=_randn(2, 4, 20, 20), weight=_randn(5, 4, 3, 3), bias=_randn(5),
                                       padding=1)),
    "conv2d stride 2 dilation 2, few channels": ("conv2d", dict(input=_randn(2, 3, 32, 32), weight=_randn(6, 3, 5, 5),
                                                                stride=2, dilation=2)),
    "conv_transpose2d sub-pixel": ("conv_transpose2d", dict(input=_randn(2, 6, 16, 16), weight=_randn(6, 4, 3, 3),
                                                            bias=_randn(4), stride=2, padding=1, output_padding=1)),
}


@pytest.mark.parametrize("name", sorted(LARGE_INPUT_CALLS))
def test_large_input_paths_allocate_on_the_inputs_device(name):
    op, kwargs = LARGE_INPUT_CALLS[name]
    grad_wrt = [key for key in ("input", "weight", "bias") if key in kwargs]
    recorder, outputs, gradients = run_on_fake_device(getattr(ops, op), kwargs, grad_wrt, torch.float64)
    assert not recorder.problems, "\n".join(dict.fromkeys(recorder.problems))
    expected = OPS[op].reference(**kwargs)
    assert torch.allclose(_cpu_values(outputs[0]), expected)
    assert all(isinstance(gradient, OnFakeDevice) for gradient in gradients)


# ---- the recorder catches what it should: made-up ops, and broken copies of an op cell -------------


def _problems_of(function, input, dtype=torch.float64, **kwargs):
    recorder, _, _ = run_on_fake_device(function, dict(input=input, **kwargs), ["input"], dtype)
    assert recorder.calls > 0
    return recorder.problems


@pytest.mark.parametrize(
    "allocation",
    [
        lambda x: x + torch.zeros(x.shape, dtype=x.dtype),  # no device=
        lambda x: x + torch.zeros(x.shape, dtype=x.dtype, device="cpu"),  # the CPU written out
        lambda x: x.cpu() * 2,  # a copy to the host
        lambda x: x * torch.tensor(2.0, dtype=x.dtype),  # a CPU scalar tensor
        lambda x: torch.from_numpy(x.detach().numpy()),  # a NumPy round trip (fails on the fake device)
        lambda x: x + torch.zeros(x.shape, device=x.device),  # float32 (the default dtype) on float64 input
    ],
    ids=["zeros-without-device", "device-cpu", "dot-cpu", "tensor-without-device", "numpy", "zeros-without-dtype"],
)
def test_the_recorder_catches_a_host_allocation_or_a_wrong_dtype(allocation):
    def op(input):
        return allocation(input)

    try:
        problems = _problems_of(op, torch.randn(2, 3, dtype=torch.float64))
    except (RuntimeError, TypeError) as error:  # a NumPy round trip cannot even run on a device
        problems = [str(error)]
    assert problems


def test_the_recorder_accepts_allocations_on_the_inputs_device():
    def op(input):
        scale = torch.tensor(2.0, dtype=input.dtype, device=input.device) * input.new_tensor([1.0, 2.0, 3.0])
        index = torch.arange(input.shape[-1], device=input.device)
        return input * scale + torch.zeros_like(input) + input.new_zeros(input.shape) + index.to(input.dtype)

    assert _problems_of(op, torch.randn(2, 3, dtype=torch.float64)) == []


def _op_namespace(patch=None):
    """A fresh namespace of every op cell's code; `patch` = (op, old line, new line) first replaces the line in
    the cell that defines `op`."""
    sources = [source for _, source in ops.op_cell_sources()]
    if patch is not None:
        op, old, new = patch
        cell = next(i for i, source in enumerate(sources) if f"\ndef {op}(" in source)
        assert sources[cell].count(old) == 1, f"the {op} cell no longer holds {old!r} once"
        sources[cell] = sources[cell].replace(old, new)
    namespace = {}
    for source in sources:
        exec(compile(source, "op cell", "exec"), namespace)  # noqa: S102 - this repository's own cells
    return namespace


# One line of an op cell, and the same line as it would read with the device or dtype left out. Each
# broken copy must be caught on a call that reaches that line.
BROKEN_LINES = {
    "avg_pool2d divisor without device=": (
        "avg_pool2d",
        "start = torch.arange(count, device=device) * stride - padding",
        "start = torch.arange(count) * stride - padding",
        dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    ),
    "max_pool2d backward buffer on the CPU": (
        "max_pool2d",
        "flat = grad.new_zeros(batch, height * width, depth)",
        'flat = torch.zeros(batch, height * width, depth, dtype=grad.dtype, device="cpu")',
        dict(kernel_size=3, stride=1, padding=1),
    ),
    "max_pool2d tiled backward without dtype=": (
        "max_pool2d",
        "buffer = grad.new_empty(rows.shape)",
        "buffer = torch.empty(rows.shape, device=grad.device)",
        dict(kernel_size=2),
    ),
    "cross_entropy smoothing scale as a CPU tensor": (
        "cross_entropy",
        "exp.new_full((), scale)",
        "torch.tensor(scale)",
        dict(target=torch.tensor([0, -100, 2, 1]), label_smoothing=0.1, reduction="sum"),
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN_LINES))
def test_the_recorder_catches_a_broken_copy_of_an_op_cell(name):
    op, fixed, broken, kwargs = BROKEN_LINES[name]
    input = torch.randn((4, 5) if op == "cross_entropy" else (2, 3, 8, 8), dtype=torch.float64)
    assert _problems_of(_op_namespace()[op], input, **kwargs) == []
    assert _problems_of(_op_namespace((op, fixed, broken))[op], input, **kwargs)
