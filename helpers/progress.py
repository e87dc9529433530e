"""Progress of a training run that reads anywhere: in a terminal, on GitHub, in Jupyter.

In a terminal, tqdm's text bars: one for the run, one for the current epoch. In a Jupyter kernel,
one line of plain text, rewritten in place while the run trains (an IPython display with an id)
and left, once the run ends, as the run's summary: epochs, time, last training and validation
numbers. A saved notebook keeps only that last line. tqdm's notebook bars are widgets instead: a
notebook saves their state, and GitHub, which runs no widget code, shows each bar as its first
state, stuck at 0%.
"""

import time

from tqdm.std import tqdm

SECONDS_BETWEEN_UPDATES = 0.5


def in_notebook():
    """True inside a Jupyter kernel (where stdout is a notebook's output, not a terminal)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def summary_line(label, history, epochs):
    """One line that says how a run ended: epochs, time, and its last training and validation numbers."""
    seconds = sum(history.seconds)
    took = f"{seconds:.0f} s" if seconds < 60 else f"{seconds / 60:.1f} min"
    status = "stopped" if history.status == "running" else history.status
    line = f"{label}: {status} after {history.epochs}/{epochs} epochs, {took}"
    if history.epochs:
        line += f", train loss {history.train_loss[-1]:.3f}, train accuracy {history.train_accuracy[-1]:.2%}"
        if history.val_accuracy[-1] is not None:
            line += f", validation accuracy {history.val_accuracy[-1]:.2%}"
    if history.message:
        line += f" ({history.message})"
    return line


class RunProgress:
    """Shows one training run: ``start_epoch``, ``batch`` after each step, ``end_epoch``, ``close``.

    ``enabled=False`` shows nothing. ``label`` leads every line (and the bars' descriptions).
    """

    def __init__(self, label, epochs, done_epochs, enabled=True):
        self.label, self.epochs, self.enabled = label, epochs, enabled
        self.notebook = enabled and in_notebook()
        self.batches, self.step, self.epoch, self.postfix = 0, 0, done_epochs, ""
        self.last_shown = 0.0
        self.handle = self.run_bar = self.epoch_bar = None
        if self.notebook:
            from IPython.display import display

            self.handle = display(_Text(self._line()), display_id=True)
        elif enabled:
            self.run_bar = tqdm(total=epochs, initial=done_epochs, desc=label, unit="epoch")

    def start_epoch(self, epoch, batches):
        """Epoch ``epoch`` (counted from 0) of ``batches`` steps begins."""
        self.epoch, self.batches, self.step = epoch, batches, 0
        if self.run_bar is not None:
            self.epoch_bar = tqdm(total=batches, desc=f"epoch {epoch + 1}/{self.epochs}", unit="batch", leave=False)

    def batch(self, loss=None, accuracy=None):
        """One step done; ``loss`` and ``accuracy``, when given, are the epoch's running means."""
        self.step += 1
        if loss is not None:
            self.postfix = f"loss {loss:.3f}, accuracy {accuracy:.2%}"
        if self.epoch_bar is not None:
            self.epoch_bar.update(1)
            if loss is not None:
                self.epoch_bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}", refresh=False)
        elif self.notebook and time.monotonic() - self.last_shown >= SECONDS_BETWEEN_UPDATES:
            self._show(self._line())

    def end_epoch(self, history):
        """The epoch is over and ``history`` holds its numbers."""
        if self.epoch_bar is not None:
            self.epoch_bar.close()
            self.epoch_bar = None
        if self.run_bar is not None:
            self.run_bar.update(1)
            self.run_bar.set_postfix_str(_last_epoch(history), refresh=False)

    def close(self, history):
        """The run is over: leave its summary line (in a notebook) or close the bars."""
        if self.epoch_bar is not None:
            self.epoch_bar.close()
        if self.run_bar is not None:
            self.run_bar.close()
        if self.notebook:
            self._show(summary_line(self.label, history, self.epochs))

    def _line(self):
        line = f"{self.label}: epoch {self.epoch + 1}/{self.epochs}, batch {self.step}/{self.batches}"
        return f"{line}, {self.postfix}" if self.postfix else line

    def _show(self, text):
        self.handle.update(_Text(text))
        self.last_shown = time.monotonic()


def _last_epoch(history):
    text = f"loss {history.train_loss[-1]:.3f}, acc {history.train_accuracy[-1]:.3f}"
    if history.val_accuracy[-1] is not None:
        text += f", val_acc {history.val_accuracy[-1]:.3f}"
    return text


class _Text:
    """Plain text that IPython displays as itself (a str would be shown with its quotes)."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text
