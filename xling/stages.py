"""Pipeline stages over one run directory, with a manifest that traces every output.

    run_stage("corpus", cfg, "runs/demo")       # what `xling corpus --run runs/demo` does

A run directory holds one folder per stage (`corpus/`, `tokenizer/`, `shards/`, ...), the resolved
`config.toml` and `manifest.json`. Each stage has a hash over its own config sections, its inputs and
the hash of the stage before it, so:
  - a stage whose hash is unchanged and whose output exists is skipped (`force=True` rebuilds it);
  - a stage whose output was built from something else is refused unless `overwrite=True`;
  - a stage whose upstream is missing or stale says which command to run first.
Module APIs (`build_corpus`, `train_tokenizer`, `build_shards`) stay pure: this file does the bookkeeping.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xling import __version__
from xling.config import Config, read_toml, to_toml
from xling.errors import XlingError
from xling.files import atomic_write_json, atomic_write_text, check_writable

MANIFEST = "manifest.json"
LOCK = ".xling.lock"


class _RunLock:
    """An exclusive OS file lock on `<run>/.xling.lock` for the life of a writing stage (re-entrant in one
    process, so `xling demo` holds it across its stages). The OS releases it when the holder exits, `kill -9`
    included: a lock left by a dead process is simply taken over. The file holds the holder's pid, for the
    message another writer gets."""

    # resolved run path -> [open file, depth, whether this lock made the directory, whether it made the lock file]
    held: dict[Path, list] = {}

    def __init__(self, path: Path, create: bool):
        self.path, self.create = Path(path), create

    def __enter__(self):
        import os

        from xling.distributed import launch_rank

        if self.path.exists() and not self.path.is_dir():
            raise XlingError(f"run directory {self.path} is a file; choose another --run")
        key = self.path.resolve()
        if key in self.held:
            self.held[key][1] += 1
            return self
        # under torchrun rank 0 writes and locks, the others read; a run that does not exist yet is created by the
        # stages that build it (create), not by one that only reads it (evaluate says what is missing)
        if launch_rank() != 0 or not (self.create or self.path.is_dir()):
            self.held[key] = [None, 1, False, False]
            return self
        made = not self.path.exists()
        check_writable(self.path, "run directory", directory=True)  # under a file, under /proc: one line
        self.path.mkdir(parents=True, exist_ok=True)
        made_lock = not (self.path / LOCK).exists()
        f = open(self.path / LOCK, "a+", encoding="utf-8")  # noqa: SIM115 (held until __exit__)
        try:
            import fcntl

            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): no lock, as before
            pass
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()  # (the holder made the file: it stays)
            raise XlingError(f"{self.path} is in use by another xling process (pid {holder}); wait for it to "
                             f"finish or choose another --run") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self.held[key] = [f, 1, made, made_lock]
        return self

    def __exit__(self, *exc) -> None:
        key = self.path.resolve()
        entry = self.held[key]
        entry[1] -= 1
        if entry[1] == 0:
            del self.held[key]
            if entry[0] is not None:
                entry[0].close()  # closing the file releases the lock
            # leave nothing behind where nothing was written: no lock file in a folder that holds no run (a
            # refused `--run ~/Documents`), no directory for a new run whose first stage failed
            if entry[3] and not (self.path / MANIFEST).exists():
                (self.path / LOCK).unlink(missing_ok=True)
            if entry[2] and not any(self.path.iterdir()):
                self.path.rmdir()


@dataclass(frozen=True)
class Stage:
    name: str  # the CLI subcommand
    sections: tuple[str, ...]  # config sections that define its output
    upstream: str | None  # the stage whose output it reads
    out: str  # its folder inside the run directory
    run: Callable[[Config, Path, Path], dict]  # (cfg, run_dir, tmp-free out dir) -> summary


def _corpus(cfg: Config, run_dir: Path, out: Path) -> dict:
    from xling.corpus import STATS_HEADER, build_corpus, stats_table
    from xling.progress import format_table

    meta = build_corpus(cfg.corpus, out)
    print(format_table(STATS_HEADER, stats_table(meta),
                       title=f"corpus: {meta['source']}, {len(meta['langs'])} languages "
                             f"(p = natural share, q = sampled share with alpha {cfg.corpus.alpha})"))
    pairs = sum(c.get("train", 0) for c in meta["pairs"].values())
    print(f"translation pairs (train, all language pairs): {pairs:,}; dropped: {meta['dropped']}")
    if cfg.corpus.langid:
        by_lang = meta["dropped_by_lang"]
        print("not identified as their language (py3langid, dropped): " + ", ".join(
            f"{lg} {by_lang.get(lg, {}).get('wrong_language', 0):,}" for lg in meta["langs"]))
    return {"langs": meta["langs"], "train_pairs": pairs}


def _tokenizer(cfg: Config, run_dir: Path, out: Path) -> dict:
    from xling.corpus import Corpus
    from xling.tokenizer import format_report, train_tokenizer

    alpha = cfg.tokenizer.alpha if cfg.tokenizer.alpha is not None else cfg.corpus.alpha
    if cfg.tokenizer.extend:  # a trained tokenizer with the corpus languages it lacks added, every id kept
        from xling.extend import extend_run_tokenizer, format_extension

        report = extend_run_tokenizer(Corpus(run_dir / "corpus"), cfg.tokenizer, out, alpha=alpha)
        print(format_report(report))
        print(format_extension(report["extension"]))
    else:
        report = train_tokenizer(Corpus(run_dir / "corpus"), cfg.tokenizer, out, alpha=alpha)
        print(format_report(report))
    return {"vocab_size": report.get("vocab_size")}


def _shard(cfg: Config, run_dir: Path, out: Path) -> dict:
    from xling.corpus import Corpus
    from xling.shards import build_shards

    meta = build_shards(Corpus(run_dir / "corpus"), run_dir / "tokenizer", cfg.shard, out)
    return {"dtype": meta.get("dtype"), "vocab_size": meta.get("vocab_size")}


STAGES: dict[str, Stage] = {
    "corpus": Stage("corpus", ("corpus",), None, "corpus", _corpus),
    "tokenizer": Stage("tokenizer", ("tokenizer",), "corpus", "tokenizer", _tokenizer),
    "shard": Stage("shard", ("shard",), "tokenizer", "shards", _shard),
    "pretrain": Stage("pretrain", ("model", "train"), "shard", "checkpoints", lambda *a: {}),
}

# Train keys that only say how long or how often: changing them continues a run instead of replacing it.
BUDGET_KEYS = ("max_steps", "max_tokens", "max_minutes", "eval_every", "eval_batches", "eval_max_tokens",
               "log_every", "ckpt_every", "keep_checkpoints", "tensorboard")


def input_fingerprint(cfg: Config) -> str:
    """What the corpus reads from outside the config: file sizes and times of its input paths."""
    entries = []
    for p in cfg.corpus.paths:
        path = Path(p)
        files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
        for f in files:
            st = f.stat() if f.exists() else None
            entries.append([str(f), st.st_size if st else -1, st.st_mtime_ns if st else -1])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:16]


def _stage_config(cfg: Config, name: str) -> dict:
    d = {s: dict(cfg.to_dict()[s]) for s in STAGES[name].sections}
    for section in ("corpus", "shard"):
        if section in d:
            d[section].pop("workers", None)  # how many processes built it does not change the output
    if name == "corpus" and not d["corpus"].get("langid"):  # added later; off = as before: corpora stay up to date
        d["corpus"].pop("langid", None)
    if name == "pretrain":
        for k in BUDGET_KEYS:
            d["train"].pop(k, None)
        d["train"].pop("ckpt_format", None)  # how checkpoints are written, not what is trained (either loads)
        for k in ("pairs", "lang_shares"):  # added later; empty = as before (every pair, alpha alone): runs stay
            if not d["train"].get(k):  # up to date
                d["train"].pop(k, None)
        if not d["train"].get("objectives", {}).get("distill"):  # distill's settings matter only with it
            d["train"].pop("teacher", None)
            d["train"].pop("distill_max_segments", None)
    return d


def stage_hash(cfg: Config, name: str) -> str:
    stage = STAGES[name]
    parts = [name, hashlib.sha256(json.dumps(_stage_config(cfg, name), sort_keys=True).encode()).hexdigest()]
    if stage.upstream:
        parts.append(stage_hash(cfg, stage.upstream))
    else:
        parts.append(input_fingerprint(cfg))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _left_by_a_stop(name: str) -> bool:
    """The lock, or a stage's hidden work folder (`files.atomic_dir`: `.corpus.partial-*` to resume from, a
    `.*.tmp` of a killed process): what a run stopped before its first stage finished leaves behind."""
    return name == LOCK or name.startswith(".") and (".partial-" in name or name.endswith(".tmp"))


class RunDir:
    """A run directory and its manifest."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"stages": {}}
        try:
            return json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise XlingError(f"{self.manifest_path} is corrupt; remove the run directory or pass --overwrite") \
                from None

    def saved_config(self) -> dict | None:
        """The run's resolved config as a plain tree (the base for later stages), if any."""
        p = self.path / "config.toml"
        return read_toml(p, "the run's config") if p.exists() else None

    def lock(self, create: bool = True) -> _RunLock:
        """`with rd.lock():` one writer per run directory (one clear error for a second one)."""
        return _RunLock(self.path, create)

    def check_is_ours(self, overwrite: bool) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise XlingError(f"run directory {self.path} is a file; choose another --run")
        mine = self.path.is_dir() and any(not _left_by_a_stop(p.name) for p in self.path.iterdir())
        if mine and not self.manifest_path.exists() and not overwrite:
            raise XlingError(f"{self.path} is not empty and holds no xling run (no {MANIFEST}); "
                             f"choose another --run or pass --overwrite")

    def record(self, name: str, cfg: Config, h: str, summary: dict, seconds: float) -> None:
        m = self.manifest()
        m["xling_version"] = __version__
        m.setdefault("stages", {})[name] = {
            "hash": h,
            "config": _stage_config(cfg, name),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "seconds": round(seconds, 2),
            "summary": summary,
        }
        atomic_write_json(self.manifest_path, m)
        atomic_write_text(self.path / "config.toml", to_toml(cfg))

    def forget(self, name: str) -> None:
        """Drop stage `name`'s record: its outputs are being rebuilt, so an interrupted rebuild must not be
        judged against the old config (it resumes against its own checkpoints)."""
        m = self.manifest()
        if m.get("stages", {}).pop(name, None) is not None:
            atomic_write_json(self.manifest_path, m)


