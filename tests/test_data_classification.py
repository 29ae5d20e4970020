"""Classification readers on tiny fixtures in the original formats, plus image decoding errors
and the indexed wrapper."""

import gzip
import io
import os

import numpy as np
import pytest
from fixtures_data import (
    TINY_WNIDS,
    idx_bytes,
    write_cifar10,
    write_cifar100,
    write_fashion_mnist,
    write_image,
    write_image_folder,
    write_tiny_imagenet,
)
from PIL import Image
from torch.utils.data import Subset

from reid_srdl.data.classification import (
    DatasetFormatError,
    load_cifar10,
    load_cifar100,
    load_fashion_mnist,
    load_imagenet,
    load_tiny_imagenet,
    read_idx,
)
from reid_srdl.data.indexed import ImageFileDataset, ImageReadError, IndexedDataset, read_rgb_image

CIFAR10_BATCHES = [[3, 1], [4], [1, 5, 9], [0], [2, 2]]
CIFAR10_TEST = [7, 8]


# --------------------------------------------------------------------------- CIFAR
def test_cifar10_reads_all_batches_in_order(tmp_path):
    write_cifar10(str(tmp_path), CIFAR10_BATCHES, CIFAR10_TEST)
    data = load_cifar10(str(tmp_path))
    assert (data.num_classes, data.in_channels) == (10, 3)
    assert len(data.train) == 9 and len(data.test) == 2
    assert [data.train[i][1] for i in range(9)] == [3, 1, 4, 1, 5, 9, 0, 2, 2]
    assert [data.test[i][1] for i in range(2)] == CIFAR10_TEST
    assert data.classes[3] == "cat"
    # Channel-major rows become H x W x C: pixel (0, 0) is (label, 100 + row in batch, 200).
    img, label = data.train[4]  # batch 3, row 1, label 5
    assert img.size == (32, 32) and img.mode == "RGB"
    assert img.getpixel((0, 0)) == (5, 101, 200)
    assert img.getpixel((31, 31)) == (5, 0, 0)


def test_cifar100_uses_fine_labels(tmp_path):
    write_cifar100(str(tmp_path), train=[99, 0, 42], test=[17])
    data = load_cifar100(str(tmp_path))
    assert data.num_classes == 100
    assert [data.train[i][1] for i in range(3)] == [99, 0, 42]
    assert data.test[0][1] == 17
    assert data.classes[:2] == ["0", "1"]  # no meta file: numbered names


def test_cifar_missing_file_is_named(tmp_path):
    folder = write_cifar10(str(tmp_path), CIFAR10_BATCHES, CIFAR10_TEST)
    os.remove(os.path.join(folder, "data_batch_4"))
    with pytest.raises(DatasetFormatError, match=r"missing data_batch_4 in '.*cifar-10-batches-py'"):
        load_cifar10(str(tmp_path))


def test_cifar_missing_folder_is_named(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"cifar-100-python' not found; expected it to hold train, test"):
        load_cifar100(str(tmp_path))


def test_cifar_wrong_key_and_shape_and_garbage(tmp_path):
    import pickle

    folder = write_cifar100(str(tmp_path), train=[1], test=[2])
    with open(os.path.join(folder, "test"), "wb") as f:
        pickle.dump({b"labels": [2], b"data": np.zeros((1, 3072), np.uint8)}, f)
    with pytest.raises(DatasetFormatError, match=r"test': key b'fine_labels' missing"):
        load_cifar100(str(tmp_path))
    with open(os.path.join(folder, "test"), "wb") as f:
        pickle.dump({b"fine_labels": [2], b"data": np.zeros((1, 1024), np.uint8)}, f)
    with pytest.raises(DatasetFormatError, match=r"N x 3072 uint8 array, got uint8 \(1, 1024\)"):
        load_cifar100(str(tmp_path))
    with open(os.path.join(folder, "test"), "wb") as f:
        f.write(b"not a pickle at all")
    with pytest.raises(DatasetFormatError, match=r"test' is not a readable CIFAR pickle batch"):
        load_cifar100(str(tmp_path))


def test_cifar_label_out_of_range(tmp_path):
    write_cifar10(str(tmp_path), CIFAR10_BATCHES[:4] + [[10]], CIFAR10_TEST)
    with pytest.raises(DatasetFormatError, match=r"labels must lie in 0..9, found 0..10"):
        load_cifar10(str(tmp_path))


