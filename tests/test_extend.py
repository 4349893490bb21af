"""xling.extend: a language added to a trained tokenizer and model keeps every existing id and weight."""

import numpy as np
import pytest
import torch

from xling.encode import embed_texts, encode
from xling.errors import XlingError
from xling.extend import extend_model, extend_tokenizer, piece_parts
from xling.generate import encode_prompts
from xling.model import ModelConfig, Transformer
from xling.tasks.translate.data import make_batch, tsv_examples
from xling.tokenizer import FIRST_TAG, TokenizerConfig, build_tokenizer, lang_index, lang_tag, special_ids, tag_langs

EN = ["the house of the king is large", "a small dog runs to the house", "the king and the queen walk home",
      "every morning the dog sleeps", "she reads a book in the garden", "we write letters to our friends"]
FR = ["la maison du roi est grande", "un petit chien court vers la maison", "le roi et la reine rentrent",
      "chaque matin le chien dort", "elle lit un livre dans le jardin", "nous écrivons des lettres à nos amis"]
IT = ["la casa del re è grande", "un piccolo cane corre verso la casa", "il re e la regina tornano a casa",
      "ogni mattina il cane dorme", "lei legge un libro nel giardino", "scriviamo lettere ai nostri amici",
      "il giardino della regina è bellissimo", "gli amici del cane giocano nel giardino"] * 5


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(EN * 20 + FR * 20, TokenizerConfig(vocab_size=300, min_frequency=1), ["en", "fr"])


@pytest.fixture(scope="module")
def extended(tok):
    return extend_tokenizer(tok, IT, "it", new_pieces=40, min_frequency=1)


def test_every_old_id_keeps_its_piece(tok, extended):
    tok2, new_ids = extended
    v = tok.get_vocab_size()
    assert [tok2.id_to_token(i) for i in range(v)] == [tok.id_to_token(i) for i in range(v)]
    assert new_ids == list(range(v, tok2.get_vocab_size())) and len(new_ids) == 41  # the tag and 40 pieces
    assert tok2.id_to_token(new_ids[0]) == "<it>" and tok2.encode("<it>").ids == [v]
    assert tag_langs(tok2) == ["en", "fr", "it"]
    # ids as old shards hold them decode to the same text
    for text in EN + FR:
        ids = tok.encode(text, add_special_tokens=False).ids
        assert tok2.decode(ids) == tok.decode(ids) == text


def test_the_new_language_takes_fewer_tokens(tok, extended):
    tok2, _ = extended
    before = sum(len(tok.encode(t).ids) for t in IT[:8])
    after = sum(len(tok2.encode(t).ids) for t in IT[:8])
    assert after < 0.8 * before, (before, after)
    assert all(tok2.decode(tok2.encode(t).ids) == t for t in IT[:8])  # and round-trips


def test_extension_refuses_bad_input(tok):
    with pytest.raises(XlingError, match="already has <fr>"):
        extend_tokenizer(tok, IT, "fr")
    with pytest.raises(XlingError, match="no text for it"):
        extend_tokenizer(tok, ["", "  "], "it")
    uni = build_tokenizer(EN * 20, TokenizerConfig(kind="unigram", vocab_size=300), ["en"])
    with pytest.raises(XlingError, match="only a bpe tokenizer"):
        extend_tokenizer(uni, IT, "it")


@pytest.mark.parametrize("tie", [True, False])
def test_extended_model_is_the_old_model_on_old_ids(tok, extended, tie):
    tok2, new_ids = extended
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=tok.get_vocab_size(), n_langs=2,
                                           tie_embeddings=tie)).eval()
    big = extend_model(model, tok, tok2, new_ids, init="mean").eval()
    assert big.cfg.vocab_size == tok2.get_vocab_size() and big.cfg.n_langs == 3
    idx = torch.tensor([tok.encode(t).ids[:12] for t in (EN[0], FR[1])])
    lang = torch.tensor([[0] * 12, [1] * 12])
    with torch.no_grad():
        old, new = model(idx, lang_ids=lang), big(idx, lang_ids=lang)
        assert torch.equal(old, new)
        v = tok.get_vocab_size()
        assert torch.equal(model.lm_head(old), big.lm_head(new)[..., :v])


def test_mean_init_is_the_mean_of_the_old_pieces(tok, extended):
    tok2, new_ids = extended
    model = Transformer(ModelConfig.preset("tiny", vocab_size=tok.get_vocab_size(), n_langs=2))
    big = extend_model(model, tok, tok2, new_ids, init="mean")
    w, w2 = model.wte.weight.detach(), big.wte.weight.detach()
    tags = [tok.token_to_id(lang_tag(lg)) for lg in ("en", "fr")]
    torch.testing.assert_close(w2[new_ids[0]], (w[tags[0]] + w[tags[1]]) / 2)
    torch.testing.assert_close(big.lang_emb.weight[2], model.lang_emb.weight.mean(0))
    checked = 0
    for i in new_ids[1:]:
        piece = tok2.id_to_token(i)
        parts = piece_parts(tok, piece)
        names = [tok.id_to_token(p) for p in parts]
        if all(not n.startswith("<0x") for n in names):
            assert "".join(names) == piece  # the old pieces spell the new one
            torch.testing.assert_close(w2[i], torch.stack([w[p] for p in parts]).sum(0) / len(parts))
            checked += 1
    assert checked >= 20
    rnd = extend_model(model, tok, tok2, new_ids, init="random", seed=3)
    assert 0.01 < float(rnd.wte.weight.detach()[new_ids[1]:].std()) < 0.03  # N(0, 0.02)
    with pytest.raises(XlingError, match="init must be"):
        extend_model(model, tok, tok2, new_ids, init="focus")


def test_the_appended_tag_takes_the_next_language_row(tok, extended, tmp_path):
    """<it> has id V (after every piece), not FIRST_TAG + 2, yet its language index is 2, the row extend_model adds;
    the consumers feed that row to the model."""
    tok2, new_ids = extended
    it = new_ids[0]
    assert it == tok.get_vocab_size() != FIRST_TAG + 2
    assert [lang_index(tok2, lg) for lg in ("en", "fr", "it")] == [0, 1, len(tag_langs(tok))] == [0, 1, 2]
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=tok.get_vocab_size(), n_langs=2)).eval()
    big = extend_model(model, tok, tok2, new_ids).eval()
    texts = IT[:4]
    seqs = [np.asarray(tok2.encode(t, add_special_tokens=False).ids) for t in texts]
    kw = dict(tag=it, specials=special_ids(tok2), precision="fp32", bar=False)
    got = embed_texts(big, tok2, texts, "it", precision="fp32")  # (4, D)
    np.testing.assert_array_equal(got, encode(big, seqs, lang_index=2, **kw))
    assert not np.allclose(got, encode(big, seqs, lang_index=0, **kw))  # the row matters
    assert encode_prompts(tok2, ["la casa", "the house"], ["it", "en"])[1] == [2, 0]
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("the house\tla casa\n", encoding="utf-8")
    batch = make_batch(tsv_examples(pairs, tok2, "en", "it")[0], pad_multiple=1)
    assert batch["lang_ids"][0].unique().tolist() == [0, 2] and batch["lang_ids"][1, 0] == 2  # en->it, it->en
