"""CIFAR-10: loading, caching, splitting, augmenting and batching.

`load_cifar10` reads CIFAR-10 from either layout it is commonly found in (torchvision's pickled
``cifar-10-batches-py`` or JPEG/PNG image folders ``train/<class>/*``, ``test/<class>/*``), checks it,
and caches the decoded uint8 arrays under ``data/`` so that later loads take well under a second.
Everything after loading works on whole uint8 tensors in memory: `Batches` draws shuffled batches,
`Augment` transforms a batch at once (no per-image Python loop), and `normalize` turns it into the
float32 channels-last input the networks take. All randomness flows through explicit generators, so
an epoch's batches depend only on ``(seed, epoch)`` and a resumed run replays exactly.
"""

import hashlib
import math
import os
import pickle
import re
import sys
import tempfile
import time
import warnings
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# Per-channel mean and standard deviation of the 50,000 training images, in [0, 1] units (the
# usual published values; the JPEG copy in /work/shared differs from them by less than 0.002).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

IMAGE_SHAPE = (3, 32, 32)
EXPECTED_COUNTS = (50_000, 10_000)
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / "data"
ENV_VAR = "CIFAR10_DIR"
BATCHES_DIR_NAME = "cifar-10-batches-py"
TRAIN_BATCH_FILES = tuple(f"data_batch_{number}" for number in range(1, 6))
TEST_BATCH_FILE = "test_batch"
META_FILE = "batches.meta"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Bump when the cache's content or layout changes, so that old caches are not read.
CACHE_FORMAT = "1"
CACHE_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
DECODE_THREADS = min(8, 2 * (os.cpu_count() or 1))
DECODE_CHUNK = 500
INTEGER_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)

ROOT_NAME = "the root argument"
# A damaged or misshapen image: removing it would only fail the image count, so the advice is to restore it.
RESTORE_IMAGE = "restore it from the original CIFAR-10 archive (the data set needs every one of its images)"


def how_to_fix(target=ENV_VAR, root_name=ROOT_NAME):
    """The advice that ends an error about a missing or incomplete source: point ``target`` (the option or
    variable the folder came from) at a complete copy, or download one (``root_name``: how the caller calls
    ``load_cifar10``'s ``root``, e.g. ``--data-dir``)."""
    return (
        f"Point {target} at a folder holding either train/<class>/*.jpg and test/<class>/*.jpg "
        f"(10 class folders: {', '.join(CLASSES)}) or torchvision's {BATCHES_DIR_NAME}/ "
        f"(data_batch_1..5, test_batch, batches.meta); or, on a machine that is online, give neither "
        f"{root_name} nor {ENV_VAR} and torchvision downloads CIFAR-10 into {DATA_DIR}."
    )


class DatasetError(ValueError):
    """The CIFAR-10 source is missing, incomplete or not what it should be (the message says how)."""


class _IncompleteSource(DatasetError):
    """A source that lacks files or images: `load_cifar10` ends its message with `how_to_fix`."""


