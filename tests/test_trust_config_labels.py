"""Labels, cameras and ids from strangers: digits are ASCII digits (``c²`` and ``c٣`` are
refused, where ``str.isdigit()`` said yes), ids are refused outside the int64 they are kept
in (2**64 - 1 used to wrap around to -1, the junk id), a CSV that is not UTF-8 or not CSV is
one line, and a stored calibration with a NaN or infinite threshold is refused."""

import math

import numpy as np
import pytest
from trust_helpers import one_line

from reid_srdl.cli import search as search_cli
from reid_srdl.core.arrays import EvaluationInputError, check_ids
from reid_srdl.data.market1501 import parse_market_name
from reid_srdl.search.calibration import Calibration
from reid_srdl.search.errors import SearchError
from reid_srdl.search.gallery import per_query_ids
from reid_srdl.search.labels import LabelError, parse_camera


# ----------------------------------------------------------------------------- cameras
@pytest.mark.parametrize("text, camid", [("c1", 0), ("C6", 5), (" c12 ", 11), ("c99999", 99998)])
def test_cameras_written_as_in_file_names(text, camid):
    assert parse_camera(text) == camid


@pytest.mark.parametrize(
    "text",
    [
        "c\u00b2",  # superscript two: isdigit() is True, int() raises
        "c\u0663",  # Arabic-Indic three: isdigit() is True and int() reads 3
        "c\uff11",  # full-width one
        "c0",
        "c-1",
        "c1_0",
        "c 1",
        "c100000",
        "c" + "9" * 40,
        "cam1",
        "",
    ],
)
def test_anything_else_is_not_a_camera(text):
    with pytest.raises(LabelError) as e:
        parse_camera(text)
    assert str(e.value).startswith("a camera is written c1, c2, ... (digits 0-9, at most c99999)")


def test_a_camera_hint_never_fails_on_odd_digits():
    with pytest.raises(SearchError) as e:
        per_query_ids("c\u00b2", 2, "query camids")
    assert str(e.value) == (
        "query camids must be an integer id (0-based: file name c1 is camid 0) or one per query; got 'c²'"
    )


def test_market_names_take_ascii_digits_only():
    assert parse_market_name("0002_c1s1_000451_03.jpg") == (2, 0)
    for odd in ("0002_c\u0663s1_000451_03.jpg", "\u0660\u0660\u0660\u0662_c1s1_000451_03.jpg"):
        with pytest.raises(ValueError, match="is not a Market-1501 image name"):
            parse_market_name(odd)


# ----------------------------------------------------------------------------- ids
@pytest.mark.parametrize(
    "ids, shown",
    [
        (np.array([5, 2**64 - 1], dtype=np.uint64), "id 18446744073709551615 (entry 1)"),
        (np.array([2**63], dtype=np.uint64), "id 9223372036854775808 (entry 0)"),
        (np.array([1.0, 1e19]), "id 1e+19 (entry 1)"),
        (np.array([-1e30]), "id -1e+30 (entry 0)"),
    ],
)
def test_ids_outside_int64_are_refused_not_wrapped(ids, shown):
    # What astype(int64) made of them: 2**64 - 1 became -1 (junk), 1e19 the most negative id.
    with pytest.raises(EvaluationInputError) as e:
        check_ids(ids, len(ids), "pids to add")
    assert str(e.value).startswith(f"pids to add: {shown} is outside the range ids are stored in (")


def test_ids_at_the_edges_of_int64_are_kept_exactly():
    ids = np.array([-(2**63), 2**63 - 1, -1, 0])
    assert check_ids(ids, 4, "pids").tolist() == [-(2**63), 2**63 - 1, -1, 0]
    assert check_ids(np.array([2.0**53]), 1, "pids").tolist() == [2**53]
    with pytest.raises(SearchError, match="outside the range"):
        per_query_ids(2**64 - 1, 3, "query pids")  # one id for all queries


def test_a_gallery_refuses_an_oversized_pid_and_stays_as_it_was():
    from reid_srdl.search import ReIDSearcher

    s = ReIDSearcher(np.eye(2, dtype=np.float32), pids=[1, 2], camids=[0, 1])
    with pytest.raises(EvaluationInputError, match="^items to add pids: id 18446744073709551615 "):
        s.add(np.ones((1, 2), dtype=np.float32), np.array([2**64 - 1], dtype=np.uint64), [0])
    assert s.pids.tolist() == [1, 2] and len(s) == 2


# ----------------------------------------------------------------------------- label CSVs
@pytest.fixture
def images(tmp_path):
    """Two image files (empty: labels are read before any image is decoded)."""
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (folder / name).write_bytes(b"")
    return folder


