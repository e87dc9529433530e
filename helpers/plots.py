"""Figures of training runs, sweeps, confusion matrices and feature maps (matplotlib).

Every plot function returns a ``matplotlib.figure.Figure`` built without pyplot, so nothing is
shown or kept open behind the caller's back: a notebook displays the returned figure, a script
saves it with ``figure.savefig(path)``.
"""

import math

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter, PercentFormatter

from helpers.data import normalize
from helpers.training import History, describe, make_optimizer, make_scheduler

DIVERGED_COLOR = "0.75"


def show(figure):
    """Display ``figure`` in a notebook as a PNG image only (no ``<Figure size ...>`` text beside it)."""
    import io

    from IPython.display import display

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80)
    display({"image/png": buffer.getvalue()}, raw=True)


def plot_curves(histories, log_loss=False):
    """Training and validation loss and accuracy against the epoch, for several runs on one figure.

    ``histories`` maps a run's name to its :class:`~helpers.training.History` (or its ``to_dict()``,
    e.g. read from history.json). Training curves are solid, validation curves dashed, one colour
    per run; a run that diverged or collapsed says so in the legend. ``log_loss`` draws the loss on a log scale,
    for runs whose losses differ by orders of magnitude (a run that blows up next to one that trains).
    """
    histories = _as_histories(histories)
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    for index, (name, history) in enumerate(histories.items()):
        color = f"C{index % 10}"
        label = name if history.status in ("completed", "running") else f"{name} ({history.status})"
        epochs = range(1, history.epochs + 1)
        style = dict(color=color, marker="o", markersize=3)  # markers: a one-epoch run is a point, not a line
        loss_axes.plot(epochs, history.train_loss, **style, label=f"{label}: train")
        accuracy_axes.plot(epochs, history.train_accuracy, **style, label=f"{label}: train")
        if any(value is not None for value in history.val_loss):
            loss_axes.plot(epochs, _none_to_nan(history.val_loss), "--", **style, label=f"{label}: validation")
            accuracy_axes.plot(
                epochs, _none_to_nan(history.val_accuracy), "--", **style, label=f"{label}: validation"
            )
    for axes, quantity in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
        axes.set_title(f"{quantity.capitalize()} per epoch")
        axes.set_xlabel("epoch")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(f"cross-entropy {quantity}" if quantity == "loss" else quantity)
        if quantity == "loss" and log_loss:
            axes.set_yscale("log")
            axes.set_ylabel("cross-entropy loss (log scale)")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return figure


def history_table(histories):
    """Several runs as a text table: status, epochs completed, the last epoch's training loss and
    accuracy, and the last and best validation accuracy ("n/a" where a run has none)."""
    histories = _as_histories(histories)
    width = max(12, *(len(name) for name in histories)) + 2
    header = (f"{'run':<{width}}{'status':<11}{'epochs':>7}{'train loss':>12}{'train acc':>11}"
              f"{'val acc':>9}{'best val':>10}")
    lines = [header, "-" * len(header)]
    for name, history in histories.items():
        loss = _last(history.train_loss)
        lines.append(
            f"{name:<{width}}{history.status:<11}{history.epochs:>7}"
            f"{'n/a' if loss is None else f'{loss:.4g}':>12}{_percent(_last(history.train_accuracy)):>11}"
            f"{_percent(_last(history.val_accuracy)):>9}{_percent(history.best_val_accuracy()):>10}"
        )
        if history.message:
            lines.append(f"{'':<{width}}({history.message})")
    return "\n".join(lines)


