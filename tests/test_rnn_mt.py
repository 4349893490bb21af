"""The RNN translation baseline on a hand-written shards directory: it overfits eight pairs in both
directions and gives the targets back by beam search; padding changes no output; beam size 1 equals
greedy; batched decoding equals one row at a time; save/load round trip; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xling.errors import XlingError
from xling.shards import Shards
from xling.tasks.translate.rnn import RNNConfig, RNNTranslator, load_rnn, save_rnn, train_rnn, translate_ids

LANGS = ["en", "fr", "ru"]
TAGS = {lang: 5 + i for i, lang in enumerate(LANGS)}
VOCAB = 48


def synthetic(n: int = 8, seed: int = 0) -> dict[str, list[list[int]]]:
    """n "sentences" per language: fr is en reversed with every id shifted by 16 (needs attention);
    ru is en with ids shifted by 24 (kept without pairs)."""
    rng = np.random.default_rng(seed)
    en = [rng.integers(8, 24, size=int(rng.integers(3, 7))).tolist() for _ in range(n)]
    return {"en": en, "fr": [[t + 16 for t in s[::-1]] for s in en], "ru": [[t + 24 for t in s] for s in en]}


def write_shards(root: Path, data: dict[str, list[list[int]]]) -> Path:
    """The on-disk shards layout (INTERFACES.md) by hand; valid = the first two train pairs."""
    counts = {}
    for split, rows in (("train", data), ("valid", {k: v[:2] for k, v in data.items()})):
        (root / split / "pairs").mkdir(parents=True)
        for lang, segs in rows.items():
            np.concatenate([np.asarray(s, np.uint16) for s in segs]).tofile(root / split / f"{lang}.bin")
            offsets = np.cumsum([0] + [len(s) for s in segs]).astype(np.int64)
            np.save(root / split / f"{lang}.idx.npy", offsets)
            np.save(root / split / f"{lang}.chars.npy", np.asarray([len(s) for s in segs], np.int32))
            (root / split / f"{lang}.keys").write_text("".join(f"1.1.{i}\n" for i in range(len(segs))))
        n = len(rows["en"])
        np.save(root / split / "pairs" / "en-fr.npy", np.stack([np.arange(n)] * 2, 1).astype(np.int32))
        counts[split] = n
    meta = {"dtype": "uint16", "vocab_size": VOCAB, "tokenizer_sha256": "0" * 64, "langs": LANGS,
            "specials": {"pad": 0, "bos": 1, "eos": 2, "unk": 3, "mask": 4}, "lang_token_ids": TAGS,
            "pairs": {"en-fr": counts}}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


TINY = dict(emb_size=32, hidden_size=32, dropout=0.0, lr=1e-2, batch_size=8)
VARIANTS = {"general": RNNConfig(**TINY),  # Luong, whole-target decoder
            "additive+feed": RNNConfig(**TINY, attention="additive", input_feeding=True, layers=2)}


@torch.no_grad()
def greedy(model: RNNTranslator, srcs: list[list[int]], src: str, tgt: str, max_new: int) -> list[list[int]]:
    """Plain greedy decoding, one row at a time, straight from the model's encode and step."""
    out = []
    for s in srcs:
        ids = torch.tensor([[TAGS[src], *s, 2]])  # (1, S)
        states, keys, mask, h = model.encode(ids, torch.tensor([ids.shape[1]]))
        token, feed, row = torch.tensor([TAGS[tgt]]), torch.zeros(1, model.cfg.emb_size), []
        for _ in range(max_new):
            logits, h, feed = model.step(token, h, feed, states, keys, mask)  # (1, V)
            token = logits.argmax(-1)  # (1,)
            if int(token) == 2:
                break
            row.append(int(token))
        out.append(row)
    return out


pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Shards:
    return Shards(write_shards(tmp_path_factory.mktemp("rnn_shards"), synthetic()))


@pytest.fixture(scope="module", params=list(VARIANTS))
def trained(request, shards):
    torch.set_num_threads(1)
    model, summary = train_rnn(shards, [("en", "fr"), ("fr", "en")], VARIANTS[request.param],
                               max_steps=80, seed=0)
    return model, summary


