"""The Q2 nets built from the Q1 ops: the same function as the torch nets, trained the same way.

``build_model(..., ops="scratch")`` runs every convolution, pool, batch norm and flatten through
:mod:`helpers.ops`, and ``train(..., ops="scratch")`` its cross-entropy loss. With the same initial
weights the two variants must give the same logits, loss and parameter gradients (to rounding in
float32, to near machine precision in float64), train to the same losses, and the scratch variant
must not run a single built-in kernel of a Q1 op.
"""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from helpers.checks import FORBIDDEN_WORDS, RecordOperators
from helpers.compare import TOLERANCES
from helpers.data import Augment
from helpers.models import SCRATCH_OPS, ScratchAdaptiveAvgPool2d, ScratchAvgPool2d, build_model
from helpers.training import TrainConfig, load_checkpoint, train
from support import SimulatedKill, learnable_images

ops = pytest.importorskip("helpers.ops", reason="the Q1 notebook's ops do not load")
pytestmark = pytest.mark.skipif(
    not all(callable(getattr(ops, name, None)) for name in (*SCRATCH_OPS, "cross_entropy")),
    reason=f"helpers.ops lacks one of {', '.join(SCRATCH_OPS)}, cross_entropy",
)

# float32: the scratch ops sum in another order than torch's kernels, so logits and gradients differ
# in the last bits. Batch norm's backward (training mode) amplifies that: on a batch of 6 the
# gradients differ by up to 2e-5 of their largest entry, so float32 gradients are compared with an
# absolute tolerance of GRADIENT_SCALE_TOLERANCE x that largest entry. float64 shows that it is rounding.
TOLERANCE = {
    torch.float32: dict(rtol=1e-4, atol=1e-6),
    torch.float64: TOLERANCES[torch.float64],
}
GRADIENT_SCALE_TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-11}
# Built-in kernels of the Q1 ops (and of im2col/col2im), as in tests/test_from_scratch.py.
NETS = [("plain", False), ("bn", False), ("bn", True)]
NET_IDS = ["plain", "bn", "bn-affine"]


pytestmark = pytest.mark.usefixtures("one_thread")


def twin_nets(name, affine, dtype=torch.float32, seed=0):
    """The torch net and the scratch net with the same initial weights."""
    torch.manual_seed(seed)
    reference = build_model(name, affine=affine).to(dtype)
    torch.manual_seed(seed)
    scratch = build_model(name, affine=affine, ops="scratch").to(dtype)
    return reference, scratch


def random_batch(dtype, size=6, seed=1):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(size, 3, 32, 32, generator=generator, dtype=dtype)
    labels = torch.randint(0, 10, (size,), generator=generator)
    return images, labels