@dataclass(repr=False)
class CIFAR10:
    """CIFAR-10 in memory: uint8 images [N, 3, 32, 32] and int64 labels [N] for each split."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple = CLASSES
    source: str = ""

    def __repr__(self):
        return (
            f"CIFAR10(train={len(self.train_labels)}, test={len(self.test_labels)}, "
            f"classes={len(self.classes)}, source={shown_source(self.source)!r})"
        )


def shown_source(source):
    """``source`` as a reader on any machine can follow it: ``$CIFAR10_DIR`` for the folder that variable
    names, a path relative to the repository for one inside it, never this machine's absolute path."""
    if os.environ.get(ENV_VAR):
        named = str(_resolve_env_dir(os.environ[ENV_VAR]))
        if source == named or source.startswith((named + os.sep, named + " ")):
            return f"${ENV_VAR}" + source[len(named):]
    if source.startswith(str(REPO_ROOT) + os.sep):
        return source[len(str(REPO_ROOT)) + 1:]
    return source


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_cifar10(root=None, cache_dir=DATA_DIR, expected_counts=EXPECTED_COUNTS, download=True, root_name=ROOT_NAME):
    """Return CIFAR-10 as a `CIFAR10` of uint8 image and int64 label tensors.

    The source is ``root`` if given, else ``$CIFAR10_DIR``, else ``cache_dir`` (where torchvision
    downloads CIFAR-10 when ``download`` is true and the machine is online). A source holds either
    ``cifar-10-batches-py/`` (or is that folder) or ``train/<class>/*`` and ``test/<class>/*`` image
    folders; if it holds both, the pickled batches (the official pixels) win. The source is checked
    (the 10 CIFAR-10 classes in label order, ``expected_counts`` = (train, test) images, each 32x32
    RGB) and decoded once; the arrays are cached in ``cache_dir`` under a name that hashes the source
    path and its file listing, so later loads only read the cache. The source is never written to.
    Tests pass small ``expected_counts`` to load small fake trees. Errors are :class:`DatasetError`s
    that name the folder or file and the fix, calling ``root`` by ``root_name`` (the command line
    passes ``--data-dir``).
    """
    _check_expected_counts(expected_counts)
    cache_dir = Path(cache_dir)
    source_dir, target = _find_source(root, root_name, cache_dir, download)
    try:
        arrays = _load_arrays(source_dir, cache_dir, expected_counts)
    except _IncompleteSource as error:
        raise DatasetError(f"{error} {how_to_fix(target, root_name)}") from error.__cause__
    return CIFAR10(
        train_images=torch.from_numpy(arrays["train_images"]),
        train_labels=torch.from_numpy(arrays["train_labels"]),
        test_images=torch.from_numpy(arrays["test_images"]),
        test_labels=torch.from_numpy(arrays["test_labels"]),
        classes=CLASSES,
        source=str(source_dir),
    )


