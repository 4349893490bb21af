"""xling.extend: a language added to a trained tokenizer and model keeps every existing id and weight."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xling.config import read_toml
from xling.encode import embed_texts, encode
from xling.errors import XlingError
from xling.extend import extend_model, extend_tokenizer, piece_parts
from xling.generate import encode_prompts
from xling.model import ModelConfig, Transformer
from xling.registry import load_config
from xling.stages import OLD_VOCAB_HEAD_LR_SCALE
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
    big = extend_model(model, tok, tok2, init="mean").eval()
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
    big = extend_model(model, tok, tok2, init="mean")
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
    rnd = extend_model(model, tok, tok2, init="random", seed=3)
    assert 0.01 < float(rnd.wte.weight.detach()[new_ids[1]:].std()) < 0.03  # N(0, 0.02)
    with pytest.raises(XlingError, match="init must be"):
        extend_model(model, tok, tok2, init="focus")


@pytest.mark.parametrize("init", ["mean", "random"])
def test_new_output_rows_start_at_the_old_mean_and_bound_the_old_loss(tok, extended, init):
    """An untied output layer's new rows are the old rows' mean whatever the init, so on text of old ids the
    next-token loss rises by at most log(1 + new / old ids) (Jensen: exp(mean logit) <= mean exp(logit))."""
    tok2, new_ids = extended
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=tok.get_vocab_size(), n_langs=2,
                                           tie_embeddings=False)).eval()
    with torch.no_grad():  # a trained-looking head: rows far from their mean, so a careless start would show
        model.lm_out.weight.mul_(20.0)
    big = extend_model(model, tok, tok2, init=init).eval()
    v, v2 = tok.get_vocab_size(), tok2.get_vocab_size()
    out = big.lm_out.weight.detach()
    torch.testing.assert_close(out[v:v2], model.lm_out.weight.detach().mean(0).expand(v2 - v, -1))
    ids = torch.tensor([tok.encode(t).ids[:12] for t in (EN[0], FR[1], EN[2])])
    x, y, lang = ids[:, :-1], ids[:, 1:], torch.zeros_like(ids[:, :-1])
    with torch.no_grad():
        old = F.cross_entropy(model.lm_head(model(x, lang_ids=lang)).flatten(0, 1), y.flatten(), reduction="none")
        new = F.cross_entropy(big.lm_head(big(x, lang_ids=lang)).flatten(0, 1), y.flatten(), reduction="none")
    rise = new - old
    assert float(rise.min()) > 0 and float(rise.max()) <= math.log(1 + (v2 - v) / v) + 1e-5


# ---------------------------------------------------------------------------- the whole command on a tiny run

TINY_RUN = ["model.n_layer=2", "model.d_model=32", "model.n_head=2", "model.block_size=64", "train.seq_len=32",
            "train.batch_size=8", "train.max_minutes=0", "train.warmup_steps=5", "train.eval_every=0",
            "train.precision=fp32", "train.lr=3e-3", "train.objectives={clm = 1.0, contrastive = 1.0}"]


@pytest.fixture(scope="module")
def added_run(tmp_path_factory):
    """A base run on en + fr (150 steps), then `xling add-language --lang ru` from the same jsonl files (40 steps),
    with the default replay of the old languages (half the rows) and without (`--replay 0`)."""
    from xling.cli import main

    from .conftest import TINY

    tmp = tmp_path_factory.mktemp("addlang")
    for lg, verses in TINY.items():
        with open(tmp / f"{lg}.jsonl", "w", encoding="utf-8") as f:
            for i in range(40):
                for v, text in enumerate(verses):
                    f.write(json.dumps({"id": f"s{i}.{v}", "lang": lg, "text": f"{text} {i}"}, ensure_ascii=False)
                            + "\n")
    base, out, forgetful = tmp / "base", tmp / "with-ru", tmp / "no-replay"
    assert main(["corpus", "--source", "jsonl", "--paths", *[str(tmp / f"{lg}.jsonl") for lg in TINY],
                 "--langs", "en,fr", "--run", str(base), "corpus.valid_fraction=0.15",
                 "corpus.test_fraction=0.15"]) == 0
    assert main(["tokenizer", "--run", str(base), "tokenizer.vocab_size=300"]) == 0
    assert main(["shard", "--run", str(base)]) == 0
    assert main(["pretrain", "--run", str(base), *TINY_RUN, "train.max_steps=150"]) == 0
    for run, replay in ((out, "0.5"), (forgetful, "0")):  # the base's mix (--pair-weight 1): replay alone differs
        assert main(["add-language", "--run", str(base), "--lang", "ru", "--out", str(run), "--minutes", "0",
                     "--replay", replay, "--pair-weight", "1", "--pieces", "60", "tokenizer.min_frequency=1",
                     "train.max_steps=40"]) == 0
    return base, out, forgetful


def _final_valid(run) -> dict:
    return json.loads((run / "train" / "metrics.jsonl").read_text().splitlines()[-1])


def test_replay_keeps_the_old_languages(added_run):
    """Half the rows from en and fr keep English bits per character near the base model's; without replay, 40
    steps of Russian alone lose it. (Seeds 1-3, default and avx2 kernels: en 4.84-5.80 with replay, 6.04-7.53
    without, base 5.05-5.16; measured with the same commands.)"""
    base, out, forgetful = added_run
    before, kept, lost = (_final_valid(r)["valid/bpc/en"] for r in (base, out, forgetful))
    assert kept < lost - 0.5, (before, kept, lost)
    assert kept < 1.2 * before, (before, kept)
    assert _final_valid(forgetful)["valid/bpc/ru"] < _final_valid(out)["valid/bpc/ru"] + 0.5  # ru learnt in both


def test_add_language_makes_a_run_with_every_old_id(added_run):
    from xling.checkpoint import load_run
    from xling.tokenizer import load_tokenizer

    base, out, _ = added_run
    old, new = load_tokenizer(base / "tokenizer"), load_tokenizer(out / "tokenizer")
    v = old.get_vocab_size()
    assert [new.id_to_token(i) for i in range(v)] == [old.id_to_token(i) for i in range(v)]
    assert tag_langs(new) == ["en", "fr", "ru"] and new.token_to_id("<ru>") == v
    assert new.get_vocab_size() == v + 61
    report = json.loads((out / "tokenizer" / "report.json").read_text())
    ext = report["extension"]["langs"]["ru"]["fertility"]
    assert ext["after"] < ext["before"]  # the new language takes fewer tokens per word
    model, _ = load_run(out)
    base_model, _ = load_run(base)
    assert model.cfg.vocab_size == base_model.cfg.vocab_size == 8000  # the tiny model's spare rows hold the new ids
    assert json.loads((out / "corpus" / "meta.json").read_text())["langs"] == ["en", "fr", "ru"]
    train = read_toml(out / "config.toml", "config")["train"]
    assert train["objectives"] == {"clm": 1.0, "contrastive": 1.0}
    assert (train["old_vocab"], train["old_vocab_head_lr_scale"]) == (v, OLD_VOCAB_HEAD_LR_SCALE)  # the base's ids


def test_added_mix_weighs_only_the_pair_objectives():
    from xling.stages import added_mix

    mix = added_mix({"clm": 2.0, "mlm": 0.5, "contrastive": 1.0, "tlm": 0.25}, 3.0)
    assert mix == "train.objectives={clm = 2.0, mlm = 0.5, contrastive = 3.0, tlm = 0.75}"
    assert load_config(None, [mix]).train.objectives == {"clm": 2.0, "mlm": 0.5, "contrastive": 3.0, "tlm": 0.75}


def test_add_language_refuses_bad_input(added_run, tmp_path, capsys):
    from xling.cli import main

    base, _, _ = added_run
    assert main(["add-language", "--run", str(base), "--lang", "fr", "--out", str(tmp_path / "x")]) == 2
    assert "already has fr" in capsys.readouterr().err
    assert main(["add-language", "--run", str(base), "--lang", "xx1", "--out", str(tmp_path / "x")]) == 2
    assert "unknown language code" in capsys.readouterr().err
    assert main(["add-language", "--run", str(tmp_path), "--lang", "ru", "--out", str(tmp_path / "x")]) == 2
    assert "not a trained run" in capsys.readouterr().err
    assert main(["add-language", "--run", str(base), "--lang", "ru", "--out", str(tmp_path / "x"), "--source",
                 "text"]) == 2
    assert "give --source and --paths together" in capsys.readouterr().err
    bt = ["add-language", "--run", str(base), "--lang", "ru", "--out", str(tmp_path / "x"), "--back-translate"]
    assert main([*bt, "--pivot", "de"]) == 2
    assert "--pivot de is not a language of" in capsys.readouterr().err
    assert main([*bt, "--bt-lines", "0"]) == 2
    assert "--bt-lines must be at least 1" in capsys.readouterr().err
    for weight in ("0", "nan", "-1"):
        assert main(["add-language", "--run", str(base), "--lang", "ru", "--out", str(tmp_path / "x"),
                     "--pair-weight", weight]) == 2
        assert "--pair-weight multiplies the pair objectives' weights" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.phase1").exists()


def test_a_language_from_another_source_joins_the_base_corpus_as_it_is(added_run, tmp_path):
    """`--source tsv --paths ru-en pairs`: the base's corpus files come first, unchanged; the pairs add ru and
    their English side to en, aligned; the tokenizer and model are extended as from the base's own source."""
    from xling.cli import main
    from xling.corpus import SPLITS, Corpus

    from .conftest import TINY

    base = added_run[0]
    pairs = [(f"{en} (new {i})", f"{ru} ({i})") for i in range(30) for en, ru in zip(TINY["en"], TINY["ru"],
                                                                                    strict=True)]
    (tmp_path / "ru.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs), encoding="utf-8")
    out = tmp_path / "ru-from-tsv"
    assert main(["add-language", "--run", str(base), "--lang", "ru", "--out", str(out), "--minutes", "0",
                 "--pieces", "60", "corpus.pair_langs=[\"en\", \"ru\"]", "tokenizer.min_frequency=1",
                 "train.max_steps=3", "--source", "tsv", "--paths", str(tmp_path / "ru.tsv")]) == 0
    old, new = Corpus(base / "corpus"), Corpus(out / "corpus")
    assert new.langs == ["en", "fr", "ru"] and new.meta["source"] == "tsv"
    # the base's clm 1 : contrastive 1, its pair objective at the default --pair-weight, 2x its weight
    assert read_toml(out / "config.toml", "config")["train"]["objectives"] == {"clm": 1.0, "contrastive": 2.0}
    for split in SPLITS:
        assert new.texts(split, "fr") == old.texts(split, "fr")
        assert new.texts(split, "en")[:len(old.texts(split, "en"))] == old.texts(split, "en")
        assert len(new.pairs(split, "en", "ru")) == len(new.texts(split, "ru"))  # every ru line has its English
    assert sum(len(new.texts(s, "ru")) for s in SPLITS) == len(pairs)
    assert json.loads((out / "tokenizer" / "meta.json").read_text())["vocab_size"] > \
        json.loads((base / "tokenizer" / "meta.json").read_text())["vocab_size"]
    assert (out / "checkpoints").is_dir()


def test_the_added_language_generates_and_exports(added_run, tmp_path):
    """`generate --lang ru` uses the new tag, and the exported Hugging Face model's pipeline() greedy text is
    xling's, over the extended vocabulary."""
    from transformers import pipeline

    from xling.checkpoint import load_run
    from xling.cli import main
    from xling.generate import GenerateConfig, generate

    _, out, _ = added_run
    model, tok = load_run(out)
    greedy = GenerateConfig(max_new_tokens=12, temperature=0.0, precision="fp32")
    ours = generate(model, tok, ["Свет во"], "ru", greedy)[0]
    assert main(["export", "--run", str(out), "--out", str(tmp_path / "hf")]) == 0
    gen = pipeline("text-generation", model=str(tmp_path / "hf"))
    text = gen("<ru>Свет во", max_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert text == "<ru>Свет во" + ours


def test_the_appended_tag_takes_the_next_language_row(tok, extended, tmp_path):
    """<it> has id V (after every piece), not FIRST_TAG + 2, yet its language index is 2, the row extend_model adds;
    the consumers feed that row to the model."""
    tok2, new_ids = extended
    it = new_ids[0]
    assert it == tok.get_vocab_size() != FIRST_TAG + 2
    assert [lang_index(tok2, lg) for lg in ("en", "fr", "it")] == [0, 1, len(tag_langs(tok))] == [0, 1, 2]
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=tok.get_vocab_size(), n_langs=2)).eval()
    big = extend_model(model, tok, tok2).eval()
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


