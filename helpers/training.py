"""The training engine: configuration, training loop, checkpoints with exact resume, evaluation.

``train`` runs the epochs of a :class:`TrainConfig` on in-memory uint8 images and returns a
:class:`History`. With a ``run_dir`` it writes ``checkpoint.pt`` (model, optimizer, scheduler, RNG
states, history, config) and ``history.json`` after every epoch, each atomically, and ``resume=True``
continues a killed run from its last completed epoch to exactly the weights an uninterrupted run
reaches: the data order and augmentation of an epoch depend only on (seed, epoch). ``ops`` picks the
training loss: torch's ``nn.CrossEntropyLoss`` or the Q1 ``helpers.ops.cross_entropy`` for a net
built from the Q1 ops (``helpers.models.build_model(..., ops="scratch")``).
"""

import dataclasses
import functools
import json
import math
import os
import pickle
import random
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from helpers.data import CLASSES, Augment, Batches, check_shift, normalize, shift
from helpers.models import OPS_CHOICES, scratch_op
from helpers.progress import RunProgress

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle", "cosine")
# float32: everything in float32. bfloat16: mixed precision, the forward (and so the backward) under
# torch.autocast in bfloat16, while weights, optimizer state, batch-norm statistics and loss stay float32.
PRECISIONS = ("float32", "bfloat16")
CHECKPOINT_NAME = "checkpoint.pt"
HISTORY_NAME = "history.json"
CHECKPOINT_FORMAT = 1
# What every checkpoint of `train` holds (newer ones add ops and model_settings).
_CHECKPOINT_KEYS = {"epoch", "model", "optimizer", "scheduler", "rng", "history", "config"}
# Steps between two reads of the running loss: each read (``.item()``) waits for the device, and
# a non-finite loss stops the run at the next read.
STEPS_PER_LOSS_READ = 10
# A run that trains to its last epoch has "collapsed" when it learned nothing it kept: the mean training
# loss of an epoch rose above COLLAPSE_LOSS_FACTOR times a uniform guess's (ln 10 = 2.30 for CIFAR-10:
# the loss blew up), or it ended within COLLAPSE_ACCURACY_MARGIN of chance (10%) with a training loss
# within COLLAPSE_LOSS_MARGIN of a uniform guess's or above it (it predicts no better than guessing).
COLLAPSE_LOSS_FACTOR = 10
COLLAPSE_ACCURACY_MARGIN = 0.02
COLLAPSE_LOSS_MARGIN = 0.01
# Test-time translations (down, right) for `evaluate`: the four one-pixel diagonal shifts, small next to
# the training crops' four pixels. With flips that makes 10 views of each image.
TTA_SHIFTS = ((1, 1), (1, -1), (-1, 1), (-1, -1))
# The test-time augmentations both Q2 notebooks compare (`evaluate_views`): the image alone (a single
# view), averaged with its mirror image (flips), and those two with the four shifts (10 views).
TEST_TIME_VIEWS = {
    "single view": {},
    "flips": {"tta_flip": True},
    "10 views": {"tta_flip": True, "tta_shifts": TTA_SHIFTS},
}


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (empty, truncated, corrupted, or not written by :func:`train`).

    ``path`` names the file and ``problem`` says what is wrong with it; the message adds the fix.
    """

    def __init__(self, path, problem):
        super().__init__(f"cannot read the checkpoint {path}: {problem}; delete it to start that run afresh, "
                         "or use another run directory")
        self.path = Path(path)
        self.problem = problem


class ResumeMismatch(ValueError):
    """A resume refused because the saved run differs from the one asked for.

    ``differences`` maps each differing setting (a :class:`TrainConfig` field, ``ops``, a key of
    ``model_settings``, or ``"network"`` for the network's own tensors) to its ``(saved, given)`` values.
    """

    def __init__(self, message, path, differences):
        super().__init__(message)
        self.path = Path(path)
        self.differences = differences


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (a KeyboardInterrupt) during :func:`train`, told where it struck.

    ``epoch`` (1-based) of ``epochs`` was running; ``saved_epochs`` epochs are in the checkpoint of
    ``run_dir`` (None without one), so that ``resume=True`` continues from there.
    """

    def __init__(self, epoch, epochs, saved_epochs, run_dir):
        where = f"training interrupted in epoch {epoch} of {epochs}"
        if run_dir is None:
            super().__init__(f"{where} (no run_dir: nothing was saved)")
        else:
            super().__init__(f"{where}; {saved_epochs} completed epochs are saved in {run_dir}: "
                             "resume=True continues from there")
        self.epoch, self.epochs, self.saved_epochs, self.run_dir = epoch, epochs, saved_epochs, run_dir


@dataclass(kw_only=True)
class TrainConfig:
    """Everything that decides the result of a training run (so a resume must match it exactly).

    ``schedule``: ``constant``; ``onecycle`` (``OneCycleLR`` peaking at ``lr``, stepped per batch;
    momentum stays ``momentum``); ``cosine`` (per batch from ``lr`` to 0, after a linear warm-up of
    ``warmup_epochs``). ``momentum`` and ``nesterov`` apply to SGD only; Adam and AdamW use their default betas
    (Adam adds ``weight_decay`` to the gradient, AdamW decays the weights directly). ``precision``:
    ``float32``, or ``bfloat16`` for mixed-precision training (the training forward under
    ``torch.autocast``: convolutions and matrix products in bfloat16, the weights, the optimizer and the
    loss in float32; about 1.8x the speed on a CPU with AVX512-BF16). Evaluation is float32 either way.
    """

    optimizer: str
    lr: float
    epochs: int
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int = 128
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: Augment = field(default_factory=Augment)
    seed: int = 0
    precision: str = "float32"

    def __post_init__(self):
        if self.augment is None:
            self.augment = Augment()
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_number("lr", self.lr, minimum=0.0, minimum_allowed=False)
        _check_int("epochs", self.epochs, minimum=1)
        _check_int("batch_size", self.batch_size, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        _check_number("momentum", self.momentum, minimum=0.0, maximum=1.0)
        _check_number("weight_decay", self.weight_decay, minimum=0.0)
        _check_number("label_smoothing", self.label_smoothing, minimum=0.0, maximum=1.0)
        _check_number("warmup_epochs", self.warmup_epochs, minimum=0.0)
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"nesterov must be a bool, got {self.nesterov!r}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov=True needs optimizer='sgd' and momentum > 0")
        if self.warmup_epochs and self.schedule != "cosine":
            raise ValueError(f"warmup_epochs applies to schedule='cosine' only, got schedule={self.schedule!r}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be less than epochs ({self.epochs}), got {self.warmup_epochs}")
        if not isinstance(self.augment, Augment):
            raise TypeError(f"augment must be a helpers.data.Augment, got {type(self.augment).__name__}")

    def to_dict(self):
        """Return the config as plain dicts and numbers (JSON and ``weights_only`` checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Rebuild a config written by :meth:`to_dict` (fields it lacks, being older, take their defaults)."""
        values = dict(values)
        values["augment"] = Augment(**values["augment"])
        return cls(**values)


@dataclass
class History:
    """Per-epoch metrics of a run, and how it ended.

    ``lr`` is the learning rate of the epoch's last batch; ``seconds`` the epoch's wall time
    (training and validation); the ``val_*`` entries are None when no validation set was given.
    ``status``: ``running``, ``completed``, ``collapsed`` (it trained to the end but blew up or
    ended at chance, see :meth:`collapse_reason`; ``message`` says which), or ``diverged`` (a
    non-finite training loss stopped the run; ``message`` says where, and the metrics hold the
    epochs completed before it).
    """

    train_loss: list = field(default_factory=list)
    train_accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    seconds: list = field(default_factory=list)
    status: str = "running"
    message: str = ""

    @property
    def epochs(self):
        """Number of completed epochs."""
        return len(self.train_loss)

    def best_val_accuracy(self):
        """Highest validation accuracy over the epochs, or None if there is none."""
        accuracies = [accuracy for accuracy in self.val_accuracy if accuracy is not None]
        return max(accuracies) if accuracies else None

    def collapse_reason(self, classes=len(CLASSES)):
        """Why the run counts as collapsed (see COLLAPSE_LOSS_FACTOR), or None if it does not.

        Its accuracy at the end is the last validation accuracy, or the last training accuracy
        for a run without a validation set.
        """
        if not self.train_loss:
            return None
        uniform_loss, chance = math.log(classes), 1 / classes
        worst_loss = max(self.train_loss)
        if worst_loss > COLLAPSE_LOSS_FACTOR * uniform_loss:
            return (f"its training loss blew up to {worst_loss:.3g} in epoch {self.train_loss.index(worst_loss) + 1}, "
                    f"over {COLLAPSE_LOSS_FACTOR}x a uniform guess's {uniform_loss:.2f}")
        split, accuracy = (("validation", self.val_accuracy[-1]) if self.val_accuracy[-1] is not None
                           else ("training", self.train_accuracy[-1]))
        if accuracy <= chance + COLLAPSE_ACCURACY_MARGIN and self.train_loss[-1] >= uniform_loss - COLLAPSE_LOSS_MARGIN:
            return (f"it ended at {accuracy:.1%} {split} accuracy (chance: {chance:.0%}) with a training loss of "
                    f"{self.train_loss[-1]:.3f}, no better than a uniform guess's {uniform_loss:.2f}")
        return None

    def to_dict(self):
        """Return the history as plain lists, numbers and strings."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """Rebuild a history written by :meth:`to_dict` (e.g. read from history.json)."""
        return cls(**values)


@dataclass
class Evaluation:
    """Result of :func:`evaluate`: ``confusion[true, predicted]`` counts images."""

    accuracy: float
    per_class_accuracy: torch.Tensor
    confusion: torch.Tensor
    loss: float

    def to_dict(self):
        """Return the evaluation as plain lists and numbers (for metrics.json)."""
        return {
            "accuracy": self.accuracy,
            "per_class_accuracy": self.per_class_accuracy.tolist(),
            "confusion": self.confusion.tolist(),
            "loss": self.loss,
        }


def default_device():
    """``cuda`` when a GPU is present, else ``cpu`` (the device of :func:`choose_device`)."""
    return choose_device()[0]


def choose_device():
    """Return ``(device, reason)``: the CUDA GPU when torch sees one, else the CPU, and a one-line reason."""
    if torch.cuda.is_available():
        return torch.device("cuda"), f"cuda: {torch.cuda.get_device_name()} (a CUDA GPU trains fastest)"
    build = "this torch build has no CUDA" if torch.version.cuda is None else "torch sees no CUDA GPU"
    return torch.device("cpu"), f"cpu ({os.cpu_count()} cores): {build}"


def choose_precision(device=None):
    """Return ``(precision, reason)``: the :class:`TrainConfig` precision that trains fastest on ``device``.

    ``"bfloat16"`` (mixed precision) only where the hardware runs bfloat16 natively: a CUDA GPU
    that supports it (Ampere and later), or a CPU with AMX-BF16 or AVX512-BF16. Elsewhere bfloat16
    is emulated and slower than float32, so ``"float32"``. ``device`` defaults to
    :func:`choose_device`'s; ``reason`` is one line saying which precision and why.
    """
    device = torch.device(device) if device is not None else choose_device()[0]
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bfloat16", f"bfloat16: the {name} runs bfloat16 natively"
        return "float32", f"float32: the {name} has no native bfloat16"
    if device.type == "cpu":
        feature = cpu_bfloat16_feature()
        if feature is not None:
            return "bfloat16", f"bfloat16: this CPU has {feature}, which runs bfloat16 natively"
        return "float32", ("float32: this CPU has neither AVX512-BF16 nor AMX-BF16, so bfloat16 would be "
                           "emulated, slower than float32")
    return "float32", f"float32: bfloat16 support is not checked on {device.type} devices"


def cpu_bfloat16_feature():
    """The CPU feature that runs bfloat16 natively, ``"AMX-BF16"`` or ``"AVX512-BF16"``, or None.

    Read from the flags of /proc/cpuinfo (Linux), else from torch's own CPU feature detection.
    """
    flags = _cpu_flags()
    for flag, name in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16")):
        if flag in flags:
            return name
    return None


def _cpu_flags():
    """The CPU's feature flags, as /proc/cpuinfo names them (``avx512_bf16``, ``amx_bf16``, ...)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    try:  # not Linux: torch's detection (a private function, hence the guard)
        return {name for name, present in torch._C._cpu._get_cpu_capability().items() if present is True}
    except (AttributeError, RuntimeError):
        return set()


def train(
    model,
    config,
    train_images,
    train_labels,
    val_images=None,
    val_labels=None,
    run_dir=None,
    resume=False,
    progress=True,
    device=None,
    num_threads=None,
    ops="torch",
    model_settings=None,
):
    """Train ``model`` (in place) as ``config`` says and return its :class:`History`.

    Images are uint8 ``[N, 3, 32, 32]``, labels int64 ``[N]``; the validation set is optional.
    With ``run_dir`` a checkpoint and history.json are written after every epoch; ``resume=True``
    continues the run saved there (a run_dir without a checkpoint starts fresh) and refuses a
    different config. ``device`` defaults to cuda when available; on the CPU ``num_threads``
    (default: all cores) sets torch's thread count. A non-finite loss ends the run early with
    status ``diverged`` instead of raising; a run that trains to the end but blows up or ends at
    chance gets status ``collapsed`` (:meth:`History.collapse_reason`). ``progress`` (True, or a label that leads the lines) shows
    the run as :class:`helpers.progress.RunProgress` does: text bars in a terminal, one line in a
    notebook that ends as the run's summary.
    A fresh run seeds torch's, numpy's and Python's global RNGs with ``config.seed``; a resumed run
    restores the states saved with its checkpoint. The caller seeds the model's initial weights.
    ``ops`` chooses the training loss (see :func:`make_loss_function`): ``"torch"`` or ``"scratch"``
    (the Q1 op, to train a net built with ``ops="scratch"`` from the Q1 ops alone). The checkpoint
    records it and a resume refuses another. Evaluation (validation, :func:`evaluate`) is torch's
    either way: it only measures. ``model_settings``, a dict of plain values saying how the caller
    built ``model`` (the command line passes its ``--model``, ``--affine`` and ``--ops``), is saved
    too and a resume refuses other values (:class:`ResumeMismatch`); without it a resume still
    refuses a network whose layers differ from the saved one's.

    An unreadable checkpoint raises :class:`CheckpointError`; Ctrl-C raises
    :class:`TrainingInterrupted` (a KeyboardInterrupt) saying in which epoch it struck.
    """
    checkpoint_path = _check_train_arguments(config, train_images, train_labels, val_images, val_labels,
                                             run_dir, resume)
    loss_function = make_loss_function(ops, config.label_smoothing)
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cpu":
        torch.set_num_threads(num_threads or os.cpu_count())
    model.to(device=device, memory_format=torch.channels_last)
    if device.type == "cuda":  # the whole (uint8) data set fits: batches are then cut on the GPU
        train_images, train_labels = train_images.to(device), train_labels.to(device)
        if val_images is not None:
            val_images, val_labels = val_images.to(device), val_labels.to(device)
    batches = Batches(
        train_images, train_labels, config.batch_size, shuffle=True, augment=config.augment, seed=config.seed
    )
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=len(batches))
    if resume and checkpoint_path.exists():
        history = _resume_from(checkpoint_path, config, ops, model_settings, model, optimizer, scheduler)
    else:
        history = History()
        _seed_everything(config.seed)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)

    last_saved = history.epochs
    shown = RunProgress(progress if isinstance(progress, str) else "training", config.epochs, history.epochs,
                        enabled=bool(progress))
    try:
        for epoch in range(history.epochs, config.epochs):
            try:
                batches.set_epoch(epoch)
                shown.start_epoch(epoch, len(batches))
                _run_epoch(history, model, batches, optimizer, scheduler, loss_function, config.precision,
                           device, shown, val_images, val_labels)
                if history.status == "diverged":
                    break
                if history.epochs == config.epochs:
                    _finish(history)
                if run_dir is not None:
                    _save_checkpoint(checkpoint_path, model, optimizer, scheduler, history, config, ops,
                                     model_settings)
                    last_saved = history.epochs
            except KeyboardInterrupt:
                raise TrainingInterrupted(epoch + 1, config.epochs, last_saved if run_dir else None,
                                          run_dir) from None
            shown.end_epoch(history)
        if history.status == "running":  # resumed a run that had already trained every epoch
            _finish(history)
    finally:
        shown.close(history)
    if run_dir is not None:
        write_json_atomic(Path(run_dir) / HISTORY_NAME, history.to_dict())
    return history