def _load_arrays(source_dir, cache_dir, expected_counts):
    """The checked arrays of ``source_dir``: from the cache, else read (and checked) and then cached."""
    layout = "batches" if _is_batches_dir(source_dir) else "folders"
    listing = _list_source(source_dir, layout)
    cache_path = cache_dir / f"cifar10-{_cache_key(source_dir, layout, listing)}.npz"
    arrays = _read_cache(cache_path)
    if arrays is None:
        started = time.perf_counter()
        if layout == "batches":  # six pickles, read and checked in a second or two
            arrays = _read_batches(source_dir, expected_counts)
            print(f"helpers.data: read CIFAR-10 from {source_dir} in {time.perf_counter() - started:.1f} s, "
                  f"cached in {cache_path}", file=sys.stderr)
        else:
            _check_folder_counts(source_dir, listing, expected_counts)
            print(f"helpers.data: decoding CIFAR-10 from {source_dir} once, into {cache_path}", file=sys.stderr)
            arrays = _decode_folders(source_dir, listing)
            print(f"helpers.data: decoded in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        _write_cache(cache_path, arrays)
    _check_arrays(arrays, expected_counts, origin=str(cache_path))
    return arrays


def _check_expected_counts(expected_counts):
    if (
        not isinstance(expected_counts, (tuple, list))
        or len(expected_counts) != 2
        or not all(_is_int_at_least(count, 1) for count in expected_counts)
    ):
        raise ValueError(
            f"expected_counts must be two positive ints (train, test), got {expected_counts!r}"
        )


def _find_source(root, root_name, cache_dir, download):
    """Return the folder that holds CIFAR-10 (a batches folder or a train/ test/ root), and the name of
    what chose it (``root_name``, the variable, or both when neither was given), for the advice."""
    if root is not None:
        return _source_in(Path(root), root_name, how_to_fix(root_name, root_name)), root_name
    if os.environ.get(ENV_VAR):
        return _source_in(_resolve_env_dir(os.environ[ENV_VAR]), ENV_VAR, how_to_fix(ENV_VAR, root_name)), ENV_VAR
    target = f"{ENV_VAR} or {root_name}"
    if _source_layout(cache_dir) is not None:
        return _source_in(cache_dir, "the default data folder", how_to_fix(target, root_name)), target
    if not download:
        raise DatasetError(
            f"No CIFAR-10 found: {root_name} not given, {ENV_VAR} unset, and {cache_dir} holds neither "
            f"{BATCHES_DIR_NAME}/ nor train/ and test/ folders (download=False). {how_to_fix(target, root_name)}"
        )
    _download_batches(cache_dir, root_name, how_to_fix(target, root_name))
    return cache_dir / BATCHES_DIR_NAME, target


def _resolve_env_dir(value):
    """Resolve $CIFAR10_DIR: relative to the working directory, else to the repository root."""
    path = Path(value).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path


def _source_in(path, origin, fix):
    if not path.is_dir():
        raise DatasetError(f"CIFAR-10 folder {path} (from {origin}) does not exist. {fix}")
    layout_dir = _source_layout(path)
    if layout_dir is None:
        found = sorted(entry.name for entry in path.iterdir())[:20]
        raise DatasetError(
            f"CIFAR-10 folder {path} (from {origin}) holds neither {BATCHES_DIR_NAME}/ nor train/ "
            f"and test/ folders; found: {found}. {fix}"
        )
    return layout_dir


def _source_layout(path):
    """Return the batches folder or image-folder root inside ``path``, or None if it has neither."""
    if _is_batches_dir(path / BATCHES_DIR_NAME):
        return path / BATCHES_DIR_NAME
    if _is_batches_dir(path):
        return path
    if (path / "train").is_dir() or (path / "test").is_dir():
        return path
    return None


def _is_batches_dir(path):
    return (path / TRAIN_BATCH_FILES[0]).is_file()


def _download_batches(cache_dir, root_name, fix):
    """Download torchvision's CIFAR-10 batches into ``cache_dir``; a clear error when offline."""
    from torchvision import datasets  # imported here: only this rare path needs torchvision

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        datasets.CIFAR10(root=str(cache_dir), train=True, download=True)
    except (OSError, RuntimeError) as error:
        raise DatasetError(
            f"No CIFAR-10 found ({root_name} not given, {ENV_VAR} unset, nothing in {cache_dir}) and "
            f"the download failed: {error}. {fix}"
        ) from error


def _list_source(source_dir, layout):
    """Return the source's files as sorted relative paths (with sizes for the few batch files).

    This listing is the cache key's input, and for image folders it also checks the folder
    structure (both splits, the 10 classes). Image sizes are not read: 60,000 stat calls would
    double the time of a cached load, and a dataset changes by files coming and going.
    """
    if layout == "batches":
        names = (*TRAIN_BATCH_FILES, TEST_BATCH_FILE, META_FILE)
        missing = [name for name in names if not (source_dir / name).is_file()]
        if missing:
            raise _IncompleteSource(f"{source_dir} lacks {', '.join(missing)}.")
        return [f"{name}\0{(source_dir / name).stat().st_size}" for name in names]
    listing = []
    for split in ("train", "test"):
        split_dir = source_dir / split
        if not split_dir.is_dir():
            raise _IncompleteSource(f"{split_dir} is missing: image folders need train/ and test/.")
        for class_name in _class_folders(split_dir):
            names = sorted(
                name for name in os.listdir(split_dir / class_name) if name.lower().endswith(IMAGE_SUFFIXES)
            )
            listing += [f"{split}/{class_name}/{name}" for name in names]
    return listing


def _class_folders(split_dir):
    """Return the class folder names of a split, checked to be exactly CLASSES."""
    names = sorted(
        entry.name for entry in split_dir.iterdir() if entry.is_dir() and not entry.name.startswith(".")
    )
    if tuple(names) != CLASSES:
        missing = sorted(set(CLASSES) - set(names))
        unexpected = sorted(set(names) - set(CLASSES))
        raise DatasetError(
            f"{split_dir} must hold exactly the 10 CIFAR-10 class folders {list(CLASSES)}; "
            f"found {names} (missing: {missing}, unexpected: {unexpected}). Rename or remove "
            f"folders so that their sorted names are the class names in label order."
        )
    return names


def _cache_key(source_dir, layout, listing):
    digest = hashlib.sha256(f"{CACHE_FORMAT}\n{source_dir.resolve()}\n{layout}\n".encode())
    digest.update("\n".join(listing).encode())
    return digest.hexdigest()[:16]


def _read_cache(cache_path):
    """Return the cached arrays, or None if there is no usable cache (a broken one is rebuilt)."""
    if not cache_path.is_file():
        return None
    try:
        with np.load(cache_path, allow_pickle=False) as cached:
            return {key: cached[key] for key in CACHE_KEYS}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        warnings.warn(f"ignoring unreadable CIFAR-10 cache {cache_path} ({error}); decoding again")
        return None


def _write_cache(cache_path, arrays):
    """Write the arrays atomically (temporary file, then rename); warn and go on if we cannot."""
    temporary_path = None
    try:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache_path.parent, suffix=".tmp", delete=False) as file:
            temporary_path = Path(file.name)
            np.savez(file, **arrays)
        os.chmod(temporary_path, 0o644)  # NamedTemporaryFile creates it private (0o600)
        os.replace(temporary_path, cache_path)
    except OSError as error:
        warnings.warn(f"could not cache CIFAR-10 in {cache_path} ({error}); the next load decodes again")
    finally:
        if temporary_path is not None:
            temporary_path.unlink(missing_ok=True)  # left only if the write failed or was interrupted