def plot_running_statistics(trace, target_mean, target_var, channels, layer_name="", momentum=0.1):
    """Running mean and running variance of a batch norm against the update step, for ``channels``.

    ``trace`` is :func:`helpers.batchnorm.track_running_statistics`'s ``{"mean", "var"}`` (row k:
    after k batches); ``target_mean`` and ``target_var`` (one value per channel) are drawn as dashed
    horizontal lines in the channel's colour: the statistics of the layer's input over the whole data.
    """
    if not isinstance(trace, dict) or set(trace) != {"mean", "var"}:
        raise ValueError("trace must be a dict with keys 'mean' and 'var' (track_running_statistics' result)")
    channels = list(channels)
    count = trace["mean"].shape[1]
    if not channels or any(not isinstance(c, int) or not 0 <= c < count for c in channels):
        raise ValueError(f"channels must be a non-empty list of channel indices in [0, {count}), got {channels}")
    figure = Figure(figsize=(12, 4.2), layout="constrained")
    panels = figure.subplots(1, 2)
    steps = range(trace["mean"].shape[0])
    for axes, key, target, name in ((panels[0], "mean", target_mean, "running_mean"),
                                    (panels[1], "var", target_var, "running_var")):
        for index, channel in enumerate(channels):
            color = f"C{index % 10}"
            axes.plot(steps, trace[key][:, channel].numpy(), color=color, label=f"channel {channel}")
            axes.axhline(float(target[channel]), color=color, linestyle="--", linewidth=1)
        axes.plot([], [], color="0.3", linestyle="--", linewidth=1, label="statistic of the whole training set")
        axes.set_title(f"{layer_name} {name}".strip() + f" (momentum {momentum:g})")
        axes.set_xlabel("update step (batches seen)")
        axes.set_ylabel(name)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    return figure


def sweep_record(config, history):
    """One row of a sweep for :func:`plot_sweep` and :func:`sweep_table`: the config's knobs, the run's
    status and its best validation accuracy over the epochs (None for a diverged run)."""
    return {
        "optimizer": config.optimizer,
        "lr": config.lr,
        "batch_size": config.batch_size,
        "status": history.status,
        "val_accuracy": history.best_val_accuracy() if history.status != "diverged" else None,
    }


def plot_sweep(results):
    """Heatmaps of validation accuracy over learning rate x batch size, one panel per optimizer.

    ``results`` is a list of dicts with keys ``optimizer``, ``lr``, ``batch_size``, ``status`` and
    ``val_accuracy`` (see :func:`sweep_record`). The colours span the accuracies of the runs that
    learned, so that their differences show; cells of collapsed and diverged runs are grey and say
    so. The best run is named in the title.
    """
    results = list(results)
    if not results:
        raise ValueError("results is empty: give at least one sweep record")
    for result in results:
        missing = {"optimizer", "lr", "batch_size", "status", "val_accuracy"} - set(result)
        if missing:
            raise ValueError(
                f"each result needs keys optimizer, lr, batch_size, status, val_accuracy; missing {sorted(missing)}"
            )
    optimizers = sorted({result["optimizer"] for result in results})
    learning_rates = sorted({result["lr"] for result in results})
    batch_sizes = sorted({result["batch_size"] for result in results})
    learned = [result for result in results if _learned(result)]
    low, high = _colour_range([result["val_accuracy"] for result in learned])
    figure = Figure(figsize=(2.4 + 1.5 * len(batch_sizes) * len(optimizers), 1.6 + 0.6 * len(learning_rates)),
                    layout="constrained")
    panels = figure.subplots(1, len(optimizers), squeeze=False)[0]
    for axes, optimizer in zip(panels, optimizers):
        accuracy = torch.full((len(learning_rates), len(batch_sizes)), math.nan)
        for result in (result for result in results if result["optimizer"] == optimizer):
            row, column = learning_rates.index(result["lr"]), batch_sizes.index(result["batch_size"])
            if _learned(result):
                accuracy[row, column] = result["val_accuracy"]
                text = _percent(result["val_accuracy"])
                dark_cell = result["val_accuracy"] < low + 0.5 * (high - low)  # the low end of viridis is dark
            else:
                text = result["status"] if result["val_accuracy"] is None else (
                    f"{result['status']}\n{_percent(result['val_accuracy'])}")
                dark_cell = False
            axes.text(column, row, text, ha="center", va="center", fontsize="small",
                      color="white" if dark_cell else "black")
        axes.set_facecolor(DIVERGED_COLOR)
        image = axes.imshow(accuracy.numpy(), cmap="viridis", vmin=low, vmax=high, aspect="auto")
        axes.set_xticks(range(len(batch_sizes)), [str(size) for size in batch_sizes])
        axes.set_yticks(range(len(learning_rates)), [f"{lr:g}" for lr in learning_rates])
        axes.set_xlabel("batch size")
        axes.set_ylabel("learning rate")
        axes.set_title(f"{optimizer}: best validation accuracy")
    colour_bar = figure.colorbar(image, ax=panels.tolist(), label="validation accuracy")
    colour_bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    if learned:
        best = max(learned, key=lambda result: result["val_accuracy"])
        figure.suptitle(
            f"Best: {best['optimizer']}, lr {best['lr']:g}, batch {best['batch_size']} "
            f"({_percent(best['val_accuracy'])}); grey: collapsed or diverged"
        )
    return figure


