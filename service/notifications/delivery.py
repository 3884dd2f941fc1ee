"""Sending notifications: one HTTP POST per attempt, and the sweep that claims due attempts,
sends them and records how they went (run by the reaper, and by idle workers).

An attempt checks the URL again (urls.check_target: the allow-list may have changed, and the
name may resolve elsewhere now) and connects to an address that check returned, sending the
URL's host in the Host header and as the TLS server name, so certificates are verified for
the host. Redirects are not followed (a 3xx answer is a failed attempt), proxies from the
environment are not used, and at most HEAD_BYTES of status line and headers and ANSWER_BYTES
of body are read (not kept: only the status is recorded).

An attempt has one deadline, LRSEARCH_NOTIFY_TIMEOUT_SECONDS after it starts, for all of it:
resolving, connecting, the TLS handshake, sending and reading the answer. Per-read timeouts
alone would not do: a receiver that sends its answer one byte at a time keeps every read
short and an attempt running for ever. So every connect, read and write is given only the
time left (the network backend below: httpx's own transport, httpcore, with each socket call
bounded), and a call when none is left ends the attempt as a failed one ("timed out after N
s"). Nothing is left running after an attempt but, at most, its DNS lookup's thread
(urls.resolve bounds those).
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore  # httpx's transport layer (installed with httpx): its network backends
import httpx
from sqlalchemy.orm import Session

from service.config import Settings
from service.notifications import ops, urls

log = logging.getLogger("lrsearch.notifications")
HEAD_BYTES = 8192  # the answer's status line and headers, at most
ANSWER_BYTES = 1024  # of the answer's body, read and dropped
MAX_ADDRESSES = 3  # tried in the resolver's order while connecting fails
USER_AGENT = "lrsearch-webhook/1"
Db = Callable[[Callable[[Session], Any]], Any]


class DeadlinePassed(Exception):
    """The attempt's time ran out (raised by a network call begun with none left)."""


class AnswerTooLarge(Exception):
    """The answer's status line and headers are longer than HEAD_BYTES."""


class _Budget:
    """One attempt's deadline (time.monotonic()) and the bytes it may still read."""

    def __init__(self, deadline: float, read_bytes: int) -> None:
        self.deadline, self.read_bytes = deadline, read_bytes

    def timeout(self, timeout: float | None) -> float:
        """A network call's timeout: `timeout`, but no later than the deadline; raises
        DeadlinePassed when it has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlinePassed
        return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    """A connection whose every read, write and TLS handshake ends by the attempt's deadline,
    and which reads at most the attempt's byte budget. A write does not wait on a slow
    reader in practice: the request (headers and a small JSON body) fits the socket's send
    buffer."""

    def __init__(self, inner: httpcore.NetworkStream, budget: _Budget) -> None:
        self.inner, self.budget = inner, budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.budget.read_bytes <= 0:
            raise AnswerTooLarge
        data = self.inner.read(min(max_bytes, self.budget.read_bytes),
                               self.budget.timeout(timeout))
        self.budget.read_bytes -= len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.budget.timeout(timeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _Stream(self.inner.start_tls(ssl_context, server_hostname,
                                            self.budget.timeout(timeout)), self.budget)

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    """httpcore's own sockets, with every call bounded by one attempt's budget."""

    def __init__(self, budget: _Budget) -> None:
        self.budget, self.inner = budget, httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _Stream(self.inner.connect_tcp(host, port, self.budget.timeout(timeout),
                                              local_address, socket_options), self.budget)

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


@functools.lru_cache(maxsize=1)
def _tls() -> ssl.SSLContext:
    """httpx's default verification (its CA bundle), without SSL_CERT_FILE and the like."""
    return httpx.create_ssl_context(trust_env=False)


