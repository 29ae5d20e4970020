"""One contract, every gallery store: the faiss folder, a Milvus Lite file, and a Milvus server
(``milvus-lite server`` on 127.0.0.1, started once per session).

Every search is compared with brute force over the same float32 vectors (ties as sets),
every filter with ``SearchFilter.admits``, every delete with the request's own predicate;
then reopening, other processes, threads, a kill -9 in the middle of an add, and equal
rankings and decisions across the engines.
"""

import json
import signal
import threading

import numpy as np
import pytest
from store_helpers import Target, assert_same_ranking, brute_force, gallery, has_pymilvus, popen_python, run_python

from reid_srdl.search.stores import DeleteRequest, GalleryItem, SearchFilter, StoreError
from reid_srdl.search.stores.records import delete_matches


def filled(target, n=120, dim=16, seed=0):
    x, items, queries = gallery(n, dim, seed=seed)
    store = target.open(dim=dim, create=True)
    assert store.add(x, items) == n
    return store, x, items, queries


def test_exact_search_is_brute_force(target):
    store, x, items, queries = filled(target)
    with store:
        for k in (1, 7, 200):  # 200: more than the gallery holds
            hits = store.search(queries, k)
            assert hits.distances.shape == (len(queries), k) and hits.ids.dtype == np.int64
            for q in range(len(queries)):
                exp_ids, exp_d = brute_force(x, items, queries[q])
                assert_same_ranking(hits.ids[q], hits.distances[q], exp_ids, exp_d, k)
                by_id = {it.id: it for it in items}
                assert hits.items[q] == [by_id[i] for i in hits.ids[q] if i >= 0]  # metadata round trip


def test_exact_ties_compared_as_sets(target):
    x = np.array([[1.0, 0], [-1.0, 0], [0, 1.0], [0, -1.0], [3.0, 0]], dtype=np.float32)
    items = [GalleryItem(f"tie{i}.jpg") for i in range(5)]
    with target.open(dim=2, create=True) as store:
        store.add(x, items)
        hits = store.search(np.zeros((1, 2), np.float32), 4)
        assert set(hits.ids[0].tolist()) == {it.id for it in items[:4]}
        np.testing.assert_allclose(hits.distances[0], [1.0, 1.0, 1.0, 1.0], atol=1e-12)


FILTERS = [
    SearchFilter(cameras=('c1" or camera != "',)),  # an injection attempt is only a camera name
    SearchFilter(cameras=("c\\3", 'c"2')),
    SearchFilter(cameras=()),  # no camera at all: nothing
    SearchFilter(exclude_cameras=("c1", "")),
    SearchFilter(time_from=1.7e9 + 300, time_to=1.7e9 + 900),  # unknown times never admitted
    SearchFilter(time_to=1.7e9 + 200.0),
    SearchFilter(exclude_pid_camera=(3, "c1")),
    SearchFilter(exclude_pid_camera=(-1, "c1")),  # an unknown pid excludes nothing
    SearchFilter(cameras=("c²", "c'4"), time_from=1.7e9, exclude_pid_camera=(5, "c²")),
]


def test_every_filter_is_admits(target):
    store, x, items, queries = filled(target)
    with store:
        flist = FILTERS + [SearchFilter(exclude_ids=(items[3].id, items[10].id, 12345))]
        for f in flist:
            hits = store.search(queries[:2], 30, [f, None])
            exp_ids, exp_d = brute_force(x, items, queries[0], f.admits)
            assert_same_ranking(hits.ids[0], hits.distances[0], exp_ids, exp_d, 30)
            assert all(f.admits(it) for it in hits.items[0])
            all_ids, all_d = brute_force(x, items, queries[1])
            assert_same_ranking(hits.ids[1], hits.distances[1], all_ids, all_d, 30)  # per-query filters


DELETES = [
    DeleteRequest(pid=3),
    DeleteRequest(track=4),
    DeleteRequest(camera='c1" or camera != "'),  # a quote in a camera name is only a character
    DeleteRequest(before=1.7e9 + 400),  # items without a time stay
    DeleteRequest(camera="c\\3", before=1.7e9 + 800),  # both must hold
]


def test_deleted_items_are_never_found_again(target):
    store, x, items, queries = filled(target)
    left = list(range(len(items)))
    with store:
        for request in DELETES:  # one after the other, each checked against what is left
            expected = {items[i].id for i in left if delete_matches(request, items[i])}
            assert expected, request  # the data has some of each
            removed = store.delete(request)
            assert {it.id for it in removed} == expected
            left = [i for i in left if items[i].id not in expected]
            assert len(store) == len(left)
            hits = store.search(queries, len(items))
            assert not expected & set(hits.ids.ravel().tolist())
            assert store.get(sorted(expected)) == [None] * len(expected)
            assert store.delete(request) == []  # nothing left to delete
            exp_ids, exp_d = brute_force(x[left], [items[i] for i in left], queries[0])
            assert_same_ranking(hits.ids[0], hits.distances[0], exp_ids, exp_d, len(items))


