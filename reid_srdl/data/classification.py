"""Classification data sets read from their original on-disk formats.

* CIFAR-10 / CIFAR-100: the "python version" pickle batches.  torchvision's ``CIFAR10``
  insists on the md5 of the official archive files (anything else is "Dataset not found or
  corrupted", without saying which file), so the batches are read here -- not with the
  ``pickle.load`` the CIFAR page suggests, which would run any code a crafted batch names, but
  with an unpickler that admits only the official files' structure
  (reid_srdl.data.cifar_pickle).
* Fashion-MNIST: the four idx files, gzipped or not.  torchvision's ``FashionMNIST`` wants
  them under ``<root>/FashionMNIST/raw`` with its own checks, so they are read here with
  numpy, checking magic numbers and sizes.
* Tiny ImageNet: ``train/<wnid>/images/*.JPEG`` through torchvision's ``ImageFolder``; the
  validation images come from ``val/val_annotations.txt``.
* ImageNet: ``train/`` and ``val/`` as ``ImageFolder`` trees.

Every loader checks the layout first and raises :class:`DatasetFormatError` naming the file
or folder it expected.  Datasets yield ``(image, label)`` with ``image`` a transformed PIL
image and ``label`` a Python int.
"""

import gzip
import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
from torch.utils.data import Dataset
from torchvision.datasets import ImageFolder

from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.data.cifar_pickle import CifarPickleError, read_cifar_pickle
from reid_srdl.data.indexed import ImageFileDataset, read_rgb_image

FASHION_MNIST_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR100_FOLDER = "cifar-100-python"
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"

FASHION_MNIST_CLASSES = [
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
]
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension


class DatasetFormatError(ReidSrdlError, ValueError):
    """A data set's files are missing or not in the expected format."""


@dataclass
class ClassificationData:
    train: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    classes: List[str]


