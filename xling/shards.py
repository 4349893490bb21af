"""The shard stage: a corpus encoded once into memory-mapped token files, and their reader.

    xling shard --run runs/demo                                          # CLI
    build_shards(Corpus("runs/demo/corpus"), Path("runs/demo/tokenizer"),
                 ShardConfig(), Path("runs/demo/shards"))                # Python
    sh = Shards("runs/demo/shards"); sh.segment("train", "en", 0)         # read

On disk (`<run>/shards/`), for each split and language:

    train/en.bin        every segment's token ids concatenated, raw (no BOS/EOS/tags added),
                        uint16 when the vocabulary fits in 65,536 ids, else uint32
    train/en.idx.npy    int64 offsets, N+1 entries: segment i = bin[off[i]:off[i+1]]
    train/en.keys       the alignment key of each segment (copied from the corpus)
    train/en.chars.npy  int32 characters per segment (for bits per character)
    train/pairs/en-fr.npy  int32 (M, 2): rows (i, j) with en segment i and fr segment j sharing a key;
                        a before b in corpus language order, rows in a's order; only pairs with M > 0
    meta.json           dtype, vocab size, tokenizer sha256, languages, special and language-tag ids,
                        counts per split/language (segments, tokens, chars), pair counts, throughput

Encoding streams each language file in chunks of `batch_size` lines through the Rust tokenizer's
multi-threaded `encode_batch_fast` (the next chunk encodes while this one is converted and appended to
the .bin), so memory stays bounded by two chunks (plus the alignment keys of one split, for the pair
index). The reader memory-maps everything and copies nothing.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import chain, combinations, islice
from pathlib import Path

import numpy as np

from xling.corpus import SPLITS, Corpus
from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json

DTYPES = ("auto", "uint16", "uint32")
_FALSE = ("", "0", "f", "false", "n", "no", "off")  # what HF tokenizers reads as "off"


@dataclass
class ShardConfig:
    batch_size: int = 2048  # lines per encode_batch call: large enough to keep every core busy, small for memory
    dtype: str = "auto"  # token dtype on disk: auto (uint16 if vocab <= 65536, else uint32) | uint16 | uint32
    workers: int = 1  # processes encoding files (split x language) side by side (0 = one per core); same output

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, not {self.batch_size}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = one per core), not {self.workers}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")


def choose_dtype(vocab_size: int, dtype: str = "auto") -> np.dtype:
    """The smallest unsigned type that holds every id, or the requested one if it fits."""
    if dtype == "auto":
        dtype = "uint16" if vocab_size <= 2**16 else "uint32"
    if dtype == "uint16" and vocab_size > 2**16:
        raise XlingError(f"shard.dtype=uint16 cannot hold a vocabulary of {vocab_size:,} ids; "
                         f"use shard.dtype=auto or uint32")
    return np.dtype(dtype)


# ---------------------------------------------------------------------------- building

def _tokenizer_info(tokenizer_dir: Path, langs: list[str]):
    """(tokenizer, sha256, special ids, language-tag ids) via xling.tokenizer's conventions."""
    from xling.tokenizer import lang_ids, load_tokenizer, special_ids, tokenizer_hash

    tok = load_tokenizer(tokenizer_dir)
    return tok, tokenizer_hash(tokenizer_dir), special_ids(tok), lang_ids(tok, langs)


