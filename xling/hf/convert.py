"""The two directions' shared maps: xling ModelConfig <-> Hugging Face config, state dicts, and the tokenizer files.

    fam = family_of(cfg)                        # "llama" | "gpt2", or one XlingError naming what to change
    hf_model = to_hf(model)                     # a transformers model with our weights (logit parity: tests/test_hf.py)
    cfg = model_config_from_hf(conf, where); sd = state_dict_from_hf(hf_sd, cfg, where)

Used by `xling.hf.export` and `xling.hf.load`; the weight maps and the language folding are described in
`xling.hf`. transformers is imported only inside the functions that need it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from xling.errors import XlingError
from xling.files import atomic_write_text
from xling.model import FAMILIES, ModelConfig, Transformer
from xling.tokenizer import tag_langs

SUPPORTED = {"GPT2LMHeadModel": "gpt2", "LlamaForCausalLM": "llama"}  # HF class -> our family
SPECIAL_NAMES = dict(pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", mask_token="<mask>")
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # GPT-2 (in, out)
WEIGHTS = "model.safetensors"


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

def check_xling_tokenizer(tok, where: str) -> None:
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


def xling_decoder(tok):
    """The tokenizer with xling's decoder back: the export dropped its final Strip (see save_hf_tokenizer)."""
    from tokenizers import Tokenizer

    spec = json.loads(tok.to_str())
    dec = spec.get("decoder") or {}
    steps = [d.get("type") for d in dec.get("decoders", [])] if dec.get("type") == "Sequence" else []
    if steps == ["Replace", "ByteFallback", "Fuse"]:  # what save_hf_tokenizer writes for our BPE
        dec["decoders"].append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
        return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    return tok


def read_json(path: Path) -> dict:
    """A JSON file's object, or {} when it is missing or unreadable (provenance that may be absent)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
