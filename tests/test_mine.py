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

from .conftest import tiny_segments

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
