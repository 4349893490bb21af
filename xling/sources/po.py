"""Gettext catalogs: each translated string paired with its English msgid.

    [corpus]
    source = "po"
    paths = ["locale/"]         # .po files, or folders searched recursively (e.g. Django's locale/)
    langs = ["en", "de", "fr"]  # "en" is the msgid side

Every translated, non-fuzzy entry gives two segments that share the key
`"po:<msgctxt>:<msgid>"`: the msgid as English and the msgstr in the catalog's
language (its `Language:` header, else the folder in `.../<lang>/LC_MESSAGES/`).
All catalogs align on the English msgid, which is yielded once. Plural entries
pair msgid with msgstr[0]. Texts are kept as written (placeholders such as
`%(name)s` included); entries whose text is only placeholders and punctuation are
skipped. The first catalog to translate a key in a language wins (Django's
django.po and djangojs.po may both hold a string). Needs polib:
`pip install 'xling[po]'`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from xling.errors import XlingError
from xling.files import read_lines
from xling.langs import check_lang
from xling.sources import Segment
from xling.sources.jsonl import list_files

if TYPE_CHECKING:
    from xling.corpus import CorpusConfig

SOURCE_LANG = "en"
# printf and format placeholders: %(name)s %s %d %.2f %% {name} {0} {}
PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-+ #0]*\d*(?:\.\d+)?[a-zA-Z%]|\{[^{}]*\}")


def polib_module():
    try:
        import polib  # noqa: PLC0415 (optional dependency)
    except ImportError:
        raise XlingError("reading .po catalogs needs polib; install it with: pip install 'xling[po]'") from None
    return polib


def has_words(text: str) -> bool:
    """Whether text has a letter outside its placeholders."""
    return any(ch.isalpha() for ch in PLACEHOLDER.sub("", text))


def catalog_lang(path: Path, metadata: dict) -> str:
    """The catalog's language: its Language header, else the folder above LC_MESSAGES."""
    lang = (metadata.get("Language") or "").strip()
    where = f"the Language header of {path}"
    if not lang and path.parent.name == "LC_MESSAGES":
        lang, where = path.parent.parent.name, f"the folder name of {path}"
    if not lang:
        raise XlingError(f"cannot tell the language of {path}: set its `Language:` header "
                         f"or put it in <lang>/LC_MESSAGES/")
    return check_lang(lang, where)


def translation(entry) -> str:
    """A polib entry's translation, "" when it has none to pair: obsolete, fuzzy, no msgid, untranslated, or a
    plural entry with an empty form (a plural entry gives msgstr[0])."""
    if entry.obsolete or "fuzzy" in entry.flags or not entry.msgid:
        return ""
    if entry.msgid_plural:
        forms = entry.msgstr_plural
        return forms.get(0, forms.get("0", "")) if all(forms.values()) else ""
    return entry.msgstr


def read(cfg: CorpusConfig) -> Iterator[Segment]:
    polib = polib_module()
    files = list_files(cfg.paths, "*.po", "gettext .po")
    return _segments(files, cfg, polib)


def load_catalog(path: Path, polib):
    if not path.read_bytes().strip():
        raise XlingError(f"catalog {path} is empty; give a .po file with translated entries")
    try:
        return polib.pofile(str(path))
    except UnicodeDecodeError:
        read_lines(path, "catalog")  # raises the standard error with the line number
        raise XlingError(f"catalog {path} does not match its declared charset; re-encode it as UTF-8") from None
    except (OSError, ValueError) as e:
        raise XlingError(f"catalog {path} is not a valid .po file ({e}); fix it or leave it out") from None


def _segments(files: list[Path], cfg: CorpusConfig, polib) -> Iterator[Segment]:
    wanted = set(cfg.langs)
    seen: set[tuple[str, str]] = set()  # (lang, key) already yielded
    for path in files:
        po = load_catalog(path, polib)
        lang = catalog_lang(path, po.metadata)
        if lang == SOURCE_LANG or (wanted and lang not in wanted):
            continue  # an English catalog only repeats the msgids
        for entry in po:
            text = translation(entry)
            if not text or not has_words(entry.msgid) or not has_words(text):
                continue
            key = f"po:{entry.msgctxt or ''}:{entry.msgid}"
            if (not wanted or SOURCE_LANG in wanted) and (SOURCE_LANG, key) not in seen:
                seen.add((SOURCE_LANG, key))
                yield Segment(lang=SOURCE_LANG, key=key, text=entry.msgid, group=key)
            if (lang, key) not in seen:
                seen.add((lang, key))
                yield Segment(lang=lang, key=key, text=text, group=key)
