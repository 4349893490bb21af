"""The `xling` command: one subcommand per pipeline stage, a dispatch table and no logic.

    xling corpus --source bible --run runs/demo       # build the corpus
    xling tokenizer --run runs/demo                   # train the shared tokenizer
    xling shard --run runs/demo                       # encode to token shards
    xling demo                                        # every stage on the embedded default
    xling config --config configs/demo.toml model.n_layer=4   # print a resolved config
    xling serve --run runs/demo                       # the playground at http://127.0.0.1:8000/

One vocabulary: every command names its run with `--run DIR` and takes settings as dotted `KEY=VALUE`
arguments (`corpus.alpha=0.5`); the config is resolved as: defaults <- the run's saved config.toml <-
--config <- overrides. The spellings before it (`--model`, a positional run for evaluate/report, `-o/--set`)
are hidden aliases for one release, folded in by `_settle`. Heavy modules (torch, tokenizers) are imported
only by the command that needs them, so `xling --help` answers at once. Checks and formatting live with the
code a command calls (metrics.score_files/format_score, tasks.align.align_command, stages.run_demo).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

DEFAULT_RUN = "runs/demo"


def _check_number(value, name: str, low: float | None = None) -> None:
    """One XlingError for a command-line number that is not finite (nan made `mine` keep no pair and report
    success) or below `low` (a batch size of 0 ended in a traceback)."""
    import math

    from xling.errors import XlingError

    if value is None:
        return
    if not math.isfinite(value) or (low is not None and value < low):
        need = "a finite number" + (f" >= {low:g}" if low is not None else "")
        raise XlingError(f"{name} {value} is not {need}")


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error shape: one line naming the command and where the usage is, exit 2
    (argparse's own prints the usage block first: several lines for one mistake)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _add_run(p: argparse.ArgumentParser, help: str = f"run directory (default {DEFAULT_RUN})", *,
             default: str | None = DEFAULT_RUN, required: bool = False, old: tuple[str, ...] = (),
             positional: bool = False) -> None:
    """`--run RUN`, the one spelling of the run directory on every command. The spellings before it (`old`
    options such as --model, or a positional RUN) still work for one release: hidden from --help, a one-line
    note on stderr, settled into args.run by `_settle`."""
    p.add_argument("--run", required=required, help=help)
    aliases = []
    for flag in old:
        dest = "old_run_" + flag.lstrip("-")
        p.add_argument(flag, dest=dest, help=argparse.SUPPRESS)
        aliases.append((dest, flag))
    if positional:
        p.add_argument("old_run_positional", nargs="?", help=argparse.SUPPRESS)
        aliases.append(("old_run_positional", "the positional run directory"))
    p.set_defaults(run_default=default, run_aliases=aliases)


def _add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """Positional KEY=VALUE settings, the one override syntax; -o/--set KEY=VALUE is its hidden old spelling."""
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=help)
    p.add_argument("-o", "--set", dest="set_overrides", action="append", default=[], help=argparse.SUPPRESS)


_SETTING = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)+=")  # section.key=value


def _settle(args) -> str | None:
    """Fold the old spellings into args.run and args.overrides (a note on stderr for each); the error line when
    --run and an old spelling name different runs."""
    cmd = f"xling {args.command}"
    if hasattr(args, "prompts"):  # generate: `section.key=value` among the prompts is a setting
        args.overrides = [a for a in args.prompts if _SETTING.match(a)]
        args.prompts = [a for a in args.prompts if not _SETTING.match(a)]
        if not args.prompts:
            return "give at least one prompt (arguments of the form section.key=value are settings)"
    for dest, spelling in getattr(args, "run_aliases", ()):
        value = getattr(args, dest)
        if value is None:
            continue
        if args.run is not None and Path(args.run) != Path(value):
            return f"--run {args.run} and {spelling} {value} name different runs; give --run only"
        print(f"{cmd}: note: {spelling} is deprecated; write --run {value}", file=sys.stderr)
        args.run = value
    if getattr(args, "set_overrides", None):
        print(f"{cmd}: note: -o/--set KEY=VALUE is deprecated; write KEY=VALUE after the options",
              file=sys.stderr)
        args.overrides = [*args.set_overrides, *args.overrides]
    if hasattr(args, "run_default") and args.run is None:
        args.run = args.run_default
    return None


def _stage_parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    # --out stays beside --run here, not as an old spelling: torchrun reads `--run` as its own --run-path
    p.add_argument("--run", "--out", dest="run", default=DEFAULT_RUN,
                   help=f"run directory (default {DEFAULT_RUN}); under torchrun write --out")
    p.add_argument("--config", help="TOML config file (default: the run's saved config, else built-in defaults)")
    p.add_argument("--overwrite", action="store_true", help="replace output that was built from another config")
    p.add_argument("--force", action="store_true", help="rebuild even when the output is up to date")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. corpus.alpha=0.5")
    return p


def _resolve(args, extra: list[str] = ()):
    from xling.registry import load_config
    from xling.stages import RunDir

    base = RunDir(args.run).saved_config() if args.run else None
    return load_config(args.config, [*extra, *args.overrides], base=base)


def _corpus_overrides(args) -> list[str]:
    out = []
    if getattr(args, "source", None):
        out.append(f"corpus.source={args.source}")
    if getattr(args, "langs", None):
        out.append(f"corpus.langs={args.langs}")
    if getattr(args, "paths", None):
        out.append("corpus.paths=[" + ", ".join(_quote(p) for p in args.paths) + "]")
    if getattr(args, "workers", None) is not None:
        out.append(f"{args.command}.workers={args.workers}")
    return out


def _quote(s: str) -> str:
    import json

    return json.dumps(s)


def cmd_stage(name: str) -> Callable:
    def run(args) -> int:
        from xling.stages import run_stage

        extra = _corpus_overrides(args) if name in ("corpus", "shard") else []
        cfg = _resolve(args, extra)
        run_stage(name, cfg, args.run, overwrite=args.overwrite, force=args.force)
        return 0

    return run


def cmd_pretrain(args) -> int:
    from xling.stages import run_pretrain

    cfg = _resolve(args)
    run_pretrain(cfg, args.run, resume=True if args.resume else None, overwrite=args.overwrite)
    return 0


def cmd_generate(args) -> int:
    """Stream a continuation of each prompt to the terminal, token by token."""
    from xling.checkpoint import load_run
    from xling.files import check_utf8
    from xling.generate import stream
    from xling.langvocab import LangVocab

    for prompt in args.prompts:  # before the model loads
        check_utf8(prompt, "the prompt")
    cfg = _resolve(args).generate
    model, tokenizer = load_run(args.run)
    vocab = None
    if cfg.lang_vocab and args.lang:  # read once, for every prompt
        vocab = LangVocab.from_run(args.run, [args.lang])
        if vocab is None:
            print(f"generate: no shards/ beside {args.run}, so the continuation is not restricted to the "
                  f"language's training tokens (generate.lang_vocab)", file=sys.stderr)
    for prompt in args.prompts:
        pieces = stream(model, tokenizer, prompt, lang=args.lang, cfg=cfg, vocab=vocab)
        first = next(pieces, "")  # bad input (an unknown language) fails here, before anything is printed
        print(prompt + first, end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
    return 0


def cmd_evaluate(args) -> int:
    from xling.stages import run_evaluate

    run_evaluate(args.run, only=args.only.split(",") if args.only else None, max_segments=args.max_segments)
    return 0


def cmd_report(args) -> int:
    from xling.report import write_report

    out = write_report(args.run)
    print(f"report: {out / 'report.html'} (open in a browser), {out / 'report.md'}, {out / 'metrics.json'}")
    return 0


def cmd_demo(args) -> int:
    """corpus -> tokenizer -> shard -> pretrain (resumes) -> evaluate -> report, skipping what is up to date."""
    import time

    from xling.report import summary
    from xling.stages import run_demo

    t0 = time.perf_counter()
    _check_number(args.minutes, "--minutes", 0)
    out = run_demo(args.run, config=args.config, minutes=args.minutes, langs=args.langs, overrides=args.overrides,
                   overwrite=args.overwrite)
    print("\n" + summary(args.run) + "\n")
    print(f"demo: done in {(time.perf_counter() - t0) / 60:.1f} min; report: {out / 'report.html'}")
    print(f"demo: try the model in your browser: xling serve --run {args.run}   (then open http://127.0.0.1:8000/)")
    return 0


def cmd_add_language(args) -> int:
    """A trained run with one language more: corpus, extended tokenizer, extended model, continued pretraining."""
    from xling.stages import run_add_language

    _check_number(args.minutes, "--minutes", 0)
    summary = run_add_language(args.run, args.lang, args.out, minutes=args.minutes, replay=args.replay,
                               init=args.init, pieces=args.pieces, pair_weight=args.pair_weight,
                               source=args.source, paths=args.paths or (),
                               overrides=args.overrides, overwrite=args.overwrite,
                               back_translate=args.back_translate, pivot=args.pivot, bt_lines=args.bt_lines)
    print(f"add-language: {args.out} holds the model with {args.lang} ({summary.get('steps', '?')} steps); "
          f"evaluate it with `xling evaluate --run {args.out}`")
    return 0


def cmd_score(args) -> int:
    """Score a hypothesis file against reference files (one segment per line): BLEU, chrF or ROUGE."""
    import json

    from xling.metrics import format_score, score_files

    record, notes = score_files(args.metric, args.hyp, args.ref, lang=args.lang, tokenize=args.tokenize,
                                rouge_tokenizer=args.rouge_tokenizer, stem=args.stem)
    for note in notes:
        print(f"xling score: note: {note}", file=sys.stderr)
    print(json.dumps(record) if args.json else format_score(record))
    return 0


def cmd_translate(args) -> int:
    """Translate lines from --input (or stdin) to --output (or stdout) with a fine-tuned model."""
    from xling.files import check_writable
    from xling.registry import load_config
    from xling.tasks.translate.command import translate_cli

    if args.output:  # before the model loads and the input is translated
        check_writable(args.output, "--output")
    extra = [f"translate.num_beams={args.beams}"] if args.beams is not None else []
    cfg = load_config(None, [*extra, *args.overrides]).translate
    return translate_cli(args.run, args.src, args.tgt, args.input, args.output, cfg)


def cmd_translate_train(args) -> int:
    from xling.registry import load_config
    from xling.tasks.translate.command import finetune_run, saved_settings

    cfg = load_config(args.config, args.overrides, base={"translate": saved_settings(args.run)}).translate
    finetune_run(args.run, cfg, tsv=args.tsv, src=args.src, tgt=args.tgt)
    return 0


def cmd_embed(args) -> int:
    from xling.distributed import launch_rank
    from xling.files import check_writable
    from xling.tasks.retrieval.embed import run_embed

    _check_number(args.batch_size, "--batch-size", 1)
    check_writable(f"{args.out}.npy", "--out")
    r = run_embed(args.run, args.lang, args.input, args.out, ids_path=args.ids, layer=args.layer,
                  pool_specials=args.pool_specials, batch_size=args.batch_size)
    if launch_rank() == 0:
        print(f"embed: {r['n']:,} vectors of dimension {r['dim']} (layer {r['layer']}, specials "
              f"{'pooled' if r['pool_specials'] else 'not pooled'}, {r['processes']} process(es)) -> "
              f"{r['vectors']}, {r['ids']}", file=sys.stderr)
    return 0


def cmd_retrieve(args) -> int:
    from xling.files import check_writable
    from xling.tasks.retrieval.retrieve import run_retrieve

    if args.out:
        check_writable(args.out, "--out")
    run_retrieve(args.run, args.queries, args.docs, src=args.src, tgt=args.tgt, k=args.k, fmt=args.format,
                 out=args.out, layer=args.layer, pool_specials=args.pool_specials, backend=args.backend)
    return 0


def cmd_mine(args) -> int:
    from xling.distributed import launch_rank
    from xling.files import check_writable
    from xling.tasks.retrieval.mine import run_mine, summary

    _check_number(args.threshold, "--threshold")
    _check_number(args.recall_target, "--recall-target")
    if args.out:
        check_writable(args.out, "--out")
    found = run_mine(args.run, args.src_file, args.tgt_file, src=args.src, tgt=args.tgt, k=args.k, mode=args.mode,
                     threshold=args.threshold, out=args.out, layer=args.layer, pool_specials=args.pool_specials,
                     backend=args.backend, nprobe=args.nprobe, recall_target=args.recall_target,
                     recall_sample=args.recall_sample)
    if launch_rank() == 0:
        print("\n".join(summary(found)), file=sys.stderr)
    return 0


def _vector_options(p: argparse.ArgumentParser) -> None:
    _add_run(p, f"run directory with checkpoints (default {DEFAULT_RUN})", old=("--model",))
    p.add_argument("--layer", type=int, help="hidden state to mean-pool (0 = embeddings, -1 = last; default: the "
                                             "layer the run's retrieval evaluation chose, else the last)")
    p.add_argument("--pool-specials", action=argparse.BooleanOptionalAction, default=None,
                   help="pool the language tag and </s> with the words (default: what measured best)")


def cmd_vectors(args) -> int:
    """Word vectors per language of a run: static (gensim) from its corpus, or read out of its model."""
    from xling.tasks.align.vectors import vectors_command

    cfg = _resolve(args).vectors
    langs = [x.strip() for x in args.langs.split(",") if x.strip()] if args.langs else None
    paths, out = vectors_command(args.run, langs, cfg, from_model=args.from_model, out=args.out, force=args.force)
    print(f"vectors: {len(paths)} .vec files in {out}")
    return 0


def cmd_align(args) -> int:
    """Map one language's word vectors onto another's; P@k of lexicon induction when a dictionary is given."""
    from xling.tasks.align.command import align_command

    extra = [f"align.methods=[{', '.join(_quote(m.strip()) for m in args.method.split(','))}]"] if args.method else []
    cfg = _resolve(args, extra)
    out = align_command(args.src, args.tgt, cfg=cfg.align, vectors_cfg=cfg.vectors, src_vec=args.src_vec,
                        tgt_vec=args.tgt_vec, run=args.run, vectors=args.vectors, out=args.out,
                        dictionary=args.dict, default_run=DEFAULT_RUN)
    print(f"align: results in {out} (table.md, results.json, W-<method>.npy, p_at_1_by_band.png)")
    return 0


def cmd_config(args) -> int:
    from xling.config import to_toml

    print(to_toml(_resolve(args)), end="")
    return 0


def cmd_export(args) -> int:
    from xling.hf import export_hf

    out = export_hf(args.run, args.out, lang=args.lang, overwrite=args.overwrite)
    print(f"export: wrote {out} (load with transformers: AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    return 0


def cmd_import(args) -> int:
    from xling.hf import import_run

    step_dir = import_run(args.hf_dir, args.run, corpus=args.corpus, overwrite=args.overwrite)
    print(f"import: wrote {step_dir} and {Path(args.run) / 'tokenizer'}; try `xling generate --run {args.run} "
          f"--lang LANG TEXT`" + ("" if args.corpus else " (pass --corpus DIR to also evaluate it)"))
    return 0


def cmd_serve(args) -> int:
    """The playground: one page and a JSON API over a trained run, loaded once."""
    from xling.serve.server import serve

    _check_number(args.max_verses, "--max-verses", 1)
    return serve(args.run, host=args.host, port=args.port, max_verses=args.max_verses)


def cmd_classify(args) -> int:
    from xling.tasks.classify.transfer import classify_run

    extra = [f"classify.{k}={v}" for k, v in (("mode", args.mode), ("source", args.source)) if v]
    cfg = _resolve(args, extra).classify
    classify_run(args.run, cfg, data_files=args.data, hf=args.hf, out=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from xling import __version__

    parser = _Parser(prog="xling", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"xling {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _stage_parser(sub, "corpus", "read a source, clean, deduplicate and split it by whole chapters")
    p.add_argument("--source", help="bible | text | tsv | jsonl | parquet | hf | po (corpus.source)")
    p.add_argument("--langs", help="comma-separated language codes (corpus.langs)")
    p.add_argument("--paths", nargs="+", help="input files or folders (corpus.paths)")
    p.add_argument("--workers", type=int, help="processes reading and cleaning the source (corpus.workers; "
                                               "0 = one per core; the output is the same)")
    p.set_defaults(func=cmd_stage("corpus"))

    p = _stage_parser(sub, "tokenizer", "train the shared subword tokenizer with language tags; fertility/parity")
    p.set_defaults(func=cmd_stage("tokenizer"))

    p = _stage_parser(sub, "shard", "encode the corpus to memory-mapped token shards")
    p.add_argument("--workers", type=int, help="processes encoding files side by side (shard.workers; 0 = one per "
                                               "core; the output is the same)")
    p.set_defaults(func=cmd_stage("shard"))

    p = _stage_parser(sub, "pretrain", "train the Transformer on the shards with the configured objectives")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint (default: automatic "
                                                          "when the run holds checkpoints of the same config)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("generate", help="continue prompts in a chosen language with a trained model (streamed)")
    p.add_argument("prompts", nargs="+", metavar="PROMPT|KEY=VALUE",
                   help="text to continue, and settings such as generate.temperature=0")
    p.add_argument("--lang", help="language of the continuation (its tag starts the sequence), e.g. fr")
    _add_run(p, f"run directory with checkpoints (default {DEFAULT_RUN})")
    p.add_argument("--config", help="TOML file with a [generate] section")
    p.epilog = ("Arguments of the form section.key=value are settings, e.g. generate.temperature=0 "
                "generate.max_new_tokens=50; the others are prompts.")
    p.add_argument("-o", "--set", dest="set_overrides", action="append", default=[], help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", help="evaluate a run's latest checkpoint on the held-out test chapters")
    _add_run(p, positional=True)
    p.add_argument("--only", help="comma-separated evaluations (default: all)")
    p.add_argument("--max-segments", type=int, default=1000,
                   help="segments per language and split (default 1000)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="render a run's evaluation results as Markdown, HTML and PNG plots")
    _add_run(p, positional=True)
    p.set_defaults(func=cmd_report)

    p = _stage_parser(sub, "demo", "run every stage on the embedded default corpus and config")
    p.add_argument("--minutes", type=float, help="training budget in wall-clock minutes (default: the config's "
                   "train.max_minutes, 10 in configs/demo.toml)")
    p.add_argument("--langs", help="comma-separated language codes")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("add-language", help="add a language to a trained run: corpus, extended tokenizer (every id "
                       "kept), extended model, continued pretraining with replay")
    _add_run(p)
    p.add_argument("--lang", required=True, help="the language to add (an ISO 639 code)")
    p.add_argument("--source", help="where its text comes from, if not the run's own source: text, jsonl, tsv (pairs "
                                    "with an old language: set corpus.pair_langs), parquet, po, bible")
    p.add_argument("--paths", nargs="+", help="input files or folders of --source (after any KEY=VALUE settings)")
    p.add_argument("--back-translate", action="store_true",
                   help="for text without translations: half the budget, a translation fine-tune, the new language's "
                        "train text translated into --pivot, then the other half with those synthetic pairs")
    p.add_argument("--pivot", help="the language to back-translate into (default: the run's first language)")
    p.add_argument("--bt-lines", type=int, default=2000, help="train lines to back-translate (default 2000)")
    p.add_argument("--out", required=True, help="the new run directory")
    p.add_argument("--minutes", type=float, default=5.0, help="continued pretraining budget (default 5)")
    p.add_argument("--replay", type=float, default=0.5, help="share of rows from the old languages (default 0.5)")
    p.add_argument("--init", default="mean", choices=["mean", "random", "lsi"],
                   help="new embedding rows: mean of the old pieces each new piece splits into (default), random, "
                        "or cross-language LSI of the aligned text mapped into the trained embeddings")
    p.add_argument("--pieces", type=int, default=2000, help="new vocabulary pieces (default 2000)")
    p.add_argument("--pair-weight", type=float,
                   help="the base's pair objectives (contrastive, tlm, ...) weigh this many times their weight "
                        "against the others while the language is added (default 2; 1 = the base's mix)")
    p.add_argument("--overwrite", action="store_true", help="replace an --out built from another config")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for the new run")
    p.set_defaults(func=cmd_add_language)

    p = sub.add_parser("score", help="score a hypothesis file against references: BLEU, chrF (sacrebleu) or ROUGE")
    p.add_argument("--metric", required=True, choices=["bleu", "chrf", "rouge"], help="the metric")
    p.add_argument("--hyp", required=True, help="system output, one detokenised segment per line (UTF-8)")
    p.add_argument("--ref", required=True, nargs="+", help="reference file(s), line-aligned with --hyp")
    p.add_argument("--lang", help="target language: picks the BLEU tokenizer (zh, ja, ko, th, ...; default 13a)")
    p.add_argument("--tokenize", help="BLEU: force a sacrebleu tokenizer (13a, intl, char, zh, none, ...)")
    p.add_argument("--rouge-tokenizer", default="default", choices=["default", "unicode"],
                   help="ROUGE: rouge-score's ASCII tokenizer (default) or one that keeps every script")
    p.add_argument("--stem", action="store_true", help="ROUGE: Porter-stem words longer than 3 letters (nltk)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("translate", help="translate lines (stdin or --input) with a fine-tuned model, beam search")
    _add_run(p, "<run>/translate, a run (uses its translate/ if any) or a checkpoint directory "
                f"(default {DEFAULT_RUN})", old=("--model",))
    p.add_argument("--src", required=True, help="source language, e.g. en")
    p.add_argument("--tgt", required=True, help="target language, e.g. fr")
    p.add_argument("--input", help="UTF-8 text file, one sentence per line (default: stdin)")
    p.add_argument("--output", help="write translations here, atomically (default: stdout)")
    p.add_argument("--beams", type=int, help="beam size (default translate.num_beams = 4; 1 = greedy)")
    _add_overrides(p, "decoding settings, e.g. translate.length_penalty=1.2 translate.max_new_tokens=80")
    p.set_defaults(func=cmd_translate)

    p = _stage_parser(sub, "translate-train", "fine-tune a run's pretrained model for translation -> <run>/translate")
    p.add_argument("--tsv", help="parallel file `source<TAB>target` (default: the corpus's translation pairs)")
    p.add_argument("--src", help="language of the TSV's first column")
    p.add_argument("--tgt", help="language of the TSV's second column")
    p.set_defaults(func=cmd_translate_train)

    p = sub.add_parser("embed", help="sentence vectors of a text file -> PREFIX.npy + PREFIX.ids")
    _vector_options(p)
    p.add_argument("--lang", required=True, help="language of the text, e.g. en")
    p.add_argument("--input", required=True, help="text file, one sentence a line")
    p.add_argument("--out", required=True, help="output prefix: writes PREFIX.npy (float32, unit rows) + PREFIX.ids")
    p.add_argument("--ids", help="file with one id a line (default: line numbers from 1)")
    p.add_argument("--batch-size", type=int, default=64, help="sentences per forward pass (default 64)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("retrieve", help="top-k documents of (another language) for each query, with cosine scores")
    _vector_options(p)
    p.add_argument("--queries", required=True, help="text file (one query a line) or PREFIX.npy from xling embed")
    p.add_argument("--docs", required=True, help="text file (one document a line) or PREFIX.npy")
    p.add_argument("--src", help="language of the queries (default: detected)")
    p.add_argument("--tgt", help="language of the documents (default: detected)")
    p.add_argument("-k", type=int, default=5, help="documents per query (default 5)")
    p.add_argument("--format", choices=["tsv", "jsonl"], default="tsv", help="output format (default tsv)")
    p.add_argument("--backend", choices=["exact", "faiss", "ivf"], default="exact",
                   help="exact chunked search (default), a FAISS flat index (exact; least memory), or an "
                        "approximate FAISS IVF index for millions of documents (faiss and ivf need faiss)")
    p.add_argument("--out", help="output file (default stdout)")
    p.set_defaults(func=cmd_retrieve)

    p = sub.add_parser("mine", help="bitext mining with LASER's ratio margin: aligned pairs with scores (TSV)")
    p.add_argument("src_file", help="source sentences (text, one a line) or PREFIX.npy")
    p.add_argument("tgt_file", help="target sentences (text) or PREFIX.npy")
    _vector_options(p)
    p.add_argument("--src", help="source language (default: detected)")
    p.add_argument("--tgt", help="target language (default: detected)")
    p.add_argument("-k", type=int, default=4, help="margin neighbourhood size (default 4, as LASER)")
    p.add_argument("--mode", choices=["forward", "backward", "intersection"], default="intersection",
                   help="best target per source, best source per target, or pairs both agree on (default)")
    p.add_argument("--threshold", type=float, default=1.0, help="keep pairs with margin >= this (default 1.0)")
    p.add_argument("--backend", choices=["exact", "faiss", "ivf"], default="exact",
                   help="exact: margin over all pairs (default); faiss: LASER's rule (best of the k neighbours, "
                        "flat index); ivf: the same on approximate neighbours from an IVF index, for millions of "
                        "sentences (faiss and ivf need faiss: pip install 'xling[faiss]')")
    p.add_argument("--nprobe", type=int, help="ivf: inverted lists visited per query (default: tuned, 8, 16, 32, "
                                              "..., until --recall-target is met on 1,000 sampled rows)")
    p.add_argument("--recall-target", type=float,
                   help="ivf: recall@k against exact search that the tuned nprobe must reach (default 0.98)")
    p.add_argument("--recall-sample", type=int, default=1000,
                   help="ivf: rows per direction also searched exactly, to print the recall (default 1000; 0: skip)")
    p.add_argument("--out", help="output TSV (default stdout)")
    p.set_defaults(func=cmd_mine)

    p = sub.add_parser("vectors", help="word vectors per language (.vec): static from a run's corpus, or its model's")
    _add_run(p)
    p.add_argument("--langs", help="comma-separated languages (default: every corpus language)")
    p.add_argument("--from-model", nargs="?", const="input", choices=["input", "contextual"],
                   help="read vectors out of the run's model: input embeddings (default) or contextual states "
                        "averaged over a word's occurrences")
    p.add_argument("--out", help="output folder (default <run>/align/vectors, or <run>/align/vectors-model-MODE)")
    p.add_argument("--config", help="TOML file with a [vectors] section")
    p.add_argument("--force", action="store_true", help="retrain even when cached vectors are up to date")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings, e.g. vectors.dim=100 vectors.epochs=5")
    p.set_defaults(func=cmd_vectors)

    p = sub.add_parser("align", help="align word vectors across languages (Procrustes, adversarial, CSLS) and "
                                     "score lexicon induction")
    p.add_argument("--src-vec", help="source-language .vec file (with --tgt-vec; instead of --run)")
    p.add_argument("--tgt-vec", help="target-language .vec file")
    _add_run(p, f"align a run's languages, vectors trained on its corpus (default {DEFAULT_RUN} when no .vec "
                f"files are given)", default=None)
    p.add_argument("--vectors", help="run mode: folder of <lang>.vec to use instead (e.g. from xling vectors "
                                     "--from-model)")
    p.add_argument("--src", help="source language, e.g. en")
    p.add_argument("--tgt", help="target language(s), e.g. fr (run mode: fr,ru,de)")
    p.add_argument("--method", help="procrustes | procrustes-refine | adversarial | identical, comma-separated "
                                    "(default: align.methods, all four)")
    p.add_argument("--dict", help="bilingual dictionary: a MUSE file ('src tgt' per line; {src}/{tgt} filled in), "
                                  "freedict, cldr or freedict+cldr (default: none for files, freedict for a run)")
    p.add_argument("--out", help="output folder (default align/SRC-TGT, or <run>/align)")
    p.add_argument("--config", help="TOML file with [align] and [vectors] sections")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings, e.g. align.refine_iters=3")
    p.set_defaults(func=cmd_align)

    p = _stage_parser(sub, "config", "print the resolved config (defaults <- run <- --config <- overrides)")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("export", help="write a run's model and tokenizer as a Hugging Face transformers folder")
    _add_run(p, f"run directory, its checkpoints/ or one step directory (default {DEFAULT_RUN})")
    p.add_argument("--out", required=True, help="output folder (AutoModelForCausalLM/AutoTokenizer load it)")
    p.add_argument("--format", choices=["hf"], default="hf", help="output format (hf: transformers folder)")
    p.add_argument("--lang", help="models with language embeddings (model.n_langs > 0): the one language to "
                                  "fold in; the export then serves that language")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="make a run directory from a local Hugging Face GPT-2/Llama folder")
    p.add_argument("hf_dir", help="folder with config.json, model.safetensors and tokenizer.json")
    _add_run(p, "run directory to write (checkpoints/ and tokenizer/)", default=None, required=True)
    p.add_argument("--corpus", help="a corpus directory (e.g. runs/demo/corpus) to copy in and shard with the "
                                    "imported tokenizer, so `xling evaluate` works on the run")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory's content")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("classify", help="fine-tune a classifier on source-language labels, test on every language "
                                        "(transfer matrix, gap, baselines)")
    _add_run(p)
    p.add_argument("--data", nargs="+", help="labelled TSV/JSONL files (text, label, lang; split by name or column); "
                                             "default: the run's Bible genre task")
    p.add_argument("--mode", choices=["zero-shot", "translate-train", "multilingual"], help="classify.mode")
    p.add_argument("--source", help="source language(s), comma-separated (classify.source, default en)")
    p.add_argument("--hf", help="a local Hugging Face encoder folder (mBERT, XLM-R) to fine-tune instead of "
                                "the run's model")
    p.add_argument("--out", help="output folder (default RUN/classify)")
    p.add_argument("--config", help="TOML file with a [classify] section")
    _add_overrides(p, "settings, e.g. classify.finetune=full classify.epochs=5 (before --data, which takes every "
                      "file after it)")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("serve", help="a local playground in the browser: generate, translate, search across "
                                     "languages, the report; and a JSON API (see README)",
                       description="Load a trained run once and serve a page (Generate, Translate, Search across "
                                   "languages, Report) and its JSON API: GET /api/info, POST /api/generate, "
                                   "/api/translate, /api/search. Works offline; the README has curl examples.")
    _add_run(p, f"trained run to serve (default {DEFAULT_RUN})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine "
                                                       "only; another host is served with a warning)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 = a free one)")
    p.add_argument("--max-verses", type=int, default=2000, help=argparse.SUPPRESS)  # test verses a language searched
    p.set_defaults(func=cmd_serve)
    return parser


def _end_bars() -> None:
    """End a progress bar's line before a message: only when bars were imported (none: no tqdm import)."""
    if "xling.progress" in sys.modules:
        sys.modules["xling.progress"].end_bars()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, a usage error (one line, status 2): the status, as from a command
        return e.code if isinstance(e.code, int) else 2
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    problem = _settle(args)
    if problem:  # the shape of a usage error
        print(f"xling {args.command}: error: {problem} (see `xling {args.command} --help`)", file=sys.stderr)
        return 2
    from xling.allocator import keep_freed_memory
    from xling.errors import XlingError

    if args.command not in ("corpus", "tokenizer", "shard"):  # the data stages hold no tensors from step to step
        keep_freed_memory()  # tensors freed and allocated again in every step and batch (xling.allocator)
    try:
        return args.func(args) or 0
    except XlingError as e:
        _end_bars()
        print(f"xling {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        _end_bars()
        print(f"xling {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
