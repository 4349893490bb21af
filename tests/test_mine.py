"""Bitext mining: LASER's ratio margin against a hand computation, the three modes, planted pairs, F1, CLI."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from xling.cli import main
from xling.errors import XlingError
from xling.tasks.retrieval.mine import (
    best_by_margin,
    gold_pairs,
    knn_mean,
    margin_matrix,
    mine,
    mine_eval,
    mine_eval_run,
)

from .conftest import join_gloo, tiny_segments

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference_margin(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Artetxe & Schwenk's ratio margin written out term by term with plain loops."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cos = x @ y.T
    out = np.zeros_like(cos)
    for i in range(len(x)):
        for j in range(len(y)):
            nn_x = np.sort(cos[i])[::-1][:k].sum() / (2 * k)  # sum over NN_k(x) of cos(x, z) / 2k
            nn_y = np.sort(cos[:, j])[::-1][:k].sum() / (2 * k)  # sum over NN_k(y) of cos(y, z) / 2k
            out[i, j] = cos[i, j] / (nn_x + nn_y)
    return out


def build_tiny_run(root: Path, chapters: int = 20) -> Path:
    """corpus (en, fr, ru) -> tokenizer -> shards -> an untrained tiny model saved as a checkpoint."""
    from xling.checkpoint import save_checkpoint
    from xling.corpus import Corpus, CorpusConfig, build_corpus
    from xling.model import ModelConfig, Transformer
    from xling.shards import ShardConfig, Shards, build_shards
    from xling.tokenizer import TokenizerConfig, tokenizer_hash, train_tokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("xling.corpus.source_units", lambda cfg, size=None: [None])
        mp.setattr("xling.corpus.read_unit", lambda cfg, unit: iter(tiny_segments(chapters)))
        build_corpus(CorpusConfig(langs=["en", "fr", "ru"], valid_fraction=0.2, test_fraction=0.2),
                     root / "corpus")
    corpus = Corpus(root / "corpus")
    train_tokenizer(corpus, TokenizerConfig(vocab_size=300), root / "tokenizer", alpha=0.3)
    build_shards(corpus, root / "tokenizer", ShardConfig(), root / "shards")
    torch.manual_seed(0)
    cfg = ModelConfig.preset("tiny", vocab_size=Shards(root / "shards").vocab_size, n_langs=3)
    save_checkpoint(root / "checkpoints", 1, model_state=Transformer(cfg).state_dict(),
                    config={"model": asdict(cfg)}, tokenizer_sha256=tokenizer_hash(root / "tokenizer"))
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return build_tiny_run(tmp_path_factory.mktemp("mine") / "run")


# ---------------------------------------------------------------------------- the margin score

def test_margin_equals_a_hand_computed_example():
    # 3 source and 3 target unit vectors in the plane, k = 2
    x = _unit([[1, 0], [0, 1], [1, 1]])
    y = _unit([[1, 0], [0.6, 0.8], [0, 1]])
    m = margin_matrix(x, y, k=2)
    np.testing.assert_allclose(m, _reference_margin(x, y, 2), rtol=1e-5)
    # one entry by hand: cos(x0, y1) = 0.6; x0's 2 nearest targets: 1.0 and 0.6 -> mean 0.8;
    # y1's 2 nearest sources: x2 (0.6 + 0.8) / sqrt 2 = 0.98995 and x1 0.8 -> mean 0.894975
    assert m[0, 1] == pytest.approx(0.6 / ((1.0 + 0.6) / 4 + (1.4 / np.sqrt(2) + 0.8) / 4), rel=1e-5)
    np.testing.assert_allclose(knn_mean(x, y, 2), [0.8, 0.9, (1.4 / np.sqrt(2) + 1 / np.sqrt(2)) / 2], rtol=1e-5)


def test_margin_on_random_vectors_and_chunked_best_match():
    rng = np.random.default_rng(0)
    x, y = _unit(rng.standard_normal((40, 8))), _unit(rng.standard_normal((30, 8)))
    ref = _reference_margin(x, y, 4)
    np.testing.assert_allclose(margin_matrix(x, y), ref, rtol=1e-5)
    rx, ry = knn_mean(x, y, 4), knn_mean(y, x, 4)
    for max_bytes in (4 * 30, 4 * 30 * 7, 1 << 20):  # 1 row, 7 rows, all rows per chunk
        best, score = best_by_margin(x, y, rx, ry, max_bytes=max_bytes)
        np.testing.assert_array_equal(best, ref.argmax(1))
        np.testing.assert_allclose(score, ref.max(1), rtol=1e-5)


def test_modes_forward_backward_intersection():
    rng = np.random.default_rng(1)
    x, y = _unit(rng.standard_normal((25, 6))), _unit(rng.standard_normal((35, 6)))
    ref = _reference_margin(x, y, 4)
    fwd, bwd = ref.argmax(1), ref.argmax(0)  # best target per source, best source per target

    def pairs(m):
        return sorted(zip(m.src.tolist(), m.tgt.tolist(), strict=True))

    f = mine(x, y, mode="forward", threshold=-np.inf)
    assert pairs(f) == [(i, int(fwd[i])) for i in range(25)]
    b = mine(x, y, mode="backward", threshold=-np.inf)
    assert pairs(b) == sorted((int(bwd[j]), j) for j in range(35))
    both = mine(x, y, mode="intersection", threshold=-np.inf)
    mutual = [(i, int(fwd[i])) for i in range(25) if bwd[fwd[i]] == i]
    assert pairs(both) == mutual and 0 < len(mutual) < 25
    assert set(pairs(both)) == set(pairs(f)) & set(pairs(b))
    # scores are the margins, best first; a threshold keeps exactly the pairs at or above it
    np.testing.assert_allclose(both.score, ref[both.src, both.tgt], rtol=1e-5)
    assert np.all(np.diff(both.score) <= 0)
    cut = float(np.median(f.score))
    kept = mine(x, y, mode="forward", threshold=cut)
    assert pairs(kept) == sorted(p for p, s in zip(pairs(f), f.score[np.lexsort((f.tgt, f.src))], strict=True)
                                 if s >= cut)


def test_mining_recovers_a_planted_permutation_of_noisy_vectors():
    rng = np.random.default_rng(2)
    n, d = 400, 32
    x = _unit(rng.standard_normal((n, d)))
    perm = rng.permutation(n)  # target row r is the noisy translation of source perm[r]
    y = _unit(x[perm] + 0.5 * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d))  # noise norm ~0.5
    found = mine(x, y, threshold=1.0)
    inverse = np.argsort(perm)  # source i is at target row inverse[i]
    assert len(found) >= 0.98 * n
    assert np.array_equal(found.tgt, inverse[found.src])  # every mined pair is right
    res = mine_eval(x, y, np.stack([np.arange(n), inverse], 1))
    assert res["precision"] == 1.0 and res["f1"] >= 0.98
    # unpaired sentences (targets with no source) are not forced into pairs above the threshold
    extra = _unit(rng.standard_normal((100, d)))
    found = mine(x[:300], np.concatenate([y, extra]), threshold=1.05)
    assert np.array_equal(found.tgt, inverse[found.src]) and len(found) >= 0.95 * 300


def test_margin_beats_plain_cosine_against_a_hub():
    # vectors share a common direction c (like real sentence embeddings); a target equal to c is close to
    # every source (a hub): plain cosine often picks it, the margin discounts it by its neighbourhood
    rng = np.random.default_rng(0)
    n, d = 50, 16
    c = _unit(rng.standard_normal((1, d)))
    z = rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    x = _unit(1.5 * c + z)
    y = np.concatenate([_unit(1.5 * c + z + rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)), c])
    cos_best = (x @ y.T).argmax(1)
    margin = mine(x, y, mode="forward", threshold=-np.inf)
    assert (margin.tgt == margin.src).sum() >= (cos_best == np.arange(n)).sum() + 8
    assert (margin.tgt == n).sum() < (cos_best == n).sum() / 2  # the hub is chosen far less often
    gold = np.stack([np.arange(n), np.arange(n)], 1)
    assert mine_eval(x, y, gold, mode="forward", threshold=-np.inf)["recall"] == pytest.approx(
        float((margin.tgt == margin.src).mean()))


def test_mine_eval_counts_precision_recall_f1():
    x = _unit(np.eye(4) + 0.01)
    res = mine_eval(x, x, np.array([[0, 0], [1, 1], [2, 2], [3, 3], [3, 0]]), threshold=0.0)
    # all 4 identity pairs mined and correct; 5 gold pairs (one unreachable: 3 -> 0 as well)
    assert (res["mined"], res["correct"], res["gold"]) == (4, 4, 5)
    assert res["precision"] == 1.0 and res["recall"] == 0.8 and res["f1"] == pytest.approx(2 * 0.8 / 1.8)
    assert gold_pairs(["a", "b", "c"], ["c", "x", "a"]).tolist() == [[0, 2], [2, 0]]
    with pytest.raises(XlingError, match="mode"):
        mine(x, x, mode="union")
    with pytest.raises(XlingError, match="dimension"):
        mine(x, x[:, :3])


# ---------------------------------------------------------------------------- on a tiny run

def test_mining_f1_on_a_tiny_run(tiny_run):
    from xling.checkpoint import load_model
    from xling.corpus import Corpus
    from xling.evaluate import EvalContext
    from xling.shards import Shards
    from xling.tasks.retrieval.mine import eval_mining
    from xling.tokenizer import load_tokenizer

    # the same language against itself, shuffled: identical vectors, every verse found by its key
    same = mine_eval_run(tiny_run, "en", "en")
    assert same["gold"] == Shards(tiny_run / "shards").num_segments("test", "en") > 10
    assert same["f1"] == 1.0
    model, _, _ = load_model(tiny_run / "checkpoints")
    ctx = EvalContext(run_dir=tiny_run, model=model, shards=Shards(tiny_run / "shards"),
                      tokenizer=load_tokenizer(tiny_run / "tokenizer"), corpus=Corpus(tiny_run / "corpus"), step=1)
    out = eval_mining(ctx)
    assert set(out["metrics"]) == {"mining.f1.en-fr", "mining.f1.en-ru", "mining.f1_mean", "mining.items"}
    assert out["metrics"]["mining.items"] == 2 * same["gold"]  # the gold pairs behind the mean, for the headline
    for lg in ("fr", "ru"):  # the evaluation (cached all-layer vectors) equals the stand-alone function
        res = mine_eval_run(tiny_run, "en", lg)
        assert res["gold"] == same["gold"]  # every test verse has its translation
        assert out["metrics"][f"mining.f1.en-{lg}"] == pytest.approx(res["f1"])
        assert 0 <= res["f1"] <= 1
    row = out["sections"][0]["blocks"][1]["rows"][0]
    assert row[0] == "en-fr" and row[3] == pytest.approx(out["metrics"]["mining.f1.en-fr"])


def test_mine_command_aligns_a_shuffled_file(tiny_run, tmp_path, capsys):
    from xling.corpus import Corpus

    lines = Corpus(tiny_run / "corpus").texts("test", "en")
    perm = np.random.default_rng(0).permutation(len(lines))
    (tmp_path / "a.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("\n".join(lines[p] for p in perm) + "\n", encoding="utf-8")
    code = main(["mine", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--run", str(tiny_run),
                 "--src", "en", "--tgt", "en", "--out", str(tmp_path / "pairs.tsv")])
    assert code == 0, capsys.readouterr().err
    rows = [r.split("\t") for r in (tmp_path / "pairs.tsv").read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["score", "src_id", "tgt_id", "src", "tgt"]
    assert len(rows) - 1 == len(lines)
    for score, src_id, tgt_id, src, tgt in rows[1:]:  # ids are line numbers from 1
        assert lines[perm[int(tgt_id) - 1]] == lines[int(src_id) - 1] == src == tgt and float(score) > 1
    assert [float(r[0]) for r in rows[1:]] == sorted((float(r[0]) for r in rows[1:]), reverse=True)


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_mine_command_bad_input(tiny_run, tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text("In the beginning\nThe light\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    cases = [
        ([str(tmp_path / "missing.txt"), str(good), "--src", "en", "--tgt", "fr"], "does not exist"),
        ([str(tmp_path / "empty.txt"), str(good), "--src", "en", "--tgt", "fr"], "empty"),
        ([str(good), str(good), "--src", "en", "--tgt", "xx"], "<xx>"),
        ([str(good), str(good), "--src", "en", "--tgt", "fr", "-k", "0"], "-k"),
    ]
    for argv, needle in cases:
        code = main(["mine", *argv, "--run", str(tiny_run)])
        assert code == 2
        assert needle in _one_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------- approximate neighbours (ivf backend)

def _needs_faiss():
    return pytest.importorskip("faiss", reason="faiss is not installed (pip install 'xling[faiss]'); the ivf and "
                                               "faiss backends are untested here")


def _clustered_pairs(n: int, d: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Topic-clustered unit vectors x and their noisy translations y in shuffled order; gold (n, 2)."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((int(np.sqrt(n)), d))
    x = topics[rng.integers(0, len(topics), n)] + rng.standard_normal((n, d))
    perm = rng.permutation(n)  # target row r is the translation of source perm[r]
    y = x[perm] + 0.35 * rng.standard_normal((n, d)) + 0.3 * rng.standard_normal(d)  # + a language shift
    return _unit(x), _unit(y), np.stack([perm, np.arange(n)], 1)[np.argsort(perm)]


def _laser_reference(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """LASER's mine_bitexts: the margin-best of each side's k cosine neighbours (fwd (N,), bwd (M,))."""
    ref = _reference_margin(x, y, k)
    cos = x @ y.T
    nn_x = np.argsort(-cos, 1, kind="stable")[:, :k]  # k nearest targets of each source
    nn_y = np.argsort(-cos.T, 1, kind="stable")[:, :k]
    fwd = nn_x[np.arange(len(x)), ref[np.arange(len(x))[:, None], nn_x].argmax(1)]
    bwd = nn_y[np.arange(len(y)), ref.T[np.arange(len(y))[:, None], nn_y].argmax(1)]
    return fwd, bwd


def test_recall_at_k_counts_shared_neighbours():
    from xling.tasks.retrieval.ann import recall_at_k

    exact = np.array([[0, 1, 2, 3], [4, 5, 6, 7]])
    assert recall_at_k(exact, exact) == 1.0
    assert recall_at_k(np.array([[3, 2, 1, 9], [4, 8, 8, 8]]), exact) == pytest.approx((3 + 1) / 8)  # order-free


def test_ivf_visiting_every_list_finds_the_exact_neighbours():
    _needs_faiss()
    from xling.encode import nearest
    from xling.tasks.retrieval.ann import build_ivf, ivf_search

    x, y, _ = _clustered_pairs(2000)
    index = build_ivf(y)
    assert index.nlist == 179 and index.ntotal == 2000  # 4 sqrt(N) lists
    scores, idx = ivf_search(x, y, 4, nprobe=index.nlist, index=index)
    ref_scores, ref_idx = nearest(x, y, 4)
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(scores, ref_scores, atol=1e-5)  # exact cosines, re-scored from the vectors


def test_laser_rule_backends_equal_the_reference_in_every_mode():
    _needs_faiss()
    rng = np.random.default_rng(3)
    x, y = _unit(rng.standard_normal((60, 8))), _unit(rng.standard_normal((45, 8)))
    fwd, bwd = _laser_reference(x, y, 4)
    ref = _reference_margin(x, y, 4)
    def pairs(m):
        return sorted(zip(m.src.tolist(), m.tgt.tolist(), strict=True))

    for backend, extra in (("faiss", {}), ("ivf", {"nprobe": 1000})):  # ivf visiting every list: exact neighbours
        f = mine(x, y, mode="forward", threshold=-np.inf, backend=backend, **extra)
        assert pairs(f) == [(i, int(fwd[i])) for i in range(60)]
        np.testing.assert_allclose(f.score, ref[f.src, f.tgt], rtol=1e-5)  # margins over the k neighbours
        b = mine(x, y, mode="backward", threshold=-np.inf, backend=backend, **extra)
        assert pairs(b) == sorted((int(bwd[j]), j) for j in range(45))
        both = mine(x, y, threshold=-np.inf, backend=backend, **extra)
        mutual = [(i, int(fwd[i])) for i in range(60) if bwd[fwd[i]] == i]
        assert pairs(both) == mutual and len(mutual) > 5


def test_approximate_mining_against_exact_on_memory_mapped_vectors(tmp_path):
    _needs_faiss()
    from xling.tasks.retrieval.ann import default_nlist
    from xling.tasks.retrieval.retrieve import read_vectors, write_vectors

    n = 6000
    x, y, gold = _clustered_pairs(n)
    write_vectors(tmp_path / "x", x, [str(i) for i in range(n)])
    write_vectors(tmp_path / "y", y, [str(i) for i in range(n)])
    xm, ym = read_vectors(tmp_path / "x.npy")[0], read_vectors(tmp_path / "y.npy")[0]
    assert isinstance(xm, np.memmap) and default_nlist(n) == 310
    exact = mine_eval(x, y, gold)
    approx = mine_eval(xm, ym, gold, backend="ivf", recall_sample=1000)
    for way in ("src_tgt", "tgt_src"):  # nprobe tuned on 1,000 rows to recall@4 >= 0.98, far below every list
        assert approx[way]["tune_recall"] >= 0.98 and approx[way]["nprobe"] <= 64
    assert approx["recall_src_tgt"] >= 0.95 and approx["recall_tgt_src"] >= 0.95  # on 1,000 other rows
    assert approx["recall_src_tgt"] < 1 or approx["recall_tgt_src"] < 1  # some neighbours are missed ...
    assert abs(approx["f1"] - exact["f1"]) <= 0.01 and exact["f1"] > 0.9  # ... without changing what is mined
    # the same index settings on in-memory arrays give the same pairs
    a = mine(xm, ym, backend="ivf")
    b = mine(x, y, backend="ivf")
    assert np.array_equal(a.src, b.src) and np.array_equal(a.tgt, b.tgt)
    # a higher target tunes a larger nprobe (or every list), and a fixed nprobe is used as given
    hi = mine(x, y, backend="ivf", recall_target=1.0)
    assert hi.info["src_tgt"]["nprobe"] > approx["src_tgt"]["nprobe"] and hi.info["src_tgt"]["tune_recall"] > 0.99
    fixed = mine(x, y, backend="ivf", nprobe=2)
    assert fixed.info["src_tgt"] == {"nlist": 310, "nprobe": 2}


def test_mine_command_ivf_backend_prints_recall(tmp_path, capsys):
    _needs_faiss()
    from xling.tasks.retrieval.retrieve import write_vectors

    x, y, gold = _clustered_pairs(3000, seed=1)
    write_vectors(tmp_path / "x", x, [f"s{i}" for i in range(3000)])
    write_vectors(tmp_path / "y", y, [f"t{i}" for i in range(3000)])
    argv = ["mine", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--run", str(tmp_path)]
    assert main([*argv, "--out", str(tmp_path / "exact.tsv")]) == 0  # vectors only: no model is loaded
    assert main([*argv, "--backend", "ivf", "--recall-sample", "500", "--out", str(tmp_path / "ivf.tsv")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("mine: ") and "backend exact" in err[0]
    assert "backend ivf; source->target nlist 219, nprobe " in err[1] and "tuned: recall 0.9" in err[1]
    recalls = [float(v.split()[0]) for v in err[2].split("source->target ")[1].split("target->source ")]
    assert "500 sampled rows" in err[2] and min(recalls) >= 0.95

    def pairs(name):
        return {tuple(r.split("\t")[1:3]) for r in (tmp_path / name).read_text().splitlines()[1:]}

    truth = {(f"s{i}", f"t{j}") for i, j in gold.tolist()}
    exact, ivf = pairs("exact.tsv"), pairs("ivf.tsv")
    assert len(exact & truth) >= 0.95 * 3000 and len(ivf ^ exact) <= 0.01 * 3000


def test_mine_without_faiss_says_how_to_install_and_exact_still_works(tmp_path, capsys, monkeypatch):
    from xling.tasks.retrieval.retrieve import write_vectors

    x, y, _ = _clustered_pairs(200, seed=2)
    write_vectors(tmp_path / "x", x, [str(i) for i in range(200)])
    write_vectors(tmp_path / "y", y, [str(i) for i in range(200)])
    monkeypatch.setitem(__import__("sys").modules, "faiss", None)  # `import faiss` raises ImportError
    argv = ["mine", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"), "--run", str(tmp_path), "--out",
            str(tmp_path / "o.tsv")]
    for backend in ("ivf", "faiss"):
        assert main([*argv, "--backend", backend]) == 2
        line = _one_line(capsys.readouterr().err)
        assert f"backend {backend} needs faiss: pip install 'xling[faiss]'" in line and "exact" in line
    assert not (tmp_path / "o.tsv").exists()
    assert main(argv) == 0 and len((tmp_path / "o.tsv").read_text().splitlines()) > 150
    capsys.readouterr()
    for bad, needle in ((["--nprobe", "0"], "--nprobe"), (["--recall-sample", "-1"], "--recall-sample"),
                        (["--recall-target", "1.5"], "--recall-target"), (["--recall-target", "nan"], "finite")):
        assert main([*argv, "--backend", "ivf", *bad]) == 2
        assert needle in _one_line(capsys.readouterr().err)


# ---------------------------------------------------------------------------- mining in several processes

def _recalls(info: dict) -> dict:
    """The sampled recall of a mining's info, without its timing."""
    return {k: v for k, v in info.items() if k.startswith("recall_") and k != "recall_seconds"}