def _read_batches(batches_dir, expected_counts):
    """Read torchvision's pickled batches (trusted files only: unpickling can run code)."""
    label_names = _unpickle(batches_dir / META_FILE).get(b"label_names")
    label_names = tuple(name.decode() for name in label_names or ())
    if label_names != CLASSES:
        raise DatasetError(
            f"{batches_dir / META_FILE} names the classes {list(label_names)}; expected {list(CLASSES)}"
        )
    train = [_read_batch(batches_dir / name) for name in TRAIN_BATCH_FILES]
    test_images, test_labels = _read_batch(batches_dir / TEST_BATCH_FILE)
    arrays = {
        "train_images": np.concatenate([images for images, _ in train]),
        "train_labels": np.concatenate([labels for _, labels in train]),
        "test_images": test_images,
        "test_labels": test_labels,
    }
    _check_arrays(arrays, expected_counts, origin=str(batches_dir))
    return arrays


def _unpickle(path):
    try:
        with open(path, "rb") as file:
            content = pickle.load(file, encoding="bytes")
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise _IncompleteSource(f"cannot read {path}: {error}.") from error
    if not isinstance(content, dict):
        raise DatasetError(f"{path} holds a {type(content).__name__}, not a CIFAR-10 batch dict")
    return content


def _read_batch(path):
    """Return one batch file's images [N, 3, 32, 32] uint8 and labels [N] int64."""
    content = _unpickle(path)
    data, labels = content.get(b"data"), content.get(b"labels")
    pixels = math.prod(IMAGE_SHAPE)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (pixels,):
        found = getattr(data, "shape", type(data).__name__)
        raise DatasetError(f"{path}: b'data' must be a uint8 array [N, {pixels}], found {found}")
    if labels is None or len(labels) != len(data):
        raise DatasetError(f"{path}: b'labels' must hold one label per image ({len(data)})")
    return data.reshape(-1, *IMAGE_SHAPE), np.asarray(labels, dtype=np.int64)


def _check_folder_counts(source_dir, listing, expected_counts):
    """Refuse image folders whose train/ or test/ does not hold the expected number of images."""
    for split, expected in zip(("train", "test"), expected_counts):
        relative_paths = [path for path in listing if path.startswith(f"{split}/")]
        if len(relative_paths) != expected:
            class_names = [path.split("/")[1] for path in relative_paths]
            per_class = {name: class_names.count(name) for name in CLASSES}
            raise _IncompleteSource(
                f"{source_dir / split} holds {len(relative_paths)} images ({', '.join(IMAGE_SUFFIXES)}); "
                f"expected {expected}. Per class: {per_class}."
            )


def _decode_folders(source_dir, listing):
    """Decode the listed images (in sorted order, with a thread pool) into the cache's arrays."""
    arrays = {}
    for split in ("train", "test"):
        relative_paths = [path for path in listing if path.startswith(f"{split}/")]
        labels = [CLASSES.index(path.split("/")[1]) for path in relative_paths]
        images = _decode_images([source_dir / path for path in relative_paths])
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = np.asarray(labels, dtype=np.int64)
    return arrays


