"""Out-of-domain retrieval and mining: our sentence vectors on Django's translated UI strings, not Bible verses.

    pip install django                          # in the `demo` and `dev` extras
    xling evaluate --run runs/demo --only retrieval,ood
    xling report --run runs/demo                # section "Out of domain: ...", a headline row beside the peer
    build_set([Path("locale")], ["en", "fr", "de"])   # the aligned set from any `<lang>/LC_MESSAGES/*.po` roots

The demo trains on Bibles and its retrieval evaluation scores held-out Bible chapters: the same domain, the
same translators' habits, verse-sized units. This evaluation asks the same questions of another domain: short
software-interface strings ("Enter a valid email address.", "Change password"), from the gettext catalogs
that ship inside the `django` package (BSD-3-Clause licence; its translations are contributed under the same
licence). They are read from the installed package at run time and never copied into this repository.

The set (`build_set`): every `django.po`/`djangojs.po` of `django/conf/locale/<lang>/LC_MESSAGES/` and of each
contrib app's `locale/`, English msgid -> msgstr per language, an entry kept only when it is translated (not
empty, not fuzzy, not obsolete; a plural entry pairs msgid with msgstr[0], as `xling.sources.po` reads them)
in *every* language of the run that Django has, so each language is scored on the same strings. Cleaning, on
both sides alike: format placeholders (`%(name)s`, `%s`, `{0}`) and HTML tags are removed, entities decoded and
the empty quotes a placeholder leaves (`“%(value)s”`) dropped. Placeholders and markup are the same bytes in
every language: kept, they would match a string to its translation by copying, not by meaning, and the model
never saw them in training. Then strings whose English has fewer than MIN_WORDS words are dropped (month
names, "Yes", "Save": single words are lexicon induction, and one word translates to several and back, so
their top-1 is as much a coin toss as a measurement), and duplicates go: the first of two entries with the
same English (msgctxt variants) and any entry whose text in some language repeats an earlier entry's (two
candidates with the same text make top-1 a tie that no encoder can win). Django 5.2.19, the demo's eight
languages: 612 entries translated in all, 179 strings kept (421 shorter than 3 words, 6 repeating a
translation, ...); with 2 words 285 would stay, with 4 words 128. MIN_WORDS = 3 because it keeps 100+ for the
12 languages of DATA.md (112; 75 with 4 words) while every item is a phrase or sentence (`ood.items`; the
report says how many were dropped and why).

Scores, for each language X of the run but the pivot (English), on the N aligned strings: top-1 retrieval
en->X and X->en among all N strings of the other language (`xling.encode.top1_accuracy`; the keys
`ood.retrieval.top1.<en>-<x>` and `.<x>-<en>`, their mean `ood.retrieval.top1_mean`) with our vectors from
`embed_texts` at the layer the retrieval evaluation chose on the valid split, and bitext-mining F1 on the same
strings, the target side shuffled (`.mine.mine_eval`, `ood.mining.f1.<pair>`, `ood.mining.f1_mean`).
The peer (`.peer`, USE v3) is scored the same way on the languages it covers (`ood.peer.*`), and
`ood.retrieval.top1_mean_peer_langs` is our mean over those same languages. A language of the run that Django
has no catalog for gets no key ("n/a: no catalog" in the report). Without Django the evaluation is skipped with
the install hint; without the peer only our numbers are written.
"""

from __future__ import annotations

import html
import importlib.util
import re
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from xling.corpus import clean_text, count_words
from xling.evaluate import EvalContext, evaluation, skipped
from xling.langs import pivot_lang
from xling.sources.po import PLACEHOLDER, has_words, load_catalog, polib_module, translation
from xling.tasks.retrieval.peer import PEER, covered, retrieval_metrics
from xling.teacher import encode_texts, load_peer