def test_duplicates_are_skipped_and_counted(target):
    x, items, _ = gallery(30, 8)
    with target.open(dim=8, create=True) as store:
        assert store.add(x[:20], items[:20]) == 20
        assert store.add(x[10:], items[10:]) == 10  # 10 already there
        assert store.add(np.concatenate([x[:2], x[:2]]), items[:2] + items[:2]) == 0
        twice = [GalleryItem("new.jpg"), GalleryItem("new.jpg")]
        assert store.add(np.ones((2, 8), np.float32), twice) == 1  # within one batch too
        assert len(store) == 31


def test_reopen_keeps_items_and_meta(target):
    store, x, items, queries = filled(target)
    meta = {
        "model": {"kind": "reid_srdl", "architecture": {"name": "osnet", "feature_dim": 16}, "weights_sha256": "ab"},
        "settings": {"height": 256, "width": 128, "normalize": True},
        "calibration": {"far": 0.01, "threshold": 1.25, "achieved_far": 0.0, "tar": 0.9, "dir": 0.8,
                        "num_known_probes": 10, "num_impostor_probes": 10, "source": "s", "created": "t"},
        "calibration_impostor": [float(v) for v in np.linspace(0.5, 3, 5000)],  # several Milvus chunks
    }  # fmt: skip
    store.set_meta(meta)
    before = store.search(queries, 10)
    store.close()
    with target.open() as again:
        assert len(again) == len(items) and again.dim == 16
        after = again.search(queries, 10)
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_allclose(after.distances, before.distances, atol=1e-12)
        assert again.get_meta() == meta
        vecs = again.vectors([items[5].id, items[0].id])
        np.testing.assert_array_equal(vecs, x[[5, 0]])
        scanned = {it.id: v for vs, its in again.scan(batch_size=50) for v, it in zip(vs, its)}
        assert set(scanned) == {it.id for it in items}
        np.testing.assert_array_equal(scanned[items[7].id], x[7])
        with pytest.raises(StoreError, match="not 8|holds 16"):
            target.open(dim=8)


def test_bad_input_is_one_line(target):
    store, x, items, _ = filled(target, n=10, dim=4)
    with store:
        cases = [
            (lambda: store.add(x[:, :3], items), "3-dimensional"),
            (lambda: store.add(np.full((1, 4), np.nan, np.float32), items[:1]), "NaN"),
            (lambda: store.add(x[:1], [GalleryItem("a.jpg", camera="c1\n")]), "control character"),
            (lambda: store.add(x[:1], [GalleryItem("a.jpg", timestamp=float("inf"))]), "timestamp"),
            (lambda: store.add(x[:1], [GalleryItem("a.jpg", box=(0, 0, -3, 4))]), "width and height"),
            (lambda: store.add(x[:1], [GalleryItem("a.jpg", pid=2**70)]), "pid"),
            (lambda: store.search(x[:1], 0), "k"),
            (lambda: store.search(x[:1], 3, [SearchFilter(time_from=float("nan"))]), "time_from"),
            (lambda: store.delete(DeleteRequest()), "at least one criterion"),
            (lambda: store.set_meta({"calibration": {"threshold": float("nan")}}), "calibration"),
        ]
        for call, message in cases:
            with pytest.raises(StoreError, match=message) as e:
                call()
            assert "\n" not in str(e.value)
        assert len(store) == 10