def _decode_images(paths):
    """Decode 32x32 RGB images into a uint8 array [N, 3, 32, 32], in the order given."""
    channels, height, width = IMAGE_SHAPE
    decoded = np.empty((len(paths), height, width, channels), dtype=np.uint8)
    starts = range(0, len(paths), DECODE_CHUNK)
    chunks = [range(start, min(start + DECODE_CHUNK, len(paths))) for start in starts]

    def decode_chunk(indices):
        for index in indices:
            decoded[index] = _decode_image(paths[index])

    with ThreadPoolExecutor(max_workers=DECODE_THREADS) as pool:
        # Consuming the results re-raises the first failure in file order, so errors are stable.
        for _ in pool.map(decode_chunk, chunks):
            pass
    return np.ascontiguousarray(decoded.transpose(0, 3, 1, 2))


def _decode_image(path):
    channels, height, width = IMAGE_SHAPE
    try:
        with Image.open(path) as image:
            size, mode = image.size, image.mode
            pixels = np.asarray(image) if size == (width, height) and mode == "RGB" else None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as error:
        raise DatasetError(f"cannot decode {path} ({error}): {RESTORE_IMAGE}.") from error
    if pixels is None:
        raise DatasetError(
            f"{path} is a {size[0]}x{size[1]} {mode} image; every CIFAR-10 image must be "
            f"{width}x{height} RGB: {RESTORE_IMAGE}."
        )
    return pixels


def _check_arrays(arrays, expected_counts, origin):
    """Check the decoded arrays' shapes, dtypes, labels and counts."""
    for split, expected in zip(("train", "test"), expected_counts):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
            raise DatasetError(
                f"{origin}: {split} images are {images.dtype} {images.shape}; expected uint8 [N, 3, 32, 32]"
            )
        if len(images) != expected or len(labels) != expected:
            raise _IncompleteSource(
                f"{origin}: {len(images)} {split} images and {len(labels)} labels; expected {expected}."
            )
        if labels.dtype != np.int64 or labels.min() < 0 or labels.max() >= len(CLASSES):
            raise DatasetError(f"{origin}: {split} labels must be int64 in 0..{len(CLASSES) - 1}")


def subset(data, train_per_class, test_per_class):
    """Return the first ``train_per_class`` / ``test_per_class`` images of each class (no randomness).

    For quick modes and tests: a balanced, reproducible slice of the data, in the original order.
    """
    for name, count in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if not _is_int_at_least(count, 1):
            raise ValueError(f"{name} must be a positive int, got {count!r}")
    train_index = _first_per_class(data.train_labels, train_per_class, data.classes, "train_per_class", "training")
    test_index = _first_per_class(data.test_labels, test_per_class, data.classes, "test_per_class", "test")
    return CIFAR10(
        train_images=data.train_images[train_index],
        train_labels=data.train_labels[train_index],
        test_images=data.test_images[test_index],
        test_labels=data.test_labels[test_index],
        classes=data.classes,
        source=f"{data.source} (subset: {train_per_class} train, {test_per_class} test per class)",
    )


def _first_per_class(labels, per_class, classes, name, split):
    indices = []
    for label, class_name in enumerate(classes):
        of_class = torch.nonzero(labels == label).flatten()
        if len(of_class) < per_class:
            raise ValueError(
                f"{name}={per_class} is more than the {len(of_class)} {split} images of class {class_name!r}"
            )
        indices.append(of_class[:per_class])
    return torch.cat(indices).sort().values


# --------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------


