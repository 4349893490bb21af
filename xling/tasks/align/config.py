"""The settings of word-embedding alignment (`[align]` in a run's config) and the dictionary bands they give.

    cfg = AlignConfig(methods=["procrustes", "identical"], max_vocab=50000)
    train_band, test_band = rank_bands(cfg, n_src=6674)   # source-rank ranges of the train and test dictionaries
"""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("procrustes", "procrustes-refine", "adversarial", "identical")
SUPERVISED = ("procrustes", "procrustes-refine")
NORM_STEPS = ("center", "renorm", "none", "")


@dataclass
class AlignConfig:
    methods: list[str] = field(default_factory=lambda: ["procrustes", "procrustes-refine", "adversarial",
                                                        "identical"])  # which mappings to learn
    normalize: str = "renorm,center,renorm"  # MUSE normalize_embeddings steps: center, renorm ("" = none)
    max_vocab: int = 200000  # most frequent words kept per language (MUSE's default)
    # Source-rank ranges [start, end) of the train and test dictionaries (disjoint); [] = fit the vocabulary
    # (`rank_bands`). MUSE's [0, 5000] / [5000, 6500] were made for a 200k-word Wikipedia vocabulary, where rank
    # 6,500 is still a frequent word; in a Bible's 6,674 words it is the rarest tail, with a few occurrences
    # and noisy vectors: en-fr CSLS P@1 0.03 there, against 0.47 for the same vectors tested on ranks
    # [0, 1000] and trained on [1000, 5000]. Give both or neither: one fitted band could overlap the other.
    train_ranks: list[int] = field(default_factory=list)
    test_ranks: list[int] = field(default_factory=list)
    csls_k: int = 10  # neighbours in CSLS's hubness penalty
    refine_iters: int = 5  # Procrustes refinement iterations
    refine_max_rank: int = 15000  # refinement dictionary: mutual CSLS neighbours among this many words
    select_max_rank: int = 10000  # model-selection criterion: most frequent source words considered ...
    select_pairs: int = 10000  # ... and the most confident pairs averaged
    identical_max_rank: int = 0  # identical-strings seed among this many words per side (0 = all)
    adv_most_frequent: int = 75000  # the discriminator sees only the most frequent words
    # The adversarial schedule is sized for a CPU. MUSE's (hidden 2048, batch 32, lr 0.1, 5 epochs of 1M words:
    # ~156k mapping steps) takes hours on 2 cores. This one (10 epochs of 500 steps of 128 words) recovered the
    # rotation of a 50k x 300 structured synthetic set to P@1 1.000 in 426 s wall (adversarial.synthetic_pair)
    adv_hidden: int = 512  # discriminator width (d -> h -> h -> 1)
    adv_dropout: float = 0.1  # discriminator input dropout
    adv_smooth: float = 0.1  # discriminator label smoothing
    adv_dis_steps: int = 5  # discriminator steps per mapping step
    adv_batch: int = 128  # words per side in a batch
    adv_epochs: int = 10  # epochs; the best one by the criterion is kept
    adv_epoch_size: int = 64000  # words per epoch: epoch_size / batch mapping steps
    adv_lr: float = 0.5  # SGD learning rate of mapping and discriminator (batch means: a 4x batch, a larger lr)
    adv_lr_decay: float = 0.98  # mapping lr *= decay after every epoch ...
    adv_lr_shrink: float = 0.5  # ... and *= shrink when the criterion got worse
    adv_min_lr: float = 1e-6  # stop when the mapping lr falls below this
    adv_beta: float = 0.001  # orthogonalisation: W <- (1 + beta) W - beta (W W^T) W
    adv_threads: int = 1  # torch threads for adversarial training (0 = as set); its small matmuls gain
    # little from a second thread and lose to one when the machine is busy (50k x 300, hidden 512, loaded
    # 2-core machine: 76 ms a mapping step with 1 thread, 163 ms with 2)
    csls_vocab: int = 20000  # refinement and criterion: CSLS among this many most frequent words per side
    # (vecmap's vocabulary cutoff; MUSE uses every word, which costs (n / csls_vocab)^2 more; 0 = all)
    bf16: bool = True  # similarity blocks in bfloat16, the candidates rescored in fp32 (~3x faster)
    memory_mb: int = 256  # similarity scores held at once during retrieval
    write_vectors: bool = True  # write the mapped source and the normalised target as .vec files
    seed: int = 0  # adversarial training seed (restart r uses seed + r)
    # Adversarial training fails on some seeds (a map the discriminator cannot tell from the target that is
    # not a translation map). Each restart is a full run plus refinement; the best criterion after refinement
    # wins. On Bible en-es vectors two seeds of three failed (docs/measurements.md)
    adv_restarts: int = 3

    def __post_init__(self):
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"unknown alignment method {m!r}; choose from {', '.join(METHODS)}")
        for step in self.normalize.split(","):
            if step.strip() not in NORM_STEPS:
                raise ValueError(f"normalize step {step!r} is not one of center, renorm, none")
        for name in ("train_ranks", "test_ranks"):
            r = getattr(self, name)
            if r and (len(r) != 2 or not 0 <= r[0] <= r[1]):
                raise ValueError(f"{name} must be two ranks [start, end) with 0 <= start <= end, or [] (fit the "
                                 f"vocabulary), not {r}")
        if bool(self.train_ranks) != bool(self.test_ranks):
            raise ValueError(f"give both train_ranks and test_ranks or neither (both fitted to the vocabulary), not "
                             f"train_ranks {self.train_ranks} with test_ranks {self.test_ranks}")
        if self.train_ranks and max(self.train_ranks[0], self.test_ranks[0]) < min(self.train_ranks[1],
                                                                                   self.test_ranks[1]):
            raise ValueError(f"train_ranks {self.train_ranks} and test_ranks {self.test_ranks} overlap")
        if min(self.csls_k, self.adv_hidden, self.adv_dis_steps, self.adv_batch, self.max_vocab,
               self.memory_mb, self.adv_restarts) < 1:
            raise ValueError("csls_k, adv_hidden, adv_dis_steps, adv_batch, adv_restarts, max_vocab and "
                             "memory_mb must be >= 1")
        if self.csls_vocab and self.csls_vocab < max(self.refine_max_rank, self.select_max_rank):
            raise ValueError(f"csls_vocab {self.csls_vocab} must be 0 (all) or >= refine_max_rank and "
                             f"select_max_rank ({self.refine_max_rank}, {self.select_max_rank})")
        if self.adv_lr <= 0 or not 0 < self.adv_lr_decay <= 1 or not 0 < self.adv_lr_shrink <= 1:
            raise ValueError("adv_lr must be > 0 and adv_lr_decay, adv_lr_shrink in (0, 1]")
        if not 0 <= self.adv_dropout < 1 or not 0 <= self.adv_smooth < 0.5:
            raise ValueError("adv_dropout must be in [0, 1) and adv_smooth in [0, 0.5)")