def _finish(history):
    """Mark a run that trained all its epochs ``completed``, or ``collapsed`` with the reason."""
    reason = history.collapse_reason()
    history.status, history.message = ("collapsed", reason) if reason else ("completed", "")


def _check_train_arguments(config, train_images, train_labels, val_images, val_labels, run_dir, resume):
    """Refuse bad arguments before any work; return the checkpoint's path (None without run_dir)."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    _check_images_and_labels("train_images", train_images, "train_labels", train_labels)
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither")
    if val_images is not None:
        _check_images_and_labels("val_images", val_images, "val_labels", val_labels)
    if run_dir is None:
        if resume:
            raise ValueError("resume=True needs the run_dir of the run to continue")
        return None
    checkpoint_path = Path(run_dir) / CHECKPOINT_NAME
    if checkpoint_path.exists() and not resume:
        raise FileExistsError(
            f"{checkpoint_path} exists: pass resume=True (--resume on the command line) to continue it, "
            "or use another run_dir"
        )
    return checkpoint_path


def make_loss_function(ops, label_smoothing=0.0):
    """Return the training loss ``loss(logits, labels)``: the mean cross-entropy with ``label_smoothing``.

    ``ops="torch"``: ``nn.CrossEntropyLoss``; ``ops="scratch"``: the Q1 :func:`helpers.ops.cross_entropy`,
    so that a net built from the Q1 ops also trains without torch's softmax and NLL kernels. The two
    compute the same function (tests/test_scratch_network.py checks losses and gradients). Raises
    ValueError for another ``ops`` and ImportError when helpers.ops lacks ``cross_entropy``.
    """
    _check_choice("ops", ops, OPS_CHOICES)
    if ops == "torch":
        return nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    return functools.partial(scratch_op("cross_entropy"), label_smoothing=label_smoothing)


def _run_epoch(history, model, batches, optimizer, scheduler, loss_function, precision, device, shown,
               val_images, val_labels):
    """Train one epoch, validate, and append its metrics to ``history`` (or mark it diverged)."""
    started = time.perf_counter()
    train_loss, train_accuracy, last_lr = _train_one_epoch(
        model, batches, optimizer, scheduler, loss_function, precision, device, shown
    )
    if not math.isfinite(train_loss):
        history.status = "diverged"
        history.message = f"non-finite training loss in epoch {history.epochs + 1}"
        return
    val_loss, val_accuracy = None, None
    if val_images is not None:
        validation = evaluate(model, val_images, val_labels, batch_size=1000)
        val_loss, val_accuracy = validation.loss, validation.accuracy
    history.train_loss.append(train_loss)
    history.train_accuracy.append(train_accuracy)
    history.val_loss.append(val_loss)
    history.val_accuracy.append(val_accuracy)
    history.lr.append(last_lr)
    history.seconds.append(time.perf_counter() - started)


def make_optimizer(model, config):
    """Return the optimizer ``config`` names for ``model``'s parameters."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum,
            nesterov=config.nesterov, weight_decay=config.weight_decay,
        )
    if config.optimizer == "adamw":  # weight decay decoupled from the gradient (Loshchilov & Hutter)
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(optimizer, config, steps_per_epoch):
    """Return the learning-rate schedule of ``config``, to be stepped after every batch."""
    total_steps = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=total_steps, cycle_momentum=False
        )
    if config.schedule == "cosine":
        warmup_steps = round(config.warmup_epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: cosine_factor(step, warmup_steps, total_steps)
        )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def cosine_factor(step, warmup_steps, total_steps):
    """Learning-rate factor of ``step``: linear warm-up to 1, then a half cosine down to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _train_one_epoch(model, batches, optimizer, scheduler, loss_function, precision, device, shown):
    """One pass over ``batches``, shown on ``shown`` (a RunProgress), in the :class:`TrainConfig` ``precision``.

    Returns the mean loss (NaN if it diverged), the accuracy and the learning rate of the last batch.

    The loss sum and the count of correct predictions stay on the device; they are read only every
    STEPS_PER_LOSS_READ steps, for the progress bar and the divergence check.
    """
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    for step, (inputs, labels) in enumerate(batches, start=1):
        inputs = inputs.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with precision_context(precision, device):
            logits = model(inputs).float()
        loss = loss_function(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(labels)
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        seen += len(labels)
        if step % STEPS_PER_LOSS_READ == 0 or step == len(batches):
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                return math.nan, math.nan, lr
            shown.batch(mean_loss, correct.item() / seen)
        else:
            shown.batch()
    return loss_sum.item() / seen, correct.item() / seen, lr


def precision_context(precision, device):
    """The context a training forward runs in for the :class:`TrainConfig` ``precision`` on ``device``:
    ``torch.autocast`` in bfloat16 for ``"bfloat16"``, a disabled one (plain float32) otherwise."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def evaluate(model, images, labels, batch_size=1000, tta_flip=False, tta_shifts=()):
    """Return the :class:`Evaluation` of ``model`` on uint8 ``images`` with int64 ``labels``.

    Runs in eval mode without gradients on the model's device (the model's mode is restored).
    Test-time augmentation averages the softmax over several views of each image: the image itself,
    its translations by each ``(down, right)`` pixel shift in ``tta_shifts`` (zero-filled, as the
    training crops are), and with ``tta_flip`` the horizontal mirror image of each of those.
    ``loss`` is the mean cross-entropy of the (averaged) probabilities.
    """
    _check_images_and_labels("images", images, "labels", labels)
    _check_int("batch_size", batch_size, minimum=1)
    views = tta_views(tta_flip, tta_shifts, images.shape[-2:])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    log_probabilities = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size]
            view_log_probabilities = torch.stack([
                F.log_softmax(model(normalize(view(batch)).to(device, non_blocking=True)), dim=1)
                for view in views
            ])
            # log of the mean of the views' softmaxes, computed stably from their log-probabilities
            log_probabilities.append((torch.logsumexp(view_log_probabilities, dim=0) - math.log(len(views))).cpu())
    model.train(was_training)
    log_probabilities = torch.cat(log_probabilities)
    predictions = log_probabilities.argmax(dim=1)
    num_classes = log_probabilities.shape[1]
    labels = labels.cpu()
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) for a model with {num_classes} outputs")
    confusion = torch.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    confusion = confusion.reshape(num_classes, num_classes)
    return Evaluation(
        accuracy=(predictions == labels).double().mean().item(),
        per_class_accuracy=confusion.diagonal() / confusion.sum(dim=1),
        confusion=confusion,
        loss=F.nll_loss(log_probabilities, labels).item(),
    )


