"""Word vectors per language: the `.vec` text format, static training, and vectors read out of a model.

    vecs = train_static_vectors(corpus.texts("train", "en"), VectorsConfig(method="skipgram"))
    write_vec("runs/demo/vectors/en.vec", vecs)          # first line "n d", then "word v1 ... vd"
    vecs = read_vec("wiki.en.vec", max_words=200_000)     # fastText / MUSE files work as they are
    vecs = model_word_vectors(model, tokenizer, words, mode="contextual", texts=texts)

CLI: `xling vectors --run runs/demo` trains one `.vec` file per corpus language into
`runs/demo/align/vectors/` (`train_corpus_vectors`, cached); `--from-model` reads them out of the
run's model instead (`run_model_vectors`). Rows are always in frequency order (most frequent word
first): alignment uses the row index as the word's frequency rank.

Static vectors come from gensim (skip-gram, CBOW or fastText; the optional extra
`xling[align]`), trained with one worker thread by default so a seed gives the same
vectors every run.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from xling.corpus import WORD
from xling.errors import XlingError
from xling.files import atomic_write_bytes, not_utf8_fix
from xling.progress import progress

if TYPE_CHECKING:
    import tokenizers
    import torch

METHODS = ("skipgram", "cbow", "fasttext")
MODEL_MODES = ("input", "contextual")


@dataclass
class VectorsConfig:
    method: str = "skipgram"  # skipgram | cbow | fasttext (gensim); chosen by measurement on Bible text
    dim: int = 300  # vector size (Bible en-fr, 10 epochs, CSLS P@1 supervised: 0.48 at 300, 0.46 at 100)
    window: int = 5  # context words on each side
    min_count: int = 3  # ignore words seen fewer times
    epochs: int = 10  # passes over the text: a Bible needs more than gensim's 5 (en-fr P@1 at d=100:
    # 0.08 with 3 epochs, 0.46 with 10, 0.47 with 20); ~30 s of one core per language at d=300
    negative: int = 10  # negative samples per positive pair
    sample: float = 1e-4  # down-sampling threshold for frequent words
    lower: bool = True  # lowercase words (MUSE dictionaries are lowercase)
    max_words: int = 0  # keep only the most frequent words (0 = all)
    workers: int = 1  # gensim threads; more is faster but not reproducible
    seed: int = 0  # initialisation and sampling seed

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        if self.dim < 1 or self.window < 1 or self.min_count < 1 or self.epochs < 1 or self.workers < 1:
            raise ValueError("dim, window, min_count, epochs and workers must be >= 1")
        if self.negative < 0 or self.sample < 0 or self.max_words < 0:
            raise ValueError("negative, sample and max_words must be >= 0")


@dataclass
class Vectors:
    """Word vectors of one language: `vecs[i]` is the vector of `words[i]`, most frequent word first."""

    words: list[str]
    vecs: np.ndarray  # (n, d) float32

    def __post_init__(self):
        self.vecs = np.ascontiguousarray(self.vecs, dtype=np.float32)
        if self.vecs.ndim != 2 or self.vecs.shape[0] != len(self.words):
            raise ValueError(f"{len(self.words)} words but vectors of shape {self.vecs.shape}")
        self._index: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return self.vecs.shape[1]

    @property
    def index(self) -> dict[str, int]:
        """word -> row (= frequency rank)."""
        if self._index is None:
            self._index = {w: i for i, w in enumerate(self.words)}
        return self._index

    def head(self, n: int) -> Vectors:
        """The `n` most frequent words (all when n <= 0)."""
        return self if n <= 0 or n >= len(self) else Vectors(self.words[:n], self.vecs[:n])


# ---------------------------------------------------------------------------- the .vec text format

def read_vec(path: str | Path, max_words: int = 0, what: str = "vector file") -> Vectors:
    """Read a `.vec` text file (fastText, MUSE, word2vec text): "n d", then "word v1 ... vd" per line.

    A word may contain spaces (the last d fields are the numbers). A word listed twice is an error
    (which of its vectors is meant cannot be known). Reads at most `max_words` vectors (0 = all).
    Every problem is an XlingError naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise XlingError(f"{what} {path} does not exist; give a .vec text file (first line 'n d')")
    words: list[str] = []
    rows: list[np.ndarray] = []
    seen: dict[str, int] = {}  # word -> its line
    n_lines = 0  # vector lines read
    with open(path, "rb") as f:
        first = _decode(f.readline(), path, 1, what)
        head = first.split()
        if len(head) != 2 or not all(h.isdigit() for h in head) or int(head[1]) < 1:
            raise XlingError(f"{what} {path} line 1: expected 'n d' (word count and dimension), got "
                             f"{first.strip()[:60]!r}; is this a .vec text file (not a binary .bin)?")
        n, d = int(head[0]), int(head[1])
        for lineno, raw in enumerate(f, start=2):
            if max_words and n_lines >= max_words:
                break
            line = _decode(raw, path, lineno, what).rstrip()
            if not line:
                continue
            parts = line.rsplit(None, d)
            if len(parts) != d + 1 or (" " in parts[0] and _is_number(parts[0].split()[-1])):
                # (a word may hold spaces, but one ending in a number means more than d numbers)
                raise XlingError(f"{what} {path} line {lineno}: expected a word and {d} numbers, found "
                                 f"{len(line.split()) - 1} numbers; the header says d={d}")
            try:
                vec = np.array(parts[1:], dtype=np.float32)
            except ValueError:
                raise XlingError(f"{what} {path} line {lineno}: a vector value is not a number "
                                 f"(word {parts[0][:40]!r})") from None
            if not np.isfinite(vec).all():
                raise XlingError(f"{what} {path} line {lineno}: the vector of {parts[0][:40]!r} has "
                                 f"inf or nan values")
            n_lines += 1
            if parts[0] in seen:
                raise XlingError(f"{what} {path} line {lineno}: the word {parts[0][:40]!r} is listed again "
                                 f"(first on line {seen[parts[0]]}); keep one vector per word")
            seen[parts[0]] = lineno
            words.append(parts[0])
            rows.append(vec)
    want = min(n, max_words) if max_words else n
    if n_lines < want:  # a truncated download is the usual cause
        raise XlingError(f"{what} {path}: the header promises {n} vectors but the file has {n_lines}; "
                         f"is it truncated? download it again or fix the first line")
    vecs = np.stack(rows) if rows else np.zeros((0, d), np.float32)
    return Vectors(words, vecs)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _decode(raw: bytes, path: Path, lineno: int, what: str) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise XlingError(f"{what} {path} line {lineno}: bytes are not UTF-8; {not_utf8_fix(raw)}") from None
    return text[1:] if lineno == 1 and text.startswith("\ufeff") else text


