"""Language-restricted decoding: which tokens each language's training text uses, as a mask over the logits.

    vocab = LangVocab.from_run("runs/demo")                       # the run's train shards, counted once
    allowed = vocab.mask(["de", "fr"], vocab_size, always=[2])    # (2, V) bool: row r may use langs[r]'s tokens

`xling.generate` applies the mask before sampling or beam search when `GenerateConfig.lang_vocab` is on, so a
continuation in L is made of L's subwords (and the stop tokens) only; what that does to the output is in
docs/measurements.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from xling.errors import XlingError
from xling.tokenizer import tokenizer_hash


class LangVocab:
    """Which tokens occur in each language's training text: the allowed set of `GenerateConfig.lang_vocab`.

        vocab = LangVocab.from_run("runs/demo")                # from the run's train shards, once
        generate(model, tok, ["Der König"], lang="de", cfg=GenerateConfig(lang_vocab=True), vocab=vocab)

    allowed: language -> (vocab_size,) bool numpy array, True for a token seen in that language.
    """

    def __init__(self, allowed: dict[str, np.ndarray]):
        self.allowed = {lg: np.asarray(a, dtype=bool) for lg, a in allowed.items()}

    @classmethod
    def from_shards(cls, shards, langs: Sequence[str] | None = None, split: str = "train") -> LangVocab:
        """Count the token ids of each language's `split` (a pass over ~1M ids per language takes milliseconds)."""
        # a language the shards lack is left out: generating in it fails with the tokenizer's clearer message
        return cls({lg: np.bincount(np.asarray(shards.tokens(split, lg)), minlength=shards.vocab_size) > 0
                    for lg in (langs or shards.langs) if lg in shards.langs})

    @classmethod
    def from_run(cls, path: str | Path, langs: Sequence[str] | None = None) -> LangVocab | None:
        """From the `shards/` nearest to `path` (a run, its checkpoints or a step directory), checked against
        the `tokenizer/` beside them; None when there are no shards (e.g. a model imported from Hugging Face)."""
        from xling.shards import Shards

        path = Path(path)
        for d in (path, *path.resolve().parents[:3]):
            if (d / "shards" / "meta.json").is_file():
                tok_dir = d / "tokenizer"
                want = tokenizer_hash(tok_dir) if (tok_dir / "tokenizer.json").is_file() else None
                return cls.from_shards(Shards(d / "shards", expect_tokenizer_hash=want), langs)
        return None

    def mask(self, langs: Sequence[str], vocab_size: int, always: Sequence[int] = ()) -> Tensor:
        """(B, vocab_size) bool: row r allows the tokens of langs[r] and the ids in `always` (stop tokens)."""
        missing = sorted({lg for lg in langs if lg not in self.allowed})
        if missing:
            raise XlingError(f"no training text for {', '.join(missing)} in the language vocabularies "
                             f"(they have {', '.join(self.allowed)}); set generate.lang_vocab=false to generate "
                             f"without the restriction")
        out = torch.zeros(len(langs), vocab_size, dtype=torch.bool)
        for r, lg in enumerate(langs):
            a = torch.from_numpy(self.allowed[lg][:vocab_size])
            out[r, :len(a)] = a
        out[:, list(always)] = True
        return out
