"""Hugging Face `transformers` interop: export a run's model, import a local checkpoint, wrap an encoder.

    xling export --run runs/demo --out hf/demo            # a folder transformers loads with no custom code
    xling import hf/demo --run runs/imported [--corpus runs/demo/corpus]
    export_hf("runs/demo", "hf/demo");  model, tok = import_hf("hf/demo")
    enc = HFEncoder("models/bert-base-multilingual-cased")   # a local mBERT/XLM-R folder, for classify

Then, with nothing but transformers (no hub access needed, everything is local):

    from transformers import pipeline
    gen = pipeline("text-generation", model="hf/demo")
    gen("<fr>Au commencement", max_new_tokens=30, do_sample=False)[0]["generated_text"]

Architectures. The two families of `xling.model.FAMILIES` are exactly two standard models (tests prove it
by logits parity): "llama" (the default: rope, RMSNorm, SwiGLU, no biases, tied embeddings) is
`LlamaForCausalLM` with tie_word_embeddings=True and num_key_value_heads = n_head; "gpt2" (learned
positions, LayerNorm, tanh-GELU, biases) is `GPT2LMHeadModel`. Weight maps: our fused c_attn is Llama's
q/k/v_proj and our fused c_fc its gate_proj/up_proj (gate first); GPT-2's Conv1D weights are (in, out),
ours (out, in), so they are transposed. Both families use the same rope layout (rotate-half), so no
permutation is needed. Any other mix of pos/norm/mlp/bias is refused with the options to change.

Language embeddings (model.n_langs > 0) exist in neither model. In generation every position of a
sequence gets the same language vector e = lang_emb[L], so for ONE language the maths folds exactly:
- gpt2: e is added to every row of the position table (wpe' = wpe + e): logits are unchanged;
- llama: e is added to every token embedding (wte' = wte + e); when the output layer is tied, each logit
  gains the same per-position constant h . e, which changes neither the softmax, nor the probabilities,
  nor any decoding choice (untied, the output layer does not change at all).
So `export_hf(..., lang="fr")` exports the model that serves French (prompts start with `<fr>`), and an
export without `lang` of such a model is refused with one line saying so. Without language embeddings
(the default config) one export serves every language: the language tag as first token carries it.

Tokenizer: the run's tokenizer.json (the same encoding; the decoder keeps a leading space, see
`save_hf_tokenizer`), plus tokenizer_config.json (bos <s>, eos </s>,
pad <pad>, unk <unk>, mask <mask>, the language tags as extra special tokens), so AutoTokenizer encodes
exactly as xling (no BOS/EOS added; a prompt "<fr>text" encodes as [<fr>] + encode("text")).
generation_config.json carries the run's [generate] settings (temperature 0 = greedy); stop strings have
no tokenizer-free HF equivalent and are left out. `xling.json` records where the export came from.

Import (`import_hf`) reads config.json and the safetensors weights itself (never a pickle) for
GPT2LMHeadModel and LlamaForCausalLM folders that follow xling's conventions (a tokenizer.json with
<pad>=0 <s>=1 </s>=2 <unk>=3 <mask>=4 and language tags from id 5), and rebuilds the Transformer; an
export followed by an import gives back identical weights. `import_run` writes a run directory
(checkpoints/, tokenizer/, and with a corpus also corpus/ and shards/) for `xling generate`/`evaluate`.

`HFEncoder` wraps any local encoder folder (BERT/mBERT, XLM-R, ...) in the encoder interface the
classification recipe fine-tunes: `d_model`, `encode_texts`, `forward(idx, pad_mask, lang)`.

This is the only module that imports `transformers`, and only inside the functions that need it.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import torch
from torch import Tensor, nn

from xling import __version__
from xling.errors import XlingError
from xling.files import atomic_dir, atomic_write_json, atomic_write_text, check_writable
from xling.model import FAMILIES, ModelConfig, Transformer
from xling.tokenizer import tag_langs

SUPPORTED = {"GPT2LMHeadModel": "gpt2", "LlamaForCausalLM": "llama"}  # HF class -> our family
SPECIAL_NAMES = dict(pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>")
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # GPT-2 (in, out)
WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------------------- architecture and weights

def family_of(cfg: ModelConfig) -> str:
    """The export family ("llama" or "gpt2") whose maths the config has; XlingError for any other mix."""
    for name, fam in FAMILIES.items():
        if all(getattr(cfg, k) == v for k, v in fam.items()):
            return name
    have = ", ".join(f"{k}={getattr(cfg, k)}" for k in FAMILIES["llama"])
    options = "; ".join(f"{n}: " + ", ".join(f"model.{k}={v}" for k, v in f.items()) for n, f in FAMILIES.items())
    raise XlingError(f"a model with {have} has no standard Hugging Face architecture; train with one of the "
                     f"export families ({options})")


def hf_config(cfg: ModelConfig):
    """The transformers config (GPT2Config or LlamaConfig) of a model with `cfg`'s shape (n_langs ignored)."""
    special = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if family_of(cfg) == "gpt2":
        from transformers import GPT2Config

        return GPT2Config(
            vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.d_model, n_layer=cfg.n_layer,
            n_head=cfg.n_head, n_inner=cfg.ff_dim, activation_function="gelu_new",
            layer_norm_epsilon=cfg.norm_eps, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout, tie_word_embeddings=cfg.tie_embeddings, architectures=["GPT2LMHeadModel"],
            **special)
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.ff_dim,
        num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head, num_key_value_heads=cfg.n_head,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.block_size, rms_norm_eps=cfg.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta}, hidden_act="silu",
        attention_bias=False, mlp_bias=False, attention_dropout=cfg.dropout, tie_word_embeddings=cfg.tie_embeddings,
        architectures=["LlamaForCausalLM"], **special)


