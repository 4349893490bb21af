"""Evaluation of a trained run on held-out test chapters; each evaluation is one registered entry.

    xling evaluate --run runs/demo  # writes runs/demo/eval/<name>.json, then `xling report` renders them
    run_evaluations(ctx, xling.registry.EVALUATIONS)   # the same from Python (`xling.stages.run_evaluate`)

An evaluation is a function `(ctx: EvalContext) -> {"metrics": {...}, "sections": [...]}` named with
`@evaluation(name, order)` and listed in a table `{name: (order, fn)}` (`evaluations(*fns)` builds one). Metrics
are flat dotted keys (`bpc.en`, `retrieval.top1.en-fr`); sections are report blocks as data (see `xling.report`).
An evaluation whose data or package is missing on this machine returns `skipped("why; how to get it")`
instead: no metrics at all (a number from nothing would be read as a result), and the report and summary say
"skipped" with the reason. One that measures some pairs
and not others adds `"skipped_parts": {"en-fr": "why"}` beside its metrics. This module holds the evaluations of
the pretrained model itself (`BUILT_IN`); each task package has its own in its `evaluation` module, and
`xling.registry.EVALUATIONS` lists them all by import (this module imports no task). Built in:

    tokenizer   fertility and parity per language (from the tokenizer stage's report)
    pretrain    tokens, tokens/s, minutes and the loss curve per objective (from train/metrics.jsonl)
    bpc         bits per character per language on the test split, beside n-gram and unigram baselines
    retrieval   top-1 translation retrieval en->X and X->en on the test split, layer chosen on valid
    langid      language identity left in sentence vectors (nearest language centroid, no language tag)
    generation  100 continuations per language: external language id, script purity, lexical validity
                between a unigram sample and human text, diversity (xling.textmetrics)
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xling.errors import XlingError
from xling.files import atomic_write_json
from xling.langs import CharNgramLangID, pivot_lang


@dataclass
class EvalContext:
    run_dir: Path
    model: Any  # xling.model.Transformer in eval mode
    shards: Any  # xling.shards.Shards
    tokenizer: Any  # tokenizers.Tokenizer
    corpus: Any  # xling.corpus.Corpus
    step: int  # checkpoint step the numbers come from
    max_segments: int = 1000  # cap per language and split (keeps evaluation within a minute on a CPU)
    bpc_tokens: int = 20_000  # test tokens scored per language for bits per character
    valid_segments: int = 300  # valid segments per language for choices (retrieval layer, langid centroids)
    cache: dict = field(default_factory=dict)  # shared between evaluations (e.g. sentence vectors)
    lang_vocab: bool | None = None  # generation: restrict to each language's training tokens (None: the default)

    @property
    def langs(self) -> list[str]:
        return list(self.shards.langs)

    def provenance(self, split: str, n: int | None = None) -> str:
        cfg = self.model.cfg
        size = f"{cfg.n_layer} layers, d {cfg.d_model}, {self.model.num_params() / 1e6:.1f}M parameters"
        count = f", {n:,} segments per language" if n is not None else ""
        return f"{split} split{count}; model {size}; checkpoint step {self.step}"

    def cap(self, split: str) -> int:
        """Segments per language evaluated on `split`: valid_segments on valid, else max_segments."""
        return self.valid_segments if split == "valid" else self.max_segments

    def segments(self, split: str, lang: str, cap: int | None = None) -> list[np.ndarray]:
        n = min(self.shards.num_segments(split, lang), cap or self.max_segments)
        return [np.asarray(self.shards.segment(split, lang, i), dtype=np.int64) for i in range(n)]


Evaluation = Callable[[EvalContext], dict]


def evaluation(name: str, order: int = 50) -> Callable[[Evaluation], Evaluation]:
    """Name an evaluation function and its place in the run (ascending `order`); a table lists it to run it."""
    def mark(fn: Evaluation) -> Evaluation:
        fn.evaluation = (name, order)
        return fn

    return mark


def evaluations(*fns: Evaluation) -> dict[str, tuple[int, Evaluation]]:
    """The table `run_evaluations` reads, {name: (order, fn)}, from functions marked with `@evaluation`."""
    table = {}
    for fn in fns:
        name, order = fn.evaluation
        if name in table:
            raise ValueError(f"two evaluations are named {name!r}")
        table[name] = (order, fn)
    return table


def skipped(reason: str, title: str | None = None, text: str = "") -> dict:
    """The result of an evaluation that could not measure anything here: no metrics, the reason in the report
    (under `title`; without one, `run_evaluations` titles it by the evaluation's name)."""
    out: dict = {"metrics": {}, "skipped": reason, "sections": []}
    if title:
        say = f"Skipped: {reason}." + (f" {text}" if text else "")
        out["sections"] = [{"title": title, "blocks": [{"kind": "text", "text": say}]}]
    return out


def _bar(name, labels, values, ylabel, **kw) -> dict:
    return {"kind": "bar", "name": name, "labels": list(labels), "values": [float(v) for v in values],
            "ylabel": ylabel, **kw}


# ---------------------------------------------------------------------------- built-in evaluations

@evaluation("tokenizer", order=10)
def eval_tokenizer(ctx: EvalContext) -> dict:
    path = ctx.run_dir / "tokenizer" / "report.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    per = report["langs"]
    langs = [lg for lg in ctx.langs if lg in per]
    metrics = {"languages": ctx.langs}
    aligned = [lg for lg in langs if per[lg]["parity"] is not None]  # parity needs aligned text
    for lg in langs:
        metrics[f"tokenizer.fertility.{lg}"] = per[lg]["fertility"]
    for lg in aligned:
        metrics[f"tokenizer.parity.{lg}"] = per[lg]["parity"]
    rows = [[lg, per[lg]["fertility"], per[lg]["parity"] if lg in aligned else "n/a: no aligned text",
             per[lg].get("chars_per_token", float("nan"))] for lg in langs]
    pivot = report.get("pivot", "en")
    blocks = [
        {"kind": "text", "text": f"Shared vocabulary of {report.get('vocab_size', '?'):,} tokens. Fertility = "
                                 f"tokens per word; parity = tokens for a verse / tokens for its {pivot} "
                                 f"verse (median over aligned test verses). Equal tokenization is equal cost."},
        {"kind": "table", "header": ["lang", "fertility", f"parity vs {pivot}", "chars/token"], "rows": rows}]
    if aligned:
        blocks.append(_bar("parity", aligned, [per[lg]["parity"] for lg in aligned], f"tokens / {pivot} tokens",
                           reference=1.0, reference_label=f"{pivot} = 1", title="Tokenizer parity"))
    return {"metrics": metrics, "sections": [{"title": "Tokenizer fairness", "blocks": blocks}]}


@evaluation("pretrain", order=20)
def eval_pretrain(ctx: EvalContext) -> dict:
    path = ctx.run_dir / "train" / "metrics.jsonl"
    if not path.exists():
        return skipped(f"no training log {path} (a run imported or trained elsewhere)", "Pretraining")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train_rows = [r for r in rows if r.get("kind", "train") == "train"]
    series: dict[str, list] = {}
    for r in train_rows:  # loss per objective ("loss/clm"), not per language ("loss/clm/en")
        for k, v in r.items():
            if k.startswith("loss/") and k.count("/") == 1 and v is not None and math.isfinite(v):
                series.setdefault(k.split("/", 1)[1], []).append([r["elapsed_s"] / 60, v])
    last = train_rows[-1] if train_rows else {"step": 0, "tokens": 0, "elapsed_s": 0.0}
    tokens, seconds = int(last["tokens"]), float(last["elapsed_s"])  # cumulative over resumed sessions
    tps, minutes = tokens / max(seconds, 1e-9), seconds / 60
    metrics = {"pretrain.tokens": tokens, "pretrain.tokens_per_second": tps, "pretrain.minutes": minutes,
               "pretrain.steps": int(last["step"])}
    xlabel = "minutes"
    blocks = [
        {"kind": "text", "text": f"{metrics['pretrain.steps']:,} steps, {tokens:,} tokens in {minutes:.2f} min "
                                 f"({tps:,.0f} tokens/s); objectives: {', '.join(series) or '-'}."},
        {"kind": "lines", "name": "train_loss", "series": series, "xlabel": xlabel, "ylabel": "training loss",
         "title": "Training loss per objective"},
    ]
    # learning curves from the periodic validations (train.eval_every) on the valid split
    valid = [r for r in rows if r.get("kind") == "valid" and "elapsed_s" in r]
    curves = {"retrieval": {}, "bpc": {}}
    for r in valid:
        for k, v in r.items():
            parts = k.split("/")
            if len(parts) == 3 and parts[1] in curves and v is not None and math.isfinite(v):
                curves[parts[1]].setdefault(parts[2], []).append([r["elapsed_s"] / 60, v])
    if any(len(pts) > 1 for pts in curves["retrieval"].values()):
        blocks.append({"kind": "lines", "name": "valid_retrieval", "series": curves["retrieval"], "xlabel": xlabel,
                       "ylabel": "top-1 accuracy (valid, both directions)",
                       "title": "Retrieval top-1 during training (valid pairs, en <-> X)"})
    if any(len(pts) > 1 for pts in curves["bpc"].values()):
        first, last = valid[0], valid[-1]
        falls = [lg for lg in curves["bpc"] if last.get(f"valid/bpc/{lg}", 1e9) < first.get(f"valid/bpc/{lg}", 0)]
        metrics["pretrain.bpc_fell_languages"] = len(falls)
        blocks.append({"kind": "lines", "name": "valid_bpc", "series": curves["bpc"], "xlabel": xlabel,
                       "ylabel": "bits per character (valid)", "title": "Bits per character during training"})
        blocks.append({"kind": "text", "text": f"Valid bits per character fell for {len(falls)} of "
                                               f"{len(curves['bpc'])} languages between the first validation "
                                               f"(step {first['step']}) and the last (step {last['step']})."})
    return {"metrics": metrics, "sections": [{"title": "Pretraining", "blocks": blocks}]}


@evaluation("bpc", order=30)
def eval_bpc(ctx: EvalContext) -> dict:
    from xling.heldout import bits_per_char, clm_eval
    from xling.ngram import DEFAULT_ORDER, baseline_bpc

    # the model and two count-based baselines on the same segments and characters (`shards.scored_prefix`)
    from xling.shards import scored_prefix

    bpc, ngram, unigram = {}, {}, {}
    verses = 0  # test verses scored, over the languages: the items behind the headline's mean
    for lg in ctx.langs:
        verses += scored_prefix(ctx.shards, "test", lg, ctx.bpc_tokens)[0]
        nats, chars = clm_eval(ctx.model, ctx.shards, "test", lg, seq_len=ctx.model.cfg.block_size,
                               max_tokens=ctx.bpc_tokens)
        bpc[lg] = bits_per_char(nats, chars)
        base = baseline_bpc(ctx.shards, "test", lg, max_tokens=ctx.bpc_tokens, order=DEFAULT_ORDER)
        ngram[lg], unigram[lg] = base["ngram"], base["unigram"]
    metrics = {f"bpc.{lg}": v for lg, v in bpc.items()}
    metrics |= {f"bpc_baseline.unigram.{lg}": v for lg, v in unigram.items()}
    metrics |= {f"bpc_baseline.ngram.{lg}": v for lg, v in ngram.items()}
    metrics["bpc.ratio_unigram_max"] = max(bpc[lg] / unigram[lg] for lg in bpc)  # the worst language's
    metrics["bpc.below_ngram"] = sum(bpc[lg] < ngram[lg] for lg in bpc)
    metrics["bpc.items"] = verses
    ng = f"{DEFAULT_ORDER}-gram KN"
    rows = [[lg, bpc[lg], ngram[lg], unigram[lg], bpc[lg] / unigram[lg], bpc[lg] / ngram[lg]] for lg in bpc]
    return {"metrics": metrics, "sections": [{"title": "Bits per character (causal LM)", "blocks": [
        {"kind": "text", "text": "Next-token loss over held-out test chapters, converted to bits per character "
                                 "(comparable across languages and tokenizers; each verse scored as "
                                 f"`<lang> verse </s>`; the first {ctx.bpc_tokens:,} test tokens per language; "
                                 f"bf16 autocast where native). {ctx.provenance('test')}."},
        {"kind": "text", "text": "Baselines beside it, per language: count-based models over the same token ids, "
                                 "trained on the same language's train split (same tokenizer, the text the "
                                 "model learned from) and scored on exactly the same test verses and "
                                 f"characters: an interpolated modified Kneser-Ney {DEFAULT_ORDER}-gram "
                                 "(order chosen on the valid split) and an add-1/2 unigram over the whole "
                                 "vocabulary. A ratio below 1 means the model is better; "
                                 f"{metrics['bpc.below_ngram']} of {len(bpc)} languages are below the n-gram."},
        {"kind": "table", "header": ["lang", "model", f"n-gram (order {DEFAULT_ORDER}, KN)", "unigram",
                                     "model / unigram", "model / n-gram"], "rows": rows},
        {"kind": "bars", "name": "bpc", "labels": list(bpc), "ylabel": "bits per character",
         "series": {"model": list(bpc.values()), ng: list(ngram.values()), "unigram": list(unigram.values())},
         "title": "Bits per character, test split: model and count-based baselines"},
    ]}]}


def split_vectors(ctx: EvalContext, split: str, lang: str) -> np.ndarray:
    """Every layer's sentence vectors (L+1, N, D) for the split's segments of one language, cached."""
    from xling.encode import encode

    key = ("vectors", split, lang)
    if key not in ctx.cache:
        seqs = [np.asarray(ctx.shards.segment(split, lang, i), np.int64)
                for i in range(min(ctx.shards.num_segments(split, lang), ctx.cap(split)))]
        ctx.cache[key] = encode(ctx.model, seqs, lang_index=ctx.langs.index(lang),
                                tag=ctx.shards.lang_token_ids[lang], specials=ctx.shards.specials,
                                all_layers=True, desc=f"encode {split} {lang}")
    return ctx.cache[key]


def _pair_vectors(ctx: EvalContext, split: str, pivot: str, lg: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectors (L+1, M, D) of the split's aligned pivot/lg segments, row i of each a translation pair."""
    rows = np.asarray(ctx.shards.pairs(split, pivot, lg))
    rows = rows[(rows[:, 0] < ctx.cap(split)) & (rows[:, 1] < ctx.cap(split))]  # the encoded segments
    return split_vectors(ctx, split, pivot)[:, rows[:, 0]], split_vectors(ctx, split, lg)[:, rows[:, 1]]


@evaluation("retrieval", order=40)
def eval_retrieval(ctx: EvalContext) -> dict:
    from xling.encode import top1_accuracy

    pivot = pivot_lang(ctx.langs)
    others = [lg for lg in ctx.langs if lg != pivot]
    if not others:
        return skipped("one language: nothing to retrieve across languages", "Cross-lingual retrieval")
    # choose the pooled layer on the valid split (mean accuracy over both directions and all languages)
    n_layers = ctx.model.cfg.n_layer + 1
    scores = np.zeros(n_layers)
    for lg in others:
        vp, vl = _pair_vectors(ctx, "valid", pivot, lg)
        for layer in range(n_layers):
            scores[layer] += top1_accuracy(vp[layer], vl[layer]) + top1_accuracy(vl[layer], vp[layer])
    layer = int(np.argmax(scores))
    ctx.cache["retrieval_layer"] = layer
    metrics: dict[str, Any] = {"retrieval.layer": layer}
    table, accs, chance = [], [], []
    matrix = [[None] * len(ctx.langs) for _ in ctx.langs]
    n_test = n_queries = 0
    for lg in others:
        vp, vl = (v[layer] for v in _pair_vectors(ctx, "test", pivot, lg))
        fwd, bwd = top1_accuracy(vp, vl), top1_accuracy(vl, vp)
        n_test, n_queries = len(vp), n_queries + 2 * len(vp)  # every verse is a query in each direction
        chance += [1 / max(len(vp), 1)] * 2
        metrics[f"retrieval.top1.{pivot}-{lg}"] = fwd
        metrics[f"retrieval.top1.{lg}-{pivot}"] = bwd
        table.append([f"{pivot}-{lg}", fwd, bwd, len(vp), 1 / max(len(vp), 1)])
        accs += [fwd, bwd]
        i, j = ctx.langs.index(pivot), ctx.langs.index(lg)
        matrix[i][j], matrix[j][i] = fwd, bwd
    metrics["retrieval.top1_mean"] = float(np.mean(accs))
    metrics["retrieval.chance"] = float(np.mean(chance))  # a random pick among the candidates
    metrics["retrieval.items"] = n_queries  # the report's headline needs the count behind the mean
    return {"metrics": metrics, "sections": [{"title": "Cross-lingual retrieval", "blocks": [
        {"kind": "text", "text": f"Top-1 accuracy of finding a verse's translation among all test verses of the "
                                 f"other language (cosine of mean-pooled layer {layer}, chosen on the valid split; "
                                 f"mean {metrics['retrieval.top1_mean']:.3f}). {ctx.provenance('test', n_test)}."},
        {"kind": "table", "header": ["pair", f"{pivot}→X", f"X→{pivot}", "candidates", "chance"], "rows": table},
        {"kind": "heatmap", "name": "retrieval", "rows": ctx.langs, "cols": ctx.langs, "values": matrix,
         "xlabel": "target language", "ylabel": "query language", "title": "Top-1 retrieval accuracy"},
    ]}]}


@evaluation("langid", order=50)
def eval_langid(ctx: EvalContext) -> dict:
    """Language identity left in sentence vectors: how often a test verse's vector (encoded without the
    language tag or language ids) is nearest its own language's centroid (mean valid vector).

    Not a language identifier and not a score to maximise: a cross-lingual encoder aims at vectors that
    carry meaning, not language, so lower is more language-neutral; chance is 1 / number of languages.
    Keys `vectors.lang_identifiable.<lang>`, their mean, the chance level and the item count.
    """
    from xling.encode import encode

    title = "Language identity left in sentence vectors"
    if len(ctx.langs) < 2:
        return skipped("one language: no other language to be confused with", title)
    layer = ctx.cache.get("retrieval_layer", -1)
    kw = dict(specials=ctx.shards.specials, lang_index=None, tag=None, layer=layer)
    centroids = np.stack([encode(ctx.model, ctx.segments("valid", lg, ctx.valid_segments), **kw).mean(0)
                          for lg in ctx.langs])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    metrics, rows, n = {}, [], 0
    for k, lg in enumerate(ctx.langs):
        v = encode(ctx.model, ctx.segments("test", lg, ctx.valid_segments), **kw)
        pred = (v @ centroids.T).argmax(1)
        acc = float((pred == k).mean())
        metrics[f"vectors.lang_identifiable.{lg}"] = acc
        n += len(v)
        confused = Counter(ctx.langs[p] for p in pred if p != k).most_common(1)
        rows.append([lg, acc, len(v), confused[0][0] if confused else "-"])
    mean, chance = float(np.mean([r[1] for r in rows])), 1 / len(ctx.langs)
    metrics.update({"vectors.lang_identifiable_mean": mean, "vectors.lang_identifiable_chance": chance,
                    "vectors.lang_identifiable_items": n})
    return {"metrics": metrics, "sections": [{"title": title, "blocks": [
        {"kind": "text", "text": "How much a sentence vector still tells which language it came from: each test "
                                 "verse is encoded without the language tag or language ids (layer "
                                 f"{layer}) and assigned to the nearest language centroid (mean vector of "
                                 f"{ctx.valid_segments} valid verses per language). Mean {mean:.3f}; chance "
                                 f"{chance:.3f} (1 / {len(ctx.langs)} languages). This is not a language "
                                 "identifier and higher is not better: the goal of a cross-lingual space is "
                                 "vectors that carry meaning, not language, so a value near chance means the "
                                 "languages share one space, and near 1.0 that each language keeps a region of "
                                 f"its own. {ctx.provenance('test')}."},
        {"kind": "table", "header": ["lang", "nearest own centroid", "segments", "most often taken for"],
         "rows": rows},
    ]}]}


GEN_PROMPTS = 100  # prompts per language: a per-language figure stands on 100 continuations (the headline minimum)


def _fmt3(values: Sequence[float | None]) -> str:
    """"model / unigram / human" cell: two decimals each, "n/a" where a value could not be measured."""
    return " / ".join("n/a" if v is None else f"{v:.2f}" for v in values)


def _train_counts(ctx: EvalContext, lang: str) -> np.ndarray:
    """(vocab_size,) int64 count of each token id in the language's train shards (cached)."""
    key = ("train_counts", lang)
    if key not in ctx.cache:
        ctx.cache[key] = np.bincount(np.asarray(ctx.shards.tokens("train", lang)), minlength=ctx.shards.vocab_size)
    return ctx.cache[key]


def _continue(ctx: EvalContext, prompts: list[str], lang: str, cfg, vocab) -> tuple[list[str], list[int]]:
    """The model's continuations of `prompts` in `lang` (one batch) and how many tokens each has.

    What `xling.generate.generate` does, keeping the ids: the unigram sample needs the same token count."""
    from xling import generate as g
    from xling.detokenize import decode_continuation
    from xling.precision import for_precision

    ids, index = g.encode_prompts(ctx.tokenizer, prompts, lang)
    stop_ids = g.stop_token_ids(ctx.tokenizer, cfg.stop_tokens)
    allowed = g.lang_vocab_mask(cfg, vocab, lang, len(ids), ctx.model.cfg.vocab_size, stop_ids)
    model = for_precision(ctx.model, cfg.precision, len(ids))
    out = g.generate_ids(model, ids, cfg, lang_index=index, stop_ids=stop_ids, allowed=allowed)
    return [decode_continuation(ctx.tokenizer, p, o) for p, o in zip(ids, out, strict=True)], [len(o) for o in out]


def _unigram_texts(ctx: EvalContext, lang: str, lengths: list[int], seed: int) -> list[str]:
    """One text per length: that many tokens drawn independently from the language's train unigram
    distribution, decoded. The floor a model reaches by knowing only which subwords a language uses."""
    counts = _train_counts(ctx, lang)
    p = counts / max(counts.sum(), 1)
    rng = np.random.default_rng(seed)
    return [ctx.tokenizer.decode(rng.choice(len(p), size=n, p=p).tolist()) if n else "" for n in lengths]


def _put_three(metrics: dict, why: dict[str, list[str]], lang: str, name: str, values: dict[str, float | None],
               reason: str | None) -> list[float | None]:
    """Record a measure of the model / unigram / human texts ("", "_unigram", "_human" key suffixes) as
    generation.<name><suffix>.<lang>, or, when `reason` says it cannot be measured, no key and the reason in `why`.
    Returns the three values in that order (None = n/a)."""
    if reason:
        why.setdefault(reason, []).append(lang)
        return [None, None, None]
    for suffix, v in values.items():
        if v is not None:
            metrics[f"generation.{name}{suffix}.{lang}"] = v
    return [values.get(s) for s in ("", "_unigram", "_human")]


@evaluation("generation", order=60)
def eval_generation(ctx: EvalContext) -> dict:
    """Continuations of test-verse openings, measured against two references of the same length and language:
    the held-out rest of each verse (human text) and tokens sampled from the train unigram distribution."""
    import dataclasses

    from xling import textmetrics as tm
    from xling.generate import GenerateConfig
    from xling.langs import lang_scripts
    from xling.langvocab import LangVocab

    # min_new_tokens: a young model's likeliest next token is often </s> (one per verse in the packed streams)
    cfg = GenerateConfig(max_new_tokens=40, min_new_tokens=12, temperature=0.8, top_k=40, seed=0)
    if ctx.lang_vocab is not None:
        cfg = dataclasses.replace(cfg, lang_vocab=ctx.lang_vocab)
    vocab = LangVocab({lg: _train_counts(ctx, lg) > 0 for lg in ctx.langs}) if cfg.lang_vocab else None
    ident = CharNgramLangID({lg: ctx.corpus.texts("train", lg)[:3000] for lg in ctx.langs})
    why: dict[str, list[str]] = {}  # reason a measure is n/a -> languages
    metrics: dict[str, Any] = {}
    rows, n_items = [], []
    for k, lg in enumerate(ctx.langs):
        verses = [t for t in ctx.corpus.texts("test", lg) if len(t.split()) >= 6]
        n = min(GEN_PROMPTS, len(verses))
        picks = [verses[i * len(verses) // n] for i in range(n)]  # spread over the test chapters
        prompts = [" ".join(v.split()[:4]) for v in picks]
        human = [" ".join(v.split()[4:]) for v in picks]  # the held-out rest of the same verses
        texts, lengths = _continue(ctx, prompts, lg, cfg, vocab)
        unigram = _unigram_texts(ctx, lg, lengths, seed=k)
        n_items.append(n)
        kinds = {"": texts, "_unigram": unigram, "_human": human}  # metric key suffixes
        put = functools.partial(_put_three, metrics, why, lg)
        lid = put("langid", {s: tm.langid_agreement(t, lg) for s, t in kinds.items()}, tm.langid_unavailable(lg))
        # a language missing from xling.langs.SCRIPTS: the scripts of its own training text
        scripts = lang_scripts(lg) or tm.scripts_in(ctx.corpus.texts("train", lg)[:2000])
        pur = put("script_purity", {s: tm.script_purity("\n".join(t), lg, scripts) for s, t in kinds.items()},
                  tm.scripts_unavailable(lg, scripts))
        lex = put("lexical", {s: tm.lexical_validity(t, lg) for s, t in kinds.items()}, tm.lexicon_unavailable(lg))
        if None not in lex and lex[2] > lex[1]:  # model, unigram, human
            metrics[f"generation.lexical_position.{lg}"] = (lex[0] - lex[1]) / (lex[2] - lex[1])
        d2, rep = tm.distinct_n(texts, 2), tm.repetition_rate(texts)
        for name, v in (("distinct2", d2), ("repetition", rep)):
            if v is not None:
                metrics[f"generation.{name}.{lg}"] = v
        found = [ident.predict(t) if t.strip() else "-" for t in texts]
        metrics[f"generation.language_match.{lg}"] = found.count(lg) / len(found)
        sample = f"{prompts[0]} → {texts[0].strip()}".replace("\n", " ")
        rows.append([lg, n, _fmt3(lid), _fmt3(pur), _fmt3(lex), _fmt3([d2]), _fmt3([rep]),
                     f"{found.count(lg)}/{len(found)}", sample[:150]])
    for name in ("langid", "langid_human", "langid_unigram", "script_purity", "script_purity_human",
                 "script_purity_unigram", "lexical", "lexical_human", "lexical_unigram", "lexical_position",
                 "repetition", "language_match"):
        vals = [metrics[f"generation.{name}.{lg}"] for lg in ctx.langs if f"generation.{name}.{lg}" in metrics]
        if vals:
            metrics[f"generation.{name}_mean" if name != "language_match" else "generation.language_match"] = \
                float(np.mean(vals))
    metrics["generation.prompts"] = min(n_items)
    metrics["generation.items"] = sum(n_items)  # continuations behind the means
    short = {lg: tm.lexicon_size(lg) for lg in ctx.langs if not tm.lexicon_unavailable(lg)}
    short = {lg: n for lg, n in short.items() if n < tm.LEXICON_SIZE}
    notes = [f"n/a: {reason} ({', '.join(langs)})." for reason, langs in why.items()]
    if short:
        notes.append("wordfreq's lists are shorter for " + ", ".join(f"{lg} ({n:,} words)" for lg, n in short.items())
                     + " than the 50,000 words used elsewhere.")
    mean = metrics.get("generation.lexical_position_mean")
    blocks = [
        {"kind": "text", "text": f"{min(n_items)} continuations per language (fewer where the test split has fewer "
                                 "verses of 6+ words), each of the first four words of a test verse spread over the "
                                 f"test chapters (language tag first; temperature 0.8, top-k 40, seed 0, 12-40 new "
                                 f"tokens; restricted to the language's training tokens: "
                                 f"{'yes' if cfg.lang_vocab else 'no'}). Three texts per prompt: the model's "
                                 "continuation / the same number of tokens drawn from the language's train unigram "
                                 "distribution (a bag of the right subwords) / the held-out rest of the verse "
                                 f"(human text). Checkpoint step {ctx.step}."},
        {"kind": "text", "text": "Columns: *langid* = share of texts that py3langid (an external classifier over "
                                 "its ~100 languages, not only the run's) labels the prompt's language; *script* = "
                                 "share of letters in the language's own script(s); *lexical* = share of words "
                                 "found among wordfreq's 50,000 most frequent words of the language (an independent "
                                 "list, so the human column is the ceiling, not 1); *distinct-2* = distinct word "
                                 "bigrams / all bigrams over the language's continuations; *repetition* = share of a "
                                 "continuation's word 3-grams that repeat an earlier one; *trigram vote* = the "
                                 "corpus-trained character-trigram classifier (it passes salads: a few right "
                                 "trigrams win the vote). Each column catches what the others pass: a salad of "
                                 "scripts fails *script*, invented words fail *lexical*, words of another language "
                                 "fail *langid*, and a loop of valid function words (lexical as high as prose) "
                                 "fails *repetition*." + (f" Lexical validity lies at {mean:.2f} on average between "
                                                          "the unigram sample (0) and human text (1)."
                                                          if mean is not None else "")},
        {"kind": "table", "header": ["lang", "prompts", "langid m/u/h", "script m/u/h", "lexical m/u/h", "distinct-2",
                                     "repetition", "trigram vote", "first prompt → its continuation"], "rows": rows},
    ]
    if notes:
        blocks.append({"kind": "text", "text": " ".join(notes)})
    pos = [(lg, metrics[f"generation.lexical_position.{lg}"]) for lg in ctx.langs
           if f"generation.lexical_position.{lg}" in metrics]
    if pos:
        blocks.append(_bar("lexical_position", [lg for lg, _ in pos], [v for _, v in pos],
                           "(model - unigram) / (human - unigram)", reference=1.0, reference_label="human text = 1",
                           title="Lexical validity of generations: unigram sample = 0, human text = 1"))
    return {"metrics": metrics, "sections": [{"title": "Generation samples", "blocks": blocks}]}


# ---------------------------------------------------------------------------- driver

def run_evaluations(ctx: EvalContext, table: dict[str, tuple[int, Evaluation]], only: list[str] | None = None) -> dict:
    """Run the evaluations of `table` (`xling.registry.EVALUATIONS`: every one), or `only` these, in order;
    write eval/<name>.json; return all metrics."""
    names = sorted(table, key=lambda n: table[n][0])
    if only:
        unknown = [n for n in only if n not in table]
        if unknown:
            raise XlingError(f"unknown evaluation {', '.join(unknown)}; choose from {', '.join(names)}")
        names = [n for n in names if n in only]
    import torch

    from xling.precision import autocast_dtype

    # bf16 where this CPU's measured table chose it for batched forward passes (the "encode" path, xling.precision);
    # sentence encoding and training steps inside set their own precision
    width = getattr(getattr(getattr(ctx, "model", None), "cfg", None), "d_model", None)
    dtype = autocast_dtype("auto", torch.device("cpu"), path="encode", width=width)
    metrics: dict = {}
    for name in names:
        order, fn = table[name]
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
            result = fn(ctx)
        seconds = time.perf_counter() - t0
        if result.get("skipped"):  # skipped means no number, whatever the function returned
            result = {**result, "metrics": {}}
            if not result.get("sections"):
                result["sections"] = [{"title": f"Evaluation {name}", "blocks": [
                    {"kind": "text", "text": f"Skipped: {result['skipped']}."}]}]
        atomic_write_json(ctx.run_dir / "eval" / f"{name}.json",
                          {"name": name, "order": order, "step": ctx.step, "seconds": round(seconds, 2), **result})
        metrics.update(result["metrics"])
        status = f"skipped: {result['skipped']}" if result.get("skipped") else f"done in {seconds:.1f} s"
        print(f"evaluate: {name} {status}")
    return metrics


# the evaluations of the pretrained model itself, in the order they run; xling.registry adds the tasks'
BUILT_IN = (eval_tokenizer, eval_pretrain, eval_bpc, eval_retrieval, eval_langid, eval_generation)
