"""The out-of-domain evaluation: the aligned set from hand-made catalogs, the evaluation on a tiny run with a
fake catalog folder (identical vectors retrieve at 1.0), the skip without Django, the headline row."""

from __future__ import annotations

import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from xling.evaluate import EvalContext
from xling.registry import EVALUATIONS
from xling.report import headline
from xling.tasks.retrieval import ood

from .test_mine import build_tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")  # (conftest.py)
pytest.importorskip("polib")

HEADER = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n\n'


def catalog(root: Path, folder: str, entries: list[tuple[str, str]], name: str = "django.po", extra: str = "") -> None:
    """<root>/<folder>/LC_MESSAGES/<name> with (msgid, msgstr) entries written in the given order."""
    path = root / folder / "LC_MESSAGES" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f'msgid "{a}"\nmsgstr "{b}"\n\n' for a, b in entries)
    path.write_text(HEADER + body + extra, encoding="utf-8")


# strings of our own, in both catalogs but listed in different orders (alignment must follow the msgid)
FR = [("Enter a valid email address.", "Saisissez une adresse électronique valide."),
      ("Ensure this value has at most %(limit)d characters.", "Cette valeur doit avoir au plus %(limit)d caractères."),
      ("“{0}” is not a <b>valid</b> value.", "« {0} » n’est pas une valeur <b>valide</b>."),
      ("Your password was changed.", "Votre mot de passe a été modifié."),
      ("Save", "Enregistrer"),  # one word: too short
      ("Only French has this one.", "Seul le français a celle-ci."),
      ("Nobody translated this yet.", "")]
DE = [("Your password was changed.", "Ihr Passwort wurde geändert."),
      ("“{0}” is not a <b>valid</b> value.", "„{0}“ ist kein <b>gültiger</b> Wert."),
      ("Enter a valid email address.", "Geben Sie eine gültige E-Mail-Adresse ein."),
      ("Ensure this value has at most %(limit)d characters.", "Der Wert darf höchstens %(limit)d Zeichen haben."),
      ("Save", "Speichern"),
      ("Nobody translated this yet.", "Das hat noch niemand übersetzt."),
      ("Enter a valid date and time.", "Geben Sie Datum und Uhrzeit ein.")]  # fuzzy in fr, below
FR_EXTRA = ('#, fuzzy\nmsgid "Enter a valid date and time."\nmsgstr "Saisissez une date."\n\n'
            'msgctxt "form"\nmsgid "Your password was changed."\nmsgstr "Mot de passe modifié."\n\n'
            'msgid "One item was deleted."\nmsgid_plural "%(n)s items were deleted."\n'
            'msgstr[0] "Un élément a été supprimé."\nmsgstr[1] "%(n)s éléments ont été supprimés."\n')
DE_EXTRA = ('msgctxt "form"\nmsgid "Your password was changed."\nmsgstr "Passwort geändert."\n\n'
            'msgid "One item was deleted."\nmsgid_plural "%(n)s items were deleted."\n'
            'msgstr[0] "Ein Element wurde gelöscht."\nmsgstr[1] "%(n)s Elemente wurden gelöscht."\n')


