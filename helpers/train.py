"""Train a CIFAR-10 net from the command line with the notebooks' engine.

    python -m helpers.train --model bn --epochs 30 --optimizer sgd --lr 0.1 --schedule onecycle \\
        --augment flip+crop --run-dir runs/bn-onecycle
    python -m helpers.train --model bn --epochs 30 ... --run-dir runs/bn-onecycle --resume   # after a kill

The run directory receives checkpoint.pt and history.json after every epoch, then metrics.json
(test accuracy, per-class accuracy, confusion matrix, and the run's settings), curves.png and
confusion.png. ``--resume`` continues a killed (or Ctrl-C'd) run from its last completed epoch and
finishes exactly as an uninterrupted run would; it refuses settings that differ from the saved run's.
The device and precision default to the fastest the machine runs: a CUDA GPU if there is one, and
bfloat16 where the hardware runs it natively (see helpers.training.choose_precision).
"""

import argparse
import math
import sys
from pathlib import Path

import torch

from helpers.data import Augment, load_cifar10, subset, train_val_split
from helpers.models import MODEL_NAMES, OPS_CHOICES, build_model
from helpers.training import (
    CHECKPOINT_NAME, OPTIMIZERS, PRECISIONS, SCHEDULES, TEST_TIME_VIEWS, CheckpointError, ResumeMismatch,
    TrainConfig, TrainingInterrupted, check_resume, choose_device, choose_precision, evaluate, train,
    write_json_atomic,
)

METRICS_NAME = "metrics.json"
# --quick: a smoke run of the whole pipeline in about a minute on a laptop CPU.
QUICK = {"train_per_class": 100, "test_per_class": 20, "val_size": 200, "epochs": 1}
# The options --quick sets itself, so it refuses to be combined with them.
QUICK_OPTIONS = {"--epochs": "epochs", "--val-size": "val_size", "--train-subset": "train_subset",
                 "--test-subset": "test_subset"}
DEFAULT_EPOCHS = 20
DEFAULT_VAL_SIZE = 5000
# Exit status of a run stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_STATUS = 130
# --tta: the command line's names for the test-time views of `TEST_TIME_VIEWS`.
TTA_CHOICES = {"none": TEST_TIME_VIEWS["single view"], "flip": TEST_TIME_VIEWS["flips"],
               "flip+shifts": TEST_TIME_VIEWS["10 views"]}


def main(argv=None):
    """Parse ``argv`` (default: the command line), train, evaluate on the test set, write the results.

    Every failure ends the program with one line that names the option or file and the fix: bad
    options exit 2, a run that cannot start or go on (data, checkpoint, resume) exits 1, and Ctrl-C
    exits 130 saying how to continue.
    """
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        config = config_from(arguments)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    try:
        run(arguments, config)
    except TrainingInterrupted as interrupt:
        parser.exit(INTERRUPTED_STATUS, f"{parser.prog}: interrupted in epoch {interrupt.epoch} of {interrupt.epochs}; "
                                        "run the same command with --resume to continue\n")
    except KeyboardInterrupt:
        parser.exit(INTERRUPTED_STATUS, f"{parser.prog}: interrupted; run the same command with --resume to continue\n")
    except (OSError, ValueError) as error:  # missing data, an unreadable checkpoint, a resume that does not match...
        parser.exit(1, f"{parser.prog}: error: {error_message(error)}\n")


def error_message(error):
    """The one-line message of an error that stops a run, in the command line's terms."""
    if isinstance(error, CheckpointError):
        return (f"cannot read the checkpoint {error.path}: {error.problem}; delete it to start afresh, "
                "or use another --run-dir")
    if isinstance(error, ResumeMismatch):
        run_dir = error.path.parent
        if "network" in error.differences:
            return f"{error}; resume with the --model and --affine it was trained with, or use another --run-dir"
        saved = " ".join(_as_options(name, old) for name, (old, new) in error.differences.items())
        given = " ".join(_as_options(name, new) for name, (old, new) in error.differences.items())
        return (f"cannot resume {run_dir}: it was saved with {saved}, given {given}; run the command it was "
                "saved with, or use another --run-dir")
    return str(error)


def _as_options(name, value):
    """A setting of a saved run written as the command-line option that gives it, e.g. ``--lr 0.05``."""
    option = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return option if value else f"no {option}"
    if name == "augment" and isinstance(value, dict):
        value = Augment(**value)
    return f"{option} {value:g}" if isinstance(value, float) else f"{option} {value}"


