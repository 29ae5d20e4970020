"""Weights fetched by URL or ``model.pretrained=imagenet`` into torch's cache, served here by a
loopback HTTP server (127.0.0.1 only, a thread of the test) that counts the requests it gets.

Fast and offline: nothing leaves the machine; the published sources are checked against the
libraries' own records (torchvision's weight enums, timm's pretrained_cfg, torchreid's
``pretrained_urls``), not fetched."""

import hashlib
import http.server
import io
import os
import socket
import threading
from collections import Counter

import pytest
import torch
import torchvision

from reid_srdl.config import ConfigError, load_config
from reid_srdl.core import download
from reid_srdl.core.download import DownloadError, RemoteFile, fetch, remote_from_url
from reid_srdl.models import WeightsMismatchError, build_model
from reid_srdl.models import weights as weights_module
from reid_srdl.models.weights import published_weights

pytestmark = pytest.mark.usefixtures("single_thread")


class Server:
    """``routes``: path -> (status, headers, body).  ``hits`` counts requests per path."""

    def __init__(self):
        self.routes = {}
        self.hits = Counter()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.hits[self.path] += 1
                status, headers, body = server.routes.get(self.path, (404, {}, b"not here"))
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """torch's cache in a fresh folder: $TORCH_HOME/hub/checkpoints."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def sha(data):
    return hashlib.sha256(data).hexdigest()


def cache_listing(folder):
    return sorted(os.listdir(folder)) if folder.exists() else []


@pytest.fixture(scope="module")
def mobilenet_file():
    """torchvision's mobilenet_v2 state dict with recognisable values, as served bytes."""
    torch.manual_seed(0)
    state = torchvision.models.mobilenet_v2(weights=None).state_dict()
    for v in state.values():
        if v.is_floating_point():
            v.copy_(torch.rand_like(v) + 0.5)
    return state, torch_bytes(state)


# ---------------------------------------------------------------- the fetch itself
def test_url_weights_are_fetched_into_torchs_cache_once(server, cache, mobilenet_file):
    state, data = mobilenet_file
    name = f"/files/mnv2-{sha(data)[:8]}.pth"  # torch.hub's naming: the sha256 prefix in the name
    server.routes[name] = (200, {}, data)
    net = build_model("mobilenet_v2", 4, weights=server.url(name))
    assert server.hits[name] == 1
    assert cache_listing(cache) == [os.path.basename(name)]
    assert (cache / os.path.basename(name)).read_bytes() == data
    # The served tensors are in the net (torchvision features.14 is our stages.3.14).
    assert torch.equal(net.state_dict()["stages.3.14.conv.1.0.weight"], state["features.14.conv.1.0.weight"])
    # A second build finds the file in the cache: no request at all.
    again = build_model("mobilenet_v2", 4, weights=server.url(name))
    assert server.hits[name] == 1
    assert torch.equal(again.state_dict()["stem.0.0.weight"], state["features.0.0.weight"])


def test_progress_bar_and_cache_path(server, cache, capsys):
    data = b"PK\x03\x04" + bytes(range(256)) * 64
    server.routes["/w.pth"] = (200, {}, data)
    path = fetch(RemoteFile(server.url("/w.pth"), "w.pth", sha(data)))
    assert path == str(cache / "w.pth") == os.path.join(torch.hub.get_dir(), "checkpoints", "w.pth")
    err = capsys.readouterr().err
    assert "w.pth" in err and "100%" in err and "16.0k/16.0k" in err  # tqdm: name, done, 16,388 B = 16.0 KiB


def test_bad_checksum_leaves_nothing_in_the_cache(server, cache):
    data = torch_bytes({"x": torch.zeros(3)})
    wrong = "0" * 8 if not sha(data).startswith("0" * 8) else "1" * 8
    server.routes[f"/m-{wrong}.pth"] = (200, {}, data)
    with pytest.raises(DownloadError) as e:
        build_model("mobilenet_v2", 4, weights=server.url(f"/m-{wrong}.pth"))
    message = str(e.value)
    assert "\n" not in message and f"expected {wrong}" in message and sha(data)[:16] in message
    assert "nothing was kept" in message
    assert cache_listing(cache) == []  # not the file, not a temporary
    # The same with the checksum given as a URL fragment (pip's convention).
    server.routes["/plain.pth"] = (200, {}, data)
    with pytest.raises(DownloadError, match="expected 11111111"):
        fetch(remote_from_url(server.url("/plain.pth") + "#sha256=" + "1" * 64))
    assert cache_listing(cache) == []


