"""Retrieval: chunked exact search equals brute force; sentence vectors do not depend on batch padding or order;
vector files; the embed/retrieve commands and their one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xling.cli import main
from xling.encode import embed_texts, encode, nearest, top1_accuracy
from xling.errors import XlingError
from xling.model import ModelConfig, Transformer
from xling.tasks.retrieval.retrieve import (
    default_layer,
    faiss_search,
    load_encoder,
    read_vectors,
    search,
    write_vectors,
)

from .conftest import join_gloo
from .test_mine import build_tiny_run

SPECIALS = {"pad": 0, "bos": 1, "eos": 2, "unk": 3, "mask": 4}


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_nearest_matches_brute_force_in_chunks():
    rng = np.random.default_rng(0)
    q, docs = _unit(rng, 130, 16), _unit(rng, 400, 16)
    scores, idx = nearest(q, docs, k=5, chunk=32)  # 5 chunks, the last one partial
    sim = q @ docs.T
    ref = np.argsort(-sim, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(sim, ref, 1), rtol=1e-6)


def test_top1_accuracy_counts_gold_rows():
    rng = np.random.default_rng(1)
    a = _unit(rng, 50, 8)
    assert top1_accuracy(a, a) == 1.0
    b = a.copy()
    b[[0, 1]] = b[[1, 0]]  # two rows swapped: those two queries now find the wrong row
    assert top1_accuracy(a, b) == 48 / 50


def test_encode_is_independent_of_batch_padding_and_order():
    """Exact in fp32 (bf16 kernels may round differently per batch shape; test_precision.py bounds that)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=50, n_langs=2))
    rng = np.random.default_rng(2)
    seqs = [rng.integers(8, 50, size=n) for n in (3, 11, 7, 20, 1)]
    kw = dict(lang_index=1, tag=6, specials=SPECIALS, precision="fp32")
    together = encode(model, seqs, batch_size=8, **kw)
    alone = np.concatenate([encode(model, [s], **kw) for s in seqs])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)
    layers = encode(model, seqs, all_layers=True, **kw)
    assert layers.shape == (3, 5, 32)  # input embedding + 2 blocks
    np.testing.assert_allclose(layers[-1], together, atol=1e-5)
    # without specials in the pool, a vector differs (tag and </s> excluded) but stays normalised
    plain = encode(model, seqs, pool_specials=False, **kw)
    assert not np.allclose(plain, together)


# ---------------------------------------------------------------------------- search, vector files, commands

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.mktemp("retrieve") / "run")


def test_chunked_search_equals_the_full_matrix_product_for_any_chunk():
    rng = np.random.default_rng(3)
    q, docs = _unit(rng, 97, 24), _unit(rng, 501, 24)
    sim = q @ docs.T
    ref = np.argsort(-sim, axis=1, kind="stable")[:, :7]
    for chunk in (1, 5, 32, 97, 1000):
        scores, idx = nearest(q, docs, k=7, chunk=chunk)
        np.testing.assert_array_equal(idx, ref)
        np.testing.assert_allclose(scores, np.take_along_axis(sim, ref, 1), rtol=1e-6)
    for max_bytes in (4 * 501, 4 * 501 * 10, 1 << 30):  # 1, 10, all query rows per block
        scores, idx = search(q, docs, k=7, max_bytes=max_bytes)
        np.testing.assert_array_equal(idx, ref)
    scores, idx = nearest(q, docs[:3], k=10)  # k is capped at the number of documents
    assert idx.shape == (97, 3) and sorted(idx[0]) == [0, 1, 2]
    with pytest.raises(XlingError, match="dimension 24 but document vectors 16"):
        search(q, docs[:, :16])


def test_faiss_flat_index_gives_the_same_neighbours():
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    q, docs = _unit(rng, 60, 32), _unit(rng, 2000, 32)
    exact_scores, exact_idx = search(q, docs, k=5)
    scores, idx = faiss_search(q, docs, k=5)
    np.testing.assert_array_equal(idx, exact_idx)
    np.testing.assert_allclose(scores, exact_scores, atol=1e-5)


