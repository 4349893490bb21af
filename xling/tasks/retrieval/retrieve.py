"""Cross-lingual sentence retrieval: sentence vectors by mean pooling, exact nearest neighbours, files.

    vecs = encode(model, seqs, lang_index=2, tag=7, specials=specials, layer=3)   # (N, D), L2-normalised
    acc = top1_accuracy(src_vecs, tgt_vecs)    # row i of src should find row i of tgt (XTREME Tatoeba)
    scores, idx = search(queries, docs, k=5)   # exact top-k by cosine, chunked (or backend="faiss" / "ivf")
    vecs = embed_texts(model, tok, ["In the beginning", ...], "en", layer=2, pool_specials=True)

CLI (`xling embed`, `xling retrieve`):

    xling embed --run runs/demo --lang en --input en.txt --out vecs/en       # vecs/en.npy + vecs/en.ids
    xling retrieve --run runs/demo --queries en.txt --docs fr.txt --src en --tgt fr -k 5 --format tsv

A sentence is encoded as in the contrastive objective: `<lang> x </s>` through the model in bidirectional
mode, then the hidden states of one layer are mean-pooled over real tokens (padding excluded; the tag and
`</s>` optionally excluded) and L2-normalised. The defaults of the CLI: the layer that the run's retrieval
evaluation chose on the valid split (`<run>/eval/retrieval.json`), else DEFAULT_LAYER; specials pooled or
not as POOL_SPECIALS says (both measured, see the constants).

Search is exact: cosine = dot product of normalised vectors. Queries go in chunks sized so the
(chunk, N) score block stays under `max_bytes` (256 MiB by default), whatever the number of queries; the
scores come from one BLAS matrix product per chunk and the top k from `torch.topk` (multithreaded; ~8x
faster than `np.argpartition` here). With `faiss` importable, backend="faiss" uses a flat inner-product
index (also exact: the same neighbours up to ties and float rounding); it needs the least memory, but
was slower than the chunked search here. bench/retrieve.py (1k queries, d 256, a loaded 2-core machine):
10k documents 3,930 queries/s (38 MiB) vs 1,628 (153 MiB) for a full `q @ d.T` + argpartition and 2,293
(6 MiB) for FAISS; 100k documents 300/s (256 MiB) vs 125/s (1,526 MiB) and 156/s (98 MiB). For millions of
documents, backend="ivf" is approximate (`ann.py`: an IVF index of 8-bit codes, candidates re-scored exactly).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

from xling.encode import (
    DEFAULT_LAYER,
    MAX_BYTES,
    POOL_SPECIALS,
    as_matrix,
    check_dims,
    embed_texts,
    nearest,
)
from xling.errors import XlingError
from xling.files import atomic_write_bytes, atomic_write_text, read_lines

BACKENDS = ("exact", "faiss", "ivf")
FORMATS = ("tsv", "jsonl")


# ---------------------------------------------------------------------------- exact search

def faiss_search(queries: np.ndarray, docs: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The same as `nearest` through a FAISS flat inner-product index (exact; needs `faiss` installed)."""
    from xling.tasks.retrieval.ann import import_faiss

    faiss = import_faiss("faiss")
    q, d = as_matrix(queries, "queries"), as_matrix(docs, "documents")
    check_dims(q, d)
    k = min(k, len(d))
    if k < 1 or len(q) == 0:
        return np.empty((len(q), max(k, 0)), np.float32), np.empty((len(q), max(k, 0)), np.int64)
    index = faiss.IndexFlatIP(d.shape[1])
    index.add(d)
    scores, idx = index.search(q, k)
    return scores.astype(np.float32), idx.astype(np.int64)


