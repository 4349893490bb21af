"""The tokenizer stage: one shared subword vocabulary for every language, with language tags.

    xling tokenizer --run runs/demo                                    # CLI (via xling.stages)
    train_tokenizer(Corpus("runs/demo/corpus"), TokenizerConfig(), "runs/demo/tokenizer", alpha=0.3)
    tok = load_tokenizer("runs/demo/tokenizer"); tok.encode("In the beginning").ids

On disk (`<run>/tokenizer/`): `tokenizer.json` (Hugging Face `tokenizers` format, also loadable by
`transformers.PreTrainedTokenizerFast(tokenizer_file=...)`), `meta.json` (config, languages, vocabulary
size, sha256 of tokenizer.json), `report.json` and `report.md` (fertility, parity, unknown and byte-fallback
rates per language, vocabulary share per script).

Fixed ids: `<pad>`=0, `<s>`=1, `</s>`=2, `<unk>`=3, `<mask>`=4, then one tag per corpus
language in corpus order (`<en>`=5, `<fr>`=6, ...); each tag is one token. Encoding plain text adds no
special tokens: the objectives add BOS/EOS/tags themselves.

Training text: XLM-R style, the tokenizer is trained on text sampled per language with q ∝ p^alpha
(`xling.corpus.sampling_probs`), at most `max_sentences` sentences in all. Language i gets
round(q_i * N) sentences, N = min(max_sentences, train sentences); a language with fewer sentences than
its share is repeated whole as often as it fits and the remainder is drawn without replacement (the
least noisy form of "with replacement"); a larger one is subsampled without replacement.

Which kind, measured on the default corpus (8 Bible languages en fr es de ru ar fa vi, 234,585 train
verses; vocab 8000; alpha 0.3; report on the test split; one run each on this shared 2-core machine
under load ~10, so wall times are inflated and CPU seconds are the fairer figure):

    kind            sample  train CPU s (wall)  peak RSS  fertility en / fr / ru / ar / vi    max |parity-1|
    bpe               200k    12.6 (31.0)        393 MB   1.477 / 1.578 / 2.154 / 2.145 / 1.256     0.18 (ar)
    bytelevel-bpe     200k    12.8 (30.6)        358 MB   1.545 / 1.722 / 2.166 / 2.181 / 1.393     0.20 (ar)
    bpe                60k     4.7  (9.4)        211 MB   1.477 / 1.577 / 2.140 / 2.136 / 1.258     0.18 (ar)
    bytelevel-bpe      60k     6.2 (14.9)        197 MB   1.550 / 1.726 / 2.167 / 2.169 / 1.395     0.21 (ar)
    unigram            60k    71.0 (228)         354 MB   1.545 / 1.649 / 2.195 / 2.235 / 1.376     0.18 (ar)

No kind produced an `<unk>` or a byte-fallback token on the test split; all round-tripped 100%. Encode
speed was alike (0.6-1.2 MB/s under that load, bpe fastest). BPE with byte fallback (Metaspace
pre-tokenizer, sentencepiece-like) is the default: of the three, the fewest tokens per word in every
language (4-10% fewer than byte-level BPE for en, fr, vi), parity as even, the cheapest training. Most of
byte-level's gap is its pre-tokenizer, which cuts punctuation off words (with a whitespace-only split it
reached en 1.491, vi 1.274), plus ~140 entries spent on partial UTF-8 characters. Its one advantage: it
round-trips any text, while Metaspace drops a leading space and reads a literal "▁" as a space (corpus
text is stripped). HF Unigram trained 15x slower for more tokens. 60k sentences gave the same fertility as
200k (within 0.7%), hence the 100k default cap.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import resource
import statistics
import time
import unicodedata
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from xling.corpus import Corpus, count_words, sampling_probs
from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json, atomic_write_text, sha256_file
from xling.langs import pivot_lang
from xling.progress import format_table, progress

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", "<mask>")
FIRST_TAG = len(SPECIAL_TOKENS)  # language tags follow the fixed specials, in corpus order: <en> = 5, <fr> = 6, ...
TAG = re.compile(r"^<([A-Za-z][A-Za-z0-9_-]*)>$")
PAD_ID, BOS_ID, EOS_ID, UNK_ID, MASK_ID = range(5)
KINDS = ("bytelevel-bpe", "bpe", "unigram")
N_BYTES = 256
# Pre-tokens for every script: a word is letters with their combining marks (Arabic shadda, Devanagari vowel
# signs) and ZWNJ/ZWJ (inside Persian and Indic words); then digit runs, then other symbols. A space goes
# with the word after it; runs of spaces stay whole. `\w` or GPT-2's `\p{L}+` would cut words at marks.
PRETOKEN_PATTERN = r" ?[\p{L}\p{M}\x{200C}\x{200D}]+| ?\p{N}+| ?[^\s\p{L}\p{M}\p{N}]+|\s+(?!\S)|\s+"
META_SPACE = "\u2581"  # "▁", sentencepiece's word-start marker (bpe and unigram kinds)


@dataclass
class TokenizerConfig:
    kind: str = "bpe"  # bpe | bytelevel-bpe | unigram (bpe was measured best here: see the module docstring)
    vocab_size: int = 8000  # total entries: specials, language tags and byte pieces included
    max_sentences: int = 100_000  # cap on the alpha-sampled training sample (bounds time and memory)
    alpha: float | None = None  # sampling exponent for the training text; None = the corpus alpha
    min_frequency: int = 2  # BPE: a pair is merged only if seen this often (unigram ignores it)
    seed: int = 1234  # seed of the training-text sample
    byte_fallback: bool = True  # bpe/unigram: unseen characters become <0xNN> byte pieces, not <unk>
    lowercase: bool = False  # lowercase before tokenizing (then decode gives lowercased text)
    # a tokenizer folder (or a run directory) to extend instead of training one: every corpus language it lacks
    # is added with `extend_pieces` new pieces, every existing id kept (xling.extend; `xling add-language`)
    extend: str = ""
    extend_pieces: int = 2000

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.vocab_size < 64:
            raise ValueError(f"vocab_size must be at least 64, not {self.vocab_size}")
        if self.vocab_size > 1 << 24:
            raise ValueError(f"vocab_size {self.vocab_size} is unreasonably large (max 16,777,216)")
        if self.max_sentences < 1:
            raise ValueError(f"max_sentences must be >= 1, not {self.max_sentences}")
        if self.alpha is not None and self.alpha < 0:
            raise ValueError("alpha must be >= 0 (1 keeps the natural mix, 0 is uniform) or unset")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency must be >= 1, not {self.min_frequency}")
        if self.extend_pieces < 0:
            raise ValueError(f"extend_pieces must be >= 0, not {self.extend_pieces}")


# ---------------------------------------------------------------------------- names and ids

def lang_tag(lang: str) -> str:
    return f"<{lang}>"


def tag_langs(tok: Tokenizer) -> list[str]:
    """Language codes of the tags in id order: `<en>` = FIRST_TAG, `<fr>`, ... as trained, then any tag a language
    extension appended after the vocabulary (xling.extend); the order is the model's language-embedding order."""
    added = tok.get_added_tokens_decoder()
    return [m.group(1) for i in sorted(added) if i >= FIRST_TAG and (m := TAG.match(added[i].content))]


