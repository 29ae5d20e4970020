"""Who may talk to the server: Host checked on every request (DNS rebinding), a foreign Origin
refused (CSRF), adds off by default and for the owner's token only, checked before the body
is read; the headers that keep the page and its token to itself."""

import hmac

import pytest

pytest.importorskip("fastapi", reason="the web app needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx (test extra)")

from serve_helpers import ORIGIN, TOKEN, add_files, build_gallery, files_in, owner, serve, upload

from reid_srdl.search import ReIDSearcher
from reid_srdl.serve import guard
from reid_srdl.serve.guard import AccessConfigError, AccessPolicy

pytestmark = pytest.mark.usefixtures("single_thread")

READS = [
    ("get", "/", {}),
    ("get", "/stats", {}),
    ("get", "/health", {}),
    ("get", "/image/0", {}),
    ("get", "/page.js", {}),
]


@pytest.fixture(scope="module")
def gallery(tiny_market_root, tmp_path_factory):
    return build_gallery(tiny_market_root, tmp_path_factory.mktemp("guard"))


def _request(client, method, path, headers, query=None):
    if path == "/search":
        return client.post(path, files=upload(query), data={"k": "2"}, headers=headers)
    return getattr(client, method)(path, headers=headers)


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST:8000", "[::1]:8000"])
def test_the_bound_names_are_served(gallery, host):
    client, _ = serve(gallery)
    for method, path, _ in READS + [("post", "/search", {})]:
        r = _request(client, method, path, {"host": host}, gallery["queries"][0])
        assert r.status_code == 200, (path, r.text)


@pytest.mark.parametrize("host", ["evil.example:8000", "evil.example", "127.0.0.1:9999", "127.0.0.1", "127.0.0.2:8000"])
def test_other_host_names_are_refused_on_every_route(gallery, host):
    """A rebinding page reaches 127.0.0.1 under its own name: nothing is read or computed."""
    client, app = serve(gallery)
    for method, path, _ in READS + [("post", "/search", {})]:
        r = _request(client, method, path, {"host": host}, gallery["queries"][0])
        assert r.status_code == 403, (path, r.status_code)
        assert r.json() == {"error": r.json()["error"]} and f"Host {host!r} is not a name" in r.json()["error"]
        assert b"root:" not in r.content and b"images" not in r.content
    assert app.state.service.queries == 0  # no search ran


def test_a_given_host_and_allowed_names_are_served(gallery):
    access = AccessPolicy.for_server("myhost.lan", 8000, None, ["reid.example.org"])
    client, _ = serve(gallery, access=access)
    for host in ("myhost.lan:8000", "reid.example.org:8000", "127.0.0.1:8000"):
        assert client.get("/stats", headers={"host": host}).status_code == 200
    assert client.get("/stats", headers={"host": "other.lan:8000"}).status_code == 403
    wildcard = AccessPolicy.for_server("0.0.0.0", 8000)  # every interface, but the Host must still be named
    assert wildcard.hosts == {"127.0.0.1:8000", "localhost:8000", "[::1]:8000"}
    assert AccessPolicy.for_server("::1", 80).hosts >= {"[::1]:80", "[::1]", "localhost"}  # port 80: no port


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "null", "http://127.0.0.1:9999", "http://localhost.evil:8000"]
)
def test_a_foreign_origin_is_refused_on_reads_and_writes(gallery, origin):
    client, app = serve(gallery, writes=True)
    for method, path, _ in READS + [("post", "/search", {})]:
        r = _request(client, method, path, {"Origin": origin}, gallery["queries"][0])
        assert r.status_code == 403 and f"origin {origin!r} are refused" in r.json()["error"], path
    # The add carries the right token but comes from another page: refused, nothing stored.
    r = client.post(
        "/gallery",
        files=add_files(gallery["queries"][:1]),
        headers={"Origin": origin, "Authorization": f"Bearer {TOKEN}"},
    )
    assert r.status_code == 403 and len(app.state.service.searcher) == 36
    assert files_in(gallery["tmp"] / "uploads") == []


def test_the_servers_own_origin_and_no_origin_are_served(gallery):
    client, _ = serve(gallery)
    for origin in (ORIGIN, "http://localhost:8000", None):
        headers = {} if origin is None else {"Origin": origin}
        assert client.post("/search", files=upload(gallery["queries"][0]), headers=headers).status_code == 200