def forward_backward(model, loss_function, images, labels):
    """Logits and loss of one batch, with the parameter gradients left in ``model``."""
    model.zero_grad(set_to_none=True)
    logits = model(images)
    loss = loss_function(logits, labels)
    loss.backward()
    return logits.detach(), loss.detach()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("train_mode", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize(("name", "affine"), NETS, ids=NET_IDS)
def test_the_scratch_net_computes_the_torch_net_s_function(name, affine, train_mode, dtype):
    reference, scratch = twin_nets(name, affine, dtype)
    reference.train(train_mode)
    scratch.train(train_mode)
    images, labels = random_batch(dtype)
    expected_logits, expected_loss = forward_backward(reference, F.cross_entropy, images, labels)
    logits, loss = forward_backward(scratch, ops.cross_entropy, images, labels)
    torch.testing.assert_close(logits, expected_logits, **TOLERANCE[dtype])
    torch.testing.assert_close(loss, expected_loss, **TOLERANCE[dtype])
    assert_same_gradients(scratch, reference, dtype)
    # batch-norm running statistics (updated in training mode only) and the weights themselves
    for (key, ours), theirs in zip(scratch.state_dict().items(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(ours, theirs, **TOLERANCE[dtype], msg=key)


def assert_same_gradients(scratch, reference, dtype):
    """Every parameter gradient allclose, the absolute tolerance scaled to the gradient's size."""
    rtol = TOLERANCE[dtype]["rtol"]
    for (key, ours), theirs in zip(scratch.named_parameters(), reference.parameters(), strict=True):
        atol = GRADIENT_SCALE_TOLERANCE[dtype] * theirs.grad.abs().max().item()
        difference = (ours.grad - theirs.grad).abs().max().item()
        assert torch.allclose(ours.grad, theirs.grad, rtol=rtol, atol=atol), (
            f"gradient of {key}: max |scratch - torch| = {difference:.2e} (rtol={rtol}, atol={atol:.2e})"
        )


@pytest.mark.parametrize(("name", "affine"), NETS, ids=NET_IDS)
def test_the_scratch_net_in_channels_last_as_training_runs_it_computes_the_same_function(name, affine):
    """The scratch net in channels_last against the torch net in the default layout.

    Not against the torch net in channels_last: torch's CPU batch norm in that layout (training
    mode) is itself less exact (measured on this batch against float64: conv1's weight gradient
    off by 2e-3, the scratch net and the contiguous torch net by 1e-6).
    """
    reference, scratch = twin_nets(name, affine)
    scratch.to(memory_format=torch.channels_last)
    images, labels = random_batch(torch.float32)
    expected_logits, _ = forward_backward(reference, F.cross_entropy, images, labels)
    channels_last = images.contiguous(memory_format=torch.channels_last)
    logits, _ = forward_backward(scratch, ops.cross_entropy, channels_last, labels)
    torch.testing.assert_close(logits, expected_logits, **TOLERANCE[torch.float32])
    assert_same_gradients(scratch, reference, torch.float32)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=4),
        dict(kernel_size=2),
        dict(kernel_size=3, stride=2, padding=1),
        dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
        dict(kernel_size=(3, 2), stride=(2, 1), ceil_mode=True),
        dict(kernel_size=2, divisor_override=3),
    ],
    ids=["global-4", "k2", "k3-s2-p1", "no-pad-count", "ceil-rectangular", "divisor-override"],
)
def test_scratch_avg_pool_equals_torch_s(kwargs):
    scratch, reference = ScratchAvgPool2d(**kwargs), nn.AvgPool2d(**kwargs)
    assert str(scratch).removeprefix("Scratch") == str(reference)
    _check_same_module(scratch, reference, torch.randn(2, 3, 7, 9, dtype=torch.float64))
    _check_same_module(scratch, reference, torch.randn(2, 5, 4, 4).contiguous(memory_format=torch.channels_last))