def _corpus_with(tmp_path, fake_source, ru_texts):
    from xling.corpus import Corpus, CorpusConfig, build_corpus
    from xling.sources import Segment

    from .conftest import tiny_segments

    segs = [s for s in tiny_segments(30) if s.lang != "ru"]
    segs += [Segment("ru", f"43.{i}.1", t, f"43.{i}") for i, t in enumerate(ru_texts, 1)]
    fake_source(segs)
    build_corpus(CorpusConfig(langs=["en", "fr", "ru"], valid_fraction=0.1, test_fraction=0.1), tmp_path / "c")
    return Corpus(tmp_path / "c")


def test_the_tokenizer_stage_refuses_a_tiny_language_and_warns_of_a_foreign_script(tok, tmp_path, fake_source,
                                                                                   capsys):
    from xling.extend import MIN_LINES, extend_run_tokenizer

    tok.save(str(tmp_path / "tokenizer.json"))
    cfg = TokenizerConfig(extend=str(tmp_path), extend_pieces=20, min_frequency=1)
    corpus = _corpus_with(tmp_path, fake_source, [f"Свет во тьме {i}" for i in range(5)])
    with pytest.raises(XlingError, match=rf"train line\(s\) of ru; adding a language needs at least {MIN_LINES}"):
        extend_run_tokenizer(corpus, cfg, tmp_path / "out", alpha=0.3)
    assert not (tmp_path / "out").exists()
    latin = [f"svet vo tme svetit i tma ego ne obyala {i}" for i in range(200)]  # transliterated: Latin letters
    (tmp_path / "c").rename(tmp_path / "c-tiny")
    corpus = _corpus_with(tmp_path, fake_source, latin)
    report = extend_run_tokenizer(corpus, cfg, tmp_path / "out", alpha=0.3)
    assert "100% of the letters of the ru text are not in Cyrillic" in capsys.readouterr().err
    assert report["extension"]["added"] == ["ru"] and (tmp_path / "out" / "tokenizer.json").is_file()


