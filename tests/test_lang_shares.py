"""train.lang_shares: `with_shares` against hand-computed probabilities, the rate at which objectives built on real
tiny shards draw the shared language, and the bad values refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from xling.batches import draw, with_shares
from xling.corpus import sampling_probs
from xling.errors import XlingError
from xling.objectives import build_objectives
from xling.pretrain import LangSubset
from xling.train_config import TrainConfig

from .test_objectives import random_shards, toy_teacher

LANGS = ["en", "fr", "ru"]
MONO = {"en": 0.5, "fr": 0.3, "ru": 0.2}  # alpha probabilities of three languages
PAIRS = {"en-fr": 0.5, "en-ru": 0.3, "fr-ru": 0.2}  # ... and of their three pairs


def close(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(got[k] == pytest.approx(v, abs=1e-12) for k, v in want.items())


def test_one_language_gets_its_share_split_by_alpha():
    # ru 0.5; en and fr split the other 0.5 as 0.5 : 0.3
    assert close(with_shares(MONO, {"ru": 0.5}, LANGS), {"en": 0.3125, "fr": 0.1875, "ru": 0.5})
    # pairs involving ru (en-ru 0.3, fr-ru 0.2) share 0.6 as 3 : 2; en-fr alone gets the rest
    assert close(with_shares(PAIRS, {"ru": 0.6}, LANGS), {"en-fr": 0.4, "en-ru": 0.36, "fr-ru": 0.24})
    assert with_shares(MONO, {}, LANGS) is MONO  # no shares: alpha alone


def test_several_keys_a_pair_of_two_keys_counts_for_the_first():
    # fr-ru goes to ru (first): ru {en-ru, fr-ru} 0.5 as 3 : 2, fr {en-fr} 0.3, no rest: its 0.2 renormalised away
    assert close(with_shares(PAIRS, {"ru": 0.5, "fr": 0.3}, LANGS), {"en-fr": 0.375, "en-ru": 0.375, "fr-ru": 0.25})
    # fr first: fr {en-fr 0.5, fr-ru 0.2} gets 0.3 / 0.8, ru {en-ru} 0.5 / 0.8
    assert close(with_shares(PAIRS, {"fr": 0.3, "ru": 0.5}, LANGS),
                 {"en-fr": 0.3 * 5 / 7 / 0.8, "en-ru": 0.625, "fr-ru": 0.3 * 2 / 7 / 0.8})
    # shares summing to 1 are fine where every name is in a group: every pair involves fr or ru
    assert close(with_shares(PAIRS, {"ru": 0.5, "fr": 0.5}, LANGS), {"en-fr": 0.5, "en-ru": 0.3, "fr-ru": 0.2})
    assert close(with_shares(MONO, {"en": 0.1, "fr": 0.2, "ru": 0.7}, LANGS), {"en": 0.1, "fr": 0.2, "ru": 0.7})


def test_a_group_without_names_gives_its_mass_back():
    langs = [*LANGS, "it"]
    # it has no segments (q 0): its 0.5 goes back, so nothing changes and it is never drawn
    assert close(with_shares({**MONO, "it": 0.0}, {"it": 0.5}, langs), {**MONO, "it": 0.0})
    # it has no pairs: ru 0.2 and the rest 0.4, renormalised to 1/3 and 2/3
    assert close(with_shares(PAIRS, {"it": 0.4, "ru": 0.2}, langs),
                 {"en-fr": 2 / 3, "en-ru": 0.3 / 0.5 / 3, "fr-ru": 0.2 / 0.5 / 3})


def test_codes_with_hyphens_are_whole_languages():
    # pt-BR is not in pt's group, and en-pt-BR is a pair of en and pt-BR
    langs = ["en", "pt", "pt-BR"]
    assert close(with_shares({"en": 0.5, "pt": 0.25, "pt-BR": 0.25}, {"pt": 0.5}, langs),
                 {"en": 1 / 3, "pt": 0.5, "pt-BR": 1 / 6})
    assert close(with_shares({"en-pt": 0.5, "en-pt-BR": 0.3, "pt-pt-BR": 0.2}, {"pt-BR": 0.25}, langs),
                 {"en-pt": 0.75, "en-pt-BR": 0.15, "pt-pt-BR": 0.1})


def test_shares_of_one_leave_the_rest_nothing_and_none_left_is_one_clear_error():
    # no replay: the keyed languages take everything (MONO's fr and ru split 0.5 each as their shares say)
    assert close(with_shares(MONO, {"fr": 0.5, "ru": 0.5}, LANGS), {"en": 0.0, "fr": 0.5, "ru": 0.5})
    with pytest.raises(XlingError, match=r"leave no sampling mass for en-ru, fr-ru"):  # share 0 and no rest
        with_shares({"en-fr": 0.0, "en-ru": 0.6, "fr-ru": 0.4}, {"ru": 0.0}, LANGS)
    with pytest.raises(XlingError, match="the train split has no segments"):  # nothing at all: draw's own error
        draw({"en": 0, "fr": 0}, 0.3, np.random.default_rng(0), "segments", "train", shares={"en": 0.5}, langs=LANGS)


def test_no_shares_draws_exactly_as_before():
    counts = {"en": 90, "fr": 30, "ru": 10}
    for shares in (None, {}):
        rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
        q = sampling_probs(counts, 0.3)
        want = [list(q)[i] for i in rng_b.choice(3, size=50, p=list(q.values()))]
        assert draw(counts, 0.3, rng_a, "segments", "train", n=50, shares=shares, langs=LANGS) == want


@pytest.fixture(scope="module")
def tiny_shards(tmp_path_factory):
    """Real shards (corpus, tokenizer, shards) of 20 aligned chapters in en, fr, ru: equal counts, so alpha alone
    draws each language (and each pair) a third of the time."""
    from xling.corpus import Corpus, CorpusConfig, build_corpus
    from xling.shards import ShardConfig, Shards, build_shards
    from xling.tokenizer import TokenizerConfig, train_tokenizer

    from .conftest import tiny_segments

    root = tmp_path_factory.mktemp("shares")
    mp = pytest.MonkeyPatch()
    mp.setattr("xling.corpus.source_units", lambda cfg, size=None: [None])
    mp.setattr("xling.corpus.read_unit", lambda cfg, unit: iter(tiny_segments(20)))
    try:
        build_corpus(CorpusConfig(source="text", langs=LANGS, valid_fraction=0.1, test_fraction=0.1), root / "corpus")
    finally:
        mp.undo()
    train_tokenizer(Corpus(root / "corpus"), TokenizerConfig(vocab_size=300), root / "tokenizer", alpha=0.3)
    build_shards(Corpus(root / "corpus"), root / "tokenizer", ShardConfig(), root / "shards")
    return Shards(root / "shards")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_objectives_draw_the_shared_language_at_its_share(tiny_shards, seed):
    """ru = 0.7: clm rows in ru, contrastive pairs involving ru and distill's en-ru pairs, each 70% of 2,000 draws
    (alpha alone: 1/3, 2/3 and 1/2), within 4 binomial standard deviations."""
    sh, share, draws = tiny_shards, 0.7, 2000
    objs = build_objectives({"clm": 1, "contrastive": 1, "distill": 1}, sh, d_model=32, lang_shares={"ru": share},
                            teacher=toy_teacher(sh))
    assert all(obj.shares == {"ru": share} for obj in objs.values())
    rng = np.random.default_rng(seed)
    ru_tag = int(sh.lang_token_ids["ru"])
    rows = np.concatenate([objs["clm"].make_batch(sh, "train", rng, 20, 8)["idx"][:, 0].numpy()
                           for _ in range(draws // 20)])  # (2000,) each row's language tag, drawn on its own
    pairs = {name: [objs[name].make_batch(sh, "train", rng, 2, 16)["pair"] for _ in range(draws)]
             for name in ("contrastive", "distill")}
    tol = 4 * math.sqrt(share * (1 - share) / draws)
    assert np.mean(rows == ru_tag) == pytest.approx(share, abs=tol)
    for got in pairs.values():
        assert np.mean([p in ("en-ru", "fr-ru") for p in got]) == pytest.approx(share, abs=tol)
    assert set(pairs["distill"]) == {"en-fr", "en-ru"}


def test_bad_shares_are_refused():
    for bad, msg in (({"it": 1.5}, r"it = 1.5 is not a share in \[0, 1\]"), ({"it": -0.1}, "not a share"),
                     ({"it": math.nan}, "not a share"), ({"it": math.inf}, "not a share"),
                     ({"it": 0.6, "fr": 0.5}, "sum to 1.1, more than 1")):
        with pytest.raises(XlingError, match=msg):
            TrainConfig(max_steps=1, lang_shares=bad)
    TrainConfig(max_steps=1, lang_shares={"en": 0.1, "fr": 0.2, "ru": 0.7})  # 1 up to decimal rounding
    shards, _ = random_shards(0)
    with pytest.raises(XlingError, match=r"train.lang_shares: 'it' is not a language of this run \(en, fr, ru\)"):
        build_objectives({"clm": 1}, shards, lang_shares={"it": 0.5})
    with pytest.raises(XlingError, match=r"'ru' is not a language of this run \(en, fr\)"):  # outside train.langs
        build_objectives({"clm": 1}, LangSubset(shards, ["en", "fr"]), lang_shares={"ru": 0.5})
    with pytest.raises(XlingError, match="not a share"):
        build_objectives({"clm": 1}, shards, lang_shares={"ru": 2.0})


def test_config_key_and_stage_hash():
    """train.lang_shares from TOML; empty leaves the pretrain stage's hash as before the key existed."""
    from xling.registry import load_config
    from xling.stages import _stage_config

    cfg = load_config(overrides=["train.lang_shares={ru = 0.5}"])
    assert cfg.train.lang_shares == _stage_config(cfg, "pretrain")["train"]["lang_shares"] == {"ru": 0.5}
    assert "lang_shares" not in _stage_config(load_config(), "pretrain")["train"]
    with pytest.raises(XlingError, match="not a share"):
        load_config(overrides=["train.lang_shares={ru = 1.5}"])
