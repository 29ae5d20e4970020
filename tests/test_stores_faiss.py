"""The folder store's own promises: IVF options, files from strangers read as bounded data,
leftovers of killed writes removed, crops deleted only inside the store, compaction erasing."""

import json
import os
import zipfile

import numpy as np
import pytest
from store_helpers import assert_same_ranking, brute_force, gallery, run_python

from reid_srdl.search.stores import DeleteRequest, GalleryItem, SearchFilter, StoreError, open_store
from reid_srdl.search.stores.faiss_store import FaissStore


def make(tmp_path, n=60, dim=8, **kw):
    x, items, queries = gallery(n, dim)
    store = open_store(str(tmp_path / "s"), dim=dim, create=True, **kw)
    store.add(x, items)
    return store, x, items, queries


# ----------------------------------------------------------------------------- IVF
def test_ivf_flat_probing_every_cell_is_exact_and_survives_reopen(tmp_path):
    x, items, queries = gallery(600, 8, ids=30, seed=2)
    spec = {"kind": "ivf_flat", "nlist": 8, "nprobe": 8, "train_size": 300}
    with open_store(str(tmp_path / "s"), dim=8, create=True, index=spec) as store:
        store.add(x[:200], items[:200])
        assert not store._table.trained  # below train_size: exact flat search meanwhile
        store.add(x[200:], items[200:])
        assert store._table.trained
        f = SearchFilter(cameras=("c1", 'c"2'))
        h = store.search(queries, 10, [f] * len(queries))
        for q in range(len(queries)):
            assert_same_ranking(h.ids[q], h.distances[q], *brute_force(x, items, queries[q], f.admits), 10)
    code = (
        "import numpy as np\nfrom reid_srdl.search.stores import open_store\n"
        f"s = open_store({str(tmp_path / 's')!r})\nq = np.load({str(tmp_path / 'q.npy')!r})\n"
        "print(s._table.trained, s.search(q, 10).ids.tolist())"
    )
    np.save(tmp_path / "q.npy", queries)
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    trained, ids = out.stdout.split(" ", 1)
    assert trained == "True"  # the other process rebuilt the IVF index from the stored training
    assert json.loads(ids) == open_store(str(tmp_path / "s")).search(queries, 10).ids.tolist()


def test_ivf_pq_recall_against_exact(tmp_path):
    x, items, queries = gallery(1200, 16, ids=40, seed=4)
    spec = {"kind": "ivf_pq", "nlist": 8, "nprobe": 8, "pq_m": 4, "pq_nbits": 4, "rescore": 8, "train_size": 600}
    with open_store(str(tmp_path / "s"), dim=16, create=True, index=spec) as store:
        store.add(x, items)
        assert store._table.trained and store.index == dict(spec)
        h = store.search(queries, 10)
        recall = np.mean([len(set(h.ids[q]) & set(brute_force(x, items, queries[q])[0][:10])) / 10 for q in range(6)])
        assert recall >= 0.9  # PQ proposes 80 candidates, exact float64 distances rank them
        exact = brute_force(x, items, queries[0])
        by_id = dict(zip(exact[0].tolist(), exact[1]))
        np.testing.assert_allclose(h.distances[0], [by_id[i] for i in h.ids[0]], atol=1e-9)  # re-scored exactly
    with pytest.raises(StoreError, match="created with the index"):
        open_store(str(tmp_path / "s"), index={"kind": "flat"})


# ----------------------------------------------------------------------------- files from strangers
def _gen(store_dir):
    m = json.load(open(os.path.join(store_dir, "manifest.json")))
    return os.path.join(store_dir, f"gen-{m['generation']:06d}"), m