def _diff(old: dict, new: dict) -> str:
    changes = []
    for sec, values in new.items():
        for k, v in values.items():
            o = old.get(sec, {}).get(k, "<unset>")
            if o != v:
                changes.append(f"{sec}.{k} {o!r} -> {v!r}")
    return "; ".join(changes[:4]) or "its inputs changed"


def check_upstream(rd: RunDir, manifest: dict, cfg: Config, name: str) -> None:
    """The stage before `name` must exist in the run and match the current config."""
    up_name = STAGES[name].upstream
    if not up_name:
        return
    up = manifest["stages"].get(up_name)
    if up is None or not (rd.path / STAGES[up_name].out).exists():
        raise XlingError(f"{rd.path} has no {up_name} yet; run `xling {up_name} --run {rd.path}` first")
    if up["hash"] != stage_hash(cfg, up_name):
        # name the earliest stale stage of the chain: the one to re-run first (after `corpus --overwrite`, the
        # tokenizer, not the shard, which would only send the user on to the tokenizer)
        chain = [up_name]
        while STAGES[chain[-1]].upstream:
            chain.append(STAGES[chain[-1]].upstream)
        first = next(n for n in reversed(chain) if manifest["stages"].get(n, {}).get("hash") != stage_hash(cfg, n))
        rec, above = manifest["stages"].get(first), STAGES[first].upstream
        if rec is None:
            raise XlingError(f"{rd.path} has no {first} yet; run `xling {first} --run {rd.path}` first")
        if rec["config"] != _stage_config(cfg, first):
            why = f"built from a different config ({_diff(rec['config'], _stage_config(cfg, first))})"
        elif above:
            why = f"built from an older {above}, since rebuilt"
        else:
            why = "built from other input files or another xling version"
        raise XlingError(f"the {first} in {rd.path} is out of date: {why}; re-run `xling {first} --run {rd.path} "
                         f"--overwrite` and the stages after it, or use the run's config")


