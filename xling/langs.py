"""Language codes: validation and display names.

Two-letter codes are checked against ISO 639-1; three-letter codes (ISO 639-3,
which covers many low-resource languages) are accepted by shape. A region or
script suffix is allowed: `pt-BR`, `zh_Hant`.
"""

from __future__ import annotations

import math
import re
from collections import Counter

from xling.errors import XlingError

DEFAULT_LANGS = ["en", "fr", "es", "de", "ru", "ar", "fa", "vi"]  # the demo's Bibles: 3 scripts, 3 families

# ISO 639-1 codes with English names (written from the standard's code list).
NAMES = dict(item.split(":") for item in """
aa:Afar ab:Abkhazian ae:Avestan af:Afrikaans ak:Akan am:Amharic an:Aragonese ar:Arabic as:Assamese
av:Avaric ay:Aymara az:Azerbaijani ba:Bashkir be:Belarusian bg:Bulgarian bi:Bislama bm:Bambara
bn:Bengali bo:Tibetan br:Breton bs:Bosnian ca:Catalan ce:Chechen ch:Chamorro co:Corsican cr:Cree
cs:Czech cu:Church_Slavic cv:Chuvash cy:Welsh da:Danish de:German dv:Divehi dz:Dzongkha ee:Ewe
el:Greek en:English eo:Esperanto es:Spanish et:Estonian eu:Basque fa:Persian ff:Fulah fi:Finnish
fj:Fijian fo:Faroese fr:French fy:Western_Frisian ga:Irish gd:Gaelic gl:Galician gn:Guarani
gu:Gujarati gv:Manx ha:Hausa he:Hebrew hi:Hindi ho:Hiri_Motu hr:Croatian ht:Haitian hu:Hungarian
hy:Armenian hz:Herero ia:Interlingua id:Indonesian ie:Interlingue ig:Igbo ii:Sichuan_Yi ik:Inupiaq
io:Ido is:Icelandic it:Italian iu:Inuktitut ja:Japanese jv:Javanese ka:Georgian kg:Kongo ki:Kikuyu
kj:Kuanyama kk:Kazakh kl:Kalaallisut km:Khmer kn:Kannada ko:Korean kr:Kanuri ks:Kashmiri ku:Kurdish
kv:Komi kw:Cornish ky:Kyrgyz la:Latin lb:Luxembourgish lg:Ganda li:Limburgish ln:Lingala lo:Lao
lt:Lithuanian lu:Luba-Katanga lv:Latvian mg:Malagasy mh:Marshallese mi:Maori mk:Macedonian
ml:Malayalam mn:Mongolian mr:Marathi ms:Malay mt:Maltese my:Burmese na:Nauru nb:Norwegian_Bokmal
nd:North_Ndebele ne:Nepali ng:Ndonga nl:Dutch nn:Norwegian_Nynorsk no:Norwegian nr:South_Ndebele
nv:Navajo ny:Chichewa oc:Occitan oj:Ojibwa om:Oromo or:Oriya os:Ossetian pa:Punjabi pi:Pali
pl:Polish ps:Pashto pt:Portuguese qu:Quechua rm:Romansh rn:Rundi ro:Romanian ru:Russian
rw:Kinyarwanda sa:Sanskrit sc:Sardinian sd:Sindhi se:Northern_Sami sg:Sango si:Sinhala sk:Slovak
sl:Slovenian sm:Samoan sn:Shona so:Somali sq:Albanian sr:Serbian ss:Swati st:Southern_Sotho
su:Sundanese sv:Swedish sw:Swahili ta:Tamil te:Telugu tg:Tajik th:Thai ti:Tigrinya tk:Turkmen
tl:Tagalog tn:Tswana to:Tonga tr:Turkish ts:Tsonga tt:Tatar tw:Twi ty:Tahitian ug:Uyghur
uk:Ukrainian ur:Urdu uz:Uzbek ve:Venda vi:Vietnamese vo:Volapuk wa:Walloon wo:Wolof xh:Xhosa
yi:Yiddish yo:Yoruba za:Zhuang zh:Chinese zu:Zulu
""".split())
NAMES = {k: v.replace("_", " ") for k, v in NAMES.items()}

_CODE = re.compile(r"^(?P<base>[a-z]{2,3})(?:[-_](?P<sub>[A-Za-z]{2,4}|\d{3}))?$")


def check_lang(code: str, where: str = "") -> str:
    """Return `code` if it is a valid language code, else raise a clear XlingError."""
    m = _CODE.match(code or "")
    ok = m is not None and (len(m["base"]) == 3 or m["base"] in NAMES)
    if not ok:
        at = f" in {where}" if where else ""
        raise XlingError(
            f"unknown language code {code!r}{at}; use an ISO 639-1 code such as en, fr, ar "
            f"(or a three-letter ISO 639-3 code for languages without one)"
        )
    return code