def test_procrustes_recovers_a_scaled_rotation():
    from xling.extend import procrustes

    g = np.random.default_rng(0)
    w0, _ = np.linalg.qr(g.standard_normal((8, 8)))  # a random orthogonal map
    x = g.standard_normal((50, 8))
    fit = procrustes(x, 0.3 * x @ w0 + 1.5)
    new = g.standard_normal((5, 8))
    np.testing.assert_allclose(fit(new), 0.3 * new @ w0 + 1.5, atol=1e-10)


def test_lsi_rows_start_only_the_new_pieces_the_aligned_text_covers(added_run):
    from xling.checkpoint import load_run
    from xling.extend import extend_model, lsi_rows
    from xling.shards import Shards
    from xling.tokenizer import load_tokenizer

    base, out, _ = added_run
    model, tok = load_run(base)
    tok2 = load_tokenizer(out / "tokenizer")
    big = extend_model(model, tok, tok2, init="mean")
    before = big.wte.weight.detach().clone()
    new_ids = list(range(tok.get_vocab_size(), tok2.get_vocab_size()))
    stats = lsi_rows(big, Shards(out / "shards"), new_ids)
    after = big.wte.weight.detach()
    changed = (after != before).any(1)
    assert stats["mapped"] >= len(new_ids) // 2 and stats["fitted"] > 40  # of 61 new, of the tiny 312-id vocabulary
    assert int(changed.sum()) == stats["mapped"] and bool(changed[new_ids].sum() == stats["mapped"])
    assert torch.isfinite(after).all() and float(after[new_ids].std()) < 10 * float(after[:new_ids[0]].std())