def hf_state_dict(model: Transformer, lang_index: int | None = None) -> dict[str, Tensor]:
    """Our weights under the HF model's names (a tied output layer not repeated), contiguous CPU copies.

    lang_index: fold that language's embedding in (see the module docstring); required when n_langs > 0.
    """
    cfg = model.cfg
    fold = None
    if cfg.n_langs > 0:
        if lang_index is None or not 0 <= lang_index < cfg.n_langs:
            raise ValueError(f"a model with language embeddings needs lang_index in 0..{cfg.n_langs - 1}")
        fold = model.lang_emb.weight[lang_index].detach()  # (D,)
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items() if k != "lang_emb.weight"}
    head = sd.pop("lm_out.weight", None)  # (V, D) an untied output layer: HF's lm_head
    out: dict[str, Tensor] = {} if head is None else {"lm_head.weight": head}
    if family_of(cfg) == "gpt2":
        for k, v in sd.items():
            out["transformer." + re.sub(r"^blocks\.", "h.", k)] = v.T if k.endswith(CONV1D) else v
        if fold is not None:
            out["transformer.wpe.weight"] = out["transformer.wpe.weight"] + fold  # (block, D): exact
    else:
        D = cfg.d_model
        out.update({"model.embed_tokens.weight": sd["wte.weight"], "model.norm.weight": sd["ln_f.weight"]})
        for i in range(cfg.n_layer):
            b, p = f"blocks.{i}.", f"model.layers.{i}."
            q, k, v = sd[b + "attn.c_attn.weight"].split(D, 0)  # (D, D) each
            gate, up = sd[b + "mlp.c_fc.weight"].chunk(2, 0)  # (F, D) each, gate first
            out.update({p + "input_layernorm.weight": sd[b + "ln_1.weight"],
                        p + "post_attention_layernorm.weight": sd[b + "ln_2.weight"],
                        p + "self_attn.q_proj.weight": q, p + "self_attn.k_proj.weight": k,
                        p + "self_attn.v_proj.weight": v, p + "self_attn.o_proj.weight": sd[b + "attn.c_proj.weight"],
                        p + "mlp.gate_proj.weight": gate, p + "mlp.up_proj.weight": up,
                        p + "mlp.down_proj.weight": sd[b + "mlp.c_proj.weight"]})
        if fold is not None:  # softmax-exact (a per-position constant on every logit), see the docstring
            out["model.embed_tokens.weight"] = out["model.embed_tokens.weight"] + fold  # (V, D)
    return {k: v.contiguous().clone() for k, v in out.items()}


