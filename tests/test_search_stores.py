"""ReIDSearcher over stores (store= wherever a gallery is taken), .npz galleries from
strangers, conversion, and reid-search's store commands (delete, prune, convert)."""

import json
import os
import time
from dataclasses import replace

import numpy as np
import pytest
from search_helpers import ColourNet, colour_images
from store_helpers import brute_force, gallery

from reid_srdl.core.limits import LimitExceededError
from reid_srdl.search import ReIDSearcher
from reid_srdl.search.decisions import keep_hits
from reid_srdl.search.gallery import GalleryMismatchError
from reid_srdl.search.stores import GalleryItem, StoreError, open_store
from reid_srdl.search.stores.convert import convert
from reid_srdl.search.stores.npz_store import NpzStore

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def images(tmp_path):
    return colour_images(str(tmp_path))


def test_from_images_into_a_store_then_load_it_anywhere(target, images):
    net = ColourNet(4)
    # A folder or .db by its path (created at the first add); a server collection as a store object.
    store = target.open(dim=4, create=True) if target.engine == "server" else target.spec["path_or_uri"]
    s = ReIDSearcher.from_images(net, images, [1, 2, 3, 1, 2], [0, 0, 1, 1, 2], store=store, height=16, width=8)
    assert len(s) == 5 and s.meta["settings"]["height"] == 16
    s.close()
    again = ReIDSearcher.load(store=target.open(), model=net)  # the recorded settings are the defaults
    (r,) = again.search(images[3], k=2)
    assert r.paths[0] == images[3] and r.items[0].camera == "c2" and r.camids.tolist()[0] == 1
    assert r.distances[0] == pytest.approx(0.0, abs=1e-5)
    # A query picked from the gallery leaves that very item out.
    (picked,) = again.search(again.store.vectors([int(r.indices[0])]), k=2, exclude_ids=[int(r.indices[0])])
    assert int(r.indices[0]) not in picked.indices.tolist() and len(picked) == 2
    with pytest.raises(GalleryMismatchError, match="was built by"):
        ReIDSearcher.load(store=again.store, model=ColourNet(4, seed=1))
    # Adding more images with another model is refused before anything is embedded.
    with pytest.raises(GalleryMismatchError, match="was built by"):
        ReIDSearcher.from_images(ColourNet(4, seed=1), images, store=again.store, height=16, width=8)
    # The same images again: duplicates skipped, counted.
    assert again.add_images(images[:2]) == images[:2] and len(again) == 5
    again.close()


def test_metadata_filters_and_delete_through_the_facade(target):
    x, items, queries = gallery(80, 8)
    with target.open(dim=8, create=True) as store:
        store.add(x, items)
        s = ReIDSearcher(store=store)
        t0 = "2023-11-14T22:06:40Z"  # 1.7e9 - 400 s, as ISO 8601
        results = s.search(queries[:2], k=50, cameras=["c1", 'c"2'], time_from=t0, time_to=1.7e9 + 500)
        admit = lambda it: (
            it.camera in ("c1", 'c"2') and it.timestamp is not None and 1.7e9 - 400 <= it.timestamp <= 1.7e9 + 500
        )
        exp_ids, exp_d = brute_force(x, items, queries[0], admit)
        assert results[0].indices.tolist() == exp_ids.tolist()
        hit = results[0].to_dict()["hits"][0]
        first = next(it for it in items if it.id == exp_ids[0])
        assert (hit["camera"], hit["timestamp"], hit["frame"], hit["source"]) == (
            first.camera, first.timestamp, first.frame, first.source)  # fmt: skip
        assert hit["time"].startswith("2023-11-14T") and hit["time"].endswith("+00:00")
        with pytest.raises(StoreError, match="not an ISO 8601 time"):
            s.search(queries[:1], cameras=["c1"], time_from="yesterday")
        removed = s.delete(pid=2)
        assert removed and all(it.pid == 2 for it in removed)
        assert not any(it.pid == 2 for r in s.search(queries, k=80) for it in r.items)


def test_keep_hits_decides_again():
    s = ReIDSearcher(np.array([[0.0], [1.0], [3.0]]), [1, 2, 3], [0, 0, 1])
    (r,) = s.search(np.array([0.0]), k=3, threshold=0.5)
    assert r.decision == "match"
    left = keep_hits(r, r.indices != 0, k=1)
    assert left.indices.tolist() == [1] and left.decision == "no match" and left.accepted.tolist() == [False]