def write_vec(path: str | Path, vectors: Vectors, digits: int = 6) -> None:
    """Write `vectors` as a `.vec` text file (atomically), `digits` significant digits per value."""
    for w in vectors.words:
        if not w or any(c in w for c in "\n\r\t ") or w != w.strip():
            raise ValueError(f"word {w!r} cannot be written to a .vec file (empty or contains whitespace)")
    fmt = f"%.{digits}g"
    lines = [f"{len(vectors)} {vectors.dim}"]
    for w, v in zip(vectors.words, vectors.vecs, strict=True):
        lines.append(w + " " + " ".join(fmt % x for x in v.tolist()))
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))


# ---------------------------------------------------------------------------- static vectors

def tokenize_words(text: str, lower: bool = True) -> list[str]:
    """Words as the corpus counts them (`xling.corpus.WORD`: letters with their marks, digits)."""
    words = WORD.findall(text)
    return [w.lower() for w in words] if lower else words


def word_counts(texts: list[str], lower: bool = True) -> Counter:
    counts: Counter = Counter()
    for t in texts:
        counts.update(tokenize_words(t, lower))
    return counts


def _stable_hash(s: str) -> int:
    # gensim's default is Python's salted hash(); a fixed hash keeps vectors identical across processes
    return zlib.crc32(s.encode("utf-8"))


