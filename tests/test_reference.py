"""The short reference implementations (Q1 notebook cells tagged `reference`, loaded into
`helpers.ops.reference`): short, self-contained, free of torch's own kernels, equal to torch on the
assignment's calls and on random configurations within their scope, and an oracle for the drop-ins'
hand-written backwards."""

import inspect

import pytest
import torch

from helpers import ops
from helpers.cases import OPS
from helpers.cases.assignment import ASSIGNMENT_CASES, assignment_cases
from helpers.checks import (
    FORBIDDEN_WORDS,
    RecordOperators,
    assignment_case,
    code_line_count,
    compare_backward,
    compare_gradients,
    compare_values,
    drop_in_checks,
    forbidden_attributes,
    sweep,
)

MAX_CODE_LINES = 25
SWEEP_CASES = 30
BACKWARD_CASES = 20
KERNEL_CHECK_CASES = 6
ASSIGNMENT_CALLS = [(name, index) for name in ops.REFERENCE_NAMES for index in range(len(ASSIGNMENT_CASES[name]))]


pytestmark = pytest.mark.usefixtures("one_thread")


def _reference_cells():
    """{function name: (cell index, source)} for every cell tagged `reference`."""
    cells = {}
    for index, source in ops.cell_sources(ops.NOTEBOOK, ops.REFERENCE_TAG):
        (name,) = ops.cell_public_functions(source, index)
        cells[name] = (index, source)
    return cells


REFERENCE_CELLS = _reference_cells()


def test_ops_reference_holds_the_ten_functions():
    assert ops.REFERENCE_NAMES == ops.__all__
    assert ops.reference.__all__ == ops.REFERENCE_NAMES
    assert sorted(REFERENCE_CELLS) == sorted(ops.REFERENCE_NAMES)
    for name in ops.REFERENCE_NAMES:
        function = getattr(ops.reference, name)
        assert callable(function) and function.__name__ == name
        assert function is not getattr(ops, name), f"ops.reference.{name} is the drop-in"


def test_cell_sources_generalises_op_cell_sources():
    assert ops.cell_sources(ops.NOTEBOOK, ops.OP_TAG) == ops.op_cell_sources()
    assert ops.cell_sources(ops.NOTEBOOK, ops.REFERENCE_TAG) == sorted(REFERENCE_CELLS.values())


@pytest.mark.parametrize("name", ops.REFERENCE_NAMES)
def test_reference_cell_stands_alone_and_is_short(name):
    index, source = REFERENCE_CELLS[name]
    functions = ops.cell_public_functions(source, index)  # a fresh namespace: no other cell's names
    assert list(functions) == [name]
    assert "helpers" not in source, f"ref-{name} leans on the repository's helpers"
    lines = code_line_count(source)
    assert lines <= MAX_CODE_LINES, f"ref-{name} has {lines} lines of code (at most {MAX_CODE_LINES})"
    assert not forbidden_attributes(source), f"ref-{name} names a Q1 op's function: {forbidden_attributes(source)}"


@pytest.mark.parametrize("name", ops.REFERENCE_NAMES)
def test_reference_signature_follows_torch(name):
    """torch's parameter names, order and defaults (the drop-ins carry torch's signature); the ones
    after a left-out parameter are keyword-only, so that no positional call can bind them wrongly."""
    theirs = list(inspect.signature(getattr(ops, name)).parameters.values())
    ours = list(inspect.signature(getattr(ops.reference, name)).parameters.values())
    positions = [[p.name for p in theirs].index(p.name) for p in ours]
    assert positions == sorted(positions), f"{name}: parameters out of torch's order"
    for position, (parameter, torch_position) in enumerate(zip(ours, positions)):
        assert parameter.default == theirs[torch_position].default, f"{name}({parameter.name}): torch's default differs"
        if torch_position != position:  # a parameter of torch's is left out before this one
            assert parameter.kind == inspect.Parameter.KEYWORD_ONLY, f"{name}({parameter.name}) should be keyword-only"


@pytest.mark.parametrize("name, index", ASSIGNMENT_CALLS, ids=[f"{n}-{i}" for n, i in ASSIGNMENT_CALLS])
def test_reference_matches_torch_on_the_assignment(name, index):
    spec, reference = OPS[name], getattr(ops.reference, name)
    case = ASSIGNMENT_CASES[name][index]
    assert compare_values(reference, spec.reference, case, spec.rtol, spec.atol) is None
    case64 = assignment_cases(name, torch.float64)[index]
    assert compare_gradients(reference, spec.reference, case64) is None


def test_assignment_cases_are_fresh_and_seeded():
    assert list(ASSIGNMENT_CASES) == ops.REFERENCE_NAMES
    assert [case.label for case in ASSIGNMENT_CASES["conv2d"]] == ["Conv2d(3, 6, 3)", "Conv2d(3, 6, 5, stride=2, dilation=2)"]
    first, second = ASSIGNMENT_CASES["batch_norm"][0], ASSIGNMENT_CASES["batch_norm"][0]
    assert first.kwargs["running_mean"] is not second.kwargs["running_mean"]
    assert torch.equal(first.kwargs["input"], second.kwargs["input"])
    state = torch.random.get_rng_state()
    weights = [case.kwargs["weight"] for case in assignment_cases("conv2d")]
    assert torch.equal(torch.random.get_rng_state(), state), "building the layers changed the global random state"
    torch.manual_seed(0)
    assert torch.equal(weights[0], torch.nn.Conv2d(3, 6, 3).weight.detach())


