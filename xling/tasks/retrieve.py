"""Cross-lingual sentence retrieval: sentence vectors by mean pooling, exact nearest neighbours, files.

    vecs = encode(model, seqs, lang_index=2, tag=7, specials=specials, layer=3)   # (N, D), L2-normalised
    acc = top1_accuracy(src_vecs, tgt_vecs)    # row i of src should find row i of tgt (XTREME Tatoeba)
    scores, idx = search(queries, docs, k=5)   # exact top-k by cosine, chunked (or backend="faiss")
    vecs = embed_texts(model, tok, ["In the beginning", ...], "en", layer=2, pool_specials=True)

CLI (`xling embed`, `xling retrieve`):

    xling embed --model runs/demo --lang en --input en.txt --out vecs/en     # vecs/en.npy + vecs/en.ids
    xling retrieve --model runs/demo --queries en.txt --docs fr.txt --src en --tgt fr -k 5 --format tsv

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
(6 MiB) for FAISS; 100k documents 300/s (256 MiB) vs 125/s (1,526 MiB) and 156/s (98 MiB).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import torch

from xling.errors import XlingError
from xling.files import atomic_write_bytes, atomic_write_text, read_lines
from xling.progress import progress

MAX_BYTES = 256 << 20  # bound on the score block of one query chunk (float32 chunk x N)
BACKENDS = ("exact", "faiss")
# Defaults, measured on runs/demo (valid split, 8 languages, en<->X): a model trained for only 79 steps gave
# near-chance numbers for every choice (top-1 0.021 at layer 0 either way, <= 0.003 at layers 1-4; mining F1
# 0.024 pooled vs 0.027 not), so no choice measured better. The defaults follow what the contrastive
# objective trains (the last layer, mean-pooled over every real token, tag and </s> included) and what the
# retrieval evaluation encodes, so its chosen layer applies unchanged.
DEFAULT_LAYER = -1  # pooled layer when the run has no eval/retrieval.json
POOL_SPECIALS = True  # pool the language tag and </s> with the words
FORMATS = ("tsv", "jsonl")


# ---------------------------------------------------------------------------- sentence vectors

@torch.no_grad()
def encode(model: torch.nn.Module, seqs: list[np.ndarray], *, lang_index: int | None, tag: int | None,
           specials: dict[str, int], layer: int = -1, pool_specials: bool = True, batch_size: int = 64,
           max_len: int | None = None, all_layers: bool = False, desc: str = "", bar: bool = True) -> np.ndarray:
    """Sentence vectors (N, D) float32, L2-normalised; with all_layers=True, (L+1, N, D) for every layer.

    seqs: token ids of each sentence, without specials. tag=None encodes without the language tag (and
    lang_index=None without language ids), e.g. for language identification, where the tag would give
    the answer away. Sentences are sorted by length so batches carry little padding; rows come back in
    input order.
    """
    max_len = max_len or model.cfg.block_size
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = None
    show = bar
    bar = progress(total=len(seqs), desc=desc or "encode", unit="sent", leave=False, disable=not show or None)
    try:
        for k in range(0, len(order), batch_size):
            rows = [seqs[i] for i in order[k:k + batch_size]]
            head = [tag] if tag is not None else []
            built = [np.concatenate([head, r[: max_len - len(head) - 1], [specials["eos"]]]).astype(np.int64)
                     for r in rows]
            T = max(len(b) for b in built)
            idx = torch.full((len(built), T), specials["pad"], dtype=torch.long)
            real = torch.zeros((len(built), T), dtype=torch.bool)
            for r, b in enumerate(built):
                idx[r, : len(b)] = torch.from_numpy(b)
                real[r, : len(b)] = True
            lang_ids = torch.full_like(idx, lang_index) if lang_index is not None else None
            states = model.hidden_states(idx.to(dev), causal=False, lang_ids=None if lang_ids is None else
                                         lang_ids.to(dev), pad_mask=real.to(dev))  # L+1 x (b, T, D)
            pool = real.clone()
            if not pool_specials:
                pool[:, : len(head)] = False
                for r, b in enumerate(built):
                    pool[r, len(b) - 1] = False  # the </s>
                pool |= ~pool.any(1, keepdim=True) & real  # an empty sentence keeps its specials
            m = pool.to(dev).unsqueeze(-1).float()  # (b, T, 1)
            layers = states if all_layers else [states[layer]]
            vec = torch.stack([(h.float() * m).sum(1) / m.sum(1).clamp_min(1.0) for h in layers])  # (L, b, D)
            vec = torch.nn.functional.normalize(vec, dim=-1).cpu().numpy()
            if out is None:
                out = np.zeros((vec.shape[0], len(seqs), vec.shape[-1]), dtype=np.float32)
            out[:, order[k:k + batch_size]] = vec
            bar.update(len(rows))
    finally:
        bar.close()
        model.train(was_training)
    if out is None:  # no sentences
        d = model.cfg.d_model
        out = np.zeros((model.cfg.n_layer + 1 if all_layers else 1, 0, d), dtype=np.float32)
    return out if all_layers else out[0]


def embed_texts(model: torch.nn.Module, tokenizer, texts: list[str], lang: str, *, layer: int = DEFAULT_LAYER,
                pool_specials: bool = POOL_SPECIALS, batch_size: int = 64) -> np.ndarray:
    """Sentence vectors (N, D) of raw texts in `lang` (its tag first, its language index when the model has one)."""
    from xling.tokenizer import SPECIAL_TOKENS, lang_ids, special_ids

    tag = lang_ids(tokenizer, [lang])[lang]  # XlingError for a language the tokenizer does not know
    seqs = [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return encode(model, seqs, lang_index=tag - len(SPECIAL_TOKENS), tag=tag, specials=special_ids(tokenizer),
                  layer=layer, pool_specials=pool_specials, batch_size=batch_size, desc=f"embed {lang}")


# ---------------------------------------------------------------------------- exact search

def as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise XlingError(f"{what} must be a 2-D array of vectors (rows), not shape {x.shape}")
    return x


def _check_dims(queries: np.ndarray, docs: np.ndarray) -> None:
    if queries.shape[1] != docs.shape[1]:
        raise XlingError(f"query vectors have dimension {queries.shape[1]} but document vectors "
                         f"{docs.shape[1]}; embed both with the same model (and layer)")


def nearest(queries: np.ndarray, docs: np.ndarray, k: int = 1, chunk: int | None = None, *,
            max_bytes: int = MAX_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Top-k documents by cosine for each query (both L2-normalised): (scores (Q, k), indices (Q, k)).

    Exact: one matrix product per chunk of queries; the (chunk, N) score block is the only large array,
    and `chunk` defaults to the most rows that fit in `max_bytes`. Rows are sorted by score, best first
    (equal scores in unspecified order). k is capped at the number of documents.
    """
    q, d = as_matrix(queries, "queries"), as_matrix(docs, "documents")
    _check_dims(q, d)
    n = len(d)
    k = min(k, n)
    scores = np.empty((len(q), k), dtype=np.float32)
    index = np.empty((len(q), k), dtype=np.int64)
    if k < 1 or len(q) == 0:
        return scores, index
    chunk = max(1, min(chunk or max_bytes // (4 * n), len(q)))
    buf = np.empty((chunk, n), dtype=np.float32)  # reused: no allocation per chunk
    for s in range(0, len(q), chunk):
        qc = q[s:s + chunk]
        sim = buf[: len(qc)]
        np.matmul(qc, d.T, out=sim)  # (c, N) cosines
        top = torch.topk(torch.from_numpy(sim), k, dim=1, largest=True, sorted=True)
        scores[s:s + len(qc)] = top.values.numpy()
        index[s:s + len(qc)] = top.indices.numpy()
    return scores, index


def faiss_search(queries: np.ndarray, docs: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The same as `nearest` through a FAISS flat inner-product index (exact; needs `faiss` installed)."""
    try:
        import faiss
    except ImportError:
        raise XlingError("backend faiss needs the faiss package (`pip install faiss-cpu`); "
                         "or use the exact backend") from None
    q, d = as_matrix(queries, "queries"), as_matrix(docs, "documents")
    _check_dims(q, d)
    k = min(k, len(d))
    if k < 1 or len(q) == 0:
        return np.empty((len(q), max(k, 0)), np.float32), np.empty((len(q), max(k, 0)), np.int64)
    index = faiss.IndexFlatIP(d.shape[1])
    index.add(d)
    scores, idx = index.search(q, k)
    return scores.astype(np.float32), idx.astype(np.int64)


def search(queries: np.ndarray, docs: np.ndarray, k: int = 5, *, backend: str = "exact",
           max_bytes: int = MAX_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by cosine: backend "exact" (chunked BLAS + torch.topk) or "faiss" (flat inner-product index)."""
    if backend not in BACKENDS:
        raise XlingError(f"unknown search backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "faiss":
        return faiss_search(queries, docs, k)
    return nearest(queries, docs, k, max_bytes=max_bytes)


def top1_accuracy(src: np.ndarray, tgt: np.ndarray) -> float:
    """Share of rows i whose nearest target (among all targets) is row i (gold translation)."""
    _, idx = nearest(src, tgt, k=1)
    return float((idx[:, 0] == np.arange(len(src))).mean())


# ---------------------------------------------------------------------------- vector files

def _prefix(path: str | Path) -> Path:
    p = Path(path)
    return p.with_suffix("") if p.suffix in (".npy", ".ids") else p


def write_vectors(prefix: str | Path, vecs: np.ndarray, ids: list[str]) -> tuple[Path, Path]:
    """PREFIX.npy (float32 (N, D)) and PREFIX.ids (one id a line), each written atomically."""
    prefix = _prefix(prefix)
    if len(ids) != len(vecs):
        raise ValueError(f"{len(ids)} ids for {len(vecs)} vectors")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(vecs, dtype=np.float32), allow_pickle=False)
    npy, ids_path = prefix.with_name(prefix.name + ".npy"), prefix.with_name(prefix.name + ".ids")
    atomic_write_bytes(npy, buf.getvalue())
    atomic_write_text(ids_path, "".join(f"{i}\n" for i in ids))
    return npy, ids_path


def read_vectors(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """(vectors (N, D) float32, ids) from PREFIX.npy (+ PREFIX.ids if present, else line numbers 1..N)."""
    prefix = _prefix(path)
    npy, ids_path = prefix.with_name(prefix.name + ".npy"), prefix.with_name(prefix.name + ".ids")
    if not npy.is_file():
        raise XlingError(f"vector file {npy} does not exist; write it with `xling embed --out {prefix}`")
    try:
        vecs = np.load(npy, allow_pickle=False)
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
    from xling.generate import load_for_generation

    if not Path(run).exists():
        raise XlingError(f"model {run} does not exist; give a run directory with checkpoints/ (e.g. runs/demo)")
    return load_for_generation(run)


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


def _ids(path: str | Path | None, n: int) -> list[str]:
    if path is None:
        return [str(i) for i in range(1, n + 1)]
    ids = read_lines(path, "ids file")
    if len(ids) != n:
        raise XlingError(f"ids file {path} has {len(ids)} lines but the input has {n}; give one id a line")
    return ids


def run_embed(model_dir: str | Path, lang: str, input_path: str | Path, out_prefix: str | Path, *,
              ids_path: str | Path | None = None, layer: int | None = None, pool_specials: bool | None = None,
              batch_size: int = 64) -> dict:
    """`xling embed`: vectors of every line of a text file -> PREFIX.npy + PREFIX.ids; returns a summary."""
    texts = read_lines(input_path, "input file")
    ids = _ids(ids_path, len(texts))
    check_languages(model_dir, [lang])
    model, tok = load_encoder(model_dir)
    layer = resolve_layer(model_dir, model, layer)
    pool = POOL_SPECIALS if pool_specials is None else pool_specials
    vecs = embed_texts(model, tok, texts, lang, layer=layer, pool_specials=pool, batch_size=batch_size)
    npy, ids_file = write_vectors(out_prefix, vecs, ids)
    return {"vectors": str(npy), "ids": str(ids_file), "n": len(vecs), "dim": int(vecs.shape[1]), "layer": layer,
            "pool_specials": pool}


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
    from xling.evaluate import CharNgramLangID

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
    _check_dims(sides[0].vecs, sides[1].vecs)
    return [s.vecs for s in sides]


def run_retrieve(model_dir: str | Path, queries: str | Path, docs: str | Path, *, src: str | None = None,
                 tgt: str | None = None, k: int = 5, fmt: str = "tsv", out: str | Path | None = None,
                 layer: int | None = None, pool_specials: bool | None = None, backend: str = "exact") -> int:
    """`xling retrieve`: top-k documents per query with cosine scores, as TSV or JSONL (stdout or `out`)."""
    if fmt not in FORMATS:
        raise XlingError(f"unknown format {fmt!r}; choose tsv or jsonl")
    if k < 1:
        raise XlingError(f"-k must be >= 1, not {k}")
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