def test_overfits_tiny_pairs_and_beam_search_gives_targets_back(trained, shards):
    model, summary = trained
    assert summary["steps"] == 80 and summary["pairs"] == 16  # 8 pairs x 2 directions
    assert summary["loss"] < 0.05 and summary["valid_loss"] < 0.05
    data = synthetic()
    # early_stopping=False: with a model this sure of itself, the other beams are junk that ends early, and
    # stopping at num_beams ended hypotheses (True) can drop the right one, which ends last
    assert translate_ids(model, data["en"], "fr", src_lang_tag="en", early_stopping=False) == data["fr"]
    en = translate_ids(model, data["fr"], TAGS["en"], src_lang_tag=TAGS["fr"], early_stopping=False)
    assert en == data["en"]
    assert translate_ids(model, data["fr"], "en", src_lang_tag="fr", num_beams=1) == data["en"]
    # complete encoder inputs `<src_tag> ids </s>` are taken as they are
    assert translate_ids(model, [[TAGS["en"], *s, 2] for s in data["en"]], "fr", num_beams=1) == data["fr"]


def test_beam_one_equals_greedy_and_batching_changes_nothing(trained):
    model, _ = trained
    data = synthetic(6, seed=1)  # unseen inputs: outputs are imperfect, of various lengths
    srcs = data["en"] + data["fr"]
    for tgt in ("fr", "en", "ru"):
        want = greedy(model, srcs, "en", tgt, max_new=12)
        assert translate_ids(model, srcs, tgt, num_beams=1, max_new_tokens=12, src_lang_tag="en") == want
    batched = translate_ids(model, srcs, "fr", num_beams=3, src_lang_tag="en")
    assert batched == [translate_ids(model, [s], "fr", num_beams=3, src_lang_tag="en")[0] for s in srcs]
    with torch.autocast("cpu", dtype=torch.bfloat16):  # decoding stays fp32 inside a caller's autocast
        assert translate_ids(model, srcs, "fr", num_beams=3, src_lang_tag="en") == batched


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_padding_changes_no_output(variant):
    torch.manual_seed(0)
    model = RNNTranslator(VARIANTS[variant], VOCAB, TAGS).eval()
    rng = np.random.default_rng(0)
    src = [[5, *rng.integers(8, VOCAB, n).tolist(), 2] for n in (1, 7, 3, 11)]
    tgt = [[6, *rng.integers(8, VOCAB, n).tolist()] for n in (9, 2, 5, 4)]
    S, T = max(map(len, src)), max(map(len, tgt))
    s = torch.tensor([r + [0] * (S - len(r)) for r in src])  # (B, S) right-padded
    t = torch.tensor([r + [0] * (T - len(r)) for r in tgt])  # (B, T)
    with torch.no_grad():
        batch = model(s, torch.tensor([len(r) for r in src]), t)  # (B, T, V)
        for i in range(len(src)):
            alone = model(torch.tensor([src[i]]), torch.tensor([len(src[i])]), torch.tensor([tgt[i]]))[0]
            torch.testing.assert_close(batch[i, :len(tgt[i])], alone, atol=1e-5, rtol=1e-5)


def test_bf16_training_follows_fp32(shards):
    """precision="bf16" trains under autocast: same data order, a loss close to fp32's after 30 steps."""
    cfg = RNNConfig(**TINY)
    _, fp32 = train_rnn(shards, [("en", "fr")], cfg, max_steps=30, seed=0)
    _, bf16 = train_rnn(shards, [("en", "fr")], RNNConfig(**TINY, precision="bf16"), max_steps=30, seed=0)
    assert fp32["sentences"] == bf16["sentences"] == 30 * 8
    assert fp32["loss"] < 1.0 and abs(bf16["loss"] - fp32["loss"]) < 0.25 * fp32["loss"] + 0.05


