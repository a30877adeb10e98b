"""A small Chrome DevTools Protocol client: start Debian's headless Chromium and script one page.

Used by tests/test_browser.py to drive the real ComfyUI web frontend. Only what that test
needs: navigate, evaluate JavaScript (promises awaited, results returned by value), and
collect the page's console errors and uncaught exceptions. Standard library plus
websocket-client (imported lazily).

    with Chromium() as browser:
        browser.navigate("http://127.0.0.1:8188/")
        browser.wait_for("window.app !== undefined")
        n = browser.evaluate("app.graph._nodes.length")
        assert not browser.errors

Protocol: https://chromedevtools.github.io/devtools-protocol/ (Page, Runtime, Log domains).
The browser is a process group of its own with a throw-away profile; close() kills the
group and removes the profile, also when start-up failed half-way.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from comfy_harness import _die_with_parent

DEFAULT_CHROMIUM = "/usr/bin/chromium"  # Debian's `chromium` package

# Headless, and quiet: no GPU, no network traffic of its own (updates, sync, QUIC probes).
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
    "--window-size=1600,1000", "--remote-debugging-port=0",
)


class CDPError(RuntimeError):
    """A protocol call failed, or the page threw while evaluating an expression."""


def find_chromium() -> str | None:
    """$TN_CHROMIUM if set, else /usr/bin/chromium; None when that is not an executable."""
    path = os.environ.get("TN_CHROMIUM") or DEFAULT_CHROMIUM
    return path if os.path.isfile(path) and os.access(path, os.X_OK) else None


class Chromium:
    """One headless Chromium process group with one page, driven over its DevTools websocket."""

    def __init__(self, binary: str | None = None, extra_flags: tuple[str, ...] = ()):
        self.binary = binary or find_chromium() or DEFAULT_CHROMIUM
        self.extra_flags = tuple(extra_flags)
        self.profile_dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.errors: list[str] = []  # console errors, uncaught exceptions, error log entries
        self._ws = None
        self._next_id = 0
        self._log_file = None

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> Chromium:
        """Launch the browser and attach to its first page (Page, Runtime, Log enabled)."""
        import websocket

        self.profile_dir = Path(tempfile.mkdtemp(prefix="tn-chromium-"))
        self._log_file = open(self.profile_dir / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [self.binary, *CHROMIUM_FLAGS, *self.extra_flags,
             f"--user-data-dir={self.profile_dir / 'profile'}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        port = self._wait_for_port(timeout)
        deadline = time.monotonic() + timeout
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
                pages = [t for t in json.loads(r.read()) if t.get("type") == "page"]
            if pages:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"Chromium opened no page within {timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.1)
        # No Origin header: Chromium refuses DevTools websockets from origins it was not told about.
        self._ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout,
                                               suppress_origin=True)
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        return self

    def _wait_for_port(self, timeout: float) -> int:
        """The DevTools port Chromium picked (--remote-debugging-port=0), from DevToolsActivePort."""
        port_file = self.profile_dir / "profile" / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited with code {self.proc.returncode} during "
                                   f"start-up\n{self.log_tail()}")
            try:
                first_line = port_file.read_text().splitlines()[0]
                return int(first_line)
            except (FileNotFoundError, IndexError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.binary} wrote no DevToolsActivePort within {timeout:.0f}s\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)

    def close(self) -> None:
        """Ask the browser to quit (so it reaps its own helpers), then kill whatever is left of
        its process group (only ours) and delete its profile."""
        if self._ws is not None:
            try:
                self.call("Browser.close", timeout=5)
            except Exception:  # noqa: BLE001 - it may be gone already, or hang: killed below
                pass
            try:
                self._ws.close()
            except Exception:  # noqa: BLE001
                pass
            self._ws = None
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                time.sleep(0.5)
            if self.proc.poll() is None:
                self.proc.wait(5)
            self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self.profile_dir is not None:
            shutil.rmtree(self.profile_dir, ignore_errors=True)
            self.profile_dir = None

    def __enter__(self) -> Chromium:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc) -> None:
        self.close()

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.profile_dir / "chromium.log").read_text(errors="replace")[-chars:]
        except (OSError, TypeError):
            return ""

    # ---- protocol ----------------------------------------------------------------------
    def call(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        """Send one command and return its result; events that arrive meanwhile are recorded."""
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({"id": call_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer to {method} within {timeout:.0f}s")
            self._ws.settimeout(remaining)
            msg = json.loads(self._ws.recv())
            if msg.get("id") == call_id:
                if "error" in msg:
                    raise CDPError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self._on_event(msg["method"], msg.get("params", {}))

    def _on_event(self, method: str, params: dict) -> None:
        if method == "Runtime.exceptionThrown":
            d = params.get("exceptionDetails", {})
            desc = (d.get("exception") or {}).get("description") or d.get("text", "")
            self.errors.append(f"uncaught exception: {desc} ({d.get('url', '')}:{d.get('lineNumber', '')})")
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append("console.error: " + " ".join(_remote_text(a) for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            e = params["entry"]
            self.errors.append(f"log error ({e.get('source')}): {e.get('text')} {e.get('url', '')}".rstrip())

    def drain(self) -> None:
        """Record the events that arrived while nobody was calling (a cheap round trip)."""
        self.call("Runtime.evaluate", {"expression": "0"})

    def navigate(self, url: str, timeout: float = 60.0) -> None:
        """Open url; returns once the document's load event fired."""
        result = self.call("Page.navigate", {"url": url}, timeout)
        if result.get("errorText"):
            raise CDPError(f"navigating to {url}: {result['errorText']}")
        self.wait_for("document.readyState === 'complete'", timeout)

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """Value of a JavaScript expression in the page (a promise is awaited); the page's
        exception becomes a CDPError with its stack."""
        result = self.call("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
            "userGesture": True, "timeout": int(timeout * 1000),
        }, timeout + 5)
        if "exceptionDetails" in result:
            d = result["exceptionDetails"]
            desc = (d.get("exception") or {}).get("description") or d.get("text", "")
            raise CDPError(f"JavaScript threw: {desc}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, poll: float = 0.1) -> Any:
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression, timeout=max(1.0, deadline - time.monotonic()))
            except CDPError:
                value = None  # e.g. the page is between documents
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout:.0f}s: {expression}")
            time.sleep(poll)


def _remote_text(obj: dict) -> str:
    """Readable text of a Runtime.RemoteObject (a console argument)."""
    if "value" in obj:
        return obj["value"] if isinstance(obj["value"], str) else json.dumps(obj["value"])
    return obj.get("description") or obj.get("type", "")