def test_adds_are_off_by_default(gallery):
    client, app = serve(gallery)  # no token: read-only, whatever the request carries
    for headers in ({}, owner(), {"Authorization": "Bearer anything-at-all-0123456789"}):
        r = client.post("/gallery", files=add_files(gallery["queries"][:1]), headers=headers)
        assert r.status_code == 403 and "--allow-add" in r.json()["error"]
    assert client.get("/stats").json()["can_add"] is False
    assert len(app.state.service.searcher) == 36 and len(ReIDSearcher.load(gallery["file"])) == 36
    assert files_in(gallery["tmp"] / "uploads") == []
    # Any other state-changing request is refused the same way (default deny).
    for method in ("delete", "put", "patch"):
        assert getattr(client, method)("/gallery").status_code == 403


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Basic {TOKEN}",
        TOKEN,
        "Bearer",
        f"Bearer {TOKEN.upper()}",
    ],
)
def test_adds_need_the_owners_token(gallery, authorization):
    client, app = serve(gallery, writes=True)
    headers = {"Origin": ORIGIN}
    if authorization is not None:
        headers["Authorization"] = authorization
    r = client.post("/gallery", files=add_files(gallery["queries"][:1]), headers=headers)
    assert r.status_code == 401 and "owner's token" in r.json()["error"] and r.headers["www-authenticate"] == "Bearer"
    assert len(app.state.service.searcher) == 36 and files_in(gallery["tmp"] / "uploads") == []


def test_the_token_is_compared_in_constant_time(gallery, monkeypatch):
    calls, compare = [], hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(guard.hmac, "compare_digest", recording)
    client, _ = serve(gallery, writes=True)
    r = client.post("/gallery", files=add_files(gallery["queries"][:1]), headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and calls == [(b"nope", TOKEN.encode())]


def test_refused_before_the_body_is_read(gallery):
    """A 1 MB upload without the token, or a body over the route's limit, is answered from the
    headers alone (the app never parses it)."""
    client, app = serve(gallery, writes=True)
    parsed = []
    original = app.state.service.decode_upload
    app.state.service.decode_upload = lambda *a: parsed.append(a) or original(*a)
    big = [("files", ("x.jpg", b"\xff" * (1 << 20), "image/jpeg"))]
    assert client.post("/gallery", files=big, headers={"Origin": ORIGIN}).status_code == 401
    r = client.post("/search", files={"file": ("q.jpg", b"\xff" * (1 << 20), "image/jpeg")})
    assert r.status_code == 413 and "over this route's limit" in r.json()["error"] and parsed == []


def test_owner_and_token_in_a_browser_like_request(gallery):
    client, app = serve(gallery, writes=True)
    r = client.post("/gallery", files=add_files(gallery["queries"][:1]), headers=owner())
    assert r.status_code == 200 and r.json()["added"] == 1 and len(ReIDSearcher.load(gallery["file"])) == 37


def test_responses_keep_the_page_to_itself(gallery):
    client, _ = serve(gallery)
    for path in ("/", "/stats", "/image/0", "/page.js"):
        h = client.get(path).headers
        assert h["referrer-policy"] == "no-referrer" and h["x-frame-options"] == "DENY"
        assert h["cross-origin-resource-policy"] == "same-origin" and h["x-content-type-options"] == "nosniff"
        csp = dict(part.strip().split(" ", 1) for part in h["content-security-policy"].split(";"))
        assert csp["script-src"] == "'self'" and csp["connect-src"] == "'self'" and csp["default-src"] == "'none'"
    refused = client.get("/stats", headers={"host": "evil.example:8000"}).headers
    assert refused["referrer-policy"] == "no-referrer"
    page = client.get("/").text
    assert "<script>" not in page and '<script src="/page.js">' in page  # no inline code: CSP forbids it


def test_a_weak_token_is_refused():
    with pytest.raises(AccessConfigError, match="at least 16"):
        AccessPolicy.for_server("127.0.0.1", 8000, "short")
    with pytest.raises(AccessConfigError, match="without spaces"):
        AccessPolicy.for_server("127.0.0.1", 8000, "a token with spaces in it")
    with pytest.raises(AccessConfigError, match="not a plain host name"):
        AccessPolicy.for_server("evil.example/x", 8000)
    assert len(guard.new_token()) >= 40 and guard.new_token() != guard.new_token()