def _count_lines(path: Path) -> int:
    """Lines in a text file (a last line without a newline counts), reading 4 MiB at a time."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _read_chunks(path: Path, size: int):
    """Yield (lines, utf-8 bytes read) with at most `size` lines each, never the whole file."""
    with open(path, "rb") as f:
        while raw := list(islice(f, size)):  # splits on b"\n" only, as the corpus writes it
            data = b"".join(raw)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise XlingError(f"corpus file {path} is not UTF-8; rebuild the corpus") from None
            lines = text.removesuffix("\n").split("\n")
            if "\r" in text:  # a hand-written file with CRLF line ends
                lines = [t.removesuffix("\r") for t in lines]
            yield lines, len(data)


def _encode_ahead(tok, chunks):
    """Yield (lines, nbytes, encodings) of each chunk, encoding the next chunk in a thread meanwhile.

    The Rust encoder releases the GIL and runs on every core, so our numpy conversion and file writes
    overlap with it instead of leaving the cores idle. At most two chunks are held at a time.
    """
    with ThreadPoolExecutor(1) as pool:
        pending = None
        for lines, nbytes in chunks:
            job = lines, nbytes, pool.submit(tok.encode_batch_fast, lines, add_special_tokens=False)
            if pending:
                yield pending[0], pending[1], pending[2].result()
            pending = job
        if pending:
            yield pending[0], pending[1], pending[2].result()


class _Parallelism:
    """Let the Rust tokenizer use every core while encoding.

    HF tokenizers runs single-threaded when TOKENIZERS_PARALLELISM is false, a value many users set
    globally to silence its fork warning. We switch it on for the encode and restore it after, except in
    a multiprocessing child, where the variable may have been set to avoid a deadlock after fork.
    """

    def __enter__(self):
        self.old = os.environ.get("TOKENIZERS_PARALLELISM")
        if self.old is not None and self.old.lower() in _FALSE and multiprocessing.parent_process() is None:
            os.environ["TOKENIZERS_PARALLELISM"] = "true"
        return self

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = self.old


def _encode_language(tok, text_path: Path, n: int, dtype: np.dtype, batch_size: int, out: Path,
                     name: str, bar) -> dict[str, int]:
    """Encode one corpus file into {name}.bin / .idx.npy / .chars.npy. Returns its counts."""
    offsets = np.lib.format.open_memmap(out / f"{name}.idx.npy", mode="w+", dtype=np.int64, shape=(n + 1,))
    chars = np.lib.format.open_memmap(out / f"{name}.chars.npy", mode="w+", dtype=np.int32, shape=(n,))
    offsets[0] = 0
    i, total = 0, 0
    with open(out / f"{name}.bin", "wb") as binf:
        for lines, nbytes, encs in _encode_ahead(tok, _read_chunks(text_path, batch_size)):
            if i + len(lines) > n:
                break  # reported below, after counting
            lens = np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs))
            ntok = int(lens.sum())
            ids = np.fromiter(chain.from_iterable(e.ids for e in encs), dtype=dtype, count=ntok)
            binf.write(ids.tobytes())
            offsets[i + 1:i + 1 + len(lines)] = total + np.cumsum(lens)
            chars[i:i + len(lines)] = [len(t) for t in lines]
            i += len(lines)
            total += ntok
            bar.update(nbytes)
    if i != n:
        raise XlingError(f"corpus file {text_path} has {_count_lines(text_path):,} lines but its .keys file has "
                         f"{n:,}; rebuild the corpus (`xling corpus --overwrite`)")
    counts = {"segments": n, "tokens": total, "chars": int(chars.sum(dtype=np.int64))}
    del offsets, chars  # close the memmaps before the directory is renamed
    return counts


def _pair_index(keys_a: list[str], index_b: dict[str, int]) -> np.ndarray:
    """(M, 2) int32 rows (i, j) with keys_a[i] == keys_b[j], in a's order."""
    rows = [(i, index_b[k]) for i, k in enumerate(keys_a) if k in index_b]
    return np.array(rows, dtype=np.int32).reshape(-1, 2)


def _key_index(keys: list[str], path: Path) -> dict[str, int]:
    index = {k: i for i, k in enumerate(keys)}
    if len(index) != len(keys):
        dup = next(k for i, k in enumerate(keys) if index[k] != i)
        raise XlingError(f"alignment key {dup!r} appears twice in {path}; every segment of a language needs "
                         f"its own key (rebuild the corpus)")
    return index


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _encode_job(tokenizer_dir: Path, dtype: np.dtype, batch_size: int, threads: int,
                job: tuple[Path, int, Path, str]) -> tuple[dict[str, int], float]:
    """One corpus file encoded in a worker process: (counts, seconds)."""
    from xling.tokenizer import load_tokenizer

    os.environ["RAYON_NUM_THREADS"] = str(threads)  # the encoder's thread pool, before its first use
    tok = load_tokenizer(tokenizer_dir)
    t0 = time.perf_counter()
    with _Parallelism():
        counts = _encode_language(tok, *job[:2], dtype, batch_size, *job[2:], _NoBar())
    return counts, time.perf_counter() - t0