def train_static_vectors(texts: list[str], cfg: VectorsConfig | None = None) -> Vectors:
    """Train skip-gram / CBOW / fastText vectors on `texts` (one segment each) with gensim.

    Returns the vocabulary (words seen >= min_count times) in frequency order. One worker
    (the default) and a fixed seed give bit-identical vectors on every run.
    """
    cfg = cfg or VectorsConfig()
    try:
        from gensim.models import FastText, Word2Vec
    except ImportError:
        raise XlingError("static word vectors need gensim; install it with pip install 'xling[align]' "
                         "(or pip install gensim)") from None
    sentences = [s for s in (tokenize_words(t, cfg.lower) for t in texts) if s]
    if not sentences:
        raise XlingError("no words to train vectors on: the texts are empty")
    common = dict(vector_size=cfg.dim, window=cfg.window, min_count=cfg.min_count, epochs=cfg.epochs,
                  negative=cfg.negative, sample=cfg.sample, seed=cfg.seed, workers=cfg.workers,
                  hashfxn=_stable_hash, max_final_vocab=cfg.max_words or None, sorted_vocab=1)
    if cfg.method == "fasttext":
        model = FastText(sentences=sentences, sg=1, min_n=3, max_n=6, **common)
    else:
        model = Word2Vec(sentences=sentences, sg=int(cfg.method == "skipgram"), **common)
    wv = model.wv
    if len(wv.index_to_key) == 0:
        raise XlingError(f"no word occurs {cfg.min_count} times; lower vectors.min_count or give more text")
    return Vectors(list(wv.index_to_key), np.asarray(wv.vectors, dtype=np.float32))


def corpus_vectors(corpus, lang: str, out_dir: str | Path, cfg: VectorsConfig | None = None, *,
                   split: str = "train", force: bool = False) -> tuple[Vectors, bool]:
    """Static vectors of one corpus language, cached as `<out_dir>/<lang>.vec` + `<lang>.json`.

    The `.json` stamp records the VectorsConfig and the sha256 of the corpus text; a cached file is
    reused only when both match (and not `force`). `corpus` is an `xling.corpus.Corpus`.
    Returns (vectors, whether they came from the cache).
    """
    from dataclasses import asdict

    from xling.files import atomic_write_json, sha256_text

    cfg = cfg or VectorsConfig()
    if lang not in corpus.langs:
        raise XlingError(f"language {lang!r} is not in the corpus {corpus.path} ({', '.join(corpus.langs)})")
    texts = corpus.texts(split, lang)
    stamp = {"vectors": asdict(cfg), "split": split, "text_sha256": sha256_text("\n".join(texts))}
    vec_path, stamp_path = Path(out_dir) / f"{lang}.vec", Path(out_dir) / f"{lang}.json"
    if not force and vec_path.is_file() and stamp_path.is_file():
        try:
            same = json.loads(stamp_path.read_text(encoding="utf-8")) == stamp
        except (json.JSONDecodeError, UnicodeDecodeError):
            same = False
        if same:
            return read_vec(vec_path), True
    write_vec(vec_path, train_static_vectors(texts, cfg))
    atomic_write_json(stamp_path, stamp)  # written after the vectors: a stamp always has its file
    # read back: the first run then uses the same (6-digit) values as every cached run after it
    return read_vec(vec_path), False


def train_corpus_vectors(corpus_dir: str | Path, out_dir: str | Path, langs: list[str] | None = None,
                         cfg: VectorsConfig | None = None, split: str = "train", force: bool = False,
                         log: Callable[[str], None] = print) -> dict[str, Path]:
    """`xling vectors`: static vectors for each corpus language -> `<out_dir>/<lang>.vec` (cached:
    a language whose text and config did not change is not trained again)."""
    from xling.corpus import Corpus

    corpus = Corpus(corpus_dir)
    langs = langs or list(corpus.langs)
    for lang in langs:  # every language checked before any training starts
        if lang not in corpus.langs:
            raise XlingError(f"language {lang!r} is not in the corpus {corpus_dir} "
                             f"({', '.join(corpus.langs)})")
    out: dict[str, Path] = {}
    for lang in langs:
        t0 = time.perf_counter()
        vecs, cached = corpus_vectors(corpus, lang, out_dir, cfg, split=split, force=force)
        out[lang] = Path(out_dir) / f"{lang}.vec"
        how = "up to date" if cached else f"trained in {time.perf_counter() - t0:.1f} s"
        log(f"vectors {lang}: {len(vecs):,} words x {vecs.dim} ({how}) -> {out[lang]}")
    return out


