"""Sentence retrieval with a run's sentence vectors: embedding and search (`retrieve`: `xling embed`, `xling
retrieve`), bitext mining (`mine`: `xling mine`), the multilingual peer encoder beside our numbers (`peer`) and the
out-of-domain test set (`ood`). The demo report's evaluations of this package are listed in `evaluation`.
"""
