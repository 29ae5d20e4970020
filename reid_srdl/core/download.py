"""Files fetched over HTTP(S) into torch's download cache, checksum first.

Weights named by URL (``model.weights=https://...``) or by ``model.pretrained=imagenet`` land
in ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``): the folder torchvision and timm use, so a file they
fetched before is found there, and the other way round.  A file already in the cache is used
as it is (its checksum checked again) and nothing is requested.

A download goes to a temporary file beside its cache entry and is renamed into place only
once complete and verified: a wrong checksum, a page that is no weights file, an
interrupted transfer leave nothing in the cache.  Offline or unreachable, the one-line error
names the URL and the exact path where the file can be placed by hand.

Where the file comes from is restricted: ``https``, or plain ``http`` on a loopback host only
(tests, local mirrors); a redirect must follow the same rule.  The checksum is the sha256
published with the file: torchvision's and timm's file names carry its first hex digits
(``resnet50-0676ba61.pth``, torch.hub's convention), a URL may give it as a fragment
(``...#sha256=<hex>``), and a server may declare it (the Hugging Face hub's
``X-Linked-Etag`` for its stored files).  urllib rather than ``torch.hub.download_url_to_file``,
because the latter follows any redirect (https to plain http included) and waits without a
timeout.
"""

import contextlib
import hashlib
import http.client
import ipaddress
import logging
import os
import re
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable, List, Optional

from reid_srdl.core import limits
from reid_srdl.core.errors import ReidSrdlError
from reid_srdl.core.files import temp_file_beside

log = logging.getLogger(__name__)

# torch.hub's file-name convention: "<name>-<first hex digits of the sha256>.<ext>".
HUB_HASH = re.compile(r"-([a-f0-9]{8,64})\.")
_FRAGMENT_HASH = re.compile(r"^sha256=([a-fA-F0-9]{8,64})$")
_SHA256_HEADER = re.compile(r'^"?([a-f0-9]{64})"?$')
TIMEOUT_SECONDS = 30.0
_CHUNK = 1 << 20
_LOOPBACK_NAMES = ("localhost",)


class DownloadError(ReidSrdlError, OSError):
    """A file could not be fetched into the cache (network, policy or checksum)."""


@dataclass(frozen=True)
class RemoteFile:
    """A file to fetch: where from, its name in the cache, and its sha256 (full or its first
    hex digits; "" when none is published)."""

    url: str
    filename: str
    sha256: str = ""


def cache_dir() -> str:
    """Where downloads are kept: torch.hub's ``<hub dir>/checkpoints``."""
    import torch.hub

    return os.path.join(torch.hub.get_dir(), "checkpoints")


