"""Headless Chromium driven over the DevTools protocol with the standard library alone.

Chromium started with --remote-debugging-pipe reads protocol commands from its file descriptor 3 and writes
answers and events to descriptor 4, each message one JSON text followed by a NUL byte. `Browser` starts it
with a fresh temporary profile in its own process group, attaches to its page (flat sessions: page commands
carry a sessionId) and kills the whole group on close, whatever happened before. The browser tests and
examples/figures/screenshots.py use it.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) binary: $CHROMIUM, else the first of the usual names on PATH."""
    if os.environ.get("CHROMIUM"):
        return shutil.which(os.environ["CHROMIUM"])
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


class BrowserError(RuntimeError):
    """A protocol error, a page that did not do what was awaited in time, or a browser that went away."""


class TimedOut(BrowserError):
    """Nothing (or not what was awaited) came from Chromium in time."""


class Browser:
    """One headless Chromium with one page. `call` sends a page command and returns its result; `events`
    holds every event received so far as (method, params); `evaluate` runs JavaScript in the page."""

    def __init__(self, binary: str, width: int = 1200, height: int = 900, timeout: float = 60.0):
        self.timeout, self.events, self._next_id, self._buffer = timeout, [], 0, b""
        self._profile = tempfile.mkdtemp(prefix="imxlate-chromium-")
        to_child_r, self._write = os.pipe()
        self._read, from_child_w = os.pipe()
        # the child's ends, copied above the descriptors it needs (3 and 4, which may be ours) so that
        # moving them into place cannot overwrite one with the other
        child_in, child_out = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_child_r, from_child_w))
        for fd in (to_child_r, from_child_w):
            os.close(fd)
        args = [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                f"--user-data-dir={self._profile}", f"--window-size={width},{height}", "--hide-scrollbars",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--mute-audio", "about:blank"]
        # a small Python puts the two ends at 3 and 4 and becomes Chromium, in a process group of its own
        place = ("import os, sys; a, b = int(sys.argv[1]), int(sys.argv[2]); os.dup2(a, 3); os.dup2(b, 4); "
                 "os.close(a); os.close(b); os.execv(sys.argv[3], sys.argv[3:])")
        self.process = None
        try:
            self.process = subprocess.Popen([sys.executable, "-c", place, str(child_in), str(child_out), *args],
                                            pass_fds=(child_in, child_out), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                            start_new_session=True)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(child_in)
            os.close(child_out)
        try:
            pages = [t for t in self._send("Target.getTargets")["targetInfos"] if t["type"] == "page"]
            target = (pages[0] if pages else self._send("Target.createTarget", url="about:blank"))["targetId"]
            self.session = self._send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    # the protocol
    def _send(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')} {reply['error'].get('data', '')}")
                return reply.get("result", {})

    def _receive(self, deadline: float) -> dict:
        """The next message; events are recorded in `events` on the way."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise TimedOut("no answer from Chromium in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium closed the pipe (exit status {self.process.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self.events.append((message["method"], message.get("params", {})))
        return message

    def call(self, method: str, **params) -> dict:
        """Send a command to the page and return its result."""
        return self._send(method, self.session, **params)

    def pump(self, seconds: float) -> None:
        """Receive (and record) events for `seconds`."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                self._receive(deadline)
        except TimedOut:
            pass

    # what pages need
    def evaluate(self, expression: str, timeout: float | None = None):
        """The JSON value of a JavaScript expression in the page (awaited when it is a promise); a page
        exception is a BrowserError."""
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True,
                      timeout=int(1000 * (timeout or self.timeout)))
        if "exceptionDetails" in r:
            details = r["exceptionDetails"]
            what = (details.get("exception") or {}).get("description") or details.get("text")
            raise BrowserError(f"JavaScript: {what}")
        return r["result"].get("value")

    def open(self, url: str) -> None:
        """Navigate to `url` and wait until its load event has fired."""
        self.events.clear()
        r = self.call("Page.navigate", url=url)
        if r.get("errorText"):
            raise BrowserError(f"cannot open {url}: {r['errorText']}")
        deadline = time.monotonic() + self.timeout
        while not any(method == "Page.loadEventFired" for method, _ in self.events):
            self._receive(deadline)

    def wait_until(self, condition: str, timeout: float | None = None) -> None:
        """Wait until a JavaScript condition holds in the page."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.evaluate(f"Boolean({condition})"):
            if time.monotonic() > deadline:
                raise TimedOut(f"waited in vain for {condition}")
            self.pump(0.1)

    def load_images(self) -> list[dict]:
        """Scroll every <img> of the page into view (lazy ones load only then), wait until each has loaded or
        failed, and return for each its class, the start of its src and its natural size (0 when missing)."""
        return self.evaluate("""Promise.all([...document.images].map(async img => {
            img.scrollIntoView();
            await new Promise(done => { if (img.complete) done(); else img.onload = img.onerror = done; });
            return {cls: img.className, src: img.getAttribute('src').slice(0, 30), width: img.naturalWidth,
                    height: img.naturalHeight};
        })).then(found => { window.scrollTo(0, 0); return found; })""")

    def set_files(self, selector: str, *paths: Path) -> None:
        """Choose files in a file <input>, as a person picking them in the file dialog."""
        node = self.call("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")["result"]
        if node.get("subtype") != "node":
            raise BrowserError(f"no element {selector} on the page")
        self.call("DOM.setFileInputFiles", files=[str(Path(p).resolve()) for p in paths], objectId=node["objectId"])

    def fetch_bytes(self, url_expression: str) -> bytes:
        """The bytes behind a URL the page can fetch (a blob: or data: URL of an image, say)."""
        b64 = self.evaluate(f"""(async () => {{
            const bytes = new Uint8Array(await (await fetch({url_expression})).arrayBuffer());
            let s = '';
            for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
            return btoa(s); }})()""")
        return base64.b64decode(b64)

    def problems(self) -> list[str]:
        """Failed requests, error responses, console errors and uncaught exceptions since the last `open`."""
        self.pump(0.2)
        found = []
        for method, p in self.events:
            if method == "Network.loadingFailed" and not p.get("canceled"):
                found.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
            elif method == "Network.responseReceived" and p["response"].get("status", 200) >= 400:
                found.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
            elif method == "Runtime.exceptionThrown":
                found.append(f"exception: {p['exceptionDetails'].get('text')}")
            elif method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                args = [a.get("value", a.get("description")) for a in p.get("args", [])]
                found.append(f"console.{p['type']}: {args}")
            elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
                found.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return found

    def screenshot(self, path: Path, full_page: bool = False, max_height: int | None = None) -> None:
        """Write a PNG of the viewport (or of the whole page, up to `max_height` CSS pixels)."""
        params = {"format": "png"}
        if full_page:
            width, height = self.evaluate("[document.documentElement.scrollWidth, "
                                          "document.documentElement.scrollHeight]")
            height = min(height, max_height or height)
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        Path(path).write_bytes(base64.b64decode(self.call("Page.captureScreenshot", **params)["data"]))

    def close(self) -> None:
        """Kill Chromium's whole process group and remove its profile; safe to call twice."""
        if self.process is not None:
            try:  # the leader is not waited for yet, so the group's id cannot have been reused
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
            self.process = None
        for fd in (self._write, self._read):
            if fd >= 0:
                os.close(fd)
        self._write = self._read = -1
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def translate_on_page(browser: Browser, url: str, image: Path, to: str) -> None:
    """On the page of `imxlate serve` at `url`: choose `image` in the file input, the target domain `to`,
    press Translate and wait until the input and its translation are shown."""
    browser.open(url)
    browser.set_files("#file", image)
    browser.evaluate(f"document.getElementById('to').value = {json.dumps(to)}; "
                     "document.querySelector('#f button').click()")
    browser.wait_until("document.querySelectorAll('#out img').length === 2 && "
                       "[...document.querySelectorAll('#out img')].every(img => img.complete && img.naturalWidth)")
