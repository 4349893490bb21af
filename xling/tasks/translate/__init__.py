"""Machine translation with the pretrained Transformer: fine-tuning, beam-search decoding, evaluation, and the
RNN baseline beside it.

    xling translate-train --run runs/demo                             # verse pairs -> runs/demo/translate/
    xling translate-train --run runs/demo --tsv my.tsv --src en --tgt fr translate.max_minutes=5
    xling translate --run runs/demo/translate --src en --tgt fr < input.txt > output.txt

    from xling.tasks.translate.finetune import finetune
    from xling.tasks.translate.decoding import translate
    model, summary = finetune(model, shards, TranslateConfig(max_minutes=1), out_dir="runs/demo/translate")
    texts = translate(model, tokenizer, ["In the beginning was the word."], "en", "fr", cfg)

Modules: `config` (TranslateConfig), `data` (examples, batches), `loss`, `finetune` (the training loop),
`decoding` (beam search over a KV cache), `cache` (a fine-tune reused by key), `command` (the CLI commands),
`evaluation` (the demo report's "translation"), `rnn` (the GRU encoder-decoder baseline).

Format: the pretrained model is a causal decoder, so translation is a prompt continuation, one model for
every direction (many-to-many):

    <src> source tokens </s> <tgt> target tokens </s>

The loss covers only the target tokens and the final `</s>` (the prompt is context). With language
embeddings (`model.cfg.n_langs > 0`) the source language's index lies over `<src> source </s>` and the
target's over `<tgt> target </s>`, as XLM's TLM gives each segment its language. Why a prompt rather than
an encoder-decoder built from the bidirectional and causal modes: it reuses every pretrained weight in the
mode it was trained in (the demo pretrains with CLM), needs no new cross-attention weights (which a one-minute
fine-tune could not train), and decodes with the KV cache and beam search of `xling.generate`.

Training pairs come from the corpus (`Shards.pairs`, both directions of every configured pair) or from a
user's TSV file (`source<TAB>target`, both directions). Pairs longer than `max_len` tokens are skipped.
Decoding: sources sorted by length into batches, beam search over the batch's K copies of each prompt in
one KV cache; a source too long for the context is cut from the left (its beginning is dropped) with a
warning so the prompt leaves room for the output; an empty line gives an empty line.
"""