def build_parser():
    """The argument parser; ``--help`` documents every option."""
    parser = argparse.ArgumentParser(
        prog="python -m helpers.train",
        usage="%(prog)s [options]  (--help lists them)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=MODEL_NAMES, default="plain",
                       help="plain: conv+ReLU net; bn: BatchNorm2d after every ReLU (default: plain)")
    model.add_argument("--affine", action="store_true",
                       help="bn net only: learnable BatchNorm scale and shift (+960 parameters)")
    model.add_argument("--ops", choices=OPS_CHOICES, default="torch",
                       help="torch layers and loss, or the Q1 from-scratch ops of helpers.ops for the "
                            "convolutions, pools, batch norms, flatten and the cross-entropy loss (slower) "
                            "(default: torch)")

    optimization = parser.add_argument_group("optimization")
    optimization.add_argument("--epochs", type=_positive_int, default=None,
                              help=f"number of epochs (default: {DEFAULT_EPOCHS})")
    optimization.add_argument("--batch-size", type=_positive_int, default=128, help="batch size (default: 128)")
    optimization.add_argument("--lr", type=_positive_float, default=0.05,
                              help="learning rate; the peak for onecycle and cosine (default: 0.05)")
    optimization.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd", help="optimizer (default: sgd)")
    optimization.add_argument("--momentum", type=_fraction, default=0.9,
                              help="SGD momentum, in [0, 1) (default: 0.9)")
    optimization.add_argument("--nesterov", action="store_true", help="SGD with Nesterov momentum")
    optimization.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                              help="weight decay (L2 in the gradient for sgd and adam, decoupled for adamw) (default: 0)")
    optimization.add_argument("--schedule", choices=SCHEDULES, default="constant",
                              help="learning-rate schedule, stepped per batch (default: constant)")
    optimization.add_argument("--warmup-epochs", type=_non_negative_float, default=0.0,
                              help="cosine only: epochs of linear warm-up (default: 0)")
    optimization.add_argument("--label-smoothing", type=_fraction, default=0.0,
                              help="label smoothing of the training loss, in [0, 1) (default: 0)")
    optimization.add_argument("--augment", type=_augment, default=Augment(),
                              help="training augmentation: 'none' or parts joined by '+': flip, crop[:PIXELS] "
                                   "(default 4), rotate[:DEGREES] (default 15); e.g. flip+crop+rotate (default: none)")
    optimization.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                              help="bfloat16: mixed-precision training (convolutions in bfloat16 under "
                                   "torch.autocast, weights and loss in float32); evaluation is float32. "
                                   "auto: bfloat16 where the device runs it natively (a CPU with AVX512-BF16 "
                                   "or AMX, a CUDA GPU that supports it), else float32 (default: auto)")
    optimization.add_argument("--seed", type=_non_negative_int, default=0,
                              help="seed of the initial weights, data order and augmentation (default: 0)")

    data = parser.add_argument_group("data")
    data.add_argument("--data-dir", default=None,
                      help="CIFAR-10 folder (image folders or cifar-10-batches-py) (default: $CIFAR10_DIR)")
    data.add_argument("--val-size", type=_non_negative_int, default=None,
                      help="training images held out for validation, 0 for none "
                           f"(default: {DEFAULT_VAL_SIZE}, or a tenth of the training images if fewer)")
    data.add_argument("--train-subset", type=_positive_int, default=None, metavar="PER_CLASS",
                      help="train on only this many images per class (before the validation split)")
    data.add_argument("--test-subset", type=_positive_int, default=None, metavar="PER_CLASS",
                      help="test on only this many images per class")
    data.add_argument("--quick", action="store_true",
                      help=f"smoke run: {QUICK['train_per_class']} train and {QUICK['test_per_class']} test images "
                           f"per class, {QUICK['val_size']} for validation, {QUICK['epochs']} epoch "
                           f"(so it cannot be combined with {', '.join(QUICK_OPTIONS)})")

    run = parser.add_argument_group("run")
    run.add_argument("--run-dir", type=Path, default=None,
                     help="folder for checkpoint.pt, history.json, metrics.json and plots "
                          "(default: runs/<model>[-scratch]-<optimizer>-lr<lr>-bs<batch size>-seed<seed>)")
    run.add_argument("--resume", action="store_true",
                     help="continue the run saved in --run-dir (starts fresh if it has no checkpoint)")
    run.add_argument("--tta", nargs="?", const="flip", default="none", choices=TTA_CHOICES,
                     help="test-time augmentation: average the predictions over the mirror images (flip, "
                          "the default when the flag has no value) or over them and 1-pixel diagonal shifts "
                          "(flip+shifts, 10 views); default none")
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                     help="where to train (default: auto = cuda if available)")
    run.add_argument("--threads", type=_positive_int, default=None,
                     help="CPU threads for torch (default: all cores)")
    run.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def config_from(arguments):
    """The :class:`TrainConfig` the parsed ``arguments`` describe, with ``--precision auto`` resolved.

    Combinations of options that cannot work are refused here, naming the options, before any work.
    """
    _check_combinations(arguments)
    epochs = QUICK["epochs"] if arguments.quick else arguments.epochs or DEFAULT_EPOCHS
    if arguments.warmup_epochs >= epochs:
        raise ValueError(f"argument --warmup-epochs: must be less than the {epochs} epochs, "
                         f"got {arguments.warmup_epochs:g}")
    return TrainConfig(
        optimizer=arguments.optimizer,
        lr=arguments.lr,
        epochs=epochs,
        momentum=arguments.momentum,
        nesterov=arguments.nesterov,
        weight_decay=arguments.weight_decay,
        batch_size=arguments.batch_size,
        schedule=arguments.schedule,
        warmup_epochs=arguments.warmup_epochs,
        label_smoothing=arguments.label_smoothing,
        augment=arguments.augment,
        seed=arguments.seed,
        precision=training_precision(arguments)[0],
    )