def run_model_vectors(run_dir: str | Path, out_dir: str | Path, langs: list[str] | None = None, *,
                      mode: str = "input", cfg: VectorsConfig | None = None, split: str = "train",
                      log: Callable[[str], None] = print) -> dict[str, Path]:
    """`xling vectors --from-model`: word vectors out of a run's trained model, one `.vec` per language.

    The words are the corpus words seen at least `cfg.min_count` times (lowercased when `cfg.lower`;
    at most `cfg.max_words`), in frequency order; `mode` as in `model_word_vectors` (contextual mode
    reads the words in the split's text, the language tag first, language ids when the model has them).
    """
    from xling.checkpoint import load_run
    from xling.corpus import Corpus
    from xling.tokenizer import lang_ids, lang_index

    if mode not in MODEL_MODES:
        raise XlingError(f"model vector mode must be one of {', '.join(MODEL_MODES)}, not {mode!r}")
    cfg = cfg or VectorsConfig()
    corpus = Corpus(Path(run_dir) / "corpus")
    langs = langs or list(corpus.langs)
    for lang in langs:
        if lang not in corpus.langs:
            raise XlingError(f"language {lang!r} is not in the corpus of {run_dir} ({', '.join(corpus.langs)})")
    model, tok = load_run(run_dir)
    tags = lang_ids(tok, list(corpus.langs))
    out: dict[str, Path] = {}
    for lang in langs:
        t0 = time.perf_counter()
        texts = corpus.texts(split, lang)
        counts = word_counts(texts, cfg.lower)
        words = [w for w, c in counts.most_common(cfg.max_words or None) if c >= cfg.min_count]
        index = lang_index(tok, lang) if getattr(model.cfg, "n_langs", 0) else None
        vecs = model_word_vectors(model, tok, words, mode=mode, texts=texts, lang_token_id=tags[lang],
                                  lang_index=index, lower=cfg.lower)
        out[lang] = Path(out_dir) / f"{lang}.vec"
        write_vec(out[lang], vecs)
        log(f"model vectors {lang} ({mode}): {len(vecs):,} words x {vecs.dim}, "
            f"{time.perf_counter() - t0:.1f} s -> {out[lang]}")
    return out


# ---------------------------------------------------------------------------- vectors from a model

def model_word_vectors(model: torch.nn.Module, tokenizer: tokenizers.Tokenizer, words_by_freq: list[str], *,
                       mode: str = "input", texts: list[str] | None = None, lang_token_id: int | None = None,
                       lang_index: int | None = None, layer: int = -1, causal: bool = True,
                       max_occurrences: int = 20, batch_size: int = 16, lower: bool = True,
                       whole_words_only: bool = False) -> Vectors:
    """Word vectors read out of a pretrained xling `Transformer`.

    mode="input":       the input (token) embedding of the word as it is tokenised mid-sentence;
                        a word split into several pieces gets the mean of its pieces (or is
                        skipped when `whole_words_only`).
    mode="contextual":  the hidden state of `layer` (as `model.hidden_states` numbers them; -1 =
                        final output) averaged over the word's pieces and over up to
                        `max_occurrences` occurrences in `texts` (the words are found with
                        `xling.corpus.WORD`, lowercased when `lower`). Each text is prefixed with
                        `lang_token_id` when given; `lang_index` feeds the language embedding.
    Returns the words that got a vector, in the order of `words_by_freq`.
    """
    if mode not in MODEL_MODES:
        raise ValueError(f"mode must be one of {MODEL_MODES}, not {mode!r}")
    if mode == "input":
        emb = model.wte.weight.detach().float()  # (V, D)
        keep, rows = [], []
        for w in words_by_freq:
            ids = _mid_sentence_ids(tokenizer, w)
            if not ids or (whole_words_only and len(ids) != 1):
                continue
            keep.append(w)
            rows.append(emb[ids].mean(0).numpy())
        return Vectors(keep, np.stack(rows) if rows else np.zeros((0, emb.shape[1]), np.float32))

    if not texts:
        raise XlingError("contextual word vectors need texts in which the words occur")
    wanted = set(words_by_freq)
    sums: dict[str, np.ndarray] = {}
    counts: Counter = Counter()
    block = model.cfg.block_size - (lang_token_id is not None)
    was_training = model.training
    model.eval()
    try:
        for start in progress(range(0, len(texts), batch_size), desc="word vectors", unit="batch"):
            if len(counts) == len(wanted) and min(counts.values()) >= max_occurrences:
                break  # every word has all the occurrences it needs
            batch = texts[start:start + batch_size]
            encs = tokenizer.encode_batch(batch, add_special_tokens=False)
            # (text index, word, token positions) of each occurrence still needed
            occ = []
            for b, (text, enc) in enumerate(zip(batch, encs, strict=True)):
                offsets = enc.offsets[:block]
                for m in WORD.finditer(text):
                    w = m.group().lower() if lower else m.group()
                    if w not in wanted or counts[w] >= max_occurrences:
                        continue
                    pos = [i for i, (a, z) in enumerate(offsets) if a < m.end() and z > m.start()]
                    if pos:
                        counts[w] += 1
                        occ.append((b, w, pos))
            if not occ:
                continue
            seqs = [e.ids[:block] for e in encs]
            hidden = _run_model(model, seqs, lang_token_id, lang_index, layer, causal)  # (B, T, D)
            shift = int(lang_token_id is not None)
            for b, w, pos in occ:
                v = hidden[b, [p + shift for p in pos]].mean(0).numpy()  # (D,)
                sums[w] = sums[w] + v if w in sums else v.astype(np.float64)
    finally:
        model.train(was_training)
    keep = [w for w in words_by_freq if counts[w] > 0]
    d = model.cfg.d_model
    vecs = np.stack([sums[w] / counts[w] for w in keep]) if keep else np.zeros((0, d))
    return Vectors(keep, vecs)