def test_threads_add_while_others_search(target):
    x, items, queries = gallery(200, 8)
    store = target.open(dim=8, create=True)
    store.add(x[:40], items[:40])
    errors = []

    def search():
        try:
            for _ in range(15):
                h = store.search(queries, 5)
                assert (h.ids >= 0).all() and np.isfinite(h.distances).all()
        except Exception as e:  # collected and asserted below
            errors.append(e)

    def add():
        try:
            for s in range(40, 200, 20):
                store.add(x[s : s + 20], items[s : s + 20])
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=search) for _ in range(2)] + [threading.Thread(target=add)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with store:
        assert not errors and len(store) == 200
        exp_ids, exp_d = brute_force(x, items, queries[0])
        h = store.search(queries[:1], 10)
        assert_same_ranking(h.ids[0], h.distances[0], exp_ids, exp_d, 10)


# ----------------------------------------------------------------------------- processes
ADDER = """
import sys, numpy as np
from reid_srdl.search.stores import open_store, GalleryItem
spec = {spec}
store = open_store(**spec, dim=8, create=True)
rng = np.random.default_rng(1)
for b in range({batches}):
    store.add(rng.standard_normal(({size}, 8)).astype('float32'),
              [GalleryItem('p.mp4', frame=b * {size} + i, box=(0, 0, 8, 16)) for i in range({size})])
    print(b, flush=True)
"""


def _acked_ids(batches, size):
    return [GalleryItem("p.mp4", frame=b * size + i, box=(0, 0, 8, 16)).id for b in range(batches) for i in range(size)]


@pytest.mark.slow
@pytest.mark.parametrize("target", ["faiss", "server"], indirect=True)
def test_another_process_adds_and_deletes_while_this_one_searches(target):
    with target.open(dim=8, create=True) as store:
        proc = popen_python(ADDER.format(spec=repr(target.spec), batches=12, size=25))
        acked = -1
        for line in proc.stdout:
            acked = int(line)
            seen = len(store)  # a reader sees every acknowledged add at once
            assert seen >= 25 * (acked + 1)
            h = store.search(np.zeros((1, 8), np.float32), 5)
            assert (h.ids[0] >= 0).sum() == 5
        assert proc.wait(120) == 0, proc.stderr.read()
        assert acked == 11 and len(store) == 300
        ids = _acked_ids(12, 25)
        assert all(it is not None for it in store.get(ids))
        out = run_python(
            "from reid_srdl.search.stores import open_store, DeleteRequest\n"
            f"s = open_store(**{target.spec!r})\n"
            "print(len(s.delete(DeleteRequest(camera=''))))"  # the adder gave no camera: every item
        )
        assert out.returncode == 0, out.stderr
        assert int(out.stdout) == 300  # deleted by the other process, gone for this one
        assert len(store) == 0 and (store.search(np.zeros((1, 8), np.float32), 5).ids == -1).all()


@pytest.mark.slow
def test_kill9_during_adds_loses_no_acknowledged_item(target):
    proc = popen_python(ADDER.format(spec=repr(target.spec), batches=100000, size=50))
    acked = -1
    for line in proc.stdout:
        acked = int(line)
        if acked >= 6:
            break
    proc.send_signal(signal.SIGKILL)  # most likely in the middle of the next add
    proc.wait(30)
    assert acked >= 6
    with target.open() as store:
        n = len(store)
        assert 50 * (acked + 1) <= n <= 50 * (acked + 3)
        ids = _acked_ids(acked + 1, 50)
        assert all(it is not None for it in store.get(ids))
        assert store.add(np.ones((1, 8), np.float32), [GalleryItem("after.jpg")]) == 1  # and it still takes adds
        if target.engine == "faiss":  # the killed add's leftovers are gone
            import os

            names = [f for _, _, files in os.walk(target.spec["path_or_uri"]) for f in files]
            assert not [f for f in names if ".tmp" in f]
            manifest = json.load(open(os.path.join(target.spec["path_or_uri"], "manifest.json")))
            gen = os.path.join(target.spec["path_or_uri"], f"gen-{manifest['generation']:06d}")
            numbers = {int(f.split(".")[0]) for f in os.listdir(gen) if f[0].isdigit()}
            assert numbers == set(range(1, manifest["events"] + 1))


# ----------------------------------------------------------------------------- across engines
@pytest.mark.skipif(not has_pymilvus(), reason="pymilvus / milvus-lite not installed")
def test_rankings_and_decisions_equal_across_stores(tmp_path, lite_server):
    from reid_srdl.search import ReIDSearcher

    x, items, queries = gallery(150, 16, seed=3)
    searchers = []
    for engine in ("faiss", "lite", "server"):
        store = Target(engine, tmp_path / engine, lite_server).open(dim=16, create=True)
        store.add(x, items)
        searchers.append(ReIDSearcher(store=store))
    filters = dict(cameras=["c1", 'c"2', ""], time_from=1.7e9 + 50, exclude_ids=[items[4].id])
    nearest = searchers[0].search(queries, k=1)
    tau = float(np.median([r.nearest_distance for r in nearest]))  # some queries match, some do not
    runs = [[s.search(queries, k=10, threshold=tau, **opts) for opts in ({}, filters)] for s in searchers]
    for other in runs[1:]:
        for a_list, b_list in zip(runs[0], other):
            for a, b in zip(a_list, b_list):
                np.testing.assert_allclose(a.distances, b.distances, rtol=0, atol=1e-5)
                assert a.indices.tolist() == b.indices.tolist()  # no ties in this data
                assert a.decision == b.decision and a.accepted.tolist() == b.accepted.tolist()
                assert a.items == b.items
    assert {r.decision for r in runs[0][0]} == {"match", "no match"}
    for s in searchers:
        s.close()