# --------------------------------------------------------------------------- Fashion-MNIST
def _fmnist_arrays():
    train = np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 251
    test = np.full((2, 28, 28), 7)
    return train.astype(np.uint8), [9, 0, 3], test.astype(np.uint8), [1, 8]


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_gz_and_raw(tmp_path, gz):
    train, train_labels, test, test_labels = _fmnist_arrays()
    write_fashion_mnist(str(tmp_path), train, train_labels, test, test_labels, gz=gz)
    data = load_fashion_mnist(str(tmp_path))
    assert (data.num_classes, data.in_channels, len(data.train), len(data.test)) == (10, 1, 3, 2)
    img, label = data.train[2]
    assert (img.mode, img.size, label) == ("L", (28, 28), 3)
    assert img.getpixel((5, 4)) == (2 * 784 + 4 * 28 + 5) % 251  # (x, y) = column 5, row 4
    assert [data.test[i][1] for i in range(2)] == [1, 8]
    assert data.classes[9] == "Ankle boot"


def test_fashion_mnist_bad_magic_names_the_file(tmp_path):
    train, train_labels, test, test_labels = _fmnist_arrays()
    write_fashion_mnist(str(tmp_path), train, train_labels, test, test_labels, gz=True)
    path = os.path.join(str(tmp_path), "t10k-labels-idx1-ubyte.gz")
    with gzip.open(path, "wb") as f:
        f.write(idx_bytes(np.array(test_labels), 0x803))  # an images magic on a labels file
    with pytest.raises(
        DatasetFormatError, match=r"t10k-labels-idx1-ubyte.gz': idx magic number is 0x00000803, expected 0x00000801"
    ):
        load_fashion_mnist(str(tmp_path))


def test_fashion_mnist_size_and_count_mismatch(tmp_path):
    train, train_labels, test, test_labels = _fmnist_arrays()
    write_fashion_mnist(str(tmp_path), train, train_labels, test, test_labels, gz=False)
    path = os.path.join(str(tmp_path), "train-images-idx3-ubyte")
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(raw[:-10])  # truncated
    with pytest.raises(
        DatasetFormatError,
        match=r"train-images-idx3-ubyte': header announces shape \(3, 28, 28\) \(2368 bytes in all\), file has 2358 bytes",  # noqa: E501
    ):
        load_fashion_mnist(str(tmp_path))
    with open(path, "wb") as f:
        f.write(idx_bytes(train[:2], 0x803))
    with pytest.raises(DatasetFormatError, match=r"holds 2 images but '.*train-labels-idx1-ubyte' 3 labels"):
        load_fashion_mnist(str(tmp_path))


def test_fashion_mnist_missing_file_lists_the_expected_names(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"neither train-images-idx3-ubyte nor train-images-idx3-ubyte.gz"):
        load_fashion_mnist(str(tmp_path))


def test_read_idx_corrupt_gzip(tmp_path):
    path = str(tmp_path / "x-idx1-ubyte.gz")
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b garbage")
    with pytest.raises(DatasetFormatError, match=r"cannot read idx file '.*x-idx1-ubyte.gz'"):
        read_idx(path, 0x801)


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="no system Fashion-MNIST")
def test_fashion_mnist_default_root_real_files():
    data = load_fashion_mnist()
    assert (len(data.train), len(data.test)) == (60000, 10000)
    # The first training label of Fashion-MNIST is 9 (ankle boot), the first test label too.
    assert data.train[0][1] == 9 and data.test[0][1] == 9
    assert np.bincount(data.train.labels, minlength=10).tolist() == [6000] * 10


# --------------------------------------------------------------------------- Tiny ImageNet
def test_tiny_imagenet(tmp_path):
    base, val = write_tiny_imagenet(str(tmp_path), per_class=2)
    data = load_tiny_imagenet(str(tmp_path))
    assert data.classes == ["n01", "n02", "n03"]  # sorted wnids
    assert (data.num_classes, len(data.train), len(data.test)) == (3, 6, 4)
    # Train: ImageFolder order (class by class, sorted); the boxes .txt files are not images.
    assert [os.path.basename(p) for p, _ in data.train.samples] == [
        "n01_0.JPEG",
        "n01_1.JPEG",
        "n02_0.JPEG",
        "n02_1.JPEG",
        "n03_0.JPEG",
        "n03_1.JPEG",
    ]
    assert [label for _, label in data.train.samples] == [0, 0, 1, 1, 2, 2]
    assert [data.test[i][1] for i in range(4)] == [2, 0, 1, 2]  # n03, n01, n02, n03
    img, label = data.train[2]
    assert (img.size, img.getpixel((0, 0))[0], label) == ((8, 8), 0, 1)  # n02 written with red 0