def _rewrite_manifest(store_dir, **changes):
    path = os.path.join(store_dir, "manifest.json")
    m = json.load(open(path))
    m.update(changes)
    open(path, "w").write(json.dumps(m))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dim": 10**9}, "dim"),
        ({"dim": "8"}, "dim"),
        ({"events": -1}, "events"),
        ({"index": {"kind": "hnsw"}}, "index kind"),
        ({"trained": "yes"}, "trained"),
        ({"format": "something else"}, "not a reid_srdl.faiss_store/1 manifest"),
        ({"events": 5}, "000002.vec.npy is missing"),  # the manifest promises events that are not there
    ],
)
def test_a_bad_manifest_is_one_line(tmp_path, change, message):
    make(tmp_path)[0].close()
    _rewrite_manifest(str(tmp_path / "s"), **change)
    with pytest.raises(StoreError, match=message) as e:
        open_store(str(tmp_path / "s"))
    assert "\n" not in str(e.value)


def _rewrite_items(store_dir, member, array, compress=False):
    gen, _ = _gen(store_dir)
    path = os.path.join(gen, "000001.items.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[member] = array
    (np.savez_compressed if compress else np.savez)(path, **arrays)


@pytest.mark.parametrize(
    "member, value, message",
    [
        ("ids", np.zeros(60, dtype=np.int64), "distinct ids"),
        ("timestamps", np.full(60, np.inf), "timestamps"),
        ("frames", np.full(60, -5, dtype=np.int64), "frames"),
        ("boxes", np.full((60, 4), 2**40, dtype=np.int64), "boxes"),
        ("pids", np.zeros(59, dtype=np.int64), "pids"),
        ("cameras", np.frombuffer(json.dumps(["c\u0000"] * 60).encode(), np.uint8), "control character"),
        ("cameras", np.frombuffer(json.dumps([1] * 60).encode(), np.uint8), "list of 60 strings"),
        ("sources", np.frombuffer(b"[[[[" * 100 + b"]]]]" * 100, np.uint8), "nested"),
        ("pids", np.zeros(60, dtype=np.float64), "expected 1-D <i8"),
        ("pids", np.array([None] * 60, dtype=object), "object|pickle|Object"),
    ],
)
def test_a_bad_segment_is_one_line_naming_file_and_field(tmp_path, member, value, message):
    make(tmp_path)[0].close()
    _rewrite_items(str(tmp_path / "s"), member, value)
    with pytest.raises(StoreError, match=message) as e:
        open_store(str(tmp_path / "s"))
    assert "000001.items.npz" in str(e.value) and "\n" not in str(e.value)


def test_a_compressed_or_lying_member_is_refused_before_allocating(tmp_path):
    make(tmp_path)[0].close()
    store_dir = str(tmp_path / "s")
    _rewrite_items(store_dir, "pids", np.zeros(60, np.int64), compress=True)
    with pytest.raises(StoreError, match="compressed"):
        open_store(store_dir)
    # A member whose header declares 10**12 values but holds 8 bytes; opened in a process
    # limited to 1 GB of address space: refused by its size, never allocated.
    gen, _ = _gen(store_dir)
    path = os.path.join(gen, "000001.items.npz")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["pids"] = np.zeros(60, np.int64)
    np.savez(path, **arrays)
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.int64))
    header["shape"] = (10**12,)
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    members["pids.npy"] = buf.getvalue() + b"\0" * 8
    with zipfile.ZipFile(path, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
    code = (
        "import resource\nresource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "from reid_srdl.search.stores import open_store, StoreError\n"
        f"try:\n    open_store({store_dir!r})\nexcept StoreError as e:\n    print('refused:', e)\n"
    )
    out = run_python(code)
    assert out.returncode == 0 and "refused:" in out.stdout and "declares (1000000000000,)" in out.stdout, out.stderr


def test_bad_vectors_file_and_bad_meta(tmp_path):
    store, *_ = make(tmp_path)
    store.set_meta({"model": None, "settings": {"height": 64, "width": 32}})
    store.close()
    store_dir = str(tmp_path / "s")
    gen, m = _gen(store_dir)
    meta_path = os.path.join(store_dir, f"meta-{m['meta']:06d}.json")
    for bad, message in [
        ({"settings": {"height": 20000}}, "height"),
        ({"calibration": {"threshold": float("nan"), "far": 0.01}}, "calibration"),
        ({"model": "a string"}, "model"),
    ]:
        open(meta_path, "w").write(json.dumps(bad))
        with open_store(store_dir) as s, pytest.raises(StoreError, match=message):
            s.get_meta()
    vec = np.load(os.path.join(gen, "000001.vec.npy"))
    vec[3, 1] = np.nan
    np.save(os.path.join(gen, "000001.vec.npy"), vec)
    with pytest.raises(StoreError, match="NaN"):
        open_store(store_dir)
    np.save(os.path.join(gen, "000001.vec.npy"), vec[:, :5])
    with pytest.raises(StoreError, match="shape"):
        open_store(store_dir)


def test_leftovers_of_a_killed_write_are_removed_at_open(tmp_path):
    store, x, items, _ = make(tmp_path)
    store.close()
    store_dir = str(tmp_path / "s")
    gen, m = _gen(store_dir)
    leftovers = [
        os.path.join(store_dir, ".manifest.json.abc123.tmp"),
        os.path.join(gen, ".000002.vec.npy.xyz.tmp"),
        os.path.join(gen, "000002.vec.npy"),  # written, but the manifest never said so
        os.path.join(gen, "000002.items.npz"),
        os.path.join(store_dir, "gen-000000"),
    ]
    for path in leftovers[:-1]:
        open(path, "wb").write(b"x" * 1000)
    os.makedirs(leftovers[-1])
    with open_store(store_dir) as again:
        assert not any(os.path.exists(p) for p in leftovers)
        assert len(again) == len(items)
        assert again.add(x[:1], [GalleryItem("next.jpg")]) == 1  # event 2 written afresh


def test_delete_removes_own_crops_only(tmp_path):
    x, items, _ = gallery(4, 8)
    with open_store(str(tmp_path / "s"), dim=8, create=True) as store:
        os.makedirs(store.crop_dir)
        inside = os.path.join(store.crop_dir, "a.jpg")
        relative = os.path.join(store.crop_dir, "b.jpg")
        outside = str(tmp_path / "not_ours.jpg")  # a marker a hostile item points at
        for p in (inside, relative, outside):
            open(p, "wb").write(b"jpeg")
        crops = [inside, "crops/b.jpg", outside, None]
        store.add(x, [GalleryItem(f"s{i}", pid=1, crop=c) for i, c in enumerate(crops)])
        removed = store.delete(DeleteRequest(pid=1))
        assert len(removed) == 4
        assert not os.path.exists(inside) and not os.path.exists(relative) and os.path.exists(outside)


def test_compact_erases_deleted_items_from_disk(tmp_path):
    store, x, items, queries = make(tmp_path)
    with store:
        gone = store.delete(DeleteRequest(pid=3))
        assert gone
        secret = x[[i for i, it in enumerate(items) if it.pid == 3][0]].tobytes()
        store_dir = str(tmp_path / "s")

        def on_disk():
            blobs = b""
            for folder, _, files in os.walk(store_dir):
                for f in files:
                    blobs += open(os.path.join(folder, f), "rb").read()
            return blobs

        assert secret in on_disk()  # a tombstone hides it, the segment still holds it
        before = store.search(queries, 20)
        assert store.compact() == len(gone)
        assert secret not in on_disk()
        after = store.search(queries, 20)
        np.testing.assert_array_equal(after.ids, before.ids)
        assert len(open_store(store_dir)) == len(items) - len(gone)


def test_create_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(StoreError, match="not an empty folder"):
        FaissStore(str(tmp_path / "photos"), dim=8, create=True)
    with pytest.raises(StoreError, match="no gallery store here"):
        open_store(str(tmp_path / "absent"))
