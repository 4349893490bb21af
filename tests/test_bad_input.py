"""Bad input to every subcommand, as one table (issue 21): each case must end with exit status 2 and exactly one
line on stderr (no traceback) that names the true cause, and must leave no new file or directory behind.

The commands run in-process (`xling.cli.main`) from inside one module-wide folder that holds a tiny trained
run and its damaged copies, so every path a case names, relative ones included, is inside the snapshot taken
before and after the case. Only the cases that need bytes on standard input run as a real process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xling.cli import main

from .conftest import TINY

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)

GPT2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 32, "n_layer": 1, "n_head": 2,
        "n_positions": 32}
TINY_MODEL = ["model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.block_size=32", "train.seq_len=16",
              "train.batch_size=4", "train.max_minutes=0", "train.max_steps=2", "train.warmup_steps=1",
              "train.eval_every=0", "train.eval_batches=1", "train.precision=fp32", "train.ckpt_every=1"]


def _build(root: Path) -> None:
    """run/: corpus (3 aligned languages) -> tokenizer -> shards -> 2 training steps; damaged copies of it;
    input files of every kind of wrong."""
    for lg, verses in TINY.items():
        with open(root / f"{lg}.jsonl", "w", encoding="utf-8") as f:
            for i in range(12):
                for v, text in enumerate(verses):
                    f.write(json.dumps({"id": f"s{i}.{v}", "lang": lg, "text": f"{text} {i}"}, ensure_ascii=False)
                            + "\n")
    run = ["--run", str(root / "run")]
    assert main(["corpus", "--source", "jsonl", "--paths", *[str(root / f"{lg}.jsonl") for lg in TINY], *run,
                 "corpus.valid_fraction=0.2", "corpus.test_fraction=0.2"]) == 0
    assert main(["tokenizer", *run, "tokenizer.vocab_size=300"]) == 0
    assert main(["shard", *run]) == 0
    assert main(["pretrain", *run, *TINY_MODEL]) == 0
    for name in ("badtoml", "badlatest", "misslatest", "truncated", "stale", "nockpt", "pickled"):
        shutil.copytree(root / "run", root / name)
    (root / "badtoml" / "config.toml").write_text("corpus = [toml", encoding="utf-8")
    (root / "badlatest" / "checkpoints" / "latest").write_bytes(b"\xff\xfe\x00")
    (root / "misslatest" / "checkpoints" / "latest").write_text("step_00000099\n")
    weights = root / "truncated" / "checkpoints" / "step_00000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    assert main(["corpus", "--run", str(root / "stale"), "--overwrite", "corpus.alpha=0.5"]) == 0
    shutil.rmtree(root / "nockpt" / "checkpoints")
    # input files
    (root / "in.txt").write_text("In the beginning was the word.\nThe light shines.\n", encoding="utf-8")
    (root / "fr.txt").write_text("Au commencement était la parole.\nLa lumière luit.\n", encoding="utf-8")
    (root / "three.txt").write_text("a\nb\nc\n", encoding="utf-8")
    (root / "empty.txt").write_text("\n\n", encoding="utf-8")
    (root / "latin1.txt").write_bytes("déjà vu\n".encode("latin-1"))
    (root / "utf16.txt").write_bytes("hello world\n".encode("utf-16"))
    (root / "afile").write_text("not a directory\n", encoding="utf-8")
    (root / "adir").mkdir()
    for d, files in {"text_utf16": {"en.txt": "hello\n".encode("utf-16")},
                     "text_empty": {"en.txt": b"\n"},
                     "text_latin1": {"en.txt": b"ok\n", "fr.txt": "une ligne\nd\u00e9j\u00e0 vu\n".encode("latin-1")},
                     "text_long": {"en.txt": b"a" * 3_000_000 + b"\n", "fr.txt": b"bonjour\n"},
                     "text_xx": {"xx.txt": b"hello\n"}}.items():
        (root / d).mkdir()
        for name, data in files.items():
            (root / d / name).write_bytes(data)
    (root / "one_col.tsv").write_text("only one column\n", encoding="utf-8")
    (root / "cls").mkdir()
    (root / "cls" / "train.tsv").write_text("good\tpos\ten\nfine\tpos\tfr\n", encoding="utf-8")
    (root / "cls" / "test.tsv").write_text("bad\tneg\ten\n", encoding="utf-8")
    (root / "labels.tsv").write_text("good\tpos\ten\n", encoding="utf-8")
    (root / "a.vec").write_text("2 3\nhello 1 2 3\nworld 4 5 6\n", encoding="utf-8")
    (root / "bad.vec").write_text("2 3\nhello 1 2\n", encoding="utf-8")
    (root / "bad.toml").write_text("[model\n", encoding="utf-8")
    vocab = json.loads((root / "run" / "shards" / "meta.json").read_text(encoding="utf-8"))["vocab_size"]
    tokenizer = (root / "run" / "tokenizer" / "tokenizer.json").read_text(encoding="utf-8")
    for name, files in {"hf_bert": {"config.json": '{"model_type": "bert", "architectures": ["BertModel"]}',
                                    "model.safetensors": ""},
                        "hf_bin": {"config.json": '{"model_type": "bert"}', "pytorch_model.bin": "not a pickle"},
                        "hf_gpt2_bin": {"config.json": json.dumps({**GPT2, "vocab_size": vocab}),
                                        "pytorch_model.bin": "not a pickle", "tokenizer.json": tokenizer},
                        "hf_noconfig": {"model.safetensors": ""},
                        "hf_badjson": {"config.json": "{not json", "model.safetensors": ""}}.items():
        (root / name).mkdir()
        for f, text in files.items():
            (root / name / f).write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad_input")
    _build(root)
    return root


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _one_line(err: str) -> str:
    """The only stderr line, once a progress bar's carriage-return fragments are dropped."""
    lines = [ln.rsplit("\r", 1)[-1] for ln in err.splitlines()]
    lines = [ln for ln in lines if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {err!r}"
    assert "Traceback" not in err
    return lines[0]


RUN = ["--run", "run"]
EMBED = ["embed", "--run", "run", "--lang", "en", "--input", "in.txt"]
RETRIEVE = ["retrieve", "--run", "run", "--queries", "in.txt", "--docs", "fr.txt", "--src", "en", "--tgt", "fr"]
TRANSLATE = ["translate", "--run", "run", "--src", "en", "--tgt", "fr"]
MINE = ["mine", "in.txt", "fr.txt", "--run", "run", "--src", "en", "--tgt", "fr"]
SCORE = ["score", "--metric", "bleu"]
TEXT = ["corpus", "--source", "text", "--paths"]

# (id, argv, a piece of the one error line that names the cause)
CASES = [
    # usage errors: one line, the command's --help named
    ("no-such-command", ["frobnicate"], "invalid choice: 'frobnicate'"),
    ("embed-missing-options", ["embed", "--lang", "en"], "required: --input, --out"),
    ("score-bad-metric", ["score", "--metric", "meteor", "--hyp", "in.txt", "--ref", "in.txt"], "invalid choice"),
    ("translate-beams-not-int", [*TRANSLATE, "--beams", "many"], "invalid int value"),
    # corpus
    ("corpus-missing-input", [*TEXT, "missing", "--run", "new"], "does not exist"),
    ("corpus-empty-input", [*TEXT, "text_empty", "--run", "new"], "is empty"),
    ("corpus-utf16-input", [*TEXT, "text_utf16", "--run", "new"],
     "UTF-16 LE text (it starts with a byte-order mark); convert it: `iconv -f UTF-16 -t UTF-8`"),
    ("corpus-latin1-input", [*TEXT, "text_latin1", "--run", "new"], "text_latin1/fr.txt line 2: bytes are not UTF-8"),
    ("corpus-unknown-lang-file", [*TEXT, "text_xx", "--run", "new"], "unknown language code 'xx'"),
    ("corpus-unknown-lang-flag", [*TEXT, "text_long", "--langs", "en,zz", "--run", "new"], "language code 'zz'"),
    ("corpus-one-huge-line", [*TEXT, "text_long", "--run", "new"],
     "every en segment was dropped: 1 by corpus.max_chars=2000"),
    ("corpus-negative-max-chars", [*TEXT, "text_long", "--run", "new", "corpus.max_chars=-5"], "corpus.max_chars=-5"),
    ("corpus-nan-alpha", [*TEXT, "text_long", "--run", "new", "corpus.alpha=nan"], "not a finite number"),
    ("corpus-unknown-key", ["corpus", "--run", "new", "corpus.alhpa=1"], "did you mean 'alpha'"),
    ("corpus-unknown-source", ["corpus", "--source", "pdf", "--paths", "in.txt", "--run", "new"],
     "unknown corpus source 'pdf'"),
    ("corpus-run-is-a-file", [*TEXT, "text_long", "--run", "afile"], "afile is a file"),
    ("corpus-run-under-a-file", [*TEXT, "text_long", "--run", "afile/run"], "afile is a file; choose another path"),
    ("corpus-run-under-proc", [*TEXT, "text_long", "--run", "/proc/xling-run"], "is not writable"),
    ("corpus-run-not-a-run", [*TEXT, "text_long", "--run", "hf_bert"],
     "hf_bert is not empty and holds no xling run"),  # and no lock file is left in the user's folder
    ("corpus-config-not-toml", ["corpus", "--config", "bad.toml", "--run", "new"], "bad.toml is not valid TOML"),
    ("corpus-config-missing", ["corpus", "--config", "nope.toml", "--run", "new"], "nope.toml does not exist"),
    # tokenizer, shard
    ("tokenizer-no-corpus", ["tokenizer", "--run", "new"], "has no corpus yet"),
    ("tokenizer-vocab-tiny", ["tokenizer", "--run", "stale", "--overwrite", "tokenizer.vocab_size=10"],
     "vocab_size must be at least 64, not 10"),
    ("tokenizer-vocab-not-int", ["tokenizer", *RUN, "tokenizer.vocab_size=big"], "expected an integer, got 'big'"),
    ("tokenizer-run-not-toml", ["tokenizer", "--run", "badtoml"], "config.toml is not valid TOML"),
    ("shard-no-tokenizer", ["shard", "--run", "new"], "new has no tokenizer yet"),
    ("shard-after-corpus-rebuilt", ["shard", "--run", "stale"],
     "the tokenizer in stale is out of date: built from an older corpus"),
    # pretrain
    ("pretrain-after-corpus-rebuilt", ["pretrain", "--run", "stale"], "`xling tokenizer --run stale --overwrite`"),
    ("pretrain-nan-eps", ["pretrain", *RUN, "train.eps=nan"], "train.eps: nan is not a finite number"),
    ("pretrain-vocab-too-small", ["pretrain", "--run", "nockpt", "model.vocab_size=100"], "set model.vocab_size="),
    ("pretrain-seq-longer-than-block", ["pretrain", "--run", "nockpt", "train.seq_len=64"],
     "longer than model.block_size"),
    ("pretrain-unknown-train-lang", ["pretrain", "--run", "nockpt", "train.langs=[\"de\"]"], "train.langs has de"),
    ("pretrain-model-too-big", ["pretrain", "--run", "nockpt", "model.n_layer=100000", "model.d_model=4096",
                                "model.n_head=32"], "GiB"),
    ("pretrain-latest-not-utf8", ["pretrain", "--run", "badlatest"], "latest does not hold a step directory's name"),
    ("pretrain-latest-missing-step", ["pretrain", "--run", "misslatest"], "latest names step_00000099"),
    ("pretrain-checkpoint-truncated", ["pretrain", "--run", "truncated"], "truncated or altered"),
    ("pretrain-run-not-toml", ["pretrain", "--run", "badtoml"], "config.toml is not valid TOML"),
    ("pretrain-resume-nothing", ["pretrain", "--run", "nockpt", "--resume"], "nothing to resume"),
    # generate
    ("generate-prompt-not-utf8", ["generate", *RUN, "--lang", "en", b"caf\xe9".decode("utf-8", "surrogateescape")],
     "the prompt is not valid UTF-8"),
    ("generate-nan-temperature", ["generate", *RUN, "--lang", "en", "generate.temperature=nan", "In"],
     "generate.temperature: nan is not a finite number"),
    ("generate-huge-beams", ["generate", *RUN, "--lang", "en", "generate.num_beams=1000000", "In"],
     "num_beams must be in 1..64"),
    ("generate-unknown-lang", ["generate", *RUN, "--lang", "xx", "In"], "no tag <xx> for language 'xx'"),
    ("generate-missing-run", ["generate", "--run", "missing", "--lang", "en", "In"],
     "checkpoint missing does not exist"),
    ("generate-latest-not-utf8", ["generate", "--run", "badlatest", "--lang", "en", "In"],
     "`echo step_00000002 > "),
    # evaluate, report
    ("evaluate-missing-run", ["evaluate", "--run", "missing"], "no trained model"),
    ("evaluate-unknown-evaluation", ["evaluate", *RUN, "--only", "nosuch"], "unknown evaluation nosuch"),
    ("evaluate-checkpoint-truncated", ["evaluate", "--run", "truncated"], "truncated or altered"),
    ("report-missing-run", ["report", "--run", "missing"], "no evaluation results in missing"),
    ("report-nothing-evaluated", ["report", *RUN], "run `xling evaluate --run run` first"),
    # demo
    ("demo-nan-minutes", ["demo", "--minutes", "nan", "--run", "new"], "--minutes nan is not a finite number"),
    ("demo-config-missing", ["demo", "--config", "nope.toml", "--run", "new"], "nope.toml does not exist"),
    ("demo-unknown-lang", ["demo", "--langs", "en,xx", "--run", "new"], "unknown language code 'xx'"),
    ("demo-run-is-a-file", ["demo", "--run", "afile"], "afile is a file"),
    # score
    ("score-line-count-mismatch", [*SCORE, "--hyp", "in.txt", "--ref", "three.txt"], "has 2 lines but"),
    ("score-unknown-lang", [*SCORE, "--hyp", "in.txt", "--ref", "in.txt", "--lang", "xx"], "unknown language code"),
    ("score-empty-hyp", [*SCORE, "--hyp", "empty.txt", "--ref", "in.txt"], "is empty"),
    ("score-utf16-ref", [*SCORE, "--hyp", "in.txt", "--ref", "utf16.txt"], "iconv -f UTF-16 -t UTF-8"),
    ("score-ref-is-a-directory", [*SCORE, "--hyp", "in.txt", "--ref", "adir"], "is a directory"),
    # translate
    ("translate-same-languages", ["translate", "--run", "run", "--src", "en", "--tgt", "en"], "are both 'en'"),
    ("translate-output-is-a-directory", [*TRANSLATE, "--input", "in.txt", "--output", "adir"], "is a directory"),
    ("translate-output-under-proc", [*TRANSLATE, "--input", "in.txt", "--output", "/proc/xling.txt"],
     "is not writable"),
    ("translate-output-under-a-file", [*TRANSLATE, "--input", "in.txt", "--output", "afile/out.txt"],
     "afile is a file"),
    ("translate-input-latin1", [*TRANSLATE, "--input", "latin1.txt"], "bytes are not UTF-8"),
    ("translate-input-utf16", [*TRANSLATE, "--input", "utf16.txt"], "iconv -f UTF-16 -t UTF-8"),
    ("translate-missing-model", ["translate", "--run", "missing", "--src", "en", "--tgt", "fr",
                                 "--input", "in.txt"], "checkpoint missing does not exist"),
    ("translate-zero-beams", [*TRANSLATE, "--input", "in.txt", "--beams", "0"], "num_beams must be in 1..64"),
    ("translate-latest-missing-step", ["translate", "--run", "misslatest", "--src", "en", "--tgt", "fr",
                                       "--input", "in.txt"], "latest names step_00000099"),
    # translate-train
    ("translate-train-tsv-missing", ["translate-train", *RUN, "--tsv", "missing.tsv", "--src", "en", "--tgt", "fr"],
     "file missing.tsv does not exist"),
    ("translate-train-tsv-one-column", ["translate-train", *RUN, "--tsv", "one_col.tsv", "--src", "en",
                                        "--tgt", "fr"], "one_col.tsv line 1: expected `source<TAB>target`"),
    ("translate-train-tsv-no-langs", ["translate-train", *RUN, "--tsv", "one_col.tsv"], "--tsv needs --src and --tgt"),
    ("translate-train-no-model", ["translate-train", "--run", "nockpt"],
     "checkpoint nockpt/checkpoints does not exist"),
    # embed
    ("embed-batch-size-zero", [*EMBED, "--out", "vecs", "--batch-size", "0"], "--batch-size 0 is not a finite"),
    ("embed-out-under-a-file", [*EMBED, "--out", "afile/vecs"], "afile is a file"),
    ("embed-out-under-proc", [*EMBED, "--out", "/proc/vecs"], "is not writable"),
    ("embed-empty-input", ["embed", "--run", "run", "--lang", "en", "--input", "empty.txt", "--out", "vecs"],
     "is empty"),
    ("embed-input-is-a-directory", ["embed", "--run", "run", "--lang", "en", "--input", "adir", "--out", "vecs"],
     "is a directory"),
    ("embed-unknown-lang", ["embed", "--run", "run", "--lang", "xx", "--input", "in.txt", "--out", "vecs"],
     "no tag <xx>"),
    ("embed-latest-not-utf8", ["embed", "--run", "badlatest", "--lang", "en", "--input", "in.txt",
                               "--out", "vecs"], "latest does not hold a step directory's name"),
    # retrieve, mine
    ("retrieve-out-is-a-directory", [*RETRIEVE, "--out", "adir"], "is a directory"),
    ("retrieve-out-under-proc", [*RETRIEVE, "--out", "/proc/hits.tsv"], "is not writable"),
    ("retrieve-out-under-a-file", [*RETRIEVE, "--out", "afile/hits.tsv"], "afile is a file"),
    ("retrieve-missing-queries", ["retrieve", "--run", "run", "--queries", "missing.txt", "--docs", "fr.txt"],
     "queries file missing.txt does not exist"),
    ("retrieve-zero-k", [*RETRIEVE, "-k", "0"], "-k must be >= 1, not 0"),
    ("mine-nan-threshold", [*MINE, "--threshold", "nan"], "--threshold nan is not a finite number"),
    ("mine-missing-source", ["mine", "missing.txt", "fr.txt", "--run", "run"],
     "source file missing.txt does not exist"),
    ("mine-out-under-a-file", [*MINE, "--out", "afile/pairs.tsv"], "afile is a file"),
    ("mine-zero-k", [*MINE, "-k", "0"], "-k must be >= 1, not 0"),
    # vectors, align
    ("vectors-no-corpus", ["vectors", "--run", "missing"], "no corpus in missing/corpus"),
    ("vectors-unknown-lang", ["vectors", *RUN, "--langs", "xx"], "language 'xx' is not in the corpus"),
    ("vectors-zero-dim", ["vectors", *RUN, "vectors.dim=0"], "dim, window, min_count, epochs and workers must be >= 1"),
    ("align-no-languages", ["align", "--src-vec", "a.vec", "--tgt-vec", "a.vec"], "give the languages"),
    ("align-one-vec-file", ["align", "--src", "en", "--tgt", "fr", "--src-vec", "a.vec"], "give both --src-vec"),
    ("align-malformed-vec", ["align", "--src", "en", "--tgt", "fr", "--src-vec", "bad.vec", "--tgt-vec", "a.vec",
                             "--out", "aligned"], "bad.vec line 2: expected a word and 3 numbers"),
    ("align-missing-dictionary", ["align", "--src", "en", "--tgt", "fr", "--src-vec", "a.vec", "--tgt-vec", "a.vec",
                                  "--dict", "nodict.txt", "--out", "aligned"], "nodict.txt does not exist"),
    ("align-unknown-method", ["align", "--src", "en", "--tgt", "fr", "--src-vec", "a.vec", "--tgt-vec", "a.vec",
                              "--method", "magic", "--out", "aligned"], "unknown alignment method 'magic'"),
    # config
    ("config-unknown-section", ["config", "--run", "new", "nope.x=1"], "unknown config key 'nope'"),
    ("config-not-key-value", ["config", "--run", "new", "model.n_layer"], "is not key=value"),
    ("config-nan", ["config", "--run", "new", "train.lr=nan"], "train.lr: nan is not a finite number"),
    ("config-run-not-toml", ["config", "--run", "badtoml"], "config.toml is not valid TOML"),
    # export, import
    ("export-out-exists", ["export", *RUN, "--out", "adir"], "adir already exists; pass --overwrite"),
    ("export-out-under-proc", ["export", *RUN, "--out", "/proc/xling-hf"], "is not writable"),
    ("export-out-under-a-file", ["export", *RUN, "--out", "afile/hf"], "afile is a file"),
    ("export-missing-run", ["export", "--run", "missing", "--out", "hf"], "checkpoint missing does not exist"),
    ("export-unknown-lang", ["export", *RUN, "--out", "hf", "--lang", "xx"],
     "--lang xx is not one of the tokenizer's languages"),
    ("import-bert-folder", ["import", "hf_bert", "--run", "imported"], "`xling classify --hf DIR`"),
    ("import-pickled-weights", ["import", "hf_gpt2_bin", "--run", "imported"],
     "has only pickled weights (pytorch_model.bin); xling loads safetensors only"),
    ("import-no-config", ["import", "hf_noconfig", "--run", "imported"], "(no config.json)"),
    ("import-config-not-json", ["import", "hf_badjson", "--run", "imported"], "config.json is not valid JSON"),
    ("import-run-is-a-file", ["import", "hf_bert", "--run", "afile"], "--run afile is a file"),
    ("import-corpus-not-a-corpus", ["import", "hf_bert", "--run", "imported", "--corpus", "adir"],
     "adir is not an xling corpus directory"),
    ("import-run-under-proc", ["import", "hf_bert", "--run", "/proc/xling-import"], "is not writable"),
    # classify
    ("classify-hf-pickle-only", ["classify", *RUN, "--hf", "hf_bin"], "has no safetensors weights"),
    ("classify-hf-no-config", ["classify", *RUN, "--hf", "hf_noconfig"], "no config.json"),
    ("classify-data-missing", ["classify", *RUN, "--data", "missing.tsv"], "missing.tsv does not exist"),
    ("classify-data-no-split", ["classify", *RUN, "--data", "labels.tsv"], "cannot tell the split"),
    ("classify-data-one-class", ["classify", *RUN, "--data", "cls/train.tsv", "cls/test.tsv"],
     "the training rows have 1 class(es) (pos)"),
    ("classify-data-unknown-format", ["classify", *RUN, "--data", "a.vec"], "unknown format"),
    ("classify-not-a-bible-corpus", ["classify", *RUN], "not Bible book.chapter.verse"),
    ("classify-out-under-a-file", ["classify", *RUN, "--data", "labels.tsv", "--out", "afile/cls"],
     "cannot write --out afile/cls: afile is a file"),
    ("classify-bad-mode", ["classify", *RUN, "--mode", "few-shot"], "invalid choice: 'few-shot'"),
    ("classify-run-not-toml", ["classify", "--run", "badtoml", "--data", "cls/train.tsv"],
     "config.toml is not valid TOML"),
]


@pytest.mark.parametrize("argv, msg", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(world, monkeypatch, capsys, argv, msg):
    monkeypatch.chdir(world)  # relative paths (and the default runs/demo) land inside the snapshot
    before = _snapshot(world)
    code = main(list(argv))
    out, err = capsys.readouterr()
    line = _one_line(err)
    assert code == 2, (code, err)
    assert line.startswith(f"xling {argv[0]}: error: " if not argv[0].startswith("frob") else "xling: error: ")
    assert msg in line, line
    assert _snapshot(world) == before


@pytest.mark.parametrize("data, msg", [
    ("déjà vu\n".encode("latin-1"), "standard input is not valid UTF-8 text"),
    ("hello\n".encode("utf-16"), "UTF-16 LE text (it starts with a byte-order mark); convert it: `iconv -f UTF-16"),
], ids=["latin1", "utf16"])
def test_bad_bytes_on_standard_input_are_one_line(world, data, msg):
    before = _snapshot(world)
    proc = subprocess.run([sys.executable, "-m", "xling", *TRANSLATE], input=data, capture_output=True,
                          cwd=world, timeout=120)
    assert proc.returncode == 2 and msg in _one_line(proc.stderr.decode("utf-8", "replace"))
    assert _snapshot(world) == before


def test_classify_never_unpickles_a_pytorch_model_bin(world, monkeypatch, capsys):
    """A folder with only pytorch_model.bin is refused up front; torch.load is never called on it."""
    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.chdir(world)
    assert main(["classify", *RUN, "--hf", "hf_bin", "--data", "labels.tsv"]) == 2
    assert "has no safetensors weights (only pytorch_model.bin)" in _one_line(capsys.readouterr().err)


def test_a_refused_overwrite_keeps_the_run_and_its_record(world, capsys):
    """`pretrain --overwrite` with a config that fails its checks deletes nothing and keeps the manifest's
    record of the checkpoints it did not replace."""
    run = world / "run"
    manifest = (run / "manifest.json").read_bytes()
    before = _snapshot(run)
    assert main(["pretrain", "--run", str(run), "--overwrite", "model.n_layer=100000", "model.d_model=4096",
                 "model.n_head=32"]) == 2
    assert "GiB" in _one_line(capsys.readouterr().err)
    assert (run / "manifest.json").read_bytes() == manifest
    assert _snapshot(run) == before