def _one_writer(create: bool) -> Callable:
    """Run the decorated stage function under its run directory's lock (`RunDir.lock`)."""
    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def locked(*args, **kwargs):
            with RunDir(sig.bind(*args, **kwargs).arguments["run_dir"]).lock(create):
                return fn(*args, **kwargs)

        return locked

    return wrap


@_one_writer(create=True)
def run_pretrain(cfg: Config, run_dir: str | Path, *, resume: bool | None = None, overwrite: bool = False) -> dict:
    """Train into `<run>/checkpoints`. resume=None: continue when the run holds checkpoints of the same model and
    objectives (only the budget changed), start when it holds none, refuse a different config unless overwrite."""
    from xling.checkpoint import list_checkpoints
    from xling.distributed import launch_rank
    from xling.pretrain import pretrain

    rd = RunDir(run_dir)
    rd.check_is_ours(overwrite)
    manifest = rd.manifest()
    check_upstream(rd, manifest, cfg, "pretrain")
    h = stage_hash(cfg, "pretrain")
    done = manifest["stages"].get("pretrain")
    has_ckpt = bool(list_checkpoints(rd.path / "checkpoints"))
    if has_ckpt and done and done["hash"] != h and not overwrite:
        raise XlingError(f"{rd.path / 'checkpoints'} holds a model trained with a different config "
                         f"({_diff(done['config'], _stage_config(cfg, 'pretrain'))}); pass --overwrite to start over, "
                         f"or choose another --run")
    if resume is None:
        resume = has_ckpt and not overwrite
    t0 = time.perf_counter()
    # training anew: the old record no longer describes the checkpoints (dropped once the config passed its checks)
    summary = pretrain(cfg, rd.path, resume=resume, overwrite=overwrite, on_fresh_start=lambda: rd.forget("pretrain"))
    if launch_rank() == 0:
        rd.record("pretrain", cfg, h, _jsonable(summary), time.perf_counter() - t0)
    return summary


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


