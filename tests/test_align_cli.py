"""`xling align` / `xling vectors`, the [align] and [vectors] config sections, and the demo's align evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xling.cli import main
from xling.tasks.align.vectors import Vectors, read_vec, write_vec

from .conftest import tiny_segments


def rotation(d: int, seed: int) -> np.ndarray:
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def rotated(tmp_path):
    """en.vec, fr.vec (= en rotated + noise, words t0..), a dictionary s_i -> t_i, and the rotation."""
    n, d = 300, 8
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d))
    r = rotation(d, 1)
    write_vec(tmp_path / "en.vec", Vectors([f"s{i}" for i in range(n)], x))
    write_vec(tmp_path / "fr.vec", Vectors([f"t{i}" for i in range(n)], x @ r.T + 0.01 * rng.normal(size=x.shape)))
    write_vec(tmp_path / "de.vec", Vectors([f"u{i}" for i in range(n)], rng.normal(size=(n, d + 1))))
    (tmp_path / "dup.vec").write_text("3 8\n" + "".join(f"{w} {' '.join(['0.5'] * d)}\n" for w in "aba"),
                                      encoding="utf-8")
    (tmp_path / "en-fr.txt").write_text("".join(f"s{i} t{i}\n" for i in range(n)), encoding="utf-8")
    (tmp_path / "none.txt").write_text("house maison\nlight lumière\n", encoding="utf-8")
    return tmp_path, r


FAST = ["align.normalize=", "align.train_ranks=[0, 150]", "align.test_ranks=[150, 300]", "align.refine_iters=1",
        "align.refine_max_rank=0", "align.select_max_rank=0", "align.select_pairs=0"]


def test_align_two_vec_files(rotated, capsys):
    d, r = rotated
    code, out, err = run(capsys, "align", "--src-vec", d / "en.vec", "--tgt-vec", d / "fr.vec", "--src", "en",
                         "--tgt", "fr", "--method", "procrustes,procrustes-refine", "--dict", d / "en-fr.txt",
                         "--out", d / "out", *FAST)
    assert code == 0, err
    np.testing.assert_allclose(np.load(d / "out" / "W-procrustes.npy", allow_pickle=False), r, atol=1e-2)
    res = json.loads((d / "out" / "results.json").read_text())
    assert set(res["methods"]) == {"procrustes", "procrustes-refine"}
    assert res["metrics"]["align.p_at_1.en-fr.procrustes.csls"] == 1.0
    assert res["dictionary"]["train_words"] == 150 and res["dictionary"]["test_words"] == 150
    assert "CSLS P@1" in (d / "out" / "table.md").read_text() and "CSLS P@1" in out
    assert (d / "out" / "p_at_1_by_band.png").read_bytes()[:4] == b"\x89PNG"
    mapped = read_vec(d / "out" / "vectors" / "en-procrustes.vec")  # align.write_vectors defaults to true
    assert mapped.words[:2] == ["s0", "s1"]


@pytest.mark.parametrize("argv, msg", [
    (["--src-vec", "{d}/missing.vec", "--tgt-vec", "{d}/fr.vec", "--src", "en", "--tgt", "fr"], "does not exist"),
    (["--src-vec", "{d}/en.vec", "--tgt-vec", "{d}/fr.vec", "--src", "xx", "--tgt", "fr"],
     "unknown language code 'xx'"),
    (["--src-vec", "{d}/en.vec", "--tgt-vec", "{d}/de.vec", "--src", "en", "--tgt", "de"],
     "8-dimensional vectors but .* 9-dimensional"),
    (["--src-vec", "{d}/en.vec", "--src", "en", "--tgt", "fr"], "give both --src-vec and --tgt-vec"),
    (["--src-vec", "{d}/en.vec", "--tgt-vec", "{d}/fr.vec", "--src", "en", "--tgt", "fr", "--method", "magic"],
     "unknown alignment method 'magic'"),
    (["--src-vec", "{d}/en.vec", "--tgt-vec", "{d}/fr.vec", "--src", "en", "--tgt", "fr", "--method",
      "procrustes", "--dict", "{d}/none.txt"], "no pair of the en-fr dictionary .* has both words"),
    (["--src-vec", "{d}/en.vec", "--tgt-vec", "{d}/fr.vec", "--src", "en", "--tgt", "fr", "--method",
      "procrustes"], "no alignment method could run"),
    (["--src-vec", "{d}/en.vec", "--tgt-vec", "{d}/fr.vec", "--tgt", "fr"], "give the languages"),
    (["--src-vec", "{d}/en.vec", "--tgt-vec", "{d}/dup.vec", "--src", "en", "--tgt", "fr"],
     "dup.vec line 4: the word 'a' is listed again \\(first on line 2\\)"),
])
def test_align_bad_input_is_one_line_exit_2(rotated, capsys, argv, msg):
    d, _ = rotated
    code, _, err = run(capsys, "align", *[a.format(d=d) for a in argv], "--out", d / "out", *FAST)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xling align: error: ")
    assert __import__("re").search(msg, lines[0]), lines[0]
    assert not (d / "out" / "results.json").exists()


def test_align_and_vectors_config_sections():
    from xling.errors import XlingError
    from xling.registry import load_config

    cfg = load_config(None, ["align.refine_iters=3", "align.methods=procrustes,identical", "vectors.dim=50"])
    assert cfg.align.refine_iters == 3 and cfg.align.methods == ["procrustes", "identical"]
    assert cfg.vectors.dim == 50 and cfg.vectors.method == "skipgram"
    with pytest.raises(XlingError, match="unknown alignment method"):
        load_config(None, ["align.methods=[foo]"])
    with pytest.raises(XlingError, match="overlap"):
        load_config(None, ["align.train_ranks=[0, 5000]", "align.test_ranks=[100, 6000]"])
    with pytest.raises(XlingError, match="give both train_ranks and test_ranks or neither"):
        load_config(None, ["align.test_ranks=[0, 1000]"])  # the fitted train band could overlap it
    cfg = load_config(None, ["align.train_ranks=[1000, 5000]", "align.test_ranks=[0, 1000]"])
    assert cfg.align.train_ranks == [1000, 5000] and cfg.align.test_ranks == [0, 1000]  # explicit bands kept


# ---------------------------------------------------------------------------- run mode and vectors

@pytest.fixture
def tiny_run(tmp_path, fake_source):
    pytest.importorskip("gensim")
    from xling.corpus import CorpusConfig, build_corpus

    fake_source(tiny_segments(20))
    build_corpus(CorpusConfig(langs=["en", "fr", "ru"], valid_fraction=0.1, test_fraction=0.1),
                 tmp_path / "run" / "corpus")
    (tmp_path / "en-fr.txt").write_text("light lumière\nword parole\ngrace grâce\nthe la\n", encoding="utf-8")
    return tmp_path


VEC = ["vectors.dim=8", "vectors.min_count=1", "vectors.epochs=1"]


def test_vectors_command_trains_and_caches(tiny_run, capsys):
    rd = tiny_run / "run"
    code, out, err = run(capsys, "vectors", "--run", rd, "--langs", "en,ru", *VEC)
    assert code == 0, err
    en = read_vec(rd / "align" / "vectors" / "en.vec")
    assert en.dim == 8 and en.words[0] == "the" and "light" in en.words
    assert (rd / "align" / "vectors" / "ru.vec").exists() and not (rd / "align" / "vectors" / "fr.vec").exists()
    mtime = (rd / "align" / "vectors" / "en.vec").stat().st_mtime_ns
    code, out, _ = run(capsys, "vectors", "--run", rd, "--langs", "en", *VEC)
    assert code == 0 and "up to date" in out
    assert (rd / "align" / "vectors" / "en.vec").stat().st_mtime_ns == mtime
    code, out, _ = run(capsys, "vectors", "--run", rd, "--langs", "en", "vectors.dim=6", "vectors.min_count=1")
    assert code == 0 and "trained" in out and read_vec(rd / "align" / "vectors" / "en.vec").dim == 6
    code, _, err = run(capsys, "vectors", "--run", rd, "--langs", "en,de")
    assert code == 2 and "'de' is not in the corpus" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "vectors", "--run", tiny_run / "nothing")
    assert code == 2 and "no corpus" in err


def test_align_run_mode(tiny_run, capsys):
    rd = tiny_run / "run"
    code, out, err = run(capsys, "align", "--run", rd, "--src", "en", "--tgt", "fr,ru", "--dict",
                         str(tiny_run / "{src}-{tgt}.txt"), *VEC, "align.methods=procrustes,identical",
                         "align.train_ranks=[0, 2]", "align.test_ranks=[2, 100]", "align.refine_iters=1")
    assert code == 0, err
    metrics = json.loads((rd / "align" / "metrics.json").read_text())
    assert "align.p_at_1.en-fr.procrustes.csls" in metrics  # en-fr had a dictionary
    assert not any(k.startswith("align.p_at_1.en-ru") for k in metrics)  # en-ru: none, unsupervised only
    assert (rd / "align" / "en-ru" / "W-identical.npy").exists()  # (shared digits seed en-ru)
    assert read_vec(rd / "align" / "vectors" / "fr.vec").dim == 8
    code, _, err = run(capsys, "align", "--run", rd, "--src", "en", "--tgt", "de", *VEC)
    assert code == 2 and "'de' is not in the corpus" in err
    code, _, err = run(capsys, "align", "--run", rd, "--src", "en", "--tgt", "fr", "--vectors", tiny_run / "none")
    assert code == 2 and "does not exist" in err


# ---------------------------------------------------------------------------- the demo evaluation

def test_demo_evaluation_static_and_model_vectors(tiny_run, monkeypatch):
    torch = pytest.importorskip("torch")
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from xling.corpus import Corpus
    from xling.model import ModelConfig, Transformer
    from xling.registry import EVALUATIONS
    from xling.report import plot
    from xling.tasks.align.config import AlignConfig
    from xling.tasks.align.evaluation import eval_align, evaluate_alignment
    from xling.tasks.align.vectors import VectorsConfig

    assert EVALUATIONS["align"] == (90, eval_align)
    corpus = Corpus(tiny_run / "run" / "corpus")
    texts = [t for lg in corpus.langs for t in corpus.texts("train", lg)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<s>", "</s>",
                                                                                      "<unk>", "<mask>"]))
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=tok.get_vocab_size(), n_layer=2, d_model=32, n_head=2, block_size=32))
    cfg = AlignConfig(methods=["procrustes", "identical"], train_ranks=[0, 3], test_ranks=[3, 100],
                      refine_iters=1, refine_max_rank=0, select_max_rank=0, select_pairs=0, write_vectors=False)
    res = evaluate_alignment(tiny_run / "run", corpus, model, tok, targets=("fr", "ru", "de"),
                             dictionary=str(tiny_run / "{src}-{tgt}.txt"),
                             vectors_cfg=VectorsConfig(dim=8, min_count=1, epochs=1), cfg=cfg, min_test_words=1,
                             log=lambda s: None)
    m = res["metrics"]
    assert {"align.p_at_1.en-fr", "align.p_at_5.en-fr", "align.p_at_10.en-fr"} <= set(m)
    assert 0.0 <= m["align.p_at_1.en-fr"] <= m["align.p_at_5.en-fr"] <= m["align.p_at_10.en-fr"] <= 1.0
    assert m["align.p_at_1.en-fr"] == m["align.p_at_1.en-fr.procrustes.csls"]
    assert "align.p_at_1.en-fr.model.identity" in m and "align.p_at_1.en-fr.model.procrustes" in m
    assert not any("en-ru" in k or "en-de" in k for k in m)  # en-ru: no dictionary file; de: not in the corpus
    blocks = res["sections"][0]["blocks"]
    # en-ru: no dictionary file, and no CLDR fallback (it leaves a handful of test words): skipped, said why
    assert "en-ru: skipped: no dictionary for en-ru" in blocks[0]["text"]
    assert list(res["skipped_parts"]) == ["en-ru"] and "skipped" not in res
    table = next(b for b in blocks if b["kind"] == "table")
    assert {(r[0], r[1], r[2]) for r in table["rows"]} >= {("en-fr", "static", "procrustes"),
                                                           ("en-fr", "model input", "identity")}
    for b in blocks:  # the report can draw every plot
        if b["kind"] == "lines":
            plot(b, tiny_run / "bands.png")
            assert (tiny_run / "bands.png").read_bytes()[:4] == b"\x89PNG"
    assert (tiny_run / "run" / "align" / "demo" / "vectors" / "en.json").exists()  # cached for the next run


def test_demo_evaluation_skips_a_pair_no_method_can_align(tiny_run):
    """A dictionary with no train-rank words and only supervised methods: en-ru cannot be aligned. The demo
    evaluation says so in the report and still scores en-fr (it once ended the whole demo)."""
    from xling.corpus import Corpus
    from xling.tasks.align.config import AlignConfig
    from xling.tasks.align.evaluation import evaluate_alignment
    from xling.tasks.align.vectors import VectorsConfig

    (tiny_run / "en-ru.txt").write_text("light свет\ngrace благодать\n", encoding="utf-8")
    cfg = AlignConfig(methods=["procrustes"], train_ranks=[0, 3], test_ranks=[3, 100], refine_iters=1,
                      refine_max_rank=0, select_max_rank=0, select_pairs=0, write_vectors=False)
    res = evaluate_alignment(tiny_run / "run", Corpus(tiny_run / "run" / "corpus"), targets=("fr", "ru"),
                             dictionary=str(tiny_run / "{src}-{tgt}.txt"),
                             vectors_cfg=VectorsConfig(dim=8, min_count=1, epochs=1), cfg=cfg, min_test_words=1,
                             log=lambda s: None)
    assert "align.p_at_1.en-fr.procrustes.csls" in res["metrics"]
    assert not any("en-ru" in k for k in res["metrics"])
    text = res["sections"][0]["blocks"][0]["text"]
    assert "en-ru: skipped: no alignment (no alignment method could run for en-ru" in text
    assert res["skipped_parts"]["en-ru"].startswith("no alignment")


def test_demo_evaluation_without_freedict_is_skipped_before_any_training(tiny_run, monkeypatch):
    """A fresh machine has no FreeDict: no number (it once reported P@1 0.000 from 5-7 CLDR words), the package to
    install instead, and no vectors trained for nothing."""
    from xling.corpus import Corpus
    from xling.tasks.align import dictionaries
    from xling.tasks.align.evaluation import evaluate_alignment

    real = dictionaries.freedict_pairs
    monkeypatch.setattr(dictionaries, "freedict_pairs",
                        lambda src, tgt, **kw: real(src, tgt, root=tiny_run / "no-dictd", **kw))
    res = evaluate_alignment(tiny_run / "run", Corpus(tiny_run / "run" / "corpus"), targets=("fr", "ru"),
                             log=lambda s: None)
    assert res["metrics"] == {}
    assert res["skipped"] == ("no dictionary for en-fr, en-ru; `apt-get install dict-freedict-eng-fra "
                              "dict-freedict-eng-rus`")
    assert "Skipped: no dictionary for en-fr, en-ru" in res["sections"][0]["blocks"][0]["text"]
    assert not (tiny_run / "run" / "align" / "demo" / "vectors").exists()


def test_demo_evaluation_skips_a_test_set_under_100_words(tiny_run):
    from xling.corpus import Corpus
    from xling.tasks.align.config import AlignConfig
    from xling.tasks.align.evaluation import evaluate_alignment
    from xling.tasks.align.vectors import VectorsConfig

    cfg = AlignConfig(methods=["procrustes", "identical"], refine_iters=1, refine_max_rank=0, select_max_rank=0,
                      select_pairs=0, write_vectors=False)  # bands fitted to the tiny vocabulary
    res = evaluate_alignment(tiny_run / "run", Corpus(tiny_run / "run" / "corpus"), targets=("fr",),
                             dictionary=str(tiny_run / "{src}-{tgt}.txt"),
                             vectors_cfg=VectorsConfig(dim=8, min_count=1, epochs=1), cfg=cfg, log=lambda s: None)
    assert res["metrics"] == {}  # 4 dictionary pairs: a P@1 of them is no measurement
    assert "test words in source ranks [0, " in res["skipped"] and "fewer than 100: not a measurement" in res["skipped"]