def to_hf(model: Transformer, lang_index: int | None = None):
    """The same weights as an in-memory GPT2LMHeadModel / LlamaForCausalLM in eval mode (e.g. for benches)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_config(hf_config(model.cfg))
    missing, unexpected = hf.load_state_dict(hf_state_dict(model, lang_index), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight" or not model.cfg.tie_embeddings]:
        raise RuntimeError(f"weight map is out of date: missing {missing}, unexpected {unexpected}")
    if model.cfg.tie_embeddings:
        hf.tie_weights()
    return hf.eval()


def _get(conf: dict, key: str, default=None):
    v = conf.get(key, default)
    return default if v is None else v


def model_config_from_hf(conf: dict, where: str) -> ModelConfig:
    """Our ModelConfig for an HF config.json (a dict); XlingError for what our Transformer cannot express."""
    arch = (conf.get("architectures") or [None])[0]
    family = SUPPORTED.get(arch) or {"gpt2": "gpt2", "llama": "llama"}.get(conf.get("model_type"))
    if arch not in SUPPORTED:
        if arch is not None or family is None:
            raise XlingError(f"{where} holds a {arch or conf.get('model_type') or 'model of unknown type'}; xling "
                             f"imports {', '.join(SUPPORTED)} (for BERT/XLM-R encoders use xling.hf.HFEncoder, "
                             f"`xling classify --hf DIR`)")

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise XlingError(f"{where}: {what}, which xling's Transformer does not have; it imports only the "
                             f"standard {arch or family} layout")

    try:
        if family == "gpt2":
            d, n_inner = int(conf["n_embd"]), conf.get("n_inner")
            need(_get(conf, "activation_function", "gelu_new") in ("gelu_new", "gelu_pytorch_tanh"),
                 f"activation_function={conf.get('activation_function')!r}")
            need(_get(conf, "scale_attn_weights", True) and not conf.get("scale_attn_by_inverse_layer_idx"),
                 "non-standard attention scaling")
            return ModelConfig(
                tie_embeddings=bool(_get(conf, "tie_word_embeddings", True)),
                vocab_size=int(conf["vocab_size"]), block_size=int(conf["n_positions"]), n_layer=int(conf["n_layer"]),
                d_model=d, n_head=int(conf["n_head"]), d_ff=0 if n_inner in (None, 4 * d) else int(n_inner),
                norm_eps=float(_get(conf, "layer_norm_epsilon", 1e-5)),
                dropout=float(_get(conf, "resid_pdrop", 0.0)), **FAMILIES["gpt2"])
        d, heads = int(conf["hidden_size"]), int(conf["num_attention_heads"])
        need(_get(conf, "num_key_value_heads", heads) == heads, "grouped-query attention (num_key_value_heads "
             f"{conf.get('num_key_value_heads')} < num_attention_heads {heads})")
        need(_get(conf, "hidden_act", "silu") == "silu", f"hidden_act={conf.get('hidden_act')!r}")
        need(not conf.get("attention_bias") and not conf.get("mlp_bias"), "biases")
        need(_get(conf, "head_dim", d // heads) * heads == d, "head_dim * heads != hidden_size")
        rope = conf.get("rope_parameters") or conf.get("rope_scaling") or {}
        need(rope.get("rope_type", rope.get("type", "default")) == "default", f"rope scaling {rope}")
        theta = float(rope.get("rope_theta") or conf.get("rope_theta") or 10000.0)
        inter = int(conf["intermediate_size"])
        auto = ModelConfig(d_model=d, n_head=heads).ff_dim  # d_ff = 0 means this size
        return ModelConfig(
            tie_embeddings=bool(_get(conf, "tie_word_embeddings", True)),
            vocab_size=int(conf["vocab_size"]), block_size=int(conf["max_position_embeddings"]),
            n_layer=int(conf["num_hidden_layers"]), d_model=d, n_head=heads, d_ff=0 if inter == auto else inter,
            norm_eps=float(_get(conf, "rms_norm_eps", 1e-6)), rope_theta=theta,
            dropout=float(_get(conf, "attention_dropout", 0.0)), **FAMILIES["llama"])
    except (KeyError, TypeError, ValueError) as e:
        raise XlingError(f"{where}: config.json is incomplete or invalid ({type(e).__name__}: {e})") from None


def state_dict_from_hf(sd: dict[str, Tensor], cfg: ModelConfig, where: str) -> dict[str, Tensor]:
    """HF weights (names as saved) -> our Transformer's state dict; XlingError for missing or untied ones."""
    try:
        if family_of(cfg) == "gpt2":
            out = {}
            for k, v in sd.items():
                k = k.removeprefix("transformer.")
                if k == "lm_head.weight" or k.endswith((".attn.bias", ".attn.masked_bias")):
                    continue  # the tied output layer; causal-mask buffers of old checkpoints
                k = re.sub(r"^h\.", "blocks.", k)
                out[k] = v.T.contiguous() if k.endswith(CONV1D) else v
            emb = out["wte.weight"]
        else:
            out = {"wte.weight": sd["model.embed_tokens.weight"], "ln_f.weight": sd["model.norm.weight"]}
            for i in range(cfg.n_layer):
                p, b = f"model.layers.{i}.", f"blocks.{i}."
                out.update({
                    b + "ln_1.weight": sd[p + "input_layernorm.weight"],
                    b + "ln_2.weight": sd[p + "post_attention_layernorm.weight"],
                    b + "attn.c_attn.weight": torch.cat([sd[p + f"self_attn.{n}_proj.weight"] for n in "qkv"], 0),
                    b + "attn.c_proj.weight": sd[p + "self_attn.o_proj.weight"],
                    b + "mlp.c_fc.weight": torch.cat([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]]),
                    b + "mlp.c_proj.weight": sd[p + "mlp.down_proj.weight"]})
            emb = out["wte.weight"]
    except KeyError as e:
        raise XlingError(f"{where}: the weights lack {e.args[0]}; the file is incomplete or from another "
                         f"architecture") from None
    head = sd.get("lm_head.weight")
    if not cfg.tie_embeddings:
        if head is None:
            raise XlingError(f"{where}: config.json says tie_word_embeddings=false but the weights lack "
                             f"lm_head.weight; the file is incomplete")
        out["lm_out.weight"] = head
    elif head is not None and not torch.equal(head, emb):
        raise XlingError(f"{where}: the output layer (lm_head) differs from the token embedding although config.json "
                         f"ties them (tie_word_embeddings=true); set it to false or re-export the model")
    return out


