"""The Milvus store's own promises: quoting (no filter injection), the second-process message
of Milvus Lite, the missing extra named, rows from a stranger checked, IVF/HNSW options."""

import numpy as np
import pytest
from store_helpers import Target, brute_force, gallery, has_pymilvus, run_python

from reid_srdl.search.stores import GalleryItem, SearchFilter, StoreError, open_store

pytestmark = pytest.mark.skipif(not has_pymilvus(), reason="pymilvus / milvus-lite not installed")


def test_quoting_by_hand():
    from reid_srdl.search.stores.milvus_store import DeleteRequest, delete_expr, filter_expr, quote

    assert quote('c1" or camera != "') == r'"c1\" or camera != \""'
    assert quote("a\\b") == r'"a\\b"'
    assert quote("c²") == '"c²"'
    with pytest.raises(StoreError, match="control character"):
        quote("c1\n")
    f = SearchFilter(cameras=("c1",), time_from=1.5, exclude_pid_camera=(3, 'x"y'), exclude_ids=(7, 9))
    assert filter_expr(f) == (
        '(camera in ["c1"]) and (timestamp is not null) and (timestamp >= 1.5) and '
        '(not (pid == 3 and camera == "x\\"y")) and (id not in [7, 9])'
    )
    assert filter_expr(SearchFilter(cameras=())) == "(id < 0)"
    assert delete_expr(DeleteRequest(camera="c\\", before=10.0)) == (
        '(camera == "c\\\\") and ((timestamp is not null and timestamp < 10.0))'
    )


def test_a_second_process_on_a_lite_file_gets_one_line(tmp_path):
    db = str(tmp_path / "g.db")
    with open_store(db, dim=4, create=True) as store:
        store.add(np.ones((1, 4), np.float32), [GalleryItem("a.jpg")])
        out = run_python(
            "from reid_srdl.search.stores import open_store, StoreError\n"
            f"try:\n    open_store({db!r})\nexcept StoreError as e:\n    print(e)\n"
        )
        assert out.returncode == 0, out.stderr
        line = out.stdout.strip()
        assert "\n" not in line and "milvus-lite server --data-dir" in line and "http://127.0.0.1:19530" in line
    # Closed here: the other process may open it now.
    out = run_python(f"from reid_srdl.search.stores import open_store\nprint(len(open_store({db!r})))")
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr


def test_missing_extra_is_named(tmp_path):
    # A process where pymilvus cannot be imported (as without the extra): the tool says which extra.
    out = run_python(
        "import sys\nsys.modules['pymilvus'] = None\nfrom reid_srdl.cli import search\n"
        f"sys.exit(search.main(['info', '--store', {str(tmp_path / 'g.db')!r}]))"
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert 'a Milvus gallery needs the milvus extra (pymilvus is missing): pip install -e ".[milvus]"' in out.stderr


def test_missing_gallery_and_foreign_collection(tmp_path, lite_server):
    with pytest.raises(StoreError, match="no gallery here"):
        open_store(str(tmp_path / "absent.db"))
    assert not (tmp_path / "absent.db").exists()  # nothing created by asking
    from pymilvus import MilvusClient

    c = MilvusClient(uri=lite_server, dedicated=True)
    c.create_collection("foreign", dimension=4)
    with pytest.raises(StoreError, match="not a reid_srdl gallery"):
        open_store(lite_server, collection="foreign")
    with pytest.raises(StoreError, match="no gallery collection 'nothing_here'"):
        open_store(lite_server, collection="nothing_here")
    with pytest.raises(StoreError, match="letters, digits"):
        open_store(lite_server, collection="a; drop")
    c.close()


@pytest.mark.parametrize(
    "field, value, message",
    [("timestamp", float("inf"), "timestamp"), ("camera", "c\u0007", "control character"), ("frame", -9, "frame")],
)
def test_rows_written_by_someone_else_are_checked(lite_server, field, value, message):
    import uuid

    from pymilvus import MilvusClient

    name = f"t{uuid.uuid4().hex[:10]}"
    with open_store(lite_server, collection=name, dim=4, create=True) as store:
        store.add(np.zeros((1, 4), np.float32), [GalleryItem("ok.jpg")])
        row = {"id": 5, "vector": [1.0, 0, 0, 0], "source": "x.jpg", "camera": "c1", "timestamp": 1.0, "frame": 1,
               "box": [-1, -1, -1, -1], "track": -1, "pid": -1, "crop": ""}  # fmt: skip
        row[field] = value
        c = MilvusClient(uri=lite_server, dedicated=True)
        c.insert(name, [row])
        c.close()
        with pytest.raises(StoreError, match=message) as e:
            store.search(np.ones((1, 4), np.float32), 2)
        assert name in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    "index", [{"kind": "IVF_FLAT", "nlist": 8, "nprobe": 8}, {"kind": "HNSW", "M": 8, "efConstruction": 64}]
)
def test_approximate_indexes_recall_and_filters(tmp_path, index):
    x, items, queries = gallery(800, 16, ids=30, seed=5)
    with open_store(str(tmp_path / "g.db"), dim=16, create=True, index=index) as store:
        store.add(x, items)
        assert store.index["kind"] == index["kind"]
        f = SearchFilter(cameras=("c1", 'c"2', "c\\3"))
        for flt in (None, f):
            h = store.search(queries, 10, [flt] * len(queries))
            for q in range(len(queries)):
                exp = brute_force(x, items, queries[q], None if flt is None else flt.admits)[0][:10]
                assert len(set(h.ids[q]) & set(exp)) >= 9  # probing every cell / a wide beam: near exact
                assert all(flt is None or flt.admits(it) for it in h.items[q])
    with pytest.raises(StoreError, match="created with the index"):
        open_store(str(tmp_path / "g.db"), index={"kind": "FLAT"})


def test_server_gallery_is_shared_by_uri(lite_server):
    a = Target("server", None, lite_server)
    with a.open(dim=4, create=True) as one, a.open() as two:
        one.add(np.eye(4, dtype=np.float32), [GalleryItem(f"{i}.jpg", camera="c1") for i in range(4)])
        assert len(two) == 4 and two.search(np.eye(4, dtype=np.float32)[:1], 1).items[0][0].source == "0.jpg"
        one.set_meta({"settings": {"height": 64}})
        assert two.get_meta()["settings"] == {"height": 64}
