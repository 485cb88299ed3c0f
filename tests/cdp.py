"""A minimal headless-Chromium driver for the browser tests: the Chrome DevTools Protocol over
``--remote-debugging-pipe`` (the browser reads NUL-terminated JSON commands on its file descriptor 3 and writes
replies and events on 4), in the standard library only.

Why no package: the pipe needs no port, no WebSocket and no driver binary matched to the browser version (as
Selenium's chromedriver or Playwright's own browser builds do); the few protocol calls a test needs (open a page,
evaluate JavaScript, collect console errors, take a screenshot) fit in this file.

    with Chromium() as browser:
        page = browser.new_page(width=1400, height=900)
        page.goto("file:///.../index.html")
        page.evaluate("document.title")
        page.screenshot(path)
        page.errors()     # console errors, uncaught exceptions, failed loads
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--no-default-browser-check",
         "--mute-audio", "--remote-debugging-pipe")


class BrowserError(RuntimeError):
    """The browser could not start, died, answered with an error or did not answer in time."""


def find_chromium() -> str | None:
    """``$VBENCH_CHROMIUM``, else Debian's ``/usr/bin/chromium``, else ``chromium`` on the PATH; None if absent."""
    for candidate in (os.environ.get("VBENCH_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


class Chromium:
    """A headless Chromium with a fresh profile, driven over the DevTools pipe."""

    def __init__(self, executable: str | None = None, timeout: float = 30.0) -> None:
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("no Chromium found (install Debian's 'chromium' package or set VBENCH_CHROMIUM)")
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._buf = b""
        self.proc: subprocess.Popen | None = None
        self.profile = tempfile.mkdtemp(prefix="vbench-chromium-")

    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def child_fds() -> None:  # runs in the child: the pipe ends become fds 3 and 4, inheritable
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        argv = [self.executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=child_fds, close_fds=False,
                                     start_new_session=True)
        os.close(to_browser_r)
        os.close(from_browser_w)
        try:
            self.call("Browser.getVersion")
        except BrowserError as e:
            err = self._stderr_tail()
            self.close()
            raise BrowserError(f"{self.executable} did not start: {e}; stderr: {err}") from e

    def _stderr_tail(self) -> str:
        if self.proc is None or self.proc.stderr is None:
            return ""
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "(the browser is still running)"
        return self.proc.stderr.read().decode(errors="replace")[-2000:]

    def _send(self, message: dict[str, Any]) -> None:
        try:
            os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        except OSError as e:
            raise BrowserError(f"the browser closed its pipe ({e})") from e

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("timed out waiting for the browser")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise BrowserError("the browser closed its pipe")
                self._buf += chunk
        message, _, self._buf = self._buf.partition(b"\0")
        return json.loads(message)

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile go to `events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, session: str | None = None, timeout: float | None = None) -> dict[str, Any]:
        """The first event `method` (of `session`) not yet consumed, waiting for it if needed."""
        deadline = time.monotonic() + (timeout or self.timeout)
        seen = 0
        while True:
            for i in range(seen, len(self.events)):
                e = self.events[i]
                if e.get("method") == method and (session is None or e.get("sessionId") == session):
                    e["_consumed"] = True
                    return e
            seen = len(self.events)
            reply = self._receive(deadline)
            if "method" in reply:
                self.events.append(reply)

    def new_page(self, width: int = 1400, height: int = 900) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session)
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                          "mobile": False}, session=session)
        return page

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                self._send({"id": 0, "method": "Browser.close", "params": {}})
                self.proc.wait(timeout=10)
            except (BrowserError, subprocess.TimeoutExpired):
                pass
            if self.proc.poll() is None:  # its own process group (start_new_session): the browser's children
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        for fd in ("_to_browser", "_from_browser"):
            if hasattr(self, fd):
                try:
                    os.close(getattr(self, fd))
                except OSError:
                    pass
                delattr(self, fd)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab of a `Chromium`."""

    def __init__(self, browser: Chromium, session: str) -> None:
        self.browser = browser
        self.session = session

    def goto(self, url: str, timeout: float = 30.0) -> None:
        """Navigate and wait for the load event."""
        reply = self.browser.call("Page.navigate", {"url": url}, session=self.session)
        if reply.get("errorText"):
            raise BrowserError(f"cannot open {url}: {reply['errorText']}")
        self.browser.wait_event("Page.loadEventFired", session=self.session, timeout=timeout)

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """The JSON value of a JavaScript expression (promises are awaited); a thrown exception raises."""
        reply = self.browser.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                       "awaitPromise": True}, session=self.session, timeout=timeout)
        if "exceptionDetails" in reply:
            raise BrowserError(f"JavaScript error: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, interval: float = 0.1) -> Any:
        """Poll `expression` until it is truthy; returns its value (BrowserError after `timeout` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout} s waiting for: {expression}")
            time.sleep(interval)

    def screenshot(self, path: Path, full_page: bool = False) -> Path:
        """Save a PNG of the viewport (or of the whole page)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
            size = self.evaluate("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = self.browser.call("Page.captureScreenshot", params, session=self.session)["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads (log entries of level error) seen so far."""
        out = []
        for e in self.browser.events:
            if e.get("sessionId") != self.session:
                continue
            m, p = e.get("method"), e.get("params", {})
            if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif m == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                entry = p["entry"]
                out.append(f"log ({entry.get('source')}): {entry.get('text')} {entry.get('url', '')}".strip())
        return out
