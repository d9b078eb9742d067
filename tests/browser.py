"""Headless Chromium driven over the Chrome DevTools Protocol, with the standard library only.

Chromium talks CDP over a pair of pipes (``--remote-debugging-pipe``: it reads commands on
file descriptor 3 and writes replies and events on 4, each a JSON message ended by a NUL
byte), so there is no port to find, no websocket client to install, and nothing that listens
on the network. :class:`Chromium` opens a page, records what it logs and every request it
makes, evaluates expressions and takes screenshots. The report tests and
tests/insights_screenshot.py (the picture in the docs) use it.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--hide-scrollbars",
    "--mute-audio",
    # Nothing leaves the machine, whatever a page asks for: no name resolves, and any
    # connection goes to a proxy on a closed local port.
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=http://127.0.0.1:9",
)


def executable() -> str | None:
    """Chromium's path, when it is installed: ``$CHROMIUM``, Debian's ``chromium`` or
    Ubuntu's ``chromium-browser``."""
    found = os.environ.get("CHROMIUM") or CHROMIUM
    if os.access(found, os.X_OK):
        return found
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(Exception):
    """Chromium failed, or answered a command with an error."""


@dataclass
class Page:
    """What a page did while it loaded: console messages, log entries, uncaught exceptions
    and the URLs it requested."""

    console: list[tuple[str, str]] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    exceptions: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        """Console errors and warnings, error log entries and uncaught exceptions."""
        return (
            [
                f"console.{kind}: {text}"
                for kind, text in self.console
                if kind in {"error", "warning", "assert"}
            ]
            + [f"log {level}: {text}" for level, text in self.logs if level in {"error", "warning"}]
            + [f"exception: {text}" for text in self.exceptions]
        )


class Chromium:
    """One headless Chromium with one tab; use as a context manager."""

    def __init__(self, *, width: int = 1100, height: int = 900, timeout: float = 20.0) -> None:
        path = executable()
        if path is None:
            raise BrowserError(
                "Chromium is not installed (apt-get install chromium; bash scripts/test does it)"
            )
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="twilio-feedback-chromium-")
        commands_read, commands_write = os.pipe()  # Chromium reads its commands on fd 3
        replies_read, replies_write = os.pipe()  # and writes replies and events on fd 4
        # Its ends go to descriptors above 9 first, so bash's redirections to 3 and 4
        # cannot clash with them.
        theirs = [
            fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (commands_read, replies_write)
        ]
        os.close(commands_read)
        os.close(replies_write)
        self._write, self._read = commands_write, replies_read
        script = f'exec "$@" 3<&{theirs[0]} 4>&{theirs[1]} {theirs[0]}<&- {theirs[1]}>&-'
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self.process = subprocess.Popen(
            [
                "/bin/bash",
                "-c",
                script,
                "chromium",
                path,
                *FLAGS,
                f"--user-data-dir={self.profile}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            pass_fds=theirs,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        for fd in theirs:
            os.close(fd)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable", session=True)
            self.call(
                "Emulation.setDeviceMetricsOverride",
                session=True,
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the protocol -------------------------------------------------------------------

    def _send(self, method: str, params: dict[str, Any], session: bool) -> int:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._write, data) :]
        return self._next_id

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited: {self._stderr()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept."""
        ident = self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == ident:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result
            self._events.append(message)

    def _wait_event(self, method: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        for index, event in enumerate(self._events):
            if event.get("method") == method:
                return self._events.pop(index)
        while True:
            message = self._receive(deadline)
            if message.get("method") == method:
                return message
            self._events.append(message)

    # -- pages --------------------------------------------------------------------------

    def open(self, path: Path | str) -> Page:
        """Load a file (or URL) and wait for its load event; what it did comes back."""
        url = Path(path).resolve().as_uri() if isinstance(path, Path) else path
        self._events.clear()
        self.call("Page.navigate", session=True, url=url)
        self._wait_event("Page.loadEventFired")
        # A round trip after the load event: the events the page sent before it are in.
        self.evaluate("document.readyState")
        page = Page()
        for event in self._events:
            params = event.get("params", {})
            method = event.get("method")
            if method == "Runtime.consoleAPICalled":
                text = " ".join(
                    str(arg.get("value", arg.get("description", ""))) for arg in params["args"]
                )
                page.console.append((params["type"], text))
            elif method == "Log.entryAdded":
                page.logs.append((params["entry"]["level"], params["entry"]["text"]))
            elif method == "Runtime.exceptionThrown":
                details = params["exceptionDetails"]
                page.exceptions.append(
                    details.get("exception", {}).get("description") or details["text"]
                )
            elif method == "Network.requestWillBeSent":
                page.requests.append(params["request"]["url"])
        self._events.clear()
        return page

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serializable values)."""
        result = self.call(
            "Runtime.evaluate", session=True, expression=expression, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, *, full_page: bool = True) -> bytes:
        """A PNG of the page (all of it, or the viewport), written to ``path``."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.evaluate(
                "[document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
            )
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
            params["captureBeyondViewport"] = True
        data = base64.b64decode(self.call("Page.captureScreenshot", session=True, **params)["data"])
        path.write_bytes(data)
        return data

    # -- the end ------------------------------------------------------------------------

    def _stderr(self) -> str:
        with contextlib.suppress(Exception):
            self.process.wait(timeout=2)
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        """Close the browser (politely, then for sure) and remove its profile."""
        if self.process.poll() is None:
            with contextlib.suppress(Exception):
                self._send("Browser.close", {}, False)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for fd in (self._write, self._read):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


@contextlib.contextmanager
def chromium(**options: Any) -> Iterator[Chromium]:
    """A :class:`Chromium`, closed after the block."""
    browser = Chromium(**options)
    try:
        yield browser
    finally:
        browser.close()


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, read from its header (which must be there)."""
    if data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
