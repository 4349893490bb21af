"""The corpus stage spread over worker processes: byte-for-byte the one-process output; the batched deduplication
equal to a one-segment-at-a-time pass; the compact hash set against Python's set; errors from a worker."""

import json
import os
import random
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

import xling.corpus as corpus_mod
from xling.corpus import CorpusConfig, build_corpus, clean_segments, clean_text, split_of
from xling.errors import XlingError
from xling.hashset import HashSet64
from xling.sources import Segment


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _jsonl(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("\ufeff")  # a byte-order mark the first span must drop
        for i in range(n):
            text = " ".join(rng.choices(words, k=rng.randint(1, 6)))  # short texts: many repeats across spans
            obj = {"lang": rng.choice(["en", "fr", "de"]), "text": text + ("  \t" if i % 7 == 0 else "")}
            if i % 3:
                obj["id"] = f"{path.stem}{i}"  # the rest get "<file>:<line>" keys: line numbers must survive the split
            f.write(json.dumps(obj, ensure_ascii=False) + ("\r\n" if i % 5 == 0 else "\n"))
            if i % 11 == 0:
                f.write("\n")  # blank lines count as lines


@pytest.mark.parametrize("source", ["jsonl", "text"])
def test_two_workers_write_what_one_writes(tmp_path, monkeypatch, source):
    monkeypatch.setattr(corpus_mod, "UNIT_BYTES", 700)  # many stretches per file, cut mid-way through the data
    if source == "jsonl":
        _jsonl(tmp_path / "a.jsonl", 400, 1)
        _jsonl(tmp_path / "b.jsonl", 150, 2)
        paths = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    else:
        for lang, seed in (("en", 3), ("fr", 4)):
            rng = random.Random(seed)
            lines = (f"line {rng.randint(0, 120)} of {lang}\n" + "\n" * (i % 4 == 0) for i in range(500))
            (tmp_path / f"{lang}.txt").write_text("".join(lines), encoding="utf-8")
        paths = [str(tmp_path / "en.txt"), str(tmp_path / "fr.txt")]
    out = {}
    for workers in (1, 2):
        cfg = CorpusConfig(source=source, paths=paths, valid_fraction=0.2, test_fraction=0.2, workers=workers)
        meta = build_corpus(cfg, tmp_path / f"out{workers}")
        out[workers] = _files(tmp_path / f"out{workers}")
    assert meta["dropped"]["duplicate"] > 50  # the repeats span the workers' stretches
    assert sum(st["segments"] for st in meta["splits"]["test"].values()) > 20
    assert out[1] == out[2]


def _sequential(segments, cfg):
    """The stage's rules one segment at a time, as a reference: first occurrence of a text wins per language,
    duplicates counted even after the cap, the cap skips the rest."""
    seen, kept, count, dup = {}, [], {}, 0
    for seg in segments:
        text = clean_text(seg.text)
        if not text:
            continue
        lang_seen = seen.setdefault(seg.lang, set())
        if text in lang_seen:
            dup += 1
            continue
        if cfg.max_segments and count.get(seg.lang, 0) >= cfg.max_segments:
            continue
        lang_seen.add(text)
        count[seg.lang] = count.get(seg.lang, 0) + 1
        kept.append((split_of(seg.group, cfg.valid_fraction, cfg.test_fraction), seg.lang, seg.key, text))
    return kept, dup


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("max_segments", [0, 40])
def test_batched_dedup_equals_one_at_a_time(monkeypatch, seed, max_segments):
    rng = random.Random(seed)
    segs = [Segment(lang=rng.choice(["en", "fr"]), key=f"k{i}", text=f"t{rng.randint(0, 60)}", group=f"g{i // 5}")
            for i in range(600)]
    cfg = CorpusConfig(langs=["en", "fr"], max_segments=max_segments)
    want, want_dup = _sequential(segs, cfg)
    for batch in (7, 64, 10_000):  # batch edges fall before, inside and after each language's cap
        monkeypatch.setattr(corpus_mod, "BATCH", batch)
        buckets, dropped = clean_segments(segs, cfg)
        got = sorted((split, lang, k, t) for split, by_lang in buckets.items() for lang, b in by_lang.items()
                     for k, t in zip(b.keys, b.texts, strict=True))
        assert got == sorted(want)
        assert dropped["duplicate"] == want_dup
        for split, by_lang in buckets.items():  # source order within each file
            for lang, b in by_lang.items():
                assert b.keys == [k for s, lg, k, _ in want if (s, lg) == (split, lang)]


def _against_python_set(hs: HashSet64, seed: int, high: int, rounds: int) -> set:
    """Random batches through first_new/add/contains of `hs` beside a Python set; returns the set."""
    rng = np.random.default_rng(seed)
    ref = set()
    for _ in range(rounds):
        h = rng.integers(0, high, size=int(rng.integers(1, 400)), dtype=np.uint64)
        new = hs.first_new(h)
        want, seen_here = [], set()
        for x in h.tolist():
            want.append(x not in ref and x not in seen_here)
            seen_here.add(x)
        assert new.tolist() == want
        hs.add(h[new])
        ref |= set(h.tolist())
        probe = rng.integers(0, high + high // 5, size=300, dtype=np.uint64)
        assert hs.contains(probe).tolist() == [x in ref for x in probe.tolist()]
    return ref


def test_hashset_matches_python_set():
    hs = HashSet64()
    ref = _against_python_set(hs, seed=0, high=5_000, rounds=50)
    assert len(hs) == len(ref) and hs.nbytes == 8 * len(ref)
    assert len(hs.runs) <= int(np.log2(len(ref))) + 1
    assert all(np.all(r[1:] > r[:-1]) for r in hs.runs)  # sorted, no entry twice


def test_a_workers_error_is_the_stages_error(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "UNIT_BYTES", 500)
    _jsonl(tmp_path / "a.jsonl", 200, 5)
    with open(tmp_path / "a.jsonl", "a", encoding="utf-8") as f:
        f.write('{"lang": "en", "text": "cut\n')  # the last line, read by a worker
    lines = (tmp_path / "a.jsonl").read_bytes().count(b"\n")
    with pytest.raises(XlingError, match=rf"a.jsonl line {lines}: bad JSON"):
        build_corpus(CorpusConfig(source="jsonl", paths=[str(tmp_path / "a.jsonl")], workers=2), tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]  # nothing half-written, nothing kept: the
    # input is at fault, and fixing it changes what a re-run would resume from


class _Stop(Exception):
    """The process stopped (killed, Ctrl-C) in the middle of a piece."""


def test_a_stopped_run_resumes_after_the_pieces_it_finished(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(corpus_mod, "UNIT_BYTES", 700)
    _jsonl(tmp_path / "a.jsonl", 400, 1)
    _jsonl(tmp_path / "b.jsonl", 150, 2)
    cfg = CorpusConfig(source="jsonl", paths=[str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")],
                       valid_fraction=0.2, test_fraction=0.2)
    read, calls = corpus_mod.read_unit, []
    stop_at = []  # the piece (1-based) to stop in, once

    def reading(c, unit):
        calls.append(unit)
        if stop_at and len(calls) == stop_at[0]:
            stop_at.clear()
            yield from islice(read(c, unit), 5)  # a few segments of the piece, then the stop
            raise _Stop
        yield from read(c, unit)

    monkeypatch.setattr(corpus_mod, "read_unit", reading)
    build_corpus(cfg, tmp_path / "clean")
    want, every = _files(tmp_path / "clean"), list(calls)
    assert len(every) > 20  # pieces of 700 bytes
    calls.clear()
    stop_at.append(9)
    with pytest.raises(_Stop):
        build_corpus(cfg, tmp_path / "out")
    partial = [p for p in tmp_path.iterdir() if p.name.startswith(".out.partial-")]
    assert not (tmp_path / "out").exists() and len(partial) == 1
    assert json.loads((partial[0] / ".progress.json").read_text())["units"] == 8
    with open(partial[0] / "train" / "en.txt", "a", encoding="utf-8") as f:
        f.write("written after the checkpoint, before the process died\n")
    calls.clear()
    build_corpus(cfg, tmp_path / "out")
    assert calls == every[8:]  # only the pieces not finished
    assert "continuing after the first 8 pieces" in capsys.readouterr().err
    assert _files(tmp_path / "out") == want  # byte for byte: texts, keys, meta (counts, drops, pairs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "b.jsonl", "clean", "out"]
    # stopped again, resumed by 2 workers (the pieces do not depend on the number of workers)
    stop_at.append(3)
    calls.clear()
    with pytest.raises(_Stop):
        build_corpus(cfg, tmp_path / "two")
    build_corpus(CorpusConfig(**{**cfg.__dict__, "workers": 2}), tmp_path / "two")
    assert _files(tmp_path / "two") == want
    # a changed input is another corpus: read from the start; the stale partial folder goes once it succeeds
    stop_at.append(3)
    calls.clear()
    with pytest.raises(_Stop):
        build_corpus(cfg, tmp_path / "three")
    os.utime(tmp_path / "b.jsonl", ns=(0, (tmp_path / "b.jsonl").stat().st_mtime_ns + 10**9))
    calls.clear()
    build_corpus(cfg, tmp_path / "three")
    assert calls == every
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_langid_filter_drops_and_counts_per_language(tmp_path):
    pytest.importorskip("py3langid")
    en = ["The king went up to the house of the Lord with all the men of Judah.",
          "And he said unto them, go ye into all the world and preach the gospel."] * 2
    fr = "Et il leur dit: allez par tout le monde, et prêchez la bonne nouvelle à toute la création."
    (tmp_path / "en.txt").write_text("\n".join([*(f"{t} ({i})" for i, t in enumerate(en)), fr]) + "\n",
                                     encoding="utf-8")
    cfg = CorpusConfig(source="text", paths=[str(tmp_path / "en.txt")], langid=True, valid_fraction=0,
                       test_fraction=0)
    meta = build_corpus(cfg, tmp_path / "out")
    assert meta["dropped"]["wrong_language"] == 1 and meta["dropped_by_lang"] == {"en": {"wrong_language": 1}}
    assert fr not in (tmp_path / "out" / "train" / "en.txt").read_text(encoding="utf-8")
    assert meta["splits"]["train"]["en"]["segments"] == 4


def _exit_on_three(x):
    if x == 3:
        os._exit(1)  # what the kernel's out-of-memory killer leaves: no exception, no message
    return x * x


def test_a_killed_worker_is_one_line_and_nothing_is_written(tmp_path, monkeypatch):
    from xling.workers import ordered_map

    assert list(ordered_map(_exit_on_three, [0, 1, 2], workers=2)) == [0, 1, 4]
    with pytest.raises(XlingError, match="a test worker process died .* run the command again"):
        list(ordered_map(_exit_on_three, range(6), workers=2, what="a test worker"))


def test_too_little_disk_is_said_before_writing(tmp_path, monkeypatch):
    import shutil

    _jsonl(tmp_path / "a.jsonl", 50, 0)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
    with pytest.raises(XlingError, match=r"needs about 0.00 GB but .* has 0.00 GB free; free .* another disk"):
        build_corpus(CorpusConfig(source="jsonl", paths=[str(tmp_path / "a.jsonl")]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_hashset_with_runs_on_disk_matches_python_set(tmp_path):
    """Runs of 64 hashes and more go to files; lookups, first_new and len are those of a Python set; close
    removes the files."""
    hs = HashSet64(spill=tmp_path / "runs", in_memory=64)
    ref = _against_python_set(hs, seed=1, high=20_000, rounds=40)
    assert len(hs) == len(ref) and len(hs.files) >= 5 and hs.nbytes < 8 * 128
    assert all(len(r) < 64 for r in hs.runs)
    hs.close()
    assert list((tmp_path / "runs").iterdir()) == []