@_one_writer(create=False)
def run_evaluate(run_dir: str | Path, only: list[str] | None = None, max_segments: int = 1000) -> dict:
    """Evaluate the run's latest checkpoint on the test split; writes `<run>/eval/*.json`."""
    from xling.checkpoint import load_model
    from xling.corpus import Corpus
    from xling.evaluate import EvalContext, run_evaluations
    from xling.registry import EVALUATIONS
    from xling.shards import Shards
    from xling.tokenizer import load_tokenizer, tokenizer_hash

    rd = Path(run_dir)
    if not (rd / "checkpoints").is_dir():
        raise XlingError(f"{rd} has no trained model (no checkpoints/); run `xling pretrain --run {rd}` first")
    model, _, meta = load_model(rd / "checkpoints")
    ctx = EvalContext(run_dir=rd, model=model, step=int(meta.get("step", 0)), max_segments=max_segments,
                      shards=Shards(rd / "shards", expect_tokenizer_hash=tokenizer_hash(rd / "tokenizer")),
                      tokenizer=load_tokenizer(rd / "tokenizer"), corpus=Corpus(rd / "corpus"))
    return run_evaluations(ctx, EVALUATIONS, only)


@_one_writer(create=True)
def run_stage(name: str, cfg: Config, run_dir: str | Path, *, overwrite: bool = False,
              force: bool = False) -> dict[str, Any]:
    """Run one stage into `run_dir`, or skip it when its output is up to date."""
    stage = STAGES[name]
    rd = RunDir(run_dir)
    rd.check_is_ours(overwrite)
    manifest = rd.manifest()
    h = stage_hash(cfg, name)
    check_upstream(rd, manifest, cfg, name)
    out = rd.path / stage.out
    done = manifest["stages"].get(name)
    if done and out.exists():
        if done["hash"] == h and not force:
            print(f"{name}: up to date in {out} (hash {h}); pass --force to rebuild")
            return done["summary"]
        if done["hash"] != h and not overwrite:
            raise XlingError(f"{out} holds a {name} built from a different config "
                             f"({_diff(done['config'], {s: cfg.to_dict()[s] for s in stage.sections})}); "
                             f"pass --overwrite to replace it, or choose another --run")
    elif out.exists() and not overwrite:
        raise XlingError(f"{out} exists but is not recorded in {rd.manifest_path}; pass --overwrite to replace it")
    rd.path.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    summary = stage.run(cfg, rd.path, out)
    seconds = time.perf_counter() - t0
    rd.record(name, cfg, h, summary, seconds)
    print(f"{name}: wrote {out} in {seconds:.1f} s")
    return summary


