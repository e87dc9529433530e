"""Fixtures shared by several test modules."""

import functools

import pytest
import torch

from helpers import data as data_module
from helpers import train as cli
from support import TEST_PER_CLASS, TRAIN_PER_CLASS, learnable_images, write_tiny_cifar


@pytest.fixture(scope="module")
def tiny():
    """160 training and 40 validation images that a small run learns from (train_images, train_labels,
    val_images, val_labels)."""
    train_images, train_labels = learnable_images(160, seed=0)
    val_images, val_labels = learnable_images(40, seed=1)
    return train_images, train_labels, val_images, val_labels


@pytest.fixture
def one_thread():
    """One thread: on a busy 2-core machine two threads are slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def restore_threads():
    """Give torch back its thread count after a test that sets it (the command line's --threads)."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """A CIFAR-10-shaped image-folder tree with TRAIN_PER_CLASS train and TEST_PER_CLASS test JPEGs per class."""
    return write_tiny_cifar(tmp_path_factory.mktemp("tiny-cifar"), TRAIN_PER_CLASS, TEST_PER_CLASS)


@pytest.fixture
def small_loader(tiny_cifar, tmp_path, monkeypatch):
    """Let the CLI's loader accept the tiny tree's counts (the real loader expects 50,000 / 10,000)."""
    loader = functools.partial(
        data_module.load_cifar10,
        cache_dir=tmp_path / "cache",
        expected_counts=(10 * TRAIN_PER_CLASS, 10 * TEST_PER_CLASS),
    )
    monkeypatch.setattr(cli, "load_cifar10", loader)
    return tiny_cifar