class ArrayImageDataset(Dataset):
    """``(image, label)`` from uint8 arrays: (N, H, W) grey or (N, H, W, 3) RGB."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Optional[Callable] = None):
        assert len(images) == len(labels), (images.shape, labels.shape)
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = Image.fromarray(self.images[index])  # mode "L" for 2-D, "RGB" for H x W x 3
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.labels[index])


# --------------------------------------------------------------------------- helpers
def _require_files(folder: str, names: Sequence[str], what: str) -> None:
    if not os.path.isdir(folder):
        raise DatasetFormatError(f"{what}: folder '{folder}' not found; expected it to hold {', '.join(names)}")
    missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise DatasetFormatError(f"{what}: missing {', '.join(missing)} in '{folder}'; expected {', '.join(names)}")


def _check_labels(labels: np.ndarray, num_classes: int, source: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetFormatError(
            f"{source}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}"
        )


# --------------------------------------------------------------------------- CIFAR
def read_cifar_batch(path: str, label_key: str) -> Tuple[np.ndarray, np.ndarray]:
    """One CIFAR pickle batch -> (N x 32 x 32 x 3 uint8 images, N int64 labels)."""
    # The official batches are Python-2 pickles; encoding="bytes" keeps their keys as bytes.
    # Read with an unpickler that admits only their structure: a batch never runs code.
    try:
        entry = read_cifar_pickle(path)
    except CifarPickleError as e:
        raise DatasetFormatError(str(e)) from None
    if not isinstance(entry, dict):
        raise DatasetFormatError(f"'{path}': expected a pickled dict, got {type(entry).__name__}")
    entry = {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}
    for key in ("data", label_key):
        if key not in entry:
            raise DatasetFormatError(
                f"'{path}': key b'{key}' missing; keys present: {', '.join(repr(k) for k in sorted(entry))}"
            )
    data = np.asarray(entry["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetFormatError(f"'{path}': b'data' must be an N x 3072 uint8 array, got {data.dtype} {data.shape}")
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if labels.shape != (len(data),):
        raise DatasetFormatError(f"'{path}': b'{label_key}' has {labels.size} labels for {len(data)} images")
    # Rows are stored channel-major (1024 red, 1024 green, 1024 blue values).
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _read_cifar_names(path: str, key: str, num_classes: int) -> List[str]:
    """Class names from the meta file when present; otherwise '0', '1', ..."""
    if os.path.isfile(path):
        try:
            meta = read_cifar_pickle(path)
        except CifarPickleError as e:
            if e.refused:  # a crafted meta file is refused like a crafted batch
                raise DatasetFormatError(str(e)) from None
            meta = None  # the names are cosmetic; an unreadable meta file must not stop training
        try:
            names = meta.get(key.encode(), meta.get(key))
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            if len(names) == num_classes:
                return names
        except (AttributeError, TypeError, ValueError):
            pass  # the names are cosmetic; a meta file without them must not stop training
    return [str(i) for i in range(num_classes)]


def _load_cifar(
    folder: str, train_files, test_files, label_key, num_classes, meta, names_key, what, train_transform, test_transform
) -> ClassificationData:
    _require_files(folder, list(train_files) + list(test_files), what)

    def read(files):
        parts = [read_cifar_batch(os.path.join(folder, f), label_key) for f in files]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        _check_labels(labels, num_classes, f"{what} ({', '.join(files)} in '{folder}')")
        return images, labels

    train = ArrayImageDataset(*read(train_files), transform=train_transform)
    test = ArrayImageDataset(*read(test_files), transform=test_transform)
    classes = _read_cifar_names(os.path.join(folder, meta), names_key, num_classes)
    return ClassificationData(train, test, num_classes, 3, classes)


def load_cifar10(root: str, train_transform=None, test_transform=None) -> ClassificationData:
    """CIFAR-10 from ``root/cifar-10-batches-py/{data_batch_1..5, test_batch}``."""
    return _load_cifar(
        os.path.join(root, CIFAR10_FOLDER),
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "labels",
        10,
        "batches.meta",
        "label_names",
        "CIFAR-10",
        train_transform,
        test_transform,
    )


def load_cifar100(root: str, train_transform=None, test_transform=None) -> ClassificationData:
    """CIFAR-100 (fine labels) from ``root/cifar-100-python/{train, test}``."""
    return _load_cifar(
        os.path.join(root, CIFAR100_FOLDER),
        ["train"],
        ["test"],
        "fine_labels",
        100,
        "meta",
        "fine_label_names",
        "CIFAR-100",
        train_transform,
        test_transform,
    )


# --------------------------------------------------------------------------- Fashion-MNIST
def read_idx(path: str, magic: int) -> np.ndarray:
    """An idx file (gzipped if it ends in .gz) of unsigned bytes, as a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # includes gzip.BadGzipFile and truncated streams
        raise DatasetFormatError(f"cannot read idx file '{path}': {e}") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetFormatError(f"'{path}' is too short ({len(raw)} bytes) to be an idx file")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        raise DatasetFormatError(f"'{path}': idx magic number is 0x{found:08x}, expected 0x{magic:08x}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DatasetFormatError(
            f"'{path}': header announces shape {shape} ({expected} bytes in all), file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _find_idx(root: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        path = os.path.join(root, name)
        if os.path.isfile(path):
            return path
    raise DatasetFormatError(
        f"Fashion-MNIST: neither {stem} nor {stem}.gz found in '{root}'; expected "
        "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte (each optionally .gz)"
    )


def _read_idx_pair(root: str, prefix: str, transform) -> ArrayImageDataset:
    images_path = _find_idx(root, f"{prefix}-images-idx3-ubyte")
    labels_path = _find_idx(root, f"{prefix}-labels-idx1-ubyte")
    images = read_idx(images_path, _IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, _IDX_LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise DatasetFormatError(f"'{images_path}' holds {len(images)} images but '{labels_path}' {len(labels)} labels")
    _check_labels(labels, 10, f"'{labels_path}'")
    return ArrayImageDataset(images, labels, transform=transform)


def load_fashion_mnist(
    root: str = FASHION_MNIST_DEFAULT_ROOT, train_transform=None, test_transform=None
) -> ClassificationData:
    """Fashion-MNIST from the four idx files in `root` (gzipped or not)."""
    if not os.path.isdir(root):
        raise DatasetFormatError(f"Fashion-MNIST: folder '{root}' not found")
    train = _read_idx_pair(root, "train", train_transform)
    test = _read_idx_pair(root, "t10k", test_transform)
    return ClassificationData(train, test, 10, 1, list(FASHION_MNIST_CLASSES))


# --------------------------------------------------------------------------- image folders
def _image_folder(folder: str, transform, what: str) -> ImageFolder:
    if not os.path.isdir(folder):
        raise DatasetFormatError(f"{what}: folder '{folder}' not found")
    try:
        return ImageFolder(folder, transform=transform, loader=read_rgb_image)
    except FileNotFoundError as e:  # no class folder, or a class folder without images
        raise DatasetFormatError(f"{what}: '{folder}' is not a class-per-folder tree: {e}") from None


def _same_classes(found: List[str], expected: List[str], where: str, source: str) -> None:
    if found != expected:
        extra = sorted(set(found) - set(expected))
        missing = sorted(set(expected) - set(found))
        raise DatasetFormatError(
            f"class folders of '{where}' do not match {source}: "
            f"missing {missing[:5] or 'none'}, unexpected {extra[:5] or 'none'}"
        )


def load_tiny_imagenet(root: str, train_transform=None, test_transform=None) -> ClassificationData:
    """Tiny ImageNet from ``root/tiny-imagenet-200``: wnids.txt, train/, val/ (the test set).

    Classes are the wnids in sorted order (the order ImageFolder gives the train folders).
    """
    base = os.path.join(root, TINY_IMAGENET_FOLDER)
    what = "Tiny ImageNet"
    _require_files(base, ["wnids.txt", os.path.join("val", "val_annotations.txt")], what)
    with open(os.path.join(base, "wnids.txt"), encoding="utf-8") as f:
        wnids = sorted({line.strip() for line in f if line.strip()})
    if not wnids:
        raise DatasetFormatError(f"{what}: '{os.path.join(base, 'wnids.txt')}' lists no class")
    train = _image_folder(os.path.join(base, "train"), train_transform, what)
    _same_classes(train.classes, wnids, os.path.join(base, "train"), "wnids.txt")

    label_of = {w: i for i, w in enumerate(wnids)}
    annotations = os.path.join(base, "val", "val_annotations.txt")
    samples = []
    with open(annotations, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 2 or fields[1] not in label_of:
                raise DatasetFormatError(
                    f"'{annotations}' line {line_no}: expected '<file>\\t<wnid from wnids.txt>...', "
                    f"got {line.strip()!r}"
                )
            path = os.path.join(base, "val", "images", fields[0])
            if not os.path.isfile(path):
                raise DatasetFormatError(f"'{annotations}' line {line_no}: image '{path}' not found")
            samples.append((path, label_of[fields[1]]))
    if not samples:
        raise DatasetFormatError(f"'{annotations}' lists no validation image")
    test = ImageFileDataset(samples, transform=test_transform)
    return ClassificationData(train, test, len(wnids), 3, wnids)


def load_imagenet(root: str, train_transform=None, test_transform=None) -> ClassificationData:
    """ImageNet as two ImageFolder trees, ``root/train/<class>/`` and ``root/val/<class>/``."""
    what = "ImageNet"
    train = _image_folder(os.path.join(root, "train"), train_transform, what)
    test = _image_folder(os.path.join(root, "val"), test_transform, what)
    _same_classes(
        test.classes, train.classes, os.path.join(root, "val"), f"the class folders of '{os.path.join(root, 'train')}'"
    )
    return ClassificationData(train, test, len(train.classes), 3, list(train.classes))