def run_demo(run_dir: str | Path, *, config: str | None = None, minutes: float | None = None,
             langs: str | None = None, overrides: list[str] = (), overwrite: bool = False) -> Path:
    """`xling demo`: corpus -> tokenizer -> shard -> pretrain (resumes) -> evaluate -> report under one lock,
    skipping what is up to date. `config` defaults to the repo's configs/demo.toml (built-in defaults when
    installed without it); `minutes` sets train.max_minutes, `langs` corpus.langs. Returns the report folder."""
    from xling.registry import load_config
    from xling.report import write_report

    if config is None:
        config = str(Path(__file__).resolve().parent.parent / "configs" / "demo.toml")
        if not Path(config).exists():
            config = None  # installed without the repo's configs/: built-in defaults are the demo
    # (a config the user named and that is missing is load_config's one-line error, not the default demo)
    extra = [f"train.max_minutes={minutes}"] if minutes is not None else []
    if langs:
        extra.append(f"corpus.langs={langs}")
    cfg = load_config(config, [*extra, *overrides], base=RunDir(run_dir).saved_config())
    with RunDir(run_dir).lock():  # one writer from the corpus to the report
        for stage in ("corpus", "tokenizer", "shard"):
            run_stage(stage, cfg, run_dir, overwrite=overwrite)
        run_pretrain(cfg, run_dir, overwrite=overwrite)
        run_evaluate(run_dir)
        return write_report(run_dir)


# add-language: the base's pair objectives (contrastive, tlm, ...) weigh this many times their weight against the
# others: a new language's place in the shared sentence space is what the added minutes have least of, and the old
# pairs keep theirs with it (measured: docs/measurements.md, "The objective mix while a language is added")
PAIR_WEIGHT = 2.0
# add-language: an untied output layer's rows of the base vocabulary learn at this share of its lr
# (train.old_vocab_head_lr_scale), the new pieces' rows at the full rate: the old languages' next-token statistics
# move slowly while the new language's pieces learn fast (measured: docs/measurements.md, "The base vocabulary's
# output rows at a third of the head's lr")
OLD_VOCAB_HEAD_LR_SCALE = 0.3


def added_mix(objectives: dict[str, float], pair_weight: float) -> str:
    """The train.objectives override of an add-language run: the pair objectives' weights x pair_weight."""
    from xling.objectives import OBJECTIVES

    mix = {k: w * pair_weight if k in OBJECTIVES and OBJECTIVES[k].uses_pairs else w for k, w in objectives.items()}
    return "train.objectives={" + ", ".join(f"{k} = {w!r}" for k, w in mix.items()) + "}"


