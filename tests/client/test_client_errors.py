"""The client's own rules, on canned HTTP answers (the end-to-end tests use a real server):
reads retried on 503 after Retry-After, writes never retried, one error type for every
failure with the API's fields."""

from __future__ import annotations

import httpx
import pytest

from lrsearch.client import GET_RETRIES, Client, ClientError


def busy_then(final: httpx.Response, busy: int) -> tuple[httpx.MockTransport, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.method)
        if len(seen) <= busy:
            return httpx.Response(503, headers={"Retry-After": "0"},
                                  json={"type": "unavailable", "detail": "The database is busy"})
        return final

    return httpx.MockTransport(handler), seen


def test_reads_are_retried_after_a_503() -> None:
    transport, seen = busy_then(httpx.Response(200, json={"id": "s1", "status": "running"}), 2)
    with Client("http://x", transport=transport) as c:
        assert c.study("s1")["status"] == "running"
    assert seen == ["GET"] * 3


def test_a_busy_server_ends_in_a_clear_error() -> None:
    transport, seen = busy_then(httpx.Response(200, json={}), 100)
    with Client("http://x", transport=transport) as c, pytest.raises(ClientError) as e:
        c.study("s1")
    assert (e.value.status, e.value.type) == (503, "unavailable")
    assert len(seen) == GET_RETRIES + 1


def test_writes_are_not_retried() -> None:
    transport, seen = busy_then(httpx.Response(201, json={"id": "s1"}), 1)
    with Client("http://x", transport=transport) as c, pytest.raises(ClientError) as e:
        c.submit({"family": "cosine"})
    assert e.value.status == 503 and seen == ["POST"]


def test_an_error_that_is_not_ours_keeps_its_text() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(502, text="Bad Gateway from nginx"))
    with Client("http://x", transport=transport) as c, pytest.raises(ClientError) as e:
        c.health()
    assert (e.value.status, e.value.type, e.value.detail) == (502, "http_error",
                                                               "Bad Gateway from nginx")
