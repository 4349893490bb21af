"""The classifier: an encoder (ours, or any with the same interface), pooling, dropout and a linear head; its
fit with early stopping on the source valid split, and its predictions.

    clf = Classifier(XlingEncoder(model, tok, langs), n_labels=6, cfg=cfg)
    best = fit(clf, [prepare(encoder, train, cfg)], prepare(encoder, valid, cfg), cfg, seed=0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xling.batches import pad_right
from xling.encode import mean_pool
from xling.errors import XlingError
from xling.metrics import accuracy
from xling.tasks.classify.config import ClassifyConfig
from xling.tasks.classify.data import Examples

# ---------------------------------------------------------------------------- encoders and the classifier

class XlingEncoder(nn.Module):
    """A run's Transformer as a bidirectional text encoder: `<lang> text </s>`, language ids if it has them."""

    def __init__(self, model: nn.Module, tokenizer, langs: list[str]):
        super().__init__()
        from xling.tokenizer import EOS_ID, lang_ids, lang_index

        self.model, self.tokenizer = model, tokenizer
        self.tags = lang_ids(tokenizer, list(langs))  # lang -> tag id
        self.index = {lg: lang_index(tokenizer, lg) for lg in self.tags}  # lang -> language-embedding row
        self.eos = EOS_ID
        self.d_model: int = model.cfg.d_model
        self.pad_id = 0
        self.train(model.training)  # the wrapper starts in the model's mode (a new Module says training)

    def _known(self, lang: str) -> str:
        if lang not in self.tags:
            raise XlingError(f"language {lang!r} is not one this model knows ({', '.join(self.tags)})")
        return lang

    def encode_texts(self, texts: list[str], lang: str) -> list[list[int]]:
        tag, room = self.tags[self._known(lang)], self.model.cfg.block_size - 2
        return [[tag, *e.ids[:room], self.eos] for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def forward(self, idx: Tensor, pad_mask: Tensor, lang: str) -> Tensor:
        lang_ids = None
        if self.model.cfg.n_langs > 0:
            lang_ids = torch.full_like(idx, self.index[self._known(lang)])
        return self.model(idx, causal=False, pad_mask=pad_mask, lang_ids=lang_ids)  # (B, T, D)


def pool(hidden: Tensor, pad_mask: Tensor, how: str) -> Tensor:
    """(B, T, D) -> (B, D): mean over real tokens, or the first token."""
    if how == "first":
        return hidden[:, 0]
    return mean_pool(hidden, pad_mask)


class Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, n_classes: int, pooling: str = "mean", dropout: float = 0.1):
        super().__init__()
        self.encoder, self.pooling = encoder, pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.d_model, n_classes)
        # head-only: pooled features are standardised with the training rows' mean/std (set by `fit`); the
        # demo model's vectors share one large mean with tiny per-dimension spread, which a raw head barely fits
        self.register_buffer("shift", torch.zeros(encoder.d_model))
        self.register_buffer("scale", torch.ones(encoder.d_model))

    def features(self, idx: Tensor, pad_mask: Tensor, lang: str) -> Tensor:
        return pool(self.encoder(idx, pad_mask, lang).float(), pad_mask, self.pooling)  # (B, D)

    def classify(self, feats: Tensor) -> Tensor:
        return self.head(self.dropout((feats - self.shift) / self.scale))  # (B, C)

    def forward(self, idx: Tensor, pad_mask: Tensor, lang: str) -> Tensor:
        return self.classify(self.features(idx, pad_mask, lang))


@dataclass
class Inputs:
    """One language's examples as token ids, with frozen pooled features (N, D) when only the head trains."""

    lang: str
    ids: list[list[int]]
    labels: Tensor
    feats: Tensor | None = None


