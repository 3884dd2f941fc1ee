"""A real headless Chromium driven over the DevTools protocol (a websocket): load a page,
collect every console error, uncaught exception and failed resource load, evaluate
JavaScript in the page, and act as a person does: type into a field, click (real mouse events
at the element's place on the screen) and follow the navigation a click starts (a link, a form
submission). No WebDriver needed: Debian's `chromium` package is enough."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    def __init__(self, executable: str, profile: Path, args: Sequence[str] = ()) -> None:
        """`args`: more command-line switches (e.g. --host-resolver-rules to give a host name
        to a local server)."""
        self.proc = subprocess.Popen(
            [executable, "--headless", "--no-sandbox", "--disable-background-networking",
             "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", *args, "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json()
                 if t["type"] == "page"]
        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(pages[0]["webSocketDebuggerUrl"],
                                                    max_size=None))
        self._id = 0
        self.events: list[dict[str, Any]] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def _pump(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                self.events.append(json.loads(self.ws.recv(timeout=0.1)))

    def load(self, url: str, timeout: float = 30) -> list[str]:
        """Navigate and wait for the load event (images included); return the problems the
        page had: console errors, uncaught exceptions, failed loads, HTTP errors."""
        self._drain()
        self.events.clear()
        self.call("Page.navigate", url=url)
        return self._loaded(url, timeout)

    def _drain(self) -> None:
        """Read what the browser already sent (a page that reloads itself, late events) so
        that none of it passes for the next page's."""
        with contextlib.suppress(TimeoutError):
            while True:
                self.events.append(json.loads(self.ws.recv(timeout=0.05)))

    def _loaded(self, what: str, timeout: float) -> list[str]:
        """Wait until a new document has replaced the page (the main frame navigated) and
        fired its load event."""
        deadline = time.monotonic() + timeout

        def done() -> bool:
            navigated = False
            for e in self.events:
                if e.get("method") == "Page.frameNavigated" and \
                        not e["params"]["frame"].get("parentId"):
                    navigated = True
                elif e.get("method") == "Page.loadEventFired" and navigated:
                    return True
            return False

        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} did not finish loading in {timeout}s")
            self._pump(0.2)
        self._pump(0.5)  # late console messages
        return self.problems()

    def _element(self, selector: str) -> str:
        """A JavaScript expression for the one element `selector` finds (an error if none)."""
        found = json.dumps(selector)
        return (f"(() => {{ const el = document.querySelector({found}); "
                f"if (!el) throw new Error('nothing matches ' + {found}); return el; }})()")

    def click(self, selector: str) -> None:
        """Click the element as a mouse does: scrolled into view, pressed and released at its
        centre (so whatever covers it, or a disabled control, gets the click instead)."""
        box = self.evaluate(f"(() => {{ const el = {self._element(selector)}; "
                            "el.scrollIntoView({block: 'center'}); "
                            "const r = el.getBoundingClientRect(); "
                            "return {x: r.x + r.width / 2, y: r.y + r.height / 2}; })()")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"],
                      button="left", clickCount=0 if kind == "mouseMoved" else 1)

    def type(self, selector: str, text: str) -> None:
        """Replace a text field's content with `text`, typed as keyboard input into it."""
        self.evaluate(f"(() => {{ const el = {self._element(selector)}; el.focus(); "
                      "el.select(); el.value = ''; })()")
        if text:
            self.call("Input.insertText", text=text)

    def choose(self, selector: str, value: str) -> None:
        """Pick an option of a <select> by its value (native pop-ups cannot be clicked in
        a headless browser); an error when there is no such option."""
        picked = self.evaluate(f"(() => {{ const el = {self._element(selector)}; "
                               f"el.value = {json.dumps(value)}; "
                               "el.dispatchEvent(new Event('change', {bubbles: true})); "
                               "return el.value; })()")
        if picked != value:
            raise ValueError(f"{selector} has no option {value!r}")

    def follow(self, selector: str, timeout: float = 30) -> list[str]:
        """Click a link or a submit button and wait until the page it leads to has loaded
        (after a POST's redirect); return that page's problems, as load does."""
        self._drain()
        self.events.clear()
        self.click(selector)
        return self._loaded(f"the page after clicking {selector}", timeout)

    def field(self, selector: str) -> Any:
        """A form control's current value (`checked` for a checkbox)."""
        return self.evaluate(f"(() => {{ const el = {self._element(selector)}; "
                             "return el.type === 'checkbox' ? el.checked : el.value; })()")

    def text_of(self, selector: str) -> str:
        return str(self.evaluate(f"{self._element(selector)}.innerText"))

    def path(self) -> str:
        return str(self.evaluate("location.pathname"))

    def problems(self) -> list[str]:
        found = []
        for e in self.events:
            method, p = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                found.append(f"console.{p['type']}: {p['args']}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {p['exceptionDetails']}")
            elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                found.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif method == "Network.loadingFailed":
                found.append(f"load failed: {p.get('errorText')}")
            elif method == "Network.responseReceived" and p["response"]["status"] >= 400:
                found.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        return found

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self._stack.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
