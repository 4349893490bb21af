"""Downstream tasks on top of corpora and trained models, one package per capability:

    translate/   fine-tune the Transformer for translation, beam-search decoding, the RNN baseline
    retrieval/   sentence embedding and search, bitext mining, the peer encoder, the out-of-domain set
    classify/    zero-shot cross-lingual classification
    align/       word vectors, dictionaries, Procrustes, adversarial mapping, CSLS

Each package's `evaluation` module is its one evaluation entry; `xling.registry` lists them (and the packages'
config sections) by import. Nothing below `cli.py`, `stages.py` and `xling.registry` imports this package.
"""