def _inputs_stamp(files: dict[tuple[str, str], Path], tok_sha: str, dtype: np.dtype, batch_size: int) -> str:
    """What the shards are made from (the tokenizer, the token type, each corpus file's size and modification
    time; the batch size, which changes no output, too): files encoded by a run with the same stamp are reused."""
    parts = [tok_sha, dtype.name, str(batch_size)]
    for path in files.values():
        for f in (path, path.with_suffix(".keys")):
            st = f.stat()
            parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def build_shards(corpus: Corpus, tokenizer_dir: str | Path, cfg: ShardConfig, out_dir: str | Path) -> dict:
    """Encode every split and language of `corpus` into `out_dir` (atomically). Returns meta.

    With shard.workers > 1, that many processes encode different files (split x language) at once, each with
    its share of the cores for the Rust encoder; every file is encoded as one process would, so the output is
    the same. A run that stops (a worker killed, an error, Ctrl-C) leaves its finished files in a hidden partial
    folder beside `out_dir`; the next run over the same inputs encodes only the others."""
    from xling.progress import progress
    from xling.workers import ordered_map

    tokenizer_dir, out_dir = Path(tokenizer_dir), Path(out_dir)
    langs = list(corpus.langs)
    tok, tok_sha, specials, tags = _tokenizer_info(tokenizer_dir, langs)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    dtype = choose_dtype(vocab_size, cfg.dtype)
    workers = cfg.workers or os.cpu_count() or 1

    files = {(s, lg): corpus.path / s / f"{lg}.txt" for s in SPLITS for lg in langs}
    for p in files.values():
        for q in (p, p.with_suffix(".keys")):
            if not q.is_file():
                raise XlingError(f"corpus file {q} is missing; rebuild the corpus with "
                                 f"`xling corpus --run {corpus.path.parent} --overwrite`")
    total_bytes = sum(p.stat().st_size for p in files.values())

    counts: dict[str, dict[str, dict[str, int]]] = {s: {} for s in SPLITS}
    pair_counts: dict[str, dict[str, int]] = {}
    seconds, encoded_bytes = 0.0, 0
    stamp = _inputs_stamp(files, tok_sha, dtype, cfg.batch_size)
    with atomic_dir(out_dir, keep=stamp) as tmp, _Parallelism(), \
            progress(desc="shard: encoding", total=total_bytes, unit="B") as bar:
        jobs, todo = [], []
        for split, lang in files:
            (tmp / split).mkdir(exist_ok=True)
            done = tmp / split / f".{lang}.done.json"
            if done.is_file():  # encoded by an earlier run of the same inputs that stopped before the end
                counts[split][lang] = json.loads(done.read_text(encoding="utf-8"))
                bar.update(files[split, lang].stat().st_size)
                continue
            key_path = files[split, lang].with_suffix(".keys")
            shutil.copyfile(key_path, tmp / split / f"{lang}.keys")
            jobs.append((files[split, lang], _count_lines(key_path), tmp / split, lang))
            todo.append((split, lang))
        if len(todo) < len(files):
            print(f"shard: {len(files) - len(todo)} of {len(files)} files were encoded by an earlier run that "
                  f"stopped; encoding the other {len(todo)}", file=sys.stderr)
        t0 = time.perf_counter()
        if workers > 1:
            threads = max(1, (os.cpu_count() or 1) // workers)
            encode = partial(_encode_job, tokenizer_dir, dtype, cfg.batch_size, threads)
            results = (c for c, _ in ordered_map(encode, jobs, workers, what="a shard worker",
                                                 after="the files encoded so far are kept for the next run: run "
                                                       "the command again to encode the rest"))
        else:
            results = (_encode_language(tok, *job[:2], dtype, cfg.batch_size, *job[2:], bar) for job in jobs)
        for (split, lang), c in zip(todo, results, strict=True):
            counts[split][lang] = c
            atomic_write_json(tmp / split / f".{lang}.done.json", c)
            encoded_bytes += files[split, lang].stat().st_size
            if workers > 1:
                bar.update(files[split, lang].stat().st_size)
        seconds = time.perf_counter() - t0
        for split, lang in files:
            (tmp / split / f".{lang}.done.json").unlink()
        for split in SPLITS:
            keys = {lg: corpus.keys(split, lg) for lg in langs}
            index = {lg: _key_index(keys[lg], files[split, lg].with_suffix(".keys")) for lg in langs}
            for a, b in combinations(langs, 2):
                rows = _pair_index(keys[a], index[b])
                if len(rows):
                    (tmp / split / "pairs").mkdir(exist_ok=True)
                    np.save(tmp / split / "pairs" / f"{a}-{b}.npy", rows)
                    pair_counts.setdefault(f"{a}-{b}", {})[split] = len(rows)
        mb = encoded_bytes / 1e6  # what this run encoded (all of it, unless an earlier run had done some)
        ntok = sum(counts[s][lg]["tokens"] for s, lg in todo)
        meta = {
            "dtype": dtype.name,
            "vocab_size": vocab_size,
            "tokenizer_sha256": tok_sha,
            "langs": langs,
            "specials": specials,
            "lang_token_ids": tags,
            "splits": counts,
            "pairs": pair_counts,
            "throughput": {"text_mb": round(mb, 3), "encode_seconds": round(seconds, 3),
                           "mb_per_s": round(mb / max(seconds, 1e-9), 3),
                           "tokens_per_s": round(ntok / max(seconds, 1e-9), 1),
                           "batch_size": cfg.batch_size, "cpus": os.cpu_count(), "workers": workers},
        }
        atomic_write_json(tmp / "meta.json", meta)
    print(f"shard: encoded {mb:.3g} MB ({ntok:,} tokens) in {seconds:.1f} s = {mb / max(seconds, 1e-9):.2f} MB/s")
    return meta


# ---------------------------------------------------------------------------- reading

def scored_prefix(shards, split: str, lang: str, max_tokens: int) -> tuple[int, int]:
    """(segments, characters) that an evaluation of one language scores: the rule every bits-per-character
    number follows (the model's `heldout.clm_eval` and the count-based baselines of `xling.ngram`).

    Segments are taken in shard order until at least `max_tokens` targets have been scored (max_tokens <= 0:
    all); each segment costs its tokens plus one (`<lang> segment </s>` predicts the segment and `</s>`, the
    tag is context only). Characters are those of the segments used.
    """
    targets = np.cumsum(np.diff(np.asarray(shards.offsets(split, lang), dtype=np.int64)) + 1)  # (N,) running
    n = len(targets) if max_tokens <= 0 else min(int(np.searchsorted(targets, max_tokens)) + 1, len(targets))
    return n, int(np.asarray(shards.chars(split, lang))[:n].sum())


class Shards:
    """Read-only view of a shards directory; arrays are memory-mapped, nothing is loaded whole.

    `expect_tokenizer_hash`: the sha256 of the tokenizer.json the caller will decode with; a mismatch
    with the one the shards were built with is an XlingError (the ids would mean other tokens).
    """

    def __init__(self, path: str | Path, expect_tokenizer_hash: str | None = None):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            what = "does not exist" if not self.path.exists() else "holds no meta.json"
            raise XlingError(f"shards directory {self.path} {what}; build it with "
                             f"`xling shard --run {self.path.parent}`")
        try:
            self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            self.langs: list[str] = list(self.meta["langs"])
            self.dtype = np.dtype(self.meta["dtype"])
            self.vocab_size: int = int(self.meta["vocab_size"])
            self.specials: dict[str, int] = dict(self.meta["specials"])
            self.lang_token_ids: dict[str, int] = dict(self.meta["lang_token_ids"])
            self.tokenizer_sha256: str = self.meta["tokenizer_sha256"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
            raise XlingError(f"{meta_path} is corrupt ({type(e).__name__}: {e}); rebuild it with "
                             f"`xling shard --run {self.path.parent} --force`") from None
        if expect_tokenizer_hash is not None and expect_tokenizer_hash != self.tokenizer_sha256:
            raise XlingError(f"shards in {self.path} were encoded with tokenizer sha256 "
                             f"{self.tokenizer_sha256[:12]}… but the tokenizer given has "
                             f"{expect_tokenizer_hash[:12]}…; "
                             f"re-encode with `xling shard --run {self.path.parent} --force`")
        self._cache: dict[tuple[str, str, str], np.ndarray] = {}

    # -- per split and language

    def num_segments(self, split: str, lang: str) -> int:
        return len(self.offsets(split, lang)) - 1

    def num_tokens(self, split: str, lang: str) -> int:
        return int(self.offsets(split, lang)[-1])

    def offsets(self, split: str, lang: str) -> np.ndarray:
        """int64 (N+1,) memmap: segment i is tokens[off[i]:off[i+1]]."""
        return self._npy(split, lang, "idx")

    def chars(self, split: str, lang: str) -> np.ndarray:
        """int32 (N,) memmap: characters of each segment."""
        return self._npy(split, lang, "chars")

    def tokens(self, split: str, lang: str) -> np.ndarray:
        """All token ids of the split and language, concatenated: a read-only memmap (empty array if none)."""
        key = (split, lang, "bin")
        if key not in self._cache:
            n = self.num_tokens(split, lang)
            path = self._file(split, lang, ".bin")
            if path.stat().st_size != n * self.dtype.itemsize:
                raise XlingError(f"{path} has {path.stat().st_size:,} bytes, expected {n * self.dtype.itemsize:,} "
                                 f"({n:,} {self.dtype.name} tokens); rebuild with "
                                 f"`xling shard --run {self.path.parent} --force`")
            # np.memmap cannot map an empty file; an empty split is an empty array
            self._cache[key] = np.memmap(path, dtype=self.dtype, mode="r") if n else np.empty(0, self.dtype)
        return self._cache[key]

    def segment(self, split: str, lang: str, i: int) -> np.ndarray:
        """The token ids of segment i: a view into the memmap (no copy)."""
        off = self.offsets(split, lang)
        n = len(off) - 1
        if not -n <= i < n:
            raise IndexError(f"segment {i} out of range: {split}/{lang} has {n} segments")
        i %= n
        return self.tokens(split, lang)[off[i]:off[i + 1]]

    def keys(self, split: str, lang: str) -> list[str]:
        """Alignment keys, one per segment (read from the small text file on each call)."""
        path = self._file(split, lang, ".keys")
        return path.read_text(encoding="utf-8").splitlines() if path.stat().st_size else []

    # -- translation pairs

    def pair_counts(self, split: str) -> dict[str, int]:
        """{"en-fr": M, ...} for the language pairs with translation pairs in `split`."""
        self._check_split(split)
        return {p: c[split] for p, c in self.meta.get("pairs", {}).items() if c.get(split)}

    def pairs(self, split: str, a: str, b: str) -> np.ndarray:
        """int32 (M, 2) segment indices of translation pairs; column 0 indexes a, column 1 indexes b.

        Rows are in the segment order of whichever of a, b comes first in `langs` (the stored order).
        """
        self._check(split, a)
        self._check(split, b)
        if a == b:
            raise XlingError(f"pairs need two different languages, got {a!r} twice")
        first, second = (a, b) if self.langs.index(a) < self.langs.index(b) else (b, a)
        path = self.path / split / "pairs" / f"{first}-{second}.npy"
        if not path.is_file():
            have = ", ".join(self.pair_counts(split)) or "none"
            raise XlingError(f"no {first}-{second} translation pairs in the {split} split of {self.path} "
                             f"(pairs there: {have}); use aligned data with shared keys for both languages")
        rows = np.load(path, mmap_mode="r")
        return rows if (first, second) == (a, b) else rows[:, ::-1]

    # -- helpers

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise XlingError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")

    def _check(self, split: str, lang: str) -> None:
        self._check_split(split)
        if lang not in self.langs:
            raise XlingError(f"language {lang!r} is not in the shards at {self.path} (they have "
                             f"{', '.join(self.langs)}); rebuild the corpus and shards with it")

    def _file(self, split: str, lang: str, suffix: str) -> Path:
        self._check(split, lang)
        path = self.path / split / f"{lang}{suffix}"
        if not path.is_file():
            raise XlingError(f"shard file {path} is missing; rebuild with `xling shard --run {self.path.parent} "
                             f"--force`")
        return path

    def _npy(self, split: str, lang: str, kind: str) -> np.ndarray:
        key = (split, lang, kind)
        if key not in self._cache:
            self._cache[key] = np.load(self._file(split, lang, f".{kind}.npy"), mmap_mode="r")
        return self._cache[key]