def _mid_sentence_ids(tokenizer, word: str) -> list[int]:
    """Token ids of `word` as it appears after a space (the second copy in "word word")."""
    enc = tokenizer.encode(f"{word} {word}", add_special_tokens=False)
    s, e = len(word) + 1, 2 * len(word) + 1
    return [i for i, (a, z) in zip(enc.ids, enc.offsets, strict=True) if a < e and z > s]


def _run_model(model, seqs: list[list[int]], lang_token_id: int | None, lang_index: int | None,
               layer: int, causal: bool):
    import torch

    from xling.batches import pad_right
    from xling.tokenizer import PAD_ID

    if lang_token_id is not None:
        seqs = [[lang_token_id] + s for s in seqs]
    idx, mask = pad_right(seqs, PAD_ID)  # (B, T) ids, (B, T) True = real token
    lang_ids = None if lang_index is None else torch.full_like(idx, lang_index)
    with torch.no_grad():
        if layer == -1:
            return model(idx, causal=causal, lang_ids=lang_ids, pad_mask=mask).float()  # (B, T, D)
        return model.hidden_states(idx, causal=causal, lang_ids=lang_ids, pad_mask=mask)[layer].float()


def cosine_neighbours(vectors: Vectors, word: str, k: int = 10) -> list[tuple[str, float]]:
    """The k nearest words of `word` by cosine (a quick look at what vectors learned)."""
    if word not in vectors.index:
        raise XlingError(f"{word!r} is not in the vocabulary ({len(vectors)} words)")
    x = vectors.vecs / np.maximum(np.linalg.norm(vectors.vecs, axis=1, keepdims=True), 1e-12)
    sims = x @ x[vectors.index[word]]  # (n,)
    order = np.argsort(-sims)
    return [(vectors.words[i], float(sims[i])) for i in order[:k + 1] if vectors.words[i] != word][:k]


def vectors_command(run_dir: str | Path, langs: list[str] | None, cfg: VectorsConfig, *,
                    from_model: str | None = None, out: str | Path | None = None,
                    force: bool = False) -> tuple[dict[str, Path], Path]:
    """`xling vectors`: static vectors from the run's corpus (default out <run>/align/vectors), or with
    `from_model` ("input" or "contextual") read out of its model (<run>/align/vectors-model-MODE).
    Returns the .vec paths and the output folder."""
    run = Path(run_dir)
    if from_model:
        out_dir = Path(out or run / "align" / f"vectors-model-{from_model}")
        return run_model_vectors(run, out_dir, langs, mode=from_model, cfg=cfg), out_dir
    out_dir = Path(out or run / "align" / "vectors")
    return train_corpus_vectors(run / "corpus", out_dir, langs, cfg, force=force), out_dir


__all__ = ["VectorsConfig", "Vectors", "read_vec", "write_vec", "tokenize_words", "word_counts",
           "train_static_vectors", "corpus_vectors", "train_corpus_vectors", "run_model_vectors",
           "model_word_vectors", "cosine_neighbours", "vectors_command"]
