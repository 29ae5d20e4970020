"""Tiny on-disk data sets in the real formats, written by hand for the data-layer tests.

Each writer returns what a reader must find, so the tests compare against these
hand-written expectations rather than against the code under test.
"""

import gzip
import os
import pickle
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

# A hand-made Market-1501 tree.  Expected values below are counted by hand from these names.
MARKET_FILES: Dict[str, List[str]] = {
    "bounding_box_train": [
        "0007_c1s1_000101_01.jpg",  # pid 7, camid 0
        "0007_c2s1_000201_02.jpg",  # pid 7, camid 1
        "0003_c1s1_000301_01.jpg",  # pid 3, camid 0
        "0012_c6s2_000401_03.jpg",  # pid 12, camid 5
        "0012_c3s1_000501_01.jpg",  # pid 12, camid 2
        "-1_c1s1_000601_01.jpg",  # junk: dropped
        "0000_c2s1_000701_01.jpg",  # distractor: dropped outside the gallery
    ],
    "query": [
        "0020_c1s1_001001_00.jpg",
        "0020_c4s1_001101_00.jpg",
        "0031_c2s1_001201_00.jpg",
        "-1_c3s1_001301_00.jpg",  # junk: dropped
    ],
    "bounding_box_test": [
        "0020_c2s1_002001_01.jpg",
        "0020_c1s1_002101_02.jpg",
        "0031_c3s1_002201_01.jpg",
        "0000_c1s1_002301_01.jpg",  # distractor: kept in the gallery
        "0000_c5s1_002401_04.jpg",  # distractor: kept in the gallery
        "-1_c2s1_002501_01.jpg",  # junk: dropped
        "-1_c6s1_002601_02.jpg",  # junk: dropped
    ],
    "gt_bbox": [
        "0020_c1s1_001001_00.jpg",
        "0020_c1s1_001011_00.jpg",
        "0020_c4s1_001101_00.jpg",
        "0031_c2s1_001201_00.jpg",
        "0031_c2s1_001221_00.jpg",
        "0044_c1s1_003001_00.jpg",  # an identity with no query
    ],
}
# (file name, pid, camid) after junk/distractor handling; train labels: 3->0, 7->1, 12->2.
MARKET_EXPECTED = {
    "train": [
        ("0003_c1s1_000301_01.jpg", 0, 0),
        ("0007_c1s1_000101_01.jpg", 1, 0),
        ("0007_c2s1_000201_02.jpg", 1, 1),
        ("0012_c3s1_000501_01.jpg", 2, 2),
        ("0012_c6s2_000401_03.jpg", 2, 5),
    ],
    "query": [
        ("0020_c1s1_001001_00.jpg", 20, 0),
        ("0020_c4s1_001101_00.jpg", 20, 3),
        ("0031_c2s1_001201_00.jpg", 31, 1),
    ],
    "gallery": [
        ("0000_c1s1_002301_01.jpg", 0, 0),
        ("0000_c5s1_002401_04.jpg", 0, 4),
        ("0020_c1s1_002101_02.jpg", 20, 0),
        ("0020_c2s1_002001_01.jpg", 20, 1),
        ("0031_c3s1_002201_01.jpg", 31, 2),
    ],
    "gt_bbox": [
        ("0020_c1s1_001001_00.jpg", 20, 0),
        ("0020_c1s1_001011_00.jpg", 20, 0),
        ("0020_c4s1_001101_00.jpg", 20, 3),
        ("0031_c2s1_001201_00.jpg", 31, 1),
        ("0031_c2s1_001221_00.jpg", 31, 1),
        ("0044_c1s1_003001_00.jpg", 44, 0),
    ],
}