TITLE = "Out of domain: retrieval and mining on Django's UI strings"
INSTALL_HINT = ("Django is not installed: `pip install django` (or `pip install 'xling[demo]'`) puts retrieval "
                "on its translated interface strings, a domain the Bible-trained model never saw, beside the "
                "in-domain numbers.")
MIN_WORDS = 3  # English words a string needs (after placeholders are removed) to be a sentence-like item
# a run's language code -> Django's locale folder where the two differ (Django names Chinese by script)
FOLDERS = {"zh": "zh_Hans", "zh-CN": "zh_Hans", "zh-TW": "zh_Hant", "zh-Hant": "zh_Hant", "sr-Latn": "sr_Latn"}
_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)[^<>]*>")  # <a href="...">, </a>, <br/>
# tags that part words (replaced by a space); inline ones such as <b> go without one
_BREAKS = frozenset({"br", "p", "div", "li", "ul", "ol", "tr", "td", "h1", "h2", "h3"})
# an opening and a closing mark with nothing between them: what a removed placeholder leaves inside quotes
_EMPTY_MARKS = re.compile(r"[\"'“”„‘’‚«»‹›「『(\[]\s*[\"'“”‘’«»‹›」』)\]]")


def clean_ui_text(text: str) -> str:
    """A UI string as natural text: placeholders and HTML tags removed, entities decoded, emptied quotes
    dropped, whitespace collapsed, NFC (as the corpus stage cleans its text)."""
    text = _TAG.sub(lambda m: " " if m[1].lower() in _BREAKS else "", PLACEHOLDER.sub(" ", text))
    text = _EMPTY_MARKS.sub(" ", html.unescape(text))
    return clean_text(text)


@dataclass
class AlignedSet:
    """N aligned strings: texts[lang][i] is a translation of texts[pivot][i] for every language in `langs`."""
    name: str
    pivot: str
    langs: list[str]  # the run's languages with catalogs, pivot first
    texts: dict[str, list[str]]
    missing: list[str] = field(default_factory=list)  # the run's languages without a catalog
    dropped: dict[str, int] = field(default_factory=dict)  # entries translated everywhere but left out, by reason

    def __len__(self) -> int:
        return len(self.texts[self.pivot])


def catalogs(roots: list[Path], lang: str) -> list[Path]:
    """The .po files of `lang` under locale roots laid out as `<root>/<folder>/LC_MESSAGES/*.po`, sorted."""
    folders = dict.fromkeys([FOLDERS.get(lang, lang), lang, lang.replace("-", "_")])
    return sorted(p for root in roots for f in folders for p in (Path(root) / f / "LC_MESSAGES").glob("*.po"))


def read_catalogs(files: list[Path]) -> dict[tuple[str, str], tuple[str, str]]:
    """{(msgctxt, msgid): (msgid, translation)} of the translated entries; the first file to translate one wins."""
    polib = polib_module()
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for path in files:
        for entry in load_catalog(path, polib):
            text = translation(entry)
            if text:
                out.setdefault((entry.msgctxt or "", entry.msgid), (entry.msgid, text))
    return out


def build_set(roots: list[Path], langs: list[str], *, pivot: str = "en", min_words: int = MIN_WORDS,
              name: str = "gettext") -> AlignedSet:
    """The strings translated in every language of `langs` (but the pivot, the msgid side) that has a catalog
    under `roots`, cleaned (`clean_ui_text`), filtered and deduplicated as the module docstring says."""
    found, missing = {}, []
    for lg in langs:
        if lg == pivot:
            continue
        files = catalogs(roots, lg)
        if files:
            found[lg] = read_catalogs(files)
        else:
            missing.append(lg)
    keys = sorted(set.intersection(*(set(c) for c in found.values())), key=lambda k: (k[1], k[0])) if found else []
    texts: dict[str, list[str]] = {lg: [] for lg in [pivot, *found]}
    seen: dict[str, set[str]] = {lg: set() for lg in texts}
    dropped = dict.fromkeys(["short", "no words", "same English", "same translation"], 0)
    for key in keys:
        row = {pivot: clean_ui_text(key[1])} | {lg: clean_ui_text(found[lg][key][1]) for lg in found}
        if count_words(row[pivot]) < min_words:
            reason = "short"
        elif not all(has_words(t) for t in row.values()):
            reason = "no words"
        elif row[pivot] in seen[pivot]:
            reason = "same English"
        elif any(row[lg] in seen[lg] for lg in found):
            reason = "same translation"
        else:
            reason = ""
        if reason:
            dropped[reason] += 1
            continue
        for lg, t in row.items():
            texts[lg].append(t)
            seen[lg].add(t)
    return AlignedSet(name=name, pivot=pivot, langs=list(texts), texts=texts, missing=missing, dropped=dropped)