def lang_index(tok: Tokenizer, lang: str) -> int:
    """The model's language index of `lang` (its language-embedding row): its position in `tag_langs(tok)`.

    For a tokenizer trained by xling that is tag id - FIRST_TAG (<en> = 5 -> 0); a tag appended by xling.extend
    (id = the old vocabulary size) gets the next row, len(old languages).
    """
    langs = tag_langs(tok)
    if lang not in langs:
        raise _unknown_lang(tok, lang)
    return langs.index(lang)


def special_ids(tok: Tokenizer) -> dict[str, int]:
    """The fixed special ids, checked against the tokenizer: dict(pad=0, bos=1, eos=2, unk=3, mask=4)."""
    _check_specials(tok, "this tokenizer")
    return dict(zip(("pad", "bos", "eos", "unk", "mask"), range(len(SPECIAL_TOKENS)), strict=True))


def lang_ids(tok: Tokenizer, langs: list[str]) -> dict[str, int]:
    out = {}
    for lang in langs:
        i = tok.token_to_id(lang_tag(lang))
        if i is None:
            raise _unknown_lang(tok, lang)
        out[lang] = i
    return out


def _unknown_lang(tok: Tokenizer, lang: str) -> XlingError:
    return XlingError(f"the tokenizer has no tag {lang_tag(lang)} for language {lang!r} (its languages: "
                      f"{', '.join(tag_langs(tok)) or 'none'}); choose one of those, or retrain it on a "
                      f"corpus that includes {lang} (`xling tokenizer --overwrite`)")


