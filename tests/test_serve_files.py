"""The server's files: images served only from the operator's folders (a stranger's gallery
listing /etc/passwd serves nothing), no upload left behind by a rejected or failed add, the
partial files of a killed server removed at the next start (a live writer's kept), one
writer per .npz gallery."""

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (test extra)")

from serve_helpers import add_files, build_gallery, files_in, owner, serve, upload

from reid_srdl.core.files import temp_file_beside
from reid_srdl.search import ReIDSearcher
from reid_srdl.serve.housekeeping import GalleryInUseError, GalleryLock, clean_up_after_a_killed_server

pytestmark = pytest.mark.usefixtures("single_thread")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def gallery(tiny_market_root, tmp_path):
    return build_gallery(tiny_market_root, tmp_path)


def _extend(gallery, extra_paths):
    """The gallery file with items whose paths are ``extra_paths`` appended (a stranger's edit)."""
    s = ReIDSearcher.load(gallery["file"])
    n = len(extra_paths)
    s.add(s.features[:n], [1] * n, [0] * n, extra_paths)
    s.save(gallery["file"])
    return 36  # index of the first appended item


def test_a_gallery_listing_system_files_serves_none_of_them(gallery, tmp_path):
    elsewhere = tmp_path.parent / (tmp_path.name + "_elsewhere")
    elsewhere.mkdir()
    photo = elsewhere / "0001_c1s1_000001_00.jpg"
    shutil.copy(gallery["paths"][0], photo)
    not_image = tmp_path / "final.pt"  # inside the gallery's own folder, but not an image
    first = _extend(gallery, ["/etc/passwd", "/etc/hostname", str(photo), str(not_image), "/nonexistent.jpg"])
    client, app = serve(gallery)
    assert app.state.service.images_outside_roots() == 5
    for i in range(first, first + 5):
        r = client.get(f"/image/{i}")
        assert r.status_code == 403 and b"root:" not in r.content, i
        assert "not an image file inside the folders" in r.json()["error"]
    ok = client.get("/image/0")
    assert ok.status_code == 200 and ok.content == open(gallery["paths"][0], "rb").read()
    # The operator names the other folder: its image is served, the system files still are not.
    client, app = serve(gallery, image_roots=[str(tmp_path), str(elsewhere)])
    assert client.get(f"/image/{first + 2}").content == photo.read_bytes()
    assert client.get(f"/image/{first}").status_code == 403 and app.state.service.images_outside_roots() == 4
    # Not even an operator's root of "/" serves a file that is not an image.
    client, _ = serve(gallery, image_roots=["/"])
    assert client.get(f"/image/{first}").status_code == 403


def test_paths_in_the_url_and_symlinks_out_are_refused(gallery, tmp_path):
    client, app = serve(gallery)
    for url in ("/image/..%2F..%2Fetc%2Fpasswd", "/image/../../etc/passwd", "/image/-1", "/image/36", "/image/%2Fetc"):
        r = client.get(url)
        assert r.status_code in (400, 404) and b"root:" not in r.content, url
    secret = tmp_path.parent / (tmp_path.name + "_secret.jpg")
    shutil.copy(gallery["paths"][1], secret)
    link = os.path.join(os.path.dirname(gallery["paths"][0]), "0001_c1s1_000001_00.jpg")
    os.symlink(secret, link)  # inside the gallery folder, pointing out of it
    s = app.state.service.searcher
    s.add(s.features[:1], [1], [0], [link])
    assert client.get(f"/image/{len(s) - 1}").status_code == 403


def test_a_rejected_add_leaves_no_files(gallery):
    client, app = serve(gallery, writes=True)
    good = add_files(gallery["queries"][:2])
    bad = [("files", ("broken.jpg", b"not an image", "image/jpeg"))]
    r = client.post("/gallery", files=good + bad, headers=owner())
    assert r.status_code == 415 and r.json()["error"].startswith("broken.jpg: not a readable image (cannot identify")
    r = client.post("/gallery", files=good, data={"cameras": "c1,c\x01"}, headers=owner())
    assert r.status_code == 400 and "cameras: camera: contains the control character" in r.json()["error"]
    assert files_in(gallery["tmp"] / "uploads") == [] and len(ReIDSearcher.load(gallery["file"])) == 36