def plot_sweep_curves(runs):
    """The curves of a sweep, one row of panels per optimizer: loss on a log scale, and accuracy.

    ``runs`` is a list of ``(config, history)`` pairs. Within a row each run has its own colour and
    one legend entry (learning rate and batch size, and the status of a run that collapsed or
    diverged), outside the panels; training is solid, validation dashed. The log scale keeps a run
    whose loss blew up from flattening the others.
    """
    runs = list(runs)
    if not runs:
        raise ValueError("runs is empty: give at least one (config, history) pair")
    optimizers = sorted({config.optimizer for config, _ in runs})
    figure = Figure(figsize=(12, 3.4 * len(optimizers)), layout="constrained")
    rows = figure.subplots(len(optimizers), 2, squeeze=False)
    for (loss_axes, accuracy_axes), optimizer in zip(rows, optimizers):
        row_runs = sorted(((config, history) for config, history in runs if config.optimizer == optimizer),
                          key=lambda run: (-run[0].lr, run[0].batch_size))
        for index, (config, history) in enumerate(row_runs):
            label = f"lr {config.lr:g}, batch {config.batch_size}"
            if history.status in ("collapsed", "diverged"):
                label += f" ({history.status})"
            style = dict(color=f"C{index % 10}", marker="o", markersize=3)
            epochs = range(1, history.epochs + 1)
            loss_axes.plot(epochs, history.train_loss, **style, label=label)
            accuracy_axes.plot(epochs, history.train_accuracy, **style, label=label)
            if any(value is not None for value in history.val_loss):
                loss_axes.plot(epochs, _none_to_nan(history.val_loss), "--", **style)
                accuracy_axes.plot(epochs, _none_to_nan(history.val_accuracy), "--", **style)
        _plain_log_scale(loss_axes)
        loss_axes.set_ylabel("cross-entropy loss (log scale)")
        accuracy_axes.set_ylabel("accuracy")
        accuracy_axes.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
        for axes, quantity in ((loss_axes, "loss"), (accuracy_axes, "accuracy")):
            axes.set_title(f"{optimizer}: {quantity} (solid: training, dashed: validation)")
            axes.set_xlabel("epoch")
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(alpha=0.3)
        accuracy_axes.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return figure


def sweep_table(results):
    """The sweep as a text table sorted by validation accuracy, best first; collapsed and diverged runs last."""
    header = f"{'optimizer':<10}{'lr':>10}{'batch':>7}  {'val acc':>8}  status"
    def sort_key(result):
        return (_learned(result), -1.0 if result["val_accuracy"] is None else result["val_accuracy"])

    rows = sorted(results, key=sort_key, reverse=True)
    lines = [header, "-" * len(header)]
    for result in rows:
        accuracy = "diverged" if result["status"] == "diverged" else _percent(result["val_accuracy"])
        lines.append(
            f"{result['optimizer']:<10}{result['lr']:>10g}{result['batch_size']:>7}  {accuracy:>8}  {result['status']}"
        )
    return "\n".join(lines)


