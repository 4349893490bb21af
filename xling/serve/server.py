"""The playground's HTTP side: routes, JSON bodies, server-sent events, the page's files, start-up.

    xling serve --run runs/demo [--host 127.0.0.1 --port 8000]

    server = make_server(Playground("runs/demo"), "127.0.0.1", 0)    # bound; server.server_port is the port
    threading.Thread(target=server.serve_forever, daemon=True).start()

Stack: the standard library's `ThreadingHTTPServer` (one thread per connection). Measured against Starlette +
uvicorn and FastAPI + uvicorn with bench/serve_stack.py (a hello-world server each, fresh process, median of 5):
start-up to the first answer 171 ms vs 484 ms vs 1,419 ms, a streamed chunk reaching the client 1 ms vs 67 vs 42 ms
after it was written, install 0 vs 2.1 MiB (8 distributions) vs 10.3 MiB (15). Loading the model dominates
start-up anyway, and every request does blocking torch work that an async framework would hand to a thread pool:
threads are the honest shape. Nothing to install, nothing to download: the page is three static files here.

Streaming: `POST /api/generate` with "stream": true answers `text/event-stream` (server-sent events over the POST's
response; the page reads it with fetch, curl with -N): `event: start` (the effective settings, notes such as a
clamped max_tokens), `event: token` per piece of text, then `event: done` (tokens, seconds, tokens/s) or
`event: error`. Between two decoding steps the handler checks whether the client is still there (its socket reads
end-of-file, or a write fails) and stops decoding when it is not: closing the page cancels the generation.

Bad input: a body that is not a JSON object -> 400; larger than MAX_BODY -> 413; an unknown path -> 404, a wrong
method -> 405; a field's mistake -> 400 with one line naming it (`playground.ApiError`). Bound to a loopback
address (the default), a request whose Host header names another host is refused (403): a web page elsewhere cannot
reach the API through DNS rebinding. Other hosts are an explicit --host, with a warning.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import mimetypes
import os
import select
import socket
import socketserver
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from xling.errors import XlingError
from xling.serve.playground import ApiError, Playground

MAX_BODY = 64 * 1024  # bytes of a request body (a prompt is at most playground.MAX_TEXT characters)
DRAIN = 16 << 20  # an over-long body is read (and dropped) up to this much, so the client gets the 413 to read
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
STATIC = {"index.html", "playground.js", "playground.css"}
POST_ROUTES = {"/api/generate", "/api/translate", "/api/search"}
GET_ROUTES = {"/", "/index.html", "/api/info"}
# what the page may load: its own files, the report's inlined images; nothing from another origin
CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'self'"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Handler(BaseHTTPRequestHandler):
    server_version = "xling-serve"
    server: PlaygroundServer

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.quiet:
            sys.stderr.write(f"serve: {self.address_string()} {format % args}\n")

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8",
                   extra)

    def _error(self, status: int, message: str, extra: dict[str, str] | None = None) -> None:
        self._json(status, {"error": message}, extra)

    def _host_ok(self) -> bool:
        """Bound to loopback, only requests addressed to a loopback name are served (DNS rebinding)."""
        if not self.server.loopback_only:
            return True
        host = self.headers.get("Host", "")
        try:
            name = urllib.parse.urlsplit(f"//{host}").hostname or ""
        except ValueError:  # e.g. an unbalanced "[" in the header
            name = "?"
        if not host or is_loopback(name):  # a browser always sends Host; a client without one is no page
            return True
        self._error(403, f"Host {host!r} is not this server's; open http://127.0.0.1:{self.server.server_port}/")
        return False

    def _drain(self, n: int) -> None:
        left = min(n, DRAIN)
        self.connection.settimeout(2)
        try:
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _body(self) -> dict:
        """The request's JSON object (ApiError for a missing, over-long or non-JSON body)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "a chunked request body is not supported; send it with a Content-Length")
        try:
            n = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(400, "Content-Length is not a number") from None
        if n > MAX_BODY:
            self._drain(n)
            raise ApiError(413, f"the request body is {n:,} bytes; the limit is {MAX_BODY:,} (shorten the text)")
        raw = self.rfile.read(n) if n > 0 else b""
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ApiError(400, "the request body is not JSON; send a JSON object such as "
                                '{"prompt": "In the beginning", "lang": "en"}') from None
        if not isinstance(obj, dict):
            raise ApiError(400, f"the request body must be a JSON object, not {type(obj).__name__}")
        return obj

    def _client_gone(self) -> bool:
        """Whether the client closed the connection (its side reads end-of-file); pipelined bytes are not that."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    # ------------------------------------------------------------------ methods

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._host_ok():
            return
        path = urllib.parse.urlsplit(self.path).path
        if path in POST_ROUTES:
            return self._error(405, f"{path} takes POST with a JSON body", {"Allow": "POST"})
        if path == "/api/info":
            return self._json(200, self.server.playground.info())
        if path in ("/", "/index.html"):
            return self._static("index.html")
        if path.startswith("/static/"):
            return self._static(path.removeprefix("/static/"))
        if path.startswith("/report/"):
            return self._report(path.removeprefix("/report/"))
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        self._error(404, f"no page {path}; the playground is at /")

    def do_POST(self) -> None:
        if not self._host_ok():
            return
        path = urllib.parse.urlsplit(self.path).path
        if path not in POST_ROUTES:
            allow = {"Allow": "GET"} if path in GET_ROUTES else None
            return self._error(405 if allow else 404, f"no API {path}; POST to {', '.join(sorted(POST_ROUTES))}",
                               allow)
        pg = self.server.playground
        try:
            req = self._body()
            if path == "/api/generate":
                return self._generate(pg, req)
            self._json(200, pg.translate(req) if path == "/api/translate" else pg.search(req))
        except ApiError as e:
            self._error(e.status, str(e))
        except (XlingError, ValueError) as e:  # a lower layer's check of the same input
            self._error(400, str(e).splitlines()[0])

    # ------------------------------------------------------------------ routes

    def _generate(self, pg: Playground, req: dict) -> None:
        stream = req.pop("stream", False)
        if not isinstance(stream, bool):
            raise ApiError(400, f"stream must be true or false, not {json.dumps(stream)}")
        gen = pg.generation(req)  # every check before the first byte of the answer
        events = gen.events()
        if not stream:
            summary: dict = {}
            for ev in events:
                if self._client_gone():
                    events.close()
                    return self._cancelled(gen)
                summary = ev  # the last event is the summary
            return self._json(200, {"text": gen.text, **summary})
        self.send_response(200)
        for k, v in (("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-store"),
                     ("X-Content-Type-Options", "nosniff"), ("Connection", "close")):
            self.send_header(k, v)
        self.end_headers()
        try:
            self._event("start", gen.start())
            for ev in events:
                if self._client_gone():
                    raise ConnectionResetError
                if ev.get("done"):
                    self._event("done", ev)
                elif ev["text"]:
                    self._event("token", ev)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            events.close()
            self._cancelled(gen)
        except (XlingError, ValueError) as e:
            self._event("error", {"error": str(e).splitlines()[0]})

    def _event(self, name: str, data: dict) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode())
        self.wfile.flush()

    def _cancelled(self, gen: Any) -> None:
        self.close_connection = True
        self.server.cancelled += 1
        if not self.server.quiet:
            sys.stderr.write(f"serve: client left; generation stopped after {gen.tokens} tokens\n")

    def _static(self, name: str) -> None:
        if name not in STATIC:
            return self._error(404, f"no file {name}")
        body = resources.files("xling.serve").joinpath("static", name).read_bytes()
        self._send(200, body, _content_type(name))

    def _report(self, name: str) -> None:
        """A file of the run's report/ folder (flat names only: nothing outside it is reachable)."""
        folder = self.server.playground.run_dir / "report"
        name = urllib.parse.unquote(name)
        if not name or "/" in name or "\\" in name or name.startswith(".") or not (folder / name).is_file():
            return self._error(404, f"no report file {name!r} in {folder}")
        self._send(200, (folder / name).read_bytes(), _content_type(name))