def test_set_keeps_strings_translated_everywhere_cleaned_and_aligned(tmp_path):
    catalog(tmp_path, "fr", FR, extra=FR_EXTRA)
    catalog(tmp_path, "de", DE, extra=DE_EXTRA)
    data = ood.build_set([tmp_path], ["en", "de", "fr", "sw"], name="tiny")
    assert data.langs == ["en", "de", "fr"] and data.missing == ["sw"] and len(data) == 5
    rows = list(zip(data.texts["en"], data.texts["de"], data.texts["fr"], strict=True))
    assert rows == [  # sorted by msgid; placeholders, tags and the quotes they emptied removed
        ("Ensure this value has at most characters.", "Der Wert darf höchstens Zeichen haben.",
         "Cette valeur doit avoir au plus caractères."),
        ("Enter a valid email address.", "Geben Sie eine gültige E-Mail-Adresse ein.",
         "Saisissez une adresse électronique valide."),
        ("One item was deleted.", "Ein Element wurde gelöscht.", "Un élément a été supprimé."),  # msgstr[0]
        ("Your password was changed.", "Ihr Passwort wurde geändert.", "Votre mot de passe a été modifié."),
        ("is not a valid value.", "ist kein gültiger Wert.", "n’est pas une valeur valide."),
    ]
    # left out: "Save" (short), the msgctxt twin (same English); never counted: fuzzy, untranslated, French only
    assert data.dropped == {"short": 1, "no words": 0, "same English": 1, "same translation": 0}
    assert len(ood.build_set([tmp_path], ["en", "de", "fr"], min_words=1)) == 6  # "Save" is back
    # a run language Django names by script, and a pivot other than the msgid's English is not asked for here
    catalog(tmp_path, "zh_Hans", [("Enter a valid email address.", "输入一个有效的电子邮件地址。")])
    zh = ood.build_set([tmp_path], ["en", "zh", "fr"])
    assert zh.texts["zh"] == ["输入一个有效的电子邮件地址。"] and zh.texts["fr"] == [FR[0][1]]


def test_translation_repeated_in_a_language_is_dropped(tmp_path):
    catalog(tmp_path, "de", [("Delete the selected item.", "Das Element löschen."),
                             ("Remove the selected item.", "Das Element löschen."),
                             ("Keep the selected item.", "Das Element behalten.")])
    data = ood.build_set([tmp_path], ["en", "de"])
    assert data.texts["en"] == ["Delete the selected item.", "Keep the selected item."]
    assert data.dropped["same translation"] == 1


class FakePeer:
    """A deterministic stand-in for USE: each text's vector comes from its own bytes, so equal texts give equal
    vectors and different texts nearly orthogonal ones."""

    def encode(self, texts):
        out = np.stack([np.random.default_rng(zlib.crc32(t.encode())).standard_normal(512) for t in texts])
        return (out / np.linalg.norm(out, axis=1, keepdims=True)).astype(np.float32)


STRINGS = ["Enter a valid email address.", "Your password was changed.", "The file could not be saved.",
           "Log in again to continue.", "Select a valid choice from the list.", "This field is required here.",
           "Add another user to the group.", "Change your password now."]
RU = ["Введите правильный адрес почты.", "Ваш пароль был изменён.", "Файл не удалось сохранить.",
      "Войдите снова, чтобы продолжить.", "Выберите вариант из списка.", "Это поле здесь обязательно.",
      "Добавьте ещё одного пользователя в группу.", "Смените пароль сейчас."]


@pytest.fixture(scope="module")
def tiny_ctx(tmp_path_factory):
    from xling.checkpoint import load_model
    from xling.corpus import Corpus
    from xling.shards import Shards
    from xling.tokenizer import load_tokenizer

    run = build_tiny_run(tmp_path_factory.mktemp("ood") / "run")  # en, fr, ru; an untrained tiny model
    model, _, _ = load_model(run / "checkpoints")
    return EvalContext(run_dir=run, model=model, shards=Shards(run / "shards"),
                       tokenizer=load_tokenizer(run / "tokenizer"), corpus=Corpus(run / "corpus"), step=1)


def use_catalogs(monkeypatch, root: Path, peer=None) -> None:
    monkeypatch.setattr(ood, "django_catalogs", lambda: ([root], "fake-gettext-1.0"))
    monkeypatch.setattr(ood, "load_peer", lambda: peer)