def is_url(text: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", text))


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str = "weights URL") -> None:
    """A :class:`DownloadError` unless ``url`` is https, or http on a loopback host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return
    raise DownloadError(
        f"{what} {url}: only https, or plain http on a loopback host (127.0.0.1, ::1, localhost), is fetched"
    )


def remote_from_url(url: str) -> RemoteFile:
    """The cache entry of a user's URL: its last path segment, and the sha256 given as a
    ``#sha256=<hex>`` fragment or in torch.hub's file-name convention."""
    check_url(url)
    parts = urllib.parse.urlsplit(url)
    filename = os.path.basename(urllib.parse.unquote(parts.path))
    if not filename or filename in (".", ".."):
        raise DownloadError(f"weights URL {url}: it names no file (the cache keeps files under the URL's file name)")
    fragment = _FRAGMENT_HASH.match(parts.fragment)
    if parts.fragment and not fragment:
        raise DownloadError(f"weights URL {url}: the fragment may only give the checksum, as #sha256=<hex digits>")
    hub = HUB_HASH.search(filename)
    sha256 = fragment.group(1).lower() if fragment else (hub.group(1) if hub else "")
    return RemoteFile(urllib.parse.urlunsplit(parts._replace(fragment="")), filename, sha256)


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL the policy allows; keeps each response's headers."""

    def __init__(self):
        super().__init__()
        self.headers: List = []

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        self.headers.append(headers)
        check_url(newurl, what=f"redirect from {req.full_url} to")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _declared_sha256(headers_seen) -> str:
    """A sha256 a server declared for the file (the Hugging Face hub's X-Linked-Etag)."""
    for headers in headers_seen:
        match = _SHA256_HEADER.match((headers.get("X-Linked-Etag") or "").strip())
        if match:
            return match.group(1)
    return ""


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(url: str, dest: str, label: str, progress: bool) -> tuple:
    """Stream ``url`` into ``dest``; (sha256 hex digest, sha256 declared by the server)."""
    from tqdm import tqdm

    redirects = _CheckedRedirects()
    handlers = [redirects]
    if _is_loopback(urllib.parse.urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))  # a local server is never reached through a proxy
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, headers={"User-Agent": "reid_srdl"})
    h = hashlib.sha256()
    with opener.open(request, timeout=TIMEOUT_SECONDS) as response, open(dest, "wb") as out:
        size = response.headers.get("Content-Length")
        total = int(size) if size and size.isdigit() else None
        if total is not None and total > limits.MAX_DOWNLOAD_BYTES:
            raise DownloadError(_too_large(url, f"declares {total} bytes"))
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=label, disable=not progress) as bar:
            for chunk in iter(lambda: response.read(_CHUNK), b""):
                if bar.n + len(chunk) > limits.MAX_DOWNLOAD_BYTES:  # a server that sends more than it declared
                    raise DownloadError(_too_large(url, f"sent more than {bar.n} bytes"))
                out.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
        if total is not None and bar.n != total:
            raise ConnectionError(f"the transfer ended after {bar.n} of {total} bytes")
        return h.hexdigest(), _declared_sha256([*redirects.headers, response.headers])


def _too_large(url: str, what: str) -> str:
    return (
        f"cannot download {url}: it {what}, more than reid_srdl.core.limits.MAX_DOWNLOAD_BYTES "
        f"({limits.MAX_DOWNLOAD_BYTES} bytes); nothing was kept"
    )


def _reason(e: BaseException) -> str:
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        e = e.reason if isinstance(e.reason, BaseException) else e
    if isinstance(e, (socket.timeout, TimeoutError)):
        return f"no answer within {TIMEOUT_SECONDS:.0f} s"
    if isinstance(e, http.client.IncompleteRead):
        return "the connection closed before the end of the file"
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.strip().splitlines()[0]


def fetch(remote: RemoteFile, progress: bool = True, check: Optional[Callable[[str], None]] = None) -> str:
    """The cached copy of ``remote`` (downloaded first if absent): its path.

    ``check(path)`` may refuse a downloaded file (raise :class:`DownloadError`) before it
    enters the cache, e.g. a web page where a weights file was expected.
    """
    check_url(remote.url)
    folder = cache_dir()
    path = os.path.join(folder, remote.filename)
    expected = remote.sha256.lower()
    if os.path.isfile(path):
        if expected and not sha256_of(path).startswith(expected):
            raise DownloadError(
                f"{path} (cached copy of {remote.url}) does not have the published sha256 {expected}...: "
                f"delete it to download it again"
            )
        log.info("using %s (cached)", path)
        return path
    try:
        os.makedirs(folder, exist_ok=True)
        tmp = temp_file_beside(path, suffix=".partial")
    except OSError as e:
        raise DownloadError(f"cannot write to the download cache {folder}: {_reason(e)}") from None
    try:
        log.info("downloading %s to %s", remote.url, path)
        try:
            digest, declared = _download(remote.url, tmp, remote.filename, progress)
        except DownloadError:
            raise
        # offline, refused, timeout, an HTTP error status, a connection cut mid-transfer
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
            raise DownloadError(
                f"cannot download {remote.url} ({_reason(e)}); to use it offline, place the file by hand at {path}"
            ) from None
        wanted = expected or declared
        if wanted and not digest.startswith(wanted):
            raise DownloadError(
                f"{remote.url} downloaded with sha256 {digest[:16]}..., expected {wanted[:16]}...: not the published "
                f"file (corrupt or replaced); nothing was kept in {folder}"
            )
        if not wanted:
            log.warning("%s publishes no checksum: the file is checked by loading it only", remote.url)
        if check is not None:
            check(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return path
