"""A headless Chromium driven over the DevTools protocol on a pipe: what the playground's browser test needs, no more.

    with Chromium() as browser:                       # None from find_chromium(): the test is skipped
        page = browser.open("http://127.0.0.1:8000/")
        page.js("document.title")                     # evaluate, awaiting a promise, the value back as JSON
        page.type("#gen-prompt", "In the beginning")  # focus + Input.insertText, as a keyboard would
        page.wait("document.querySelectorAll('tr').length > 1")
        page.screenshot("runs/demo/serve/generate.png")

    python -m tests.browser http://127.0.0.1:8000/ docs/serve    # every tab of a running server used, then shot

Why this and not selenium or playwright: Chromium speaks the DevTools protocol on two inherited file descriptors
(`--remote-debugging-pipe`: commands on fd 3, answers on fd 4, JSON messages ended by a NUL byte), so the whole
client is a subprocess and a reader thread from the standard library: no chromedriver whose version must match,
no websocket package, no browser download (playwright fetches its own builds, which an offline machine cannot), and
nothing to add to the dev extra. Debian's `chromium` package is the browser (`.ci/run` installs it when it can).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TABS = ("generate", "translate", "search", "report")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class CDPError(RuntimeError):
    pass


class Chromium:
    """A headless Chromium process and its DevTools pipe."""

    def __init__(self, binary: str | None = None, width: int = 1280, height: int = 900, timeout: float = 30):
        binary = binary or find_chromium()
        if binary is None:
            raise FileNotFoundError("no chromium on PATH; install Debian's `chromium` package")
        self.timeout, self.width, self.height = timeout, width, height
        self.profile = tempfile.mkdtemp(prefix="xling-chromium-")
        # four pipe ends moved above the low numbers, so placing two of them at 3 and 4 in the child clobbers none
        to_child, from_parent = _high(os.pipe())
        from_child, to_parent = _high(os.pipe())
        args = [binary, "--headless", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}", "about:blank"]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox

        def child_fds() -> None:
            os.dup2(to_child, 3)
            os.dup2(to_parent, 4)

        self.proc = subprocess.Popen(args, preexec_fn=child_fds, close_fds=False, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_child, to_parent):
            os.close(fd)
        self._out = os.fdopen(from_parent, "wb", buffering=0)
        self._in = os.fdopen(from_child, "rb", buffering=0)
        self._next_id = 0
        self._answers: dict[int, dict] = {}
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._read, daemon=True, name="cdp-reader").start()
        self.send("Browser.getVersion")  # the pipe works

    def _read(self) -> None:
        buf = b""
        while True:
            chunk = self._in.read(65536)
            if not chunk:
                break
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for raw in messages:
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._answers[msg["id"]] = msg
                        self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        with self._cond:
            self._next_id += 1
            mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._out.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while mid not in self._answers:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    raise CDPError(f"{method}: no answer from chromium in {self.timeout:.0f} s")
                self._cond.wait(left)
            answer = self._answers.pop(mid)
        if "error" in answer:
            raise CDPError(f"{method}: {answer['error'].get('message')}")
        return answer.get("result", {})

    def open(self, url: str) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target)
        page.send("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                         "deviceScaleFactor": 1, "mobile": False})
        page.send("Page.enable")
        page.send("Page.navigate", {"url": url})
        page.wait("document.readyState === 'complete'")
        return page

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (CDPError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for f in (self._out, self._in):
            f.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Page:
    """One tab, attached in flat mode (its commands carry the session id)."""

    def __init__(self, browser: Chromium, session: str, target: str):
        self.browser, self.session, self.target = browser, session, target

    def close(self) -> None:
        """Close the tab, as a person closing it would (its connections go with it)."""
        self.browser.send("Target.closeTarget", {"targetId": self.target})

    def send(self, method: str, params: dict | None = None) -> dict:
        return self.browser.send(method, params, self.session)

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited), as JSON; CDPError when it throws."""
        r = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True})
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise CDPError(f"{expression[:60]}: {d.get('exception', {}).get('description') or d.get('text')}")
        return r["result"].get("value")

    def wait(self, condition: str, timeout: float = 20, every: float = 0.05) -> Any:
        """Poll a JavaScript expression until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(condition)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:.0f} s for {condition}")
            time.sleep(every)

    def type(self, selector: str, text: str) -> None:
        """Put `text` into the field, as typing would: focus it, clear it, insert the text (input events fire)."""
        self.js(f"(e => {{ e.focus(); e.select && e.select(); }})(document.querySelector({json.dumps(selector)}))")
        self.send("Input.insertText", {"text": text})

    def click(self, selector: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).click()")

    def screenshot(self, path: str | Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False})["data"]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


def _high(fds: tuple[int, int]) -> tuple[int, int]:
    """The pipe's two ends duplicated to numbers >= 10 (originals closed)."""
    out = []
    for fd in fds:
        out.append(fcntl.fcntl(fd, fcntl.F_DUPFD, 10))
        os.close(fd)
    return out[0], out[1]


def tab_screenshots(page: Page, out_dir: str | Path) -> list[Path]:
    """Click through the playground's tabs, a screenshot of each as it stands: OUT/<tab>.png."""
    paths = []
    for tab in TABS:
        page.click(f"#tab-{tab}")
        page.wait(f"!document.getElementById('panel-{tab}').hidden")
        time.sleep(0.3)  # layout and an iframe's first paint
        paths.append(page.screenshot(Path(out_dir) / f"{tab}.png"))
    return paths


def try_every_tab(page: Page, prompt: str, query: str | None = None, max_tokens: int = 60) -> None:
    """Use the page as a person would: a generation (waited for), a translation when the run has a fine-tune, a
    search for `query` (default: one of the run's test verses)."""
    page.wait("document.getElementById('run-line').textContent.includes('step')")
    page.type("#gen-prompt", prompt)
    page.type("#gen-max-tokens", str(max_tokens))
    page.click("#gen-go")
    page.wait("document.getElementById('gen-stats').textContent.includes('stopped')", timeout=120)
    if page.js("document.getElementById('tr-note').hidden"):
        page.click("#tab-translate")
        page.type("#tr-text", prompt)
        page.click("#tr-go")
        page.wait("document.getElementById('tr-stats').textContent.includes('beam size')", timeout=120)
    page.click("#tab-search")
    if query is None:
        page.click("#search-example")
    else:
        page.type("#search-text", query)
    page.click("#search-go")
    page.wait("document.querySelectorAll('#search-results tr').length > 1", timeout=300)


def main(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tests.browser", description="use every tab of a running xling "
                                 "serve in headless Chromium, then write a screenshot of each: OUT_DIR/<tab>.png")
    ap.add_argument("url")
    ap.add_argument("out_dir")
    ap.add_argument("--prompt", default="In the beginning", help="the text to continue (and to translate)")
    ap.add_argument("--query", help="the sentence to search for (default: one of the run's test verses)")
    ap.add_argument("--height", type=int, default=1000, help="the window's height in pixels")
    args = ap.parse_args(argv)
    with Chromium(height=args.height) as browser:
        page = browser.open(args.url)
        try_every_tab(page, prompt=args.prompt, query=args.query)
        for path in tab_screenshots(page, args.out_dir):
            print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
