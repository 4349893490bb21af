"""Sentence vectors and exact search: the floor that training, evaluation and the retrieval tasks share.

    vecs = encode(model, seqs, lang_index=2, tag=7, specials=specials, layer=3)   # (N, D), L2-normalised
    vecs = embed_texts(model, tok, ["In the beginning", ...], "en", layer=2, pool_specials=True)
    vecs = encode(..., precision="fp32")       # exact fp32; "auto" (default) = bf16 autocast where it pays here
    scores, idx = nearest(queries, docs, k=5)  # exact top-k by cosine, chunked
    acc = top1_accuracy(src_vecs, tgt_vecs)    # row i of src should find row i of tgt (XTREME Tatoeba)

A sentence is encoded as in the contrastive objective: `<lang> x </s>` through the model in bidirectional
mode, then the hidden states of one layer are mean-pooled over real tokens (padding excluded; the tag and
`</s>` optionally excluded) and L2-normalised. Precision: "auto" (the default) runs the model under bf16 autocast
where `xling.precision` chose bf16 for the "encode" path on this CPU (measured; pooling and normalising stay fp32;
cosine to the fp32 vectors >= 0.999, tests/test_retrieve.py), "fp32" disables autocast (even a caller's) and is
exact, "bf16" forces autocast.

Search is exact: cosine = dot product of normalised vectors. Queries go in chunks sized so the (chunk, N)
score block stays under `max_bytes` (256 MiB by default), whatever the number of queries; the scores come
from one BLAS matrix product per chunk and the top k from `torch.topk` (multithreaded; ~8x faster than
`np.argpartition` here; bench/retrieve.py). `xling.tasks.retrieval.retrieve` adds FAISS, vector files and the CLI.
"""

from __future__ import annotations

import numpy as np
import torch

from xling.batches import pad_right
from xling.errors import XlingError
from xling.progress import progress

MAX_BYTES = 256 << 20  # bound on the score block of one query chunk (float32 chunk x N)
# The defaults follow what the contrastive objective trains (the last layer, mean-pooled over every real token,
# tag and </s> included) and what the retrieval evaluation encodes, so its chosen layer applies unchanged.
DEFAULT_LAYER = -1  # pooled layer when the run has no eval/retrieval.json
POOL_SPECIALS = True  # pool the language tag and </s> with the words


def mean_pool(hidden: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """(B, T, D), (B, T) bool -> (B, D): mean over the positions the mask keeps (padding excluded); the one pooling
    rule of the contrastive and distill objectives, sentence encoding and the classifier."""
    m = pad_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


@torch.no_grad()
def encode(model: torch.nn.Module, seqs: list[np.ndarray], *, lang_index: int | None, tag: int | None,
           specials: dict[str, int], layer: int = -1, pool_specials: bool = True, batch_size: int = 64,
           max_len: int | None = None, all_layers: bool = False, desc: str = "", bar: bool = True,
           precision: str = "auto") -> np.ndarray:
    """Sentence vectors (N, D) float32, L2-normalised; with all_layers=True, (L+1, N, D) for every layer.

    seqs: token ids of each sentence, without specials. tag=None encodes without the language tag (and
    lang_index=None without language ids), e.g. for language identification, where the tag would give
    the answer away. Sentences are sorted by length so batches carry little padding; rows come back in
    input order. precision: "auto" | "fp32" | "bf16" (see the module docstring); it replaces a caller's autocast.
    """
    from xling.precision import autocast_dtype

    max_len = max_len or model.cfg.block_size
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    amp = autocast_dtype(precision, dev, path="encode", width=model.cfg.d_model)  # None = fp32
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
            idx, real = pad_right(built, specials["pad"])  # (b, T)
            lang_ids = torch.full_like(idx, lang_index) if lang_index is not None else None
            with torch.autocast(dev.type, dtype=amp or torch.float32, enabled=amp is not None):
                states = model.hidden_states(idx.to(dev), causal=False, lang_ids=None if lang_ids is None else
                                             lang_ids.to(dev), pad_mask=real.to(dev))  # L+1 x (b, T, D)
            pool = real.clone()
            if not pool_specials:
                pool[:, : len(head)] = False
                for r, b in enumerate(built):
                    pool[r, len(b) - 1] = False  # the </s>
                pool |= ~pool.any(1, keepdim=True) & real  # an empty sentence keeps its specials
            layers = states if all_layers else [states[layer]]
            vec = torch.stack([mean_pool(h.float(), pool.to(dev)) for h in layers])  # (L, b, D)
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
                pool_specials: bool = POOL_SPECIALS, batch_size: int = 64, precision: str = "auto",
                bar: bool = True) -> np.ndarray:
    """Sentence vectors (N, D) of raw texts in `lang` (its tag first, its language index when the model has one);
    precision as in `encode` ("auto": bf16 autocast where this CPU's measured table says so)."""
    from xling.tokenizer import lang_ids, lang_index, special_ids

    tag = lang_ids(tokenizer, [lang])[lang]  # XlingError for a language the tokenizer does not know
    seqs = [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    return encode(model, seqs, lang_index=lang_index(tokenizer, lang), tag=tag, specials=special_ids(tokenizer),
                  layer=layer, pool_specials=pool_specials, batch_size=batch_size, desc=f"embed {lang}",
                  precision=precision, bar=bar)


def as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise XlingError(f"{what} must be a 2-D array of vectors (rows), not shape {x.shape}")
    return x


def check_dims(queries: np.ndarray, docs: np.ndarray) -> None:
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
    check_dims(q, d)
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


def top1_accuracy(src: np.ndarray, tgt: np.ndarray) -> float:
    """Share of rows i whose nearest target (among all targets) is row i (gold translation)."""
    _, idx = nearest(src, tgt, k=1)
    return float((idx[:, 0] == np.arange(len(src))).mean())
