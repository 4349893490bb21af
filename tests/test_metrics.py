"""Metrics against their references: sacrebleu's documented values, Google's rouge-score, scikit-learn's F1."""

import json

import pytest

from xling import metrics
from xling.cli import main
from xling.errors import XlingError

# sacrebleu's README example: three hypotheses, two reference streams.
REFS2 = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
         ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
HYPS = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]


# ------------------------------------------------------------------------------------------ BLEU / chrF
@pytest.mark.parametrize("tokenize, expected", [(None, 48.530827), ("13a", 48.530827), ("none", 49.1919566),
                                                ("intl", 43.91623493)])
def test_bleu_reproduces_sacrebleu_golden_values(tokenize, expected):
    # values from sacrebleu's README and test/test_bleu.py
    score, sig = metrics.bleu(HYPS, REFS2, lang="en", tokenize=tokenize)
    assert score == pytest.approx(expected, abs=1e-6)
    assert "nrefs:2" in sig and f"tok:{tokenize or '13a'}" in sig and "smooth:exp" in sig


def test_bleu_single_reference_and_empty_hypotheses():
    assert metrics.bleu(["this is a test"], ["this is a test"], "en")[0] == pytest.approx(100.0)
    score, sig = metrics.bleu(["", "", ""], REFS2, "en")  # empty hypotheses count, they are not dropped
    assert score == 0.0 and sig.startswith("nrefs:2|")


def test_chrf_reproduces_sacrebleu_readme():
    score, sig = metrics.chrf(HYPS, REFS2)
    assert round(score, 2) == 59.73  # README: chrF2 = 59.73
    assert "nc:6" in sig and "nw:0" in sig and "nrefs:2" in sig
    assert "nw:2" in metrics.chrf(HYPS, REFS2, word_order=2)[1]  # chrF++


def test_bleu_tokenizer_per_target_language():
    mecab = {"ja": "MeCab", "ko": "mecab_ko"}
    import importlib.util
    for lang in ("ja", "ko"):
        want = f"{lang}-mecab" if importlib.util.find_spec(mecab[lang]) else "char"
        assert metrics.bleu_tokenizer(lang) == want
    assert [metrics.bleu_tokenizer(x) for x in ("zh", "zh-Hant", "zho", "th", "my", "fr", "ru", None)] == \
        ["zh", "zh", "zh", "char", "char", "13a", "13a", "13a"]
    # Chinese has no spaces: 13a sees one token per clause (no credit), the zh tokenizer scores characters
    hyp, ref = ["我喜欢吃苹果。"], ["我喜欢吃香蕉。"]
    assert metrics.bleu(hyp, ref, "en")[0] < 1.0
    zh, sig = metrics.bleu(hyp, ref, "zh")
    assert zh > 30.0 and "tok:zh" in sig
    assert "tok:char" in metrics.bleu(["สวัสดีครับ"], ["สวัสดีค่ะ"], "th")[1]


@pytest.mark.parametrize("fn", [metrics.bleu, metrics.chrf, metrics.rouge])
def test_sizes_are_checked(fn):
    with pytest.raises(XlingError, match="0 hypotheses and 0 references"):
        fn([], [])
    with pytest.raises(XlingError, match="3 hypotheses but 2 references"):
        fn(HYPS, REFS2[0][:2])
    with pytest.raises(XlingError, match="3 hypotheses but 1 reference stream 2"):
        fn(HYPS, [REFS2[0], ["x"]])


def test_unknown_bleu_tokenizer():
    with pytest.raises(XlingError, match="unknown BLEU tokenizer 'moses'"):
        metrics.bleu(HYPS, REFS2[0], tokenize="moses")


# ---------------------------------------------------------------------------------------------- ROUGE
# (hypothesis, reference) pairs, edge cases included
PAIRS = [
    ("The quick brown dog jumps on the log.", "The quick brown fox jumps over the lazy dog"),
    ("the cat sat", "the cat sat on the mat"),
    ("", "a reference with words"),
    ("a hypothesis with words", ""),
    ("", ""),
    ("...!!!", "Punctuation only?"),
    ("the the the the", "the cat"),
    ("cat the", "the cat"),
    ("a b a b a b", "b a b a"),
    ("Hello, world! Hello?", "hello world"),
    ("U.S.A. won 3-2 in 2022.", "The USA won 3 - 2 in 2022"),
    ("running runners ran quickly", "the runner runs quick"),
    ("He's going to the store's door.", "He is going to the door of the store"),
    ("police killed the gunman", "the gunman killed police"),
    ("one two three four five six", "six five four three two one"),
    ("identical sentence here", "identical sentence here"),
    ("CASE Matters NOT", "case matters not"),
    ("tabs\tand\nnewlines  here", "tabs and newlines here"),
    ("numbers 123 and 4567", "numbers 1234 and 567"),
    ("naïve café résumé", "naive cafe resume"),
    ("Il était une fois un roi", "Il y avait une fois un roi"),
    ("В начале было Слово", "В начале было слово"),
    ("a", "a"),
    ("a", "b"),
    ("x y z x y z x y z", "x y z"),
    ("generalization generalizing generalized", "general generalize generally"),
    ("the connected connections connecting", "connect connection"),
    ("under_score and-hyphen", "under score and hyphen"),
    ("long " * 40 + "tail", "long " * 20 + "tail end"),
    ("It wasn't surprising.", "It was not unexpected."),
    ("The man had just bitten him.", "The man had bitten the dog."),
]


