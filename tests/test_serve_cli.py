"""tools/serve.py: bad input is one line and exit code 2 before anything is served (a busy
port, a weak token, a missing image folder, a second writer); a real start prints the owner's
link, and the owner -- only the owner -- adds through it."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx is in the test extra")

from serve_helpers import build_gallery, files_in

from reid_srdl.cli import serve as serve_cli
from reid_srdl.serve.housekeeping import GalleryLock

pytestmark = pytest.mark.usefixtures("single_thread")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def gallery(tiny_market_root, tmp_path_factory):
    return build_gallery(tiny_market_root, tmp_path_factory.mktemp("cli"))


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        yield s.getsockname()[1]


def _run(capsys, argv):
    code = serve_cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _base(gallery, port):
    return ["--gallery", gallery["file"], "--model", gallery["model"], "--port", str(port)]


def test_a_busy_port_is_one_line_before_serving(gallery, busy_port, capsys, monkeypatch):
    loaded = []
    monkeypatch.setattr("reid_srdl.search.ReIDSearcher.load", lambda *a, **k: loaded.append(a))
    code, out, err = _run(capsys, _base(gallery, busy_port))
    assert code == 2 and out == "" and loaded == []  # found before the model is loaded
    assert err == (
        f"error: cannot listen on 127.0.0.1:{busy_port}: address already in use; "
        "another program uses that port: pick another with --port\n"
    )


@pytest.mark.parametrize(
    "extra, env, message",
    [
        (["--allow-add", "--token", "short"], {}, "the token must be at least 16 printable ASCII characters"),
        (["--allow-add"], {"REID_SRDL_TOKEN": "tab\tinside-the-token"}, "without spaces"),
        (["--image-root", "/nonexistent/folder"], {}, "--image-root /nonexistent/folder: not a folder"),
        (["--host", "no.such.host.invalid"], {}, "--host 'no.such.host.invalid': not an address"),
        (["--allowed-host", "a/b"], {}, "host name 'a/b' is not a plain host name"),
    ],
)
def test_bad_options_are_one_line(gallery, capsys, monkeypatch, extra, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    code, out, err = _run(capsys, _base(gallery, 8000) + extra)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_token_without_allow_add_is_a_usage_error(gallery, capsys):
    with pytest.raises(SystemExit) as e:
        serve_cli.main(_base(gallery, 8000) + ["--token", "x" * 20])
    assert e.value.code == 2 and "--token is the owner's token for adds: give --allow-add" in capsys.readouterr().err


def test_a_second_writer_is_one_line(gallery, capsys):
    lock = GalleryLock(gallery["file"])
    assert lock.acquire()
    try:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        code, out, err = _run(capsys, _base(gallery, port) + ["--allow-add"])
    finally:
        lock.release()
    assert code == 2 and out == "" and "error: another server is adding images to" in err and err.count("\n") == 1
    with socket.socket() as s:  # the port was given back
        s.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_a_real_server_prints_the_owners_link_and_only_the_owner_adds(gallery, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "REID_SRDL_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tools", "serve.py"), *_base(gallery, port), "--allow-add"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = proc.stdout.readline()
        link = proc.stdout.readline()
        assert first.startswith(f"serving {gallery['file']} (36 images) on http://127.0.0.1:{port}/ (adds on")
        token = re.fullmatch(rf"owner's link \(.*\): http://127\.0\.0\.1:{port}/\?token=(\S+)\n", link).group(1)
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.2)
        with open(gallery["queries"][0], "rb") as f:
            body = f.read()
        files = [("files", ("q.jpg", body, "image/jpeg"))]
        assert httpx.post(url + "/gallery", files=files).status_code == 401
        rebound = httpx.get(url + "/stats", headers={"host": f"evil.example:{port}"})
        assert rebound.status_code == 403
        r = httpx.post(url + "/gallery", files=files, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200 and r.json()["added"] == 1
        assert len(files_in(os.path.join(os.path.dirname(gallery["file"]), "uploads"))) == 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_where_adds_go(tmp_path):
    from types import SimpleNamespace

    args = SimpleNamespace(upload_dir=None)
    folder_store = SimpleNamespace(crop_dir=str(tmp_path / "store" / "crops"))
    assert serve_cli.upload_folder(args, folder_store, None) == str(tmp_path / "store" / "crops" / "uploads")
    npz_store = SimpleNamespace(crop_dir=None)
    assert serve_cli.upload_folder(args, npz_store, str(tmp_path / "g.npz")) == str(tmp_path / "uploads")
    assert serve_cli.upload_folder(args, npz_store, None) is None  # a Milvus server without a crops folder
    given = SimpleNamespace(upload_dir="shared/uploads")
    assert serve_cli.upload_folder(given, folder_store, None) == os.path.abspath("shared/uploads")


def test_adds_to_a_milvus_server_need_an_upload_folder(capsys, monkeypatch):
    from types import SimpleNamespace

    closed = []
    fake = SimpleNamespace(store=SimpleNamespace(crop_dir=None, engine="milvus"), close=lambda: closed.append(1))
    monkeypatch.setattr("reid_srdl.search.ReIDSearcher.load", lambda *a, **k: fake)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["--store", "http://127.0.0.1:19530", "--model", "m.pt", "--port", str(port), "--allow-add"]
    code, out, err = _run(capsys, argv)
    assert code == 2 and out == "" and closed == [1]
    assert err == (
        "error: --allow-add: http://127.0.0.1:19530 keeps no crops folder of its own; give --upload-dir DIR "
        "(a folder every server of this gallery can read)\n"
    )
