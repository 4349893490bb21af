"""Zero-shot cross-lingual classification: fine-tune on source-language labels, test on every language.

    xling classify --run runs/demo                          # Bible genre task, zero-shot from English
    xling classify --run runs/demo --mode translate-train   # + the human translations of the training verses
    xling classify --run runs/demo --data train.tsv valid.tsv test.tsv --source en
    res = run_transfer(XlingEncoder(model, tok, langs), bible_genre_task(corpus), ClassifyConfig())

Any encoder works (`XlingEncoder` here, `xling.hf.HFEncoder` for local mBERT/XLM-R folders): an
`nn.Module` with `d_model`, `encode_texts(texts, lang) -> token ids with its specials` and
`forward(idx (B,T), pad_mask (B,T), lang) -> (B,T,D)`. The classifier pools the hidden states (mean over
real tokens by default, or the first token), applies dropout and a linear head. `finetune = "head"` trains
the head on frozen pooled features (computed once, so 3 seeds cost little); `"full"` trains the encoder too.

Modes (rows of the transfer matrix; columns are the test languages, cells accuracy and macro-F1):
- zero-shot: train on each source language alone;
- translate-train: the source's training rows plus their translations (rows of other languages with the
  same key; the Bible gives human translations);
- multilingual: every language's own training rows.
Early stopping watches the SOURCE language's valid split only: choosing on a target language would use
target labels, and the result would no longer be zero-shot. Every number is a mean over `seeds` (spread =
standard deviation, ddof=1); a run that predicts one class for a whole test set is reported with a warning.

Built-in task, `bible_genre_task`: each verse of a Bible corpus (keys "book.chapter.verse", books 1-66 in
the Protestant order Genesis..Revelation of `xling.sources.bible`) labelled with its book's genre, GENRE_OF
in `.data`. Revelation (the only apocalypse, 404 verses) is merged into Prophets so no class is tiny; the smallest
class left is Letters (~2,770 verses, 9%). Splits are the corpus's own, which hold whole chapters, so no test
verse has a translation in training. Valid and test are capped by a key hash shared by all languages (every
language tests on the same verses); training rows by a hash salted with the language.

Baselines: the majority class, and names-only: multinomial naive Bayes over capitalised words that do not
open a sentence (proper names), trained on the source language. Names carry across Latin-script languages
without any understanding and fail across scripts: a model should beat it everywhere.

User files: TSV `text<TAB>label<TAB>lang[<TAB>split]` or JSONL objects with text, label, lang (and optional
split, key or id: equal keys mark translations). Without a split field the file name says it
(train*/valid*/dev*/test*).

Modules: `config` (ClassifyConfig), `data` (tasks and files), `model` (encoder, classifier, fit), `transfer` (the
matrix, baselines, `xling classify`), `evaluation` (the demo report's "transfer").
"""
