"""The local playground: `xling serve` loads a trained run once and serves one page and a JSON API on it.

    xling serve --run runs/demo                      # http://127.0.0.1:8000/ (loopback only)
    xling serve --run runs/demo --port 8001          # another port
    xling serve --run runs/demo --host 0.0.0.0       # every interface: an explicit flag, with a warning

    from xling.serve.playground import Playground
    from xling.serve.server import make_server
    server = make_server(Playground("runs/demo"), "127.0.0.1", 0)   # port 0: a free one (server.server_port)
    server.serve_forever()

Modules: `playground` (the model, tokenizer and verse index behind one lock; each API call as a Python method that
validates its request), `search` (the test verses of every language, embedded once, searched across languages, the
peer encoder's ranking beside), `server` (HTTP: routes, JSON bodies, server-sent events, static files, start-up);
`static/` holds the page (HTML, CSS, JS), served by xling itself: no build step, no CDN, works offline.

API (JSON in, JSON out; errors are {"error": "one line"} with a 4xx status):
    GET  /api/info        the run: languages, context, what is available (translate fine-tune, search, peer, report)
    POST /api/generate    {"prompt", "lang", "temperature", "top_k", "top_p", "max_tokens", "seed", "stream"}
    POST /api/translate   {"text", "src", "tgt", "beams"}
    POST /api/search      {"text", "lang" (default: detected), "k", "peer"}
"""