def _content_type(name: str) -> str:
    kind = {".js": "text/javascript", ".md": "text/markdown", ".json": "application/json"}.get(
        Path(name).suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{kind}; charset=utf-8" if kind.startswith("text/") or kind.endswith("json") else kind


class PlaygroundServer(ThreadingHTTPServer):
    """A threaded HTTP server holding the playground its handlers call."""

    daemon_threads = True  # Ctrl-C does not wait for open streams
    playground: Playground
    quiet = False
    cancelled = 0  # generations stopped because their client left
    loopback_only = True

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: its getfqdn() is a DNS lookup (slow offline)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])


class PlaygroundServer6(PlaygroundServer):
    address_family = socket.AF_INET6


def bind(host: str, port: int) -> PlaygroundServer:
    """A server bound to (host, port), without a playground yet; XlingError for a port in use or a bad host."""
    if not 0 <= port <= 65535:
        raise XlingError(f"--port {port} is not a port number; give one in 1024..65535 (0 = a free one)")
    cls = PlaygroundServer6 if ":" in host else PlaygroundServer
    try:
        server = cls((host, port), Handler)
    except socket.gaierror:
        raise XlingError(f"--host {host} is not an address this machine can serve on; give an IP address of "
                         f"this machine, or leave --host out (127.0.0.1)") from None
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise XlingError(f"port {port} on {host} is in use (another xling serve?); choose another with "
                             f"--port, e.g. --port {port + 1}") from None
        if e.errno == errno.EACCES:
            raise XlingError(f"port {port} needs administrator rights; choose one above 1023 with --port") from None
        if e.errno == errno.EADDRNOTAVAIL:
            raise XlingError(f"--host {host} is not an address of this machine; give one of its addresses, or "
                             f"leave --host out (127.0.0.1)") from None
        raise XlingError(f"cannot listen on {host}:{port} ({e.strerror}); choose another --host or --port") from None
    server.loopback_only = is_loopback(host)
    return server