def accuracy_headline(evaluations, assignment_accuracy):
    """The headline of a final model: one line per test-time scoring, then the single view against
    the assignment's (single-view) test accuracy, so that like is compared with like.

    ``evaluations`` is :func:`helpers.training.evaluate_views`'s ``{scoring: Evaluation}``.
    """
    if "single view" not in evaluations:
        raise ValueError(f"evaluations needs a 'single view' entry to compare with the assignment; has {list(evaluations)}")
    lines = [f"test accuracy ({name}): {evaluation.accuracy:.2%}" for name, evaluation in evaluations.items()]
    difference = 100 * (evaluations["single view"].accuracy - assignment_accuracy)
    lines.append(f"the assignment's test accuracy (single view): {assignment_accuracy:.2%}; "
                 f"this model's single view: {difference:+.2f} points")
    return "\n".join(lines)


def accuracy_table(evaluations, classes):
    """Overall and per-class accuracy of each of ``evaluations`` (``{name: Evaluation}``, as
    :func:`helpers.training.evaluate_views` returns) as a text table, one column per evaluation."""
    for name, evaluation in evaluations.items():
        if len(evaluation.per_class_accuracy) != len(classes):
            raise ValueError(f"evaluation {name!r} has {len(evaluation.per_class_accuracy)} per-class "
                             f"accuracies, but classes has {len(classes)} names")
    width = max([10] + [len(name) + 2 for name in evaluations])
    def row(label, values, precision):
        return f"{label:<12}" + "".join(f"{value:>{width}.{precision}%}" for value in values)

    header = f"{'class':<12}" + "".join(f"{name:>{width}}" for name in evaluations)
    lines = [header, row("all", (evaluation.accuracy for evaluation in evaluations.values()), 2)]
    for index, name in enumerate(classes):
        lines.append(row(name, (evaluation.per_class_accuracy[index].item() for evaluation in evaluations.values()), 1))
    return "\n".join(lines)