def run_add_language(base: str | Path, lang: str, out: str | Path, *, minutes: float = 5.0, replay: float = 0.5,
                     init: str = "mean", pieces: int = 2000, pair_weight: float | None = None,
                     source: str | None = None,
                     paths: list[str] = (), overrides: list[str] = (), overwrite: bool = False,
                     back_translate: bool = False, pivot: str | None = None, bt_lines: int = 2000) -> dict:
    """`xling add-language`: a new run `out` that is the trained run `base` with `lang` added. Its corpus is the
    base's config with `lang` appended to corpus.langs (same source, same hashed split, so aligned text keeps the
    base's chapters), or, with `source` and `paths`, the base's corpus kept as it is with the new language read
    from that source (corpus.base; a TSV of pairs with an old language adds that side to it, aligned); its
    tokenizer is the base's with `pieces` new pieces and the tag (every id kept,
    tokenizer.extend); its model starts from the base's (new rows by `init`, train.init_from) and trains `minutes`
    more with the old languages replayed in `replay` of the rows (train.lang_shares = {lang: 1 - replay}) and the
    base's pair objectives weighted `pair_weight` (default PAIR_WEIGHT) times their weight against the others
    (`added_mix`), and an untied output layer's rows of the base's ids at OLD_VOCAB_HEAD_LR_SCALE of its lr
    (train.old_vocab). Later stages (evaluate, report, export) treat it as any run. With `back_translate`, see
    `_add_back_translated`.
    Returns the pretraining summary."""
    from xling.checkpoint import list_checkpoints
    from xling.corpus import Corpus
    from xling.langs import check_lang
    from xling.registry import load_config

    base, out = Path(base), Path(out)
    check_lang(lang, "--lang")
    saved = RunDir(base).saved_config()
    if saved is None or not list_checkpoints(base / "checkpoints") or not (base / "corpus").is_dir():
        raise XlingError(f"{base} is not a trained run (no config, corpus or checkpoint); give a run that "
                         f"`xling pretrain` (or `xling demo`) finished")
    if not 0 <= replay < 1:
        raise XlingError(f"--replay is the old languages' share of the rows, in [0, 1), not {replay}")
    pair_weight = PAIR_WEIGHT if pair_weight is None else pair_weight
    if not (math.isfinite(pair_weight) and pair_weight > 0):
        raise XlingError(f"--pair-weight multiplies the pair objectives' weights: a number > 0, not {pair_weight}")
    langs = Corpus(base / "corpus").langs
    if lang in langs:
        raise XlingError(f"{base} already has {lang} ({', '.join(langs)}); choose a language it lacks (to train a "
                         f"language you added more, run the same add-language command again with a larger "
                         f"--minutes: it continues its --out run)")
    if out.resolve() == base.resolve():
        raise XlingError("--out must be a new run directory, not the base run")
    if back_translate:
        return _add_back_translated(base, lang, out, minutes=minutes, replay=replay, init=init, pieces=pieces,
                                    pair_weight=pair_weight, source=source, paths=paths, overrides=overrides,
                                    overwrite=overwrite, pivot=pivot, bt_lines=bt_lines, langs=langs)
    if bool(source) != bool(paths):
        raise XlingError("give --source and --paths together (the new language's text from another source), or "
                         "neither (read it from the base run's source)")
    from_source = [f"corpus.source={json.dumps(source)}", f"corpus.paths={json.dumps([str(p) for p in paths])}",
                   f"corpus.base={json.dumps(str(base / 'corpus'))}"] if source else []
    extra = [*from_source, f"corpus.langs=[{', '.join(json.dumps(lg) for lg in [*langs, lang])}]",
             f"tokenizer.extend={json.dumps(str(base))}", f"tokenizer.extend_pieces={pieces}",
             f"train.init_from={json.dumps(str(base))}", f"train.extend_init={json.dumps(init)}",
             f"train.old_vocab={json.loads((base / 'tokenizer' / 'meta.json').read_text())['vocab_size']}",
             f"train.old_vocab_head_lr_scale={OLD_VOCAB_HEAD_LR_SCALE}",
             f"train.max_minutes={minutes}", "train.max_steps=0", "train.max_tokens=0",
             f"train.lang_shares={{{json.dumps(lang)} = {1 - replay}}}",
             added_mix(load_config(None, [], base=saved).train.objectives, pair_weight)]
    cfg = load_config(None, [*extra, *overrides], base=saved)
    with RunDir(out).lock():
        for stage in ("corpus", "tokenizer", "shard"):
            run_stage(stage, cfg, out, overwrite=overwrite)
        # the base model's rows, or more when the extension passes them (spare rows of a larger model are reused)
        vocab = max(cfg.model.vocab_size, json.loads((out / "tokenizer" / "meta.json").read_text())["vocab_size"])
        n_langs = len(langs) + 1 if cfg.model.n_langs else 0
        cfg = load_config(None, [*extra, f"model.vocab_size={vocab}", f"model.n_langs={n_langs}", *overrides],
                          base=saved)
        return run_pretrain(cfg, out, overwrite=overwrite)


