"""Measures of text in a language that need no model: is this German, or a salad of letters that looks like it?

    from xling.textmetrics import (distinct_n, langid_agreement, lexical_validity, repetition_rate,
                                   script_purity, words)
    script_purity("Und Gott sprach", "de")                  # 1.0: every letter is Latin, German's script
    script_purity("Und چter Его", "de")                     # 0.6: 6 of its 10 letters are Latin
    lexical_validity(["und gott sprach"], "de")             # 1.0: every word is in wordfreq's German list
    langid_agreement(["Und Gott sprach: Es werde Licht"], "de")   # share py3langid labels German
    distinct_n(texts, 2), repetition_rate(texts)           # diversity across and repetition within texts
    lexicon_unavailable("sw")                               # why lexical validity is None for Swahili

The trigram classifier of `xling.evaluate` is trained on the run's own corpus and votes over a whole
continuation, so a few German trigrams win it even when the text mixes Persian, Cyrillic and invented words.
These measures look at what such a vote averages away:

- script purity: the share of letters (`\\p{L}`) whose Unicode script (Script_Extensions) is one the
  language is written in (`xling.langs.SCRIPTS`); digits, punctuation and spaces do not count.
- lexical validity: the share of words found among the 50,000 most frequent words of the language in
  `wordfreq`, a word list built from other text than ours (Wikipedia, subtitles, news, web), so a
  model cannot score by copying its training data's quirks. The text is normalised as wordfreq normalises
  its own (case folding, Arabic marks removed), then split into words: runs of letters with their marks.
- language identification by `py3langid` (langid.py's model over its full language set: no restriction to
  the run's languages, so German that is half Dutch counts as not German).
- distinct-n and the repetition rate, defined in their docstrings.

Each measure returns None where it does not apply (a language the tool does not cover, no words at all);
`*_unavailable(lang)` gives the reason in one line (a missing package, with its install command, or an
unsupported language), so a report can print "n/a" and why, never a 0 that means "not measured".
`wordfreq` and `py3langid` are imported only when called.
"""

from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence

import regex

from xling.langs import UNSPACED, base_code, lang_scripts

LETTER = regex.compile(r"\p{L}")
WORD = regex.compile(r"(?:\p{L}\p{M}*)+")  # letters with their combining marks (Vietnamese tones, Hindi vowels)

INSTALL = {"wordfreq": "pip install wordfreq", "py3langid": "pip install py3langid"}


def words(text: str) -> list[str]:
    """Case-folded words of `text` (NFC): runs of letters and their marks; digits and punctuation split them."""
    return WORD.findall(unicodedata.normalize("NFC", text).casefold())


# ---------------------------------------------------------------------------- script purity

@functools.lru_cache(maxsize=64)
def _script_class(scripts: tuple[str, ...]) -> regex.Pattern:
    return regex.compile("[" + "".join(rf"\p{{scx={s}}}" for s in scripts) + "]")


def scripts_unavailable(lang: str, scripts: Sequence[str] | None = None) -> str | None:
    """None when script purity can be measured for `lang` (or with `scripts` given), else the reason."""
    if scripts or lang_scripts(lang):
        return None
    return (f"no script is known for language {lang!r} (xling.langs.SCRIPTS); pass its scripts, e.g. the "
            f"scripts of its training text (xling.textmetrics.scripts_in)")


def script_purity(text: str, lang: str, scripts: Sequence[str] | None = None) -> float | None:
    """Share of the letters of `text` that belong to the scripts `lang` is written in, in [0, 1].

    A letter counts when one of its Unicode Script_Extensions is among the language's scripts (so the
    Japanese long-vowel mark, Script=Common, counts for Japanese); marks, digits and punctuation are not
    letters. `scripts` overrides the table (for a language missing from it). None: no script known for
    the language (see `scripts_unavailable`), or no letter in the text.
    """
    scripts = tuple(scripts) if scripts else lang_scripts(lang)
    if not scripts:
        return None
    letters = LETTER.findall(text)
    if not letters:
        return None
    own = _script_class(scripts)
    return sum(1 for ch in letters if own.match(ch)) / len(letters)


# scripts tried by `scripts_in`: those of the table plus a few more, in no particular order
_KNOWN_SCRIPTS = sorted({s for lang in ("en ru ar hi he am el bn bo dv gu hy ka km kn lo ml my or pa si ta te th "
                                        "zh ja ko").split() for s in lang_scripts(lang) or ()}
                        | {"Syriac", "Mongolian", "Cherokee", "Tifinagh", "Nko", "Ol_Chiki", "Canadian_Aboriginal"})


def scripts_in(texts: Iterable[str], min_share: float = 0.05) -> tuple[str, ...]:
    """The scripts (Unicode Script property) holding at least `min_share` of the letters of `texts`, most
    letters first: the fallback for a language that `xling.langs.SCRIPTS` lacks, read off its training text.
    The share keeps out the odd foreign name; letters of a script outside a fixed list of ~35 are not named."""
    chars = Counter(ch for t in texts for ch in LETTER.findall(t))
    total = sum(chars.values())
    per: Counter = Counter()
    for ch, n in chars.items():  # each distinct letter once: a few hundred regex tests, not one per letter
        script = next((s for s in _KNOWN_SCRIPTS if regex.match(rf"\p{{sc={s}}}", ch)), None)
        if script:
            per[script] += n
    return tuple(s for s, n in per.most_common() if total and n / total >= min_share)