def train_val_split(labels, val_size=5000, seed=0):
    """Split indices into (train_indices, val_indices), stratified by class and seeded.

    Each class gives the validation set its share of ``val_size`` (proportional to its count,
    rounded by largest remainder so the shares add up exactly), drawn at random with ``seed``.
    Both index tensors are sorted int64 on the CPU (they index tensors on any device); together they
    cover every index exactly once.
    """
    labels = torch.as_tensor(labels).cpu()  # index bookkeeping, whatever device the labels live on
    if labels.ndim != 1 or labels.dtype not in INTEGER_DTYPES:
        raise ValueError(f"labels must be a 1-D integer tensor, got {labels.dtype} {tuple(labels.shape)}")
    if not _is_int_at_least(val_size, 0) or val_size >= len(labels):
        raise ValueError(f"val_size must be an int in [0, len(labels) = {len(labels)}), got {val_size!r}")
    if not _is_int_at_least(seed, 0):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")

    classes, counts = torch.unique(labels, return_counts=True)
    quotas = _proportional_quotas(counts.tolist(), val_size)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    shuffled_labels = labels[order]
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    for label, quota in zip(classes.tolist(), quotas):
        positions = torch.nonzero(shuffled_labels == label).flatten()[:quota]
        is_val[order[positions]] = True
    indices = torch.arange(len(labels))
    return indices[~is_val], indices[is_val]


