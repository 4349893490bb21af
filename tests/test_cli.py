"""The `xling` command: stages over a run directory, skip/refuse/overwrite rules, one-line errors."""

import json
import subprocess
import sys

import pytest

from xling.cli import main

from .conftest import TINY


@pytest.fixture
def text_dir(tmp_path):
    """Three languages as plain text files, 30 lines each."""
    d = tmp_path / "text"
    d.mkdir()
    for lang, verses in TINY.items():
        lines = [f"{v} ({i})" for i in range(5) for v in verses]
        (d / f"{lang}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    assert "Traceback" not in err
    return lines[0]


def test_help_does_not_import_torch():
    code = ("import sys; from xling.cli import build_parser; build_parser(); "
            "print('torch' in sys.modules, 'tokenizers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


def test_corpus_stage_table_manifest_and_skip(tmp_path, text_dir, capsys):
    rd = tmp_path / "run"
    code, out, err = run(capsys, "corpus", "--source", "text", "--paths", text_dir, "--langs", "en,fr,ru",
                         "--run", rd, "corpus.valid_fraction=0.1", "corpus.test_fraction=0.1")
    assert code == 0, err
    header = next(ln for ln in out.splitlines() if ln.startswith("| lang"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["lang", "train", "valid", "test", "words",
                                                                 "chars", "p", "q"]
    manifest = json.loads((rd / "manifest.json").read_text())
    assert manifest["stages"]["corpus"]["config"]["corpus"]["langs"] == ["en", "fr", "ru"]
    assert "[corpus]" in (rd / "config.toml").read_text()
    # same inputs: skipped; the saved config is the base, so no flags are needed again
    code, out, _ = run(capsys, "corpus", "--run", rd)
    assert code == 0 and "up to date" in out
    # another config: refused, then replaced with --overwrite
    code, _, err = run(capsys, "corpus", "--run", rd, "corpus.alpha=0.5")
    assert code == 2
    assert "corpus.alpha 0.3 -> 0.5" in one_line_error(err) and "--overwrite" in err
    code, _, err = run(capsys, "corpus", "--run", rd, "corpus.alpha=0.5", "--overwrite")
    assert code == 0, err
    assert json.loads((rd / "corpus" / "meta.json").read_text())["sampling"]["alpha"] == 0.5


def test_full_chain_text_source(tmp_path, text_dir, capsys):
    rd = tmp_path / "run"
    assert run(capsys, "corpus", "--source", "text", "--paths", text_dir, "--langs", "en,fr,ru", "--run", rd)[0] == 0
    code, out, err = run(capsys, "tokenizer", "--run", rd, "tokenizer.vocab_size=300")
    assert code == 0, err
    assert "fertility" in out.lower() and "parity" in out.lower()
    code, out, err = run(capsys, "shard", "--run", rd)
    assert code == 0, err
    meta = json.loads((rd / "shards" / "meta.json").read_text())
    assert meta["langs"] == ["en", "fr", "ru"]
    # a changed tokenizer config makes the shards' upstream stale: shard says what to do
    code, _, err = run(capsys, "shard", "--run", rd, "tokenizer.vocab_size=310")
    assert code == 2 and "tokenizer" in one_line_error(err) and "different config" in err


def test_stage_before_its_input(tmp_path, capsys):
    code, _, err = run(capsys, "tokenizer", "--run", tmp_path / "empty")
    assert code == 2
    assert "has no corpus yet; run `xling corpus" in one_line_error(err)


@pytest.mark.parametrize("setup,argv,msg", [
    (None, ["--paths", "{tmp}/missing"], "does not exist"),
    ("empty", ["--paths", "{tmp}/in/en.txt"], "is empty"),
    ("latin1", ["--paths", "{tmp}/in/fr.txt"], "line 2: bytes are not UTF-8"),
    ("badlang", ["--paths", "{tmp}/in/xx.txt"], "unknown language code 'xx'"),
    (None, ["corpus.alhpa=1"], "unknown config key 'corpus.alhpa'; did you mean 'alpha'?"),
    (None, ["corpus.alpha=abc"], "expected a number"),
    (None, ["--langs", "en,fr,en"], "appears twice"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, setup, argv, msg):
    src = tmp_path / "in"
    src.mkdir()
    if setup == "empty":
        (src / "en.txt").write_text("\n\n")
    elif setup == "latin1":
        (src / "fr.txt").write_bytes("une ligne\nd\xe9j\xe0 vu\n".encode("latin-1"))
    elif setup == "badlang":
        (src / "xx.txt").write_text("hello\n")
    rd = tmp_path / "run"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(capsys, "corpus", "--source", "text", "--run", rd, *argv)
    assert code == 2
    assert msg in one_line_error(err)
    assert not (rd / "corpus").exists()
    assert not (rd / "manifest.json").exists()


def test_refuses_a_directory_that_is_not_a_run(tmp_path, text_dir, capsys):
    rd = tmp_path / "mine"
    rd.mkdir()
    (rd / "notes.txt").write_text("my files")
    code, _, err = run(capsys, "corpus", "--source", "text", "--paths", text_dir, "--run", rd)
    assert code == 2 and "holds no xling run" in one_line_error(err)
    assert (rd / "notes.txt").read_text() == "my files"
    # what a first stage killed with `kill -9` leaves is a run to go on with: its stale lock, its work folders
    fresh = tmp_path / "killed"
    fresh.mkdir()
    (fresh / ".xling.lock").write_text("999999999")
    (fresh / ".corpus.partial-0123456789abcdef").mkdir()
    (fresh / ".tokenizer.k2j4.tmp").mkdir()
    code, _, err = run(capsys, "corpus", "--source", "text", "--paths", text_dir, "--run", fresh)
    assert code == 0 and (fresh / "corpus" / "meta.json").is_file()
    assert sorted(p.name for p in fresh.iterdir() if p.name.startswith(".")) == [".tokenizer.k2j4.tmp", ".xling.lock"]


def test_python_dash_m_and_config_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "xling", "config", "--run", tmp_path / "r", "corpus.alpha=0.7"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "alpha = 0.7" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "xling", "config", "--run", tmp_path / "r", "nope.x=1"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown config key 'nope'" in bad.stderr



def test_a_second_writer_of_a_run_gets_one_line_and_a_dead_holders_lock_is_taken_over(tmp_path, text_dir, capsys):
    """Issue 21: two `xling pretrain` on one run both ran and lost a result. A run directory has one writer."""
    import os
    import signal

    rd = tmp_path / "run"
    assert run(capsys, "corpus", "--source", "text", "--path", text_dir, "--run", rd)[0] == 0
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from xling.stages import RunDir; RunDir(sys.argv[1]).lock().__enter__(); "
        "print('locked', flush=True); time.sleep(120)"), str(rd)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = sorted(p.name for p in rd.rglob("*"))
        code, _, err = run(capsys, "tokenizer", "--run", rd)
        line = one_line_error(err)
        assert code == 2 and f"in use by another xling process (pid {holder.pid})" in line and "--run" in line
        assert sorted(p.name for p in rd.rglob("*")) == before  # nothing written
        assert run(capsys, "evaluate", "--run", rd)[0] == 2  # readers that write (eval/) wait their turn too
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # kill -9: the OS drops the lock with the process
        holder.wait()
    assert run(capsys, "tokenizer", "--run", rd)[0] == 0  # the dead holder's lock is taken over


def test_the_lock_leaves_nothing_behind_when_a_new_run_fails(tmp_path, capsys):
    rd = tmp_path / "new"
    code, _, err = run(capsys, "corpus", "--source", "text", "--path", tmp_path / "missing", "--run", rd)
    assert code == 2 and "Traceback" not in err
    assert not rd.exists()  # the lock made the directory; nothing else was written, so both are gone


@pytest.mark.parametrize("argv, msg", [
    (["mine", "a.txt", "b.txt", "--run", "m", "--threshold", "nan"], "--threshold nan is not a finite number"),
    (["embed", "--run", "m", "--lang", "en", "--input", "a.txt", "--out", "o", "--batch-size", "0"],
     "--batch-size 0 is not a finite number >= 1"),
    (["demo", "--minutes", "inf"], "--minutes inf is not a finite number >= 0"),
])
def test_bad_numbers_on_the_command_line_are_refused_before_anything_runs(tmp_path, capsys, argv, msg):
    """Issue 21: `mine --threshold nan` reported 0 pairs, `embed --batch-size 0` ended in a traceback."""
    code, _, err = run(capsys, *argv, *(["--run", tmp_path / "run"] if argv[0] == "demo" else []))
    assert code == 2 and msg in one_line_error(err) and not (tmp_path / "run").exists()


def test_silent_wrong_results_are_errors_now(tmp_path, capsys):
    """Issue 21: a missing --config ran the default demo; score --lang xx used 13a; translate en->en printed
    garbage with exit 0. Each is now one line and exit 2, before any work."""
    hyp = tmp_path / "h.txt"
    hyp.write_text("a b c\n", encoding="utf-8")
    code, _, err = run(capsys, "demo", "--config", tmp_path / "nope.toml", "--run", tmp_path / "run")
    assert code == 2 and "nope.toml does not exist" in one_line_error(err) and not (tmp_path / "run").exists()
    code, _, err = run(capsys, "score", "--metric", "bleu", "--hyp", hyp, "--ref", hyp, "--lang", "xx")
    assert code == 2 and "unknown language code 'xx' in --lang" in one_line_error(err)
    code, _, err = run(capsys, "translate", "--run", tmp_path / "none", "--src", "en", "--tgt", "en")
    assert code == 2 and "--src and --tgt are both 'en'" in one_line_error(err)


@pytest.mark.parametrize("make_argv, msg", [
    (lambda d: ["embed", "--run", d / "m", "--lang", "en", "--input", d / "in.txt", "--out", "/proc/x"],
     "cannot write --out /proc/x.npy"),
    (lambda d: ["embed", "--run", d / "m", "--lang", "en", "--input", d / "in.txt", "--out", d / "in.txt" / "v"],
     "in.txt is a file; choose another path"),
    (lambda d: ["retrieve", "--run", d / "m", "--queries", d / "in.txt", "--docs", d / "in.txt", "--out", d],
     "is a directory; give a file path"),
    (lambda d: ["mine", d / "in.txt", d / "in.txt", "--run", d / "m", "--out", d / "in.txt" / "pairs.tsv"],
     "in.txt is a file; choose another path"),
    (lambda d: ["translate", "--run", d / "m", "--src", "en", "--tgt", "fr", "--input", d / "in.txt",
                "--output", d], "--output"),
    (lambda d: ["corpus", "--source", "text", "--path", d, "--run", d / "in.txt"], "run directory"),
])
def test_unusable_output_paths_are_one_line_before_any_work(tmp_path, capsys, make_argv, msg):
    """Issue 21: output paths that are a directory, under /proc or below a file ended in tracebacks."""
    (tmp_path / "in.txt").write_text("In the beginning\n", encoding="utf-8")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, _, err = run(capsys, *make_argv(tmp_path))
    assert code == 2 and msg in one_line_error(err)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


def test_bad_bytes_huge_beams_and_a_broken_run_config_are_one_line(tmp_path, capsys):
    """Issue 21: a non-UTF-8 prompt, generate.num_beams=1000000 (bad_alloc after 46 s) and a run whose
    config.toml is not TOML ended in tracebacks."""
    from xling.errors import XlingError
    from xling.files import check_utf8

    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # how Python hands over a latin-1 argument
    code, _, err = run(capsys, "generate", "--run", tmp_path / "none", "--lang", "en", bad)
    assert code == 2 and "the prompt is not valid UTF-8 text" in one_line_error(err)
    with pytest.raises(XlingError, match="standard input is not valid UTF-8"):
        check_utf8("ok\n" + bad, "standard input")
    code, _, err = run(capsys, "generate", "--run", tmp_path / "none", "--lang", "en",
                       "generate.num_beams=1000000", "In the")
    assert code == 2 and "num_beams must be in 1..64" in one_line_error(err)
    rd = tmp_path / "run"
    rd.mkdir()
    (rd / "config.toml").write_text("not = [toml", encoding="utf-8")
    code, _, err = run(capsys, "pretrain", "--run", rd)
    assert code == 2 and "config.toml is not valid TOML" in one_line_error(err)


def test_every_command_line_a_message_suggests_uses_real_flags():
    """Issue 21: importing a BERT folder suggested `xling classify --hf-model DIR`, but the flag is --hf (and a
    missing tokenizer suggested a --tokenizer no command has). Every `xling CMD ... --flag` in the package's
    text must name CMD's own flags."""
    import re
    from pathlib import Path

    import xling
    from xling.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    bad = []
    for f in Path(xling.__file__).parent.rglob("*.py"):
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            for m in re.finditer(r"xling ([a-z][a-z-]*)([^`\"']*)", line):
                if m.group(1) not in commands:
                    continue
                flags = {o for a in commands[m.group(1)]._actions for o in a.option_strings}
                bad += [f"{f.name}:{n}: xling {m.group(1)} {fl}"
                        for fl in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-z])\b", m.group(2)) if fl not in flags]
    assert not bad
    assert not [f for f in Path(xling.__file__).parent.rglob("*.py") if "--tokenizer runs" in f.read_text()]


def test_a_rebuilt_corpus_sends_every_later_stage_to_the_tokenizer_first(tmp_path, text_dir, capsys):
    """Issue 21: after `corpus --overwrite`, pretrain sent the user to shard, which sent them to tokenizer: the
    message names the first stale stage of the chain, and following it works."""
    rd = tmp_path / "run"
    assert run(capsys, "corpus", "--source", "text", "--paths", text_dir, "--run", rd)[0] == 0
    assert run(capsys, "tokenizer", "--run", rd, "tokenizer.vocab_size=300")[0] == 0
    assert run(capsys, "shard", "--run", rd)[0] == 0
    assert run(capsys, "corpus", "--run", rd, "--overwrite", "corpus.alpha=0.5")[0] == 0
    for cmd in ("pretrain", "shard"):
        code, _, err = run(capsys, cmd, "--run", rd)
        line = one_line_error(err)
        assert code == 2 and f"the tokenizer in {rd} is out of date: built from an older corpus" in line
        assert f"`xling tokenizer --run {rd} --overwrite`" in line
    assert run(capsys, "tokenizer", "--run", rd, "--overwrite")[0] == 0
    assert run(capsys, "shard", "--run", rd, "--overwrite")[0] == 0


def test_an_error_after_a_progress_bar_starts_on_its_own_line(tmp_path, capsys, monkeypatch):
    """Issue 21: an error raised while a bar was drawn was printed glued to the bar's last fragment."""
    from xling.errors import XlingError
    from xling.progress import progress

    def fails(*args, **kwargs):
        bar = progress(total=10, desc="working")  # left open, as a loop that raises leaves it
        bar.update(3)
        raise XlingError("something is wrong; fix it")

    monkeypatch.setenv("XLING_PROGRESS", "1")
    monkeypatch.setattr("xling.stages.run_stage", fails)
    code, _, err = run(capsys, "tokenizer", "--run", tmp_path / "r")
    assert code == 2 and "working" in err  # the bar was drawn
    last = err.rstrip("\n").split("\n")[-1]
    assert last == "xling tokenizer: error: something is wrong; fix it"


@pytest.mark.parametrize("argv, note, msg", [
    (["evaluate", "{d}/none"], "the positional run directory is deprecated; write --run", "has no trained model"),
    (["report", "{d}/none"], "the positional run directory is deprecated", "no evaluation results in {d}/none"),
    (["translate", "--model", "{d}/none", "--src", "en", "--tgt", "fr"], "--model is deprecated", "{d}/none"),
    (["embed", "--model", "{d}/none", "--lang", "en", "--input", "{d}/in.txt", "--out", "{d}/o"],
     "--model is deprecated", "{d}/none"),
    (["generate", "--run", "{d}/none", "--lang", "en", "-o", "generate.num_beams=1000000", "In"],
     "-o/--set KEY=VALUE is deprecated", "num_beams must be in 1..64"),
])
def test_old_spellings_still_work_with_a_note(tmp_path, capsys, argv, note, msg):
    """Issue 23: one vocabulary (--run RUN, positional KEY=VALUE); the spellings before it (a positional run,
    --model, -o/--set) reach the command for one release, with a one-line note on stderr."""
    (tmp_path / "in.txt").write_text("In the beginning\n", encoding="utf-8")
    code, _, err = run(capsys, *(a.format(d=tmp_path) for a in argv))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2 and note in lines[0] and msg.format(d=tmp_path) in lines[1], err


def test_run_and_an_old_spelling_that_disagree_are_one_usage_error(tmp_path, capsys):
    for argv in (["report", "--run", "a", "b"], ["mine", "x.txt", "y.txt", "--run", "a", "--model", "b"]):
        code, _, err = run(capsys, *argv)
        line = one_line_error(err)
        assert code == 2 and "name different runs; give --run only" in line and "--help" in line
    code, _, err = run(capsys, "report", "--run", tmp_path / "r", str(tmp_path / "r") + "/")  # the same run: fine
    assert code == 2 and "no evaluation results" in err


def test_generate_tells_settings_from_prompts(tmp_path, capsys):
    code, _, err = run(capsys, "generate", "--run", tmp_path / "none", "generate.temperature=0")
    assert code == 2 and "give at least one prompt" in one_line_error(err)
