"""A fine-tune on disk, reused when nothing it depends on changed: its key, and the cached checkpoint.

    key = finetune_key(cfg, pretrain_step, tokenizer_sha256, model.cfg)
    ckpt = cached_finetune(run_dir / "translate", key)   # None: train again
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from xling.errors import XlingError
from xling.tasks.translate.config import TranslateConfig

DECODE_ONLY = ("num_beams", "length_penalty", "early_stopping", "no_repeat_ngram", "max_new_tokens", "decode_batch",
               "test_sentences", "rnn_baseline")


def finetune_key(cfg: TranslateConfig, pretrain_step: int, tokenizer_sha256: str, model_cfg) -> str:
    """What a cached fine-tune depends on: the pretrained checkpoint, the tokenizer and the training settings."""
    train = {k: v for k, v in asdict(cfg).items() if k not in DECODE_ONLY}
    blob = json.dumps({"translate": train, "step": pretrain_step, "tokenizer": tokenizer_sha256,
                       "model": asdict(model_cfg)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cached_finetune(out_dir: Path, key: str):
    from xling.checkpoint import load_checkpoint

    if not (out_dir / "latest").is_file():
        return None
    try:
        ckpt = load_checkpoint(out_dir, train_state=False)
    except XlingError:
        return None  # a damaged cache is rebuilt
    return ckpt if ckpt.config.get("cache_key") == key else None
