"""Zero-shot classification: genre labels, chapter-disjoint splits, macro-F1, early stopping on the source only,
fine-tuning any encoder (the run's Transformer and a stub), collapse warning, bad labelled input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from xling.corpus import Corpus, CorpusConfig, build_corpus
from xling.errors import XlingError
from xling.metrics import macro_f1
from xling.sources import Segment
from xling.tasks.classify.config import ClassifyConfig
from xling.tasks.classify.data import (
    GENRES,
    Examples,
    TaskData,
    bible_genre_task,
    book_genre,
    read_labelled,
    training_sets,
)
from xling.tasks.classify.model import XlingEncoder
from xling.tasks.classify.transfer import NamesOnly, proper_names, run_transfer

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


class BagEncoder(nn.Module):
    """A second encoder kind (interface only): each known word has a fixed vector, unknown words are zero."""

    d_model = 8

    def __init__(self, words: dict[str, int], zero: bool = False):
        super().__init__()
        self.words, self.seen = words, []  # seen: (lang, texts) of every encode_texts call
        self.emb = nn.Embedding(len(words) + 2, self.d_model)
        with torch.no_grad():
            self.emb.weight.copy_(torch.eye(len(words) + 2, self.d_model) * 3)
            self.emb.weight[1:2] = 0.0  # the "unknown word" vector
            if zero:
                self.emb.weight.zero_()

    def encode_texts(self, texts, lang):
        self.seen.append((lang, list(texts)))
        return [[0] + [self.words.get(w, 1) for w in t.split()] for t in texts]

    def forward(self, idx, pad_mask, lang):
        return self.emb(idx)  # (B, T, D)


def _examples(lang, pairs, prefix="k"):
    texts, labels = zip(*pairs, strict=True)
    return Examples(lang, list(texts), np.array(labels), [f"{prefix}{i}" for i in range(len(texts))])


def _toy(langs=("en", "fr"), n=8, invert_valid=(), fillers=None):
    """Two classes told apart by one word ('alpha' vs 'beta'); every language shares the words."""
    def rows(k, filler):
        words = fillers or [f"{filler}{j}" for j in range(3)]
        return [(f"{'alpha' if i % 2 == 0 else 'beta'} {words[i % len(words)]}", i % 2) for i in range(k)]

    sets = {"train": {}, "valid": {}, "test": {}}
    for lg in langs:
        sets["train"][lg] = _examples(lg, rows(n, "t"))
        valid = rows(6, f"v{lg}")
        if lg in invert_valid:  # the same signal, opposite labels: choosing on this split would pick badly
            valid = [(t, 1 - y) for t, y in valid]
        sets["valid"][lg] = _examples(lg, valid)
        sets["test"][lg] = _examples(lg, rows(6, "s"))
    return TaskData("toy", ["a", "b"], sets)


WORDS = {w: i + 2 for i, w in enumerate(["alpha", "beta"])}
FAST = dict(epochs=15, patience=0, batch_size=4, seeds=[0, 1], lr=0.05, dropout=0.0)


# ---------------------------------------------------------------------------- labels and splits

def test_book_genres_hand_checked():
    # Genesis, Deuteronomy | Joshua, Esther | Job, Song | Isaiah, Malachi | Matthew, Acts | Romans, Jude | Revelation
    expect = {1: "Law", 5: "Law", 6: "History", 17: "History", 18: "Wisdom", 19: "Wisdom", 22: "Wisdom",
              23: "Prophets", 27: "Prophets", 39: "Prophets", 40: "Gospels+Acts", 44: "Gospels+Acts",
              45: "Letters", 65: "Letters", 66: "Prophets"}
    assert {b: book_genre(b) for b in expect} == expect
    assert sorted({book_genre(b) for b in range(1, 67)}) == sorted(GENRES)
    for bad in (0, 67):
        with pytest.raises(XlingError, match="outside 1-66"):
            book_genre(bad)


def _bible_corpus(tmp_path, fake_source):
    langs, segs = ["en", "fr", "ru"], []
    for book in (1, 10, 19, 23, 40, 50, 66):
        for c in range(1, 9):
            for v in range(1, 4):
                for lg in langs:
                    segs.append(Segment(lg, f"{book}.{c}.{v}", f"{lg} verse {book} {c} {v}", f"{book}.{c}"))
    fake_source(segs)
    build_corpus(CorpusConfig(langs=langs, valid_fraction=0.2, test_fraction=0.2), tmp_path / "corpus")
    return Corpus(tmp_path / "corpus")


def test_genre_task_labels_and_chapter_disjoint_splits(tmp_path, fake_source):
    corpus = _bible_corpus(tmp_path, fake_source)
    data = bible_genre_task(corpus, max_test=20)
    for by_lang in data.sets.values():
        for ex in by_lang.values():
            assert [data.classes[y] for y in ex.labels] == [book_genre(int(k.split(".")[0])) for k in ex.keys]
    test_keys = data.sets["test"]["en"].keys
    assert len(test_keys) == 20 and all(data.sets["test"][lg].keys == test_keys for lg in ("fr", "ru"))
    test_chapters = {k.rsplit(".", 1)[0] for lg in corpus.langs for k in corpus.keys("test", lg)}
    for mode in ("zero-shot", "translate-train", "multilingual"):
        sets = training_sets(data, mode, "en", max_train=30)
        assert {ex.lang for ex in sets} == ({"en"} if mode == "zero-shot" else {"en", "fr", "ru"})
        for ex in sets:  # no training verse, in any language, comes from a test chapter
            assert not {k.rsplit(".", 1)[0] for k in ex.keys} & test_chapters
            assert len(ex) <= 30
        if mode == "translate-train":  # translations of exactly the source's training verses
            assert all(set(ex.keys) <= set(sets[0].keys) for ex in sets)


def test_non_bible_corpus_is_refused(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "en.txt").write_text("hello\n")
        (tmp_path / split / "en.keys").write_text("doc-1\n")
    (tmp_path / "meta.json").write_text(json.dumps({"langs": ["en"]}))
    with pytest.raises(XlingError, match="not Bible book.chapter.verse"):
        bible_genre_task(Corpus(tmp_path))


# ---------------------------------------------------------------------------- metrics and baselines

def test_macro_f1_hand_computed():
    # class 0: tp 1, 2 predicted, 2 gold -> 0.5; class 1: tp 2, 2 predicted, 3 gold -> 0.8; class 2: 2/3
    assert macro_f1([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0]) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert macro_f1([0, 3], [0, 0]) == pytest.approx((2 / 3 + 0.0) / 2)  # a class only predicted scores 0


def test_names_only_baseline_sees_only_names():
    assert proper_names("Then Jesus went with Peter to Galilee. He saw them; And I said") == \
        ["Jesus", "Peter", "Galilee"]
    nb = NamesOnly(["Then Moses spoke to Aaron.", "and Paul wrote to Timothy", "the land and the law"],
                   np.array([0, 1, 0]), n_classes=2)
    # names decide; a text without a known name (or in another script) falls back to the prior (class 0)
    assert nb.predict(["so Paul went", "and Moses went", "so it was", "и Павел пошел"]).tolist() == [1, 0, 0, 0]


# ---------------------------------------------------------------------------- fine-tuning

@pytest.mark.parametrize("finetune", ["head", "full"])
def test_finetune_learns_a_separable_task_with_any_encoder(finetune):
    enc = BagEncoder(WORDS)
    before = enc.emb.weight.detach().clone()
    res = run_transfer(enc, _toy(("en", "fr", "de")), ClassifyConfig(finetune=finetune, **FAST), mode="zero-shot",
                       sources=["en", "fr"])
    assert [r["name"] for r in res["rows"]] == ["en", "fr"]  # matrix: one row per source, a column per language
    for row in res["rows"]:
        assert list(row["accuracy"]) == ["en", "fr", "de"]
        assert all(a["mean"] == 1.0 and a["seeds"] == [1.0, 1.0] for a in row["accuracy"].values())
        assert all(f["mean"] == 1.0 for f in row["f1"].values())
        assert row["gap_mean"] == 0.0 and not row["collapsed"]
    torch.testing.assert_close(enc.emb.weight, before)  # full fine-tuning restored the caller's encoder


def test_xling_encoder_adds_tag_and_eos_and_learns(tmp_path):
    from xling.model import ModelConfig, Transformer
    from xling.tokenizer import TokenizerConfig, build_tokenizer

    texts = ["alpha beta gamma delta", "альфа бета гамма", "alpha delta", "beta gamma"] * 20
    tok = build_tokenizer(texts, TokenizerConfig(vocab_size=300), ["en", "fr", "ru"])
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=300, n_langs=3)).eval()
    enc = XlingEncoder(model, tok, ["en", "ru"])
    ids = enc.encode_texts(["alpha beta"], "ru")[0]
    assert ids[0] == tok.token_to_id("<ru>") and ids[-1] == 2
    assert ids[1:-1] == tok.encode("alpha beta", add_special_tokens=False).ids
    idx = torch.tensor([ids])
    mask = torch.ones_like(idx, dtype=torch.bool)
    ref = model(idx, causal=False, pad_mask=mask, lang_ids=torch.full_like(idx, 2))  # ru = index 2 (tag 7)
    torch.testing.assert_close(enc(idx, mask, "ru"), ref)
    with pytest.raises(XlingError, match="not one this model knows"):
        enc.encode_texts(["x"], "fr")
    for finetune in ("head", "full"):
        cfg = ClassifyConfig(**FAST, finetune=finetune, encoder_lr=1e-3)
        res = run_transfer(enc, _toy(("en", "ru"), fillers=["gamma", "delta", "gamma delta"]), cfg,
                           mode="translate-train", sources=["en"])
        assert res["rows"][0]["train_langs"] == ["en", "ru"]  # toy keys pair the languages' rows
        assert all(a["mean"] == 1.0 for a in res["rows"][0]["accuracy"].values())


def test_early_stopping_watches_the_source_valid_split_only():
    from xling.tasks.classify.model import Classifier, fit, prepare

    data = _toy(("en", "fr"), invert_valid=("fr",))  # fr valid: same texts' signal, opposite labels
    cfg = ClassifyConfig(epochs=12, patience=0, batch_size=4, seeds=[0], lr=1e-3, dropout=0.0)
    enc = BagEncoder(WORDS)
    res = run_transfer(enc, data, cfg, mode="zero-shot", sources=["en"])
    row = res["rows"][0]
    encoded = [(lg, t) for lg, texts in enc.seen for t in texts]
    assert not [t for lg, t in encoded if lg == "fr" and t in data.sets["valid"]["fr"].texts]  # never looked at
    assert row["valid_accuracy"] == [1.0] and row["accuracy"]["en"]["mean"] == 1.0
    # the same fit, by hand: the kept epoch is the best on en valid, where fr valid would have chosen another
    torch.manual_seed(0)
    clf = Classifier(enc, 2, "mean", 0.0)
    frozen = Classifier(enc, 2)
    train = [prepare(enc, data.sets["train"]["en"], cfg, frozen)]
    out = fit(clf, train, prepare(enc, data.sets["valid"]["en"], cfg, frozen), cfg, seed=0)
    hist = np.array(out["history"])
    assert hist.min() < hist.max()  # learning happened over the epochs
    assert hist[out["best_epoch"] - 1] == hist.max() == 1.0  # kept: an epoch best on en valid
    fr_choice = int(np.argmax(1 - hist))  # fr valid's accuracy is 1 - en's here: it would keep a worse epoch
    assert hist[fr_choice] < hist.max()


def test_one_class_collapse_is_warned(capsys):
    res = run_transfer(BagEncoder(WORDS, zero=True), _toy(("en", "fr")), ClassifyConfig(**FAST),
                       mode="zero-shot", sources=["en"])
    row = res["rows"][0]
    assert len(row["collapsed"]) == 4  # 2 seeds x 2 test languages
    assert row["accuracy"]["en"]["mean"] == 0.5 and row["f1"]["en"]["mean"] == pytest.approx(1 / 3)
    err = capsys.readouterr().err
    assert "warning" in err and "single class" in err


# ---------------------------------------------------------------------------- labelled files

def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_labelled_files_tsv_and_jsonl(tmp_path):
    tr = _write(tmp_path, "train.tsv", "good day\tpos\ten\nbad day\tneg\ten\n")
    va = _write(tmp_path, "dev.jsonl", json.dumps({"text": "bon jour", "label": "pos", "lang": "fr", "id": 7}) + "\n")
    te = _write(tmp_path, "data.tsv", "mauvais\tneg\tfr\ttest\n")
    data = read_labelled([tr, va, te])
    assert data.classes == ["neg", "pos"]
    assert data.sets["train"]["en"].labels.tolist() == [1, 0]
    assert data.sets["valid"]["fr"].keys == ["7"] and data.sets["test"]["fr"].texts == ["mauvais"]


@pytest.mark.parametrize("name, text, match", [
    ("train.tsv", "good\tpos\ten\nbad day\tneg\n", r"train.tsv line 2: expected text<TAB>label<TAB>lang"),
    ("train.jsonl", '{"text": "a", "label": "x", "lang": "en"}\n{"text": "b", "lang": "en"}\n',
     r"train.jsonl line 2: missing label"),
    ("train.jsonl", '{"text": "a", "label": "x", "lang": "en"}\n{not json\n', r"train.jsonl line 2: not valid JSON"),
    ("train.tsv", "a\tx\ten\nb\tx\ten\n", r"1 class\(es\) \(x\)"),
    ("data.tsv", "a\tx\ten\n", r"data.tsv line 1: cannot tell the split"),
    ("train.tsv", "a\tx\tzz\n", r"train.tsv line 1"),
    ("train.tsv", "", r"is empty"),
])
def test_bad_labelled_lines(tmp_path, name, text, match):
    with pytest.raises(XlingError, match=match):
        read_labelled([_write(tmp_path, name, text)])


def test_test_label_unseen_in_training(tmp_path):
    tr = _write(tmp_path, "train.tsv", "a\tx\ten\nb\ty\ten\n")
    te = _write(tmp_path, "test.tsv", "c\tx\tfr\nd\tz\tfr\n")
    with pytest.raises(XlingError, match=r"test.tsv line 2: label 'z' never occurs in the training rows"):
        read_labelled([tr, te])


def test_demo_evaluation_metrics_and_heatmap(tmp_path, fake_source):
    from types import SimpleNamespace

    from xling.evaluate import EvalContext
    from xling.model import ModelConfig, Transformer
    from xling.report import plot
    from xling.tasks.classify.evaluation import eval_transfer
    from xling.tokenizer import TokenizerConfig, build_tokenizer

    corpus = _bible_corpus(tmp_path, fake_source)
    tok = build_tokenizer(corpus.texts("train", "en") + corpus.texts("train", "ru"), TokenizerConfig(vocab_size=300),
                          corpus.langs)
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=300)).eval()
    ctx = EvalContext(run_dir=tmp_path, model=model, shards=SimpleNamespace(langs=corpus.langs), tokenizer=tok,
                      corpus=corpus, step=0)
    out = eval_transfer(ctx)
    m = out["metrics"]
    for lg in corpus.langs:
        assert 0 <= m[f"transfer.accuracy.{lg}"] <= 1 and 0 <= m[f"transfer.f1.{lg}"] <= 1
        assert 0 <= m[f"transfer.baseline.names.{lg}"] <= 1
    gaps = [m["transfer.accuracy.en"] - m[f"transfer.accuracy.{lg}"] for lg in ("fr", "ru")]
    assert m["transfer.gap_mean"] == pytest.approx(np.mean(gaps))
    # the headline's pair: accuracy where no label was seen, beside names-only's there, and the rows behind it
    assert m["transfer.target_accuracy_mean"] == pytest.approx(np.mean([m["transfer.accuracy.fr"],
                                                                        m["transfer.accuracy.ru"]]))
    names = [m[f"transfer.baseline.names.{lg}"] for lg in ("en", "fr", "ru")]
    assert m["transfer.baseline.names_target_mean"] == pytest.approx(np.mean(names[1:]))
    assert m["transfer.baseline.names_gap_mean"] == pytest.approx(names[0] - np.mean(names[1:]))
    assert m["transfer.items"] > 0
    assert 0 < m["transfer.baseline.majority"] < 1
    blocks = out["sections"][0]["blocks"]
    heat = next(b for b in blocks if b["kind"] == "heatmap")
    assert heat["cols"] == corpus.langs and heat["rows"][-2:] == ["names-only", "majority"]
    assert not model.training  # the shared model leaves in eval mode
    plot(heat, tmp_path / "transfer.png")
    assert (tmp_path / "transfer.png").stat().st_size > 1000