def plot_lr_schedule(config, steps_per_epoch):
    """The learning rate of every training step under ``config``'s schedule, against the epoch.

    It steps the very scheduler ``train`` builds (:func:`helpers.training.make_scheduler`), on a
    stand-in parameter, so the curve is the one a run of ``config`` follows.
    """
    if not (isinstance(steps_per_epoch, int) and steps_per_epoch >= 1):
        raise ValueError(f"steps_per_epoch must be a positive int, got {steps_per_epoch!r}")
    optimizer = make_optimizer(torch.nn.Linear(1, 1), config)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch)
    rates = []
    for _ in range(config.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    figure = Figure(figsize=(7, 3.2), layout="constrained")
    axes = figure.subplots()
    axes.plot([step / steps_per_epoch for step in range(len(rates))], rates, label=f"{config.optimizer}, {config.schedule}")
    axes.set_title(f"Learning rate per step ({config.schedule} schedule, peak {max(rates):g})")
    axes.set_xlabel(f"epoch ({steps_per_epoch} steps each)")
    axes.set_ylabel("learning rate")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def plot_augmentations(images, augments, seed=0):
    """Each of ``images`` (uint8 [N, 3, H, W]) as training sees it under each augmentation.

    ``augments`` maps a column title to an :class:`helpers.data.Augment`; the first column is the
    image itself. Every column draws its random choices from a generator seeded with ``seed``.
    """
    if not (isinstance(images, torch.Tensor) and images.dtype == torch.uint8 and images.dim() == 4):
        raise ValueError(f"images must be a uint8 tensor [N, 3, H, W], got {describe(images)}")
    columns = {"original": images}
    for title, augment in augments.items():
        columns[title] = augment(images, torch.Generator().manual_seed(seed))
    figure = Figure(figsize=(1.5 * len(columns), 1.55 * len(images) + 0.4), layout="constrained")
    grid = figure.subplots(len(images), len(columns), squeeze=False)
    for column, (title, batch) in enumerate(columns.items()):
        for row in range(len(images)):
            axes = grid[row, column]
            axes.imshow(batch[row].permute(1, 2, 0).numpy())
            axes.set_xticks([])
            axes.set_yticks([])
        grid[0, column].set_title(title, fontsize="small")
    figure.suptitle("Training images under each augmentation (one random draw each)")
    return figure


def plot_confusion(confusion, classes):
    """The confusion matrix (rows: true class, columns: predicted class) with its counts written in."""
    confusion = torch.as_tensor(confusion)
    if confusion.dim() != 2 or confusion.shape[0] != confusion.shape[1] or confusion.shape[0] != len(classes):
        raise ValueError(
            f"confusion must be a square matrix with one row per class ({len(classes)}), "
            f"got shape {list(confusion.shape)}"
        )
    figure = Figure(figsize=(7.5, 6.5), layout="constrained")
    axes = figure.subplots()
    image = axes.imshow(confusion.numpy(), cmap="Blues")
    threshold = confusion.max().item() / 2
    for (row, column), count in zip(torch.cartesian_prod(*[torch.arange(len(classes))] * 2).tolist(),
                                    confusion.flatten().tolist()):
        axes.text(column, row, f"{count:g}", ha="center", va="center", fontsize="x-small",
                  color="white" if count > threshold else "black")
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    total = confusion.sum().item()
    accuracy = confusion.diagonal().sum().item() / total if total else math.nan
    axes.set_title(f"Confusion matrix (accuracy {_percent(accuracy)})")
    figure.colorbar(image, ax=axes, label="images")
    return figure


def show_image(image, title):
    """One uint8 ``[3, H, W]`` image, enlarged, with ``title``."""
    figure = Figure(figsize=(2.5, 2.7), layout="constrained")
    axes = figure.subplots()
    axes.imshow(image.permute(1, 2, 0).cpu().numpy(), interpolation="nearest")
    axes.set_title(title)
    axes.set_axis_off()
    return figure


def feature_maps(model, image):
    """Return ``{layer name: activation [C, H, W]}`` for every convolution of ``model`` on one image.

    ``image`` is uint8 ``[3, H, W]`` (normalised here) or an already normalised float ``[3, H, W]``.
    Each convolution's map is taken at the end of its block: after its ReLU, and for the bn net
    after the BatchNorm that follows the ReLU (conv -> ReLU -> BN), i.e. what the next layer sees.
    Runs in eval mode without gradients; the model's mode is restored. Keys are the conv names
    (``conv1`` ... ``conv8``).
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        found = list(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image must be one image tensor [C, H, W], got {found}")
    inputs = normalize(image[None]) if image.dtype == torch.uint8 else image[None].float()
    parameter = next(model.parameters())
    inputs = inputs.to(parameter.device)
    outputs = {}
    hooks = [
        module.register_forward_hook(_store_output(outputs, name))
        for name, module in _block_ends(model).items()
    ]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(inputs)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return outputs


def _block_ends(model):
    """Map each convolution's name to the last module of its block (the conv, its ReLU, its BN)."""
    ends = {}
    current = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Conv2d):
            current = name
            ends[current] = module
        elif current is not None and isinstance(module, (torch.nn.ReLU, torch.nn.BatchNorm2d)):
            ends[current] = module
        elif name and not list(module.children()):
            current = None  # a pool, flatten or linear layer ends the block
    if not ends:
        raise ValueError("model has no Conv2d layer to take feature maps from")
    return ends


def _store_output(outputs, name):
    def hook(module, inputs, output):
        outputs[name] = output[0].detach().float().contiguous().cpu()

    return hook