def _build_error(capsys, images, csv_path, tmp_path) -> str:
    """reid-search build's one line for a label CSV; the model does not exist, so a run
    that got past the labels would fail on it instead."""
    out = tmp_path / "g.npz"
    args = ["build", "--images", str(images), "--labels", str(csv_path), "--model", str(tmp_path / "none.pt")]
    assert search_cli.main([*args, "--out", str(out)]) == 2
    assert not out.exists()
    return one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            "images/a.jpg,1,c\u00b2\n",
            "line 2: camera: a camera is written c1, c2, ... (digits 0-9, at most c99999) as in Market-1501 file "
            "names; got 'c²'",
        ),
        (
            "images/a.jpg,1,c\x001\n",
            "line 2: camera: a camera is written c1, c2, ... (digits 0-9, at most c99999) as in Market-1501 file "
            "names; got 'c\\x001'",
        ),
        (
            "images/a.jpg,18446744073709551615,c1\n",
            "line 2: pid: 18446744073709551615 is outside -1..9223372036854775807",
        ),
        ("images/a.jpg,\u0663,c1\n", "line 2: pid: expected an integer written with the digits 0-9, got '٣'"),
        ("images/a.jpg,1_000,c1\n", "line 2: pid: expected an integer written with the digits 0-9, got '1_000'"),
        ("images/a.jpg,-7,c1\n", "line 2: pid: -7 is outside -1..9223372036854775807"),
        ("images/a.jpg,1,c1\nimages/b.jpg,2\n", "line 3: expected 3 fields, as in the header"),
        ("images/a.jpg,1,c1,extra\n", "line 2: expected 3 fields, as in the header"),
        (
            "images/a.jpg,1,c1\nimages/b.jpg,2,c2\nimages/a.jpg,1,c2\n",
            "line 4: images/a.jpg is labelled again, differently (first on line 2)",
        ),
    ],
)
def test_a_bad_label_row_is_one_line_naming_it(capsys, images, tmp_path, rows, message):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,pid,camera\n" + rows, encoding="utf-8")
    assert _build_error(capsys, images, csv_path, tmp_path) == f"error: {csv_path} {message}"


def test_a_repeated_row_that_agrees_is_accepted(tmp_path, images):
    from reid_srdl.search.labels import csv_labels

    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,pid,camid\nimages/a.jpg,3,1\nimages/b.jpg,4,0\nimages/a.jpg,3,1\n")
    pids, camids = csv_labels(str(csv_path), [str(images / "a.jpg"), str(images / "b.jpg")])
    assert pids.tolist() == [3, 4] and camids.tolist() == [1, 0]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"path,pid,camera\nimages/a.jpg,1,c1\xff\n", "is not UTF-8 text (byte 0xff at offset 33)"),
        (
            b'path,pid,camera\n"' + b"x" * 200_000 + b'",1,c1\n',
            "is not a readable CSV file: field larger than field limit (131072)",
        ),
    ],
)
def test_a_label_file_that_is_not_csv_text_is_one_line(capsys, images, tmp_path, content, message):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(content)
    assert _build_error(capsys, images, csv_path, tmp_path) == f"error: {csv_path} {message}"


# ----------------------------------------------------------------------------- calibration
GOOD = {
    "far": 0.01,
    "threshold": 0.8,
    "achieved_far": 0.0,
    "tar": 0.5,
    "dir": 0.5,
    "num_known_probes": 4,
    "num_impostor_probes": 3,
    "source": "split",
    "created": "2026-01-01T00:00:00+00:00",
    "model": None,
}
IMPOSTOR = np.array([0.9, 1.2, 1.0])


def test_a_stored_calibration_reads_back():
    c = Calibration.from_meta(dict(GOOD), IMPOSTOR, "g.npz")
    assert (c.threshold, c.far, c.num_impostor_probes) == (0.8, 0.01, 3)
    assert c.impostor.tolist() == [0.9, 1.0, 1.2]


@pytest.mark.parametrize(
    "change, message",
    [
        # A NaN threshold made every "distance <= threshold" false: no one ever matched.
        (dict(threshold=math.nan), "threshold: expected a finite number, got nan"),
        (dict(threshold=math.inf), "threshold: expected a finite number, got inf"),
        (dict(threshold="0.8"), "threshold: expected a finite number, got '0.8'"),
        (dict(far=math.nan), "far: expected a finite number in 0.0..1.0, got nan"),
        (dict(far=2.0), "far: expected a finite number in 0.0..1.0, got 2.0"),
        (dict(tar=-0.5), "tar: expected a finite number in 0.0..1.0, got -0.5"),
        (dict(num_known_probes=True), "num_known_probes: expected an integer >= 0, got True"),
        (dict(num_impostor_probes=-3), "num_impostor_probes: expected an integer >= 0, got -3"),
        (dict(source=None), "source: expected a string of at most 100000 characters, got None"),
        (dict(model=[1]), "model: expected a mapping or nothing (null), got a list of 1 item(s)"),
        (dict(num_impostor_probes=5), "3 impostor distances, but num_impostor_probes is 5"),
    ],
)
def test_a_stored_calibration_with_a_bad_field_is_refused(change, message):
    with pytest.raises(SearchError) as e:
        Calibration.from_meta({**GOOD, **change}, IMPOSTOR, "g.npz")
    assert str(e.value) == f"g.npz: the stored calibration: {message}"


def test_missing_calibration_fields_and_bad_distances_are_named():
    meta = dict(GOOD)
    del meta["threshold"]
    with pytest.raises(SearchError, match="^g.npz: the stored calibration: missing threshold$"):
        Calibration.from_meta(meta, IMPOSTOR, "g.npz")
    with pytest.raises(SearchError, match="impostor distances must be a list of finite numbers$"):
        Calibration.from_meta(dict(GOOD), np.array([0.9, np.nan, 1.0]), "g.npz")
