"""Tests of `xling serve`: a tiny trained run served on a free port, every API endpoint called over HTTP (status codes,
JSON shapes, streaming, the bad inputs of issue 26), answers checked against the Python API they wrap, concurrent and
cancelled generations, the CLI's refusals, and the page itself in headless Chromium (skipped where none is
installed; `.ci/run` installs Debian's `chromium` when it runs as root).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.browser import Chromium, find_chromium, tab_screenshots, try_every_tab
from tests.conftest import TINY, tiny_jsonl_corpus
from xling.serve.playground import FairLock, Playground
from xling.serve.server import MAX_BODY, make_server

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)

LANGS = list(TINY)  # en, fr, ru
FT = ["translate.max_minutes=0", "translate.max_steps=5", "translate.batch_size=16", "translate.precision=fp32",
      "translate.compile=false", "translate.max_new_tokens=12"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """corpus -> tokenizer -> shard -> 10 pretraining steps through the CLI (as tests/test_translate.py)."""
    from tests.test_pipeline import TINY_MODEL
    from xling.cli import main

    tmp = tmp_path_factory.mktemp("serve")
    paths = tiny_jsonl_corpus(tmp)
    rd = tmp / "run"
    common = ["--run", str(rd)]
    assert main(["corpus", "--source", "jsonl", "--paths", *paths,
                 "--langs", ",".join(LANGS), *common, "corpus.valid_fraction=0.15", "corpus.test_fraction=0.15"]) == 0
    assert main(["tokenizer", *common, "tokenizer.vocab_size=400"]) == 0
    assert main(["shard", *common]) == 0
    assert main(["pretrain", *common, *TINY_MODEL, "train.max_steps=10"]) == 0
    return rd


@pytest.fixture(scope="module")
def served(run):
    """(playground, server) on a free loopback port, serving from a thread."""
    pg = Playground(run)
    server = make_server(pg, "127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield pg, server
    server.shutdown()
    server.server_close()


def call(server, method: str, path: str, body=None, *, raw: bytes | None = None, headers: dict | None = None,
         timeout: float = 60) -> tuple[int, dict, bytes]:
    """(status, headers, body bytes) of one request; `body` is sent as JSON, `raw` as it is."""
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=timeout)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
    res = conn.getresponse()
    out = res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    conn.close()
    return out


def api(server, path: str, body=None) -> tuple[int, dict]:
    status, headers, data = call(server, "POST" if body is not None else "GET", path, body)
    assert headers["content-type"].startswith("application/json")
    return status, json.loads(data)


def events(data: bytes) -> list[tuple[str, dict]]:
    """Server-sent events: (name, JSON data) of every block."""
    out = []
    for block in data.decode("utf-8").split("\n\n"):
        if block.strip():
            lines = dict(line.split(": ", 1) for line in block.split("\n"))
            out.append((lines["event"], json.loads(lines["data"])))
    return out


# ---------------------------------------------------------------------------- info, generate

def test_info_describes_the_run(served, run):
    pg, server = served
    status, info = api(server, "/api/info")
    assert status == 200
    assert info["languages"] == LANGS and info["context"] == 64 and info["step"] == 10
    assert info["parameters"] == sum(p.numel() for p in pg.model.parameters())
    assert info["defaults"]["max_tokens"] >= 1 and info["busy"] == 0
    from xling.corpus import Corpus

    corpus = Corpus(run / "corpus")
    assert info["search"]["available"] and info["search"]["languages"] == LANGS
    assert info["search"]["verses"] == {lg: len(corpus.texts("test", lg)) for lg in LANGS}
    ru = corpus.texts("test", "ru")
    assert info["search"]["examples"]["ru"] == ru[:: len(ru) // 5][:5] and len(set(ru[:: len(ru) // 5][:5])) == 5
    assert info["report"]["html"] is None and f"xling report --run {run}" in info["report"]["note"]


def test_generate_json_equals_the_python_api_and_streams_in_pieces(served):
    from xling.generate import GenerateConfig, generate

    pg, server = served
    req = {"prompt": "In the", "lang": "fr", "temperature": 0, "max_tokens": 30}
    status, out = api(server, "/api/generate", req)
    assert status == 200
    want = generate(pg.model, pg.tokenizer, ["In the"], "fr",
                    GenerateConfig(max_new_tokens=30, temperature=0, precision="fp32"))[0]
    assert out["text"] == want
    assert out["done"] and 1 <= out["tokens"] <= 30 and out["tokens_per_s"] > 0 and out["seconds"] > 0
    assert out["stopped"] in ("end of text", "max_tokens") and out["notes"] == [] and out["max_tokens"] == 30

    status, headers, data = call(server, "POST", "/api/generate", {**req, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    evs = events(data)
    names = [n for n, _ in evs]
    assert names[0] == "start" and names[-1] == "done" and set(names[1:-1]) == {"token"}
    tokens = [d for n, d in evs if n == "token"]
    assert len(tokens) > 1  # streamed: piece by piece, not one block
    assert "".join(d["text"] for d in tokens) == want
    counts = [d["tokens"] for d in tokens]
    assert counts == sorted(counts) and evs[-1][1]["tokens"] == out["tokens"]


def test_max_tokens_beyond_the_context_is_clamped_and_said(served):
    pg, server = served
    status, out = api(server, "/api/generate", {"prompt": "In the", "lang": "en", "max_tokens": 5000, "seed": 3})
    n_prompt = len(pg.tokenizer.encode("In the", add_special_tokens=False).ids) + 1
    room = 64 - n_prompt + 1
    assert status == 200 and out["max_tokens"] == room and out["tokens"] <= room
    assert out["notes"] == [f"max_tokens 5000 is beyond the model's context (64 tokens, {n_prompt} taken by the "
                            f"prompt): clamped to {room}"]


class SlowLock(FairLock):
    """The playground's lock with a pause before every hold: generations long enough to overlap and to leave."""

    def __init__(self, pause: float):
        super().__init__()
        self.pause = pause

    def acquire(self):
        time.sleep(self.pause)
        super().acquire()