# ---------------------------------------------------------------------------- tokenizer

def _check_xling_tokenizer(tok, where: str) -> None:
    for i, name in enumerate(SPECIAL_NAMES.values()):
        if tok.token_to_id(name) != i:
            raise XlingError(f"the tokenizer in {where} does not follow xling's conventions ({name} is not id "
                             f"{i}); xling import takes models made with xling's tokenizer (for other encoders "
                             f"use xling.hf.HFEncoder)")


def save_hf_tokenizer(tok, out_dir: Path, max_length: int) -> None:
    """tokenizer.json (ours, decoder without the leading-space strip) + tokenizer_config.json for AutoTokenizer.

    transformers' text-generation pipeline decodes only the new tokens and appends them to the prompt; with
    our decoder's final Strip the continuation would lose its first space ("beginning" + "was"). Without
    it, the pipeline's text equals xling.generate's, and a full decode starts with one space (cosmetic).
    """
    from transformers import PreTrainedTokenizerFast

    tags = [f"<{lg}>" for lg in tag_langs(tok)]
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_length,
                                 additional_special_tokens=tags, **SPECIAL_NAMES)
    hf.save_pretrained(str(out_dir))
    # transformers adds an empty post-processor on save; ours has none (identical encodings either way)
    spec = json.loads(tok.to_str())
    dec = spec.get("decoder") or {}
    if dec.get("type") == "Sequence":
        dec["decoders"] = [d for d in dec["decoders"] if d.get("type") != "Strip"]
    atomic_write_text(out_dir / "tokenizer.json", json.dumps(spec, ensure_ascii=False))


def _xling_decoder(tok):
    """The tokenizer with xling's decoder back: the export dropped its final Strip (see save_hf_tokenizer)."""
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    dec = spec.get("decoder") or {}
    steps = [d.get("type") for d in dec.get("decoders", [])] if dec.get("type") == "Sequence" else []
    if steps == ["Replace", "ByteFallback", "Fuse"]:  # what save_hf_tokenizer writes for our BPE
        dec["decoders"].append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
        return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    return tok


