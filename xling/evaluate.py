"""Evaluation of a trained run on held-out test chapters; each evaluation is one registered entry.

    xling evaluate runs/demo        # writes runs/demo/eval/<name>.json, then `xling report` renders them
    evaluate_run("runs/demo")       # the same from Python

An evaluation is a function `(ctx: EvalContext) -> {"metrics": {...}, "sections": [...]}` registered with
`@evaluation(name, order)`. Metrics are flat dotted keys (`bpc.en`, `retrieval.top1.en-fr`); sections
are report blocks as data (see `xling.report`). An evaluation whose data or package is missing on this
machine returns `skipped("why; how to get it")` instead: no metrics at all (a number from nothing would be
read as a result), and the report and summary say "skipped" with the reason. One that measures some pairs
and not others adds `"skipped_parts": {"en-fr": "why"}` beside its metrics. A task from another module
plugs in by adding its module to `PLUGINS`; the module registers its entries when imported. Built in:

    tokenizer   fertility and parity per language (from the tokenizer stage's report)
    pretrain    tokens, tokens/s, minutes and the loss curve per objective (from train/metrics.jsonl)
    bpc         bits per character per language on the test split
    retrieval   top-1 translation retrieval en->X and X->en on the test split, layer chosen on valid
    langid      language identity left in sentence vectors (nearest language centroid, no language tag)
    generation  one continuation per language from a prompt in that language, its language identified
"""

from __future__ import annotations

import importlib
import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xling.errors import XlingError
from xling.files import atomic_write_json
from xling.langs import pivot_lang

# modules that register more evaluations
PLUGINS: list[str] = ["xling.tasks.translate", "xling.tasks.mine", "xling.tasks.align_eval", "xling.tasks.classify",
                      "xling.tasks.peer"]


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

    @property
    def langs(self) -> list[str]:
        return list(self.shards.langs)

    def provenance(self, split: str, n: int | None = None) -> str:
        cfg = self.model.cfg
        size = f"{cfg.n_layer} layers, d {cfg.d_model}, {self.model.num_params() / 1e6:.1f}M parameters"
        count = f", {n:,} segments per language" if n is not None else ""
        return f"{split} split{count}; model {size}; checkpoint step {self.step}"

    def segments(self, split: str, lang: str, cap: int | None = None) -> list[np.ndarray]:
        n = min(self.shards.num_segments(split, lang), cap or self.max_segments)
        return [np.asarray(self.shards.segment(split, lang, i), dtype=np.int64) for i in range(n)]


EVALUATIONS: dict[str, tuple[int, Callable[[EvalContext], dict]]] = {}


def evaluation(name: str, order: int = 50) -> Callable:
    def register(fn: Callable[[EvalContext], dict]) -> Callable:
        EVALUATIONS[name] = (order, fn)
        return fn

    return register


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
    for lg in langs:
        metrics[f"tokenizer.fertility.{lg}"] = per[lg]["fertility"]
        metrics[f"tokenizer.parity.{lg}"] = per[lg]["parity"]
    rows = [[lg, per[lg]["fertility"], per[lg]["parity"], per[lg].get("chars_per_token", float("nan"))]
            for lg in langs]
    pivot = report.get("pivot", "en")
    return {"metrics": metrics, "sections": [{"title": "Tokenizer fairness", "blocks": [
        {"kind": "text", "text": f"Shared vocabulary of {report.get('vocab_size', '?'):,} tokens. Fertility = "
                                 f"tokens per word; parity = tokens for a verse / tokens for its {pivot} "
                                 f"verse (median over aligned test verses). Equal tokenization is equal cost."},
        {"kind": "table", "header": ["lang", "fertility", f"parity vs {pivot}", "chars/token"], "rows": rows},
        _bar("parity", langs, [per[lg]["parity"] for lg in langs], f"tokens / {pivot} tokens",
             reference=1.0, reference_label=f"{pivot} = 1", title="Tokenizer parity"),
    ]}]}


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
    from xling.objectives import bits_per_char, clm_eval

    bpc = {}
    for lg in ctx.langs:
        nats, chars = clm_eval(ctx.model, ctx.shards, "test", lg, seq_len=ctx.model.cfg.block_size,
                               max_tokens=ctx.bpc_tokens)
        bpc[lg] = bits_per_char(nats, chars)
    metrics = {f"bpc.{lg}": v for lg, v in bpc.items()}
    return {"metrics": metrics, "sections": [{"title": "Bits per character (causal LM)", "blocks": [
        {"kind": "text", "text": "Next-token loss over held-out test chapters, converted to bits per character "
                                 "(comparable across languages and tokenizers; each verse scored as "
                                 f"`<lang> verse </s>`; the first {ctx.bpc_tokens:,} test tokens per language; "
                                 f"bf16 autocast where native). {ctx.provenance('test')}."},
        {"kind": "table", "header": ["lang", "bits/char"], "rows": [[lg, v] for lg, v in bpc.items()]},
        _bar("bpc", bpc, bpc.values(), "bits per character", title="Bits per character, test split"),
    ]}]}


def _cap(ctx: EvalContext, split: str) -> int:
    return ctx.valid_segments if split == "valid" else ctx.max_segments


