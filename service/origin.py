"""Where a request comes from: the host it names, and for a request that changes something,
the page that sent it.

- Host: only the names in LRSEARCH_ALLOWED_HOSTS (400 otherwise). A web page on another site
  can make a browser send requests to a server on 127.0.0.1 by pointing its own domain at that
  address (DNS rebinding); such requests carry the attacker's name in Host, and are refused.
  /healthz, /readyz and /metrics answer any Host, so probes and scrapers that use a pod's IP
  keep working (/metrics needs its token once keys exist).
- Origin: a POST, PUT, PATCH or DELETE whose `Origin` (or, without one, `Referer`) names
  another site is refused (403), whatever the credentials: browsers add these headers, so a
  page elsewhere cannot submit forms to this server (the web login, or the API of a server
  without keys). Clients that send neither header (the command line, the Python client,
  curl) are unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import errors
from service.config import Settings

HEALTH = frozenset({"/healthz", "/readyz", "/metrics"})  # probes and scrapers by pod IP
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def host_name(netloc: str) -> str:
    """The host of a `host[:port]` (IPv6 literals keep their brackets), lowercase, without a
    trailing dot."""
    netloc = netloc.strip().lower()
    if netloc.startswith("["):
        end = netloc.find("]")
        return netloc[:end + 1] if end > 0 else netloc
    return netloc.rsplit(":", 1)[0].rstrip(".") if netloc.count(":") <= 1 else netloc


def host_allowed(host: str, allowed: Sequence[str]) -> bool:
    """`host` (no port) matches an entry: "*", the same name, or "*.domain" for a subdomain."""
    for pattern in allowed:
        if pattern == "*" or host == pattern:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]:
            return True
    return False


def same_site(source: str, host: str, allowed: Sequence[str]) -> bool:
    """An Origin or Referer value is ours: the request's own scheme-less origin (the Host
    header, port included), or a page served under one of the named allowed hosts (never
    the catch-all "*", which says nothing about which pages are ours). "null" is foreign."""
    netloc = urlsplit(source.strip()).netloc.lower() if "://" in source else ""
    if not netloc:
        return False
    if netloc == host.strip().lower():
        return True
    return host_allowed(host_name(netloc), [p for p in allowed if p != "*"])


class RequestOrigin:
    """Pure ASGI middleware: the Host check (400) and the Origin check (403) above."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        allowed = self.settings.allowed_hosts
        host = headers.get("host", "")
        if scope["path"] not in HEALTH and not host_allowed(host_name(host), allowed):
            # The allowed names are not listed: they are no business of whoever sent this.
            await _reject(send, 400, "bad_host", f"Host `{host[:200]}` is not served here: "
                          "it is not in the server's LRSEARCH_ALLOWED_HOSTS (an operator "
                          "adds the name clients use, for example a proxy's public name).",
                          "Host")
            return
        if scope["method"] in UNSAFE:
            name = "Origin" if "origin" in headers else "Referer"
            source = headers.get(name.lower())
            if source is not None and not same_site(source, host, allowed):
                await _reject(send, 403, "forbidden", f"Cross-site request refused: the "
                              f"{name} header names `{source[:200]}`, not this server "
                              f"(`{host}`). Changes come from this server's own pages or "
                              "from clients that send no Origin; an operator adds the "
                              "site's host to LRSEARCH_ALLOWED_HOSTS.", name)
                return
        await self.app(scope, receive, send)


async def _reject(send: Send, status: int, kind: str, detail: str, field: str) -> None:
    response = JSONResponse(errors.body(kind, detail, field=field), status_code=status)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
