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

Modules: `convert` (configs, weight maps and tokenizer files, both directions), `export` (a run -> an HF
folder), `load` (an HF folder -> a model or a run), `encoder` (`HFEncoder`). This package is the only place
that imports `transformers`, and only inside the functions that need it.
"""

from xling.hf.convert import family_of, hf_config, hf_state_dict, model_config_from_hf, state_dict_from_hf, to_hf
from xling.hf.encoder import HFEncoder, check_encoder_folder
from xling.hf.export import export_hf
from xling.hf.load import import_hf, import_run

__all__ = ["HFEncoder", "check_encoder_folder", "export_hf", "family_of", "hf_config", "hf_state_dict", "import_hf",
           "import_run", "model_config_from_hf", "state_dict_from_hf", "to_hf"]