def _add_back_translated(base: Path, lang: str, out: Path, *, minutes: float, replay: float, init: str, pieces: int,
                         pair_weight: float, source: str | None, paths: list[str], overrides: list[str],
                         overwrite: bool, pivot: str | None, bt_lines: int, langs: list[str]) -> dict:
    """`add-language --back-translate`, for a language with monolingual text only, in three steps:
    1. half the budget: `lang` added as without back-translation, into the run `<out>.phase1` (kept beside `out`);
    2. that run fine-tuned for translation on its corpus's pairs with `pivot` (translate-train), then `bt_lines`
       of its `lang` train text translated into `pivot` (`<out>.phase1/back-translated.<pivot>.jsonl`);
    3. `out`: phase 1's corpus with those translations added to `pivot` under the original lines' keys (pairs,
       counted in the corpus meta as synthetic; not deduplicated: a translation may repeat a line of the corpus,
       and is still a pair; `backtranslate.keep_translations` says which are written), phase 1's
       tokenizer as it is, and the other half of the budget continuing phase 1's model with the old languages
       replayed."""
    from dataclasses import replace

    from xling.corpus import Corpus
    from xling.registry import load_config
    from xling.tasks.translate.backtranslate import back_translate as translate_back
    from xling.tasks.translate.command import finetune_run

    pivot = pivot or langs[0]
    if pivot not in langs:
        raise XlingError(f"--pivot {pivot} is not a language of {base} ({', '.join(langs)}); choose one of them")
    if bt_lines < 1:
        raise XlingError(f"--bt-lines must be at least 1, not {bt_lines}")
    phase1 = out.with_name(f"{out.name}.phase1")
    run_add_language(base, lang, phase1, minutes=minutes / 2, replay=replay, init=init, pieces=pieces,
                     pair_weight=pair_weight, source=source, paths=paths, overrides=overrides, overwrite=overwrite)
    pairs = Corpus(phase1 / "corpus").meta["pairs"]
    with_pivot = [lg for lg in langs if lg != pivot and any(
        pairs.get(name, {}).get("train") for name in (f"{lg}-{pivot}", f"{pivot}-{lg}"))]
    if not with_pivot:
        raise XlingError(f"back-translation fine-tunes translation on the run's {pivot} pairs, and {base}'s corpus "
                         f"has none; choose a --pivot with translations (--pivot)")
    saved = load_config(None, list(overrides), base=RunDir(phase1).saved_config())
    tcfg = replace(saved.translate, directions=[d for lg in with_pivot for d in (f"{lg}-{pivot}", f"{pivot}-{lg}")])
    finetune_run(phase1, tcfg)
    synthetic = phase1 / f"back-translated.{pivot}.jsonl"
    counts = translate_back(phase1, lang, pivot, synthetic, max_lines=bt_lines, cfg=tcfg)
    dropped = (f"{counts['empty']:,} empty, {counts['repeated']:,} written for several lines, {counts['length']:,} "
               f"off the usual length ratio {counts['ratio']}")
    if not counts["written"]:
        raise XlingError(f"back-translation: the fine-tuned model of {phase1} wrote no usable translation of "
                         f"{counts['translated']:,} {lang} lines ({dropped}); give it a larger budget (--minutes, "
                         f"translate.max_minutes)")
    print(f"add-language: {counts['written']:,} of {counts['translated']:,} {lang} train lines back-translated "
          f"into {pivot} -> {synthetic} (left out: {dropped})", file=sys.stderr)
    extra = ['corpus.source="jsonl"', f"corpus.paths={json.dumps([str(synthetic)])}",
             f"corpus.base={json.dumps(str(phase1 / 'corpus'))}", "corpus.synthetic=true",
             "corpus.dedup=false",  # a translation that repeats a corpus line is still a pair of its own
             'corpus.text_column="text"', 'corpus.lang_column="lang"', 'corpus.id_column="id"',
             f"tokenizer.extend={json.dumps(str(phase1))}", f"train.init_from={json.dumps(str(phase1))}",
             f"train.max_minutes={minutes / 2}", "train.max_steps=0", "train.max_tokens=0",
             f"train.lang_shares={{{json.dumps(lang)} = {1 - replay}}}"]
    cfg = load_config(None, [*extra, *overrides], base=RunDir(phase1).saved_config())
    with RunDir(out).lock():
        for stage in ("corpus", "tokenizer", "shard"):
            run_stage(stage, cfg, out, overwrite=overwrite)
        summary = run_pretrain(cfg, out, overwrite=overwrite)
    return {**summary, "back_translation": counts}
