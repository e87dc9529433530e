"""helpers.data: loading (both layouts, checks, cache), splitting, augmentation, normalisation, batches.

The loading tests build tiny fake CIFAR-10 trees in tmp_path (a few images per class) and pass
their counts as ``expected_counts``; one test reads the real data when $CIFAR10_DIR is present.
"""

import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import data
from helpers.data import (
    CLASSES,
    MEAN,
    STD,
    Augment,
    Batches,
    DatasetError,
    load_cifar10,
    normalize,
    random_crop,
    rotate,
    shift,
    subset,
    train_val_split,
)

TRAIN_PER_CLASS, TEST_PER_CLASS = 2, 1
FAKE_COUNTS = (TRAIN_PER_CLASS * len(CLASSES), TEST_PER_CLASS * len(CLASSES))


def random_images(count, seed=0, size=32):
    seeded = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=seeded)


def make_image_tree(root, suffix=".png", seed=0):
    """Write train/<class>/NNNN<suffix> and test/<class>/... images; return the arrays written."""
    written = {}
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        images = random_images(per_class * len(CLASSES), seed=seed + len(split))
        labels = torch.arange(len(CLASSES)).repeat_interleave(per_class)
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{index:04d}{suffix}")
        written[split] = (images, labels)
    return written


def make_batches_tree(root, seed=0):
    """Write a tiny torchvision-style cifar-10-batches-py folder; return the arrays written."""
    folder = root / data.BATCHES_DIR_NAME
    folder.mkdir(parents=True)
    per_batch = FAKE_COUNTS[0] // 5
    train_images = random_images(FAKE_COUNTS[0], seed=seed)
    train_labels = torch.arange(FAKE_COUNTS[0]) % len(CLASSES)
    test_images = random_images(FAKE_COUNTS[1], seed=seed + 1)
    test_labels = torch.arange(FAKE_COUNTS[1]) % len(CLASSES)

    def write(name, images, labels):
        with open(folder / name, "wb") as file:
            pickle.dump({b"data": images.reshape(len(images), -1).numpy(), b"labels": labels.tolist()}, file)

    for number in range(5):
        part = slice(number * per_batch, (number + 1) * per_batch)
        write(f"data_batch_{number + 1}", train_images[part], train_labels[part])
    write("test_batch", test_images, test_labels)
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump({b"label_names": [name.encode() for name in CLASSES]}, file)
    return {"train": (train_images, train_labels), "test": (test_images, test_labels)}


