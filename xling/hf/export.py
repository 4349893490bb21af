"""Export a run's model as a Hugging Face folder that `transformers` loads with no custom code.

    xling export --run runs/demo --out hf/demo [--lang fr]
    export_hf("runs/demo", "hf/demo")

Writes config.json, model.safetensors, generation_config.json (the run's [generate] settings), the tokenizer
files, README.md (a model card with the run's metrics) and xling.json (provenance), atomically.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from xling import __version__
from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json, atomic_write_text, check_writable
from xling.hf.convert import WEIGHTS, family_of, hf_config, hf_state_dict, read_json, save_hf_tokenizer
from xling.model import ModelConfig
from xling.tokenizer import tag_langs


def _generation_config(run_cfg: dict, max_length: int):
    from transformers import GenerationConfig

    from xling.generate import GenerateConfig

    names = {f.name for f in dataclasses.fields(GenerateConfig)}
    g = GenerateConfig(**{k: v for k, v in (run_cfg.get("generate") or {}).items() if k in names})
    kw = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0, max_new_tokens=min(g.max_new_tokens, max_length),
              repetition_penalty=g.repetition_penalty)
    if g.num_beams > 1:
        kw.update(do_sample=False, num_beams=g.num_beams, length_penalty=g.length_penalty,
                  early_stopping=g.early_stopping)
    elif g.temperature == 0:
        kw.update(do_sample=False)
    else:
        kw.update(do_sample=True, temperature=g.temperature, top_k=g.top_k, top_p=g.top_p)
    return GenerationConfig(**kw)


def _run_metrics(run_dir: Path) -> dict:
    """The run's flat metrics: report/metrics.json, else those of every eval/<name>.json (before `xling report`)."""
    metrics = read_json(run_dir / "report" / "metrics.json")
    if not metrics and (run_dir / "eval").is_dir():
        results = [read_json(p) for p in (run_dir / "eval").glob("*.json")]
        for r in sorted(results, key=lambda r: r.get("order", 50)):
            metrics.update(r.get("metrics") or {})
    return metrics