def _reference_scorer(stem: bool):
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=stem)


@pytest.mark.parametrize("stem", [False, True])
def test_rouge_matches_rouge_score_per_sentence(stem):
    scorer = _reference_scorer(stem)
    for hyp, ref in PAIRS:
        want = scorer.score(ref, hyp)  # rouge-score takes (target, prediction)
        got = metrics.rouge_scores(hyp, ref, stem=stem)
        for key in ("rouge1", "rouge2", "rougeL"):
            w = want[key]
            assert got[key] == pytest.approx((w.precision, w.recall, w.fmeasure), abs=1e-12), (hyp, ref, key)


def test_rouge_corpus_is_the_mean_of_sentences():
    scorer = _reference_scorer(False)
    from rouge_score import scoring

    hyps, refs = [h for h, _ in PAIRS], [r for _, r in PAIRS]
    got = metrics.rouge(hyps, refs)
    per = [scorer.score(r, h) for h, r in PAIRS]
    agg = scoring.BootstrapAggregator()
    for s in per:
        agg.add_scores(s)
    mid = agg.aggregate()
    for key in ("rouge1", "rouge2", "rougeL"):
        mean = [sum(getattr(s[key], f) for s in per) / len(per) for f in ("precision", "recall", "fmeasure")]
        assert (got[f"{key}_p"], got[f"{key}_r"], got[key]) == pytest.approx(mean, abs=1e-12)
        assert got[key] == pytest.approx(mid[key].mid.fmeasure, abs=0.03)  # bootstrap median is near the mean


def test_rouge_multiple_references_take_the_best_as_score_multi():
    scorer = _reference_scorer(False)
    refs2 = [["the cat sat on the mat", "completely different words"],
             ["a cat was sitting on a mat", "different words completely here"]]
    hyps = ["the cat sat on a mat", "words completely different"]
    got = metrics.rouge(hyps, refs2)
    for key in ("rouge1", "rouge2", "rougeL"):
        want = [scorer.score_multi([refs2[0][i], refs2[1][i]], hyps[i])[key].fmeasure for i in range(2)]
        assert got[key] == pytest.approx(sum(want) / 2, abs=1e-12)


def test_rouge_hand_computed_values():
    s = metrics.rouge_scores("the cat sat", "the cat sat on the mat")
    assert s["rouge1"] == pytest.approx((1.0, 0.5, 2 / 3))
    assert s["rouge2"] == pytest.approx((1.0, 0.4, 4 / 7))
    assert s["rougeL"] == pytest.approx((1.0, 0.5, 2 / 3))
    assert metrics.rouge_scores("police killed the gunman", "the gunman killed police")["rougeL"][2] == 0.5
    assert metrics.lcs_length("ABCBDAB", "BDCABA") == 4
    assert metrics.lcs_length([], [1, 2]) == 0


def test_unicode_tokenizer_keeps_every_script():
    text = "Hello, Wörld! 中文abc ภาษา 123"
    assert metrics.rouge_tokens(text) == ["hello", "w", "rld", "abc", "123"]  # rouge-score drops non-ASCII
    assert metrics.rouge_tokens(text, "unicode") == ["hello", "wörld", "中", "文", "abc", "ภ", "า", "ษ", "า", "123"]
    for hyp, ref in PAIRS:  # on ASCII text both tokenizers agree
        if (hyp + ref).isascii():
            assert metrics.rouge_tokens(hyp, "unicode") == metrics.rouge_tokens(hyp)
    # Cyrillic: the default sees no tokens at all; unicode scores 3 of 4 words (case folded)
    assert metrics.rouge(["В начале было Слово"], ["В начале было дело"])["rouge1"] == 0.0
    assert metrics.rouge(["В начале было Слово"], ["В начале было дело"], tokenizer="unicode")["rouge1"] == 0.75
    with pytest.raises(XlingError, match="unknown ROUGE tokenizer"):
        metrics.rouge_tokens("x", "spaces")


# -------------------------------------------------------------------------------------- classification
GOLD = ["a", "a", "b", "c"]
PRED = ["a", "b", "b", "a"]


