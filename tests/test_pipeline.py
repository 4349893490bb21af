"""The whole chain through the CLI at tiny size: corpus -> tokenizer -> shard -> pretrain -> evaluate -> report."""

import json
import re

import pytest

from xling.cli import main

from .conftest import TINY

TINY_MODEL = ["model.n_layer=2", "model.d_model=32", "model.n_head=2", "model.block_size=64",
              "train.seq_len=32", "train.batch_size=8", "train.max_minutes=0", "train.warmup_steps=5",
              "train.eval_every=0", "train.precision=fp32", "train.lr=3e-3",
              # the translation evaluation's fine-tunes, kept to a few steps (saved to the run's config.toml)
              "translate.max_minutes=0", "translate.max_steps=20", "translate.test_sentences=8",
              "translate.max_new_tokens=12", "translate.precision=fp32", "translate.compile=false"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny aligned corpus (3 languages, one Cyrillic) trained with CLM + contrastive for 40 steps, from the
    demo's cross-language LSI embeddings."""
    tmp = tmp_path_factory.mktemp("pipeline")
    lines = {lg: [f"{v} {i}" for i in range(40) for v in verses] for lg, verses in TINY.items()}
    for lg in TINY:  # jsonl with ids, so the three languages align
        with open(tmp / f"{lg}.jsonl", "w", encoding="utf-8") as f:
            for i, text in enumerate(lines[lg]):
                f.write(json.dumps({"id": f"s{i}", "lang": lg, "text": text}, ensure_ascii=False) + "\n")
    rd = tmp / "run"
    common = ["--run", str(rd)]
    assert main(["corpus", "--source", "jsonl", "--paths", *[str(tmp / f"{lg}.jsonl") for lg in TINY],
                 "--langs", "en,fr,ru", *common, "corpus.valid_fraction=0.15", "corpus.test_fraction=0.15"]) == 0
    assert main(["tokenizer", *common, "tokenizer.vocab_size=400"]) == 0
    assert main(["shard", *common]) == 0
    assert main(["pretrain", *common, *TINY_MODEL, "train.max_steps=40", "train.embed_init=lsi",
                 'train.objectives={clm = 1.0, contrastive = 1.0}']) == 0
    assert main(["evaluate", "--run", str(rd)]) == 0
    assert main(["report", "--run", str(rd)]) == 0
    return rd


def test_metrics_have_every_documented_key(trained_run):
    m = json.loads((trained_run / "report" / "metrics.json").read_text())
    langs = ["en", "fr", "ru"]
    assert m["languages"] == langs
    for lg in langs:
        for key in (f"tokenizer.fertility.{lg}", f"tokenizer.parity.{lg}", f"bpc.{lg}",
                    f"vectors.lang_identifiable.{lg}"):
            assert key in m, key
        assert 0 < m[f"bpc.{lg}"] < 12  # bits per character of a barely trained model: finite, below 8+ bits/byte
        assert 0 <= m[f"vectors.lang_identifiable.{lg}"] <= 1
    assert not any(k.startswith("langid.") for k in m)  # renamed: it measures the vectors, it identifies nothing
    assert m["vectors.lang_identifiable_chance"] == pytest.approx(1 / 3)
    assert m["vectors.lang_identifiable_mean"] == pytest.approx(
        sum(m[f"vectors.lang_identifiable.{lg}"] for lg in langs) / 3)
    assert m["generation.language_match"] == pytest.approx(
        sum(m[f"generation.language_match.{lg}"] for lg in langs) / len(langs))
    for name in ("langid", "langid_unigram", "langid_human", "script_purity", "script_purity_unigram",
                 "script_purity_human", "lexical", "lexical_unigram", "lexical_human", "distinct2", "repetition"):
        for lg in langs:
            assert 0 <= m[f"generation.{name}.{lg}"] <= 1, (name, lg)
    for name in ("langid", "script_purity", "lexical", "lexical_unigram", "lexical_human"):
        assert m[f"generation.{name}_mean"] == pytest.approx(sum(m[f"generation.{name}.{lg}"] for lg in langs) / 3)
    assert m["generation.prompts"] >= 10
    for lg in langs:  # the references bracket the scale: held-out verses are words, a unigram sample mostly not
        assert m[f"generation.lexical_human.{lg}"] > 0.9 and m[f"generation.script_purity_human.{lg}"] == 1.0
        assert m[f"generation.lexical_unigram.{lg}"] < m[f"generation.lexical_human.{lg}"] - 0.2
    assert m["tokenizer.parity.en"] == 1.0
    for lg in ("fr", "ru"):
        assert 0 <= m[f"retrieval.top1.en-{lg}"] <= 1 and 0 <= m[f"retrieval.top1.{lg}-en"] <= 1
    assert m["retrieval.top1_mean"] == pytest.approx(
        sum(m[f"retrieval.top1.{a}-{b}"] for a, b in [("en", "fr"), ("fr", "en"), ("en", "ru"), ("ru", "en")]) / 4)
    assert m["pretrain.steps"] == 40 and m["pretrain.tokens"] > 0 and m["pretrain.tokens_per_second"] > 0


def test_training_loss_falls(trained_run):
    rows = [json.loads(x) for x in (trained_run / "train" / "metrics.jsonl").read_text().splitlines()]
    clm = [r["loss/clm"] for r in rows if r.get("loss/clm") is not None]
    assert len(clm) >= 2 and clm[-1] < clm[0] - 0.5


def test_report_files(trained_run):
    out = trained_run / "report"
    page = (out / "report.html").read_text()
    for title in ("Tokenizer fairness", "Pretraining", "Bits per character", "Cross-lingual retrieval",
                  "Language identity left in sentence vectors", "Generation samples", "Headline numbers"):
        assert title in page
    pngs = {p.name.split("_", 1)[1] for p in out.glob("*.png")}
    assert {"parity.png", "train_loss.png", "bpc.png", "retrieval.png"} <= pngs  # (task plugins add theirs)
    linked = re.findall(r"\]\(([^)]+\.png)\)", (out / "report.md").read_text())
    assert len(linked) == len(pngs) and all((out / src).is_file() for src in linked)
    assert "checkpoint step 40" in (out / "report.md").read_text()


def test_demo_stages_skip_when_up_to_date(trained_run, capsys):
    """A stage re-run with the same config is skipped; more training budget resumes from the checkpoint."""
    assert main(["shard", "--run", str(trained_run)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["pretrain", "--run", str(trained_run), *TINY_MODEL, "train.max_steps=44",
                 'train.objectives={clm = 1.0, contrastive = 1.0}']) == 0
    manifest = json.loads((trained_run / "manifest.json").read_text())
    assert manifest["stages"]["pretrain"]["summary"]["steps"] == 44


def test_an_interrupted_retrain_resumes(trained_run, tmp_path, monkeypatch):
    """`--overwrite` with a new config, killed after its checkpoints but before the manifest is updated: the
    next call resumes those checkpoints instead of judging them by the old run's record."""
    import shutil

    from xling.stages import RunDir

    rd = tmp_path / "run"
    shutil.copytree(trained_run, rd)
    new = [*TINY_MODEL, 'train.objectives={clm = 1.0}']

    def killed(*_args, **_kw):
        raise RuntimeError("killed")

    monkeypatch.setattr(RunDir, "record", killed)
    with pytest.raises(RuntimeError, match="killed"):
        main(["pretrain", "--run", str(rd), *new, "train.max_steps=4", "--overwrite"])
    monkeypatch.undo()
    assert "pretrain" not in json.loads((rd / "manifest.json").read_text())["stages"]
    assert main(["pretrain", "--run", str(rd), *new, "train.max_steps=6"]) == 0
    summary = json.loads((rd / "manifest.json").read_text())["stages"]["pretrain"]["summary"]
    assert summary["steps"] == 6


def test_a_bad_train_pairs_entry_leaves_the_run_as_it_was(trained_run, tmp_path, capsys):
    """`--overwrite` with a pair the shards lack: one error line, exit 2, the checkpoints untouched."""
    import shutil

    rd = tmp_path / "run"
    shutil.copytree(trained_run, rd)
    before = sorted(p.name for p in (rd / "checkpoints").iterdir())
    assert main(["pretrain", "--run", str(rd), *TINY_MODEL, 'train.pairs=["en-xx"]', "--overwrite"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "train.pairs: 'en-xx' is not two of the shards' languages" in err[0]
    assert sorted(p.name for p in (rd / "checkpoints").iterdir()) == before


def test_generate_command_equals_the_python_api(trained_run, capsys):
    from xling.checkpoint import load_run
    from xling.generate import GenerateConfig, generate

    argv = ["generate", "--run", str(trained_run), "--lang", "ru", "В начале",
            "generate.temperature=0", "generate.max_new_tokens=12"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    model, tok = load_run(trained_run)
    expected = generate(model, tok, ["В начале"], lang="ru", cfg=GenerateConfig(temperature=0, max_new_tokens=12))
    assert out == "В начале" + expected[0] + "\n"
    assert main(argv[:3] + ["--lang", "xx", "hi"]) == 2
    assert "no tag <xx>" in capsys.readouterr().err


def test_generation_metrics_without_wordfreq_are_na_with_the_install_command(trained_run, tmp_path, monkeypatch):
    """A missing optional package: its column reads n/a with the reason, its keys are absent, the rest is written."""
    import shutil
    import sys

    rd = tmp_path / "run"
    shutil.copytree(trained_run, rd)
    monkeypatch.setitem(sys.modules, "wordfreq", None)  # `import wordfreq` raises ImportError
    assert main(["evaluate", "--run", str(rd), "--only", "generation"]) == 0
    result = json.loads((rd / "eval" / "generation.json").read_text())
    keys = result["metrics"]
    assert not [k for k in keys if k.startswith("generation.lexical")]
    assert {"generation.langid.ru", "generation.script_purity.ru", "generation.distinct2.ru"} <= set(keys)
    blocks = result["sections"][0]["blocks"]
    table = next(b for b in blocks if b["kind"] == "table")
    col = table["header"].index("lexical m/u/h")
    assert all(row[col] == "n/a / n/a / n/a" for row in table["rows"])
    assert any("wordfreq is not installed (pip install wordfreq)" in b.get("text", "") for b in blocks)
    assert main(["report", "--run", str(rd)]) == 0
    assert "pip install wordfreq" in (rd / "report" / "report.md").read_text()


def test_generate_command_with_the_language_vocabulary(trained_run, tmp_path, capsys):
    """generate.lang_vocab: `xling generate` reads the run's train shards once and samples only tokens seen in the
    language (the same text as the Python API given that vocabulary); without shards it says so and goes on."""
    import dataclasses
    import shutil

    import numpy as np

    from xling.checkpoint import load_run
    from xling.generate import GenerateConfig, generate
    from xling.langvocab import LangVocab
    from xling.textmetrics import script_purity

    vocab = LangVocab.from_run(trained_run)
    model, tok = load_run(trained_run)
    pieces = {lg: [tok.id_to_token(int(i)) for i in np.flatnonzero(vocab.allowed[lg])] for lg in ("en", "ru")}
    assert all(script_purity(p, "ru") in (1.0, None) for p in pieces["ru"] if not p.startswith("<0x")), pieces["ru"]
    for lg in ("en", "ru"):  # each language has its own letter-bearing pieces (a 400-token vocabulary: dozens)
        assert sum(script_purity(p, lg) == 1.0 for p in pieces[lg]) > 20
    cfg = GenerateConfig(temperature=2, top_p=1, max_new_tokens=30, lang_vocab=True)
    argv = ["generate", "--run", str(trained_run), "--lang", "ru", "Свет", "generate.lang_vocab=true",
            "generate.temperature=2", "generate.top_p=1", "generate.max_new_tokens=30"]
    for seed in range(3):
        assert main([*argv, f"generate.seed={seed}"]) == 0
        out = capsys.readouterr().out
        want = generate(model, tok, ["Свет"], "ru", dataclasses.replace(cfg, seed=seed), vocab)[0]
        assert out == "Свет" + want + "\n"
        assert script_purity(out, "ru") == 1.0
    bare = tmp_path / "bare"
    shutil.copytree(trained_run, bare, ignore=shutil.ignore_patterns("shards"))
    assert LangVocab.from_run(bare) is None
    assert main([*argv[:2], str(bare), *argv[3:]]) == 0
    assert "no shards/ beside" in capsys.readouterr().err


def test_a_run_without_aligned_text_evaluates_and_reports(tmp_path):
    """Plain text per language (no ids, so no pairs): the evaluations that need pairs are skipped, the
    tokenizer's parity is n/a rather than a crash, and the report is written."""
    paths = []
    for lg, verses in TINY.items():
        paths.append(tmp_path / f"{lg}.txt")
        paths[-1].write_text("".join(f"{v} {i}\n" for i in range(30) for v in verses), encoding="utf-8")
    common = ["--run", str(tmp_path / "run")]
    assert main(["corpus", "--source", "text", "--paths", *map(str, paths), "--langs", "en,fr,ru", *common,
                 "corpus.valid_fraction=0.15", "corpus.test_fraction=0.15"]) == 0
    assert main(["tokenizer", *common, "tokenizer.vocab_size=300"]) == 0
    assert main(["shard", *common]) == 0
    assert main(["pretrain", *common, *TINY_MODEL, "train.max_steps=4"]) == 0
    assert main(["evaluate", "--run", str(tmp_path / "run"), "--only", "tokenizer,bpc"]) == 0
    assert main(["report", "--run", str(tmp_path / "run")]) == 0
    metrics = json.loads((tmp_path / "run" / "report" / "metrics.json").read_text())
    assert {f"tokenizer.fertility.{lg}" for lg in TINY} | {f"bpc.{lg}" for lg in TINY} <= set(metrics)
    assert not {"tokenizer.parity.fr", "tokenizer.parity.ru"} & set(metrics)  # no aligned verses to compare