def _model_card(name: str, cfg: ModelConfig, n_params: int, langs: list[str], lang: str | None,
                run_dir: Path | None, step: int, run_cfg: dict) -> str:
    """README.md: YAML metadata, how to use it, the model, the training run and its metrics."""
    fam = family_of(cfg)
    arch = "LlamaForCausalLM" if fam == "llama" else "GPT2LMHeadModel"
    served = [lang] if lang else langs
    example = f"<{served[0]}>" if served else ""
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation", "tags: [xling, multilingual]"]
    if served:
        lines.append("language: [" + ", ".join(served) + "]")
    lines += ["---", "", f"# {name}", "",
              f"A causal language model for {len(served)} language{'s' if len(served) != 1 else ''}, trained "
              f"with xling {__version__} and exported as a standard `{arch}` (no custom code).", "", "## Use", "",
              "```python", "from transformers import pipeline", "",
              f'gen = pipeline("text-generation", model="{name}")',
              f'print(gen("{example}Your text", max_new_tokens=40, do_sample=False)[0]["generated_text"])', "```", "",
              "Start every prompt with a language tag: "
              + (", ".join(f"`<{lg}>`" for lg in served) or "(none)") + ". The model continues in that "
              "language and ends a segment with `</s>`."]
    if lang:
        lines += ["", f"The xling model had learned language embeddings; this export folds in the one of "
                      f"`{lang}` and serves that language only."]
    lines += ["", "## Model", "", "| | |", "|---|---|", f"| architecture | {arch} ({fam} family) |",
              f"| parameters | {n_params:,} |", f"| layers x width x heads | {cfg.n_layer} x {cfg.d_model} x "
              f"{cfg.n_head} |", f"| context | {cfg.block_size} tokens |", f"| vocabulary | {cfg.vocab_size:,} |"]
    train = run_cfg.get("train") or {}
    corpus = run_cfg.get("corpus") or {}
    rows = [("checkpoint step", f"{step:,}")]
    if run_dir is not None:
        log = run_dir / "train" / "metrics.jsonl"
        if log.is_file():
            last = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines() if x.strip()]
            last = [r for r in last if r.get("kind", "train") == "train"]
            if last and "tokens" in last[-1]:
                rows.append(("training tokens", f"{int(last[-1]['tokens']):,}"))
    if train.get("objectives"):
        rows.append(("objectives", ", ".join(f"{k} ({v})" for k, v in train["objectives"].items())))
    if corpus.get("source"):
        rows.append(("data", f"{corpus['source']} corpus, languages {', '.join(langs)}"))
    lines += ["", "## Training", "", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    metrics = _run_metrics(run_dir) if run_dir is not None else {}
    numeric = [(k, v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)]
    if numeric:
        lines += ["", "## Metrics (held-out test chapters, from the xling report)", "", "| metric | value |",
                  "|---|---|"] + [f"| {k} | {v:.4g} |" for k, v in numeric]
    return "\n".join(lines) + "\n"


def _find_run(path: Path) -> tuple[Path, Path | None]:
    """(checkpoint path for load_model, the run directory if there is one)."""
    if (path / "checkpoints").is_dir():
        return path / "checkpoints", path
    from xling.checkpoint import find_checkpoint

    step_dir = find_checkpoint(path)
    run = step_dir.parent.parent
    return path, run if (run / "checkpoints").is_dir() else None


def export_hf(source: str | Path, out_dir: str | Path, *, lang: str | None = None, overwrite: bool = False,
              tokenizer_dir: str | Path | None = None) -> Path:
    """Write `source`'s model (a run, its checkpoints/ or one step directory) as a transformers folder.

    lang: for a model with language embeddings, the one language to fold in (refused otherwise).
    Writes config.json, model.safetensors, generation_config.json, tokenizer.json, tokenizer_config.json,
    README.md (model card) and xling.json, atomically. Returns out_dir.
    """
    from safetensors.torch import save_file

    from xling.checkpoint import find_checkpoint, load_run

    source, out_dir = Path(source), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise XlingError(f"{out_dir} already exists; pass --overwrite to replace it, or choose another --out")
    check_writable(out_dir, "--out", directory=True)  # before the model loads
    ckpt_path, run_dir = _find_run(source)
    model, tok = load_run(source, tokenizer_dir)
    cfg = model.cfg
    family_of(cfg)
    langs = tag_langs(tok)
    lang_index = None
    if cfg.n_langs > 0:
        if lang is None:
            raise XlingError(f"this model has learned language embeddings (model.n_langs={cfg.n_langs}), which "
                             f"no standard Hugging Face model has; pass --lang LANG to export the model for one "
                             f"language (exact), or train with model.n_langs=0")
        if lang not in langs or langs.index(lang) >= cfg.n_langs:
            raise XlingError(f"--lang {lang} is not one of the model's languages ({', '.join(langs[:cfg.n_langs])})")
        lang_index = langs.index(lang)
    elif lang is not None and lang not in langs:
        raise XlingError(f"--lang {lang} is not one of the tokenizer's languages ({', '.join(langs)})")
    step_dir = find_checkpoint(ckpt_path)
    meta = read_json(step_dir / "meta.json")
    run_cfg = read_json(step_dir / "config.json").get("run") or {}
    step = int(meta.get("step", 0))
    if lang_index is None:
        lang = None  # a model without language embeddings serves every language: nothing to fold
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        hf_config(cfg).save_pretrained(str(tmp))
        save_file(hf_state_dict(model, lang_index), str(tmp / WEIGHTS), metadata={"format": "pt"})
        _generation_config(run_cfg, cfg.block_size).save_pretrained(str(tmp))
        save_hf_tokenizer(tok, tmp, cfg.block_size)
        atomic_write_text(tmp / "README.md", _model_card(out_dir.name, cfg, model.num_params(), langs, lang,
                                                         run_dir, step, run_cfg))
        atomic_write_json(tmp / "xling.json", {
            "xling_version": __version__, "source": str(step_dir), "step": step, "langs": langs,
            "folded_lang": lang, "model": dataclasses.asdict(cfg),
            "tokenizer_sha256": meta.get("tokenizer_sha256", "")})
    return out_dir
