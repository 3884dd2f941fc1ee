"""Sending notifications: one HTTP POST per attempt, and the sweep that claims due attempts,
sends them and records how they went (run by the reaper, and by each worker between jobs).

An attempt checks the URL again (urls.check_target: the allow-list may have changed, and the
name may resolve elsewhere now) and connects to an address that check returned, sending the
URL's host in the Host header and as the TLS server name, so certificates are verified for
the host. Redirects are not followed (a 3xx answer is a failed attempt), proxies from the
environment are not used, every step has a timeout, and at most ANSWER_BYTES of the answer
are read (and not kept: only its status is recorded).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy.orm import Session

from service.config import Settings
from service.notifications import ops, urls

log = logging.getLogger("lrsearch.notifications")
ANSWER_BYTES = 1024
MAX_ADDRESSES = 3  # tried in the resolver's order while connecting fails
USER_AGENT = "lrsearch-webhook/1"
Db = Callable[[Callable[[Session], Any]], Any]


def headers(claimed: ops.Claimed, secret: str, host: str, timestamp: int | None = None
            ) -> dict[str, str]:
    """The request's headers: JSON, the event, the delivery's id (the same on every attempt:
    a receiver uses it to ignore repeats), the attempt's number, and the signature."""
    stamp = int(time.time()) if timestamp is None else timestamp
    return {"Host": host, "Content-Type": "application/json", "User-Agent": USER_AGENT,
            "X-Lrsearch-Event": ops.EVENT, "X-Lrsearch-Delivery": claimed.delivery_id,
            "X-Lrsearch-Attempt": str(claimed.attempt),
            ops.SIGNATURE_HEADER: ops.signature(secret, stamp, claimed.body.encode())}


def _post(target: urls.Target, address: str, sent: dict[str, str], body: bytes,
          timeout: float) -> int:
    """POST to `address` (for the target's host); the answer's status. Raises httpx's
    errors."""
    parts = target.parts
    url = httpx.URL(scheme=parts.scheme.lower(), host=ipaddress.ip_address(address).compressed,
                    port=target.port,
                    raw_path=((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
                    .encode())
    extensions = {"sni_hostname": target.host} if parts.scheme.lower() == "https" else {}
    with httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False,
                      trust_env=False) as client, \
            client.stream("POST", url, content=body, headers=sent,
                          extensions=extensions) as answer:
        read = 0
        for chunk in answer.iter_raw():
            read += len(chunk)
            if read >= ANSWER_BYTES:
                break
        return answer.status_code


def send(claimed: ops.Claimed, settings: Settings,
         resolver: urls.Resolver = urls.resolve) -> ops.Outcome:
    """Make one attempt; never raises (every failure is the attempt's outcome)."""
    if claimed.secret is None:
        return ops.Outcome(False, error="not sent: " + ops.SECRET_MISSING.format(
            tenant=claimed.tenant))
    try:
        target = urls.check_target(claimed.url, settings.notify_allowed_hosts,
                                   settings.notify_timeout_seconds, resolver)
    except urls.Refused as e:
        return ops.Outcome(False, error=f"not sent: {e}")
    timeout = settings.notify_timeout_seconds
    sent = headers(claimed, claimed.secret, target.parts.netloc)
    body = claimed.body.encode()
    error, address = "no address", None
    for address in target.addresses[:MAX_ADDRESSES]:
        try:
            status = _post(target, address, sent, body, timeout)
        except (httpx.ConnectError, httpx.ConnectTimeout) as e:
            error = f"could not connect to {address}: {_describe(e)}"
            continue
        except httpx.HTTPError as e:
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


def _describe(e: httpx.HTTPError) -> str:
    kinds: dict[type[Exception], str] = {
        httpx.ConnectTimeout: "connect timeout", httpx.ReadTimeout: "read timeout",
        httpx.WriteTimeout: "write timeout", httpx.PoolTimeout: "timeout"}
    kind = kinds.get(type(e))
    text = str(e).strip()
    return f"{kind or type(e).__name__}" + (f": {text}" if text else "")


def sweep(db: Db, settings: Settings, owner: str, limit: int = 50,
          resolver: urls.Resolver = urls.resolve, stop: threading.Event | None = None) -> int:
    """Claim, send and record due attempts one at a time, at most `limit` (fewer once `stop`
    is set); returns how many were made. `db(fn)` runs fn(session) in one transaction (the
    worker's and the reaper's helper): the claim and the record are short transactions of
    their own, and no transaction is open while a request is on the network."""
    lease = ops.lease_seconds(settings)
    made = 0
    while made < limit and not (stop is not None and stop.is_set()):
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