def test_a_declared_checksum_is_verified(server, cache):
    data = b"PK\x03\x04 payload"
    server.routes["/hub.safetensors"] = (200, {"X-Linked-Etag": f'"{"a" * 64}"'}, data)
    with pytest.raises(DownloadError, match="expected aaaaaaaaaaaaaaaa"):
        fetch(RemoteFile(server.url("/hub.safetensors"), "hub.safetensors"))
    server.routes["/good.safetensors"] = (200, {"X-Linked-Etag": f'"{sha(data)}"'}, data)
    assert open(fetch(RemoteFile(server.url("/good.safetensors"), "good.safetensors")), "rb").read() == data


def test_unreachable_host_names_the_url_and_the_cache_path(cache):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/resnet-abcdef12.pth"
    with pytest.raises(DownloadError) as e:
        build_model("mobilenet_v2", 4, weights=url)
    message = str(e.value)
    assert "\n" not in message
    assert f"cannot download {url} (" in message
    assert message.endswith(f"place the file by hand at {cache / 'resnet-abcdef12.pth'}")
    assert cache_listing(cache) == []


def test_a_file_placed_by_hand_is_used_and_checked(server, cache, mobilenet_file):
    state, data = mobilenet_file
    cache.mkdir(parents=True)
    (cache / f"mnv2-{sha(data)[:8]}.pth").write_bytes(data)
    net = build_model("mobilenet_v2", 4, weights=server.url(f"/mnv2-{sha(data)[:8]}.pth"))
    assert sum(server.hits.values()) == 0
    assert torch.equal(net.state_dict()["stem.0.0.weight"], state["features.0.0.weight"])
    (cache / "other-00000000.pth").write_bytes(data)  # a file that is not the published one
    with pytest.raises(DownloadError, match="does not have the published sha256 00000000...: delete it"):
        fetch(remote_from_url(server.url("/other-00000000.pth")))
    assert sum(server.hits.values()) == 0


def test_http_errors_truncation_and_web_pages_are_one_line_and_leave_nothing(server, cache):
    with pytest.raises(
        DownloadError, match=r"cannot download .*/missing.pth \(HTTP 404 Not Found\); to use it offline"
    ):
        fetch(remote_from_url(server.url("/missing.pth")))
    server.routes["/cut.pth"] = (200, {"Content-Length": "100000"}, b"PK\x03\x04 only a little")
    # urllib returns the short body, or http.client raises IncompleteRead, depending on timing.
    cut = r"\(the (transfer ended after 18 of 100000 bytes|connection closed before the end of the file)\)"
    with pytest.raises(DownloadError, match=r"cannot download .*/cut.pth " + cut + "; to use it offline"):
        fetch(remote_from_url(server.url("/cut.pth")))
    # No checksum published (a Google Drive link) and a confirmation page instead of the file.
    server.routes["/uc?id=1"] = (200, {"Content-Type": "text/html"}, b"<!DOCTYPE html><html>virus scan</html>")
    with pytest.raises(DownloadError, match=r"did not give a weights file \(a web page\); nothing was kept"):
        build_model("mobilenet_v2", 4, weights=server.url("/uc?id=1"))
    assert cache_listing(cache) == []


def test_a_file_larger_than_the_download_limit_is_refused_and_leaves_nothing(server, cache, monkeypatch):
    from reid_srdl.core import limits

    monkeypatch.setattr(limits, "MAX_DOWNLOAD_BYTES", 3 << 20)
    body = bytes(4 << 20)  # 4 MiB against a 3 MiB limit
    server.routes["/big.pth"] = (200, {}, body)
    with pytest.raises(DownloadError, match=r"/big.pth: it declares 4194304 bytes, more than .*MAX_DOWNLOAD_BYTES"):
        fetch(remote_from_url(server.url("/big.pth")))
    # A server that declares nothing (chunked) and sends too much is cut off as it crosses the limit.
    server.routes["/big2.pth"] = (200, {"Content-Length": ""}, body)
    with pytest.raises(DownloadError, match=r"/big2.pth: it sent more than 3145728 bytes"):
        fetch(remote_from_url(server.url("/big2.pth")))
    assert cache_listing(cache) == []


def test_redirects_follow_the_same_policy(server, cache):
    server.routes["/moved.pth"] = (302, {"Location": "http://example.com/evil.pth"}, b"")
    with pytest.raises(DownloadError, match="redirect from .*/moved.pth to http://example.com/evil.pth: only https"):
        fetch(remote_from_url(server.url("/moved.pth")))
    data = b"PK\x03\x04 the file"
    server.routes["/here.pth"] = (200, {}, data)
    server.routes["/there.pth"] = (301, {"Location": server.url("/here.pth")}, b"")
    path = fetch(RemoteFile(server.url("/there.pth"), "there.pth", sha(data)))
    assert open(path, "rb").read() == data and server.hits["/here.pth"] == 1
    assert cache_listing(cache) == ["there.pth"]