@pytest.mark.parametrize("name", ops.REFERENCE_NAMES)
def test_reference_matches_torch_within_its_scope(name):
    result = sweep(name, SWEEP_CASES, seed=11, dtype=torch.float32, gradients=True, scope="reference")
    assert result.ok, f"{result}\n" + "\n".join(result.failures[:5])
    assert result.cases == SWEEP_CASES and result.grads_checked > SWEEP_CASES // 2
    assert "reference sweep" in str(result) and "within its scope" in str(result)


@pytest.mark.parametrize("name", ops.REFERENCE_NAMES)
def test_drop_in_backward_equals_autograd_through_the_reference(name):
    result = compare_backward(name, cases=BACKWARD_CASES, seed=5)
    assert result.ok, f"{result}\n" + "\n".join(result.failures[:5])
    assert result.cases == BACKWARD_CASES


@pytest.mark.parametrize("name", ops.REFERENCE_NAMES)
def test_draw_in_scope_is_deterministic_and_the_same_in_both_dtypes(name):
    spec = OPS[name]
    for seed in range(3):
        first, again, wide = spec.draw_in_scope(seed, torch.float32), spec.draw_in_scope(seed, torch.float32), spec.draw_in_scope(seed, torch.float64)
        assert first.label == again.label == wide.label
        assert not set(first.kwargs) & set(spec.reference_omits)
        for key, value in first.kwargs.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, again.kwargs[key]) and value.shape == wide.kwargs[key].shape


def _requiring_grad(kwargs, names):
    return {
        key: value.detach().clone().requires_grad_(key in names and value.is_floating_point())
        if isinstance(value, torch.Tensor) else value
        for key, value in kwargs.items()
    }


@pytest.mark.parametrize("name", ops.REFERENCE_NAMES)
def test_reference_runs_no_builtin_kernel_of_a_q1_op(name):
    reference = getattr(ops.reference, name)
    cases = assignment_cases(name, torch.float64)
    cases += [OPS[name].draw_in_scope(seed, torch.float64) for seed in range(KERNEL_CHECK_CASES)]
    recorder = RecordOperators()
    for case in cases:
        with recorder:
            output = reference(**_requiring_grad(case.kwargs, case.grad_wrt))
            if output.requires_grad:
                output.backward(torch.ones_like(output))
    forbidden = sorted({op for op in recorder.seen if any(word in op for word in FORBIDDEN_WORDS)})
    assert recorder.seen and not forbidden, f"ops.reference.{name} ran built-in kernels: {forbidden}"


def test_sigmoid_reference_is_finite_and_exact_at_the_extremes():
    values = torch.tensor([-1000.0, -100.0, -20.0, -1.0, 0.0, 1.0, 20.0, 100.0, 1000.0])
    ours_input, torch_input = values.clone().requires_grad_(), values.clone().requires_grad_()
    ours, expected = ops.reference.sigmoid(ours_input), torch.sigmoid(torch_input)
    ours.sum().backward()
    expected.sum().backward()
    assert torch.isfinite(ours).all() and torch.isfinite(ours_input.grad).all()
    torch.testing.assert_close(ours, expected)
    torch.testing.assert_close(ours_input.grad, torch_input.grad)
    assert ours[0].item() == 0.0 and ours[-1].item() == 1.0 and ours_input.grad[4].item() == 0.25


def test_static_checks_catch_what_the_dispatcher_does_not():
    """torch.flatten reaches the dispatcher as a view: only the source shows it."""
    assert forbidden_attributes("y = torch.flatten(x)\nz = F.unfold(x, 2)\nw = x.unfold(1, 2, 1)") == [
        "line 1: .flatten",
        "line 2: .unfold",
    ]
    assert code_line_count('"""doc"""\nimport torch\n\n\ndef f(x):\n    """doc\n    more"""\n    # note\n    return (x +\n            1)\n') == 4


def test_assignment_case_shows_each_implementation_and_raises_on_a_difference(capsys):
    assignment_case("mse_loss", ops.reference.mse_loss, drop_in=ops.mse_loss)
    printed = capsys.readouterr().out
    assert "reference vs torch: max |difference| = 0.0e+00" in printed and "drop-in   vs torch" in printed

    def off_by_a_little(input, target, reduction="mean"):
        return ops.reference.mse_loss(input, target, reduction=reduction) + 1e-3

    with pytest.raises(AssertionError, match="mse_loss, mse_loss.input, target.: reference: values differ"):
        assignment_case("mse_loss", off_by_a_little)


def test_drop_in_checks_pass_the_drop_in_and_refuse_a_function_without_torchs_full_signature(capsys):
    drop_in_checks("mse_loss", ops.mse_loss, ops.reference.mse_loss, cases=6, backward_cases=3)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and "6/6" in lines[0] and "3/3" in lines[1] and "refused like torch" in lines[2]
    with pytest.raises(AssertionError):  # the reference takes no weight, size_average or reduce
        drop_in_checks("mse_loss", ops.reference.mse_loss, ops.reference.mse_loss, cases=20, backward_cases=3)