def django_catalogs() -> tuple[list[Path], str] | None:
    """(locale roots of the installed Django: conf/locale and every contrib app's locale, "django-gettext-<version>"),
    or None without Django."""
    try:
        import django
    except ImportError:
        return None
    base = Path(django.__file__).parent
    roots = [base / "conf" / "locale", *sorted(p for p in (base / "contrib").glob("*/locale") if p.is_dir())]
    return roots, f"django-gettext-{metadata.version('django')}"


def score(vectors: dict[str, np.ndarray], pivot: str, langs: list[str], prefix: str) -> dict[str, float]:
    """Retrieval top-1 both ways and mining F1 of the pivot against each language, rows aligned by index:
    `<prefix>.retrieval.top1.<pair>` (both directions), `<prefix>.mining.f1.<pivot>-<x>` and their means."""
    from xling.encode import top1_accuracy
    from xling.tasks.retrieval.mine import mine_eval

    out: dict[str, float] = {}
    accs, f1s = [], []
    src = vectors[pivot]
    for lg in langs:
        tgt = vectors[lg]
        fwd, bwd = top1_accuracy(src, tgt), top1_accuracy(tgt, src)
        out[f"{prefix}.retrieval.top1.{pivot}-{lg}"], out[f"{prefix}.retrieval.top1.{lg}-{pivot}"] = fwd, bwd
        gold = np.stack([np.arange(len(src)), np.arange(len(src))], axis=1)
        out[f"{prefix}.mining.f1.{pivot}-{lg}"] = mine_eval(src, tgt, gold)["f1"]
        accs += [fwd, bwd]
        f1s.append(out[f"{prefix}.mining.f1.{pivot}-{lg}"])
    if langs:
        out[f"{prefix}.retrieval.top1_mean"] = float(np.mean(accs))
        out[f"{prefix}.mining.f1_mean"] = float(np.mean(f1s))
    return out


def _pair_mean(metrics: dict, prefix: str, pivot: str, lg: str) -> float | str:
    """Mean top-1 of both directions for one language, "-" when not measured."""
    vals = [metrics.get(f"{prefix}.top1.{pivot}-{lg}"), metrics.get(f"{prefix}.top1.{lg}-{pivot}")]
    return float(np.mean(vals)) if all(isinstance(v, float) for v in vals) else "-"