# ---------------------------------------------------------------------------- dictionary bands

MUSE_TRAIN, MUSE_TEST = (0, 5000), (5000, 6500)  # MUSE's bands, for its 200k-word vocabularies
TEST_SHARE = 5  # a test band lies within the most frequent 1 / TEST_SHARE of the source vocabulary


def rank_bands(cfg: AlignConfig, n_src: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """((train start, end), (test start, end)) source-rank bands for a source vocabulary of n_src words:
    cfg's when given, else fitted to the vocabulary.

    Fitted: MUSE's bands where their test band lies within the most frequent fifth of the vocabulary
    (n_src >= 32,500), so large vocabularies keep numbers comparable with published ones. A smaller
    vocabulary tests on its most frequent words, [0, min(1000, n_src / 5)), the only ones a small corpus
    gives good vectors, and trains on the rest up to rank 5,000: a 6,674-word Bible vocabulary gets
    [0, 1000] / [1000, 5000], a 1,000-word one [0, 200] / [200, 1000]. The test band comes first because
    it is the one that must be well estimated; Procrustes fits a d x d rotation from a few thousand pairs
    even when they are rarer words.
    """
    if cfg.train_ranks and cfg.test_ranks:
        return (cfg.train_ranks[0], cfg.train_ranks[1]), (cfg.test_ranks[0], cfg.test_ranks[1])
    if n_src >= TEST_SHARE * MUSE_TEST[1]:
        return MUSE_TRAIN, MUSE_TEST
    test_end = min(1000, n_src // TEST_SHARE)
    return (test_end, max(test_end, min(MUSE_TRAIN[1], n_src))), (0, test_end)