def snapshot(root):
    """Every file under root with its bytes: to prove a load leaves the source untouched."""
    return {path: path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "source"
    return root, make_image_tree(root)


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


@pytest.fixture(autouse=True)
def no_cifar10_dir(monkeypatch):
    """Tests choose their source explicitly; only the real-data test reads $CIFAR10_DIR."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)


# --- loading: both layouts ------------------------------------------------------------------


def test_image_folders_load_exact_pixels_and_labels(image_tree, cache_dir):
    root, written = image_tree
    loaded = load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    for split in ("train", "test"):
        images, labels = getattr(loaded, f"{split}_images"), getattr(loaded, f"{split}_labels")
        assert images.dtype == torch.uint8 and images.shape == (FAKE_COUNTS[split == "test"], 3, 32, 32)
        assert labels.dtype == torch.int64
        assert torch.equal(images, written[split][0])  # PNG is lossless; order is sorted by name
        assert torch.equal(labels, written[split][1])
    assert loaded.classes == CLASSES
    assert loaded.source == str(root)


def test_jpeg_folders_load_close_to_the_pixels_written(tmp_path, cache_dir):
    root = tmp_path / "source"
    written = make_image_tree(root, suffix=".jpg")
    loaded = load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    assert torch.equal(loaded.train_labels, written["train"][1])
    # JPEG is lossy, and random noise is its worst case: only check the images are the ones written.
    error = (loaded.train_images.float() - written["train"][0].float()).abs().mean()
    assert error < 60
    assert error < (loaded.train_images.float() - written["train"][0].flip(0).float()).abs().mean()


@pytest.mark.parametrize("point_at_batches_folder", [False, True])
def test_pickled_batches_load(tmp_path, cache_dir, point_at_batches_folder):
    written = make_batches_tree(tmp_path)
    root = tmp_path / data.BATCHES_DIR_NAME if point_at_batches_folder else tmp_path
    loaded = load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    assert torch.equal(loaded.train_images, written["train"][0])
    assert torch.equal(loaded.train_labels, written["train"][1])
    assert torch.equal(loaded.test_images, written["test"][0])
    assert torch.equal(loaded.test_labels, written["test"][1])
    assert loaded.source.endswith(data.BATCHES_DIR_NAME)


def test_pickled_batches_win_over_image_folders(tmp_path, cache_dir):
    batches = make_batches_tree(tmp_path)
    make_image_tree(tmp_path, seed=5)
    loaded = load_cifar10(tmp_path, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    assert torch.equal(loaded.train_images, batches["train"][0])


def test_cifar10_dir_is_the_default_source(image_tree, cache_dir, monkeypatch):
    root, written = image_tree
    monkeypatch.setenv(data.ENV_VAR, str(root))
    loaded = load_cifar10(cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    assert torch.equal(loaded.train_images, written["train"][0])


def test_the_source_is_shown_without_this_machine_s_absolute_path(image_tree, cache_dir, monkeypatch):
    root, _ = image_tree
    monkeypatch.setenv(data.ENV_VAR, str(root))
    loaded = load_cifar10(cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    assert repr(loaded).endswith("source='$CIFAR10_DIR')")
    assert repr(subset(loaded, 1, 1)).endswith("source='$CIFAR10_DIR (subset: 1 train, 1 test per class)')")
    assert data.shown_source(str(data.REPO_ROOT / "data" / "cifar-10-batches-py")) == "data/cifar-10-batches-py"
    assert data.shown_source(f"{root}-other") == f"{root}-other"  # another folder that shares the prefix
    monkeypatch.delenv(data.ENV_VAR)
    assert data.shown_source(str(root)) == str(root)  # outside the repository, and not named by the variable


def test_cache_dir_is_the_last_resort_source(tmp_path):
    written = make_batches_tree(tmp_path)
    loaded = load_cifar10(cache_dir=tmp_path, expected_counts=FAKE_COUNTS, download=False)
    assert torch.equal(loaded.test_images, written["test"][0])


# --- loading: the cache ---------------------------------------------------------------------


def test_second_load_reads_the_cache_and_the_source_is_untouched(image_tree, cache_dir, monkeypatch):
    root, _ = image_tree
    before = snapshot(root)
    first = load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    cached_files = list(cache_dir.glob("cifar10-*.npz"))
    assert len(cached_files) == 1
    assert list(cache_dir.iterdir()) == cached_files  # no temporary file left behind

    def no_decoding(paths):
        raise AssertionError("the second load decoded images instead of reading the cache")

    monkeypatch.setattr(data, "_decode_images", no_decoding)
    second = load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)
    assert snapshot(root) == before


def test_a_changed_file_listing_gets_a_new_cache(image_tree, cache_dir):
    root, _ = image_tree
    load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    cat_image = root / "train" / "cat" / "0006.png"
    cat_image.rename(cat_image.with_name("9999.png"))
    load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    assert len(list(cache_dir.glob("cifar10-*.npz"))) == 2


def test_a_corrupt_cache_is_rebuilt_with_a_warning(image_tree, cache_dir):
    root, written = image_tree
    load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    (cache_file,) = cache_dir.glob("cifar10-*.npz")
    cache_file.write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable CIFAR-10 cache"):
        loaded = load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    assert torch.equal(loaded.train_images, written["train"][0])
    assert np.load(cache_file)["train_images"].shape == (FAKE_COUNTS[0], 3, 32, 32)


def test_an_unwritable_cache_dir_only_warns(image_tree, tmp_path):
    root, written = image_tree
    (tmp_path / "a_file").write_text("")
    with pytest.warns(UserWarning, match="could not cache CIFAR-10"):
        loaded = load_cifar10(root, cache_dir=tmp_path / "a_file" / "cache", expected_counts=FAKE_COUNTS)
    assert torch.equal(loaded.test_images, written["test"][0])


# --- loading: clear errors ------------------------------------------------------------------


def test_missing_root_names_the_folder_and_the_fix(tmp_path, cache_dir):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="does not exist") as raised:
        load_cifar10(missing, cache_dir=cache_dir)
    assert str(missing) in str(raised.value) and "Point the root argument at a folder" in str(raised.value)


def test_errors_call_the_root_by_the_callers_name(image_tree, tmp_path, cache_dir):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as raised:
        load_cifar10(missing, cache_dir=cache_dir, root_name="--data-dir")
    message = str(raised.value)
    assert f"CIFAR-10 folder {missing} (from --data-dir) does not exist" in message
    assert "Point --data-dir at a folder" in message and "root argument" not in message
    root, _ = image_tree
    (root / "test" / "ship" / "0008.png").unlink()
    with pytest.raises(DatasetError, match=r"holds 9 images .*expected 10\..*Point --data-dir at a folder"):
        load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS, root_name="--data-dir")


def test_missing_cifar10_dir_names_the_variable(tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(DatasetError, match=f"from {data.ENV_VAR}"):
        load_cifar10(cache_dir=cache_dir)


def test_root_with_neither_layout_lists_what_it_found(tmp_path, cache_dir):
    (tmp_path / "pictures").mkdir()
    with pytest.raises(DatasetError, match="holds neither") as raised:
        load_cifar10(tmp_path, cache_dir=cache_dir)
    assert "pictures" in str(raised.value)


def test_missing_test_split(image_tree, cache_dir):
    root, _ = image_tree
    (root / "test").rename(root / "testing")
    with pytest.raises(DatasetError, match="test is missing"):
        load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)


def test_wrong_class_folder_names(image_tree, cache_dir):
    root, _ = image_tree
    (root / "train" / "cat").rename(root / "train" / "kitten")
    with pytest.raises(DatasetError, match=r"missing: \['cat'\], unexpected: \['kitten'\]"):
        load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)


def test_wrong_image_count_reports_the_counts_before_any_decoding(image_tree, cache_dir, capsys):
    root, _ = image_tree
    with pytest.raises(DatasetError, match=r"holds 20 images .*expected 50000.*'cat': 2"):
        load_cifar10(root, cache_dir=cache_dir)
    assert "decoding" not in capsys.readouterr().err  # announced only once the checks pass


def test_unreadable_image_is_named(image_tree, cache_dir):
    root, _ = image_tree
    broken = root / "train" / "dog" / "0010.png"
    broken.write_bytes(b"this is not a PNG")
    with pytest.raises(DatasetError, match="cannot decode") as raised:
        load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    assert str(broken) in str(raised.value)
    assert "restore it from the original CIFAR-10 archive" in str(raised.value)
    assert "remove" not in str(raised.value)  # removing it would only fail the image count
    assert not list(cache_dir.glob("*"))  # nothing cached from a failed load


@pytest.mark.parametrize("size, mode", [((33, 32), "RGB"), ((32, 32), "L")])
def test_image_of_wrong_size_or_mode_is_named(image_tree, cache_dir, size, mode):
    root, _ = image_tree
    wrong = root / "test" / "ship" / "0008.png"
    Image.new(mode, size).save(wrong)
    message = f"{size[0]}x{size[1]} {mode} image; .* must be 32x32 RGB"
    with pytest.raises(DatasetError, match=message) as raised:
        load_cifar10(root, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)
    assert str(wrong) in str(raised.value)


def test_missing_batch_file_is_named(tmp_path, cache_dir):
    make_batches_tree(tmp_path)
    (tmp_path / data.BATCHES_DIR_NAME / "test_batch").unlink()
    with pytest.raises(DatasetError, match="lacks test_batch"):
        load_cifar10(tmp_path, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)


def test_wrong_label_names_in_batches_meta(tmp_path, cache_dir):
    make_batches_tree(tmp_path)
    with open(tmp_path / data.BATCHES_DIR_NAME / "batches.meta", "wb") as file:
        pickle.dump({b"label_names": [b"a", b"b"]}, file)
    with pytest.raises(DatasetError, match=r"names the classes \['a', 'b'\]"):
        load_cifar10(tmp_path, cache_dir=cache_dir, expected_counts=FAKE_COUNTS)


def test_nothing_anywhere_without_download_says_how_to_fix(cache_dir):
    with pytest.raises(DatasetError, match=f"No CIFAR-10 found.*Point {data.ENV_VAR} or the root argument at"):
        load_cifar10(cache_dir=cache_dir, download=False)


def test_failed_download_says_how_to_fix(cache_dir, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    fix = f"Point {data.ENV_VAR} or the root argument at"
    with pytest.raises(DatasetError, match=f"download failed.*no network.*{fix}"):
        load_cifar10(cache_dir=cache_dir)


@pytest.mark.parametrize("counts", [(10,), (0, 10), (10.0, 5), "20,10"])
def test_expected_counts_are_checked(image_tree, cache_dir, counts):
    with pytest.raises(ValueError, match="expected_counts"):
        load_cifar10(image_tree[0], cache_dir=cache_dir, expected_counts=counts)


# --- the real data --------------------------------------------------------------------------


REAL_DIR = os.environ.get(data.ENV_VAR)


@pytest.mark.skipif(not REAL_DIR or not Path(REAL_DIR).is_dir(), reason="needs $CIFAR10_DIR (the real data)")
def test_real_cifar10_counts_labels_and_statistics():
    loaded = load_cifar10(REAL_DIR)  # decodes once (~15 s), then reads data/cifar10-*.npz
    assert loaded.train_images.shape == (50_000, 3, 32, 32)
    assert loaded.test_images.shape == (10_000, 3, 32, 32)
    assert loaded.train_images.dtype == torch.uint8
    assert loaded.train_labels.bincount().tolist() == [5000] * 10
    assert loaded.test_labels.bincount().tolist() == [1000] * 10
    sample = loaded.train_images[::10].double() / 255
    assert torch.allclose(sample.mean((0, 2, 3)), torch.tensor(MEAN, dtype=torch.float64), atol=0.01)
    assert torch.allclose(sample.std((0, 2, 3)), torch.tensor(STD, dtype=torch.float64), atol=0.01)


# --- subset and split -----------------------------------------------------------------------


def fake_dataset(train_per_class=6, test_per_class=3):
    train_labels = torch.arange(len(CLASSES)).repeat(train_per_class)
    test_labels = torch.arange(len(CLASSES)).repeat(test_per_class)
    return data.CIFAR10(
        train_images=random_images(len(train_labels)),
        train_labels=train_labels,
        test_images=random_images(len(test_labels), seed=1),
        test_labels=test_labels,
        source="fake",
    )


def test_subset_takes_the_first_images_of_each_class():
    full = fake_dataset()
    small = subset(full, 2, 1)
    assert small.train_labels.bincount().tolist() == [2] * 10
    assert small.test_labels.bincount().tolist() == [1] * 10
    assert torch.equal(small.train_images, full.train_images[:20])  # labels cycle 0..9 in fake_dataset
    assert torch.equal(small.test_images, full.test_images[:10])


def test_subset_rejects_more_than_a_class_has():
    with pytest.raises(ValueError, match="train_per_class=7 is more than the 6 training images of class 'airplane'"):
        subset(fake_dataset(), 7, 1)
    with pytest.raises(ValueError, match="test_per_class must be a positive int"):
        subset(fake_dataset(), 1, 0)


def test_train_val_split_is_a_stratified_seeded_partition():
    labels = torch.arange(10).repeat_interleave(torch.tensor([50, 50, 50, 50, 50, 50, 50, 50, 100, 200]))
    train, val = train_val_split(labels, val_size=140, seed=3)
    assert len(val) == 140 and len(train) == len(labels) - 140
    assert torch.equal(torch.cat([train, val]).sort().values, torch.arange(len(labels)))
    assert labels[val].bincount().tolist() == [10] * 8 + [20, 40]  # each class gives its share
    same_train, same_val = train_val_split(labels, val_size=140, seed=3)
    assert torch.equal(val, same_val) and torch.equal(train, same_train)
    assert not torch.equal(val, train_val_split(labels, val_size=140, seed=4)[1])


def test_train_val_split_shares_add_up_when_they_do_not_divide():
    labels = torch.arange(3).repeat(7)  # 7 of each class
    _, val = train_val_split(labels, val_size=10)
    assert len(val) == 10 and sorted(labels[val].bincount().tolist()) == [3, 3, 4]


@pytest.mark.parametrize("val_size", [-1, 30, 2.5])
def test_train_val_split_rejects_bad_sizes(val_size):
    with pytest.raises(ValueError, match="val_size"):
        train_val_split(torch.arange(30) % 3, val_size=val_size)


# --- augmentation ---------------------------------------------------------------------------


AUGMENTS = [
    Augment(),
    Augment(flip=True),
    Augment(crop_padding=4),
    Augment(rotation_degrees=15),
    Augment(flip=True, crop_padding=4, rotation_degrees=15),
]


def generator(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("augment", AUGMENTS, ids=str)
def test_augment_keeps_shape_and_dtype_and_is_seeded(augment):
    images = random_images(64)
    out = augment(images, generator(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, augment(images, generator(0)))
    if augment != Augment():
        assert not torch.equal(out, augment(images, generator(1)))


def test_augment_with_nothing_enabled_returns_the_input():
    images = random_images(4)
    assert Augment()(images, generator(0)) is images


def test_flip_mirrors_some_images_and_leaves_the_others():
    images = random_images(64)
    out = Augment(flip=True)(images, generator(0))
    flipped = (out == images.flip(-1)).flatten(1).all(1)
    unchanged = (out == images).flatten(1).all(1)
    assert torch.all(flipped ^ unchanged)  # random images are never their own mirror
    assert 10 < flipped.sum() < 54


def test_crop_shifts_content_within_the_padding():
    padding = 3
    images = random_images(32)
    out = random_crop(images, padding, generator(0))
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    offsets = []
    for image, cropped in zip(padded, out):
        matches = [
            (top, left)
            for top in range(2 * padding + 1)
            for left in range(2 * padding + 1)
            if torch.equal(image[:, top : top + 32, left : left + 32], cropped)
        ]
        assert len(matches) == 1
        offsets.append(matches[0])
    assert len(set(offsets)) > 5  # the windows really move


@pytest.mark.parametrize("down, right", [(0, 0), (2, 0), (0, -3), (1, 1), (-1, 2), (-4, -4)])
def test_shift_is_the_crop_of_the_padded_image_at_that_offset(down, right):
    padding = 4
    images = random_images(5)
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    top, left = padding - down, padding - right
    assert torch.equal(shift(images, down, right), padded[..., top : top + 32, left : left + 32])
    if down >= 0 and right >= 0:  # the content moves down and right, zeros fill in above and left
        assert torch.equal(shift(images, down, right)[..., down:, right:], images[..., : 32 - down, : 32 - right])


@pytest.mark.parametrize("down, right", [(32, 0), (0, -32), (1.0, 0), (True, 0), (0, None)])
def test_shift_refuses_what_is_not_an_int_smaller_than_the_image(down, right):
    with pytest.raises(ValueError, match="must be an int with"):
        shift(random_images(2), down, right)


def test_rotation_by_zero_is_the_identity_and_by_90_is_rot90():
    images = random_images(8)
    assert torch.equal(rotate(images, torch.zeros(8)), images)
    assert torch.equal(rotate(images, torch.full((8,), 90.0)), torch.rot90(images, 1, dims=(-2, -1)))
    assert torch.equal(rotate(images, torch.full((8,), 180.0)), images.flip(-1).flip(-2))


def test_random_rotation_stays_within_its_range():
    images = random_images(16)
    out = Augment(rotation_degrees=5)(images, generator(0))
    # A rotation of at most 5 degrees moves a pixel next to the centre by well under one pixel.
    centre = slice(14, 18)
    assert (out[..., centre, centre].float() - images[..., centre, centre].float()).abs().mean() < 40
    assert not torch.equal(out, images)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"flip": 1}, "flip must be a bool"),
        ({"crop_padding": -1}, "crop_padding must be a non-negative int"),
        ({"crop_padding": 2.0}, "crop_padding must be a non-negative int"),
        ({"rotation_degrees": 181}, r"rotation_degrees must be a number in \[0, 180\]"),
    ],
)
def test_augment_rejects_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        Augment(**settings)


def test_augment_rejects_bad_inputs():
    with pytest.raises(ValueError, match="images must be a uint8 tensor"):
        Augment(flip=True)(random_images(2).float(), generator(0))
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        Augment(flip=True)(random_images(2), 0)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("none", Augment()),
        ("flip", Augment(flip=True)),
        ("flip+crop", Augment(flip=True, crop_padding=4)),
        ("crop:2+rotate", Augment(crop_padding=2, rotation_degrees=15.0)),
        ("flip+crop:4+rotate:7.5", Augment(flip=True, crop_padding=4, rotation_degrees=7.5)),
    ],
)
def test_augment_parse_and_str_round_trip(spec, expected):
    assert Augment.parse(spec) == expected
    assert Augment.parse(str(expected)) == expected


@pytest.mark.parametrize("spec", ["flip+mirror", "crop:2.5", "flip:1", ""])
def test_augment_parse_rejects_unknown_parts(spec):
    with pytest.raises(ValueError, match="cannot parse augment spec"):
        Augment.parse(spec)


# --- normalisation --------------------------------------------------------------------------


def test_normalize_matches_the_formula_in_channels_last():
    images = random_images(4)
    out = normalize(images)
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    expected = (images.float() / 255 - mean) / std
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, expected)


def test_normalize_maps_the_mean_to_zero_and_one_std_above_to_one():
    def constant_image(values):
        pixel = torch.tensor([round(value * 255) for value in values], dtype=torch.uint8)
        return pixel.view(1, 3, 1, 1).repeat(1, 1, 8, 8)

    at_mean = normalize(constant_image(MEAN))
    one_std_up = normalize(constant_image([mean + std for mean, std in zip(MEAN, STD)]))
    rounding = 0.5 / 255 / min(STD)
    assert at_mean.abs().max() <= rounding
    assert (one_std_up - 1).abs().max() <= rounding


def test_normalize_rejects_wrong_input():
    with pytest.raises(ValueError, match="uint8"):
        normalize(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="3 channels"):
        normalize(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))


# --- batches --------------------------------------------------------------------------------


def epoch_of(batches, epoch):
    batches.set_epoch(epoch)
    return list(batches)


def test_shuffled_batches_yield_every_index_once_per_epoch():
    count, batch_size = 103, 10
    batches = Batches(random_images(count), torch.arange(count), batch_size, shuffle=True)
    assert len(batches) == 11
    for epoch in range(3):
        seen = torch.cat([labels for _, labels in epoch_of(batches, epoch)])
        assert torch.equal(seen.sort().values, torch.arange(count))
    sizes = [len(labels) for _, labels in batches]
    assert sizes == [10] * 10 + [3]


def test_batch_order_depends_only_on_seed_and_epoch():
    images, labels = random_images(50), torch.arange(50)
    first = Batches(images, labels, 8, shuffle=True, augment=Augment(flip=True, crop_padding=2), seed=7)
    second = Batches(images, labels, 8, shuffle=True, augment=Augment(flip=True, crop_padding=2), seed=7)
    epoch_of(second, 0)  # a run that went through epoch 0 replays epoch 2 like one resumed at 2
    replayed = zip(epoch_of(first, 2), epoch_of(second, 2), strict=True)
    for (inputs_a, labels_a), (inputs_b, labels_b) in replayed:
        assert torch.equal(labels_a, labels_b) and torch.equal(inputs_a, inputs_b)

    def order(batches, epoch):
        return torch.cat([labels for _, labels in epoch_of(batches, epoch)])

    assert not torch.equal(order(first, 0), order(first, 1))
    other_seed = Batches(images, labels, 8, shuffle=True, seed=8)
    assert not torch.equal(order(first, 0), order(other_seed, 0))


def test_unshuffled_batches_keep_order_and_normalise():
    images = random_images(12)
    batches = Batches(images, torch.arange(12), 5)
    inputs, labels = next(iter(batches))
    assert torch.equal(labels, torch.arange(5)) and labels.dtype == torch.int64
    assert inputs.dtype == torch.float32 and inputs.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(inputs, normalize(images[:5]))


def test_drop_last_yields_only_full_batches():
    batches = Batches(random_images(23), torch.arange(23), 5, shuffle=True, drop_last=True)
    assert len(batches) == 4
    seen = [labels for _, labels in batches]
    assert [len(labels) for labels in seen] == [5] * 4
    assert len(torch.cat(seen).unique()) == 20


def test_batches_apply_the_augmentation():
    images = random_images(16)
    batches = Batches(images, torch.arange(16), 16, augment=Augment(flip=True))
    inputs, _ = next(iter(batches))
    mirrored = torch.isclose(inputs, normalize(images.flip(-1))).flatten(1).all(1)
    unchanged = torch.isclose(inputs, normalize(images)).flatten(1).all(1)
    assert torch.all(mirrored ^ unchanged) and mirrored.any() and unchanged.any()


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"labels": torch.arange(3)}, "labels must be 1-D integers, one per image"),
        ({"seed": -1}, "seed must be a non-negative int"),
        ({"augment": "flip"}, "augment must be None or callable"),
    ],
)
def test_batches_reject_bad_arguments(arguments, message):
    settings = {"images": random_images(4), "labels": torch.arange(4), "batch_size": 2} | arguments
    with pytest.raises(ValueError, match=message):
        Batches(**settings)


def test_set_epoch_rejects_negative_epochs():
    with pytest.raises(ValueError, match="epoch must be a non-negative int"):
        Batches(random_images(4), torch.arange(4), 2).set_epoch(-1)
