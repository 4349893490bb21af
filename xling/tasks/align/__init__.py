"""Cross-lingual word-embedding alignment (MUSE, vecmap): map source vectors into the target space.

    W = procrustes(X[train[:, 0]], Y[train[:, 1]])          # supervised, from a seed dictionary (.mapping)
    W, log = adversarial(X, Y, cfg)        # unsupervised (MUSE; .adversarial), then refine(...) (.mapping)
    space = Space(X @ W.T, Y)                                 # mapped source, target; unit vectors
    scores, idx = space.s2t(query_ids, k=10, method="csls")  # translations, chunked: bounded memory
    result = run_align(src_vecs, tgt_vecs, "runs/demo/align/en-fr", pairs=..., cfg=AlignConfig())  # .run

CLI (`.command`): `xling align --src en.vec --tgt fr.vec --dict freedict` (`align_files`) or, inside a run,
`align_from_corpus` (static vectors trained on the corpus, FreeDict/CLDR dictionaries), which also
gives the demo's metrics `align.p_at_1.<src>-<tgt>.{supervised,unsupervised}`.

Methods (AlignConfig.methods):
  procrustes          W = U V^T from the SVD of Y_d^T X_d over the training dictionary
  procrustes-refine   the same, then refinement (below)
  adversarial         MUSE's GAN: a discriminator tells mapped source from target vectors, the
                      mapping learns to fool it and is kept orthogonal; then refinement. `adv_restarts`
                      runs (seeds seed, seed + 1, ...); the best refined criterion wins
  identical           seed dictionary = strings present in both vocabularies; then refinement
Refinement: `refine_iters` times, build a dictionary of mutual CSLS nearest neighbours among the
`refine_max_rank` most frequent words and solve Procrustes on it. Every candidate mapping is scored
without any dictionary by MUSE's criterion (mean cosine of the 10k most confident CSLS pairs) and
the best one is kept. Both compute CSLS among the `csls_vocab` most frequent words of each side
(vecmap's cutoff): 50k x 300 words, Procrustes + 5 refinements take ~55 s on 2 cores.
P@k is measured on a test dictionary split off by source frequency rank (bands fitted to the source
vocabulary unless given: `rank_bands`), beside the trivial copy-the-word baseline (`copy_baseline`).

Retrieval (NN, CSLS: `.csls`) is chunked: 100k x 100k words fit in a few hundred MB. Word vectors
(`.vectors`) and dictionaries (`.dictionaries`) are the inputs; the settings are `.config.AlignConfig`.
The demo report's evaluation is `.evaluation`.
"""