def write_image(path: str, colour=(200, 30, 30), size=(16, 8), fmt="JPEG") -> None:
    """A small plain-colour image; size is (height, width)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", (size[1], size[0]), tuple(colour)).save(path, fmt)


def write_market_tree(root: str, versioned: bool = True, files: Dict[str, List[str]] = None) -> str:
    """The hand-made Market tree under root/market1501[/Market-1501-v15.09.15]; returns the data dir."""
    data_dir = os.path.join(root, "market1501", "Market-1501-v15.09.15" if versioned else "")
    for folder, names in (files or MARKET_FILES).items():
        os.makedirs(os.path.join(data_dir, folder), exist_ok=True)
        for i, name in enumerate(names):
            write_image(os.path.join(data_dir, folder, name), colour=(10 * i, 100, 200))
    return os.path.normpath(data_dir)


# --------------------------------------------------------------------------- CIFAR
def cifar_rows(labels: Sequence[int]) -> np.ndarray:
    """N x 3072 rows whose pixel (0, 0) is (label, 100 + i, 200) and the rest red=label.

    Stored channel-major as in CIFAR: 1024 red values, then 1024 green, then 1024 blue.
    """
    n = len(labels)
    rows = np.zeros((n, 3072), np.uint8)
    for i, label in enumerate(labels):
        rows[i, :1024] = label  # red plane
        rows[i, 1024] = 100 + i  # green at pixel (0, 0)
        rows[i, 2048] = 200  # blue at pixel (0, 0)
    return rows


def _pickle(path: str, obj) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: str, batches: List[List[int]], test: List[int]) -> str:
    """cifar-10-batches-py with data_batch_1..5 (labels per batch) and test_batch."""
    folder = os.path.join(root, "cifar-10-batches-py")
    for i, labels in enumerate(batches, 1):
        _pickle(
            os.path.join(folder, f"data_batch_{i}"),
            {
                b"batch_label": b"training batch",
                b"labels": list(labels),
                b"data": cifar_rows(labels),
                b"filenames": [b"x.png"] * len(labels),
            },
        )
    _pickle(
        os.path.join(folder, "test_batch"),
        {b"batch_label": b"testing batch", b"labels": list(test), b"data": cifar_rows(test)},
    )
    _pickle(
        os.path.join(folder, "batches.meta"),
        {
            b"label_names": [
                n.encode()
                for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
            ]
        },
    )
    return folder


def write_cifar100(root: str, train: List[int], test: List[int]) -> str:
    folder = os.path.join(root, "cifar-100-python")
    for name, labels in (("train", train), ("test", test)):
        _pickle(
            os.path.join(folder, name),
            {
                b"fine_labels": list(labels),
                b"coarse_labels": [label // 5 for label in labels],
                b"data": cifar_rows(labels),
            },
        )
    return folder


# --------------------------------------------------------------------------- idx (Fashion-MNIST)
def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_fashion_mnist(
    root: str, train_images: np.ndarray, train_labels, test_images, test_labels, gz: bool = True
) -> None:
    os.makedirs(root, exist_ok=True)
    ext = ".gz" if gz else ""
    opener = gzip.open if gz else open
    for name, arr, magic in (
        ("train-images-idx3-ubyte", train_images, 0x803),
        ("train-labels-idx1-ubyte", np.asarray(train_labels), 0x801),
        ("t10k-images-idx3-ubyte", test_images, 0x803),
        ("t10k-labels-idx1-ubyte", np.asarray(test_labels), 0x801),
    ):
        with opener(os.path.join(root, name + ext), "wb") as f:
            f.write(idx_bytes(arr, magic))


# --------------------------------------------------------------------------- image folders
TINY_WNIDS = ["n02", "n01", "n03"]  # deliberately unsorted, as in the real wnids.txt


def write_tiny_imagenet(root: str, per_class: int = 2) -> Tuple[str, List[Tuple[str, str]]]:
    """tiny-imagenet-200 with 3 classes; returns the base folder and the val (file, wnid) list."""
    base = os.path.join(root, "tiny-imagenet-200")
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, "wnids.txt"), "w") as f:
        f.write("\n".join(TINY_WNIDS) + "\n")
    for c, wnid in enumerate(TINY_WNIDS):
        for i in range(per_class):
            write_image(os.path.join(base, "train", wnid, "images", f"{wnid}_{i}.JPEG"), (c * 80, 0, 0), (8, 8))
        with open(os.path.join(base, "train", wnid, f"{wnid}_boxes.txt"), "w") as f:
            f.write("".join(f"{wnid}_{i}.JPEG\t0\t0\t7\t7\n" for i in range(per_class)))
    val = [("val_0.JPEG", "n03"), ("val_1.JPEG", "n01"), ("val_2.JPEG", "n02"), ("val_3.JPEG", "n03")]
    for name, _wnid in val:
        write_image(os.path.join(base, "val", "images", name), (0, 90, 0), (8, 8))
    with open(os.path.join(base, "val", "val_annotations.txt"), "w") as f:
        f.write("".join(f"{name}\t{wnid}\t0\t0\t7\t7\n" for name, wnid in val))
    return base, val


def write_image_folder(folder: str, counts: Dict[str, int]) -> None:
    for cls, n in counts.items():
        for i in range(n):
            write_image(os.path.join(folder, cls, f"{cls}_{i}.JPEG"), (i * 40, 50, 50), (8, 8))