def test_concurrent_generations_do_not_corrupt_each_other(served, monkeypatch):
    """Four sampled generations at once, their steps interleaved under the lock, each equal to itself alone."""
    pg, server = served
    reqs = [{"prompt": p, "lang": lg, "temperature": 1.0, "top_k": 50, "max_tokens": 40, "seed": s}
            for s, (p, lg) in enumerate([("In the", "en"), ("Свет", "ru"), ("La", "fr"), ("He came", "en")])]
    alone = [api(server, "/api/generate", r)[1]["text"] for r in reqs]
    together: list = [None] * len(reqs)

    def one(i):
        together[i] = api(server, "/api/generate", reqs[i])[1]["text"]

    monkeypatch.setattr(pg, "lock", SlowLock(0.003))
    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(reqs))]
    for t in threads:
        t.start()
    most = 0
    while any(t.is_alive() for t in threads):
        most = max(most, pg.busy())
        time.sleep(0.002)
    assert together == alone
    assert len(set(alone)) == len(alone)  # four different outputs: a mix-up would show
    assert most >= 3  # they did run at the same time


def test_fair_lock_hands_over_in_arrival_order():
    lock, order = FairLock(), []
    lock.acquire()

    def waiter():
        with lock:
            order.append("waiter")

    t = threading.Thread(target=waiter)
    t.start()
    while not lock._waiting:  # the waiter is queued
        time.sleep(0.001)
    lock.release()
    with lock:  # asking again at once: threading.Lock would usually give it back to this thread first
        order.append("releaser")
    t.join()
    assert order == ["waiter", "releaser"]