def test_tiny_imagenet_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match=r"tiny-imagenet-200' not found; expected it to hold wnids.txt"):
        load_tiny_imagenet(str(tmp_path))
    base, _ = write_tiny_imagenet(str(tmp_path))
    with open(os.path.join(base, "val", "val_annotations.txt"), "a") as f:
        f.write("val_9.JPEG\tn99\t0\t0\t7\t7\n")
    with pytest.raises(DatasetFormatError, match=r"val_annotations.txt' line 5: expected"):
        load_tiny_imagenet(str(tmp_path))
    with open(os.path.join(base, "val", "val_annotations.txt"), "w") as f:
        f.write("val_missing.JPEG\tn01\t0\t0\t7\t7\n")
    with pytest.raises(DatasetFormatError, match=r"line 1: image '.*val_missing.JPEG' not found"):
        load_tiny_imagenet(str(tmp_path))
    with open(os.path.join(base, "wnids.txt"), "w") as f:
        f.write("\n".join(TINY_WNIDS + ["n04"]))
    with pytest.raises(DatasetFormatError, match=r"do not match wnids.txt: missing \['n04'\]"):
        load_tiny_imagenet(str(tmp_path))


# --------------------------------------------------------------------------- ImageNet
def test_imagenet_image_folders(tmp_path):
    write_image_folder(str(tmp_path / "train"), {"n2": 2, "n1": 3})
    write_image_folder(str(tmp_path / "val"), {"n1": 1, "n2": 1})
    data = load_imagenet(str(tmp_path))
    assert data.classes == ["n1", "n2"]
    assert (data.num_classes, len(data.train), len(data.test)) == (2, 5, 2)
    assert [data.train[i][1] for i in range(5)] == [0, 0, 0, 1, 1]
    assert [data.test[i][1] for i in range(2)] == [0, 1]


def test_imagenet_errors(tmp_path):
    write_image_folder(str(tmp_path / "train"), {"n1": 1, "n2": 1})
    with pytest.raises(DatasetFormatError, match=r"ImageNet: folder '.*val' not found"):
        load_imagenet(str(tmp_path))
    write_image_folder(str(tmp_path / "val"), {"n1": 1, "n3": 1})
    with pytest.raises(DatasetFormatError, match=r"missing \['n2'\], unexpected \['n3'\]"):
        load_imagenet(str(tmp_path))
    os.makedirs(tmp_path / "train" / "empty_class")
    with pytest.raises(DatasetFormatError, match=r"train' is not a class-per-folder tree.*empty_class"):
        load_imagenet(str(tmp_path))


# --------------------------------------------------------------------------- decoding
def test_corrupt_and_truncated_images_name_the_file(tmp_path):
    good = str(tmp_path / "good.jpg")
    write_image(good, (1, 2, 3), (32, 32))
    assert read_rgb_image(good).size == (32, 32)
    garbage = str(tmp_path / "garbage.jpg")
    with open(garbage, "wb") as f:
        f.write(b"this is not a jpeg")
    truncated = str(tmp_path / "truncated.jpg")
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "JPEG")
    with open(truncated, "wb") as f:
        f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
    for path in (garbage, truncated, str(tmp_path / "absent.jpg")):
        with pytest.raises(ImageReadError, match=f"cannot read image '{path}'"):
            read_rgb_image(path)
    dataset = ImageFileDataset([(good, 0), (truncated, 1)])
    assert dataset[0][1] == 0
    with pytest.raises(ImageReadError, match="truncated.jpg"):
        dataset[1]


def test_imagefolder_corrupt_file_is_named(tmp_path):
    write_image_folder(str(tmp_path / "train"), {"a": 1})
    write_image_folder(str(tmp_path / "val"), {"a": 1})
    with open(tmp_path / "val" / "a" / "a_0.JPEG", "wb") as f:
        f.write(b"\xff\xd8\xff broken")
    data = load_imagenet(str(tmp_path))
    with pytest.raises(ImageReadError, match=r"val/a/a_0.JPEG"):
        data.test[0]


# --------------------------------------------------------------------------- indexed wrapper
def test_indexed_dataset_appends_the_position(tmp_path):
    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.jpg"))
        write_image(paths[-1], (i * 60, 0, 0), (4, 4))
    base = ImageFileDataset([(p, 10 + i, i % 2) for i, p in enumerate(paths)])
    indexed = IndexedDataset(base)
    img, pid, camid, index = indexed[3]
    assert (pid, camid, index) == (13, 1, 3)
    # A subset is numbered from 0, so the index addresses a bank of len(subset) rows.
    sub = IndexedDataset(Subset(base, [3, 1]))
    assert [(sub[i][1], sub[i][3]) for i in range(2)] == [(13, 0), (11, 1)]
    assert len(sub) == 2
    with pytest.raises(IndexError, match="index 2 out of range for a dataset of 2"):
        sub[2]
