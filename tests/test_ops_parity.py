"""Every Q1 op against torch on seeded random configurations: values, float64 gradients, errors."""

import pytest
import torch

from helpers import ops
from helpers.cases import OPS
from helpers.checks import check_errors, sweep


@pytest.mark.parametrize("op", ops.__all__)
def test_every_op_has_cases(op):
    assert op in OPS, f"helpers.cases has no configurations for {op}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_values_and_gradients_match_torch(op, dtype):
    result = sweep(op, cases=60, seed=7, dtype=dtype, gradients=dtype == torch.float64)
    assert result.ok, f"{result}\n" + "\n".join(result.failures[:5])
    assert result.cases == 60


@pytest.mark.parametrize("op", sorted(OPS))
def test_invalid_arguments_raise_like_torch(op):
    assert OPS[op].bad(), f"{op} has no invalid calls to check"
    problems = check_errors(op)
    assert not problems, "\n".join(problems)