# ---------------------------------------------------------------------------- export

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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _run_metrics(run_dir: Path) -> dict:
    """The run's flat metrics: report/metrics.json, else those of every eval/<name>.json (before `xling report`)."""
    metrics = _read_json(run_dir / "report" / "metrics.json")
    if not metrics and (run_dir / "eval").is_dir():
        results = [_read_json(p) for p in (run_dir / "eval").glob("*.json")]
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

    from xling.checkpoint import find_checkpoint
    from xling.generate import load_for_generation

    source, out_dir = Path(source), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise XlingError(f"{out_dir} already exists; pass --overwrite to replace it, or choose another --out")
    check_writable(out_dir, "--out", directory=True)  # before the model loads
    ckpt_path, run_dir = _find_run(source)
    model, tok = load_for_generation(source, tokenizer_dir)
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
    meta = _read_json(step_dir / "meta.json")
    run_cfg = _read_json(step_dir / "config.json").get("run") or {}
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


# ---------------------------------------------------------------------------- import

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
    _check_xling_tokenizer(tok, str(folder))
    tok = _xling_decoder(tok)
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
    step = int(_read_json(folder / "xling.json").get("step", 0))
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


# ---------------------------------------------------------------------------- encoders for transfer

def check_encoder_folder(folder: str | Path) -> Path:
    """`folder` if it looks like a local Hugging Face encoder xling may load, else one XlingError; cheap (no
    transformers import), so `xling classify --hf` calls it before reading any data. Safetensors weights only:
    a folder with only pytorch_model.bin (a pickle) is refused without ever opening it."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise XlingError(f"{folder} is not a Hugging Face model folder (no config.json); give a local copy "
                         f"of e.g. bert-base-multilingual-cased (save_pretrained output)")
    if not any(folder.glob("*.safetensors")):  # never unpickle a user's file (pytorch_model.bin is a pickle)
        bins = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise XlingError(f"{folder} has no safetensors weights{' (only ' + ', '.join(bins) + ')' if bins else ''}; "
                         f"xling loads only safetensors: convert it once with transformers' "
                         f"model.save_pretrained(dir, safe_serialization=True) where you trust the file")
    return folder


class HFEncoder(nn.Module):
    """A local Hugging Face encoder (BERT/mBERT, XLM-R, ...) in xling's encoder interface.

        enc = HFEncoder("models/xlm-roberta-base")            # AutoModel + AutoTokenizer, local files only
        ids = enc.encode_texts(["Hello"], "en")               # [[<s>, ..., </s>]]: the model's own specials
        h = enc(idx, pad_mask, "en")                          # (B, T, D) last hidden state

    `lang` is accepted for the interface and ignored: these models take no language input. Padding uses
    the tokenizer's pad id (`pad_id`); pass `pad_mask` (True = real token) so padding is never attended to.
    """

    def __init__(self, folder: str | Path, max_length: int | None = None):
        super().__init__()
        folder = check_encoder_folder(folder)
        import transformers
        from transformers import AutoModel, AutoTokenizer

        transformers.logging.set_verbosity_error()  # "some weights were not used" (e.g. an MLM head) is expected
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise XlingError(f"cannot load the tokenizer in {folder} ({str(e).splitlines()[0][:120]}); save it "
                             f"beside the model with tokenizer.save_pretrained(dir)") from None
        try:
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise XlingError(f"cannot load the model in {folder} ({str(e).splitlines()[0][:120]})") from None
        conf = self.model.config
        self.d_model: int = int(conf.hidden_size)
        self.pad_id: int = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        limit = getattr(conf, "max_position_embeddings", 512)
        if conf.model_type in ("roberta", "xlm-roberta", "camembert"):
            limit -= conf.pad_token_id + 1  # positions start after the padding index
        if self.tokenizer.model_max_length and self.tokenizer.model_max_length < 1_000_000:
            limit = min(limit, self.tokenizer.model_max_length)
        self.max_length = min(limit, max_length) if max_length else limit

    def encode_texts(self, texts: list[str], lang: str) -> list[list[int]]:
        """Token ids of each text with the model's specials ([CLS] ... [SEP] / <s> ... </s>), truncated."""
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=self.max_length)
        return [list(x) for x in enc["input_ids"]]

    def forward(self, idx: Tensor, pad_mask: Tensor | None = None, lang: str | None = None) -> Tensor:
        """(B, T) ids, (B, T) bool True = real -> (B, T, D) last hidden states."""
        mask = torch.ones_like(idx) if pad_mask is None else pad_mask.long()  # (B, T)
        return self.model(input_ids=idx, attention_mask=mask).last_hidden_state  # (B, T, D)