def test_the_same_command_with_a_larger_budget_continues_the_new_run(added_run, tmp_path, capsys):
    """Training an added language more: the same `add-language` command with a larger budget finds its corpus,
    tokenizer and shards up to date and resumes --out's pretraining where it stopped."""
    import shutil

    from xling.checkpoint import list_checkpoints
    from xling.cli import main

    base, out, _ = added_run
    again = tmp_path / "with-ru"
    shutil.copytree(out, again)
    capsys.readouterr()
    assert main(["add-language", "--run", str(base), "--lang", "ru", "--out", str(again), "--minutes", "0",
                 "--pair-weight", "1", "--pieces", "60", "tokenizer.min_frequency=1", "train.max_steps=44"]) == 0
    printed = capsys.readouterr()
    assert all(f"{stage}: up to date" in printed.out for stage in ("corpus", "tokenizer", "shard")), printed.out
    assert "resumed from step 40" in printed.err
    steps = [json.loads(line).get("step") for line in (again / "train" / "metrics.jsonl").read_text().splitlines()]
    assert max(s for s in steps if s is not None) == 44
    assert int(list_checkpoints(again / "checkpoints")[-1].name.split("_")[1]) == 44


def test_back_translation_keeps_distinct_translations_of_a_plausible_length():
    from xling.tasks.translate.backtranslate import keep_translations

    sources = ["abcdefghij", "klmnopqrst", "uvwxyzabcd", "efghijklmn", "opqrstuvwx", "yzabcdefgh", "ijklmnopqr"]
    outputs = ["The end.", "  ", "The end.", "a fair translation", "ok", "x" * 41, " The king went up. "]
    keep, dropped = keep_translations(sources, outputs, ratio=1.5)  # kept: 7.5 to 30 characters for 10
    assert keep == [False, False, False, True, False, False, True]
    assert dropped == {"empty": 1, "repeated": 2, "length": 2}
    assert keep_translations(sources[:2], ["x" * 8, "x" * 30 + "y"], ratio=1.5)[0] == [True, False]


