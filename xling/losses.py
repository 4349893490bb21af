"""The losses of the objectives as tensor maths: no model, no batches (`xling.objectives` maps (model, batch) to them).

    loss, acc = info_nce(za, zb, tau=0.05, margin=0.0)           # contrastive: in-batch translation pairs
    loss, cos_en, cos_x = distill_loss(projected, teacher)       # distill: both sides onto the teacher's vector
    loss = span_loss(lm_head, hidden, batch)                     # mt / translation: cross-entropy on the target span
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xling.batches import IGNORE


def info_nce(za: torch.Tensor, zb: torch.Tensor, tau: float = 0.05,
             margin: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE over in-batch negatives. za, zb (B, D) pooled, row i of each a translation pair.

    Rows are L2-normalised; scores S = za zb^T; LaBSE's additive margin subtracts `margin` from the
    positives (diagonal) before scaling by 1/tau. loss = (CE(S, diag) + CE(S^T, diag)) / 2.
    Returns (loss, top-1 accuracy averaged over both directions).
    """
    za, zb = F.normalize(za.float(), dim=-1), F.normalize(zb.float(), dim=-1)
    sim = za @ zb.T  # (B, B) cosine
    target = torch.arange(sim.size(0), device=sim.device)
    logits = (sim - margin * torch.eye(sim.size(0), device=sim.device)) / tau
    loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    acc = ((sim.argmax(1) == target).float().mean() + (sim.argmax(0) == target).float().mean()) / 2
    return loss, acc


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Multilingual distillation loss. student (2B, D_t): projected pooled vectors, rows 0..B-1 of the English side,
    B..2B-1 of its translations; teacher (B, D_t): unit teacher vectors of the English side.

    loss = ||û_en - t||^2 + ||û_x - t||^2, each averaged over the B rows, û = u / ||u||: the two MSE terms of
    Reimers & Gurevych with the student's output L2-normalised and the squared error summed over the D_t
    dimensions (torch's per-element MSE times D_t). With unit vectors each term is 2 - 2 cos(u, t): 0 when the
    directions agree, about 2 at the start (cos ~ 0), at most 4; the sum starts near 4, the size of contrastive's
    InfoNCE over 64 rows (ln 64 = 4.2) and below a CLM's ln |V|. Per-element MSE would be 2 / 512 = 0.004 at the
    start for USE, too small beside the other objectives' losses in one AdamW. Normalising loses nothing (the
    teacher's vectors are all unit length, so only their directions carry information), makes the loss independent
    of the pooled vectors' norm (which the other objectives move) and trains what retrieval scores: cosine.
    Returns (loss, mean cos of the English side, mean cos of the other side) to the teacher.
    """
    u = F.normalize(student.float(), dim=-1)
    t = teacher.float()
    cos = (u * t.repeat(2, 1)).sum(-1)  # (2B,): t is unit length
    err = (u - t.repeat(2, 1)).pow(2).sum(-1)  # (2B,) = 2 - 2 cos
    ce, cx = cos.chunk(2)
    ee, ex = err.chunk(2)
    return ee.mean() + ex.mean(), ce.mean(), cx.mean()


def span_loss(lm_head: nn.Module, hidden: torch.Tensor, batch: dict, label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross-entropy of the output layer on the hidden states (B, T, D) at batch["target_pos"] (B, W)."""
    pos = batch["target_pos"]
    picked = hidden.gather(1, pos[..., None].expand(-1, -1, hidden.size(-1)))  # (B, W, D)
    logits = lm_head(picked).float()  # (B, W, V)
    return F.cross_entropy(logits.flatten(0, 1), batch["target_ids"].flatten(), ignore_index=IGNORE,
                           label_smoothing=label_smoothing)
