"""CIFAR batches are read with an unpickler that admits only the official files' structure.

A real-format fixture (protocol 2, Python-2 byte strings, NumPy's ``_reconstruct``/
``ndarray``/``dtype`` as cPickle wrote them) is read back exactly; a crafted batch whose
``__reduce__`` would create a marker file is refused by name, through the loader and through
reid-train (exit 2, one line), and the marker never appears."""

import os
import pickle

import numpy as np
import pytest
from tiny_runs import QUIET
from trust_files_helpers import Py2Pickler, py2_cifar_batch
from trust_helpers import one_line

from reid_srdl.cli import train as train_cli
from reid_srdl.data.classification import DatasetFormatError, load_cifar10, read_cifar_batch

pytestmark = pytest.mark.usefixtures("single_thread")

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


def _rows(labels, seed):
    return np.random.default_rng(seed).integers(0, 256, (len(labels), 3072), dtype=np.uint8)


@pytest.fixture
def official(tmp_path):
    """cifar-10-batches-py written byte for byte the way the official files are."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        labels = [(i + j) % 10 for j in range(3)]
        data = _rows(labels, i)
        (folder / name).write_bytes(py2_cifar_batch(labels, data, f"batch {i}".encode()))
        written[name] = (labels, data)
    (folder / "batches.meta").write_bytes(
        Py2Pickler().dumps({b"num_cases_per_batch": 3, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072})
    )
    return tmp_path, folder, written


def test_the_official_format_is_read_back_exactly(official):
    root, folder, written = official
    for name, (labels, data) in written.items():
        raw = (folder / name).read_bytes()
        assert raw[:2] == b"\x80\x02" and b"cnumpy.core.multiarray\n_reconstruct\n" in raw
        # Oracle: Python's own pickle (the CIFAR page's reader) sees the same object.
        entry = pickle.loads(raw, encoding="bytes")
        assert entry[b"labels"] == labels and np.array_equal(entry[b"data"], data)
    loaded = load_cifar10(str(root))
    images = np.stack([np.asarray(loaded.train[i][0]) for i in range(len(loaded.train))])
    expected = np.concatenate([written[f"data_batch_{k}"][1] for k in range(1, 6)])
    # CIFAR rows are channel-major: 1024 red, 1024 green, 1024 blue values.
    assert np.array_equal(images, expected.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    assert [loaded.train[i][1] for i in range(len(loaded.train))] == sum(
        (written[f"data_batch_{k}"][0] for k in range(1, 6)), []
    )
    assert loaded.classes == list(CLASSES)


def test_python3_protocol_2_batches_still_load(tmp_path):
    # The same batch re-saved by Python 3 (bytes written as _codecs.encode(text, 'latin1')).
    labels, data = [4, 2], _rows([4, 2], 9)
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"labels": labels, b"data": data}, protocol=2))
    assert b"_codecs\nencode" in path.read_bytes()
    images, got = read_cifar_batch(str(path), "labels")
    assert got.tolist() == labels and np.array_equal(images, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


@pytest.mark.parametrize(
    "payload, named",
    [
        (lambda marker: Payload(open, marker, "w"), "io.open"),
        (lambda marker: Payload(os.system, f"touch {marker}"), "posix.system"),
        (lambda marker: Payload(np.ndarray, (1 << 40,)), "numpy.ndarray"),
    ],
)
def test_a_crafted_batch_is_refused_by_name(tmp_path, payload, named):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"labels": [1], b"data": payload(str(marker))}, protocol=2))
    with pytest.raises(DatasetFormatError) as e:
        read_cifar_batch(str(path), "labels")
    line = one_line(str(e.value))
    assert not marker.exists(), "the crafted batch ran"
    assert f"refusing to read '{path}'" in line and "a data set file is data, never code" in line
    assert named in line or "not a readable CIFAR pickle batch" in line, line


def test_numpy_builders_outside_the_official_shape_are_refused(tmp_path):
    from numpy.core.multiarray import _reconstruct

    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": Payload(_reconstruct, np.ndarray, (1 << 34,), b"b")}, protocol=2))
    with pytest.raises(DatasetFormatError, match=r"_reconstruct.*\(only the empty start\)"):
        read_cifar_batch(str(path), "labels")
    path.write_bytes(pickle.dumps({b"data": np.array([object()] * 2)}, protocol=2))
    with pytest.raises(DatasetFormatError, match=r"numpy.dtype\('O8'\) \(only numeric types\)"):
        read_cifar_batch(str(path), "labels")


def test_train_refuses_a_crafted_batch_in_one_line(official, tmp_path, capsys):
    root, folder, _ = official
    marker = tmp_path / "PAYLOAD_RAN"
    (folder / "data_batch_3").write_bytes(
        pickle.dumps({b"labels": [1], b"data": Payload(open, str(marker), "w")}, protocol=2)
    )
    args = [
        f"data.root={root}",
        "data.name=cifar10",
        "data.synthetic=false",
        "model.name=resnet8",
        "method.name=vanilla",
        "train.epochs=1",
        "data.workers=0",
        f"train.output_dir={tmp_path / 'runs'}",
        *QUIET,
    ]
    assert train_cli.main(args) == 2
    line = one_line(capsys.readouterr().err)
    assert not marker.exists()
    assert "data_batch_3" in line and "refers to io.open" in line, line