def test_evaluation_on_a_tiny_run_without_the_peer(tiny_ctx, tmp_path, monkeypatch):
    catalog(tmp_path, "fr", list(zip(STRINGS, [f"{s} (fr)" for s in STRINGS], strict=True)))
    catalog(tmp_path, "ru", list(zip(STRINGS, RU, strict=True)))
    use_catalogs(monkeypatch, tmp_path)
    out = ood.eval_ood(tiny_ctx)
    m = out["metrics"]
    pairs = ["en-fr", "fr-en", "en-ru", "ru-en"]
    assert set(m) == {"ood.set", "ood.items", "ood.retrieval.chance", "ood.retrieval.top1_mean", "ood.mining.f1_mean",
                      *(f"ood.retrieval.top1.{p}" for p in pairs), "ood.mining.f1.en-fr", "ood.mining.f1.en-ru"}
    assert m["ood.set"] == "fake-gettext-1.0" and m["ood.items"] == len(STRINGS)
    assert all(0 <= m[f"ood.retrieval.top1.{p}"] <= 1 for p in pairs)
    assert m["ood.retrieval.top1_mean"] == pytest.approx(np.mean([m[f"ood.retrieval.top1.{p}"] for p in pairs]))
    [section] = out["sections"]
    table = next(b for b in section["blocks"] if b["kind"] == "table")
    assert [r[0] for r in table["rows"]] == ["fr", "ru"] and all(r[2] == "-" for r in table["rows"])  # no peer


def test_identical_vectors_retrieve_every_string_and_missing_catalog_is_na(tiny_ctx, tmp_path, monkeypatch):
    # fr "translations" are the English strings themselves: the fake peer gives both sides identical vectors,
    # and so does our model once the language tag is the same on both sides; ru has no catalog at all
    catalog(tmp_path, "fr", list(zip(STRINGS, STRINGS, strict=True)))
    use_catalogs(monkeypatch, tmp_path, peer=FakePeer())
    from xling import encode

    real = encode.embed_texts
    monkeypatch.setattr(encode, "embed_texts", lambda model, tok, texts, lang, **kw: real(model, tok, texts, "en",
                                                                                            **kw))
    m = ood.eval_ood(tiny_ctx)["metrics"]
    for key in ("ood.retrieval.top1.en-fr", "ood.retrieval.top1.fr-en", "ood.peer.retrieval.top1.en-fr",
                "ood.peer.retrieval.top1.fr-en", "ood.mining.f1.en-fr", "ood.peer.mining.f1.en-fr",
                "ood.retrieval.top1_mean", "ood.peer.retrieval.top1_mean", "ood.retrieval.top1_mean_peer_langs",
                "ood.mining.f1_mean", "ood.peer.mining.f1_mean"):
        assert m[key] == 1.0, key
    assert not [k for k in m if "ru" in k.split(".")[-1]]  # no catalog: no key
    out = ood.eval_ood(tiny_ctx)
    rows = next(b for b in out["sections"][0]["blocks"] if b["kind"] == "table")["rows"]
    assert rows[1][:2] == ["ru", "n/a: no catalog"]


def test_skipped_without_django(tiny_ctx, monkeypatch):
    monkeypatch.setitem(sys.modules, "django", None)  # `import django` now raises ImportError
    out = ood.eval_ood(tiny_ctx)
    assert out["metrics"] == {} and "pip install django" in out["skipped"]
    assert "pip install django" in out["sections"][0]["blocks"][0]["text"]


def test_registered_after_retrieval_and_in_the_headline():
    assert EVALUATIONS["ood"][1] is ood.eval_ood
    assert EVALUATIONS["retrieval"][0] < EVALUATIONS["ood"][0]
    metrics = {"languages": ["en", "fr", "fa"], "ood.items": 179, "ood.set": "django-gettext-5.2",
               "ood.retrieval.top1.en-fr": 0.5, "ood.retrieval.top1.fr-en": 0.3, "ood.retrieval.top1.en-fa": 0.1,
               "ood.retrieval.top1.fa-en": 0.1, "ood.peer.retrieval.top1.en-fr": 0.9,
               "ood.peer.retrieval.top1.fr-en": 0.8, "ood.retrieval.chance": 1 / 179}
    rows, _ = headline(metrics)
    [row] = [r for r in rows if r[0].startswith("out-of-domain")]
    assert row[1:3] == ["0.400", "0.850 / 0.006"] and row[4] == "179"  # ours on the peer's language only (fr)

