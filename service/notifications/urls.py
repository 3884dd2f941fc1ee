"""Which URLs a study-end notification may be sent to.

Two checks. `check_syntax` (at request validation, no network): http or https, a host, no
user name or password, no fragment, at most MAX_URL characters. `check_target` (at submission
and again right before every attempt): the host is allowed by LRSEARCH_NOTIFY_ALLOWED_HOSTS,
and, unless it is listed by name, every address it resolves to is public. The addresses it
returns are the ones the request may go to: the sender connects to one of them, never
resolving the name again, so a DNS answer that changes between the check and the connection
cannot point the request somewhere else.

Resolving: getaddrinfo has no timeout of its own, so each lookup runs in a daemon thread that
is abandoned when it takes too long; at most MAX_LOOKUPS such threads exist in a process at
once (a DNS server that never answers cannot make threads pile up), and at submission a
lookup gets at most SUBMIT_RESOLVE_SECONDS (the request is waiting).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL = 2048
MAX_LOOKUPS = 8  # DNS lookups in flight at once in one process (each in its own thread)
SUBMIT_RESOLVE_SECONDS = 2.0  # the longest a submission waits for DNS
PUBLIC = "public"  # the allow-list entry meaning "any host whose every address is public"
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*"
                        r"\.?$")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int, float], list[str]]
_LOOKUPS = threading.BoundedSemaphore(MAX_LOOKUPS)  # held by each lookup's thread until it ends


class Refused(ValueError):
    """The URL may not be notified; the message says why, naming the host or address."""


@dataclass(frozen=True)
class Target:
    """A checked URL: its parts, the host as compared with the allow-list (lowercase, an IPv6
    address without brackets), the port, and the addresses the request may go to."""

    url: str
    parts: SplitResult
    host: str
    port: int
    addresses: tuple[str, ...]


def check_syntax(url: str) -> str:
    """The URL when it has a form a notification can be sent to; else ValueError saying what
    is wrong (pydantic turns it into a 422 naming `notify.url` and the value)."""
    if len(url) > MAX_URL:
        raise ValueError(f"must be at most {MAX_URL} characters (received {len(url)})")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError("must not contain spaces or control characters")
    if not url.isascii():
        raise ValueError("must be ASCII (write an international host name in its xn-- form "
                         "and percent-encode the path)")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"must be an http or https URL (received scheme {parts.scheme!r})")
    if "@" in parts.netloc:
        raise ValueError("must not contain a user name or password (user:password@host); "
                         "the receiver checks the signature instead")
    if parts.fragment or url.endswith("#"):
        raise ValueError("must not have a #fragment (it is never sent)")
    _host_and_port(parts)
    return url


def _host_and_port(parts: SplitResult) -> tuple[str, int]:
    """The URL's host (lowercase; an IPv6 address without brackets, compressed) and port
    (the scheme's default when none is given); ValueError when either is missing or bad."""
    try:
        port = parts.port
    except ValueError:
        raise ValueError("has an invalid port (it must be a number from 1 to 65535)") from None
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("must name a host (http://host/...)")
    if parts.netloc.startswith("["):
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            raise ValueError(f"has an invalid IPv6 address [{host}]") from None
    elif not _HOST_NAME.match(host):
        raise ValueError(f"has an invalid host name {host!r}")
    if port == 0:
        raise ValueError("has an invalid port (it must be a number from 1 to 65535)")
    return host.rstrip("."), port or (443 if parts.scheme.lower() == "https" else 80)


def check_allowed(entry: str) -> str:
    """An LRSEARCH_NOTIFY_ALLOWED_HOSTS entry as given, when it has a form that can match a
    host: "public", a host name, an IP address ("[::1]" or "::1"), or "*." followed by a host
    name. ValueError saying why otherwise: an entry with a scheme, port, path or user name
    would silently never match (a listed host allows every port)."""
    bare = entry.strip().lower().rstrip(".")
    if bare == PUBLIC:
        return entry
    if bare.startswith("[") and bare.endswith("]"):
        try:
            ipaddress.IPv6Address(bare[1:-1])
            return entry
        except ValueError:
            raise ValueError("a bracketed entry must be an IPv6 address") from None
    try:
        ipaddress.ip_address(bare)
        return entry
    except ValueError:
        pass
    for part, why in (("://", "no scheme"), ("/", "no path"), ("@", "no user name"),
                      (":", "no port: a listed host allows every port")):
        if part in bare:
            raise ValueError(f"must be a host name or address only ({why})")
    name = bare[2:] if bare.startswith("*.") else bare
    if not name or not _HOST_NAME.match(name):
        raise ValueError("must be 'public', a host name, an IP address, or '*.' followed by "
                         "a domain name")
    return entry


def _pattern(entry: str) -> str:
    """An allow-list entry as compared with hosts: "[::1]" and "::1" are the same address."""
    entry = entry.strip().lower().rstrip(".")
    bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
    try:
        return ipaddress.ip_address(bare).compressed
    except ValueError:
        return entry


def listed(host: str, allowed: Sequence[str]) -> bool:
    """The host is named by an entry of the allow-list (exactly, or as a subdomain of a
    "*.domain" entry); "public" names no host."""
    for entry in map(_pattern, allowed):
        if entry == PUBLIC:
            continue
        if entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]:
            return True
        if entry == host:
            return True
    return False


