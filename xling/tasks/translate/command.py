"""The translation commands: `xling translate-train` (fine-tune a run) and `xling translate` (decode files).

    xling translate-train --run runs/demo                             # verse pairs -> runs/demo/translate/
    xling translate-train --run runs/demo --tsv my.tsv --src en --tgt fr translate.max_minutes=5
    xling translate --run runs/demo/translate --src en --tgt fr < input.txt > output.txt
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from xling.errors import XlingError
from xling.files import atomic_write_text, check_utf8, read_lines
from xling.progress import format_table
from xling.tasks.translate.cache import finetune_key
from xling.tasks.translate.config import TranslateConfig
from xling.tasks.translate.data import tsv_examples
from xling.tasks.translate.decoding import translate
from xling.tasks.translate.finetune import finetune
from xling.tokenizer import lang_ids


def saved_settings(run_dir: str | Path) -> dict:
    """The [translate] table of a run's saved config.toml ({} where it has none): the base that `xling
    translate-train` resolves a TOML file and dotted overrides over."""
    from xling.config import read_toml

    p = Path(run_dir) / "config.toml"
    return read_toml(p, "the run's config").get("translate", {}) if p.is_file() else {}


def run_config(run_dir: str | Path) -> TranslateConfig:
    """[translate] of a run's saved config.toml, defaults where absent."""
    from xling.config import build_section

    return build_section("translate", TranslateConfig, saved_settings(run_dir))


def load_translator(path: str | Path):
    """(model, tokenizer) from a fine-tuned `<run>/translate`, a run directory (its translate/ if there is
    one, else its pretrained checkpoint) or a checkpoint directory."""
    from xling.checkpoint import load_run

    return load_run(_translator_path(path))


def _translator_path(path: str | Path) -> Path:
    path = Path(path)
    return path / "translate" if (path / "translate" / "latest").is_file() else path


def trained_prefix_lm(path: str | Path) -> bool:
    """Whether the translation fine-tune at `path` (as `load_translator` resolves it) was a prefix LM: decoding
    must read the source the way training did. False for a model that `translate-train` did not write."""
    from xling.checkpoint import find_checkpoint

    path = _translator_path(path)
    try:
        step = find_checkpoint(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
        saved = json.loads((step / "config.json").read_text(encoding="utf-8")).get("translate", {})
    except (XlingError, OSError, ValueError):
        return False  # load_translator reports a missing or corrupt checkpoint
    return bool(saved.get("prefix_lm", False))


def finetune_run(run_dir: str | Path, cfg: TranslateConfig, tsv: str | None = None, src: str | None = None,
                 tgt: str | None = None) -> dict:
    """`xling translate-train`: fine-tune a run's pretrained model with `cfg` (the CLI resolves it over
    `saved_settings`), save it in `<run>/translate/`."""
    from xling.checkpoint import load_model
    from xling.shards import Shards
    from xling.tokenizer import load_tokenizer, tokenizer_hash

    rd = Path(run_dir)
    model, mcfg, meta = load_model(rd / "checkpoints")
    sha = tokenizer_hash(rd / "tokenizer")
    if tsv:
        if not (src and tgt):
            raise XlingError("--tsv needs --src and --tgt: the languages of its two columns")
        data, skipped = tsv_examples(tsv, load_tokenizer(rd / "tokenizer"), src, tgt, min(cfg.max_len, mcfg.block_size))
        key = ""  # user data: never mistaken for the evaluation's cached fine-tune
    else:
        data, skipped = Shards(rd / "shards", expect_tokenizer_hash=sha), 0
        key = finetune_key(cfg, int(meta["step"]), sha, mcfg)
    _, summary = finetune(model, data, cfg, out_dir=rd / "translate", tokenizer_sha256=sha, cache_key=key)
    summary["skipped_too_long"] += skipped
    rows = [[k, v if not isinstance(v, list) else ",".join(v)] for k, v in summary.items()]
    print(format_table(["fine-tune", "value"], rows))
    print(f"translate-train: saved {rd / 'translate'}; try `xling translate --run {rd / 'translate'} "
          f"--src {cfg.pairs()[0][0]} --tgt {cfg.pairs()[0][1]}`")
    return summary


def translate_cli(model_path: str, src: str, tgt: str, input_path: str | None = None,
                  output_path: str | None = None, cfg: TranslateConfig | None = None) -> int:
    """`xling translate`: lines from --input (or stdin) to --output (written atomically) or stdout; `cfg` gives
    the decoding settings (defaults without one)."""
    if src == tgt:  # the model was never taught to copy: it printed other text with exit 0
        raise XlingError(f"--src and --tgt are both {src!r}; give two different languages")
    cfg = cfg or TranslateConfig()
    model, tok = load_translator(model_path)
    cfg = replace(cfg, prefix_lm=trained_prefix_lm(model_path))  # decode as the fine-tune read its sources
    lang_ids(tok, [src, tgt])  # an unknown language fails before any input is read
    lines = read_lines(input_path, "input file") if input_path else \
        check_utf8(sys.stdin.read(), "standard input").splitlines()
    out = translate(model, tok, lines, src, tgt, cfg)
    text = "".join(line + "\n" for line in out)
    if output_path:
        atomic_write_text(output_path, text)
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    return 0
