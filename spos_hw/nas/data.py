"""Datasets for supernet training, search scoring and retraining.

``load_data(spec, space)`` understands four kinds of ``--data``:

* ``fashion-mnist``: the Debian package ``dataset-fashion-mnist`` (IDX .gz files, read with numpy);
* ``digits``: scikit-learn's 8x8 digits (always present; used by the tests);
* a folder: an ImageFolder tree, ``DIR/train/<class>/*`` with an optional ``DIR/val/<class>/*``
  (or the class folders directly under ``DIR``);
* from Python, your own ``torch.utils.data.Dataset`` pair: ``Datasets(train, test)`` (or a
  ``(train, test)`` tuple), read once into memory.

Images are adapted once to the space's input (channel count by grayscale/RGB conversion,
size by centred zero padding when the image is only slightly smaller, by resizing otherwise)
and kept as uint8 tensors in memory when they fit, so a batch is a tensor gather plus a few
tensor ops. Larger ImageFolder trees are decoded per batch by DataLoader workers instead.

The test split (Fashion-MNIST t10k, ``val/``, or a fixed stratified 20% of the data when there
is none) is only for final reports. Search scores architectures on a held-out part of the
*training* data (``ImageData.split``), as the paper holds out 50,000 ImageNet training images.
"""

from __future__ import annotations

import gzip
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spos_hw.errors import DataError
from spos_hw.nas.space import SearchSpace

log = logging.getLogger(__name__)

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
BUILTIN = ("fashion-mnist", "digits")
CUSTOM_PREFIX = "custom:"
"""Recorded dataset name of ``Datasets`` (a checkpoint cannot hold the objects themselves)."""
TEST_FRACTION = 0.2
"""Share of the data set aside (stratified, seed 0) as the test split when a dataset has none."""
PAD_RATIO = 1.25
"""An image at most this much smaller than the space's input is zero-padded, not resized."""


# ----------------------------------------------------------------------------- sources


