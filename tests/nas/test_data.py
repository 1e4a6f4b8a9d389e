"""Datasets: built-ins, ImageFolder trees, adaptation to the space, splits, batching, augmentation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spos_hw.errors import DataError
from spos_hw.nas import data as data_mod
from spos_hw.nas.data import Augment, BatchOrder, augment_generator, eval_batches, load_data, recalibration_batches
from spos_hw.nas.spaces import get_space

HAS_FASHION = Path(data_mod.FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").is_file()


@pytest.fixture(scope="module")
def digits():
    return load_data("digits", get_space("shufflenetv2-small"))


def test_digits_adapted_to_the_space(digits):
    assert digits.shape == (1, 32, 32) and digits.classes == tuple("0123456789")
    assert (len(digits.train), len(digits.test)) == (1437, 360)
    assert digits.train.images.dtype == torch.uint8 and digits.train.images.shape[1:] == (1, 32, 32)
    assert any("resized 8x8 -> 32x32" in n for n in digits.notes)
    info = digits.info()
    assert info["source_shape"] == [1, 8, 8] and 0 < info["mean"][0] < 1 and 0 < info["std"][0] < 1
    # normalization makes the training images zero-mean, unit-std
    x = digits.prepare(digits.train.images)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3


def test_holdout_split_is_stratified_disjoint_and_seeded(digits):
    a, b = digits.split(0.1, seed=0), digits.split(0.1, seed=0)
    np.testing.assert_array_equal(a.holdout, b.holdout)
    assert len(a.holdout) == 144 and len(a.train) == 1437 - 144
    assert not set(a.train) & set(a.holdout)
    per_class = np.bincount(digits.train.labels[a.holdout], minlength=10)
    assert per_class.min() >= 13 and per_class.max() <= 16  # stratified: ~14.4 each
    assert not np.array_equal(digits.split(0.1, seed=1).holdout, a.holdout)
    assert len(digits.split(100, seed=0).holdout) == 100
    with pytest.raises(DataError, match="does not fit"):
        digits.split(5000, seed=0)


def test_channel_conversion_and_class_mismatch():
    rgb = load_data("digits", get_space("shufflenetv2-small:channels=3"))
    x = rgb.train.images
    assert x.shape[1] == 3 and torch.equal(x[:, 0], x[:, 2])
    assert any("grayscale->RGB" in n and "channels=1" in n for n in rgb.notes)
    with pytest.raises(DataError, match=r"10 classes but space .* is built for 37; use --space shufflenetv2-small:classes=10"):
        load_data("digits", get_space("shufflenetv2-small:classes=37"))


def test_missing_fashion_mnist_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(data_mod, "FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_data("fashion-mnist", get_space("shufflenetv2-small"))


@pytest.mark.skipif(not HAS_FASHION, reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist():
    d = load_data("fashion-mnist", get_space("shufflenetv2-small"))
    assert (len(d.train), len(d.test)) == (60_000, 10_000) and d.classes[0] == "T-shirt/top"
    assert d.shape == (1, 32, 32) and any("zero-padded 28x28 -> 32x32" in n for n in d.notes)
    assert d.train.images[:, :, :2].max() == 0  # the padding border is zero
    assert np.bincount(d.test.labels).tolist() == [1000] * 10


def _png_tree(root: Path, splits=("train", "val"), per_class=6, size=(20, 12), mode="RGB") -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in splits:
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
                Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(d / f"{i}.png")


def test_image_folder_in_memory_and_streamed_agree(tmp_path):
    _png_tree(tmp_path)
    space = get_space("shufflenetv2-small:channels=3,classes=2,size=16")
    mem = load_data(str(tmp_path), space)
    assert mem.classes == ("cat", "dog") and mem.shape == (3, 16, 16) and len(mem.train) == 12 and len(mem.test) == 12
    assert mem.test_origin.endswith("val") and isinstance(mem.train, data_mod.TensorSource)
    streamed = load_data(str(tmp_path), space, memory_limit=0, workers=0)
    assert isinstance(streamed.train, data_mod.FileSource)
    idx = np.array([3, 0, 7])
    assert torch.equal(streamed.train.fetch(idx), mem.train.fetch(idx))
    got = [x for x, _ in eval_batches(streamed.test, np.arange(12), 5)]
    assert torch.equal(torch.cat(got), mem.test.images)
    # grayscale space: decoded as L
    gray = load_data(str(tmp_path), get_space("shufflenetv2-small:classes=2,size=16"))
    assert gray.shape == (1, 16, 16)


def test_image_folder_train_only_carves_a_test_split(tmp_path):
    _png_tree(tmp_path, splits=("train",), per_class=10)
    d = load_data(str(tmp_path), get_space("shufflenetv2-small:channels=3,classes=2,size=16"))
    assert (len(d.train), len(d.test)) == (16, 4) and "stratified 20%" in d.test_origin


@pytest.mark.parametrize(
    "setup, needle",
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "Couldn't find any class folder"),
        (lambda p: (p / "train" / "a").mkdir(parents=True), "Found no valid file"),
        (
            lambda p: _png_tree(p, splits=("train",)) or (p / "train" / "cat" / "0.png").write_bytes(b"not a png"),
            "cannot read image",
        ),
    ],
    ids=["missing", "empty", "no-images", "unreadable"],
)
def test_bad_folders_are_one_line_errors(tmp_path, setup, needle):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=needle) as exc:
        load_data(str(root), get_space("shufflenetv2-small:channels=3,classes=2,size=16"))
    assert "\n" not in str(exc.value)


def test_batch_order_is_a_pure_function_of_the_step():
    idx = np.arange(100, 150)
    a, b = BatchOrder(idx, 16, seed=1), BatchOrder(idx, 16, seed=1)
    assert a.steps_per_epoch == 3
    epoch0 = np.concatenate([a.batch(t) for t in range(3)])
    assert len(set(epoch0)) == 48 and set(epoch0) <= set(idx)
    np.testing.assert_array_equal(b.batch(4), a.batch(4))  # b jumps straight to epoch 1
    assert not np.array_equal(a.batch(3), a.batch(0))  # a new permutation each epoch
    with pytest.raises(DataError, match="larger than"):
        BatchOrder(idx, 64, seed=0)


def test_augment_crops_and_flips_deterministically():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    aug = Augment(pad=2, flip=True)
    a = aug(x, augment_generator(0, 5, 1))
    assert torch.equal(a, aug(x, augment_generator(0, 5, 1))) and a.shape == x.shape
    assert not torch.equal(a, aug(x, augment_generator(0, 6, 1)))
    # every output is a (possibly flipped) shifted window of the zero-padded input
    xp = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [xp[i, :, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(a[i], w) or torch.equal(a[i], w.flip(2)) for w in windows)
    assert torch.equal(Augment()(x, augment_generator(0, 0, 0)), x)


def test_recalibration_batches_are_fixed_and_from_training_part(digits):
    split = digits.split(0.1, seed=0)
    a = recalibration_batches(digits, split, n=3, batch_size=32, seed=4)
    b = recalibration_batches(digits, split, n=3, batch_size=32, seed=4)
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b)) and a[0].shape == (32, 1, 32, 32)
    held = digits.prepare(digits.train.fetch(split.holdout))
    flat = held.flatten(1)
    for x in a:
        assert not (torch.cdist(x.flatten(1), flat).min(1).values == 0).any()