def plot_feature_maps(maps, max_channels=16):
    """Raw feature maps ("without absolute average"): the first ``max_channels`` channels of each layer.

    One row per layer, each channel on its own colour scale (the colour shows where a channel is
    high or low, not how it compares with other channels).
    """
    if not maps:
        raise ValueError("maps is empty: pass the output of feature_maps()")
    if not isinstance(max_channels, int) or isinstance(max_channels, bool) or max_channels < 1:
        raise ValueError(f"max_channels must be a positive int, got {max_channels!r}")
    columns = min(max_channels, max(activation.shape[0] for activation in maps.values()))
    figure = Figure(figsize=(1.1 * columns + 1.0, 1.2 * len(maps) + 0.6), layout="constrained")
    grid = figure.subplots(len(maps), columns, squeeze=False)
    for row, (name, activation) in enumerate(maps.items()):
        for column in range(columns):
            axes = grid[row, column]
            axes.set_xticks([])
            axes.set_yticks([])
            if column < activation.shape[0]:
                axes.imshow(activation[column].numpy(), cmap="viridis")
                if row == 0:
                    axes.set_title(f"channel {column}", fontsize="x-small")
            else:
                axes.set_axis_off()
        grid[row, 0].set_ylabel(f"{name}\n{_shape_text(activation)}", fontsize="small")
    figure.suptitle(f"Feature maps, raw channels (first {columns} per layer)")
    return figure


def plot_mean_abs_maps(maps):
    """Feature maps "with absolute average": the mean over channels of |activation|, one panel per layer."""
    if not maps:
        raise ValueError("maps is empty: pass the output of feature_maps()")
    figure = Figure(figsize=(2.4 * len(maps), 3.0), layout="constrained")
    panels = figure.subplots(1, len(maps), squeeze=False)[0]
    for axes, (name, activation) in zip(panels, maps.items()):
        image = axes.imshow(activation.abs().mean(dim=0).numpy(), cmap="magma")
        axes.set_title(f"{name}\n{_shape_text(activation)}", fontsize="small")
        axes.set_xlabel("x")
        axes.set_ylabel("y")
        figure.colorbar(image, ax=axes, shrink=0.7, label="mean |activation|")
    figure.suptitle("Channel mean of |activation| per layer")
    return figure


def feature_map_summary(maps):
    """Per layer: name, shape [C, H, W], mean, std and the fraction of exactly-zero activations."""
    return [
        {
            "layer": name,
            "shape": list(activation.shape),
            "mean": activation.mean().item(),
            "std": activation.std().item(),
            "zero_fraction": (activation == 0).float().mean().item(),
        }
        for name, activation in maps.items()
    ]


def format_feature_map_summary(rows):
    """:func:`feature_map_summary`'s rows as a printable table."""
    header = f"{'layer':<8}{'shape':>16}{'mean':>10}{'std':>10}{'zeros':>8}"
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row['layer']:<8}{str(row['shape']):>16}{row['mean']:>10.4f}{row['std']:>10.4f}"
            f"{row['zero_fraction']:>8.1%}"
        )
    return "\n".join(lines)


def _as_histories(histories):
    if not isinstance(histories, dict) or not histories:
        raise ValueError("histories must be a non-empty dict {run name: History}")
    return {
        name: history if isinstance(history, History) else History.from_dict(history)
        for name, history in histories.items()
    }


def _none_to_nan(values):
    return [math.nan if value is None else value for value in values]


def _last(values):
    return values[-1] if values else None


def _plain_log_scale(axes):
    """A log y axis labelled with plain numbers (2.3, not 2.3x10^0); the minor ticks are labelled
    only when the data spans less than a decade, where no major tick may show."""
    axes.set_yscale("log")
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    axes.yaxis.set_major_formatter(plain)
    low, high = axes.get_ylim()
    axes.yaxis.set_minor_formatter(plain if high / low < 10 else NullFormatter())


def _learned(result):
    """A sweep record of a run that neither collapsed nor diverged."""
    return result["status"] not in ("collapsed", "diverged") and result["val_accuracy"] is not None


def _colour_range(values):
    """(low, high) of a colour scale that spans ``values``, widened to at least 5 points; (0, 1) if none."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    middle, half = (low + high) / 2, max(high - low, 0.05) / 2
    return middle - half, middle + half


def _percent(value):
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _shape_text(activation):
    return "x".join(str(size) for size in activation.shape)
