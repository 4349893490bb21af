"""Shared test helpers: tiny multilingual segments with a non-Latin script, no network needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("XLING_PROGRESS", "0")  # keep test logs readable
# "auto" precision from a fixed table, never from a micro-benchmark of the (loaded) machine: every test sees the same
# choice on any CPU with native bf16 (without it, every path is fp32). tests/test_precision.py tests the measuring.
os.environ.setdefault("XLING_PRECISION_TABLE", "train=bf16,decode1=fp32,decode=bf16,encode=bf16")

from xling.sources import Segment  # noqa: E402

# (book.chapter.verse) -> text per language; three languages, one in Cyrillic.
TINY = {
    "en": ["In the beginning was the word.", "The light shines in the darkness.", "He came to his own.",
           "Grace and truth came through him.", "No one has seen God at any time.", "This is the testimony."],
    "fr": ["Au commencement était la parole.", "La lumière luit dans les ténèbres.", "Il est venu chez les siens.",
           "La grâce et la vérité sont venues par lui.", "Personne n'a jamais vu Dieu.", "Voici le témoignage."],
    "ru": ["В начале было Слово.", "Свет во тьме светит.", "Пришел к своим.",
           "Благодать и истина произошли через него.", "Бога не видел никто никогда.", "Вот свидетельство."],
}


def tiny_segments(chapters: int = 20) -> list[Segment]:
    """Aligned segments over `chapters` chapters of 6 verses; verse text varies with the chapter."""
    out = []
    for c in range(1, chapters + 1):
        for lang, verses in TINY.items():
            for v, text in enumerate(verses, 1):
                out.append(Segment(lang, f"43.{c}.{v}", f"{text} ({c})", f"43.{c}"))
    return out


def join_gloo(rank: int, world: int, store: str, **env: str) -> None:
    """In a process of a test's `mp.spawn`: set the torchrun variables and join a gloo group through the file
    `store` (fresh for each spawn). A file, not a TCP port: under load a freshly freed port's TCPStore left both
    processes waiting in the rendezvous (seen once in the full suite beside a training run)."""
    import torch
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), XLING_PROGRESS="0", **env)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a test module of tiny models: a second thread gains nothing on tiny tensors,
    and on a busy machine every small parallel op waits for a descheduled partner (measured 2.2 s vs 0.024 s
    for one test). Modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def fake_source(monkeypatch):
    """Make `build_corpus` read the given segments instead of a real source."""

    def use(segments):
        monkeypatch.setattr("xling.corpus.source_units", lambda cfg, size=None: [None])
        monkeypatch.setattr("xling.corpus.read_unit", lambda cfg, unit: iter(segments))

    return use


def tiny_jsonl_corpus(folder: Path, n: int = 120) -> list[str]:
    """TINY's verses as one JSON Lines file a language under `folder` (`n` numbered lines each, ids shared across
    languages): the --paths of `xling corpus --source jsonl` for a tiny aligned run."""
    paths = []
    for lg, verses in TINY.items():
        path = folder / f"{lg}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for i in range(n):
                f.write(json.dumps({"id": f"s{i}", "lang": lg, "text": f"{verses[i % 6]} {i // 6}"},
                                   ensure_ascii=False) + "\n")
        paths.append(str(path))
    return paths