def test_a_failed_add_takes_back_what_it_wrote(gallery, monkeypatch):
    """The model or the save fails midway: no upload stays, memory and file hold the old gallery."""
    client, app = serve(gallery, writes=True)
    service = app.state.service
    searcher = service.searcher

    def full_disk(path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(searcher, "save", full_disk)
    r = client.post("/gallery", files=add_files(gallery["queries"][:2]), headers=owner())
    assert r.status_code == 507 and "could not be saved (no space left on device); nothing was added" in r.text
    assert files_in(gallery["tmp"] / "uploads") == []
    assert len(service.searcher) == 36 and len(ReIDSearcher.load(gallery["file"])) == 36
    hit = client.post("/search", files=upload(gallery["queries"][0]), data={"k": "1"}).json()["hits"][0]
    assert hit["index"] < 36  # the rolled-back item is not found
    monkeypatch.setattr(service.searcher, "embed_pil", lambda images: np.zeros((len(images), 3), np.float32))
    r = client.post("/gallery", files=add_files(gallery["queries"][:1]), headers=owner())
    assert r.status_code == 400 and "3-dimensional" in r.json()["error"] and files_in(gallery["tmp"] / "uploads") == []


def test_partial_uploads_of_a_killed_server_are_removed_a_live_ones_are_not(gallery):
    """Temporary files of the upload folder nobody holds locked are a killed server's; one
    that a writer holds (as write_durable does until its rename) is a write in progress."""
    import fcntl

    upload_dir = str(gallery["tmp"] / "uploads")
    os.makedirs(upload_dir)
    stale = temp_file_beside(os.path.join(upload_dir, "ab" * 16 + ".png"))
    live = temp_file_beside(os.path.join(upload_dir, "cd" * 16 + ".png"))
    kept = [os.path.join(upload_dir, name) for name in ("ef" * 16 + ".png", "notes.tmp")]
    for p in [stale, live] + kept:
        with open(p, "wb") as f:
            f.write(b"\0" * 1000)
    with open(live, "rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        assert clean_up_after_a_killed_server(gallery["file"], upload_dir, writer=False) is None
    assert not os.path.exists(stale) and os.path.exists(live) and all(os.path.exists(p) for p in kept)


def test_one_writer_per_npz_gallery(gallery):
    upload_dir = str(gallery["tmp"] / "uploads")
    first = clean_up_after_a_killed_server(gallery["file"], upload_dir, writer=True)
    assert isinstance(first, GalleryLock)
    with pytest.raises(GalleryInUseError, match="another server is adding images to"):
        clean_up_after_a_killed_server(gallery["file"], upload_dir, writer=True)
    assert clean_up_after_a_killed_server(gallery["file"], upload_dir, writer=False) is None  # readers may start
    first.release()
    second = clean_up_after_a_killed_server(gallery["file"], upload_dir, writer=True)
    assert second is not None
    second.release()


def test_a_server_killed_mid_save_leaves_a_partial_that_the_next_start_removes(gallery):
    """A real process saves the gallery through the server's code and is killed (SIGKILL) after
    the temporary file is complete and before the rename: the next start removes it."""
    script = textwrap.dedent(
        f"""
        import os, sys, time
        sys.path.insert(0, {REPO!r})
        from reid_srdl.search import ReIDSearcher
        s = ReIDSearcher.load({gallery["file"]!r})
        s.add(s.features, s.pids, s.camids, [p + ".copy.jpg" for p in s.paths])  # twice the size
        def stall(src, dst):
            print(src, flush=True)
            time.sleep(120)
        os.replace = stall
        s.save({gallery["file"]!r})
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        partial = proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert os.path.isfile(partial) and os.path.getsize(partial) > os.path.getsize(gallery["file"])
    assert os.path.basename(partial).startswith(".g.npz.") and partial.endswith(".tmp")
    client, app = serve(gallery)  # loading the gallery, as the server does at start-up
    assert not os.path.exists(partial) and len(app.state.service.searcher) == 36