def _mine_worker(rank: int, world: int, root: str) -> None:
    import json

    from xling.tasks.retrieval.mine import run_mine

    join_gloo(rank, world, f"{root}/gloo-store")
    out = {}
    for backend, mode in (("exact", "intersection"), ("exact", "forward"), ("ivf", "intersection")):
        found = run_mine(root, f"{root}/x.npy", f"{root}/y.npy", backend=backend, mode=mode, recall_sample=700,
                         out=f"{root}/two-{backend}-{mode}.tsv")
        out[f"{backend}-{mode}"] = _recalls(found.info)
    Path(f"{root}/result.{rank}").write_text(json.dumps(out), encoding="utf-8")
    torch.distributed.destroy_process_group()


def test_mining_in_two_processes_writes_what_one_process_writes(tmp_path):
    """`torchrun -m xling -- mine`: each process searches half the rows of both sides (3,001 and 2,999: uneven
    halves), rank 0 writes the pairs; the same pairs, scores and sampled recall as one process."""
    import json

    import torch.multiprocessing as mp

    from xling.tasks.retrieval.mine import run_mine
    from xling.tasks.retrieval.retrieve import write_vectors

    _needs_faiss()
    x, y, _ = _clustered_pairs(3001, seed=4)
    y = y[:2999]
    write_vectors(tmp_path / "x", x, [f"s{i}" for i in range(len(x))])
    write_vectors(tmp_path / "y", y, [f"t{i}" for i in range(len(y))])
    mp.spawn(_mine_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"result.{r}").read_text(encoding="utf-8")) for r in range(2)]
    assert results[0] == results[1]  # every process returns the same
    for backend, mode in (("exact", "intersection"), ("exact", "forward"), ("ivf", "intersection")):
        one = run_mine(tmp_path, tmp_path / "x.npy", tmp_path / "y.npy", backend=backend, mode=mode,
                       recall_sample=700, out=tmp_path / f"one-{backend}-{mode}.tsv")
        rows = [[r.split("\t") for r in (tmp_path / f"{n}-{backend}-{mode}.tsv").read_text().splitlines()[1:]]
                for n in ("one", "two")]
        assert [r[1:] for r in rows[0]] == [r[1:] for r in rows[1]] and len(rows[0]) > 2000
        np.testing.assert_allclose([float(r[0]) for r in rows[1]], [float(r[0]) for r in rows[0]], atol=2e-6)
        recall = json.loads(json.dumps(_recalls(one.info)))
        assert results[0][f"{backend}-{mode}"] == recall
        if backend == "ivf":
            assert 0.9 <= recall["recall_src_tgt"] <= 1 and recall["recall_sample"] == [700, 700]