def test_closing_the_connection_stops_decoding(served, monkeypatch):
    """A client that leaves mid-stream: decoding stops within a step or two, not at max_tokens."""
    pg, server = served

    monkeypatch.setattr(pg, "lock", SlowLock(0.04))  # 40 ms a step: the whole generation would take ~2.4 s
    before = server.cancelled
    body = json.dumps({"prompt": "In", "lang": "en", "temperature": 0, "max_tokens": 60, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", server.server_port))
    sock.sendall(b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"event: token" not in got:
        got += sock.recv(4096)
    assert pg.busy() == 1
    sock.close()
    t0 = time.perf_counter()
    while pg.busy() and time.perf_counter() - t0 < 5:
        time.sleep(0.01)
    assert pg.busy() == 0 and time.perf_counter() - t0 < 0.5  # not the ~2 s the rest would take
    assert server.cancelled == before + 1


# ---------------------------------------------------------------------------- bad input

def test_bad_requests_get_a_status_and_one_line(served):
    pg, server = served
    cases = [
        ({"prompt": "", "lang": "en"}, 400, "prompt is empty"),
        ({"prompt": "   ", "lang": "en"}, 400, "prompt is empty"),
        ({"lang": "en"}, 400, "prompt is missing"),
        ({"prompt": "x", "lang": "xx"}, 400, 'unknown language "xx" in lang; this run has en, fr, ru'),
        ({"prompt": "x"}, 400, "lang is missing; give one of this run's languages: en, fr, ru"),
        ({"prompt": "x", "lang": "en", "max_tokens": 0}, 400, "max_tokens must be >= 1"),
        ({"prompt": "x", "lang": "en", "temperature": "hot"}, 400, 'temperature must be a number, not "hot"'),
        ({"prompt": "x", "lang": "en", "top_k": 1.5}, 400, "top_k must be an integer"),
        ({"prompt": "x", "lang": "en", "stream": "yes"}, 400, "stream must be true or false"),
        ({"prompt": "x", "lang": "en", "tokens": 5}, 400, "/api/generate has no field 'tokens'"),
        ({"prompt": "word " * 100, "lang": "en"}, 400, "the model's context is 64; shorten the prompt"),
    ]
    for body, status, message in cases:
        got, out = api(server, "/api/generate", body)
        assert (got, set(out)) == (status, {"error"}), body
        assert message in out["error"] and "\n" not in out["error"], (body, out)
    for path, body, message in [
        ("/api/translate", {"text": "x", "src": "en", "tgt": "en"}, "src and tgt are both 'en'"),
        ("/api/translate", {"text": "x", "src": "en", "tgt": "de"}, 'unknown language "de" in tgt'),
        ("/api/search", {"text": ""}, "text is empty"),
        ("/api/search", {"text": "x", "lang": "zz"}, 'unknown language "zz" in lang'),
        ("/api/search", {"text": "x", "k": 0}, "k must be in 1..50"),
    ]:
        got, out = api(server, path, body)
        assert got == 400 and message in out["error"], (path, body, out)

    for raw, status, message in [(b"not json", 400, "not JSON"), (b"[1, 2]", 400, "a JSON object, not list"),
                                 (b"\xff\xfe", 400, "not JSON"), (b"", 400, "not JSON"),
                                 (b"x" * (MAX_BODY + 1), 413, f"the limit is {MAX_BODY:,}")]:
        got, headers, data = call(server, "POST", "/api/generate", raw=raw)
        assert got == status and message in json.loads(data)["error"], raw[:20]
    got, headers, _ = call(server, "GET", "/api/generate")
    assert got == 405 and headers["allow"] == "POST"
    assert call(server, "POST", "/api/nothing", {})[0] == 404
    assert call(server, "GET", "/static/../playground.py")[0] == 404
    assert call(server, "GET", "/report/..%2Fconfig.toml")[0] == 404
    # DNS rebinding: a page elsewhere whose host name resolves to 127.0.0.1 is not served
    got, _, data = call(server, "GET", "/api/info", headers={"Host": "attacker.example:80"})
    assert got == 403 and "not this server's" in json.loads(data)["error"]
    assert call(server, "GET", "/api/info", headers={"Host": f"localhost:{server.server_port}"})[0] == 200
    assert pg.busy() == 0


# ---------------------------------------------------------------------------- translate, search, report

def test_translate_says_how_then_uses_the_fine_tune_without_a_restart(served, run):
    from dataclasses import replace

    from xling.cli import main
    from xling.tasks.translate.command import load_translator, run_config
    from xling.tasks.translate.decoding import translate

    _, server = served
    req = {"text": "In the beginning was the word.\nСвет во тьме светит.", "src": "en", "tgt": "fr", "beams": 2}
    status, out = api(server, "/api/translate", req)
    assert status == 409 and f"xling translate-train --run {run}" in out["error"]
    assert not api(server, "/api/info")[1]["translate"]["available"]

    assert main(["translate-train", "--run", str(run), *FT]) == 0
    status, out = api(server, "/api/translate", req)
    assert status == 200 and api(server, "/api/info")[1]["translate"]["available"]
    model, tok = load_translator(run)
    want = translate(model, tok, req["text"].split("\n"), "en", "fr", replace(run_config(run), num_beams=2))
    assert out["lines"] == want and out["translation"] == "\n".join(want)
    assert out["beams"] == 2 and out["src"] == "en" and out["tgt"] == "fr" and "translate" in out["model"]


def test_search_ranks_every_other_language_by_cosine(served, run):
    from xling.corpus import Corpus
    from xling.encode import POOL_SPECIALS, embed_texts

    pg, server = served
    corpus = Corpus(run / "corpus")
    query, key = corpus.texts("test", "en")[3], corpus.keys("test", "en")[3]
    status, out = api(server, "/api/search", {"text": query, "k": 4})
    assert status == 200 and out["lang"] == "en" and out["detected"] and out["k"] == 4
    assert sorted(out["results"]) == ["fr", "ru"]
    for lg, hits in out["results"].items():
        assert [h["rank"] for h in hits] == [1, 2, 3, 4]
        scores = [h["score"] for h in hits]
        assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)
        # the score is the cosine of our sentence vectors
        q = embed_texts(pg.model, pg.tokenizer, [query], "en", layer=out["layer"], pool_specials=POOL_SPECIALS)[0]
        d = embed_texts(pg.model, pg.tokenizer, [hits[0]["text"]], lg, layer=out["layer"],
                        pool_specials=POOL_SPECIALS)[0]
        assert hits[0]["score"] == pytest.approx(float(np.dot(q, d)), abs=2e-3)
        texts = dict(zip(corpus.keys("test", lg), corpus.texts("test", lg), strict=True))
        assert all(texts[h["key"]] == h["text"] and h["match"] == (h["key"] == key) for h in hits)
    if out["peer"] is not None:  # USE v3 knows en, fr, ru: the translation of a test verse is its first hit
        assert sorted(out["peer"]) == ["fr", "ru"]
        assert all(hits[0]["key"] == key and hits[0]["match"] for hits in out["peer"].values())
    status, out = api(server, "/api/search", {"text": corpus.texts("test", "ru")[0], "k": 1, "peer": False})
    assert status == 200 and out["lang"] == "ru" and sorted(out["results"]) == ["en", "fr"] and out["peer"] is None


def test_report_is_linked_and_served(served, run):
    _, server = served
    (run / "report").mkdir()
    (run / "report" / "report.html").write_text("<html><body>the report of the tiny run</body></html>")
    (run / "report" / "metrics.json").write_text(json.dumps({"languages": LANGS, "bpc.en": 3.5}))
    report = api(server, "/api/info")[1]["report"]
    assert report["html"] == "/report/report.html" and report["metrics"] == "/report/metrics.json"
    status, headers, data = call(server, "GET", report["html"])
    assert status == 200 and headers["content-type"].startswith("text/html") and b"tiny run" in data
    assert json.loads(call(server, "GET", report["metrics"])[2])["bpc.en"] == 3.5
    status, headers, page = call(server, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    # the page loads nothing from elsewhere: every src/href is this server's
    assert b"http://" not in page and b"https://" not in page and b"//cdn" not in page
    for name in ("playground.js", "playground.css"):
        status, _, body = call(server, "GET", f"/static/{name}")
        assert status == 200 and b"https://" not in body and b"http://" not in body


def test_the_page_files_are_package_data_and_all_served():
    """The page's files ship in the wheel (pyproject's package-data) and are exactly what /static/ serves."""
    import fnmatch
    import tomllib

    import xling.serve
    from xling.serve.server import STATIC

    root = Path(__file__).resolve().parent.parent
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["xling.serve"]
    files = {p.name for p in (Path(xling.serve.__file__).parent / "static").iterdir()}
    assert files == STATIC
    assert all(any(fnmatch.fnmatch(f"static/{f}", g) for g in globs) for f in files)


# ---------------------------------------------------------------------------- the command

def test_serve_refuses_to_start_in_one_line(tmp_path, run, capsys):
    from xling.cli import main

    (tmp_path / "empty").mkdir()
    assert main(["serve", "--run", str(tmp_path / "empty"), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no checkpoints to serve" in err and "xling pretrain" in err

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--run", str(run), "--port", str(port)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"port {port} on 127.0.0.1 is in use" in err and "--port" in err

    with socket.socket() as taken:  # another host: a warning first (the port is taken, so nothing is served)
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--run", str(run), "--host", "0.0.0.0", "--port", str(port)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert "warning: --host 0.0.0.0" in err[0] and "without authentication" in err[0]
        assert f"port {port} on 0.0.0.0 is in use" in err[1]
    assert main(["serve", "--run", str(run), "--port", "70000"]) == 2
    assert "--port 70000 is not a port number" in capsys.readouterr().err


def test_the_demo_ends_with_the_serve_command(tmp_path, monkeypatch, capsys):
    from xling.cli import main

    monkeypatch.setattr("xling.stages.run_demo", lambda run, **kw: Path(run) / "report")
    monkeypatch.setattr("xling.report.summary", lambda run: "(the summary)")
    assert main(["demo", "--run", str(tmp_path / "d")]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"xling serve --run {tmp_path / 'd'}" in last and "http://127.0.0.1:8000/" in last


# ---------------------------------------------------------------------------- the page, in a browser

@pytest.mark.skipif(find_chromium() is None, reason="headless Chromium is not installed (Debian: apt-get install "
                                                    "chromium; .ci/run does it when it runs as root)")
def test_the_page_streams_text_and_finds_verses_in_chromium(served, run, monkeypatch):
    pg, server = served
    with Chromium(height=1000) as browser:
        # closing the page mid-generation stops the decoding
        page = browser.open(f"http://127.0.0.1:{server.server_port}/")
        page.wait("document.getElementById('run-line').textContent.includes('step')")
        with monkeypatch.context() as m:
            m.setattr(pg, "lock", SlowLock(0.04))  # ~2 s for the whole generation
            before = server.cancelled
            page.type("#gen-prompt", "In")
            page.type("#gen-temperature", "0")
            page.click("#gen-go")
            page.wait("document.getElementById('gen-stats').textContent.includes('tokens/s')")
            page.close()
            t0 = time.perf_counter()
            while server.cancelled == before and time.perf_counter() - t0 < 5:
                time.sleep(0.01)
            assert server.cancelled == before + 1 and time.perf_counter() - t0 < 1
            while pg.busy():
                time.sleep(0.01)

        page = browser.open(f"http://127.0.0.1:{server.server_port}/")
        # count the changes to the output while it is written: streamed text arrives in many
        page.js("window.changes = 0; new MutationObserver(() => window.changes++)"
                ".observe(document.getElementById('gen-text'), {childList: true, characterData: true, subtree: true})")
        page.wait("document.getElementById('run-line').textContent.includes('step')")
        page.click("#gen-go")  # an empty prompt: the server's one line, shown on the page
        page.wait("document.getElementById('gen-notes').textContent.includes('prompt is empty')")
        page.type("#gen-temperature", "0")
        try_every_tab(page, prompt="In the", query=None, max_tokens=30)
        text = page.js("document.getElementById('gen-text').textContent")
        want = api(server, "/api/generate", {"prompt": "In the", "lang": "en", "temperature": 0,
                                             "max_tokens": 30})[1]["text"]
        assert text == want and page.js("window.changes") > 1
        assert "tokens/s" in page.js("document.getElementById('gen-stats').textContent")
        rows = page.js("document.querySelectorAll('#search-results .lang-block').length")
        assert rows == 2  # the two languages other than the query's
        assert page.js("document.querySelectorAll('#search-results td.score').length") >= 2
        shots = tab_screenshots(page, run / "serve")
    assert [p.name for p in shots] == ["generate.png", "translate.png", "search.png", "report.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in shots)
