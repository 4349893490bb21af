"""The settings of the translation fine-tune and its decoding: `[translate]` in a run's config.

    cfg = TranslateConfig(directions=["en-fr", "fr-en"], max_minutes=10)
    cfg.pairs()    # [("en", "fr"), ("fr", "en")]

The measurements behind the defaults are in docs/measurements.md ("Translation fine-tune").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from xling.generate import MAX_BEAMS
from xling.precision import PRECISIONS


@dataclass
class TranslateConfig:
    directions: list[str] = field(default_factory=lambda: ["en-fr", "fr-en", "en-ru", "ru-en"])  # src-tgt
    # peak AdamW learning rate: on the 2,800-step translation model, 10-minute fine-tunes gave en->fr / fr->en BLEU
    # 9.1 / 14.3 at 1e-3 against 8.2 / 12.2 at 5e-4 and 9.0 / 12.1 at 2e-3 (configs/translation.toml: 1.5e-3)
    lr: float = 1e-3
    min_lr: float = 1e-4  # where the cosine ends (schedule = "cosine")
    schedule: str = "cosine"  # cosine (linear warmup, then cosine to min_lr) | constant (warmup, then lr)
    warmup_steps: int = 30  # linear warmup steps
    weight_decay: float = 0.01  # AdamW decay of matrices and embeddings
    # pairs per step: in 10-minute en<->fr fine-tunes 32 gave en->fr BLEU 12.8, 16 and 64 gave 11.4
    batch_size: int = 32
    max_len: int = 128  # tokens of `<src> x </s> <tgt> y` at most (capped by the model's block_size)
    # read `<src> x </s>` bidirectionally (a prefix LM, as an encoder would), the target causally. Off: valid loss
    # 4.68 prefix vs 4.67 causal on the demo model
    prefix_lm: bool = False
    # cross-entropy label smoothing (Vaswani et al. 2017: 0.1): en->fr BLEU 9.0 with 0.1, 7.9 without
    label_smoothing: float = 0.1
    # torch.compile the loss (model + output layer + cross-entropy; one graph, the length symbolic): more steps
    # in a wall-clock budget once its 30-70 s of cold compilation are paid, so time budgets under 2 minutes
    # (max_minutes < 2) always run eagerly
    compile: bool = True
    max_minutes: float = 1.0  # fine-tune budget in wall-clock minutes (0 = unset)
    max_steps: int = 0  # fine-tune budget in optimizer steps (0 = unset); the first budget reached ends it
    precision: str = "auto"  # auto (bf16 autocast/weights where native) | fp32 | bf16
    num_beams: int = 4  # beam size (1 = greedy)
    length_penalty: float = 1.0  # beam score = logprob / length ** length_penalty
    # beam: true stops a sentence once num_beams hypotheses ended (Hugging Face's early_stopping=True, fast);
    # false only once no running beam can beat them (exact). A model sure of one output lets the other beams end
    # early as junk, and true can then stop before the best beam ends
    early_stopping: bool = True
    # no output repeats one of its own n-grams of this size (0 = off): short fine-tunes loop ("and he sent them
    # to them, and he sent them to them"); on 100 valid verses en->fr BLEU 6.73 at 3 vs 5.25 off
    no_repeat_ngram: int = 3
    max_new_tokens: int = 0  # tokens generated at most; 0 = 1.5 x source length + 10 (capped by the context)
    decode_batch: int = 32  # sentences decoded together (x num_beams rows)
    test_sentences: int = 200  # test pairs per direction in the demo evaluation (evenly spread); 0 = all
    rnn_baseline: bool = True  # demo evaluation: also train the RNN baseline for the same wall-clock time
    seed: int = 1234  # data order and initialisation of the fine-tune

    def __post_init__(self):
        for d in self.directions:
            parts = d.split("-")
            if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
                raise ValueError(f"direction {d!r} must be src-tgt with two different languages, e.g. en-fr")
        for name, ok, need in (("schedule", self.schedule in ("cosine", "constant"), "cosine or constant"),
                               ("precision", self.precision in PRECISIONS, ", ".join(PRECISIONS)),
                               ("num_beams", 1 <= self.num_beams <= MAX_BEAMS, f"in 1..{MAX_BEAMS} (1 = greedy)"),
                               ("batch_size", self.batch_size >= 1, ">= 1"),
                               ("decode_batch", self.decode_batch >= 1, ">= 1"),
                               ("max_len", self.max_len >= 8, ">= 8"),
                               ("lr", self.lr > 0 and self.min_lr <= self.lr, "> 0 and >= min_lr")):
            if not ok:
                raise ValueError(f"{name} must be {need}, not {getattr(self, name)!r}")
        for name in ("max_minutes", "max_steps", "warmup_steps", "max_new_tokens", "test_sentences",
                     "weight_decay", "min_lr", "label_smoothing"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")

    def pairs(self) -> list[tuple[str, str]]:
        return [tuple(d.split("-")) for d in self.directions]
