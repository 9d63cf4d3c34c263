"""The service's public base URL: the one source of every absolute URL it gives out.

A client controls `Host` and `X-Forwarded-*`, so none of them may decide a URL the service
checks a signature against or sends a reader to: the SMART token endpoint (the `aud` of every
client assertion) and discovery, Bulk Data status and file URLs, search links. They are built
from the configured base (`medledger serve --public-url`, default `http://HOST:PORT`).

Behind a reverse proxy, `--trust-proxy` names the proxy's addresses. A request arriving from
one of them (and only those) may then name the scheme and host clients used
(`X-Forwarded-Proto`, `X-Forwarded-Host`) and the client's address (`X-Forwarded-For`, which
the rate limiter keys anonymous callers by); what the proxy does not name, and the path,
stay as configured.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Where ForwardedHeaders leaves the base a trusted proxy named for one request.
SCOPE_KEY = "medledger.public_url"
LOOPBACK_PROXIES = "127.0.0.1,::1"
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-.]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                   r"(?::[0-9]{1,5})?")  # fmt: skip


class PublicUrlError(ValueError):
    """A --public-url or --trust-proxy value that cannot be used; the message says why."""


def parse_public_url(text: str) -> str:
    """`scheme://host[:port][/path]` (http or https), without a trailing slash."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PublicUrlError(f"the public URL {text!r} needs http:// or https:// and a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise PublicUrlError(
            f"the public URL {text!r} may hold only scheme, host, port and path (no query, "
            "fragment or credentials)"
        )
    try:
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError as e:
        raise PublicUrlError(f"the public URL {text!r} has a bad port: {e}") from None
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def default_public_url(host: str, port: int) -> str:
    """http://HOST:PORT, as clients on this machine reach a server bound to HOST."""
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def parse_proxies(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses or networks (`10.0.0.5,10.1.0.0/16`)."""
    try:
        return tuple(ipaddress.ip_network(p.strip()) for p in text.split(",") if p.strip())
    except ValueError as e:
        raise PublicUrlError(f"--trust-proxy: {e}") from None


@dataclass(frozen=True)
class PublicBase:
    url: str  # parse_public_url's form
    trusted_proxies: tuple[Network, ...] = ()

    def trusts(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in net for net in self.trusted_proxies)


class ForwardedHeaders:
    """ASGI middleware: applies `X-Forwarded-*` of requests that come from a trusted proxy.

    Outermost, so the rate limiter sees the client the proxy names. Requests from anyone else
    pass untouched, whatever headers they carry.
    """

    def __init__(self, app: ASGIApp, public: PublicBase) -> None:
        self.app = app
        self.public = public
        configured = urlsplit(public.url)
        self._scheme, self._host, self._path = configured.scheme, configured.netloc, configured.path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] == "http" and peer and self.public.trusts(peer[0]):
            self._apply(scope)
        await self.app(scope, receive, send)

    def _apply(self, scope: Scope) -> None:
        headers = {}
        for name, value in scope["headers"]:
            if name.startswith(b"x-forwarded-"):
                headers[name] = value.decode("latin-1")
        client = self._client(headers.get(b"x-forwarded-for"))
        if client is not None:
            scope["client"] = (client, 0)
        # The first value of each is what the outermost proxy saw; each part the proxy does
        # not name (or names unusably) is the configured one.
        proto = headers.get(b"x-forwarded-proto", "").split(",")[0].strip().lower()
        host = headers.get(b"x-forwarded-host", "").split(",")[0].strip()
        scheme = proto if proto in ("http", "https") else self._scheme
        host = host if _HOST.fullmatch(host) else self._host
        if (scheme, host) != (self._scheme, self._host):
            scope[SCOPE_KEY] = f"{scheme}://{host}{self._path}"

    def _client(self, forwarded_for: str | None) -> str | None:
        # The nearest address no trusted proxy holds: the farther ones the client can forge.
        for hop in reversed((forwarded_for or "").split(",")):
            hop = hop.strip()
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                return None
            if not self.public.trusts(hop):
                return hop
        return None