def test_accuracy_and_f1_hand_computed():
    assert metrics.accuracy(PRED, GOLD) == 0.5
    # a: tp1 fp1 fn1 -> 1/2; b: tp1 fp1 -> 2/3; c: fn1 -> 0
    assert metrics.per_class_f1(PRED, GOLD) == pytest.approx({"a": 0.5, "b": 2 / 3, "c": 0.0})
    assert metrics.macro_f1(PRED, GOLD) == pytest.approx((0.5 + 2 / 3) / 3)
    # a class only predicted (never gold) still votes with 0; one in neither has no vote unless asked for
    assert metrics.macro_f1(["x", "y"], ["x", "x"]) == pytest.approx((2 / 3 + 0) / 2)
    assert metrics.macro_f1(PRED, GOLD, labels=["a", "b", "c", "d"]) == pytest.approx((0.5 + 2 / 3) / 4)
    assert metrics.macro_f1([1, 2, 3], [1, 2, 3]) == 1.0
    with pytest.raises(XlingError, match="3 predictions and 4 gold labels"):
        metrics.accuracy(PRED[:3], GOLD)
    with pytest.raises(XlingError, match="0 predictions and 0 gold"):
        metrics.macro_f1([], [])


def test_f1_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    import random

    rng = random.Random(0)
    for _ in range(20):
        gold = [rng.choice("abcde") for _ in range(30)]
        pred = [rng.choice("abcdf") for _ in range(30)]
        labels = sorted(set(gold) | set(pred))
        assert metrics.macro_f1(pred, gold) == pytest.approx(sk.f1_score(gold, pred, average="macro"))
        assert list(metrics.per_class_f1(pred, gold).values()) == pytest.approx(
            list(sk.f1_score(gold, pred, average=None, labels=labels)))
        assert metrics.accuracy(pred, gold) == pytest.approx(sk.accuracy_score(gold, pred))
        asked = ["a", "b", "z"]  # explicit labels: an unseen class scores 0 and votes, as in sklearn
        assert metrics.macro_f1(pred, gold, labels=asked) == pytest.approx(
            sk.f1_score(gold, pred, average="macro", labels=asked, zero_division=0))


# ------------------------------------------------------------------------------------------------ CLI
def _run(capsys, *argv):
    code = main(["score", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path):
    def write(name, lines):
        p = tmp_path / name
        p.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return p
    return write


def test_cli_bleu_chrf_rouge(capsys, files):
    hyp, r1, r2 = files("hyp.txt", HYPS), files("r1.txt", REFS2[0]), files("r2.txt", REFS2[1])
    code, out, _ = _run(capsys, "--metric", "bleu", "--hyp", hyp, "--ref", r1, r2)
    assert code == 0 and out.startswith("BLEU|nrefs:2|") and "tok:13a" in out and out.strip().endswith("= 48.53")
    code, out, _ = _run(capsys, "--metric", "chrf", "--hyp", hyp, "--ref", r1, r2, "--json")
    got = json.loads(out)
    assert code == 0 and round(got["score"], 2) == 59.73 and "nc:6" in got["signature"]
    code, out, _ = _run(capsys, "--metric", "rouge", "--hyp", hyp, "--ref", r1, "--json")
    assert code == 0 and json.loads(out)["rougeL"] == pytest.approx(metrics.rouge(HYPS, REFS2[0])["rougeL"])
    code, out, _ = _run(capsys, "--metric", "rouge", "--hyp", hyp, "--ref", r1)
    assert code == 0 and "ROUGE-L" in out and f"{metrics.rouge(HYPS, REFS2[0])['rouge2']:.4f}" in out
    zh_h, zh_r = files("zh.hyp", ["我喜欢吃苹果。"]), files("zh.ref", ["我喜欢吃香蕉。"])
    code, out, _ = _run(capsys, "--metric", "bleu", "--hyp", zh_h, "--ref", zh_r, "--lang", "zh")
    assert code == 0 and "tok:zh" in out


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_cli_bad_input_is_one_line(capsys, files, tmp_path):
    hyp, short = files("hyp.txt", HYPS), files("short.txt", REFS2[0][:2])
    code, out, err = _run(capsys, "--metric", "bleu", "--hyp", hyp, "--ref", short)
    line = _one_line(err)
    assert code == 2 and out == "" and "has 3 lines" in line and "has 2" in line and "short.txt" in line
    code, _, err = _run(capsys, "--metric", "rouge", "--hyp", tmp_path / "missing.txt", "--ref", short)
    assert code == 2 and "missing.txt does not exist" in _one_line(err)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    code, _, err = _run(capsys, "--metric", "chrf", "--hyp", tmp_path / "latin1.txt", "--ref", short)
    assert code == 2 and "not UTF-8" in _one_line(err)
    (tmp_path / "empty.txt").write_text("")
    code, _, err = _run(capsys, "--metric", "bleu", "--hyp", hyp, "--ref", tmp_path / "empty.txt")
    assert code == 2 and "empty" in _one_line(err)
