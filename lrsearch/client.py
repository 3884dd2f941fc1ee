"""The Python client for an lrsearch server (httpx). Works the same in a script or a notebook:

    from lrsearch.client import Client

    with Client("http://127.0.0.1:8000") as c:        # or Client() with LRSEARCH_URL / _API_KEY
        study = c.submit({"family": "one_cycle", "dataset": "digits", "epochs": 5,
                          "n_trials": 20})
        c.wait(study["id"], timeout=3600)
        best = c.best(study["id"])                     # params, curves, Keras config, snippet

Every error the server reports (and every transport failure) is raised as one `ClientError`
carrying the API's `type`, `detail`, `field` and the HTTP status.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
STUDY_DONE = frozenset({"succeeded", "failed", "cancelled"})
RANGE_TEST_DONE = frozenset({"succeeded", "failed"})
DATASET_DONE = frozenset({"ready", "failed"})
PLOT_KINDS = ("lr_curves", "history", "leaderboard", "importance", "params")
GET_RETRIES = 3


class ClientError(Exception):
    """An error answered by the server (`status` > 0) or a failure to reach it (`status` 0,
    `type` "unreachable"), or a wait that ran out of time (`type` "timeout")."""

    def __init__(self, type_: str, detail: str, *, status: int = 0, field: str | None = None
                 ) -> None:
        super().__init__(f"{detail} ({type_}, HTTP {status})" if status else detail)
        self.type, self.detail, self.status, self.field = type_, detail, status, field


class Client:
    """Typed methods for every endpoint of the v1 API. `url` and `api_key` default to the
    environment variables LRSEARCH_URL and LRSEARCH_API_KEY."""

    def __init__(self, url: str | None = None, api_key: str | None = None, *,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None) -> None:
        self.url = (url or os.environ.get("LRSEARCH_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("LRSEARCH_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout,
                                  transport=transport)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- transport -----------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; a GET answered 503 (database busy) is retried up to GET_RETRIES times
        after the server's Retry-After (at most 5 s each): reads are safe to repeat."""
        for attempt in range(GET_RETRIES + 1):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as e:
                raise ClientError("unreachable", f"cannot reach the lrsearch server at "
                                  f"{self.url}: {e}. Is it running (`lrsearch serve`)? Set "
                                  "LRSEARCH_URL or --url to its address.") from None
            if response.status_code == 503 and method == "GET" and attempt < GET_RETRIES:
                time.sleep(_retry_after(response))
                continue
            break
        if response.status_code >= 400:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        return None if response.status_code == 204 else response.json()

    # -- health and catalog --------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        return self._json("GET", "/healthz")

    def ready(self) -> dict[str, Any]:
        return self._json("GET", "/readyz")

    def schedules(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/schedules")

    def schedule(self, family: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/schedules/{family}")

    def preview(self, family: str, params: dict[str, Any], *, epochs: int,
                steps_per_epoch: int, points: int = 1000) -> dict[str, Any]:
        body = {"params": params, "epochs": epochs, "steps_per_epoch": steps_per_epoch,
                "points": points}
        return self._json("POST", f"/v1/schedules/{family}/preview",
                          json=body)

    # -- models --------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        """Built-in architectures, the workers' plugin builders and your uploads (`source`)."""
        return self._json("GET", "/v1/models")

    def model(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/models/{name}")

    def upload_model(self, name: str, path: str | Path) -> dict[str, Any]:
        """Upload a `.keras` file (what `model.save("net.keras")` writes) as NAME; studies and
        range tests then use `{"upload": NAME, "init": "uploaded" | "fresh"}` as `model`."""
        with open(path, "rb") as f:
            return self._json("POST", "/v1/models",
                              data={"name": name}, files={"file": (Path(path).name, f)})

    def delete_model(self, name: str) -> None:
        self._json("DELETE", f"/v1/models/{name}")

    def optimizers(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/optimizers")

    # -- datasets ------------------------------------------------------------------------
    def datasets(self) -> list[dict[str, Any]]:
        return self._json("GET", "/v1/datasets")

    def dataset(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/datasets/{name}")

    def upload_dataset(self, name: str, path: str | Path) -> dict[str, Any]:
        """Upload an .npz with x_train, y_train and optionally x_val, y_val."""
        with open(path, "rb") as f:
            return self._json("POST", "/v1/datasets",
                              data={"name": name}, files={"file": (Path(path).name, f)})

    def data_roots(self) -> dict[str, Any]:
        """{"roots": where dataset references may point, "downloads": whether workers
        download Keras datasets on demand}."""
        return self._json("GET", "/v1/data-roots")

    def register_dataset(self, name: str, source: dict[str, Any]) -> dict[str, Any]:
        """Register a dataset reference: files the workers read, under the server's data roots
        (`source` = {"kind": "image_folder" | "csv" | "tfrecord" | "npy", "uri": ..., options})
        or a Keras dataset to download ({"kind": "keras", "dataset": "cifar10"}). It is
        `pending` until a worker has read it; see `wait_dataset`."""
        return self._json("POST", "/v1/datasets", json={"name": name, "source": source})

    def wait_dataset(self, name: str, *, timeout: float | None = None, poll: float = 1.0
                     ) -> dict[str, Any]:
        """Poll a dataset until its registration ends (`ready` or `failed`)."""
        return self._wait(lambda: self.dataset(name), DATASET_DONE, f"dataset {name}",
                          timeout, poll, None)

    def delete_dataset(self, name: str) -> None:
        self._json("DELETE", f"/v1/datasets/{name}")

    # -- studies -------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any], *, idempotency_key: str | None = None
               ) -> dict[str, Any]:
        """Submit a study (the body of POST /v1/studies); returns the study."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._json("POST", "/v1/studies", json=spec,
                          headers=headers)

    def studies(self, *, status: str | None = None, offset: int = 0, limit: int = 50
                ) -> dict[str, Any]:
        params: dict[str, Any] = {"offset": offset, "limit": limit}
        if status:
            params["status"] = status
        return self._json("GET", "/v1/studies", params=params)

    def study(self, study_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/studies/{study_id}")

    def best(self, study_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/studies/{study_id}/best")

    def importance(self, study_id: str) -> dict[str, Any]:
        """Parameter importance per family (`importances`: family -> parameter -> share) and
        why a family has none (`reasons`)."""
        return self._json("GET", f"/v1/studies/{study_id}/importance")

    def trials(self, study_id: str, *, offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return self._json("GET", f"/v1/studies/{study_id}/trials",
                          params={"offset": offset, "limit": limit})

    def all_trials(self, study_id: str) -> list[dict[str, Any]]:
        """Every trial of a study, page by page."""
        items: list[dict[str, Any]] = []
        while True:
            page = self.trials(study_id, offset=len(items), limit=500)
            items += page["items"]
            if not page["items"] or len(items) >= page["total"]:
                return items

    def trial(self, study_id: str, number: int, role: str = "search") -> dict[str, Any]:
        """One trial with its history: a search trial by its Optuna number, or (role
        "baseline") a trial of the constant-LR baseline by its own study's number."""
        return self._json("GET", f"/v1/studies/{study_id}/trials/{number}",
                          params={"role": role} if role != "search" else None)

    def cancel(self, study_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/studies/{study_id}/cancel")

    def delete(self, study_id: str) -> None:
        self._json("DELETE", f"/v1/studies/{study_id}")

    def study_plot(self, study_id: str, kind: str = "lr_curves") -> bytes:
        """A PNG: `lr_curves` (top trials' LR and validation curves), `history` (optimization
        history), `leaderboard` (best value per family), `importance` (parameter importance
        per family) or `params` (each searched parameter against the objective)."""
        return self._request("GET", f"/v1/studies/{study_id}/plots/{kind}.png").content

    def wait(self, study_id: str, *, timeout: float | None = None, poll: float = 2.0,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll until the study is succeeded, failed or cancelled; return it. `on_progress`
        gets the study at every poll. Raises ClientError("timeout") after `timeout` seconds."""
        return self._wait(lambda: self.study(study_id), STUDY_DONE, f"study {study_id}",
                          timeout, poll, on_progress)

    def notifications(self, study_id: str) -> list[dict[str, Any]]:
        """The study's end notification (a list: empty until the study ends, or when it asked
        for none), each with its state, payload and every attempt (status code or error,
        timestamps, when the next is due)."""
        items: list[dict[str, Any]] = self._json(
            "GET", f"/v1/studies/{study_id}/notifications")["items"]
        return items

    def rotate_webhook_secret(self) -> dict[str, Any]:
        """A new secret signing this tenant's notifications (`secret`, shown only in this
        answer); the previous one stops signing at once."""
        return self._json("POST", "/v1/webhook-secret")

    def webhook_secret(self) -> dict[str, Any]:
        """Whether this tenant has a webhook secret, and since when (never the secret)."""
        return self._json("GET", "/v1/webhook-secret")

    # -- range tests ---------------------------------------------------------------------
    def range_test(self, spec: dict[str, Any], *, idempotency_key: str | None = None
                   ) -> dict[str, Any]:
        """Queue an LR range test (the body of POST /v1/range-tests)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return self._json("POST", "/v1/range-tests", json=spec,
                          headers=headers)

    def range_tests(self, *, offset: int = 0, limit: int = 50) -> dict[str, Any]:
        return self._json("GET", "/v1/range-tests",
                          params={"offset": offset, "limit": limit})

    def get_range_test(self, test_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/range-tests/{test_id}")

    def cancel_range_test(self, test_id: str) -> dict[str, Any]:
        """Cancel a queued or running range test (409 once it has finished)."""
        return self._json("POST", f"/v1/range-tests/{test_id}/cancel")

    def delete_range_test(self, test_id: str) -> None:
        """Delete a finished range test (409 while it is queued or running)."""
        self._json("DELETE", f"/v1/range-tests/{test_id}")

    def range_test_plot(self, test_id: str) -> bytes:
        """A PNG: the smoothed loss against the LR (log axis) with the suggestions marked."""
        return self._request("GET", f"/v1/range-tests/{test_id}/plot.png").content

    def wait_range_test(self, test_id: str, *, timeout: float | None = None, poll: float = 1.0,
                        on_progress: Callable[[dict[str, Any]], None] | None = None
                        ) -> dict[str, Any]:
        return self._wait(lambda: self.get_range_test(test_id), RANGE_TEST_DONE,
                          f"range test {test_id}", timeout, poll, on_progress)

    # -- operations ----------------------------------------------------------------------
    def metrics(self) -> str:
        """The Prometheus text exposition of /metrics."""
        return self._request("GET", "/metrics").text

    @staticmethod
    def _wait(get: Callable[[], dict[str, Any]], done: frozenset[str], what: str,
              timeout: float | None, poll: float,
              on_progress: Callable[[dict[str, Any]], None] | None) -> dict[str, Any]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = get()
            if on_progress is not None:
                on_progress(current)
            if current["status"] in done:
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise ClientError("timeout", f"{what} is still {current['status']} after "
                                  f"{timeout:g} s")
            time.sleep(poll if deadline is None else
                       max(0.0, min(poll, deadline - time.monotonic())))


SIGNATURE_TOLERANCE = 300.0  # seconds a notification's timestamp may be from the clock


def verify_signature(secret: str, body: bytes, header: str, *,
                     tolerance: float = SIGNATURE_TOLERANCE, now: float | None = None) -> bool:
    """Whether a study-end notification is genuine: `header` is its X-Lrsearch-Signature
    (`t=<unix seconds>,v1=<hex>`), `body` the raw bytes received (not re-serialised JSON),
    `secret` the tenant's webhook secret. True when v1 is HMAC-SHA256(secret, "<t>." + body)
    (compared in constant time) and t is within `tolerance` seconds of `now` (the clock by
    default), so a captured request cannot be replayed later. False, never an exception, for
    any malformed header (empty, a part missing, a non-integer t, non-ASCII text).

    The window does not stop a replay within it: dedupe on the body's `delivery_id` (signed,
    unlike the X-Lrsearch-Delivery header) as well."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        fields.setdefault(key, []).append(value)
    try:
        text = fields["t"][0]
        if not (text.isascii() and text.isdigit()):  # int() would take "١٢", " 12", "1_2"
            return False
        stamp = int(text)
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        return False
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body,
                        hashlib.sha256).hexdigest().encode()
    # compare_digest refuses str with non-ASCII characters (TypeError): compare bytes.
    return any(hmac.compare_digest(expected, given.encode()) for given in fields.get("v1", []))


def _retry_after(response: httpx.Response) -> float:
    try:
        return min(5.0, max(0.0, float(response.headers.get("retry-after", "1"))))
    except ValueError:
        return 1.0


def _error(response: httpx.Response) -> ClientError:
    """The API's {"type", "detail", "field"} body, or the raw text when it is not ours."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if not isinstance(detail, str):  # a framework error shape: keep it readable
            detail = str(detail)
        return ClientError(str(body.get("type", "error")), detail, status=response.status_code,
                           field=body.get("field"))
    text = response.text.strip()[:500] or response.reason_phrase
    return ClientError("http_error", text, status=response.status_code)