def prepare(encoder: nn.Module, ex: Examples, cfg: ClassifyConfig, frozen: Classifier | None = None) -> Inputs:
    """Tokenize (cut to max_len, keeping the encoder's final special); pool features if `frozen` is given."""
    ids = [s if len(s) <= cfg.max_len else s[: cfg.max_len - 1] + s[-1:]
           for s in encoder.encode_texts(ex.texts, ex.lang)]
    inp = Inputs(ex.lang, ids, torch.as_tensor(ex.labels, dtype=torch.long))
    if frozen is not None:
        pad_id, out = getattr(encoder, "pad_id", 0), torch.zeros(len(ids), encoder.d_model)
        order = np.argsort([len(s) for s in ids], kind="stable")  # similar lengths per batch: little padding
        was = encoder.training
        encoder.eval()
        with torch.no_grad():
            for k in range(0, len(order), 64):
                rows = order[k:k + 64]
                idx, mask = pad_right([ids[i] for i in rows], pad_id)
                out[torch.as_tensor(rows)] = frozen.features(idx, mask, ex.lang).float()
        encoder.train(was)
        inp.feats = out
    return inp


def _logits(clf: Classifier, inp: Inputs, rows: np.ndarray) -> Tensor:
    if inp.feats is not None:
        return clf.classify(inp.feats[torch.as_tensor(rows)])
    idx, mask = pad_right([inp.ids[i] for i in rows], getattr(clf.encoder, "pad_id", 0))
    return clf(idx, mask, inp.lang).float()


@torch.no_grad()
def predict_logits(clf: Classifier, inp: Inputs, batch_size: int = 64) -> Tensor:
    was = clf.training
    clf.eval()
    order = np.argsort([len(s) for s in inp.ids], kind="stable")
    out = torch.zeros(len(inp.ids), clf.head.out_features)
    for k in range(0, len(order), batch_size):
        out[torch.as_tensor(order[k:k + batch_size])] = _logits(clf, inp, order[k:k + batch_size]).float()
    clf.train(was)
    return out  # (N, C)


def predict(clf: Classifier, inp: Inputs) -> np.ndarray:
    return predict_logits(clf, inp).argmax(-1).numpy()


def fit(clf: Classifier, train: list[Inputs], valid: Inputs, cfg: ClassifyConfig, seed: int,
        bar=None) -> dict:
    """AdamW on cross-entropy; keeps the epoch with the best accuracy (then loss) on `valid`: the source's."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    full = train[0].feats is None
    groups = [{"params": list(clf.head.parameters()), "lr": cfg.lr}]
    if full:
        groups.append({"params": list(clf.encoder.parameters()), "lr": cfg.encoder_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    if not full:
        feats = torch.cat([inp.feats for inp in train])  # (N, D), training rows only
        clf.shift.copy_(feats.mean(0))
        clf.scale.copy_(feats.std(0).clamp_min(1e-6))
    keep = clf if full else clf.head  # what changes, so what the best epoch must restore
    best, best_epoch, state, history = (-1.0, 0.0), 0, None, []
    for epoch in range(1, cfg.epochs + 1):
        clf.train()
        batches = [(k, r) for k, inp in enumerate(train)  # one language per batch: the encoder takes one lang
                   for r in np.array_split(rng.permutation(len(inp.ids)), math.ceil(len(inp.ids) / cfg.batch_size))]
        for b in rng.permutation(len(batches)):
            k, rows = batches[b]
            loss = F.cross_entropy(_logits(clf, train[k], rows), train[k].labels[torch.as_tensor(rows)])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        logits = predict_logits(clf, valid)
        acc, loss = accuracy(logits.argmax(-1).numpy(), valid.labels.numpy()), F.cross_entropy(logits, valid.labels)
        history.append(acc)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(seed=seed, valid=f"{acc:.3f}")
        if (acc, -loss.item()) > best:  # better accuracy; on a tie, lower valid loss
            best, best_epoch = (acc, -loss.item()), epoch
            state = {k: v.detach().clone() for k, v in keep.state_dict().items()}
        elif cfg.patience and epoch - best_epoch >= cfg.patience:
            break
    if bar is not None:
        bar.update(cfg.epochs - len(history))
    keep.load_state_dict(state)
    return {"best_epoch": best_epoch, "valid_accuracy": best[0], "history": history}