def _proportional_quotas(counts, total):
    """Split ``total`` into integer shares proportional to ``counts`` (largest remainder method)."""
    size = sum(counts)
    quotas = [count * total // size for count in counts]
    remainders = [count * total % size for count in counts]
    by_remainder = sorted(range(len(counts)), key=lambda index: -remainders[index])
    for index in by_remainder[: total - sum(quotas)]:
        quotas[index] += 1
    return quotas


# --------------------------------------------------------------------------------------------
# Augmentation and normalisation
# --------------------------------------------------------------------------------------------


def _is_int_at_least(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_uint8_batch(images):
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a uint8 tensor [N, C, H, W], got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4:
        found = f"{images.dtype} {tuple(images.shape)}"
        raise ValueError(f"images must be a uint8 tensor [N, C, H, W], got {found}")


def _check_generator(generator):
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def _uniform(count, generator, device):
    """Draw ``count`` numbers in [0, 1) from ``generator`` and put them on ``device``."""
    return torch.rand(count, generator=generator, device=generator.device).to(device)


def _integers(high, count, generator, device):
    """Draw ``count`` integers in [0, high) from ``generator`` and put them on ``device``."""
    return torch.randint(high, (count,), generator=generator, device=generator.device).to(device)


def random_flip(images, generator):
    """Mirror each image left-right with probability 1/2 (one draw per image from ``generator``)."""
    _check_uint8_batch(images)
    _check_generator(generator)
    flipped = _uniform(len(images), generator, images.device) < 0.5
    return torch.where(flipped[:, None, None, None], images.flip(-1), images)


def random_crop(images, padding, generator):
    """Zero-pad each image by ``padding`` pixels and cut a random window of the original size.

    This shifts each image's content by up to ``padding`` pixels in each direction.
    """
    _check_uint8_batch(images)
    _check_generator(generator)
    if not _is_int_at_least(padding, 0):
        raise ValueError(f"padding must be a non-negative int, got {padding!r}")
    count, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    # A view of every window: [N, C, 2 * padding + 1, 2 * padding + 1, H, W], indexed by its corner.
    windows = padded.unfold(2, height, 1).unfold(3, width, 1)
    top = _integers(2 * padding + 1, count, generator, images.device)
    left = _integers(2 * padding + 1, count, generator, images.device)
    return windows[torch.arange(count, device=images.device), :, top, left]


def shift(images, down, right):
    """Translate uint8 images by ``down`` and ``right`` pixels (negative: up, left), filling with zeros.

    The deterministic counterpart of :func:`random_crop`: for any padding p of at least |down| and
    |right|, the crop of the image zero-padded by p pixels cut at offset (p - down, p - right).
    """
    _check_uint8_batch(images)
    check_shift(down, right, images.shape[-2:])
    height, width = images.shape[-2:]
    padded = F.pad(images, (max(right, 0), max(-right, 0), max(down, 0), max(-down, 0)))
    top, left = max(-down, 0), max(-right, 0)
    return padded[..., top : top + height, left : left + width]


def check_shift(down, right, image_size):
    """Refuse a :func:`shift` that is not a pair of ints smaller than the (height, width) ``image_size``."""
    for name, value, size in (("down", down, image_size[0]), ("right", right, image_size[1])):
        if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= size:
            raise ValueError(f"{name} must be an int with |{name}| < {size} (the image size), got {value!r}")


def rotate(images, degrees):
    """Rotate each image about its centre by its angle in ``degrees`` (counter-clockwise as shown).

    Bilinear interpolation; corners that come from outside the image are black. ``degrees`` holds
    one angle per image. An angle of 0 returns the image unchanged and 90 equals ``torch.rot90``.
    """
    _check_uint8_batch(images)
    degrees = torch.as_tensor(degrees, dtype=torch.float32, device=images.device)
    if degrees.shape != (len(images),):
        raise ValueError(f"degrees must hold one angle per image ({len(images)}), got {tuple(degrees.shape)}")
    grid = _rotation_grid(degrees, *images.shape[-2:])
    rotated = F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return rotated.round_().clamp_(0, 255).to(torch.uint8)


def _rotation_grid(degrees, height, width):
    """Return grid_sample's grid [N, H, W, 2]: where each output pixel samples its input.

    The same grid as F.affine_grid with a rotation matrix (align_corners=False), but computed in
    pixel units (so non-square images rotate without shearing) and several times faster on CPU.
    """
    radians = torch.deg2rad(degrees).view(-1, 1, 1)
    cos, sin = radians.cos(), radians.sin()
    # Pixel-centre offsets from the image centre; x runs right along a row, y down a column.
    x = torch.arange(width, dtype=degrees.dtype, device=degrees.device) - (width - 1) / 2
    y = torch.arange(height, dtype=degrees.dtype, device=degrees.device) - (height - 1) / 2
    x, y = x.view(1, 1, width), y.view(1, height, 1)
    source_x = (cos * x - sin * y) * (2 / width)  # grid_sample wants [-1, 1] across the image
    source_y = (sin * x + cos * y) * (2 / height)
    return torch.stack([source_x, source_y], dim=-1)


def random_rotation(images, max_degrees, generator):
    """Rotate each image by an angle drawn uniformly from [-max_degrees, max_degrees]."""
    _check_uint8_batch(images)
    _check_generator(generator)
    degrees = (2 * _uniform(len(images), generator, images.device) - 1) * max_degrees
    return rotate(images, degrees)


@dataclass
class Augment:
    """Random training augmentation, applied to a whole uint8 batch at once.

    ``flip``: mirror left-right with probability 1/2; ``crop_padding``: pad by this many pixels and
    crop back at a random offset; ``rotation_degrees``: rotate by a uniform angle in
    [-rotation_degrees, rotation_degrees]. Applied in the order rotation, crop, flip; each draws its
    random numbers from the generator passed to the call, so a seeded generator replays exactly.
    """

    flip: bool = False
    crop_padding: int = 0
    rotation_degrees: float = 0.0

    DEFAULT_CROP_PADDING = 4
    DEFAULT_ROTATION_DEGREES = 15.0

    def __post_init__(self):
        if not isinstance(self.flip, bool):
            raise ValueError(f"flip must be a bool, got {self.flip!r}")
        if not _is_int_at_least(self.crop_padding, 0):
            raise ValueError(f"crop_padding must be a non-negative int, got {self.crop_padding!r}")
        if (
            not isinstance(self.rotation_degrees, (int, float))
            or isinstance(self.rotation_degrees, bool)
            or not 0 <= self.rotation_degrees <= 180
        ):
            raise ValueError(f"rotation_degrees must be a number in [0, 180], got {self.rotation_degrees!r}")

    def __call__(self, images, generator):
        """Return the augmented uint8 batch [N, C, H, W] (the input itself if nothing is enabled)."""
        _check_uint8_batch(images)
        _check_generator(generator)
        if self.rotation_degrees:
            images = random_rotation(images, self.rotation_degrees, generator)
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, generator)
        if self.flip:
            images = random_flip(images, generator)
        return images

    @classmethod
    def parse(cls, spec):
        """Build an Augment from a CLI string such as "none", "flip+crop" or "flip+crop:4+rotate:10".

        "crop" alone pads by 4 pixels and "rotate" alone rotates by up to 15 degrees.
        """
        if not isinstance(spec, str):
            raise ValueError(f"augment spec must be a string, got {spec!r}")
        settings = {}
        for part in spec.replace(" ", "").lower().split("+"):
            match = re.fullmatch(r"none|flip|crop(?::(\d+))?|rotate(?::(\d+(?:\.\d*)?))?", part)
            if match is None:
                raise ValueError(
                    f"cannot parse augment spec {spec!r} at {part!r}: use 'none' or parts "
                    "'flip', 'crop[:PIXELS]', 'rotate[:DEGREES]' joined by '+'"
                )
            name = part.split(":")[0]
            padding, degrees = match.groups()
            if name == "flip":
                settings["flip"] = True
            elif name == "crop":
                settings["crop_padding"] = int(padding) if padding else cls.DEFAULT_CROP_PADDING
            elif name == "rotate":
                settings["rotation_degrees"] = float(degrees) if degrees else cls.DEFAULT_ROTATION_DEGREES
        return cls(**settings)

    def __str__(self):
        """The spec string `parse` reads back, e.g. "flip+crop:4" or "none"."""
        parts = ["flip"] if self.flip else []
        if self.crop_padding:
            parts.append(f"crop:{self.crop_padding}")
        if self.rotation_degrees:
            parts.append(f"rotate:{self.rotation_degrees:g}")
        return "+".join(parts) or "none"


def normalize(images):
    """Return ``(images / 255 - MEAN) / STD`` as float32 in channels_last memory format.

    One fused pass (images * scale + shift) writing straight into a channels_last tensor, which
    is the layout the convolution kernels run fastest on.
    """
    _check_uint8_batch(images)
    if images.shape[1] != len(MEAN):
        raise ValueError(f"images must have {len(MEAN)} channels, got {images.shape[1]}")
    std = torch.tensor(STD, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    mean = torch.tensor(MEAN, dtype=torch.float32, device=images.device).view(1, -1, 1, 1)
    normalized = torch.empty(
        images.shape, dtype=torch.float32, device=images.device, memory_format=torch.channels_last
    )
    return torch.addcmul(-mean / std, images, 1 / (255 * std), out=normalized)


# --------------------------------------------------------------------------------------------
# Batching
# --------------------------------------------------------------------------------------------


class Batches:
    """Mini-batches of normalised (and optionally augmented) images for one epoch at a time.

    Iterating yields ``(inputs, labels)``: inputs float32 [B, 3, H, W] channels_last normalised,
    labels int64 [B], on the device of ``images``. The order (when ``shuffle``) and the augmentation
    of an epoch come from one generator seeded by ``(seed, epoch)`` alone: call ``set_epoch`` before
    iterating and a resumed run replays the same batches. Without ``drop_last`` every index appears
    exactly once per epoch (the last batch may be smaller).
    """

    def __init__(self, images, labels, batch_size, shuffle=False, augment=None, seed=0, drop_last=False):
        _check_uint8_batch(images)
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or len(labels) != len(images) or labels.dtype not in INTEGER_DTYPES:
            raise ValueError(
                f"labels must be 1-D integers, one per image ({len(images)}), "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        if not _is_int_at_least(batch_size, 1):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if augment is not None and not callable(augment):
            raise ValueError(f"augment must be None or callable(images, generator), got {augment!r}")
        if not _is_int_at_least(seed, 0):
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.images = images
        self.labels = labels.to(device=images.device, dtype=torch.int64)
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.augment = augment
        self.seed = seed
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def __len__(self):
        if self.drop_last:
            return len(self.images) // self.batch_size
        return math.ceil(len(self.images) / self.batch_size)

    def set_epoch(self, epoch):
        """Choose the epoch whose order and augmentation the next iteration produces."""
        if not _is_int_at_least(epoch, 0):
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = epoch

    def epoch_generator(self):
        """Return a fresh generator seeded from (seed, epoch) alone."""
        seed = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1, dtype=np.uint64)[0]
        return torch.Generator().manual_seed(int(seed))

    def __iter__(self):
        generator = self.epoch_generator()
        if self.shuffle:
            order = torch.randperm(len(self.images), generator=generator)
        else:
            order = torch.arange(len(self.images))
        order = order.to(self.images.device)
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            images = self.images[index]
            if self.augment is not None:
                images = self.augment(images, generator)
            yield normalize(images), self.labels[index]
