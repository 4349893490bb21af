"""A local Hugging Face encoder (BERT/mBERT, XLM-R, ...) behind the encoder interface the classification recipe
fine-tunes, and the check a folder passes before anything loads.

    folder = check_encoder_folder("models/xlm-roberta-base")   # cheap: no transformers import
    enc = HFEncoder(folder)                                      # AutoModel + AutoTokenizer, local files only
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from xling.errors import XlingError


def check_encoder_folder(folder: str | Path) -> Path:
    """`folder` if it looks like a local Hugging Face encoder xling may load, else one XlingError; cheap (no
    transformers import), so `xling classify --hf` calls it before reading any data. Safetensors weights only:
    a folder with only pytorch_model.bin (a pickle) is refused without ever opening it."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise XlingError(f"{folder} is not a Hugging Face model folder (no config.json); give a local copy "
                         f"of e.g. bert-base-multilingual-cased (save_pretrained output)")
    if not any(folder.glob("*.safetensors")):  # never unpickle a user's file (pytorch_model.bin is a pickle)
        bins = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise XlingError(f"{folder} has no safetensors weights{' (only ' + ', '.join(bins) + ')' if bins else ''}; "
                         f"xling loads only safetensors: convert it once with transformers' "
                         f"model.save_pretrained(dir, safe_serialization=True) where you trust the file")
    return folder


class HFEncoder(nn.Module):
    """A local Hugging Face encoder (BERT/mBERT, XLM-R, ...) in xling's encoder interface.

        enc = HFEncoder("models/xlm-roberta-base")            # AutoModel + AutoTokenizer, local files only
        ids = enc.encode_texts(["Hello"], "en")               # [[<s>, ..., </s>]]: the model's own specials
        h = enc(idx, pad_mask, "en")                          # (B, T, D) last hidden state

    `lang` is accepted for the interface and ignored: these models take no language input. Padding uses
    the tokenizer's pad id (`pad_id`); pass `pad_mask` (True = real token) so padding is never attended to.
    """

    def __init__(self, folder: str | Path, max_length: int | None = None):
        super().__init__()
        folder = check_encoder_folder(folder)
        import transformers
        from transformers import AutoModel, AutoTokenizer

        transformers.logging.set_verbosity_error()  # "some weights were not used" (e.g. an MLM head) is expected
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise XlingError(f"cannot load the tokenizer in {folder} ({str(e).splitlines()[0][:120]}); save it "
                             f"beside the model with tokenizer.save_pretrained(dir)") from None
        try:
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True, use_safetensors=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise XlingError(f"cannot load the model in {folder} ({str(e).splitlines()[0][:120]})") from None
        conf = self.model.config
        self.d_model: int = int(conf.hidden_size)
        self.pad_id: int = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        limit = getattr(conf, "max_position_embeddings", 512)
        if conf.model_type in ("roberta", "xlm-roberta", "camembert"):
            limit -= conf.pad_token_id + 1  # positions start after the padding index
        if self.tokenizer.model_max_length and self.tokenizer.model_max_length < 1_000_000:
            limit = min(limit, self.tokenizer.model_max_length)
        self.max_length = min(limit, max_length) if max_length else limit

    def encode_texts(self, texts: list[str], lang: str) -> list[list[int]]:
        """Token ids of each text with the model's specials ([CLS] ... [SEP] / <s> ... </s>), truncated."""
        enc = self.tokenizer(list(texts), add_special_tokens=True, truncation=True, max_length=self.max_length)
        return [list(x) for x in enc["input_ids"]]

    def forward(self, idx: Tensor, pad_mask: Tensor | None = None, lang: str | None = None) -> Tensor:
        """(B, T) ids, (B, T) bool True = real -> (B, T, D) last hidden states."""
        mask = torch.ones_like(idx) if pad_mask is None else pad_mask.long()  # (B, T)
        return self.model(input_ids=idx, attention_mask=mask).last_hidden_state  # (B, T, D)