def headers(claimed: ops.Claimed, secret: str, host: str, timestamp: int | None = None
            ) -> dict[str, str]:
    """The request's headers: JSON, the event, the delivery's id (the same on every attempt;
    unsigned here: a receiver dedupes on the body's signed `delivery_id`, the same value),
    the attempt's number, and the signature."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {"Host": host, "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "X-Lrsearch-Event": ops.EVENT, "X-Lrsearch-Delivery": claimed.delivery_id,
            "X-Lrsearch-Attempt": str(claimed.attempt),
            ops.SIGNATURE_HEADER: ops.signature(secret, stamp, claimed.body.encode())}


def _post(target: urls.Target, address: str, sent: dict[str, str], body: bytes,
          connect_timeout: float, budget: _Budget) -> int:
    """POST to `address` (for the target's host) within the budget; the answer's status.
    Raises httpcore's errors, DeadlinePassed and AnswerTooLarge."""
    parts = target.parts
    https = parts.scheme.lower() == "https"
    url = httpcore.URL(scheme=b"https" if https else b"http",
                       host=ipaddress.ip_address(address).compressed.encode(),
                       port=target.port,
                       target=((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
                       .encode())
    left = budget.timeout(None)
    extensions: dict[str, Any] = {"timeout": {"connect": min(connect_timeout, left),
                                              "read": left, "write": left, "pool": left}}
    if https:
        extensions["sni_hostname"] = target.host
    with httpcore.ConnectionPool(ssl_context=_tls() if https else None, max_connections=1,
                                 network_backend=_Backend(budget)) as pool, \
            pool.stream("POST", url, headers=list(sent.items()), content=body,
                        extensions=extensions) as answer:
        read = 0
        for chunk in answer.iter_stream():
            read += len(chunk)
            if read >= ANSWER_BYTES:
                break
        return int(answer.status)


def send(claimed: ops.Claimed, settings: Settings,
         resolver: urls.Resolver = urls.resolve) -> ops.Outcome:
    """Make one attempt, over by notify_timeout_seconds after it starts whatever the receiver
    does (see the module's docstring); never raises (every failure is the attempt's
    outcome)."""
    total = settings.notify_timeout_seconds
    deadline = time.monotonic() + total
    timed_out = f"timed out after {total:g} s"
    if claimed.secret is None:
        return ops.Outcome(False, error="not sent: " + ops.SECRET_MISSING.format(
            tenant=claimed.tenant))
    try:
        target = urls.check_target(claimed.url, settings.notify_allowed_hosts, total, resolver)
    except urls.Refused as e:
        return ops.Outcome(False, error=f"not sent: {e}")
    sent = headers(claimed, claimed.secret, target.parts.netloc)
    body = claimed.body.encode()
    addresses = target.addresses[:MAX_ADDRESSES]
    error, address = "no address", None
    for index, address in enumerate(addresses):
        left = deadline - time.monotonic()
        if left <= 0:
            return ops.Outcome(False, error=f"{timed_out} ({error})", address=address)
        budget = _Budget(deadline, HEAD_BYTES + ANSWER_BYTES)
        # Connecting shares the time left with the addresses still to try: one that does not
        # answer leaves the next a chance.
        connect = left / (len(addresses) - index)
        try:
            status = _post(target, address, sent, body, connect, budget)
        except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
            error = f"could not connect to {address}: {_describe(e)}"
            continue
        except (DeadlinePassed, httpcore.TimeoutException):
            # Every call's timeout is the time left, at most: any timeout is the deadline's.
            return ops.Outcome(False, error=f"{timed_out} ({address})", address=address)
        except AnswerTooLarge:
            return ops.Outcome(False, error=f"the answer's status line and headers are longer "
                               f"than {HEAD_BYTES} bytes ({address})", address=address)
        except (httpcore.NetworkError, httpcore.ProtocolError,
                httpcore.UnsupportedProtocol) as e:
            return ops.Outcome(False, error=f"{_describe(e)} ({address})", address=address)
        except Exception as e:  # a bug must not stop the sweep: the attempt records it
            log.exception("notification %s attempt %s", claimed.delivery_id, claimed.attempt)
            return ops.Outcome(False, error=f"internal error: {type(e).__name__}: {e}",
                               address=address)
        if 200 <= status < 300:
            return ops.Outcome(True, status_code=status, address=address)
        why = f"HTTP {status}" + (": redirects are not followed" if 300 <= status < 400
                                  else "")
        return ops.Outcome(False, status_code=status, error=why, address=address)
    return ops.Outcome(False, error=error, address=address)


def _describe(e: Exception) -> str:
    kinds: dict[type[Exception], str] = {httpcore.ConnectTimeout: "connect timeout"}
    kind = kinds.get(type(e))
    text = str(e).strip()
    return f"{kind or type(e).__name__}" + (f": {text}" if text else "")


def sweep(db: Db, settings: Settings, owner: str, limit: int = 50,
          resolver: urls.Resolver = urls.resolve, stop: threading.Event | None = None,
          until: float | None = None) -> int:
    """Claim, send and record due attempts one at a time, at most `limit`, and none once
    `stop` is set or time.monotonic() has passed `until` (a sweep ends at most one attempt,
    notify_timeout_seconds, after that); returns how many were made. `db(fn)` runs fn(session)
    in one transaction (the worker's and the reaper's helper): the claim and the record are
    short transactions of their own, and no transaction is open while a request is on the
    network."""
    lease = ops.lease_seconds(settings)
    made = 0
    while made < limit and not (stop is not None and stop.is_set()) \
            and not (until is not None and time.monotonic() >= until):
        claimed: ops.Claimed | None = db(
            lambda s: ops.claim(s, owner, lease, settings.notify_max_attempts))
        if claimed is None:
            break
        outcome = send(claimed, settings, resolver)

        def write(session: Session, c: ops.Claimed = claimed, o: ops.Outcome = outcome
                  ) -> str | None:
            return ops.record(session, c, o, settings)

        state = db(write)
        # The host only: a URL's path or query may hold the receiver's own token.
        log.info("notification %s attempt %s to %s: %s (%s)", claimed.delivery_id,
                 claimed.attempt, urlsplit(claimed.url).hostname, state,
                 outcome.status_code or outcome.error)
        made += 1
    return made