class ImageSource:
    """Labelled uint8 images ``[C, H, W]`` at the space's input size, fetched by index."""

    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def fetch(self, idx: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def stream(self, index_batches: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        """The images of each index batch in turn (file sources prefetch with workers)."""
        for idx in index_batches:
            yield self.fetch(idx)


class TensorSource(ImageSource):
    """Every image decoded once into one uint8 tensor ``[N, C, H, W]``."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray) -> None:
        self.images = images.contiguous()
        self.labels = np.asarray(labels, dtype=np.int64)

    def fetch(self, idx: np.ndarray) -> torch.Tensor:
        return self.images[torch.from_numpy(np.asarray(idx, dtype=np.int64))]


def _decode(path: str, shape: tuple[int, int, int]) -> torch.Tensor:
    """One image file as uint8 ``[C, H, W]``: converted to L/RGB, shorter side resized, centre-cropped."""
    from PIL import Image
    from torchvision.transforms.v2 import functional as F

    c, h, w = shape
    with Image.open(path) as im:
        im = im.convert("L" if c == 1 else "RGB")
        if im.size != (w, h):
            im = F.center_crop(F.resize(im, min(h, w), antialias=True), [h, w])
        return F.pil_to_tensor(im)


class _Files(torch.utils.data.Dataset):
    def __init__(self, paths: Sequence[str], shape: tuple[int, int, int]) -> None:
        self.paths, self.shape = paths, shape

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            return _decode(self.paths[i], self.shape)
        except Exception as exc:  # reported in the main process as one DataError line
            return f"cannot read image {self.paths[i]!r}: {type(exc).__name__}: {exc}".splitlines()[0]


def _collate(items: list) -> torch.Tensor:
    bad = [x for x in items if isinstance(x, str)]
    if bad:
        return bad[0]  # type: ignore[return-value]
    return torch.stack(items)


def _checked(batch) -> torch.Tensor:
    if isinstance(batch, str):
        raise DataError(batch)
    return batch


class FileSource(ImageSource):
    """Image files decoded per batch by DataLoader workers (for trees too big for memory)."""

    def __init__(self, paths: Sequence[str], labels: np.ndarray, shape: tuple[int, int, int], workers: int) -> None:
        self.files = _Files(list(paths), shape)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.workers = workers

    def fetch(self, idx: np.ndarray) -> torch.Tensor:
        return _checked(_collate([self.files[int(i)] for i in idx]))

    def stream(self, index_batches: Iterable[np.ndarray]) -> Iterator[torch.Tensor]:
        if self.workers == 0:
            yield from super().stream(index_batches)
            return
        loader = torch.utils.data.DataLoader(
            self.files,
            batch_sampler=([int(i) for i in idx] for idx in index_batches),  # type: ignore[arg-type]
            num_workers=self.workers,
            collate_fn=_collate,
            prefetch_factor=4,
        )
        for batch in loader:
            yield _checked(batch)


# ----------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class Augment:
    """Light training augmentation: random crop after zero padding, horizontal flip."""

    pad: int = 0
    flip: bool = False

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Augment a uint8 batch ``[n, C, H, W]`` with tensor ops; randomness from ``gen``."""
        n, c, h, w = x.shape
        if self.pad:
            p = self.pad
            hp, wp = h + 2 * p, w + 2 * p
            xp = torch.nn.functional.pad(x, (p, p, p, p)).view(n, c, hp * wp)
            oy = torch.randint(0, 2 * p + 1, (n, 1, 1), generator=gen)
            ox = torch.randint(0, 2 * p + 1, (n, 1, 1), generator=gen)
            flat = (oy + torch.arange(h).view(1, h, 1)) * wp + ox + torch.arange(w).view(1, 1, w)
            x = torch.gather(xp, 2, flat.view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)
        if self.flip:
            flip = torch.rand(n, generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def to_json(self) -> dict[str, Any]:
        return {"pad": self.pad, "flip": self.flip}


@dataclass(frozen=True)
class Split:
    """Indices into the training source: what the supernet trains on, and what search scores on."""

    train: np.ndarray
    holdout: np.ndarray
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {"seed": self.seed, "size": int(len(self.holdout)), "train_size": int(len(self.train))}


@dataclass
class ImageData:
    """A dataset adapted to one space: training and test sources plus how to feed them."""

    name: str
    classes: tuple[str, ...]
    shape: tuple[int, int, int]
    train: ImageSource
    test: ImageSource
    test_origin: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment
    source_shape: tuple[int, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)

    def split(self, holdout: float | int, seed: int) -> Split:
        """A deterministic stratified held-out part of the training data.

        Args:
            holdout: a fraction of the training data (``0 < holdout < 1``) or a number of images.
            seed: the split's seed (recorded in checkpoints so search reproduces it exactly).
        """
        from sklearn.model_selection import train_test_split

        n = len(self.train)
        size = int(round(holdout * n)) if isinstance(holdout, float) and holdout < 1 else int(holdout)
        if size == 0:
            return Split(np.arange(n), np.zeros(0, dtype=np.int64), seed)
        if not 0 < size < n:
            raise DataError(f"holdout {holdout} does not fit {self.name}'s {n} training images")
        labels = self.train.labels
        strat = labels if size >= len(self.classes) and n - size >= len(self.classes) else None
        tr, ho = train_test_split(np.arange(n), test_size=size, random_state=seed, stratify=strat)
        return Split(np.sort(tr), np.sort(ho), seed)

    def prepare(self, x: torch.Tensor, device: torch.device | str = "cpu", channels_last: bool = False) -> torch.Tensor:
        """uint8 ``[n, C, H, W]`` -> normalized float32 on ``device``."""
        x = x.to(device, non_blocking=True).float().div_(255.0)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x = x.sub_(mean).div_(std)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def info(self) -> dict[str, Any]:
        """What checkpoints and exports record about the data."""
        return {
            "dataset": self.name,
            "classes": list(self.classes),
            "input_shape": list(self.shape),
            "source_shape": list(self.source_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "num_train": len(self.train),
            "num_test": len(self.test),
            "test_origin": self.test_origin,
            "augment": self.augment.to_json(),
            "adapt": list(self.notes),
        }


# ----------------------------------------------------------------------------- batching


class BatchOrder:
    """Which examples each step uses: a seeded permutation per epoch, full batches only.

    Step ``t`` is batch ``t % steps_per_epoch`` of epoch ``t // steps_per_epoch``, so the order
    depends on the step alone and a resumed run reads exactly what an uninterrupted one would.
    A global batch is cut into ``chunks`` equal parts (one per rank and accumulation micro-step).
    """

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int) -> None:
        if batch_size > len(indices):
            raise DataError(f"batch size {batch_size} is larger than the {len(indices)} training images")
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        self.seed = seed
        self.steps_per_epoch = len(indices) // batch_size
        self._perms: dict[int, np.ndarray] = {}

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:  # a prefetching reader may run one epoch ahead
                del self._perms[min(self._perms)]
            rng = np.random.default_rng([self.seed, epoch])
            self._perms[epoch] = self.indices[rng.permutation(len(self.indices))]
        return self._perms[epoch]

    def batch(self, step: int) -> np.ndarray:
        epoch, pos = divmod(step, self.steps_per_epoch)
        return self.permutation(epoch)[pos * self.batch_size : (pos + 1) * self.batch_size]


def augment_generator(seed: int, step: int, chunk: int) -> torch.Generator:
    """The augmentation RNG of one chunk of one step: a pure function of its coordinates."""
    value = int(np.random.SeedSequence([seed, step, chunk]).generate_state(2, np.uint64)[0] >> np.uint64(1))
    return torch.Generator().manual_seed(value)


def eval_batches(source: ImageSource, indices: np.ndarray, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) over ``indices`` in order, no augmentation."""
    parts = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    for idx, x in zip(parts, source.stream(parts)):
        yield x, torch.from_numpy(source.labels[idx])


def stratified_subset(indices: np.ndarray, labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of ``indices`` (sorted) with the class mix of all of them: a seeded stratified draw.

    Taking the first ``n`` instead would score a class-sorted dataset (an ImageFolder tree) on its
    first classes only. With fewer images than classes on either side the draw is plain random.
    """
    from sklearn.model_selection import train_test_split

    indices = np.asarray(indices, dtype=np.int64)
    if n >= len(indices):
        return indices
    y = np.asarray(labels)[indices]
    classes = len(np.unique(y))
    strat = y if n >= classes and len(indices) - n >= classes and np.bincount(y).max() >= 2 else None
    _, picked = train_test_split(indices, test_size=n, random_state=seed, stratify=strat)
    return np.sort(picked)


def recalibration_batches(data: ImageData, split: Split, n: int, batch_size: int, seed: int) -> list[torch.Tensor]:
    """Fixed normalized batches from the training part for BN recalibration in search.

    The same batches serve every candidate (the official code's drifting batches are a known
    pitfall). They are not augmented, so the statistics match the unaugmented scoring inputs.
    """
    rng = np.random.default_rng([seed, 0x5EC])
    need = n * batch_size
    pool = split.train
    picks = rng.choice(pool, size=need, replace=need > len(pool))
    parts = [np.sort(picks[i * batch_size : (i + 1) * batch_size]) for i in range(n)]
    return [data.prepare(x) for x in data.train.stream(parts)]


# ----------------------------------------------------------------------------- loading


def _suggest_space(space: SearchSpace, key: str, value: int) -> str:
    base, _, opts = space.name.partition(":")
    kv = dict(item.split("=", 1) for item in opts.split(",") if "=" in item)
    kv[key] = str(value)
    return f"{base}:" + ",".join(f"{k}={kv[k]}" for k in sorted(kv))


def _adapt(images: torch.Tensor, shape: tuple[int, int, int], name: str, space: SearchSpace) -> tuple[torch.Tensor, list[str]]:
    """Convert uint8 ``[N, c, h, w]`` to the space's channels and size; say what was done.

    Plain torch ops (torchvision's import alone takes seconds): ITU-R 601 luma for RGB->gray
    (torchvision's weights), bilinear antialiased interpolation for resizing.
    """
    notes = []
    c, h, w = shape
    n, c0, h0, w0 = images.shape
    if c0 != c:
        if c0 == 1 and c == 3:
            images = images.expand(n, 3, h0, w0).contiguous()
        elif c0 == 3 and c == 1:
            luma = torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * luma).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
        else:
            raise DataError(f"{name} has {c0}-channel images; space {space.name!r} takes {c}")
        notes.append(
            f"{'grayscale->RGB' if c == 3 else 'RGB->grayscale'} for a {c}-channel space "
            f"(--space {_suggest_space(space, 'channels', c0)} keeps the data's channels)"
        )
    if (h0, w0) != (h, w):
        if h0 <= h and w0 <= w and h / h0 <= PAD_RATIO and w / w0 <= PAD_RATIO:
            top, left = (h - h0) // 2, (w - w0) // 2
            images = torch.nn.functional.pad(images, (left, w - w0 - left, top, h - h0 - top))
            notes.append(f"zero-padded {h0}x{w0} -> {h}x{w}")
        else:
            parts = [
                torch.nn.functional.interpolate(images[i : i + 4096].float(), size=(h, w), mode="bilinear", antialias=True)
                .round_()
                .clamp_(0, 255)
                .to(torch.uint8)
                for i in range(0, n, 4096)
            ]
            images = torch.cat(parts)
            notes.append(f"resized {h0}x{w0} -> {h}x{w}")
    return images, notes


def _stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 images in [0, 1] units (from value histograms)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    mean, std = [], []
    for ch in range(images.shape[1]):
        hist = torch.bincount(images[:, ch].reshape(-1), minlength=256).double()
        m = float((hist * values).sum() / hist.sum())
        v = float((hist * (values - m) ** 2).sum() / hist.sum())
        mean.append(round(m, 6))
        std.append(round(max(v, 1e-12) ** 0.5, 6))
    return tuple(mean), tuple(std)


def _check_classes(name: str, n: int, space: SearchSpace) -> None:
    if n != space.num_classes:
        raise DataError(
            f"{name} has {n} classes but space {space.name!r} is built for {space.num_classes}; "
            f"use --space {_suggest_space(space, 'classes', n)}"
        )


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from None
    if len(raw) < 8 or raw[:2] != b"\0\0":
        raise DataError(f"{str(path)!r} is not an IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{str(path)!r} is truncated ({data.size} values, header says {dims})")
    return data.reshape(dims)


_FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _fashion_paths() -> list[Path]:
    root = Path(FASHION_MNIST_DIR)
    if not all((root / n).is_file() for n in _FASHION_FILES):
        raise DataError(f"Fashion-MNIST is not installed in {str(root)!r}: apt-get install dataset-fashion-mnist")
    return [root / n for n in _FASHION_FILES]


def _fashion_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    xtr, ytr, xte, yte = (_read_idx(p) for p in _fashion_paths())
    return xtr[:, None], ytr, xte[:, None], yte


def _carve_test(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    ncls = len(np.unique(labels))
    strat = labels if min(np.bincount(labels)) >= 2 and int(TEST_FRACTION * len(labels)) >= ncls else None
    tr, te = train_test_split(idx, test_size=TEST_FRACTION, random_state=0, stratify=strat)
    return np.sort(tr), np.sort(te)


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)[:, None]
    labels = d.target.astype(np.int64)
    tr, te = _carve_test(labels)
    return images[tr], labels[tr], images[te], labels[te]


def _tensor_data(
    name: str,
    classes: Sequence[str],
    space: SearchSpace,
    xtr: np.ndarray,
    ytr: np.ndarray,
    xte: np.ndarray,
    yte: np.ndarray,
    augment: Augment,
    test_origin: str,
) -> ImageData:
    _check_classes(name, len(classes), space)
    src_shape = tuple(xtr.shape[1:])
    tr, notes = _adapt(torch.from_numpy(np.array(xtr)), space.input_shape, name, space)
    te, _ = _adapt(torch.from_numpy(np.array(xte)), space.input_shape, name, space)
    for note in notes:
        log.info("%s: %s", name, note)
    mean, std = _stats(tr)
    return ImageData(
        name,
        tuple(classes),
        tuple(space.input_shape),
        TensorSource(tr, ytr),
        TensorSource(te, yte),
        test_origin,
        mean,
        std,
        augment,
        src_shape,
        tuple(notes),
    )


def _scan(folder: Path, what: str) -> tuple[list[str], list[str], np.ndarray]:
    """Class names, image paths and labels of an ImageFolder tree (torchvision's rules)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    try:
        classes, class_to_idx = find_classes(str(folder))
        samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS)
    except FileNotFoundError as exc:
        raise DataError(f"{what} {str(folder)!r}: {exc}") from None
    return classes, [p for p, _ in samples], np.asarray([k for _, k in samples], dtype=np.int64)


def _decode_all(paths: Sequence[str], shape: tuple[int, int, int], workers: int, progress: bool, name: str) -> torch.Tensor:
    from tqdm.auto import tqdm

    files = _Files(paths, shape)
    loader = torch.utils.data.DataLoader(files, batch_size=256, num_workers=workers, collate_fn=_collate)
    out = torch.empty((len(paths), *shape), dtype=torch.uint8)
    at = 0
    for batch in tqdm(loader, desc=f"decoding {name}", unit="batch", disable=not progress, leave=False):
        batch = _checked(batch)
        out[at : at + len(batch)] = batch
        at += len(batch)
    return out


def _check_folder(root: Path, space: SearchSpace) -> tuple[Path, list[str], list[str], np.ndarray]:
    """The training folder, its classes, paths and labels (scanned, not decoded)."""
    if not root.exists():
        raise DataError(
            f"data {str(root)!r} does not exist; use fashion-mnist, digits, or an ImageFolder tree DIR/train/<class>/<image>"
        )
    if not root.is_dir():
        raise DataError(f"data {str(root)!r} is not a folder (expected an ImageFolder tree DIR/train/<class>/<image>)")
    c, h, w = space.input_shape
    if c not in (1, 3):
        raise DataError(f"image folders decode to 1 (L) or 3 (RGB) channels; space {space.name!r} takes {c}")
    train_dir = root / "train" if (root / "train").is_dir() else root
    classes, paths, labels = _scan(train_dir, "training folder")
    _check_classes(str(root), len(classes), space)
    return train_dir, classes, paths, labels


def check_data(spec: Any, space: SearchSpace) -> None:
    """Cheap up-front checks of ``spec`` (nothing decoded), for pipelines that load it much later."""
    if isinstance(as_datasets(spec), Datasets):
        return
    if spec == "fashion-mnist":
        _fashion_paths()
    elif spec != "digits":
        _check_folder(Path(spec).expanduser(), space)


def _image_folder(root: Path, space: SearchSpace, memory_limit: int, workers: int | None, progress: bool) -> ImageData:
    train_dir, classes, paths, labels = _check_folder(root, space)
    c, h, w = space.input_shape
    if (root / "val").is_dir() and train_dir != root:
        vclasses, vpaths, vlabels = _scan(root / "val", "validation folder")
        if vclasses != classes:
            raise DataError(f"{str(root / 'val')!r} has classes {vclasses[:5]}... but train/ has {classes[:5]}...")
        test_origin = f"{root / 'val'}"
    else:
        tr, te = _carve_test(labels)
        vpaths, vlabels = [paths[i] for i in te], labels[te]
        paths, labels = [paths[i] for i in tr], labels[tr]
        test_origin = f"stratified {TEST_FRACTION:.0%} of {train_dir} (seed 0)"
    n_workers = workers if workers is not None else (0 if len(paths) < 2000 else min(8, os.cpu_count() or 1))
    in_memory = (len(paths) + len(vpaths)) * c * h * w <= memory_limit
    notes = [f"decoded as {'L' if c == 1 else 'RGB'}, shorter side resized to {min(h, w)}, centre-cropped to {h}x{w}"]
    aug = Augment(pad=max(1, h // 8), flip=True)
    if in_memory:
        xtr = _decode_all(paths, (c, h, w), n_workers, progress, root.name)
        xte = _decode_all(vpaths, (c, h, w), n_workers, progress, root.name)
        mean, std = _stats(xtr)
        return ImageData(
            str(root.resolve()),
            tuple(classes),
            (c, h, w),
            TensorSource(xtr, labels),
            TensorSource(xte, vlabels),
            test_origin,
            mean,
            std,
            aug,
            (),
            tuple(notes),
        )
    log.info(
        "%s: %d images do not fit the %d MiB memory limit; decoding per batch with %d workers",
        root,
        len(paths) + len(vpaths),
        memory_limit >> 20,
        n_workers,
    )
    train = FileSource(paths, labels, (c, h, w), n_workers)
    rng = np.random.default_rng(0)
    sample = np.sort(rng.choice(len(paths), size=min(2000, len(paths)), replace=False))
    mean, std = _stats(torch.cat(list(train.stream([sample[i : i + 256] for i in range(0, len(sample), 256)]))))
    notes.append(f"normalization estimated on {len(sample)} training images (seed 0)")
    return ImageData(
        str(root.resolve()),
        tuple(classes),
        (c, h, w),
        train,
        FileSource(vpaths, vlabels, (c, h, w), n_workers),
        test_origin,
        mean,
        std,
        aug,
        (),
        tuple(notes),
    )


@dataclass(frozen=True)
class Datasets:
    """Your own training and test datasets, instead of a dataset name.

    Each is a ``torch.utils.data.Dataset`` (map-style) of ``(image, label)`` items. Images are
    PIL images, uint8 arrays or tensors (``H x W``, ``H x W x C`` arrays, ``C x H x W``
    tensors), or float tensors in [0, 1] as ``ToTensor()`` makes them (kept at 8 bits): the
    normalisation is computed from the training images, so do not ``Normalize`` them. Labels
    are integers ``0..n-1``. Both are read once into memory.

    Attributes:
        train, test: the datasets (search holds out part of ``train``; ``test`` is for reports).
        classes: class names (default: ``train.classes`` when it has them, else ``0..n-1``).
        name: what checkpoints record (``custom:<name>``).
    """

    train: Any
    test: Any
    classes: Sequence[str] | None = None
    name: str = "data"

    @property
    def recorded_name(self) -> str:
        return CUSTOM_PREFIX + self.name


def _as_uint8(image: Any, where: str) -> torch.Tensor:
    """One dataset image as a uint8 ``[C, H, W]`` tensor."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        from torchvision.transforms.v2 import functional as F

        return F.pil_to_tensor(image)
    t = torch.as_tensor(np.asarray(image)) if not isinstance(image, torch.Tensor) else image
    if t.dim() == 2:
        t = t[None]
    elif t.dim() == 3 and not isinstance(image, torch.Tensor) and t.shape[-1] in (1, 3, 4) and t.shape[0] not in (1, 3, 4):
        t = t.permute(2, 0, 1)  # an H x W x C array
    if t.dim() != 3:
        raise DataError(f"{where}: images must be [C, H, W] (or H x W); got shape {list(t.shape)}")
    if t.dtype == torch.uint8:
        return t
    if not t.is_floating_point():
        raise DataError(f"{where}: images must be uint8 or float in [0, 1], got {t.dtype}")
    if float(t.min()) < 0 or float(t.max()) > 1:
        raise DataError(f"{where}: float images must lie in [0, 1] (ToTensor, no Normalize: spos-hw normalises itself)")
    return (t * 255).round_().to(torch.uint8)


def _read_dataset(ds: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Every ``(image, label)`` of a map-style dataset, stacked: uint8 ``[N, C, H, W]`` and int64 labels."""
    try:
        n = len(ds)
    except TypeError:
        raise DataError(f"the {what} dataset has no len(); pass a map-style torch Dataset") from None
    if n == 0:
        raise DataError(f"the {what} dataset is empty")
    images, labels = [], []
    for i in range(n):
        item = ds[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"the {what} dataset's items must be (image, label) pairs; item {i} is {type(item).__name__}")
        images.append(_as_uint8(item[0], f"{what} item {i}"))
        labels.append(int(item[1]))
    shapes = {tuple(x.shape) for x in images}
    if len(shapes) != 1:
        raise DataError(f"the {what} dataset's images differ in shape ({sorted(shapes)[:3]}); resize them to one size")
    return torch.stack(images).numpy(), np.asarray(labels, dtype=np.int64)


def _custom(data: Datasets, space: SearchSpace) -> ImageData:
    xtr, ytr = _read_dataset(data.train, "training")
    xte, yte = _read_dataset(data.test, "test")
    n_classes = int(max(ytr.max(), yte.max())) + 1
    if ytr.min() < 0 or yte.min() < 0:
        raise DataError("labels must be integers 0..n-1")
    classes = data.classes or getattr(data.train, "classes", None) or [str(i) for i in range(n_classes)]
    if n_classes > len(classes):
        raise DataError(f"labels go up to {n_classes - 1} but {len(classes)} class names are given")
    h = space.input_shape[1]
    return _tensor_data(
        data.recorded_name,
        tuple(map(str, classes)),
        space,
        xtr,
        ytr,
        xte,
        yte,
        Augment(pad=max(1, h // 16), flip=False),
        f"your test dataset ({len(yte)} images)",
    )


def as_datasets(spec: Any) -> Any:
    """A ``(train, test)`` pair as ``Datasets``; anything else unchanged."""
    if isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[0], str):
        return Datasets(*spec)
    return spec


def load_data(
    spec: str | Datasets,
    space: SearchSpace,
    *,
    memory_limit: int = 2 << 30,
    workers: int | None = None,
    progress: bool = False,
) -> ImageData:
    """The dataset ``spec`` adapted to ``space``'s input shape and class count.

    Args:
        spec: ``fashion-mnist``, ``digits``, an ImageFolder path, or ``Datasets`` (a ``(train, test)`` pair).
        space: the space the data feeds (input shape, number of classes).
        memory_limit: bytes of decoded uint8 images an ImageFolder may hold in memory.
        workers: DataLoader workers for decoding image files (default: by dataset size).
        progress: show a bar while decoding an image folder.
    """
    spec = as_datasets(spec)
    if isinstance(spec, Datasets):
        return _custom(spec, space)
    if not isinstance(spec, str):
        raise DataError(f"data must be a dataset name, an image folder or Datasets(train, test), got {type(spec).__name__}")
    if spec == "fashion-mnist":
        xtr, ytr, xte, yte = _fashion_mnist()
        aug = Augment(pad=2, flip=False)  # no flip: the images are consistently oriented (shoes face left)
        return _tensor_data(spec, FASHION_MNIST_CLASSES, space, xtr, ytr, xte, yte, aug, "t10k (the official 10,000 test images)")
    if spec == "digits":
        xtr, ytr, xte, yte = _digits()
        return _tensor_data(
            spec,
            tuple(str(i) for i in range(10)),
            space,
            xtr,
            ytr,
            xte,
            yte,
            Augment(pad=max(1, space.input_shape[1] // 16), flip=False),
            f"stratified {TEST_FRACTION:.0%} of scikit-learn digits (seed 0)",
        )
    return _image_folder(Path(spec).expanduser(), space, memory_limit, workers, progress)


__all__ = [
    "BUILTIN",
    "CUSTOM_PREFIX",
    "Augment",
    "BatchOrder",
    "Datasets",
    "FileSource",
    "ImageData",
    "ImageSource",
    "Split",
    "TensorSource",
    "as_datasets",
    "augment_generator",
    "check_data",
    "eval_batches",
    "load_data",
    "recalibration_batches",
    "stratified_subset",
]