def _check_combinations(arguments):
    """Refuse options that contradict each other, in the command line's terms."""
    if arguments.affine and arguments.model != "bn":
        raise ValueError("argument --affine: only applies to --model bn")
    if arguments.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("argument --device: cuda was asked for but no GPU is available")
    if arguments.quick:
        given = [option for option, name in QUICK_OPTIONS.items() if getattr(arguments, name) is not None]
        if given:
            raise ValueError(f"argument --quick: it sets {', '.join(given)} itself; drop --quick, or "
                             f"{'that option' if len(given) == 1 else 'those options'}")
    if arguments.nesterov and (arguments.optimizer != "sgd" or arguments.momentum == 0):
        raise ValueError(f"argument --nesterov: needs --optimizer sgd and --momentum > 0, got --optimizer "
                         f"{arguments.optimizer} --momentum {arguments.momentum:g}")
    if arguments.warmup_epochs and arguments.schedule != "cosine":
        raise ValueError("argument --warmup-epochs: only applies to --schedule cosine, "
                         f"got --schedule {arguments.schedule}")


def training_device(arguments):
    """Return ``(device, reason)``: the ``--device`` asked for, or :func:`choose_device`'s for ``auto``."""
    if arguments.device == "auto":
        return choose_device()
    return torch.device(arguments.device), f"{arguments.device} (--device)"


def training_precision(arguments):
    """Return ``(precision, reason)``: the ``--precision`` asked for, or :func:`choose_precision`'s
    for ``auto`` on the training device."""
    if arguments.precision == "auto":
        return choose_precision(training_device(arguments)[0])
    return arguments.precision, f"{arguments.precision} (--precision)"


def run(arguments, config):
    """Load the data, train, evaluate on the test set, and write the run directory's files."""
    run_dir = Path(arguments.run_dir or default_run_dir(arguments, config))
    model_settings = {"model": arguments.model, "affine": arguments.affine}
    epochs_saved = _check_run_dir(run_dir, arguments, config, model_settings)
    data = load_data(arguments)
    val_size = validation_size(arguments, len(data.train_labels))
    train_index, val_index = train_val_split(data.train_labels, val_size=val_size, seed=config.seed)
    validation = (data.train_images[val_index], data.train_labels[val_index]) if val_size else (None, None)
    torch.manual_seed(config.seed)
    model = build_model(arguments.model, affine=arguments.affine, ops=arguments.ops)
    device, device_reason = training_device(arguments)
    print(f"{arguments.model} net, {len(train_index)} train / {len(val_index)} validation / "
          f"{len(data.test_labels)} test images from {data.source}; run directory {run_dir}", file=sys.stderr)
    print(f"device {device_reason}; precision {training_precision(arguments)[1]}", file=sys.stderr)
    if epochs_saved is not None and epochs_saved < config.epochs:
        print(f"resuming {run_dir} from epoch {epochs_saved + 1} of {config.epochs}", file=sys.stderr)
    elif epochs_saved is not None:
        print(f"resuming {run_dir}: all {config.epochs} epochs are done, testing only", file=sys.stderr)
    history = train(
        model, config, data.train_images[train_index], data.train_labels[train_index], *validation,
        run_dir=run_dir, resume=arguments.resume, progress=not arguments.no_progress,
        device=device, num_threads=arguments.threads, ops=arguments.ops,
        model_settings=model_settings,
    )
    metrics = {"status": history.status, "message": history.message, "epochs": history.epochs}
    if history.status != "diverged":
        test = evaluate(model, data.test_images, data.test_labels, **TTA_CHOICES[arguments.tta])
        metrics |= {
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "per_class_accuracy": dict(zip(data.classes, test.per_class_accuracy.tolist())),
            "confusion": test.confusion.tolist(),
            "classes": list(data.classes),
            "tta": arguments.tta,
        }
    metrics["config"] = config.to_dict()
    metrics["model"] = {"name": arguments.model, "affine": arguments.affine, "ops": arguments.ops}
    metrics["data"] = {"source": data.source, "train": len(train_index), "val": len(val_index),
                       "test": len(data.test_labels)}
    write_json_atomic(Path(run_dir) / METRICS_NAME, _json_safe(metrics))
    save_figures(run_dir, history, metrics)
    print(summary_line(history, metrics), file=sys.stderr)
    return metrics


