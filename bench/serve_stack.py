"""The web stack of `xling serve`, measured: start-up to the first answer, streaming, and install size.

    .venv/bin/python bench/serve_stack.py                          # the stacks importable by this interpreter
    .venv/bin/python bench/serve_stack.py --python /tmp/venv/bin/python --rounds 5   # another venv's stacks

Systems, each a hello-world server in a fresh process of `--python` (the same script for all, no model loaded):
  stdlib      `http.server.ThreadingHTTPServer` (what xling serve uses)
  starlette   Starlette + uvicorn
  fastapi     FastAPI + uvicorn (pydantic)
Start-up = from spawning the process to the first 200 answer of GET /, median over rounds (imports, bind and one
request: what a user waits for beyond loading the model). Streaming: GET /stream sends 5 chunks 100 ms apart;
"first chunk" is when the client has the first one (a stack that buffers the response shows ~500 ms).
Install = bytes on disk of the stack's distributions and their dependencies (importlib.metadata), excluding pip and
setuptools; the standard library's is 0. A stack that is not importable is listed as such.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import textwrap
import time
import urllib.request

SERVERS = {
    "stdlib": """
        import sys, time
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        class H(BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream" if self.path == "/stream" else "text/plain")
                self.end_headers()
                if self.path == "/stream":
                    for i in range(5):
                        self.wfile.write(f"data: {i}\\n\\n".encode()); self.wfile.flush(); time.sleep(0.1)
                else:
                    self.wfile.write(b"ok")
        ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """,
    "starlette": """
        import sys, asyncio, uvicorn
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse, StreamingResponse
        from starlette.routing import Route
        async def hello(request): return PlainTextResponse("ok")
        async def chunks():
            for i in range(5):
                yield f"data: {i}\\n\\n"; await asyncio.sleep(0.1)
        async def stream(request): return StreamingResponse(chunks(), media_type="text/event-stream")
        app = Starlette(routes=[Route("/", hello), Route("/stream", stream)])
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error")
    """,
    "fastapi": """
        import sys, asyncio, uvicorn
        from fastapi import FastAPI
        from fastapi.responses import PlainTextResponse, StreamingResponse
        app = FastAPI()
        @app.get("/")
        async def hello(): return PlainTextResponse("ok")
        async def chunks():
            for i in range(5):
                yield f"data: {i}\\n\\n"; await asyncio.sleep(0.1)
        @app.get("/stream")
        async def stream(): return StreamingResponse(chunks(), media_type="text/event-stream")
        uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error")
    """,
}
PACKAGES = {"stdlib": [], "starlette": ["starlette", "uvicorn"], "fastapi": ["fastapi", "uvicorn"]}

SIZE = """
import json, sys, importlib.metadata as md, re
todo, seen, total = list(sys.argv[1:]), set(), 0
while todo:
    name = re.split(r"[ ;<>=!~\\[(]", todo.pop())[0].lower().replace("_", "-")
    if name in seen or name in ("pip", "setuptools"):
        continue
    seen.add(name)
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        continue
    total += sum((f.size or 0) for f in (dist.files or []))
    todo += [r for r in (dist.requires or []) if "extra ==" not in r]
print(json.dumps({"bytes": total, "packages": sorted(seen)}))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def importable(python: str, stack: str) -> bool:
    mods = PACKAGES[stack] or ["http.server"]
    return subprocess.run([python, "-c", "import " + ", ".join(mods)], capture_output=True).returncode == 0


def start_up(python: str, stack: str) -> tuple[float, float]:
    """(seconds to the first 200 answer, seconds to the first streamed chunk) of one fresh server process."""
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([python, "-c", textwrap.dedent(SERVERS[stack]), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    r.read()
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"{stack} did not start") from None
                time.sleep(0.005)
        ready = time.perf_counter() - t0
        t1 = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/stream", timeout=5) as r:
            r.readline()
            first = time.perf_counter() - t1
            r.read()
        return ready, first
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable, help="interpreter whose packages are measured")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rows, pairs = [], []
    for stack in SERVERS:
        if not importable(args.python, stack):
            rows.append(f"{stack:<10} not importable by {args.python}")
            continue
        times = [start_up(args.python, stack) for _ in range(args.rounds)]
        size = json.loads(subprocess.run([args.python, "-c", SIZE, *PACKAGES[stack]], capture_output=True,
                                         text=True, check=True).stdout)
        ready = statistics.median(t[0] for t in times)
        first = statistics.median(t[1] for t in times)
        rows.append(f"{stack:<10} start-up {ready * 1000:6.0f} ms   first chunk {first * 1000:5.0f} ms   install "
                    f"{size['bytes'] / 2**20:5.1f} MiB ({len(size['packages'])} distributions)")
        pairs.append(f"{stack}.startup_ms={ready * 1000:.0f} {stack}.first_chunk_ms={first * 1000:.0f} "
                     f"{stack}.install_mib={size['bytes'] / 2**20:.1f}")
    print("\n".join(rows))
    print(" ".join(pairs))


if __name__ == "__main__":
    main()