def _check_specials(tok: Tokenizer, where: str) -> None:
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise XlingError(f"{where} does not have {t} at id {i} (it was not made by xling); "
                             f"train one with `xling tokenizer`")


def _byte_token(b: int) -> str:
    return f"<0x{b:02X}>"


def _byte_ids(tok: Tokenizer) -> set[int]:
    ids = (tok.token_to_id(_byte_token(b)) for b in range(N_BYTES))
    return {i for i in ids if i is not None}


# ---------------------------------------------------------------------------- loading

def _json_path(path: str | Path) -> Path:
    path = Path(path)
    return path if path.suffix == ".json" else path / "tokenizer.json"


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load `<dir>/tokenizer.json` (or a tokenizer.json path) and check the fixed special ids."""
    p = _json_path(path)
    if not p.is_file():
        raise XlingError(f"no tokenizer at {p}; train one with `xling tokenizer --run <run>`")
    try:
        tok = Tokenizer.from_file(str(p))
    except Exception as e:  # tokenizers raises a bare Exception with the serde message
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise XlingError(f"{p} is not a valid tokenizer.json ({msg}); retrain with "
                         f"`xling tokenizer --overwrite`") from None
    _check_specials(tok, str(p))
    return tok


def tokenizer_hash(path: str | Path) -> str:
    """sha256 of tokenizer.json: shards and checkpoints record it to catch a swapped tokenizer."""
    p = _json_path(path)
    if not p.is_file():
        raise XlingError(f"no tokenizer at {p}; train one with `xling tokenizer --run <run>`")
    return sha256_file(p)


# ---------------------------------------------------------------------------- sampling the training text

def sample_plan(counts: dict[str, int], alpha: float, max_sentences: int) -> dict[str, int]:
    """Sentences per language: proportional to q ∝ p^alpha, summing to min(max_sentences, total)."""
    q = sampling_probs(counts, alpha)
    total = min(max_sentences, sum(counts.values()))
    want = {k: q[k] * total for k in counts}
    plan = {k: int(v) for k, v in want.items()}
    # largest remainders get the sentences lost to rounding down, so the plan sums to `total` exactly
    for k in sorted(counts, key=lambda k: want[k] - plan[k], reverse=True)[: total - sum(plan.values())]:
        plan[k] += 1
    return plan


def sample_counts(n_available: int, n_wanted: int, rng: np.random.Generator) -> np.ndarray:
    """How many times each of n_available lines goes into the sample: (n_available,) int64, sum n_wanted.

    Whole copies first (a small language is repeated), then the remainder without replacement.
    """
    reps = np.full(n_available, n_wanted // n_available, dtype=np.int64)
    extra = rng.choice(n_available, size=n_wanted % n_available, replace=False)
    reps[extra] += 1
    return reps


def _count_lines(path: Path) -> int:
    if not path.is_file():
        return 0
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def sample_training_text(corpus: Corpus, cfg: TokenizerConfig, alpha: float) -> tuple[list[str], dict]:
    """The alpha-sampled training text (streamed per language: memory ~ the sample, not the corpus)."""
    files = {lang: corpus.path / "train" / f"{lang}.txt" for lang in corpus.langs}
    counts = {lang: _count_lines(p) for lang, p in files.items()}
    if not any(counts.values()):
        raise XlingError(f"the corpus at {corpus.path} has no training text; rebuild it with `xling corpus`")
    plan = sample_plan(counts, alpha, cfg.max_sentences)
    texts: list[str] = []
    bar = progress(corpus.langs, desc="tokenizer: sampling training text", unit="lang")
    for lang in bar:
        if not plan[lang]:
            continue
        bar.set_postfix(lang=lang, sentences=plan[lang])
        # one generator per language, so a language's sample does not depend on the others
        rng = np.random.default_rng([cfg.seed, zlib.crc32(lang.encode())])
        reps = sample_counts(counts[lang], plan[lang], rng)
        with open(files[lang], encoding="utf-8") as f:
            for line, r in zip(f, reps, strict=False):
                if r:
                    texts.extend([line.rstrip("\n")] * int(r))
    info = {"alpha": alpha, "q": sampling_probs(counts, alpha), "available": counts, "sampled": plan,
            "sentences": len(texts), "chars": sum(len(t) for t in texts)}
    return texts, info


# ---------------------------------------------------------------------------- building and training

def _show_progress() -> bool:
    return os.environ.get("XLING_PROGRESS", "1") != "0"


def new_tokenizer(cfg: TokenizerConfig, specials: list[str]) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained tokenizer (normalizer, pre-tokenizer, decoder) and its trainer."""
    norm = [normalizers.NFC()] + ([normalizers.Lowercase()] if cfg.lowercase else [])
    common = dict(vocab_size=cfg.vocab_size, special_tokens=specials, show_progress=_show_progress())
    if cfg.kind == "bytelevel-bpe":
        tok = Tokenizer(models.BPE())  # no <unk> needed: all 256 bytes are in the alphabet
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(min_frequency=cfg.min_frequency,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), **common)
    else:
        if cfg.byte_fallback:
            common["vocab_size"] -= N_BYTES  # the byte pieces are added after training
        if cfg.kind == "bpe":
            tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=cfg.byte_fallback))
            trainer = trainers.BpeTrainer(min_frequency=cfg.min_frequency, **common)
        else:
            tok = Tokenizer(models.Unigram())
            trainer = trainers.UnigramTrainer(unk_token="<unk>", max_piece_length=16, **common)
        # sentencepiece style: spaces become "▁" glued to the next word; the decoder undoes it (Llama's)
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META_SPACE, prepend_scheme="always")
        tok.decoder = decoders.Sequence([decoders.Replace(META_SPACE, " "), decoders.ByteFallback(),
                                         decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.normalizer = normalizers.Sequence(norm)
    return tok, trainer


def _add_byte_pieces(tok: Tokenizer) -> Tokenizer:
    """Append <0x00>..<0xFF> to a trained bpe/unigram vocabulary and switch byte fallback on.

    HF trainers do not create byte pieces themselves. Appended at the end, they leave every trained id
    (and so the fixed special ids) unchanged. Unigram pieces get a score below every trained piece.
    """
    spec = json.loads(tok.to_str())
    model = spec["model"]
    if model["type"] == "BPE":
        vocab = model["vocab"]
        for b in range(N_BYTES):
            if _byte_token(b) not in vocab:
                vocab[_byte_token(b)] = len(vocab)
    else:
        floor = min(score for _, score in model["vocab"]) - 10.0
        model["vocab"] += [[_byte_token(b), floor] for b in range(N_BYTES)]
    model["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(spec))


def build_tokenizer(texts: list[str], cfg: TokenizerConfig, langs: list[str]) -> Tokenizer:
    """Train on `texts` and check the fixed ids. A pure function of (texts, cfg, langs)."""
    specials = list(SPECIAL_TOKENS) + [lang_tag(lg) for lg in langs]
    floor = len(specials) + (N_BYTES if cfg.kind == "bytelevel-bpe" or cfg.byte_fallback else 0)
    if cfg.vocab_size < floor + 16:
        raise XlingError(f"tokenizer.vocab_size={cfg.vocab_size} is too small for {len(specials)} special "
                         f"tokens and the byte pieces; use at least {floor + 16}")
    tok, trainer = new_tokenizer(cfg, specials)
    # HF draws its own bars only on a terminal; ours shows the sample being read, then the merge phase
    bar = progress(total=len(texts), desc=f"tokenizer: training {cfg.kind}", unit="sent")

    def feed():
        for i in range(0, len(texts), 4096):
            yield from texts[i:i + 4096]
            bar.update(min(4096, len(texts) - i))
        bar.set_description(f"tokenizer: training {cfg.kind} (building the vocabulary)")
        bar.refresh()

    try:
        tok.train_from_iterator(feed(), trainer=trainer, length=len(texts))
    finally:
        bar.close()
    if cfg.kind != "bytelevel-bpe" and cfg.byte_fallback:
        tok = _add_byte_pieces(tok)
    for i, t in enumerate(specials):  # the contract every later stage relies on
        if tok.token_to_id(t) != i:
            raise RuntimeError(f"training put {t} at id {tok.token_to_id(t)}, not {i}")
        if tok.encode(t).ids != [i]:
            raise RuntimeError(f"{t} does not encode to the single id {i}")
    return tok


def train_tokenizer(corpus: Corpus, cfg: TokenizerConfig, out_dir: str | Path, alpha: float,
                    overwrite: bool = True) -> dict:
    """Sample the training text, train, and write tokenizer.json, meta.json, report.json, report.md.

    `alpha` is the corpus sampling exponent; `cfg.alpha` overrides it when set. Returns the report.
    """
    alpha = cfg.alpha if cfg.alpha is not None else alpha
    texts, sample = sample_training_text(corpus, cfg, alpha)
    t0, cpu0 = time.perf_counter(), time.process_time()
    tok = build_tokenizer(texts, cfg, corpus.langs)
    seconds, cpu_seconds = time.perf_counter() - t0, time.process_time() - cpu0
    del texts
    report = tokenizer_report(tok, corpus, report_split(corpus))
    report["training"] = {
        "kind": cfg.kind, "seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),  # whole process
        **sample,
    }
    write_tokenizer(tok, corpus, cfg, out_dir, report, alpha=alpha, overwrite=overwrite)
    return report


def report_split(corpus: Corpus) -> str:
    """The split a tokenizer report reads: test, or train for a corpus without one."""
    return "test" if any(corpus.texts("test", lg) for lg in corpus.langs) else "train"


def write_tokenizer(tok: Tokenizer, corpus: Corpus, cfg: TokenizerConfig, out_dir: str | Path, report: dict, *,
                    alpha: float | None, overwrite: bool = True) -> None:
    """The tokenizer folder, atomically: tokenizer.json, meta.json, report.json, report.md."""
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        tok.save(str(tmp / "tokenizer.json"))
        meta = {
            "config": dataclasses.asdict(cfg),
            "kind": cfg.kind,
            "langs": list(corpus.langs),
            "vocab_size": tok.get_vocab_size(),
            "special_ids": special_ids(tok),
            "lang_ids": lang_ids(tok, corpus.langs),
            "alpha": alpha,
            "sha256": sha256_file(tmp / "tokenizer.json"),
        }
        atomic_write_json(tmp / "meta.json", meta)
        atomic_write_json(tmp / "report.json", report)
        atomic_write_text(tmp / "report.md", format_report(report) + "\n")


# ---------------------------------------------------------------------------- report

def _script_of(token_text: str) -> str:
    """The writing system of a vocabulary entry's letters (from Unicode names: LATIN, CYRILLIC, ...)."""
    scripts = set()
    for ch in token_text:
        if unicodedata.category(ch).startswith("L"):
            name = unicodedata.name(ch, "OTHER")
            scripts.add("CJK" if name.startswith("CJK") else name.split()[0])
    if len(scripts) == 1:
        return scripts.pop().title()
    if scripts:
        return "mixed"
    return "bytes (part of a character)" if "\ufffd" in token_text else "no letters"


def vocab_scripts(tok: Tokenizer) -> dict[str, int]:
    """Vocabulary entries (specials and language tags excluded) per script of their letters."""
    special = {t.content for t in tok.get_added_tokens_decoder().values()}
    byte_ids = _byte_ids(tok)
    counts: dict[str, int] = {}
    for piece, i in tok.get_vocab(with_added_tokens=False).items():
        if piece in special:
            continue
        script = "byte pieces" if i in byte_ids else _script_of(tok.decoder.decode([piece]))
        counts[script] = counts.get(script, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def tokenizer_report(tok: Tokenizer, corpus: Corpus, split: str = "test") -> dict:
    """Per language: fertility, parity against the pivot, chars per token, unk/byte rates, round trip.

    parity = median over aligned segments of tokens(segment in lang) / tokens(same-key pivot segment).
    The pivot is English, or the first corpus language when English is absent.
    """
    pivot = pivot_lang(corpus.langs)
    byte_ids = _byte_ids(tok)
    normalizer = tok.normalizer
    lengths: dict[str, dict[str, int]] = {}
    langs: dict[str, dict] = {}
    for lang in progress(corpus.langs, desc=f"tokenizer: report on {split}", unit="lang"):
        texts, keys = corpus.texts(split, lang), corpus.keys(split, lang)
        encs = tok.encode_batch(texts, add_special_tokens=False)
        ids = [e.ids for e in encs]
        lengths[lang] = dict(zip(keys, (len(x) for x in ids), strict=True))
        n_tok = sum(len(x) for x in ids)
        n_words = sum(count_words(t) for t in texts)
        n_chars = sum(len(t) for t in texts)
        n_unk = sum(x.count(UNK_ID) for x in ids)
        n_bytes = sum(1 for x in ids for i in x if i in byte_ids)
        same = sum(tok.decode(x) == (normalizer.normalize_str(t) if normalizer else t)
                   for x, t in zip(ids, texts, strict=True))
        langs[lang] = {
            "segments": len(texts), "words": n_words, "chars": n_chars, "tokens": n_tok,
            "fertility": n_tok / n_words if n_words else None,
            "chars_per_token": n_chars / n_tok if n_tok else None,
            "unk_rate": n_unk / n_tok if n_tok else None,
            "byte_rate": (n_bytes / n_tok if n_tok else None) if byte_ids else None,
            "roundtrip": same / len(texts) if texts else None,
        }
    ref = lengths[pivot]
    for lang in corpus.langs:
        ratios = [n / ref[k] for k, n in lengths[lang].items() if ref.get(k)]
        langs[lang]["parity"] = statistics.median(ratios) if ratios else None
        langs[lang]["aligned"] = len(ratios)
    scripts = vocab_scripts(tok)
    total = sum(scripts.values())
    return {
        "split": split,
        "pivot": pivot,
        "pivot_note": "" if pivot == "en" else f"English is not in the corpus; parity is against {pivot}",
        "vocab_size": tok.get_vocab_size(),
        "model": json.loads(tok.to_str())["model"]["type"],
        "byte_fallback": bool(byte_ids),
        "langs": langs,
        "vocab_scripts": {s: {"entries": n, "share": n / total} for s, n in scripts.items()},
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def format_report(report: dict) -> str:
    """Markdown: the per-language table (pivot first), vocabulary by script, and the training sample."""
    pivot = report["pivot"]
    order = [pivot] + [lg for lg in report["langs"] if lg != pivot]
    rows = []
    for lang in order:
        r = report["langs"][lang]
        rows.append([lang, r["segments"], r["words"], r["tokens"], _num(r["fertility"]),
                     _num(r["parity"]), _num(r["chars_per_token"]), _pct(r["unk_rate"]),
                     _pct(r["byte_rate"]), _pct(r["roundtrip"])])
    header = ["lang", "segments", "words", "tokens", "tokens/word", f"parity vs {pivot}", "chars/token",
              "unk %", "byte %", "round trip %"]
    train = report.get("training")
    title = f"## Tokenizer ({train['kind'] if train else report['model']}, {report['vocab_size']:,} entries)"
    out = [title, "",
           f"On the {report['split']} split. tokens/word = fertility; parity = median over aligned segments "
           f"of tokens(lang) / tokens({pivot}); byte % = share of <0xNN> byte-fallback tokens.", ""]
    if report.get("pivot_note"):
        out += [f"Note: {report['pivot_note']}.", ""]
    out += [format_table(header, rows), ""]
    srows = [[s, v["entries"], f"{100 * v['share']:.1f}"] for s, v in report["vocab_scripts"].items()]
    out += [format_table(["script", "vocab entries", "share %"], srows, title="### Vocabulary by script")]
    if train:
        trows = [[lg, train["available"][lg], train["sampled"][lg], f"{train['q'][lg]:.3f}"]
                 for lg in report["langs"]]
        out += ["", format_table(["lang", "train sentences", "sampled", "q"], trows,
                                 title=f"### Training sample (alpha {train['alpha']})"),
                "", f"Trained in {train['seconds']:.1f} s ({train['cpu_seconds']:.1f} s CPU) on "
                    f"{train['sentences']:,} sentences ({train['chars']:,} chars); "
                    f"peak RSS of the process {train['peak_rss_mb']:,.0f} MB."]
    return "\n".join(out)