def test_calibration_is_stored_with_the_store_and_seen_by_another_opening(tmp_path):
    g, g_pids, g_cams = [[0.0], [2.0], [6.0], [9.0], [-1.0]], [1, 2, 1, 3, 0], [1, 1, 0, 1, 2]
    q, q_pids, q_cams = [[1.0], [5.0], [7.0], [12.0]], [1, 2, 1, 4], [0, 0, 2, 0]
    store = open_store(str(tmp_path / "s"), dim=1, create=True)
    s = ReIDSearcher(store=store)
    s.add(np.asarray(g, np.float32), g_pids, g_cams, [f"g{i}.jpg" for i in range(5)])
    cal = s.calibrate(q, q_pids, q_cams, far=0.5)
    assert cal.threshold == 1.0 and cal.impostor.tolist() == [1.0, 1.0, 2.0, 3.0]  # tests/test_search_gallery.py
    other = ReIDSearcher(store=str(tmp_path / "s"))
    assert other.calibration.threshold == 1.0 and other.search([[4.5]], k=1, far=0.75)[0].threshold == 2.0


# ----------------------------------------------------------------------------- .npz from strangers
def _npz(path, meta=None, **arrays):
    base = {"features": np.eye(3, dtype=np.float32), "pids": np.arange(3), "camids": np.zeros(3, np.int64)}
    base.update(arrays)
    if meta is not None:
        base["meta"] = np.array(json.dumps({"format": "reid_srdl.gallery/1", **meta}))
    np.savez(path, **base)
    return str(path)


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"calibration": {"threshold": float("nan"), "far": 0.01}}, "calibration"),
        ({"settings": {"height": 20000}}, "height"),
        ({"model": [1, 2]}, "model"),
    ],
)
def test_a_hostile_npz_gallery_is_one_line(tmp_path, meta, message):
    path = _npz(tmp_path / "g.npz", meta)
    # A size past core.limits is a LimitExceededError, any other bad field a StoreError: both
    # are the project's one-line errors.
    with pytest.raises((StoreError, LimitExceededError), match=message) as e:
        ReIDSearcher.load(path)
    assert "g.npz" in str(e.value) and "\n" not in str(e.value)


def test_npz_meta_bombs_are_refused_by_size(tmp_path, monkeypatch):
    from reid_srdl.search.stores import npz_store

    deep = str(tmp_path / "deep.npz")
    np.savez(deep, features=np.eye(3, dtype=np.float32), pids=np.arange(3), camids=np.zeros(3, np.int64),
             meta=np.array('{"format": "reid_srdl.gallery/1", "model": ' + "[" * 5000 + "]" * 5000 + "}"))  # fmt: skip
    with pytest.raises(StoreError, match="nested|deep"):
        ReIDSearcher.load(deep)
    # A compressed member that unpacks to more than the limit (lowered here to 1 MB, so the
    # bomb stays small: 4 MB of zeros in a few kB) is refused by its declared size, unread.
    monkeypatch.setattr(npz_store, "MAX_IMPOSTOR_BYTES", 1 << 20)
    bomb = str(tmp_path / "bomb.npz")
    np.savez_compressed(bomb, features=np.eye(3, dtype=np.float32), pids=np.arange(3), camids=np.zeros(3, np.int64),
                        calibration_impostor=np.zeros(1 << 19))  # fmt: skip
    assert os.path.getsize(bomb) < 50_000
    with pytest.raises(StoreError, match="calibration_impostor: 4194432 bytes, more than the limit of 1048576"):
        NpzStore.load(bomb)