def search(queries: np.ndarray, docs: np.ndarray, k: int = 5, *, backend: str = "exact",
           max_bytes: int = MAX_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by cosine: backend "exact" (chunked BLAS + torch.topk), "faiss" (flat inner-product index, exact) or
    "ivf" (approximate: `ann.ivf_search`, an IVF index of 8-bit codes, candidates re-scored exactly)."""
    if backend not in BACKENDS:
        raise XlingError(f"unknown search backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "faiss":
        return faiss_search(queries, docs, k)
    if backend == "ivf":
        from xling.tasks.retrieval.ann import ivf_search

        return ivf_search(queries, docs, k)
    return nearest(queries, docs, k, max_bytes=max_bytes)


# ---------------------------------------------------------------------------- vector files

def _prefix(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".npy", ".ids") else p


def vector_paths(prefix: str | Path) -> tuple[Path, Path]:
    """(PREFIX.npy, PREFIX.ids) of an output prefix (given with or without either suffix)."""
    prefix = _prefix(prefix)
    return prefix.with_name(prefix.name + ".npy"), prefix.with_name(prefix.name + ".ids")


def write_vectors(prefix: str | Path, vecs: np.ndarray, ids: list[str]) -> tuple[Path, Path]:
    """PREFIX.npy (float32 (N, D)) and PREFIX.ids (one id a line), each written atomically."""
    if len(ids) != len(vecs):
        raise ValueError(f"{len(ids)} ids for {len(vecs)} vectors")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vecs, dtype=np.float32), allow_pickle=False)
    npy, ids_path = vector_paths(prefix)
    atomic_write_bytes(npy, buf.getvalue())
    atomic_write_text(ids_path, "".join(f"{i}\n" for i in ids))
    return npy, ids_path


def read_vectors(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(vectors (N, D) float32, ids) from PREFIX.npy (+ PREFIX.ids if present, else line numbers 1..N).

    The array is memory-mapped, not read whole: search reads it a block of queries at a time, so a document
    set larger than memory is paged in as the products need it."""
    npy, ids_path = vector_paths(path)
    prefix = _prefix(path)
    if not npy.is_file():
        raise XlingError(f"vector file {npy} does not exist; write it with `xling embed --out {prefix}`")
    try:
        vecs = np.load(npy, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise XlingError(f"{npy} is not a readable .npy array ({e}); re-create it with `xling embed`") from None
    if vecs.ndim != 2 or len(vecs) == 0:
        raise XlingError(f"{npy} holds an array of shape {vecs.shape}; expected (N, D) vectors with N >= 1")
    ids = read_lines(ids_path, "ids file") if ids_path.exists() else [str(i) for i in range(1, len(vecs) + 1)]
    if len(ids) != len(vecs):
        raise XlingError(f"{ids_path} has {len(ids)} ids for {len(vecs)} vectors in {npy}; re-create both "
                         f"with `xling embed`")
    return vecs.astype(np.float32, copy=False), ids


# ---------------------------------------------------------------------------- commands

def load_encoder(run: str | Path):
    """(model in eval mode, tokenizer) of a run directory or checkpoint."""
    from xling.checkpoint import load_run

    if not Path(run).exists():
        raise XlingError(f"model {run} does not exist; give a run directory with checkpoints/ (e.g. runs/demo)")
    return load_run(run)


def default_layer(run: str | Path) -> int:
    """The layer the run's retrieval evaluation chose on the valid split, else DEFAULT_LAYER."""
    path = Path(run) / "eval" / "retrieval.json"
    try:
        return int(json.loads(path.read_text(encoding="utf-8"))["metrics"]["retrieval.layer"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_LAYER


def resolve_layer(run: str | Path, model: torch.nn.Module, layer: int | None) -> int:
    """`layer` (or the run's default) as an index into the L+1 hidden states, checked."""
    n = model.cfg.n_layer + 1
    layer = default_layer(run) if layer is None else layer
    if not -n <= layer < n:
        raise XlingError(f"--layer {layer} is out of range: the model has {n} hidden states (0 = embeddings, "
                         f"{n - 1} = last block; negative counts from the end)")
    return layer % n


class InputFile:
    """One input of retrieve/mine: a text file (embedded here) or PREFIX.npy vectors."""

    def __init__(self, path: str | Path, what: str):
        self.path, self.what = Path(path), what
        self.is_vectors = self.path.suffix == ".npy"
        if self.is_vectors:
            self.vecs, self.ids = read_vectors(self.path)
            self.texts: list[str] | None = None
        else:
            self.texts = read_lines(self.path, f"{what} file")
            self.ids = [str(i) for i in range(1, len(self.texts) + 1)]
            self.vecs = None

    def text(self, i: int) -> str:
        return self.texts[i] if self.texts is not None else ""


def language_identifier(run: str | Path):
    """A character-trigram classifier trained on the run's corpus (500 train lines a language), or None."""
    from xling.corpus import Corpus
    from xling.langs import CharNgramLangID

    corpus_dir = Path(run) / "corpus"
    if not (corpus_dir / "meta.json").is_file():
        return None
    corpus = Corpus(corpus_dir)
    return CharNgramLangID({lg: corpus.texts("train", lg)[:500] for lg in corpus.langs})


def detect_language(ident, lines: list[str], n: int = 100) -> str | None:
    """Majority language of the first `n` non-empty lines (None without an identifier)."""
    votes = [ident.predict(t) for t in lines[:n] if t.strip()] if ident is not None else []
    return max(sorted(set(votes)), key=votes.count) if votes else None


def check_languages(run: str | Path, langs: list[str | None]) -> None:
    """XlingError for a language the run's tokenizer has no tag for (before any model is loaded)."""
    from xling.tokenizer import lang_ids, load_tokenizer

    if (Path(run) / "tokenizer" / "tokenizer.json").is_file():
        lang_ids(load_tokenizer(Path(run) / "tokenizer"), [lg for lg in langs if lg is not None])


def resolve_languages(run: str | Path, sides: list[InputFile], langs: list[str | None],
                      names: list[str]) -> list[str | None]:
    """The language of each text side: as given (with a warning when the text looks otherwise), else detected."""
    check_languages(run, langs)
    if all(s.texts is None for s in sides):
        return langs
    ident = language_identifier(run) if Path(run).is_dir() else None
    detected = [detect_language(ident, s.texts) if s.texts is not None else None for s in sides]
    out = []
    for side, given, found, name in zip(sides, langs, detected, names, strict=True):
        if given is None and side.texts is not None:
            if found is None:
                raise XlingError(f"give {name} LANG for {side.path} (the run has no corpus to detect it from)")
            print(f"warning: {side.path} looks like {found}; using {name} {found}", file=sys.stderr)
            given = found
        out.append(given)
    both = [f for s, f in zip(sides, detected, strict=True) if s.texts is not None]
    if len(both) == 2 and both[0] is not None and both[0] == both[1] and out[0] != out[1]:
        print(f"warning: {sides[0].path} and {sides[1].path} both look like {both[0]}, but cross-lingual "
              f"{out[0]}->{out[1]} was asked; check the files and {names[0]}/{names[1]}", file=sys.stderr)
    else:
        for side, given, found in zip(sides, out, detected, strict=True):
            if found is not None and given is not None and found != given:
                print(f"warning: {side.path} looks like {found}, not {given}", file=sys.stderr)
    return out


def side_vectors(model_dir: str | Path, sides: list[InputFile], langs: list[str | None], *, layer: int | None,
                 pool_specials: bool | None, batch_size: int = 64) -> list[np.ndarray]:
    """Vectors of each side: read, or embedded with the run's model (loaded once, only when needed)."""
    todo = [s for s in sides if s.vecs is None]
    if todo:
        model, tok = load_encoder(model_dir)
        layer = resolve_layer(model_dir, model, layer)
        pool = POOL_SPECIALS if pool_specials is None else pool_specials
        for side, lang in zip(sides, langs, strict=True):
            if side.vecs is None:
                side.vecs = embed_texts(model, tok, side.texts, lang, layer=layer, pool_specials=pool,
                                        batch_size=batch_size)
    check_dims(sides[0].vecs, sides[1].vecs)
    return [s.vecs for s in sides]


def run_retrieve(model_dir: str | Path, queries: str | Path, docs: str | Path, *, src: str | None = None,
                 tgt: str | None = None, k: int = 5, fmt: str = "tsv", out: str | Path | None = None,
                 layer: int | None = None, pool_specials: bool | None = None, backend: str = "exact") -> int:
    """`xling retrieve`: top-k documents per query with cosine scores, as TSV or JSONL (stdout or `out`)."""
    if fmt not in FORMATS:
        raise XlingError(f"unknown format {fmt!r}; choose tsv or jsonl")
    if k < 1:
        raise XlingError(f"-k must be >= 1, not {k}")
    if backend not in BACKENDS:
        raise XlingError(f"unknown search backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend != "exact":
        from xling.tasks.retrieval.ann import import_faiss

        import_faiss(backend)  # before any model is loaded or text embedded
    sides = [InputFile(queries, "queries"), InputFile(docs, "documents")]
    langs = resolve_languages(model_dir, sides, [src, tgt], ["--src", "--tgt"])
    qv, dv = side_vectors(model_dir, sides, langs, layer=layer, pool_specials=pool_specials)
    scores, idx = search(qv, dv, k, backend=backend)
    q, d = sides
    lines = []
    if fmt == "tsv":
        lines.append("query_id\trank\tdoc_id\tscore\tquery\tdoc")
        for i in range(len(qv)):
            for r, (s, j) in enumerate(zip(scores[i], idx[i], strict=True), 1):
                lines.append(f"{q.ids[i]}\t{r}\t{d.ids[j]}\t{s:.6f}\t{tsv_cell(q.text(i))}\t"
                             f"{tsv_cell(d.text(j))}")
    else:
        for i in range(len(qv)):
            hits = [{"rank": r, "doc_id": d.ids[j], "score": round(float(s), 6), "doc": d.text(j)}
                    for r, (s, j) in enumerate(zip(scores[i], idx[i], strict=True), 1)]
            lines.append(json.dumps({"query_id": q.ids[i], "query": q.text(i), "hits": hits}, ensure_ascii=False))
    emit(lines, out)
    return len(qv)


def tsv_cell(text: str) -> str:
    return text.replace("\t", " ")


def emit(lines: list[str], out: str | Path | None) -> None:
    """Lines to stdout, or atomically to a file."""
    text = "".join(f"{ln}\n" for ln in lines)
    if out is None or str(out) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(out, text)