def _split_vectors(ctx: EvalContext, split: str, lang: str) -> np.ndarray:
    """Every layer's sentence vectors (L+1, N, D) for the split's segments of one language, cached."""
    from xling.tasks.retrieve import encode

    key = ("vectors", split, lang)
    if key not in ctx.cache:
        seqs = [np.asarray(ctx.shards.segment(split, lang, i), np.int64)
                for i in range(min(ctx.shards.num_segments(split, lang), _cap(ctx, split)))]
        ctx.cache[key] = encode(ctx.model, seqs, lang_index=ctx.langs.index(lang),
                                tag=ctx.shards.lang_token_ids[lang], specials=ctx.shards.specials,
                                all_layers=True, desc=f"encode {split} {lang}")
    return ctx.cache[key]


def _pair_vectors(ctx: EvalContext, split: str, pivot: str, lg: str) -> tuple[np.ndarray, np.ndarray]:
    """Vectors (L+1, M, D) of the split's aligned pivot/lg segments, row i of each a translation pair."""
    rows = np.asarray(ctx.shards.pairs(split, pivot, lg))
    rows = rows[(rows[:, 0] < _cap(ctx, split)) & (rows[:, 1] < _cap(ctx, split))]  # the encoded segments
    return _split_vectors(ctx, split, pivot)[:, rows[:, 0]], _split_vectors(ctx, split, lg)[:, rows[:, 1]]


@evaluation("retrieval", order=40)
def eval_retrieval(ctx: EvalContext) -> dict:
    from xling.tasks.retrieve import top1_accuracy

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
    from xling.tasks.retrieve import encode

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


class CharNgramLangID:
    """A character-trigram naive Bayes language identifier trained on the corpus (independent of the model)."""

    def __init__(self, texts: dict[str, list[str]], n: int = 3):
        self.n = n
        self.langs = list(texts)
        self.logp, self.unk = {}, {}
        for lg, lines in texts.items():
            counts = Counter(g for t in lines for g in self._grams(t))
            total, vocab = sum(counts.values()), len(counts) + 1
            self.logp[lg] = {g: math.log((c + 1) / (total + vocab)) for g, c in counts.items()}
            self.unk[lg] = math.log(1 / (total + vocab))

    def _grams(self, text: str):
        t = f" {text.lower()} "
        return (t[i:i + self.n] for i in range(len(t) - self.n + 1))

    def predict(self, text: str) -> str:
        grams = list(self._grams(text))
        return max(self.langs, key=lambda lg: sum(self.logp[lg].get(g, self.unk[lg]) for g in grams))


@evaluation("generation", order=60)
def eval_generation(ctx: EvalContext) -> dict:
    from xling.generate import GenerateConfig, generate

    n_prompts = 10  # per language: the "at least 9 of 10 prompts stay in the language"
    ident = CharNgramLangID({lg: ctx.corpus.texts("train", lg)[:3000] for lg in ctx.langs})
    rows, metrics = [], {}
    # min_new_tokens: a young model's likeliest next token is often </s> (one per verse in the packed streams)
    cfg = GenerateConfig(max_new_tokens=40, min_new_tokens=12, temperature=0.8, top_k=40, seed=0)
    for lg in ctx.langs:
        verses = [t for t in ctx.corpus.texts("test", lg) if len(t.split()) >= 6]
        picks = [verses[i * len(verses) // n_prompts] for i in range(min(n_prompts, len(verses)))]  # spread out
        prompts = [" ".join(v.split()[:4]) for v in picks]
        texts = generate(ctx.model, ctx.tokenizer, prompts, lang=lg, cfg=cfg)
        found = [ident.predict(t) if t.strip() else "-" for t in texts]
        metrics[f"generation.language_match.{lg}"] = found.count(lg) / len(found)
        others = Counter(f for f in found if f != lg).most_common(1)
        rows.append([lg, f"{found.count(lg)}/{len(found)}", others[0][0] if others else "-", prompts[0],
                     texts[0].strip().replace("\n", " ")[:160]])
    metrics["generation.language_match"] = float(np.mean([metrics[f"generation.language_match.{lg}"]
                                                          for lg in ctx.langs]))
    return {"metrics": metrics, "sections": [{"title": "Generation samples", "blocks": [
        {"kind": "text", "text": f"{n_prompts} continuations per language (language tag first; temperature 0.8, "
                                 "top-k 40, seed 0, 12-40 new tokens), each from the first four words of a test "
                                 "verse; the continuation's language identified by a character-trigram classifier "
                                 "trained on the corpus. Mean share in the prompt's language "
                                 f"{metrics['generation.language_match']:.2f}. Checkpoint step {ctx.step}."},
        {"kind": "table", "header": ["lang", "in language", "else mostly", "first prompt", "its continuation"],
         "rows": rows},
    ]}]}


# ---------------------------------------------------------------------------- driver

def run_evaluations(ctx: EvalContext, only: list[str] | None = None) -> dict:
    """Run the registered evaluations (or `only` these), write eval/<name>.json; return all metrics."""
    for mod in PLUGINS:
        importlib.import_module(mod)
    names = sorted(EVALUATIONS, key=lambda n: EVALUATIONS[n][0])
    if only:
        unknown = [n for n in only if n not in EVALUATIONS]
        if unknown:
            raise XlingError(f"unknown evaluation {', '.join(unknown)}; choose from {', '.join(names)}")
        names = [n for n in names if n in only]
    import torch

    from xling.trainer import autocast_dtype

    dtype = autocast_dtype("auto", torch.device("cpu"))  # bf16 where the CPU has native bf16 (PERF.md)
    metrics: dict = {}
    for name in names:
        order, fn = EVALUATIONS[name]
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
