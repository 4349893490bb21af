"""Tests of xling.textmetrics against hand-made strings and hand-computed values, and of the n/a paths
(a missing package, a language a tool does not cover) that must never read as a score of 0."""

from __future__ import annotations

import sys

import pytest
import regex

from xling import textmetrics as tm
from xling.langs import SCRIPTS, lang_scripts

# the salad issue 28 quotes: German function words among non-words, Persian, Cyrillic and Vietnamese letters
SALAD = "fullte terterdp milbig und die die dieù ihm چter des Hend littt L Es über Его;ten"
GERMAN = "Und er sprach zu ihnen: Das ist gut, und es ward Licht."


# ---------------------------------------------------------------------------- script purity

def test_script_purity_counts_letters_of_the_languages_scripts():
    assert tm.script_purity(GERMAN, "de") == 1.0
    # u n d | چ ت ر | Е г о: three letters of each script
    assert tm.script_purity("und چتر Его", "de") == pytest.approx(3 / 9)
    assert tm.script_purity("und چتر Его", "fa") == pytest.approx(3 / 9)
    assert tm.script_purity("und چتر Его", "ru") == pytest.approx(3 / 9)
    # the salad: 61 of its 65 letters are Latin (the Persian چ, the Cyrillic Его are the 4 others)
    assert tm.script_purity(SALAD, "de") == pytest.approx(61 / 65)
    assert tm.script_purity(SALAD, "fa") == pytest.approx(1 / 65)


def test_script_purity_ignores_digits_punctuation_and_marks():
    assert tm.script_purity("Licht 1:3 -- «123» !!!", "de") == 1.0
    assert tm.script_purity("Licht 1:3 Его", "de") == pytest.approx(5 / 8)
    assert tm.script_purity("1:3 !!!", "de") is None  # no letter: nothing to measure, not 0 or 1
    assert tm.script_purity("Vie\u0323\u0302t Nam", "vi") == 1.0  # decomposed tone marks are not letters
    assert tm.script_purity("ラーメンと東京", "ja") == 1.0  # ー is Script=Common, its extensions Hira/Kana
    assert tm.script_purity("ラーメン", "zh") == 0.0


def test_script_table_and_unknown_languages():
    assert len(SCRIPTS) >= 40
    for scripts in SCRIPTS.values():  # every name is one the regex package knows
        for s in scripts:
            regex.compile(rf"\p{{scx={s}}}")
    assert lang_scripts("pt-BR") == ("Latin",) and lang_scripts("sr-Latn") == ("Latin",)
    assert lang_scripts("zh_Hant") == ("Han",) and lang_scripts("haw") is None
    assert tm.script_purity("aloha", "haw") is None
    assert "haw" in tm.scripts_unavailable("haw")
    assert tm.scripts_unavailable("haw", ("Latin",)) is None and tm.script_purity("aloha", "haw", ("Latin",)) == 1.0
    # the fallback: the scripts of the language's own text, by share of letters (9 Cyrillic, 5 Latin)
    assert tm.scripts_in(["Привет мир", "hello"]) == ("Cyrillic", "Latin")
    assert tm.scripts_in(["Привет мир", "hello"], min_share=0.5) == ("Cyrillic",)


# ---------------------------------------------------------------------------- lexical validity

def test_words_are_case_folded_runs_of_letters_and_marks():
    assert tm.words("Der KÖNIG sprach: 'Geh!' 3x") == ["der", "könig", "sprach", "geh", "x"]
    assert tm.words("Vie\u0323\u0302t Nam") == ["việt", "nam"]  # NFC: one word, its marks inside
    assert tm.lexicon_words("كَتَبَ الوَلَدُ", "ar") == ["كتب", "الولد"]  # wordfreq's Arabic drops the vowel marks


def test_lexical_validity_separates_german_from_non_words_and_salad():
    assert tm.lexical_validity([GERMAN], "de") == 1.0
    assert tm.lexical_validity(["fullte terterdp milbig dieù littt Hend"], "de") == 0.0
    salad = tm.lexical_validity([SALAD], "de")
    assert 0.4 < salad < 0.65  # the function words count; the invented ones and the fragments do not
    assert tm.lexical_validity([GERMAN, "xqzt blorf"], "de") == pytest.approx(12 / 14)  # pooled over texts
    assert tm.lexical_validity(["1:3 !!!"], "de") is None  # no words
    with pytest.raises(TypeError):
        tm.lexical_validity(GERMAN, "de")


def test_lexical_validity_is_none_with_a_reason_for_uncovered_languages():
    # wordfreq answers top_n_list("sw") with English; the check must not let that through
    assert tm.lexical_validity(["habari ya asubuhi"], "sw") is None
    assert "no word list for 'sw'" in tm.lexicon_unavailable("sw")
    assert tm.lexical_validity(["我们"], "zh") is None and "spaces" in tm.lexicon_unavailable("zh")
    assert tm.lexicon_unavailable("de") is None and tm.lexicon_size("de") == tm.LEXICON_SIZE
    assert tm.lexicon_size("vi") < tm.LEXICON_SIZE  # wordfreq's Vietnamese list is smaller


def test_missing_wordfreq_gives_none_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "wordfreq", None)  # `import wordfreq` now raises ImportError
    assert tm.lexical_validity([GERMAN], "de") is None
    assert "pip install wordfreq" in tm.lexicon_unavailable("de")


# ---------------------------------------------------------------------------- language identification

def test_langid_agreement_over_the_full_language_set():
    texts = ["Und Gott sprach: Es werde Licht! Und es ward Licht.", "The Lord is my shepherd; I shall not want.", ""]
    assert tm.langid_agreement(texts, "de") == pytest.approx(1 / 3)  # English and the empty text are misses
    assert tm.langid_labels(texts) == ["de", "en", "-"]
    assert tm.langid_agreement(["В начале было Слово."], "ru") == 1.0
    assert tm.langid_label("nb") == "no"
    assert tm.langid_agreement(["aloha"], "haw") is None and "haw" in tm.langid_unavailable("haw")


def test_missing_py3langid_gives_none_and_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "py3langid", None)
    assert tm.langid_agreement([GERMAN], "de") is None
    assert "pip install py3langid" in tm.langid_unavailable("de")


# ---------------------------------------------------------------------------- diversity and repetition

def test_distinct_n_by_hand():
    assert tm.distinct_n(["a b c a b c"], 1) == pytest.approx(3 / 6)
    assert tm.distinct_n(["a b c a b c"], 2) == pytest.approx(3 / 5)  # ab bc ca ab bc
    assert tm.distinct_n(["a b", "a b"], 2) == pytest.approx(1 / 2)  # pooled over texts
    assert tm.distinct_n(["a", "b"], 2) is None  # n-grams never cross texts
    assert tm.distinct_n(["Der König, der König!"], 2) == pytest.approx(2 / 3)  # case folded, punctuation dropped


def test_repetition_rate_by_hand():
    assert tm.repetition_rate(["a b c a b c"]) == pytest.approx(1 / 4)  # abc bca cab abc
    assert tm.repetition_rate(["und die die die die"]) == pytest.approx(1 / 3)  # (und die die) (die die die) x2
    assert tm.repetition_rate(["a b c", "a b c"]) == 0.0  # a repeat is within one text
    assert tm.repetition_rate(["a b c a b c", "x y z"]) == pytest.approx(1 / 5)
    assert tm.repetition_rate(["a b", ""]) is None
    assert tm.repetition_rate([GERMAN]) == 0.0
