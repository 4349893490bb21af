"""Import a local Hugging Face folder (GPT2LMHeadModel / LlamaForCausalLM made with xling's tokenizer conventions).

    xling import hf/demo --run runs/imported [--corpus runs/demo/corpus]
    model, tok = import_hf("hf/demo")           # config.json + safetensors read here, never a pickle

`import_run` writes a run directory (checkpoints/, tokenizer/, and with a corpus also corpus/ and shards/) that
`xling generate` and `xling evaluate` take; an export followed by an import gives back identical weights.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from torch import Tensor

from xling import __version__
from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json, atomic_write_text, check_writable
from xling.hf.convert import (
    WEIGHTS,
    check_xling_tokenizer,
    model_config_from_hf,
    read_json,
    state_dict_from_hf,
    xling_decoder,
)
from xling.model import Transformer
from xling.tokenizer import tag_langs


def _load_weights(folder: Path) -> dict[str, Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    index = folder / f"{WEIGHTS}.index.json"
    if (folder / WEIGHTS).is_file():
        files = [folder / WEIGHTS]
    elif index.is_file():
        try:
            shards = json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()
            files = [folder / f for f in sorted(set(shards))]
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError, TypeError):
            raise XlingError(f"{index} is corrupt; re-save the model with save_pretrained") from None
        inside = folder.resolve()
        outside = [f.name for f in files if f.resolve().parent != inside]  # "../x", "/abs/x", "sub/x", a link out
        if outside:
            raise XlingError(f"{index} names weight files outside {folder} ({', '.join(outside[:3])}); a model's "
                             f"shards must sit in its own folder: re-save it with save_pretrained")
    elif any((folder / n).is_file() for n in ("pytorch_model.bin", "model.pt", "pytorch_model.bin.index.json")):
        raise XlingError(f"{folder} has only pickled weights (pytorch_model.bin); xling loads safetensors only: "
                         f"re-save with model.save_pretrained(dir) (safetensors is the default)")
    else:
        raise XlingError(f"{folder} has no weights ({WEIGHTS}); give the folder that save_pretrained wrote")
    sd: dict[str, Tensor] = {}
    for f in files:
        try:
            sd.update(load_file(str(f)))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise XlingError(f"weights file {f} is corrupt or truncated ({str(e).splitlines()[0][:100]}); "
                             f"re-export or re-download the model") from None
    return sd


def import_hf(folder: str | Path) -> tuple[Transformer, object]:
    """(Transformer in eval mode, tokenizers.Tokenizer) from a local GPT2LMHeadModel / LlamaForCausalLM folder
    that follows xling's tokenizer conventions (e.g. one `export_hf` wrote)."""
    from tokenizers import Tokenizer

    folder = Path(folder)
    if not folder.is_dir():
        raise XlingError(f"{folder} does not exist or is not a folder; give a Hugging Face model folder")
    conf_path = folder / "config.json"
    if not conf_path.is_file():
        raise XlingError(f"{folder} is not a Hugging Face model folder (no config.json); give the folder "
                         f"that save_pretrained wrote")
    try:
        conf = json.loads(conf_path.read_text(encoding="utf-8"))
        if not isinstance(conf, dict):
            raise ValueError("not an object")
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
        raise XlingError(f"{conf_path} is not valid JSON ({type(e).__name__}); re-save the model") from None
    try:
        cfg = model_config_from_hf(conf, str(folder))
    except ValueError as e:  # ModelConfig's own checks
        raise XlingError(f"{conf_path}: {e}") from None
    tok_path = folder / "tokenizer.json"
    if not tok_path.is_file():
        raise XlingError(f"{folder} has no tokenizer.json; save the (fast) tokenizer beside the model with "
                         f"tokenizer.save_pretrained(dir)")
    try:
        tok = Tokenizer.from_file(str(tok_path))
    except Exception as e:  # tokenizers raises a bare Exception with the serde message
        raise XlingError(f"{tok_path} is not a valid tokenizer.json ({str(e).splitlines()[0][:100]})") from None
    check_xling_tokenizer(tok, str(folder))
    tok = xling_decoder(tok)
    if tok.get_vocab_size() > cfg.vocab_size:
        raise XlingError(f"the tokenizer in {folder} has {tok.get_vocab_size():,} tokens but the model only "
                         f"{cfg.vocab_size:,} embeddings; the two do not belong together")
    sd = state_dict_from_hf(_load_weights(folder), cfg, str(folder))
    model = Transformer(cfg)
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    bad = [k for k in want if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or extra or bad:
        raise XlingError(f"{folder}: the weights do not fit config.json (missing {missing[:2]}, unexpected "
                         f"{extra[:2]}, wrong shape {bad[:2]}); the folder is inconsistent")
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    return model.eval(), tok


def import_run(folder: str | Path, run_dir: str | Path, *, corpus: str | Path | None = None,
               overwrite: bool = False) -> Path:
    """Write a run directory from an HF folder: checkpoints/ and tokenizer/ (enough for `xling generate`);
    with `corpus` (a corpus directory whose languages have tags in the tokenizer) also corpus/, shards/ and the
    tokenizer report, so `xling evaluate` works too. The whole directory is built under a temporary name and
    renamed into place (overwrite=True replaces an existing one). Returns the checkpoint directory."""
    from xling.checkpoint import save_checkpoint, step_dir_name
    from xling.tokenizer import lang_ids, special_ids, tokenizer_hash

    folder, run = Path(folder), Path(run_dir)
    check_writable(run, "--run", directory=True)
    if run.exists() and (not run.is_dir() or any(run.iterdir())):
        if not overwrite:
            raise XlingError(f"{run} already exists and is not empty; pass --overwrite to replace it, or choose "
                             f"another --run")
        if not (run / "manifest.json").is_file():  # --overwrite replaces the whole directory: only an xling run
            raise XlingError(f"{run} holds no xling run (no manifest.json), and --overwrite would delete all of it; "
                             f"choose another --run")
    if corpus is not None and not (Path(corpus) / "meta.json").is_file():
        raise XlingError(f"{corpus} is not an xling corpus directory (no meta.json); give e.g. runs/demo/corpus")
    model, tok = import_hf(folder)
    langs = tag_langs(tok)
    step = int(read_json(folder / "xling.json").get("step", 0))
    with atomic_dir(run, overwrite=overwrite) as tmp:
        (tmp / "tokenizer").mkdir()
        shutil.copyfile(folder / "tokenizer.json", tmp / "tokenizer" / "tokenizer.json")
        sha = tokenizer_hash(tmp / "tokenizer")
        atomic_write_json(tmp / "tokenizer" / "meta.json", {
            "imported_from": str(folder.resolve()), "langs": langs, "vocab_size": tok.get_vocab_size(),
            "special_ids": special_ids(tok), "lang_ids": lang_ids(tok, langs), "sha256": sha})
        save_checkpoint(tmp / "checkpoints", step, model_state=model.state_dict(), tokenizer_sha256=sha,
                        config={"model": dataclasses.asdict(model.cfg), "imported_from": str(folder.resolve())})
        if corpus is not None:
            _add_corpus(Path(corpus), tmp, tok)
        atomic_write_json(tmp / "manifest.json", {"xling_version": __version__, "stages": {}, "imported": {
            "from": str(folder.resolve()), "step": step, "corpus": str(corpus) if corpus else None}})
    return run / "checkpoints" / step_dir_name(step)


def _add_corpus(corpus: Path, run: Path, tok) -> None:
    from xling.corpus import Corpus
    from xling.shards import ShardConfig, build_shards
    from xling.tokenizer import format_report, tokenizer_report

    shutil.copytree(corpus, run / "corpus")
    c = Corpus(run / "corpus")
    build_shards(c, run / "tokenizer", ShardConfig(), run / "shards")  # XlingError if a language has no tag
    split = "test" if any(c.texts("test", lg) for lg in c.langs) else "train"
    report = tokenizer_report(tok, c, split)
    atomic_write_json(run / "tokenizer" / "report.json", report)
    atomic_write_text(run / "tokenizer" / "report.md", format_report(report) + "\n")