@pytest.mark.parametrize("target", ["faiss", "lite"], indirect=True)
def test_npz_opens_read_only_as_a_store_and_converts(tmp_path, target):
    path = str(tmp_path / "old.npz")
    s = ReIDSearcher(np.eye(3, dtype=np.float32), [5, 6, 7], [0, 1, 2])  # no paths
    s.set_calibration(None)
    s.save(path)
    with open_store(path) as old:
        with pytest.raises(StoreError, match="read-only.*convert"):
            old.add(np.eye(3, dtype=np.float32)[:1], [GalleryItem("x.jpg")])
        assert convert(old, target.spec["path_or_uri"]) == 3
        assert convert(old, target.spec["path_or_uri"]) == 3  # again: an interrupted convert is finished, not doubled
    new = ReIDSearcher.load(target.spec["path_or_uri"])
    q = np.array([[0.9, 0.1, 0.0]], np.float32)
    a, b = s.search(q, k=3)[0], new.search(q, k=3)[0]
    np.testing.assert_allclose(a.distances, b.distances, atol=1e-6)
    assert a.pids.tolist() == b.pids.tolist() and [it.source for it in b.items][0] == f"{path}#0"
    new.close()


# ----------------------------------------------------------------------------- reid-search
def run(capsys, *argv):
    from reid_srdl.cli import search as cli

    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _listed(out: str) -> int:
    return sum(line.startswith("deleted ") for line in out.splitlines())


def test_cli_delete_prune_convert_on_a_store(tmp_path, capsys):
    x, items, _ = gallery(40, 8)
    now = time.time()
    ages = [86400 * (i % 50) - 3600 for i in range(len(items))]  # 0..49 days, an hour short of each
    items = [replace(it, timestamp=None if it.timestamp is None else now - age) for it, age in zip(items, ages)]
    path = str(tmp_path / "s")
    with open_store(path, dim=8, create=True) as store:
        store.add(x, items)
    code, out, _ = run(capsys, "delete", "--store", path, "--pid", 3)
    expected = [it for it in items if it.pid == 3]
    assert code == 0 and _listed(out) == len(expected) and f"{len(expected)} item(s) deleted" in out
    code, out, _ = run(capsys, "prune", "--store", path, "--older-than", "30d", "--compact")
    old = [it for it in items if it.pid != 3 and it.timestamp is not None and it.timestamp < now - 30 * 86400]
    assert (
        code == 0 and _listed(out) == len(old) and f"{len(expected) + len(old)} erased from disk" in out
    )  # both deletes
    assert len(open_store(path)) == 40 - len(expected) - len(old)
    code, _, err = run(capsys, "delete", "--store", path, "--before", "last tuesday")
    assert code == 2 and "not an ISO 8601 time" in err and err.count("\n") == 1
    code, _, err = run(capsys, "prune", "--store", path, "--older-than", "30 days")
    assert code == 2 and "30d, 12h" in err
    code, _, err = run(capsys, "delete", "--store", str(tmp_path / "absent"), "--pid", 1)
    assert code == 2 and "no gallery store here" in err
    code, out, err = run(capsys, "prune", "--store", str(tmp_path / "absent"), "--older-than", "30d")
    assert code == 2 and "no gallery store here" in err and out == ""  # nothing printed before the error
    npz = _npz(tmp_path / "old.npz", {"model": None}, paths=np.array(["a.jpg", "b.jpg", "c.jpg"]))
    code, out, _ = run(capsys, "convert", npz, "--store", tmp_path / "new")
    assert code == 0 and "3 items" in out
    code, out, _ = run(capsys, "info", "--store", tmp_path / "new", "--json")
    info = json.loads(out)
    assert info["images"] == 3 and info["engine"] == "faiss" and info["cameras"] == ["c1"]
    code, _, err = run(capsys, "add", "--store", tmp_path / "new", "--model", "m.pt", "--images", tmp_path,
                       "--out", tmp_path / "x.npz")  # fmt: skip
    assert code == 2 and "--out writes .npz galleries" in err


def test_a_killed_save_leaves_no_temporary_file_after_the_next_load(tmp_path):
    import fcntl

    path = _npz(tmp_path / "g.npz", {"model": None})
    killed = tmp_path / ".g.npz.k1ll3d.tmp"  # what np.savez left when the saving process died
    killed.write_bytes(b"\0" * 4096)
    live = tmp_path / ".g.npz.l1v3.tmp"  # a save in progress in another process: it holds its lock
    live.write_bytes(b"\0" * 10)
    other = tmp_path / ".other.npz.x.tmp"  # another file's: not ours to judge
    other.write_bytes(b"x")
    with open(live, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert len(ReIDSearcher.load(path)) == 3
    assert not killed.exists() and live.exists() and other.exists()