@pytest.mark.parametrize("output_size", [1, (1, 1), [1, 1]])
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 5, 7, 3), (3, 6, 5)], ids=["4x4", "7x3", "unbatched"])
def test_scratch_adaptive_avg_pool_equals_torch_s_global_average(output_size, shape):
    scratch, reference = ScratchAdaptiveAvgPool2d(output_size), nn.AdaptiveAvgPool2d(output_size)
    assert scratch.output_size == reference.output_size
    _check_same_module(scratch, reference, torch.randn(shape, dtype=torch.float64))
    _check_same_module(scratch, reference, torch.randn(shape), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("output_size", [2, (2, 2), (1, 2), (1, None), None, True, 1.0, (1, 1, 1)])
def test_scratch_adaptive_avg_pool_refuses_other_output_sizes(output_size):
    with pytest.raises(ValueError, match=r"supports output_size=1 or \(1, 1\) only .* got output_size="):
        ScratchAdaptiveAvgPool2d(output_size)


def _check_same_module(scratch, reference, input, rtol=None, atol=None):
    """Same output and input gradient (for a random cotangent) from both modules."""
    tolerance = {} if rtol is None else dict(rtol=rtol, atol=atol)
    inputs = [input.detach().clone().requires_grad_() for _ in range(2)]
    outputs = [module(x) for module, x in zip((scratch, reference), inputs)]
    torch.testing.assert_close(outputs[0], outputs[1], **tolerance)
    cotangent = torch.randn(outputs[1].shape, generator=torch.Generator().manual_seed(2), dtype=input.dtype)
    for output in outputs:
        output.backward(cotangent)
    torch.testing.assert_close(inputs[0].grad, inputs[1].grad, **tolerance)


@pytest.mark.parametrize(("name", "affine"), NETS, ids=NET_IDS)
def test_a_scratch_net_runs_no_builtin_kernel_of_a_q1_op(name, affine):
    reference, scratch = twin_nets(name, affine)
    images, labels = random_batch(torch.float32, size=2)
    with RecordOperators() as torch_recorder:
        forward_backward(reference, F.cross_entropy, images, labels)
    with RecordOperators() as scratch_recorder:
        forward_backward(scratch, ops.cross_entropy, images, labels)
        scratch.eval()(images)  # eval mode too (batch norm with running statistics)

    def forbidden(recorder):
        return sorted({op for op in recorder.seen if any(word in op for word in FORBIDDEN_WORDS)})

    # the recorder does see the torch net's kernels (torch computes a 1x1 adaptive pool as a mean)
    for word in ("convolution", "max_pool2d", "softmax", "nll_loss") + (("avg_pool2d",) if name == "plain" else ()):
        assert any(word in op for op in torch_recorder.seen), word
    assert scratch_recorder.seen, "the recorder saw no operator at all"
    assert forbidden(scratch_recorder) == []


@pytest.mark.parametrize(("name", "affine"), [("plain", False), ("bn", False)], ids=["plain", "bn"])
def test_training_with_scratch_ops_gives_the_torch_losses(name, affine):
    """The notebook's recipe (AdamW, one-cycle, flips and crops) for 2 epochs of 3 batches.

    Rounding differences grow a little with every step (more for the bn net, whose torch batch
    norm runs in channels_last, see above): losses agree to 1e-3, not to the last bit. An image
    may flip class at a near tie, so the accuracies (of 48 and 20 images) agree to 0.1. The bn
    net's weights are compared through the losses only: its convolution biases feed a batch norm,
    which cancels them, so their true gradient is zero and AdamW scales the rounding noise of
    either variant up to full-size steps.
    """
    config = TrainConfig(optimizer="adamw", lr=3e-3, weight_decay=0.05, schedule="onecycle", epochs=2,
                         batch_size=16, augment=Augment.parse("flip+crop:4"), seed=0)
    data = (*learnable_images(48, seed=0), *learnable_images(20, seed=1))
    reference, scratch = twin_nets(name, affine)
    expected = train(reference, config, *data, progress=False, num_threads=1, ops="torch")
    history = train(scratch, config, *data, progress=False, num_threads=1, ops="scratch")
    assert history.epochs == expected.epochs == 2 and history.status == expected.status
    assert history.lr == expected.lr
    for key in ("train_loss", "val_loss"):
        assert getattr(history, key) == pytest.approx(getattr(expected, key), rel=1e-3), key
    for key in ("train_accuracy", "val_accuracy"):
        assert getattr(history, key) == pytest.approx(getattr(expected, key), abs=0.1), key
    if name == "plain":
        for (key, ours), theirs in zip(scratch.state_dict().items(), reference.state_dict().values(), strict=True):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5, msg=key)


def test_a_killed_scratch_run_resumes_to_bitwise_the_uninterrupted_weights(tmp_path):
    config = TrainConfig(optimizer="adamw", lr=3e-3, weight_decay=0.05, schedule="onecycle", epochs=2,
                         batch_size=16, augment=Augment.parse("flip+crop:4"), seed=0)
    data = (*learnable_images(48, seed=0), *learnable_images(20, seed=1))
    options = dict(progress=False, num_threads=1, ops="scratch")
    _, uninterrupted = twin_nets("plain", False)
    expected = train(uninterrupted, config, *data, run_dir=tmp_path / "whole", **options)

    _, killed = twin_nets("plain", False)
    calls = []

    def kill_in_the_second_epoch(module, inputs, output):
        calls.append(1)
        if len(calls) == 3 + 1 + 2:  # epoch 1: 3 training batches and 1 validation batch
            raise SimulatedKill

    hook = killed.register_forward_hook(kill_in_the_second_epoch)
    with pytest.raises(SimulatedKill):
        train(killed, config, *data, run_dir=tmp_path / "killed", **options)
    hook.remove()
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["ops"] == "scratch"

    _, resumed = twin_nets("plain", False, seed=123)
    history = train(resumed, config, *data, run_dir=tmp_path / "killed", resume=True, **options)
    assert history.train_loss == expected.train_loss and history.val_loss == expected.val_loss
    assert all(torch.equal(a, b) for a, b in zip(resumed.state_dict().values(), uninterrupted.state_dict().values()))
