"""Who may talk to the server, checked before a route runs (the answer to CSRF and DNS rebinding).

Every request:

* its ``Host`` header must name the server as it was bound: ``127.0.0.1``, ``localhost``,
  ``[::1]``, the ``--host`` given and any ``--allowed-host``, each with the port.  A page on
  ``evil.example`` whose DNS is re-pointed at 127.0.0.1 (DNS rebinding) sends
  ``Host: evil.example:8000`` and is refused, on ``GET /stats``, ``/search`` and ``/image`` too;
* an ``Origin`` header, when present, must be one of the server's own origins
  (``http(s)://`` + an allowed host).  Browsers send it on every cross-origin fetch and every
  POST, so another page the operator has open cannot drive the API.  Clients that are not
  browsers (curl, scripts) send no Origin and are judged by Host and token alone;
* a *write* -- any request other than a GET/HEAD, or the read-only ``POST /search`` -- needs
  writes enabled (``--allow-add``) and the owner's token in ``Authorization: Bearer TOKEN``,
  compared in constant time.  This is checked before the body is read, so a refused upload
  costs nothing and leaves nothing on disk;
* a body larger than the server accepts (``Content-Length``) is refused before it is read.

Every response also carries headers that keep the page to itself: a Content-Security-Policy
that lets the page load and connect to its own origin only (so no script can send the token
elsewhere), ``Referrer-Policy: no-referrer`` (the ``?token=`` URL never leaks as a Referer),
``X-Frame-Options: DENY`` and ``Cross-Origin-Resource-Policy: same-origin`` (other sites can
neither frame the page nor embed its images).
"""

import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass
from typing import Dict, FrozenSet, Iterable, Optional, Tuple

from reid_srdl.core.errors import ReidSrdlError

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
# Requests that only read, whatever their method: a search carries its query image in a POST body.
READ_ROUTES = frozenset({("POST", "/search")})
MIN_TOKEN_LENGTH = 16
TOKEN_ENV = "REID_SRDL_TOKEN"

SECURITY_HEADERS = (
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; "
        b"form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


class AccessConfigError(ReidSrdlError, ValueError):
    """A host name or token the operator gave that the server cannot use."""


def host_name(host: str) -> str:
    """``host`` as it appears in a Host header: IPv6 literals in brackets, lower case."""
    host = host.strip().lower()
    try:
        if ipaddress.ip_address(host.strip("[]")).version == 6:
            return f"[{host.strip('[]')}]"
    except ValueError:
        pass
    return host


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def check_token(token: str) -> str:
    """``token`` if the server can use it (long enough, printable ASCII without spaces)."""
    if len(token) < MIN_TOKEN_LENGTH or not all(33 <= ord(ch) < 127 for ch in token):
        raise AccessConfigError(
            f"the token must be at least {MIN_TOKEN_LENGTH} printable ASCII characters without spaces "
            f"(got {len(token)} characters); leave it out to get a random one"
        )
    return token


@dataclass(frozen=True)
class AccessPolicy:
    """The Host names and Origins a server answers to, and the owner's token (None: no writes)."""

    hosts: FrozenSet[str]
    origins: FrozenSet[str]
    token: Optional[str] = None

    @classmethod
    def for_server(
        cls,
        host: str = "127.0.0.1",
        port: int = 8000,
        token: Optional[str] = None,
        extra_hosts: Iterable[str] = (),
    ) -> "AccessPolicy":
        """The policy of a server bound to ``host:port``; ``token`` enables writes."""
        names = list(LOOPBACK_NAMES) + list(extra_hosts)
        if host not in WILDCARD_HOSTS:
            names.append(host)
        hosts = set()
        for name in names:
            name = host_name(name)
            if not name or any(ch in name for ch in "/@?# "):
                raise AccessConfigError(f"host name {name!r} is not a plain host name or address")
            hosts.add(f"{name}:{int(port)}")
            if int(port) == 80:  # browsers leave the default port out of Host and Origin
                hosts.add(name)
        origins = {f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")}
        return cls(frozenset(hosts), frozenset(origins), None if token is None else check_token(token))

    @property
    def writes_enabled(self) -> bool:
        return self.token is not None

    def host_problem(self, host: Optional[str]) -> Optional[str]:
        if host is None:
            return "the request has no Host header"
        if host.lower() not in self.hosts:
            return (
                f"Host {host!r} is not a name this server answers to ({', '.join(sorted(self.hosts))}); "
                "start it with --allowed-host NAME to add one"
            )
        return None

    def origin_problem(self, origin: Optional[str]) -> Optional[str]:
        if origin is not None and origin.lower() not in self.origins:
            return f"requests from origin {origin!r} are refused: only this server's own page may call it"
        return None

    def token_matches(self, authorization: Optional[str]) -> bool:
        if self.token is None or not authorization:
            return False
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.strip().encode("utf-8", "replace"), self.token.encode("ascii"))

    def write_problem(self, authorization: Optional[str]) -> Optional[Tuple[int, str]]:
        if not self.writes_enabled:
            return 403, "this server is read-only: adding images is off unless it is started with --allow-add"
        if not self.token_matches(authorization):
            return 401, "adding images needs the owner's token (Authorization: Bearer TOKEN; printed at start-up)"
        return None


def is_write(method: str, path: str) -> bool:
    return method not in ("GET", "HEAD") and (method, path) not in READ_ROUTES


class GuardMiddleware:
    """ASGI middleware that applies an :class:`AccessPolicy` to every HTTP request, and
    refuses bodies over ``body_limits[path]`` bytes (``default_body_limit`` elsewhere)."""

    def __init__(
        self, app, policy: AccessPolicy, body_limits: Optional[Dict[str, int]] = None, default_body_limit: int = 1 << 16
    ):
        self.app = app
        self.policy = policy
        self.body_limits = dict(body_limits or {})
        self.default_body_limit = int(default_body_limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.decode("latin-1").lower(), value.decode("latin-1"))
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            if scope["type"] == "websocket":  # no route takes one; close before accepting
                await send({"type": "websocket.close", "code": 1008})
                return
            status, message = refusal
            await _send_json(send, status, {"error": message})
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + list(SECURITY_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope, headers) -> Optional[Tuple[int, str]]:
        p = self.policy
        problem = p.host_problem(headers.get("host"))
        if problem:
            return 400 if "no Host" in problem else 403, problem
        problem = p.origin_problem(headers.get("origin"))
        if problem:
            return 403, problem
        method = scope.get("method", "GET")
        if is_write(method, scope.get("path", "")):
            refused = p.write_problem(headers.get("authorization"))
            if refused:
                return refused
        limit = self.body_limits.get(scope.get("path", ""), self.default_body_limit)
        length = headers.get("content-length")
        if length is None:
            if headers.get("transfer-encoding"):
                return 411, "send the request body with a Content-Length"
        elif not length.isdigit():
            return 400, f"Content-Length {length!r} is not a number"
        elif int(length) > limit:
            return 413, f"the request body ({int(length)} bytes) is over this route's limit of {limit} bytes"
        return None


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers + list(SECURITY_HEADERS)})
    await send({"type": "http.response.body", "body": data})