def test_back_translation_adds_synthetic_pairs_for_a_language_with_text_only(added_run, tmp_path, monkeypatch):
    """`--back-translate` on monolingual ru text: phase 1 (a run beside --out), a translation fine-tune on the base's
    en-fr pairs, ru train lines translated into en, and --out trained on phase 1's corpus plus those lines, which
    pair with the ru lines they came from and are counted as synthetic; phase 1's tokenizer kept as it is. The
    tiny model's own translations are one sentence for every line, all left out (checked at the end); the stage
    runs on a translator that writes each line's English verse."""
    from xling.cli import main
    from xling.corpus import SPLITS, Corpus
    from xling.tasks.translate import backtranslate
    from xling.tokenizer import tokenizer_hash

    from .conftest import TINY

    base = added_run[0]
    (tmp_path / "ru.txt").write_text("".join(f"{v} ({i})\n" for i in range(40) for v in TINY["ru"]),
                                     encoding="utf-8")
    english = {f"{ru} ({i})": f"{en} ({i})" for i in range(40) for ru, en in zip(TINY["ru"], TINY["en"], strict=True)}
    real = backtranslate.translate
    monkeypatch.setattr(backtranslate, "translate", lambda model, tok, texts, *a: [english[t] for t in texts])
    out = tmp_path / "ru-bt"
    assert main(["add-language", "--run", str(base), "--lang", "ru", "--out", str(out), "--minutes", "0",
                 "--pieces", "60", "--back-translate", "--bt-lines", "25", "tokenizer.min_frequency=1",
                 "train.max_steps=3", "translate.max_steps=2", "translate.max_minutes=0", "translate.compile=false",
                 "translate.max_new_tokens=8", "--source", "text", "--paths", str(tmp_path / "ru.txt")]) == 0
    phase1 = tmp_path / "ru-bt.phase1"
    synthetic = [json.loads(line) for line in (phase1 / "back-translated.en.jsonl").read_text().splitlines()]
    before, after = Corpus(phase1 / "corpus"), Corpus(out / "corpus")
    assert 0 < len(synthetic) <= 25 and all(r["lang"] == "en" for r in synthetic)
    assert before.meta["pairs"].get("en-ru") is None  # monolingual: no pair before
    assert after.meta["synthetic"] == {"en": {"train": len(synthetic), "valid": 0, "test": 0}}
    assert after.meta["pairs"]["en-ru"] == {"train": len(synthetic)}
    ru_by_key = dict(zip(after.keys("train", "ru"), after.texts("train", "ru"), strict=True))
    got = after.pairs("train", "en", "ru")
    assert [ru for _, ru in got] == [ru_by_key[r["id"]] for r in synthetic]  # each translation beside its source
    for split in SPLITS:
        assert after.texts(split, "en")[:len(before.texts(split, "en"))] == before.texts(split, "en")
        assert after.texts(split, "ru") == before.texts(split, "ru")
    assert tokenizer_hash(out / "tokenizer") == tokenizer_hash(phase1 / "tokenizer")
    assert (out / "checkpoints").is_dir() and (phase1 / "translate").is_dir()
    assert [r["text"] for r in synthetic] == [english[ru] for ru in before.texts("train", "ru")[:25]]
    monkeypatch.setattr(backtranslate, "translate", real)  # the fine-tuned tiny model itself
    counts = backtranslate.back_translate(phase1, "ru", "en", tmp_path / "real.jsonl", max_lines=25)
    assert counts["translated"] == 25 == sum(counts[k] for k in ("written", "empty", "repeated", "length"))
    assert counts["written"] < 25  # 2 steps of fine-tuning write one sentence (or nothing) for most lines
    kept = [json.loads(line) for line in (tmp_path / "real.jsonl").read_text().splitlines()]
    source = dict(zip(before.keys("train", "ru"), before.texts("train", "ru"), strict=True))
    assert len(kept) == counts["written"] and len({r["text"] for r in kept}) == len(kept)  # distinct, non-empty
    for r in kept:  # each within LENGTH_FACTOR of the usual length ratio
        ratio = len(r["text"]) / len(source[r["id"]])
        assert counts["ratio"] / 2 <= ratio <= counts["ratio"] * 2 and r["text"].strip()