@evaluation("ood", order=48)
def eval_ood(ctx: EvalContext) -> dict:
    from xling.encode import embed_texts
    from xling.tasks.retrieval.retrieve import default_layer

    source = django_catalogs()
    if source is None:
        return skipped("Django is not installed; pip install django", TITLE, INSTALL_HINT)
    if importlib.util.find_spec("polib") is None:
        return skipped("reading Django's catalogs needs polib; pip install polib", TITLE)
    pivot = pivot_lang(ctx.langs)
    if len(ctx.langs) < 2:
        return skipped("one language: nothing to retrieve across languages", TITLE)
    roots, name = source
    data = build_set(roots, ctx.langs, pivot=pivot, name=name)
    langs = data.langs[1:]
    if not langs or not len(data):
        why = (f"Django has no catalog for {', '.join(data.missing)}" if not langs
               else f"no string of {MIN_WORDS}+ words is translated in all of {', '.join(langs)}")
        return skipped(why, TITLE)
    layer = ctx.cache.get("retrieval_layer", default_layer(ctx.run_dir)) % (ctx.model.cfg.n_layer + 1)
    ours = {lg: embed_texts(ctx.model, ctx.tokenizer, data.texts[lg], lg, layer=layer) for lg in data.langs}
    metrics: dict[str, Any] = {"ood.set": data.name, "ood.items": len(data), "ood.retrieval.chance": 1 / len(data)}
    metrics |= score(ours, pivot, langs, "ood")
    peer = load_peer()
    peer_langs = [lg for lg in langs if covered(lg)] if peer is not None and covered(pivot) else []
    if peer_langs:
        vecs = {lg: encode_texts(peer, data.texts[lg], desc=f"peer encode ood {lg}") for lg in [pivot, *peer_langs]}
        metrics |= score(vecs, pivot, peer_langs, "ood.peer")
        metrics["ood.retrieval.top1_mean_peer_langs"] = float(np.mean(
            [metrics[f"ood.retrieval.top1.{a}-{b}"] for lg in peer_langs for a, b in ((pivot, lg), (lg, pivot))]))
    in_domain, in_note = retrieval_metrics(ctx, "ood")
    rows = []
    for lg in ctx.langs:
        if lg == pivot:
            continue
        test = _pair_mean(in_domain, "retrieval", pivot, lg)
        if lg in data.missing:
            rows.append([lg, "n/a: no catalog", "-", test, "-", "-"])
            continue
        rows.append([lg, _pair_mean(metrics, "ood.retrieval", pivot, lg),
                     _pair_mean(metrics, "ood.peer.retrieval", pivot, lg), test,
                     metrics[f"ood.mining.f1.{pivot}-{lg}"], metrics.get(f"ood.peer.mining.f1.{pivot}-{lg}", "-")])
    dropped = ", ".join(f"{n:,} {why}" for why, n in data.dropped.items() if n)
    peer_note = (f"Peer: {PEER} on {', '.join(peer_langs)} (mean top-1 {metrics['ood.peer.retrieval.top1_mean']:.3f}; "
                 f"ours on the same languages {metrics['ood.retrieval.top1_mean_peer_langs']:.3f}). "
                 if peer_langs else "Peer: not installed or covering none of these languages ('-'). ")
    n = len(data)
    text = (f"{n:,} strings aligned by their English msgid across {', '.join(data.langs)} from {data.name} "
            f"(translated, not fuzzy, in every one of these languages; placeholders and HTML removed; at least "
            f"{MIN_WORDS} English words; left out after that: {dropped or 'none'}). Top-1 retrieval, mean of "
            f"{pivot}→X and X→{pivot}, among all {n:,} strings of the other language (chance {1 / n:.3f}; ours: "
            f"layer {layer}, mean {metrics['ood.retrieval.top1_mean']:.3f}); mining F1 by the mining evaluation's "
            f"margin on the same strings (ours: mean {metrics['ood.mining.f1_mean']:.3f}). {peer_note}"
            f"In-domain: the retrieval evaluation's test verses, for comparison. {in_note} "
            f"Model checkpoint step {ctx.step}.")
    header = ["lang", "ours top-1 (UI strings)", "peer top-1 (UI strings)", "ours top-1 (test verses)",
              "ours mining F1 (UI)", "peer mining F1 (UI)"]
    blocks = [{"kind": "text", "text": text}, {"kind": "table", "header": header, "rows": rows}]
    if data.missing:
        blocks.append({"kind": "text", "text": f"n/a: no catalog: Django has no translation for "
                                               f"{', '.join(data.missing)}."})
    return {"metrics": metrics, "sections": [{"title": TITLE, "blocks": blocks}]}
