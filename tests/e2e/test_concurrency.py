"""Many clients at once against the real server: 64 concurrent pollers (B4's load) all get
answers. This once deadlocked: every pool thread blocked waiting for a database connection
while the requests holding the connections waited for a thread to finish, and after the pool's
30 s timeout the waiting requests answered 500 (503 once that was mapped). DatabaseSlots in
service/main.py now lets in only as many requests as there are connections."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import httpx

from tests.e2e.conftest import Server


async def _poll(url: str, path: str, clients: int, each: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:
        async def client() -> None:
            for _ in range(each):
                statuses[(await http.get(path)).status_code] += 1

        await asyncio.gather(*(client() for _ in range(clients)))
    return statuses


def test_64_concurrent_pollers_all_get_answers(server: Server,
                                               finished_study: dict[str, Any]) -> None:
    statuses = asyncio.run(_poll(server.url, f"/v1/studies/{finished_study['id']}", 64, 15))
    assert statuses == Counter({200: 64 * 15})