def make_server(playground: Playground, host: str = "127.0.0.1", port: int = 0, quiet: bool = False
                ) -> PlaygroundServer:
    """A bound server for `playground` (port 0: a free port, then `server.server_port`)."""
    server = bind(host, port)
    server.playground, server.quiet = playground, quiet
    return server


def check_run(run: str | Path) -> None:
    """XlingError, before anything is loaded or bound, for a run with no checkpoint to serve."""
    from xling.checkpoint import find_checkpoint

    run = Path(run)
    if not run.is_dir():
        raise XlingError(f"run {run} does not exist; give a trained run with --run (e.g. runs/demo after "
                         f"`make demo`)")
    try:
        find_checkpoint(run / "checkpoints" if (run / "checkpoints").is_dir() else run)
    except XlingError:
        raise XlingError(f"{run} has no checkpoints to serve; train it first (`xling demo --run {run}` or "
                         f"`xling pretrain --run {run}`) or give another --run") from None


def serve(run: str | Path, host: str = "127.0.0.1", port: int = 8000, *, max_verses: int = 2000,
          warm: bool = True) -> int:
    """`xling serve`: check the run, bind, load the model once, serve until Ctrl-C."""
    os.environ.setdefault("XLING_PROGRESS", "0")  # no progress bars between the request lines
    check_run(run)
    if not is_loopback(host):
        print(f"serve: warning: --host {host} serves the playground (and its API) to every machine that can reach "
              f"this one, without authentication; leave --host out to keep it on this machine", file=sys.stderr)
    server = bind(host, port)
    try:
        t0 = time.perf_counter()
        print(f"serve: loading {run} ...", file=sys.stderr, flush=True)
        pg = Playground(run, max_verses=max_verses)
        server.playground = pg
        shown = f"[{host}]" if ":" in host else host
        print(f"serve: {run} (step {pg.step}, {len(pg.langs)} languages: {', '.join(pg.langs)}) loaded in "
              f"{time.perf_counter() - t0:.1f} s; open http://{shown}:{server.server_port}/ (Ctrl-C stops)",
              flush=True)
        if warm and pg.index.available:
            threading.Thread(target=_warm, args=(pg,), daemon=True, name="serve-warm").start()
        server.serve_forever()
    except KeyboardInterrupt:
        print("serve: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def _warm(pg: Playground) -> None:
    """Embed the search index's verses in the background (the first search would otherwise wait for them)."""
    t0 = time.perf_counter()
    try:
        pg.index.warm()
    except Exception as e:  # a background convenience: the first search reports the same problem in its answer
        print(f"serve: search index not built ({type(e).__name__}: {e}); searching will try again",
              file=sys.stderr)
        return
    n = sum(len(t) for t in pg.index.texts.values())
    print(f"serve: search ready: {n:,} test verses in {len(pg.index.langs)} languages "
          f"({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