def evaluate_views(model, images, labels, views=TEST_TIME_VIEWS):
    """Return ``{name: Evaluation}``: ``model`` evaluated by :func:`evaluate` once per entry of
    ``views``, a dict of names to its test-time augmentation arguments (default
    :data:`TEST_TIME_VIEWS`)."""
    return {name: evaluate(model, images, labels, **options) for name, options in views.items()}


def tta_views(tta_flip, tta_shifts, image_size):
    """The test-time views :func:`evaluate` averages, as functions of a uint8 batch: the identity, one
    translation per distinct ``(down, right)`` shift other than (0, 0), and the mirror image of each
    of those when ``tta_flip``. Invalid shifts are refused before any work."""
    shifts = [(0, 0)]
    for pair in tta_shifts:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise ValueError(f"tta_shifts must hold (down, right) pairs of ints, got {pair!r}")
        check_shift(*pair, image_size)
        if tuple(pair) not in shifts:
            shifts.append(tuple(pair))
    views = [functools.partial(shift, down=down, right=right) for down, right in shifts]
    if tta_flip:
        views += [lambda batch, view=view: view(batch).flip(dims=[3]) for view in views]
    return views


def load_checkpoint(path):
    """Load a checkpoint written by :func:`train` (``weights_only=True``: tensors and plain data only).

    Raises :class:`CheckpointError`, naming the file, when it is empty, truncated or corrupted
    (torch's own error would end by suggesting an unsafe ``weights_only=False``).
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(path, "the file is empty")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError) as error:
        raise CheckpointError(path, f"it is truncated or corrupted ({type(error).__name__})") from error


def check_resume(run_dir, config, ops="torch", model_settings=None):
    """Return the number of epochs a ``resume=True`` run of ``config`` continues from in ``run_dir``
    (None when it holds no checkpoint, so that the run starts afresh), before any work.

    Raises what :func:`train` would raise on resuming, but without loading data or building the model:
    :class:`CheckpointError` for a checkpoint that is unreadable or not one of :func:`train`, and
    :class:`ResumeMismatch` for one saved with other ``model_settings``, ``ops`` or ``config``.
    """
    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.exists():
        return None
    checkpoint = _load_run_checkpoint(path)
    _check_saved_settings(checkpoint, path, config, ops, model_settings)
    return checkpoint["epoch"]


def _load_run_checkpoint(path):
    """:func:`load_checkpoint`, checked to hold a run written by :func:`train`."""
    checkpoint = load_checkpoint(path)
    if not isinstance(checkpoint, dict) or not _CHECKPOINT_KEYS <= checkpoint.keys():
        raise CheckpointError(path, "it holds no training run of helpers.training")
    return checkpoint


def save_atomic(obj, path):
    """``torch.save`` ``obj`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A failure or a kill during the write leaves the previous file at ``path`` intact.
    """
    _write_atomic(path, lambda file: torch.save(obj, file))


def write_json_atomic(path, values):
    """Write ``values`` as indented JSON to ``path`` atomically (see :func:`save_atomic`)."""
    text = json.dumps(values, indent=2)
    _write_atomic(path, lambda file: file.write(text.encode("utf-8")))


def _write_atomic(path, write):
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _save_checkpoint(path, model, optimizer, scheduler, history, config, ops, model_settings):
    save_atomic(
        {
            "format": CHECKPOINT_FORMAT,
            "epoch": history.epochs,
            "ops": ops,
            "model_settings": model_settings,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": _rng_states(),
            "history": history.to_dict(),
            "config": config.to_dict(),
        },
        path,
    )
    write_json_atomic(path.parent / HISTORY_NAME, history.to_dict())


def _resume_from(path, config, ops, model_settings, model, optimizer, scheduler):
    """Load the checkpoint at ``path`` into the run's objects; return its history.

    Refuses (:class:`ResumeMismatch`) a run whose model settings, ops or config differ from the saved
    ones, or whose network does not hold the saved parameters. Checkpoints written before ``ops`` or
    ``precision`` was recorded were trained with torch's loss in float32, the defaults; those written
    without model settings are checked by their parameters alone.
    """
    checkpoint = _load_run_checkpoint(path)
    _check_saved_settings(checkpoint, path, config, ops, model_settings)
    problem = _state_dict_mismatch(checkpoint["model"], model.state_dict())
    if problem:
        raise ResumeMismatch(f"cannot resume {path}: the network differs from the one saved there ({problem})",
                             path, {"network": ("the saved network", "another network")})
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    _set_rng_states(checkpoint["rng"])
    history = History.from_dict(checkpoint["history"])
    history.status = "running"
    return history


def _check_saved_settings(checkpoint, path, config, ops, model_settings):
    """Refuse (:class:`ResumeMismatch`) to resume ``checkpoint`` with other model settings, ops or config.

    Model settings are compared only when both the checkpoint and the caller have them.
    """
    saved = {}
    given = {}
    if checkpoint.get("model_settings") is not None and model_settings is not None:
        saved |= checkpoint["model_settings"]
        given |= model_settings
    saved["ops"], given["ops"] = checkpoint.get("ops", "torch"), ops
    saved |= TrainConfig.from_dict(checkpoint["config"]).to_dict()  # older checkpoints lack newer fields
    given |= config.to_dict()
    differences = {name: (saved.get(name), value) for name, value in given.items() if saved.get(name) != value}
    if differences:
        listed = ", ".join(f"{name}: saved {old!r}, given {new!r}" for name, (old, new) in differences.items())
        raise ResumeMismatch(f"cannot resume {path} with a different config ({listed})", path, differences)


def _state_dict_mismatch(saved, current):
    """Say in a few words how the ``saved`` state dict differs from the ``current`` one ("" if it does not)."""
    missing = current.keys() - saved.keys()
    unexpected = saved.keys() - current.keys()
    reshaped = [name for name in current.keys() & saved.keys() if current[name].shape != saved[name].shape]
    counts = [(len(missing), "missing from the checkpoint"), (len(unexpected), "not in this network"),
              (len(reshaped), "of another shape")]
    return ", ".join(f"{count} tensors {what}" for count, what in counts if count)


def _seed_everything(seed):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _rng_states():
    """The global RNG states as tensors and numbers (loadable with ``weights_only=True``)."""
    version, internal_state, gauss_next = random.getstate()
    _, numpy_keys, numpy_position, numpy_has_gauss, numpy_cached_gaussian = np.random.get_state(legacy=True)
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": {"version": version, "state": torch.tensor(internal_state), "gauss_next": gauss_next},
        "numpy": {
            "keys": torch.from_numpy(numpy_keys.astype(np.int64)),
            "position": int(numpy_position),
            "has_gauss": int(numpy_has_gauss),
            "cached_gaussian": float(numpy_cached_gaussian),
        },
    }


def _set_rng_states(states):
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"].tolist()), python["gauss_next"]))
    numpy = states["numpy"]
    np.random.set_state(
        ("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
         numpy["has_gauss"], numpy["cached_gaussian"])
    )


def _check_images_and_labels(images_name, images, labels_name, labels):
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"{images_name} must be a uint8 tensor [N, C, H, W], got {describe(images)}")
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.dim() != 1:
        raise ValueError(f"{labels_name} must be an int64 tensor [N], got {describe(labels)}")
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"{images_name} and {labels_name} must hold the same, non-zero number of items, "
            f"got {len(images)} and {len(labels)}"
        )


def describe(value):
    """A short description of an argument for error messages: a tensor's dtype and shape, else its type."""
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def _check_int(name, value, minimum):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _check_number(name, value, minimum=None, maximum=None, minimum_allowed=True):
    """``value`` must be a finite real number in [minimum, maximum) (or (minimum, ...) when not allowed)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (value < minimum or (value == minimum and not minimum_allowed)):
        relation = ">=" if minimum_allowed else ">"
        raise ValueError(f"{name} must be {relation} {minimum}, got {value!r}")
    if maximum is not None and value >= maximum:
        raise ValueError(f"{name} must be < {maximum}, got {value!r}")