def test_ivf_backend_finds_most_of_the_exact_neighbours():
    pytest.importorskip("faiss", reason="faiss is not installed (pip install 'xling[faiss]')")
    from xling.tasks.retrieval.ann import recall_at_k

    rng = np.random.default_rng(4)
    centres = rng.standard_normal((40, 32))
    docs = centres[rng.integers(0, 40, 3000)] + rng.standard_normal((3000, 32))
    docs = (docs / np.linalg.norm(docs, axis=1, keepdims=True)).astype(np.float32)
    q = docs[:200] + 0.05 * rng.standard_normal((200, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    exact_scores, exact_idx = search(q, docs, k=5)
    scores, idx = search(q, docs, k=5, backend="ivf")  # 219 lists, 16 visited
    assert 0.9 <= recall_at_k(idx, exact_idx) < 1.0
    assert np.array_equal(idx[:, 0], exact_idx[:, 0])  # the nearest (the query's own row) is always found
    same = idx == exact_idx
    np.testing.assert_allclose(scores[same], exact_scores[same], atol=1e-5)  # re-scored: exact cosines


def test_vector_files_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    v = _unit(rng, 4, 8)
    write_vectors(tmp_path / "out" / "en", v, ["a", "b", "c", "d"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["en.ids", "en.npy"]  # no temporary files left
    back, ids = read_vectors(tmp_path / "out" / "en.npy")
    np.testing.assert_array_equal(back, v)
    assert back.dtype == np.float32 and ids == ["a", "b", "c", "d"]
    assert isinstance(back, np.memmap) and not back.flags.writeable  # paged in by search, never read whole
    scores, idx = search(v[:2], back, k=1)  # search takes the mapped array as it is
    np.testing.assert_array_equal(idx[:, 0], [0, 1])
    (tmp_path / "out" / "en.ids").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(XlingError, match="2 ids for 4 vectors"):
        read_vectors(tmp_path / "out" / "en")


def test_default_layer_comes_from_the_retrieval_evaluation(tmp_path):
    assert default_layer(tmp_path) == -1
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "retrieval.json").write_text(json.dumps({"metrics": {"retrieval.layer": 1}}))
    assert default_layer(tmp_path) == 1


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_embed_keeps_input_order_despite_length_sorting(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XLING_PRECISION_TABLE", "fp32")  # exact: bf16 kernels may round differently per batch shape
    monkeypatch.setattr("xling.tasks.retrieval.embed.BLOCK", 2)  # the file embedded 2 lines at a time
    texts = ["In the beginning was the word, and the word was with God, and the word was God.", "Light.",
             "He came to his own, and his own did not receive him.", "", "Grace and truth (7)."]
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    code = main(["embed", "--run", str(tiny_run), "--lang", "en", "--input", str(tmp_path / "in.txt"),
                 "--out", str(tmp_path / "v" / "en"), "--batch-size", "2", "--layer", "1", "--no-pool-specials"])
    assert code == 0, capsys.readouterr().err
    vecs, ids = read_vectors(tmp_path / "v" / "en")
    assert ids == ["1", "2", "3", "4", "5"] and vecs.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    model, tok = load_encoder(tiny_run)
    alone = np.concatenate([embed_texts(model, tok, [t], "en", layer=1, pool_specials=False) for t in texts])
    np.testing.assert_allclose(vecs, alone, atol=1e-5)  # row i is line i, whatever the batch order was
    other = embed_texts(model, tok, texts, "en", layer=2, pool_specials=False)
    assert not np.allclose(vecs, other)  # --layer was applied


def test_retrieve_command_tsv_and_jsonl(tiny_run, tmp_path, capsys):
    from xling.corpus import Corpus

    corpus = Corpus(tiny_run / "corpus")
    en, fr = corpus.texts("test", "en")[:12], corpus.texts("test", "fr")[:12]
    (tmp_path / "en.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    (tmp_path / "en2.txt").write_text("\n".join(reversed(en)) + "\n", encoding="utf-8")
    (tmp_path / "fr.txt").write_text("\n".join(fr) + "\n", encoding="utf-8")
    base = ["retrieve", "--run", str(tiny_run), "--queries", str(tmp_path / "en.txt")]
    code = main([*base, "--docs", str(tmp_path / "en2.txt"), "--src", "en", "--tgt", "en", "-k", "3"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [r.split("\t") for r in out.splitlines()]
    assert rows[0] == ["query_id", "rank", "doc_id", "score", "query", "doc"] and len(rows) == 1 + 12 * 3
    top = [r for r in rows[1:] if r[1] == "1"]
    for qid, _, did, score, query, doc in top:  # the same sentence, reversed file: line i <-> line 13 - i
        assert int(did) == 13 - int(qid) and query == doc and float(score) == pytest.approx(1.0, abs=1e-5)
    code = main([*base, "--docs", str(tmp_path / "fr.txt"), "--src", "en", "--tgt", "fr", "-k", "2",
                 "--format", "jsonl", "--out", str(tmp_path / "hits.jsonl")])
    assert code == 0
    lines = [json.loads(x) for x in (tmp_path / "hits.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [x["query"] for x in lines] == en and all(len(x["hits"]) == 2 for x in lines)
    assert all(h["doc"] == fr[int(h["doc_id"]) - 1] for x in lines for h in x["hits"])
    assert all(x["hits"][0]["score"] >= x["hits"][1]["score"] for x in lines)
    # vectors from `xling embed` give the same neighbours as text
    for lang, name in (("en", "en"), ("fr", "fr")):
        assert main(["embed", "--run", str(tiny_run), "--lang", lang, "--input", str(tmp_path / f"{name}.txt"),
                     "--out", str(tmp_path / f"{name}")]) == 0
    capsys.readouterr()
    assert main(["retrieve", "--run", str(tiny_run), "--queries", str(tmp_path / "en.npy"),
                 "--docs", str(tmp_path / "fr.npy"), "-k", "2", "--format", "jsonl"]) == 0
    from_vectors = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [[h["doc_id"] for h in x["hits"]] for x in from_vectors] == [[h["doc_id"] for h in x["hits"]]
                                                                         for x in lines]


def test_retrieve_warns_when_both_files_are_one_language(tiny_run, tmp_path, capsys):
    from xling.corpus import Corpus

    en = Corpus(tiny_run / "corpus").texts("test", "en")[:10]
    (tmp_path / "a.txt").write_text("\n".join(en) + "\n", encoding="utf-8")
    code = main(["retrieve", "--run", str(tiny_run), "--queries", str(tmp_path / "a.txt"), "--docs",
                 str(tmp_path / "a.txt"), "--src", "en", "--tgt", "fr", "-k", "1"])
    err = capsys.readouterr().err
    assert code == 0 and "both look like en" in err and "cross-lingual en->fr" in err


def test_commands_reject_bad_input_with_one_line(tiny_run, tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text("In the beginning\nThe light\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    np.save(tmp_path / "a.npy", np.ones((2, 8), np.float32))
    np.save(tmp_path / "b.npy", np.ones((2, 6), np.float32))
    run = ["--run", str(tiny_run)]
    embed = ["embed", *run, "--out", str(tmp_path / "o")]
    retrieve = ["retrieve", *run, "--src", "en", "--tgt", "fr"]
    cases = [
        ([*embed, "--lang", "en", "--input", str(tmp_path / "missing.txt")], "does not exist"),
        ([*embed, "--lang", "en", "--input", str(tmp_path / "empty.txt")], "empty"),
        ([*embed, "--lang", "xx", "--input", str(good)], "<xx>"),
        ([*embed, "--lang", "en", "--input", str(good), "--layer", "9"], "out of range"),
        (["embed", "--run", str(tmp_path / "norun"), "--lang", "en", "--input", str(good), "--out", "o"],
         "does not exist"),
        ([*retrieve, "--queries", str(good), "--docs", str(tmp_path / "missing.txt")], "does not exist"),
        ([*retrieve, "--queries", str(tmp_path / "empty.txt"), "--docs", str(good)], "empty"),
        (["retrieve", *run, "--src", "en", "--tgt", "zz", "--queries", str(good), "--docs", str(good)], "<zz>"),
        (["retrieve", *run, "--queries", str(tmp_path / "a.npy"), "--docs", str(tmp_path / "b.npy")], "dimension"),
        ([*retrieve, "--queries", str(good), "--docs", str(good), "-k", "0"], "-k"),
    ]
    for argv, needle in cases:
        code = main(argv)
        assert code == 2, argv
        assert needle in _one_line(capsys.readouterr().err), argv
    assert not (tmp_path / "o.npy").exists()


def test_retrieve_backend_faiss_equals_exact_or_says_how_to_install(tmp_path, capsys):
    rng = np.random.default_rng(6)
    write_vectors(tmp_path / "q", _unit(rng, 20, 16), [f"q{i}" for i in range(20)])
    write_vectors(tmp_path / "d", _unit(rng, 300, 16), [f"d{i}" for i in range(300)])
    argv = ["retrieve", "--run", str(tmp_path), "--queries", str(tmp_path / "q.npy"), "--docs",
            str(tmp_path / "d.npy"), "-k", "3"]
    assert main(argv) == 0  # vectors only: no model is loaded
    exact = capsys.readouterr().out
    code = main([*argv, "--backend", "faiss"])
    out, err = capsys.readouterr()
    try:
        import faiss  # noqa: F401
    except ImportError:
        assert code == 2 and "faiss-cpu" in _one_line(err)
        return
    assert code == 0
    assert [r.split("\t")[:3] for r in out.splitlines()] == [r.split("\t")[:3] for r in exact.splitlines()]


# ---------------------------------------------------------------------------- embed in several processes

def _embed_worker(rank: int, world: int, run: str, src: str, out: str, result: str) -> None:
    from xling.tasks.retrieval.embed import run_embed

    join_gloo(rank, world, f"{result}.gloo-store", XLING_PRECISION_TABLE="fp32")
    try:
        summary, error = run_embed(run, "en", src, out, layer=1, batch_size=3), None
    except XlingError as e:
        summary, error = None, str(e)
    Path(f"{result}.{rank}").write_text(json.dumps({"summary": summary, "error": error}), encoding="utf-8")
    torch.distributed.destroy_process_group()


def _embed_in_two_processes(run: Path, src: Path, out: Path) -> list[dict]:
    import torch.multiprocessing as mp

    result = out.parent.parent / f"{out.parent.name}-result"  # beside the output folder, not in it
    Path(f"{result}.gloo-store").unlink(missing_ok=True)
    mp.spawn(_embed_worker, args=(2, str(run), str(src), str(out), str(result)), nprocs=2, join=True)
    return [json.loads(Path(f"{result}.{r}").read_text(encoding="utf-8")) for r in range(2)]


def test_embed_in_two_processes_writes_the_one_process_file(tiny_run, tmp_path, monkeypatch):
    from xling.corpus import Corpus
    from xling.tasks.retrieval.embed import run_embed

    monkeypatch.setenv("XLING_PRECISION_TABLE", "fp32")
    corpus = Corpus(tiny_run / "corpus")
    texts = corpus.texts("test", "en") + corpus.texts("valid", "en")
    texts[7] = ""  # a blank line is a row too
    src = tmp_path / "in.txt"
    src.write_text("\n".join(texts), encoding="utf-8")  # no newline after the last line
    one = run_embed(tiny_run, "en", src, tmp_path / "one" / "en", layer=1, batch_size=3)
    results = _embed_in_two_processes(tiny_run, src, tmp_path / "two" / "en")
    assert [r["error"] for r in results] == [None, None]
    assert results[0]["summary"]["n"] == one["n"] == len(texts) > 20 and results[0]["summary"]["processes"] == 2
    v1, ids1 = read_vectors(tmp_path / "one" / "en")
    v2, ids2 = read_vectors(tmp_path / "two" / "en")
    assert ids1 == ids2 == [str(i) for i in range(1, len(texts) + 1)]
    # each process sorts and batches its own half: other padding, other summation order, the same vectors
    np.testing.assert_allclose(v2, v1, atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["en.ids", "en.npy"]  # the parts are gone


def test_embed_error_in_one_process_is_every_process_error_and_leaves_nothing(tiny_run, tmp_path):
    from xling.corpus import Corpus

    texts = Corpus(tiny_run / "corpus").texts("test", "en")
    src = tmp_path / "in.txt"
    src.write_bytes(("\n".join(texts[:-1]) + "\n").encode() + b"caf\xe9\n")  # Latin-1 in the second half
    (tmp_path / "two").mkdir()
    results = _embed_in_two_processes(tiny_run, src, tmp_path / "two" / "en")
    errors = [r["error"] for r in results]
    assert errors[0] == errors[1] and f"line {len(texts)}: bytes are not UTF-8" in errors[0] and "iconv" in errors[0]
    assert list((tmp_path / "two").iterdir()) == []
