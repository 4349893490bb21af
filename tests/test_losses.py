"""xling.losses.cross_entropy: the eager blocked kernel against torch's cross-entropy, and the same call compiled."""

import pytest
import torch
import torch.nn.functional as F

from xling import losses
from xling.batches import IGNORE


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_blocked_cross_entropy_equals_torch(dtype, smoothing, reduction, monkeypatch):
    """Loss and gradient equal F.cross_entropy on the logits cast to fp32 (fp64 stays fp64), ignored targets and
    label smoothing included; blocks of 16 rows over 300 so the last block is partial."""
    monkeypatch.setattr(losses, "CE_ROWS", 16)
    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(300, 77, generator=g, dtype=torch.float64)).to(dtype).requires_grad_()
    targets = torch.randint(0, 77, (300,), generator=g)
    targets[::7] = IGNORE
    ours = losses.cross_entropy(logits, targets, label_smoothing=smoothing, reduction=reduction)
    ref = F.cross_entropy(logits.to(torch.promote_types(dtype, torch.float32)), targets, label_smoothing=smoothing,
                          reduction=reduction)
    assert ours.dtype == ref.dtype and ours.shape == ref.shape
    weight = torch.randn(ours.shape, generator=g, dtype=ours.dtype)  # a gradient that differs per token
    (grad_ours,) = torch.autograd.grad((ours * weight).sum(), logits)
    (grad_ref,) = torch.autograd.grad((ref * weight).sum(), logits)
    assert grad_ours.dtype == dtype
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-5}[dtype]
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol * 10)
    # bf16 gradients: both round the same fp32 value to bf16, at most one bf16 step apart
    gtol = 1e-2 if dtype == torch.bfloat16 else tol
    torch.testing.assert_close(grad_ours, grad_ref, rtol=gtol, atol=gtol)
    if reduction == "none":
        assert (ours.detach()[targets == IGNORE] == 0).all()
        assert (grad_ours[targets == IGNORE] == 0).all()


def test_cross_entropy_checks_reduction():
    with pytest.raises(ValueError, match="reduction"):
        losses.cross_entropy(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), reduction="avg")


def test_compiled_cross_entropy_is_torchs():
    """Inside torch.compile the call is F.cross_entropy (inductor fuses it): same value as eager."""
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(64, 50, generator=g)
    targets = torch.randint(0, 50, (64,), generator=g)
    targets[:5] = IGNORE
    compiled = torch.compile(lambda z, t: losses.cross_entropy(z, t, label_smoothing=0.1), backend="eager",
                             fullgraph=True)
    torch.testing.assert_close(compiled(logits, targets), losses.cross_entropy(logits, targets, label_smoothing=0.1))