def test_save_load_round_trip(trained, tmp_path):
    model, _ = trained
    save_rnn(model, tmp_path / "rnn")
    assert sorted(p.name for p in (tmp_path / "rnn").iterdir()) == ["config.json", "model.safetensors"]
    back = load_rnn(tmp_path / "rnn")
    assert back.cfg == model.cfg and back.lang_token_ids == model.lang_token_ids
    for k, v in model.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    srcs = synthetic(4, seed=2)["en"]
    assert translate_ids(back, srcs, "fr", src_lang_tag="en") == translate_ids(model, srcs, "fr",
                                                                               src_lang_tag="en")


def test_bad_input(shards, tmp_path):
    with pytest.raises(XlingError, match="'de' is not in the shards"):
        train_rnn(shards, [("en", "de")], RNNConfig(**TINY), max_steps=1)
    with pytest.raises(XlingError, match="no en-ru translation pairs"):
        train_rnn(shards, [("en", "ru")], RNNConfig(**TINY), max_steps=1)
    with pytest.raises(XlingError, match="two different languages"):
        train_rnn(shards, [("en", "en")], RNNConfig(**TINY), max_steps=1)
    with pytest.raises(XlingError, match="no training pairs of at most 2 tokens"):
        train_rnn(shards, [("en", "fr")], RNNConfig(**{**TINY, "max_len": 2}), max_steps=1)
    for bad in (dict(layers=3), dict(attention="dot"), dict(dropout=1.0), dict(hidden_size=0)):
        with pytest.raises(ValueError):
            RNNConfig(**bad)
    model = RNNTranslator(RNNConfig(**TINY), VOCAB, TAGS).eval()
    with pytest.raises(XlingError, match="target language 'de' is unknown"):
        translate_ids(model, [[8, 9]], "de", src_lang_tag="en")
    with pytest.raises(XlingError, match="tag id 40"):
        translate_ids(model, [[8, 9]], 40, src_lang_tag="en")
    with pytest.raises(XlingError, match="not `<src_tag> ids </s>`"):
        translate_ids(model, [[8, 9]], "fr")  # raw ids without src_lang_tag
    out = translate_ids(model, [[], [9]], "fr", src_lang_tag="en", max_new_tokens=3)  # an empty line is fine
    assert len(out) == 2 and all(len(o) <= 3 for o in out)
    with pytest.raises(XlingError, match="not a saved RNN"):
        load_rnn(tmp_path / "nothing")


def test_training_inside_a_callers_autocast_learns_as_outside(shards):
    """bf16 training nested in a caller's autocast (`xling evaluate`) recasts the weights every step: the same
    losses as without the outer context (a cached step-0 cast would leave the loss near its start)."""
    cfg = RNNConfig(**TINY, precision="bf16")
    _, outside = train_rnn(shards, [("en", "fr")], cfg, max_steps=30, seed=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, inside = train_rnn(shards, [("en", "fr")], cfg, max_steps=30, seed=0)
    assert outside["loss"] < 1.0
    assert inside["loss"] == pytest.approx(outside["loss"], rel=1e-4)


def test_label_smoothing_is_its_definition(shards):
    """Training loss with label smoothing eps = (1 - eps) * NLL(gold) + eps * mean over the vocabulary of -log p,
    averaged over real target tokens (padding excluded); eps = 0 is the plain cross-entropy."""
    from xling.tasks.translate.rnn import _loss, _Pairs

    torch.manual_seed(0)
    model = RNNTranslator(RNNConfig(**TINY), VOCAB, TAGS).eval()
    batch = _Pairs(shards, "train", [("en", "fr")], 64).batch(np.arange(5))
    src, src_len, tgt_in, tgt_out = batch
    with torch.no_grad():
        logp = model(src, src_len, tgt_in).log_softmax(-1)  # (B, T, V)
        real = tgt_out != 0
        gold = logp[real].gather(1, tgt_out[real][:, None])[:, 0]
        for eps in (0.0, 0.1):
            ref = ((1 - eps) * -gold + eps * -logp[real].mean(-1)).mean()
            loss, n_tok = _loss(model, batch, eps)
            assert n_tok == int(real.sum()) and torch.allclose(loss, ref, atol=1e-5)
    with pytest.raises(ValueError, match="label_smoothing"):
        RNNConfig(label_smoothing=1.0)
