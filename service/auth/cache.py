"""A short-lived, per-process memory of API key checks, so that an authenticated request does
not query `api_keys` every time, and an anonymous one does not ask "was any key ever made".

Contract (LRSEARCH_KEY_CACHE_SECONDS, `seconds` here; 0 turns the cache off):

- Only keys found active are remembered, as sha256(key) -> (tenant, when checked); the key
  itself is never kept. A key that fails is checked against the database every time, so a
  key created a moment ago (in any process) works at once.
- A key revoked in another process (`lrsearch keys revoke`) keeps working in each API process
  for at most `seconds` after that process last checked it. A key revoked in this process is
  forgotten by every cache of this process as soon as the revocation commits.
- "Some key exists" is remembered for good once true: keys are never deleted, and anonymous
  access ends with the first key. "No key exists" is remembered for at most `seconds`: a key
  created in another process ends anonymous access here within that time (in this process,
  creating one ends it as soon as its transaction commits).
- At most `max_entries` keys are remembered; the least recently used goes first.

Each app (`service.main.create_app`) has its own cache, told which database it serves, so apps
of different databases in one process (the tests) never share what they learnt.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable

from sqlalchemy.engine import URL, make_url

MAX_ENTRIES = 10_000

_caches: weakref.WeakSet[KeyCache] = weakref.WeakSet()
_caches_lock = threading.Lock()


def database_id(url: str | URL) -> str:
    """One spelling of a database URL (password included, never shown), so that an app's cache
    and a session's bind compare equal when they reach the same database."""
    return make_url(url).render_as_string(hide_password=False)


class KeyCache:
    """Thread-safe: requests check keys from the thread pool and the event loop at once."""

    def __init__(self, seconds: float, database: str | URL, *, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if seconds < 0:
            raise ValueError(f"Argument `seconds` must be >= 0. Received: seconds={seconds}")
        if max_entries < 1:
            raise ValueError("Argument `max_entries` must be >= 1. Received: "
                             f"max_entries={max_entries}")
        self.seconds, self.max_entries, self.clock = seconds, max_entries, clock
        self.database = database_id(database)
        self._lock = threading.Lock()
        self._tenants: OrderedDict[str, tuple[str, float]] = OrderedDict()
        # Bumped by every `forget`: a check that began before a revocation in this process
        # must not put the key back once the revocation has removed it.
        self._generation = 0
        self._keys_exist = False  # true: for good
        self._no_keys_until = -float("inf")  # "no key exists" is believed until then
        with _caches_lock:
            _caches.add(self)

    @property
    def enabled(self) -> bool:
        return self.seconds > 0

    def tenant(self, key_hash: str) -> str | None:
        """The tenant of a key found active less than `seconds` ago, or None (ask the
        database)."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._tenants.get(key_hash)
            if entry is None:
                return None
            tenant, checked = entry
            if self.clock() - checked >= self.seconds:
                del self._tenants[key_hash]
                return None
            self._tenants.move_to_end(key_hash)
            return tenant

    def ticket(self) -> tuple[float, int]:
        """Taken before a check of the database, and given back to `remember`."""
        with self._lock:
            return self.clock(), self._generation

    def remember(self, key_hash: str, tenant: str, ticket: tuple[float, int]) -> None:
        """A key found active by a check that took `ticket` before it began. Its time runs
        from the start of the check, so a revocation committed elsewhere during the check
        still ends it within `seconds`; and if a key was revoked in this process meanwhile,
        nothing is remembered (it may have been this one)."""
        if not self.enabled:
            return
        checked, generation = ticket
        with self._lock:
            if generation != self._generation:
                return
            self._tenants[key_hash] = (tenant, checked)
            self._tenants.move_to_end(key_hash)
            while len(self._tenants) > self.max_entries:
                self._tenants.popitem(last=False)

    def forget(self, key_hash: str) -> None:
        with self._lock:
            self._generation += 1
            self._tenants.pop(key_hash, None)

    def keys_exist(self) -> bool | None:
        """True once a key was seen; False while a recent check found none; None: ask."""
        with self._lock:
            if self._keys_exist:
                return True
            if self.enabled and self.clock() < self._no_keys_until:
                return False
            return None

    def remember_keys_exist(self, exist: bool, ticket: tuple[float, int]) -> None:
        """What a check that took `ticket` before it began found."""
        checked, _ = ticket
        with self._lock:
            if exist:
                self._keys_exist = True
            elif self.enabled and not self._keys_exist:
                self._no_keys_until = checked + self.seconds

    def key_created(self) -> None:
        """A key was created in this process: anonymous access ends now."""
        with self._lock:
            self._keys_exist = True

    def __len__(self) -> int:
        with self._lock:
            return len(self._tenants)


def forget_everywhere(key_hash: str) -> None:
    """A key was revoked in this process: every cache here forgets it (a cache of another
    database never held it, and forgetting costs it nothing)."""
    with _caches_lock:
        caches = list(_caches)
    for cache in caches:
        cache.forget(key_hash)


def key_created(database: str | URL) -> None:
    """A key was created in this process's `database`: the caches of that database stop
    believing that no key exists."""
    name = database_id(database)
    with _caches_lock:
        caches = list(_caches)
    for cache in caches:
        if cache.database == name:
            cache.key_created()