# ---------------------------------------------------------------------------- lexical validity

LEXICON_SIZE = 50_000  # most frequent words per language; wordfreq's smaller lists (fa, vi) give fewer


def lexicon_unavailable(lang: str) -> str | None:
    """None when lexical validity can be measured for `lang`, else the reason (one line)."""
    try:
        import wordfreq
    except ImportError:
        return f"wordfreq is not installed ({INSTALL['wordfreq']})"
    base = base_code(lang)
    if base in UNSPACED:
        return f"{lang} is written without spaces between words; counting its words needs a word segmenter"
    # top_n_list answers an unknown code with the nearest list it has (English for sw), so ask which it has
    if base not in wordfreq.available_languages(wordlist="best"):
        return f"wordfreq {_version('wordfreq')} has no word list for {lang!r}"
    return None


def lexicon_size(lang: str) -> int:
    """How many words the list behind `lexical_validity(.., lang)` holds (< LEXICON_SIZE for fa, vi)."""
    return len(_lexicon(base_code(lang), LEXICON_SIZE))


@functools.lru_cache(maxsize=16)
def _lexicon(base: str, n: int) -> frozenset[str]:
    import wordfreq

    return frozenset(wordfreq.top_n_list(base, n))


def lexicon_words(text: str, lang: str) -> list[str]:
    """The words of `text` as the lexicon spells them: wordfreq's normalisation for the language, then `words`."""
    from wordfreq.preprocess import preprocess_text

    return words(preprocess_text(text, base_code(lang)))


def lexical_validity(texts: Sequence[str], lang: str, n: int = LEXICON_SIZE) -> float | None:
    """Share of the words of `texts` (all pooled) that are among wordfreq's `n` most frequent words of `lang`.

    None: the language is not covered or wordfreq is missing (see `lexicon_unavailable`), or no words.
    Names and rare inflections are absent from any list of 50,000, so human text scores below 1 (on Bible
    verses 0.7 for Arabic, whose clitics glue words together, to 0.98 for Vietnamese syllables): compare
    with human text of the same kind, not with 1.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    if lexicon_unavailable(lang):
        return None
    lexicon = _lexicon(base_code(lang), n)
    ws = [w for t in texts for w in lexicon_words(t, lang)]
    return sum(w in lexicon for w in ws) / len(ws) if ws else None


# ---------------------------------------------------------------------------- external language identification

_LANGID_ALIASES = {"nb": "no", "fil": "tl"}  # our codes -> py3langid's labels for the same language


@functools.lru_cache(maxsize=1)
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE)  # our own instance: the module's global may be restricted


def langid_label(lang: str) -> str:
    base = base_code(lang)
    return _LANGID_ALIASES.get(base, base)


def langid_unavailable(lang: str) -> str | None:
    """None when py3langid can identify `lang`, else the reason (one line)."""
    try:
        import py3langid  # noqa: F401
    except ImportError:
        return f"py3langid is not installed ({INSTALL['py3langid']})"
    if langid_label(lang) not in set(_identifier().nb_classes):
        return f"py3langid {_version('py3langid')} does not know {lang!r}"
    return None


def langid_labels(texts: Sequence[str]) -> list[str]:
    """py3langid's label for each text, over its full language set; "-" for a text without letters."""
    ident = _identifier()
    return [ident.classify(t)[0] if LETTER.search(t) else "-" for t in texts]


def langid_agreement(texts: Sequence[str], lang: str) -> float | None:
    """Share of `texts` that py3langid labels `lang` (a text without letters counts as a miss); None when
    py3langid is missing or does not know the language (see `langid_unavailable`) or there are no texts."""
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    if langid_unavailable(lang) or not texts:
        return None
    want = langid_label(lang)
    return sum(label == want for label in langid_labels(texts)) / len(texts)


# ---------------------------------------------------------------------------- diversity and repetition

def _ngrams(ws: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    """Distinct-n (Li et al. 2016): distinct word n-grams / all word n-grams, pooled over `texts` (n-grams do
    not cross texts). 1 = no n-gram occurs twice anywhere; low = the texts say the same things. None: no n-gram.
    """
    grams = [g for t in texts for g in _ngrams(words(t), n)]
    return len(set(grams)) / len(grams) if grams else None


def repetition_rate(texts: Sequence[str], n: int = 3) -> float | None:
    """Share of word n-grams (n = 3) that repeat an n-gram seen earlier in the same text, pooled over `texts`.

    "a b c a b c" has the 3-grams abc bca cab abc: one of four repeats an earlier one, 0.25. A loop such as
    "und die die die die" scores near 1; human prose near 0. None: no text has n words.
    """
    repeated = total = 0
    for t in texts:
        seen: set[tuple[str, ...]] = set()
        for g in _ngrams(words(t), n):
            repeated += g in seen
            seen.add(g)
            total += 1
    return repeated / total if total else None


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"