def not_public(address: Address) -> str | None:
    """Why the address is not public ("loopback", "private", ...), or None when it is. An
    IPv4 address carried in IPv6 (::ffff:a.b.c.d, 6to4) is judged as the IPv4 one."""
    if isinstance(address, ipaddress.IPv6Address):
        inner = address.ipv4_mapped or address.sixtofour
        if inner is not None:
            return not_public(inner)
    for kind in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if not address.is_global:
        return "not globally routable"
    return None


def resolve(host: str, port: int, timeout: float) -> list[str]:
    """The host's addresses (in the resolver's order, each once), within `timeout` seconds
    (waiting for a free lookup thread included: see the module's docstring). Refused when the
    name does not resolve in time."""
    try:
        return [ipaddress.ip_address(host).compressed]
    except ValueError:
        pass
    deadline = time.monotonic() + timeout
    if not _LOOKUPS.acquire(timeout=timeout):
        raise Refused(f"the host {host!r} did not resolve within {timeout:g} s ({MAX_LOOKUPS} "
                      "lookups are already waiting for the DNS server)")
    found: list[list[str]] = []
    failed: list[BaseException] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found.append(list(dict.fromkeys(
                ipaddress.ip_address(str(info[4][0]).split("%")[0]).compressed
                for info in infos)))
        except (OSError, UnicodeError, ValueError) as e:
            failed.append(e)
        finally:
            _LOOKUPS.release()  # the thread's slot, free again once getaddrinfo returns

    thread = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    try:
        thread.start()
    except BaseException:
        _LOOKUPS.release()
        raise
    thread.join(max(0.0, deadline - time.monotonic()))
    if found and found[0]:
        return found[0]
    if failed:
        raise Refused(f"the host {host!r} does not resolve ({failed[0]})")
    if thread.is_alive():
        raise Refused(f"the host {host!r} did not resolve within {timeout:g} s")
    raise Refused(f"the host {host!r} has no address")


def check_target(url: str, allowed: Sequence[str], timeout: float,
                 resolver: Resolver = resolve) -> Target:
    """The checked target of a notification URL (see the module's docstring); Refused with
    the reason otherwise. `allowed`: LRSEARCH_NOTIFY_ALLOWED_HOSTS (empty: "public")."""
    try:
        check_syntax(url)
        parts = urlsplit(url)
        host, port = _host_and_port(parts)
    except ValueError as e:
        raise Refused(f"the URL {e}") from None
    patterns = list(allowed) or [PUBLIC]
    if listed(host, patterns):
        return Target(url, parts, host, port, tuple(resolver(host, port, timeout)))
    if PUBLIC not in map(_pattern, patterns):
        raise Refused(f"the host {host!r} is not in LRSEARCH_NOTIFY_ALLOWED_HOSTS "
                      f"({', '.join(patterns)})")
    addresses = resolver(host, port, timeout)
    for text in addresses:
        why = not_public(ipaddress.ip_address(text))
        if why is not None:
            named = f"{text} is" if text == host else f"the host {host!r} resolves to {text},"
            raise Refused(f"{named} not a public address ({why}): only public addresses may "
                          "be notified, unless the host is listed in "
                          "LRSEARCH_NOTIFY_ALLOWED_HOSTS")
    return Target(url, parts, host, port, tuple(addresses))
