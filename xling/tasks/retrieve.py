"""Cross-lingual sentence retrieval: sentence vectors by mean pooling, nearest neighbours, top-1 accuracy.

    vecs = encode(model, seqs, lang_index=2, tag=7, specials=specials, layer=3)   # (N, D), L2-normalised
    acc = top1_accuracy(src_vecs, tgt_vecs)    # row i of src should find row i of tgt (XTREME Tatoeba)

A sentence is encoded as in the contrastive objective: `<lang> x </s>` through the model in bidirectional
mode, then the hidden states of one layer are mean-pooled over real tokens (padding excluded; the tag and
`</s>` optionally excluded) and L2-normalised. Search is exact: cosine = dot product of normalised
vectors, computed in chunks so memory stays bounded (chunk x N scores at a time).
"""

from __future__ import annotations

import numpy as np
import torch

from xling.progress import progress


@torch.no_grad()
def encode(model: torch.nn.Module, seqs: list[np.ndarray], *, lang_index: int | None, tag: int | None,
           specials: dict[str, int], layer: int = -1, pool_specials: bool = True, batch_size: int = 64,
           max_len: int | None = None, all_layers: bool = False, desc: str = "") -> np.ndarray:
    """Sentence vectors (N, D) float32, L2-normalised; with all_layers=True, (L+1, N, D) for every layer.

    seqs: token ids of each sentence, without specials. tag=None encodes without the language tag (and
    lang_index=None without language ids), e.g. for language identification, where the tag would give
    the answer away. Sentences are sorted by length so batches carry little padding.
    """
    max_len = max_len or model.cfg.block_size
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = None
    bar = progress(total=len(seqs), desc=desc or "encode", unit="sent", leave=False)
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
    return out if all_layers else out[0]


def nearest(queries: np.ndarray, docs: np.ndarray, k: int = 1, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Top-k documents by cosine for each query (both L2-normalised): (scores (Q, k), indices (Q, k))."""
    k = min(k, len(docs))
    scores = np.empty((len(queries), k), dtype=np.float32)
    index = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), chunk):
        sim = queries[s:s + chunk] @ docs.T  # (chunk, N): the only large array, bounded by `chunk`
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top_scores = np.take_along_axis(sim, top, 1)
        o = np.argsort(-top_scores, axis=1, kind="stable")
        index[s:s + chunk] = np.take_along_axis(top, o, 1)
        scores[s:s + chunk] = np.take_along_axis(top_scores, o, 1)
    return scores, index


def top1_accuracy(src: np.ndarray, tgt: np.ndarray) -> float:
    """Share of rows i whose nearest target (among all targets) is row i (gold translation)."""
    _, idx = nearest(src, tgt, k=1)
    return float((idx[:, 0] == np.arange(len(src))).mean())
