"""No built-in kernel of a Q1 op runs inside our ops, forward or backward.

A TorchDispatchMode records every aten (and torchvision) operator that reaches the dispatcher while
an op of `helpers.ops` runs forward and backward on its random configurations. None may be torch's
own kernel for one of the eleven ops, nor im2col/col2im (F.unfold/F.fold).
"""

import pytest
import torch

from helpers import ops
from helpers.cases import OPS
from helpers.checks import FORBIDDEN_WORDS, RecordOperators, deliberate_warnings_ignored


def _tensors_requiring_grad(kwargs, names):
    return {
        name: value.detach().clone().requires_grad_(name in names) if isinstance(value, torch.Tensor) else value
        for name, value in kwargs.items()
    }


@pytest.mark.parametrize("op", sorted(OPS))
def test_no_builtin_kernel_of_a_q1_op_runs(op):
    function = getattr(ops, op)
    recorder = RecordOperators()
    for seed in range(8):
        case = OPS[op].draw(seed, torch.float64)
        kwargs = _tensors_requiring_grad(case.kwargs, case.grad_wrt)
        with deliberate_warnings_ignored():  # the loss cases' deprecated arguments, on purpose
            try:
                OPS[op].reference(**_tensors_requiring_grad(case.kwargs, ()))
            except Exception:
                continue  # an invalid configuration: nothing runs
            with recorder:
                outputs = function(**kwargs)
                outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
                differentiable = [o for o in outputs if o.requires_grad]
                if differentiable:
                    torch.autograd.backward(differentiable, [torch.ones_like(o) for o in differentiable])
    forbidden = sorted(name for name in recorder.seen if any(word in name for word in FORBIDDEN_WORDS))
    assert recorder.seen, "the recorder saw no operator at all"
    assert not forbidden, f"{op} ran built-in kernels: {forbidden}"


def test_the_recorder_catches_a_builtin_kernel():
    recorder = RecordOperators()
    with recorder:
        torch.nn.functional.max_pool2d(torch.randn(1, 1, 4, 4), 2)
    assert any("max_pool2d" in name for name in recorder.seen)
