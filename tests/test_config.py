"""Config: TOML + dotted overrides, strict keys and types, round trip, every shipped config parses."""

from pathlib import Path

import pytest

from xling.config import to_toml
from xling.errors import XlingError
from xling.registry import SECTIONS, load_config

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_parses(path):
    cfg = load_config(path)
    assert set(cfg.sections()) == set(SECTIONS)


def test_defaults_and_overrides():
    cfg = load_config(None, ["corpus.alpha=0.5", "corpus.langs=en,ru", "corpus.dedup=false",
                             'corpus.bible_versions={ko = "n"}', "tokenizer.vocab_size=300"])
    assert cfg.corpus.alpha == 0.5
    assert cfg.corpus.langs == ["en", "ru"]
    assert cfg.corpus.dedup is False
    assert cfg.corpus.bible_versions == {"ko": "n"}
    assert cfg.tokenizer.vocab_size == 300
    assert cfg.corpus.source == "bible"  # untouched default
    cfg2 = load_config(None, ['corpus.langs=["en", "fr"]', "corpus.alpha=1"])
    assert cfg2.corpus.langs == ["en", "fr"] and cfg2.corpus.alpha == 1.0  # int accepted as float


def test_toml_file_then_overrides(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[corpus]\nalpha = 0.7\nlangs = ["en", "fr"]\n')
    cfg = load_config(p, ["corpus.alpha=0.1"])
    assert cfg.corpus.alpha == 0.1 and cfg.corpus.langs == ["en", "fr"]


def test_round_trip_through_toml(tmp_path):
    cfg = load_config(None, ["corpus.alpha=0.25", "corpus.langs=en,ar", 'corpus.bible_versions={it = "d"}'])
    p = tmp_path / "resolved.toml"
    p.write_text(to_toml(cfg))
    again = load_config(p)
    assert again.to_dict() == cfg.to_dict()


@pytest.mark.parametrize("override,msg", [
    ("corpus.alhpa=0.5", r"unknown config key 'corpus.alhpa'; did you mean 'alpha'\?"),
    ("corpos.alpha=0.5", r"unknown config key 'corpos'; did you mean 'corpus'\?"),
    ("corpus.alpha=high", "corpus.alpha: expected a number, got 'high'"),
    ("corpus.dedup=3", "corpus.dedup: expected true or false"),
    ("corpus.max_segments=1.5", "corpus.max_segments: expected an integer"),
    ("corpus.normalize=NFD", "normalize must be NFC, NFKC or none"),
    ("corpus.alpha", "is not key=value"),
    # issue 21: these were accepted and gave NaN weights, runs that never stopped, a crash two stages later
    ("corpus.alpha=nan", "corpus.alpha: nan is not a finite number"),
    ("train.max_minutes=nan", "train.max_minutes: nan is not a finite number"),
    ("train.max_minutes=inf", "train.max_minutes: inf is not a finite number"),
    ("train.eps=nan", "train.eps: nan is not a finite number"),
    ("generate.temperature=-inf", "generate.temperature: -inf is not a finite number"),
    ("train.lr=+inf", "train.lr: inf is not a finite number"),
    ("alpha=0.5", "needs a section"),
])
def test_bad_keys_and_values(override, msg):
    with pytest.raises(XlingError, match=msg):
        load_config(None, [override])


def test_bad_files(tmp_path):
    with pytest.raises(XlingError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[corpus\nalpha = ")
    with pytest.raises(XlingError, match="not valid TOML"):
        load_config(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[trainer]\nlr = 1\n")
    with pytest.raises(XlingError, match="unknown config key 'trainer'"):
        load_config(unknown)
