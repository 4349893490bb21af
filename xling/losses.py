"""The losses of the objectives as tensor maths: no model, no batches (`xling.objectives` maps (model, batch) to them).

    loss, acc = info_nce(za, zb, tau=0.05, margin=0.0)           # contrastive: in-batch translation pairs
    loss, cos_en, cos_x = distill_loss(projected, teacher)       # distill: both sides onto the teacher's vector
    loss = span_loss(lm_head, hidden, batch)                     # mt / translation: cross-entropy on the target span
    per_token = cross_entropy(logits, targets, reduction="none")  # over the vocabulary: every LM loss calls this
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xling.batches import IGNORE

CE_ROWS = 128  # rows of logits per block in the eager cross-entropy: a (128, V) fp32 block stays in cache


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, *, ignore_index: int = IGNORE,
                  label_smoothing: float = 0.0, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the vocabulary, as `F.cross_entropy` on `logits.float()`: logits (N, V) of any float dtype,
    targets (N,) with `ignore_index` for positions without loss; reduction "mean" (over counted positions), "sum" or
    "none" ((N,) fp32, 0 where ignored). The maths runs in fp32 (or the logits' wider dtype).

    Inside torch.compile this is `F.cross_entropy`, which inductor fuses. Eager, it is `_BlockedCrossEntropy`: a
    (N, V) fp32 copy of bf16 logits, its log-softmax, the (N, V) zeros and scatter of nll_loss's backward and the
    copy back took a fifth of an eager bf16 step of the demo model (N = 2,048, V = 8,000); computed by blocks of
    CE_ROWS rows from the logits as they are, it needs no (N, V) temporary beside the gradient (forward and backward
    25 ms against 93-100 ms there; the whole eager step 1.1x faster,
    bench/train_throughput.py's eager rows)."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be mean, sum or none, not {reduction!r}")
    if torch.compiler.is_compiling():
        acc = torch.promote_types(logits.dtype, torch.float32)
        return F.cross_entropy(logits.to(acc), targets, ignore_index=ignore_index, label_smoothing=label_smoothing,
                               reduction=reduction)
    per_token = _BlockedCrossEntropy.apply(logits, targets, ignore_index, label_smoothing)  # (N,)
    if reduction == "none":
        return per_token
    if reduction == "sum":
        return per_token.sum()
    return per_token.sum() / (targets != ignore_index).sum()  # as torch: nan when nothing is counted


class _BlockedCrossEntropy(torch.autograd.Function):
    """Per-token loss (N,) = (1 - s) (lse - z_t) + s (lse - mean(z)), s = label smoothing, z a row of logits,
    lse its log-sum-exp; 0 at ignored targets. Saves only the logits as given; the gradient of row i,
    g_i (softmax(z) - (1 - s) onehot(t) - s / V), is computed block by block (softmax straight from the logits'
    dtype into fp32, one pass) and written in the logits' dtype."""

    @staticmethod
    def forward(ctx, logits, targets, ignore_index, smoothing):
        n, v = logits.shape
        acc = torch.promote_types(logits.dtype, torch.float32)
        keep = targets != ignore_index  # (N,)
        safe = targets.where(keep, 0)  # (N,) an ignored row picks column 0, then counts 0
        loss = torch.empty(n, dtype=acc, device=logits.device)
        for s in range(0, n, CE_ROWS):
            z = logits[s:s + CE_ROWS].to(acc)  # (b, V)
            lse = torch.logsumexp(z, dim=-1)  # (b,)
            nll = lse - z.gather(1, safe[s:s + CE_ROWS, None])[:, 0]  # (b,)
            if smoothing:
                nll = (1 - smoothing) * nll + smoothing * (lse - z.mean(-1))
            loss[s:s + CE_ROWS] = nll
        loss.masked_fill_(~keep, 0.0)
        ctx.save_for_backward(logits, safe, keep)
        ctx.smoothing, ctx.acc = smoothing, acc
        return loss

    @staticmethod
    def backward(ctx, grad):
        logits, safe, keep = ctx.saved_tensors
        n, v = logits.shape
        smoothing = ctx.smoothing
        g = grad.to(ctx.acc).masked_fill(~keep, 0.0)  # (N,)
        out = torch.empty_like(logits)
        for s in range(0, n, CE_ROWS):
            p = torch.softmax(logits[s:s + CE_ROWS], dim=-1, dtype=ctx.acc)  # (b, V)
            if smoothing:
                p.sub_(smoothing / v)
            rows = torch.arange(p.shape[0], device=p.device)
            p[rows, safe[s:s + CE_ROWS]] -= 1 - smoothing
            out[s:s + CE_ROWS] = p.mul_(g[s:s + CE_ROWS, None])
        return out, None, None, None


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
    logits = lm_head(picked)  # (B, W, V)
    return cross_entropy(logits.flatten(0, 1), batch["target_ids"].flatten(), label_smoothing=label_smoothing)