@pytest.mark.parametrize(
    "url",
    ["http://example.com/w.pth", "ftp://127.0.0.1/w.pth", "file:///etc/passwd", "http://10.0.0.1/w.pth"],
)
def test_only_https_or_loopback_http_is_fetched(url, cache):
    with pytest.raises(DownloadError, match="only https, or plain http on a loopback host"):
        fetch(remote_from_url(url))
    with pytest.raises(ConfigError, match="model.weights URL .*: only https"):
        load_config(None, [f"model.weights={url}"])


def test_remote_names_and_checksums_from_urls():
    hub = remote_from_url("https://download.pytorch.org/models/resnet50-0676ba61.pth")
    assert hub == RemoteFile(
        "https://download.pytorch.org/models/resnet50-0676ba61.pth", "resnet50-0676ba61.pth", "0676ba61"
    )
    given = remote_from_url("http://[::1]:8000/a/b/w.pth#sha256=" + "AB" * 32)
    assert given == RemoteFile("http://[::1]:8000/a/b/w.pth", "w.pth", "ab" * 32)
    assert remote_from_url("https://example.com/weights.pth").sha256 == ""
    with pytest.raises(DownloadError, match="names no file"):
        remote_from_url("https://example.com/")
    with pytest.raises(DownloadError, match="#sha256=<hex digits>"):
        remote_from_url("https://example.com/w.pth#md5=00")


# ---------------------------------------------------------------- model.pretrained=imagenet
def test_pretrained_fetches_the_published_file(server, cache, mobilenet_file, monkeypatch):
    state, data = mobilenet_file
    name = f"mobilenet_v2-{sha(data)[:8]}.pth"
    server.routes["/" + name] = (200, {}, data)
    asked = []

    def published(arch):
        asked.append(arch)
        return remote_from_url(server.url("/" + name))

    monkeypatch.setattr(weights_module, "published_weights", published)
    net = build_model("mobilenet_v2", 4, pretrained="imagenet")
    assert asked == ["mobilenet_v2"] and server.hits["/" + name] == 1
    assert torch.equal(net.state_dict()["stages.0.2.conv.0.0.weight"], state["features.2.conv.0.0.weight"])
    assert "pretrained" not in net.spec and "weights" not in net.spec


@pytest.mark.parametrize(
    "arch, enum",
    [
        ("resnet50", torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
        ("densenet121", torchvision.models.DenseNet121_Weights.IMAGENET1K_V1),
        ("mobilenet_v2", torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1),
        ("resnet50_fc512", torchvision.models.ResNet50_Weights.IMAGENET1K_V1),
    ],
)
def test_published_torchvision_files_are_torchvisions(arch, enum):
    remote = published_weights(arch)
    assert remote.url == enum.url
    # torchvision's file names carry the first hex digits of the file's sha256.
    assert remote.filename == enum.url.rsplit("/", 1)[1]
    assert remote.sha256 == remote.filename.rsplit("-", 1)[1].split(".")[0] and len(remote.sha256) == 8


def test_published_torchreid_and_timm_files():
    from torchreid.reid.models import osnet, osnet_ain

    drive_id = osnet.pretrained_urls["osnet_x0_25"].split("id=")[1]
    assert published_weights("osnet_x0_25") == RemoteFile(
        f"https://drive.google.com/uc?export=download&id={drive_id}", "osnet_x0_25_imagenet.pth"
    )
    assert osnet_ain.pretrained_urls["osnet_ain_x1_0"].split("id=")[1] in published_weights("osnet_ain_x1_0").url
    timm = pytest.importorskip("timm")
    cfg = timm.models.get_pretrained_cfg("resnet18")
    assert published_weights("timm/resnet18") == RemoteFile(
        f"https://huggingface.co/{cfg.hf_hub_id}/resolve/main/model.safetensors",
        cfg.hf_hub_id.replace("/", "--") + "--model.safetensors",
    )


def test_architectures_without_published_weights_say_which_have(cache):
    for arch in ("resnet32", "resnet50_ibn_a", "small_reid"):
        with pytest.raises(WeightsMismatchError) as e:
            build_model(arch, 4, pretrained="imagenet")
        message = str(e.value)
        assert f"model '{arch}' has no published ImageNet weights" in message
        assert "densenet121, mobilenet_v2, osnet_ain_x0_25" in message and "timm/<name>" in message
    with pytest.raises(WeightsMismatchError, match="model.pretrained='imagenet1k' is not one of"):
        build_model("resnet50", 4, pretrained="imagenet1k")
    with pytest.raises(WeightsMismatchError, match="both choose the weights"):
        build_model("resnet50", 4, pretrained="imagenet", weights="x.pth")
    with pytest.raises(ConfigError, match="both choose the weights"):
        load_config(None, ["model.pretrained=imagenet", "model.weights=x.pth"])
    assert cache_listing(cache) == []


def test_download_module_uses_torch_hub_dir(cache):
    assert download.cache_dir() == str(cache)
