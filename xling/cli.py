"""The `xling` command: one subcommand per pipeline stage, a dispatch table and no logic.

    xling corpus --source bible --run runs/demo       # build the corpus
    xling tokenizer --run runs/demo                   # train the shared tokenizer
    xling shard --run runs/demo                       # encode to token shards
    xling demo                                        # every stage on the embedded default
    xling config --config configs/demo.toml model.n_layer=4   # print a resolved config

Every stage takes `--run DIR`, `--config FILE.toml` and dotted overrides (`corpus.alpha=0.5`). The config
is resolved as: defaults <- the run's saved config.toml <- --config <- overrides. Heavy modules (torch,
tokenizers) are imported only by the command that needs them, so `xling --help` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

DEFAULT_RUN = "runs/demo"


def _stage_parser(sub, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help)
    p.add_argument("--run", "--out", dest="run", default=DEFAULT_RUN, help=f"run directory (default {DEFAULT_RUN})")
    p.add_argument("--config", help="TOML config file (default: the run's saved config, else built-in defaults)")
    p.add_argument("--overwrite", action="store_true", help="replace output that was built from another config")
    p.add_argument("--force", action="store_true", help="rebuild even when the output is up to date")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. corpus.alpha=0.5")
    return p


def _resolve(args, extra: list[str] = ()):
    from xling.config import load_config
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
    return out


def _quote(s: str) -> str:
    import json

    return json.dumps(s)


def cmd_stage(name: str) -> Callable:
    def run(args) -> int:
        from xling.stages import run_stage

        extra = _corpus_overrides(args) if name == "corpus" else []
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
    from xling.generate import load_for_generation, stream

    cfg = _resolve(args).generate
    model, tokenizer = load_for_generation(args.run)
    for prompt in args.prompts:
        pieces = stream(model, tokenizer, prompt, lang=args.lang, cfg=cfg)
        first = next(pieces, "")  # bad input (an unknown language) fails here, before anything is printed
        print(prompt + first, end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        print()
    return 0


def cmd_evaluate(args) -> int:
    from xling.stages import run_evaluate

    run_evaluate(args.run_dir, only=args.only.split(",") if args.only else None, max_segments=args.max_segments)
    return 0


def cmd_report(args) -> int:
    from xling.report import write_report

    out = write_report(args.run_dir)
    print(f"report: {out / 'report.html'} (open in a browser), {out / 'report.md'}, {out / 'metrics.json'}")
    return 0


def cmd_demo(args) -> int:
    """corpus -> tokenizer -> shard -> pretrain (resumes) -> evaluate -> report, skipping what is up to date."""
    import time

    from xling.config import load_config
    from xling.report import write_report
    from xling.stages import RunDir, run_evaluate, run_pretrain, run_stage

    t0 = time.perf_counter()
    config = args.config or str(Path(__file__).resolve().parent.parent / "configs" / "demo.toml")
    if not Path(config).exists():
        config = None  # installed without the repo's configs/: built-in defaults are the demo
    overrides = [f"train.max_minutes={args.minutes}"]
    if args.langs:
        overrides.append(f"corpus.langs={args.langs}")
    cfg = load_config(config, [*overrides, *args.overrides], base=RunDir(args.run).saved_config())
    for stage in ("corpus", "tokenizer", "shard"):
        run_stage(stage, cfg, args.run, overwrite=args.overwrite)
    run_pretrain(cfg, args.run, overwrite=args.overwrite)
    run_evaluate(args.run)
    out = write_report(args.run)
    print(f"demo: done in {(time.perf_counter() - t0) / 60:.1f} min; report: {out / 'report.html'}")
    return 0


def cmd_config(args) -> int:
    from xling.config import to_toml

    print(to_toml(_resolve(args)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from xling import __version__

    parser = argparse.ArgumentParser(prog="xling", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"xling {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _stage_parser(sub, "corpus", "read a source, clean, deduplicate and split it by whole chapters")
    p.add_argument("--source", help="bible | text | tsv | jsonl | parquet | hf | po (corpus.source)")
    p.add_argument("--langs", help="comma-separated language codes (corpus.langs)")
    p.add_argument("--paths", nargs="+", help="input files or folders (corpus.paths)")
    p.set_defaults(func=cmd_stage("corpus"))

    p = _stage_parser(sub, "tokenizer", "train the shared subword tokenizer with language tags; fertility/parity")
    p.set_defaults(func=cmd_stage("tokenizer"))

    p = _stage_parser(sub, "shard", "encode the corpus to memory-mapped token shards")
    p.set_defaults(func=cmd_stage("shard"))

    p = _stage_parser(sub, "pretrain", "train the Transformer on the shards with the configured objectives")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint (default: automatic "
                                                          "when the run holds checkpoints of the same config)")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("generate", help="continue prompts in a chosen language with a trained model (streamed)")
    p.add_argument("prompts", nargs="+", help="text to continue")
    p.add_argument("--lang", help="language of the continuation (its tag starts the sequence), e.g. fr")
    p.add_argument("--run", default=DEFAULT_RUN, help=f"run directory with checkpoints (default {DEFAULT_RUN})")
    p.add_argument("--config", help="TOML file with a [generate] section")
    p.add_argument("-o", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="generation setting, e.g. -o generate.temperature=0 -o generate.max_new_tokens=50")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", help="evaluate a run's latest checkpoint on the held-out test chapters")
    p.add_argument("run_dir", nargs="?", default=DEFAULT_RUN, help=f"run directory (default {DEFAULT_RUN})")
    p.add_argument("--only", help="comma-separated evaluations (default: all)")
    p.add_argument("--max-segments", type=int, default=1000, help="segments per language and split (default 1000)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("report", help="render a run's evaluation results as Markdown, HTML and PNG plots")
    p.add_argument("run_dir", nargs="?", default=DEFAULT_RUN, help=f"run directory (default {DEFAULT_RUN})")
    p.set_defaults(func=cmd_report)

    p = _stage_parser(sub, "demo", "run every stage on the embedded default corpus and config")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget in wall-clock minutes")
    p.add_argument("--langs", help="comma-separated language codes")
    p.set_defaults(func=cmd_demo)

    p = _stage_parser(sub, "config", "print the resolved config (defaults <- run <- --config <- overrides)")
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from xling.errors import XlingError

    try:
        return args.func(args) or 0
    except XlingError as e:
        print(f"xling {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"xling {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