def check_langs(codes: list[str], where: str = "") -> list[str]:
    seen = set()
    for c in codes:
        check_lang(c, where)
        if c in seen:
            at = f" in {where}" if where else ""
            raise XlingError(f"language {c!r} appears twice{at}; list each language once")
        seen.add(c)
    return list(codes)


def pivot_lang(langs: list[str]) -> str:
    """The language every other is compared with (parity, retrieval, mining): English when present, else the
    first."""
    return "en" if "en" in langs else langs[0]


# The writing system(s) each language is normally written in, as Unicode Script names (the names the `regex`
# package accepts in \p{Script=...}). Text in the language should hold letters of these scripts only, so a
# generated continuation's letters outside them are a measurable fault (xling.textmetrics.script_purity).
# Where a language is commonly written in two scripts both are listed (Serbian, Kurdish, Uzbek, Azerbaijani).
SCRIPTS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(
        "af ca cs cy da de en eo es et eu fi fil fo fr fy ga gd gl ha hr ht hu id ig is it jv la lb lt lv mg ms mt "
        "nb nl nn no oc pl pt qu ro rw sk sl sn so sq sv sw tk tl tr vi wo xh yo zu".split(), ("Latin",)),
    **dict.fromkeys("be bg cv ky mk mn os ru tg tt uk ba ce".split(), ("Cyrillic",)),
    **dict.fromkeys("ar fa ps sd ug ur".split(), ("Arabic",)),
    **dict.fromkeys("hi mr ne sa".split(), ("Devanagari",)),
    **dict.fromkeys("he yi".split(), ("Hebrew",)),
    **dict.fromkeys("am ti".split(), ("Ethiopic",)),
    "az": ("Latin", "Cyrillic"), "bs": ("Latin", "Cyrillic"), "sr": ("Cyrillic", "Latin"), "uz": ("Latin", "Cyrillic"),
    "kk": ("Cyrillic", "Latin"), "ku": ("Latin", "Arabic"),
    "as": ("Bengali",), "bn": ("Bengali",), "bo": ("Tibetan",), "dv": ("Thaana",), "el": ("Greek",),
    "gu": ("Gujarati",), "hy": ("Armenian",), "ka": ("Georgian",), "km": ("Khmer",), "kn": ("Kannada",),
    "lo": ("Lao",), "ml": ("Malayalam",), "my": ("Myanmar",), "or": ("Oriya",), "pa": ("Gurmukhi",),
    "si": ("Sinhala",), "ta": ("Tamil",), "te": ("Telugu",), "th": ("Thai",),
    "zh": ("Han",), "ja": ("Han", "Hiragana", "Katakana"), "ko": ("Hangul", "Han"),
}

# Languages written without spaces between words: counting "words" as runs of letters needs a segmenter there.
UNSPACED = frozenset("bo ja km lo my th zh".split())


def lang_scripts(code: str) -> tuple[str, ...] | None:
    """The Unicode scripts `code` is written in (a script subtag such as `sr-Latn` or `zh_Hant` is read as the
    language's base code; `sr-Latn` gives Latin), or None for a language missing from `SCRIPTS`."""
    m = _CODE.match(code or "")
    if m is None:
        return None
    sub = (m["sub"] or "").lower()
    if sub in _SCRIPT_SUBTAGS:
        return (_SCRIPT_SUBTAGS[sub],)
    return SCRIPTS.get(m["base"])


# ISO 15924 subtags that name a script outright (zh_Hant stays Han: Hans/Hant are both Han)
_SCRIPT_SUBTAGS = {"latn": "Latin", "cyrl": "Cyrillic", "arab": "Arabic", "deva": "Devanagari", "grek": "Greek",
                   "hans": "Han", "hant": "Han", "hebr": "Hebrew"}


def base_code(code: str) -> str:
    """The language part of a code: `pt-BR` -> `pt`, `zh_Hant` -> `zh` (a code of another shape unchanged)."""
    m = _CODE.match(code or "")
    return m["base"] if m else code


class CharNgramLangID:
    """A character-trigram naive Bayes language identifier trained on the corpus (independent of the model)."""

    def __init__(self, texts: dict[str, list[str]], n: int = 3):
        self.n = n
        self.langs = list(texts)
        self.logp, self.unk = {}, {}
        for lg, lines in texts.items():
            counts = Counter(g for t in lines for g in self._grams(t))
            total, vocab = sum(counts.values()), len(counts) + 1
            self.logp[lg] = {g: math.log((c + 1) / (total + vocab)) for g, c in counts.items()}
            self.unk[lg] = math.log(1 / (total + vocab))

    def _grams(self, text: str):
        t = f" {text.lower()} "
        return (t[i:i + self.n] for i in range(len(t) - self.n + 1))

    def predict(self, text: str) -> str:
        grams = list(self._grams(text))
        return max(self.langs, key=lambda lg: sum(self.logp[lg].get(g, self.unk[lg]) for g in grams))