def _check_run_dir(run_dir, arguments, config, model_settings):
    """Refuse, before any work, to overwrite a saved run, or to resume one that is unreadable or was
    saved with other options; return the number of epochs a ``--resume`` continues from (None when it
    starts afresh)."""
    if not arguments.resume:
        if (run_dir / CHECKPOINT_NAME).exists():
            raise FileExistsError(f"{run_dir} already holds a run: add --resume to continue it, "
                                  "or use another --run-dir")
        return None
    epochs_saved = check_resume(run_dir, config, arguments.ops, model_settings)
    if epochs_saved is None:
        print(f"no checkpoint in {run_dir} yet: starting a fresh run", file=sys.stderr)
    return epochs_saved


def load_data(arguments):
    """CIFAR-10 from ``--data-dir`` (or $CIFAR10_DIR), cut to the requested subsets."""
    data = load_cifar10(root=arguments.data_dir, root_name="--data-dir")
    train_per_class = QUICK["train_per_class"] if arguments.quick else arguments.train_subset
    test_per_class = QUICK["test_per_class"] if arguments.quick else arguments.test_subset
    if train_per_class is not None or test_per_class is not None:
        train_available = _images_per_class(data.train_labels, data.classes, "--train-subset", train_per_class,
                                            "training")
        test_available = _images_per_class(data.test_labels, data.classes, "--test-subset", test_per_class,
                                           "test")
        data = subset(data, train_per_class or train_available, test_per_class or test_available)
    return data


def _images_per_class(labels, classes, option, wanted, split):
    """The number of images of the smallest class; refuses a ``wanted`` per-class subset larger than that."""
    counts = torch.bincount(labels, minlength=len(classes))
    smallest = int(counts.argmin())
    if wanted is not None and wanted > counts[smallest]:
        raise ValueError(f"argument {option}: at most {int(counts[smallest])} (the {split} images of class "
                         f"{classes[smallest]!r}), got {wanted}")
    return int(counts[smallest])


def validation_size(arguments, train_count):
    """How many of the ``train_count`` training images to hold out for validation."""
    if arguments.quick:
        return QUICK["val_size"]
    if arguments.val_size is None:
        return min(DEFAULT_VAL_SIZE, train_count // 10)
    if arguments.val_size >= train_count:
        raise ValueError(
            f"argument --val-size: must be less than the {train_count} training images, got {arguments.val_size}"
        )
    return arguments.val_size


def default_run_dir(arguments, config):
    """``runs/<model>-<optimizer>-lr<lr>-bs<batch size>-seed<seed>`` (``<model>-scratch-...`` for
    --ops scratch, with ``-quick`` for --quick)."""
    name = arguments.model + ("-affine" if arguments.affine else "")
    name += "-scratch" if arguments.ops == "scratch" else ""
    name += f"-{config.optimizer}-lr{config.lr:g}-bs{config.batch_size}-seed{config.seed}"
    return Path("runs") / (name + ("-quick" if arguments.quick else ""))


def save_figures(run_dir, history, metrics):
    """curves.png (loss and accuracy per epoch) and, when tested, confusion.png."""
    from helpers.plots import plot_confusion, plot_curves  # matplotlib loads only once training is done

    if history.epochs:
        plot_curves({Path(run_dir).name: history}).savefig(Path(run_dir) / "curves.png", dpi=100)
    if "confusion" in metrics:
        plot_confusion(torch.tensor(metrics["confusion"]), metrics["classes"]).savefig(
            Path(run_dir) / "confusion.png", dpi=100
        )


def summary_line(history, metrics):
    """One line saying how the run ended."""
    if history.status == "diverged":
        return f"run diverged: {history.message}"
    status = f"run collapsed ({history.message})" if history.status == "collapsed" else history.status
    text = f"{status} after {history.epochs} epochs: test accuracy {metrics['test_accuracy']:.2%}"
    best = history.best_val_accuracy()
    return text + (f", best validation accuracy {best:.2%}" if best is not None else "")


def _json_safe(value):
    """Replace NaN (e.g. the accuracy of a class with no test image) with None: JSON has no NaN."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _positive_int(text):
    return _int_at_least(text, 1)


def _non_negative_int(text):
    return _int_at_least(text, 0)


def _int_at_least(text, minimum):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an int >= {minimum}, got {text!r}")
    return value


def _fraction(text):
    value = _finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def _positive_float(text):
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return value


def _non_negative_float(text):
    value = _finite_float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return value


def _finite_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _augment(text):
    try:
        return Augment.parse(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


if __name__ == "__main__":
    main()
