"""Masked next-token loss that never builds full-vocabulary logits for positions that carry no loss.

Only positions whose (shifted) label is trained go through the LM head, in chunks, so at most one chunk of fp32
logits is alive at a time. With a 262k-token vocabulary (Gemma) the logits, not the weights, dominate memory
otherwise, and the head dominates compute: during training each chunk's gradient with respect to the hidden states
is computed right in the forward (the same autograd ops, run early) and kept, so the logits are never recomputed in
backward: two head matmuls per trained position instead of three (forward, recomputation, backward). A trainable
head (rare with LoRA) falls back to recomputation (activation checkpointing), which also yields its gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from rt_lightning.constants import IGNORE_INDEX


def _chunk_loss(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, softcap: float | None):
    logits = F.linear(hidden, weight).float()
    if softcap is not None:  # Gemma-2 style final logit soft-capping, as the HF model applies it
        logits = torch.tanh(logits / softcap) * softcap
    return F.cross_entropy(logits, targets, reduction="sum")


class _LossWithEarlyGradient(torch.autograd.Function):
    """A chunk's loss whose gradient with respect to ``hidden`` is computed in forward (for ``grad_scale``, the
    gradient the caller is expected to send back: 1/count for a mean) and only rescaled in backward if it differs."""

    @staticmethod
    def forward(ctx, hidden, targets, weight, softcap, grad_scale: float):
        with torch.enable_grad():
            leaf = hidden.detach().requires_grad_(True)
            loss = _chunk_loss(leaf, targets, weight, softcap)
            (grad,) = torch.autograd.grad(loss, leaf, torch.tensor(grad_scale, dtype=loss.dtype, device=loss.device))
        ctx.save_for_backward(grad)
        ctx.grad_scale = grad_scale
        return loss.detach()

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        if grad_output.item() != ctx.grad_scale:  # e.g. a loss scaled by the caller (several ranks, accumulation)
            grad = grad * (grad_output / ctx.grad_scale).to(grad.dtype)
        return grad, None, None, None, None


def masked_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module, softcap: float | None = None,
                   chunk_size: int = 1024, reduction: str = "mean", allow_empty: bool = False) -> tuple[torch.Tensor, int]:
    """Cross-entropy over trained positions; returns (mean or summed loss, number of trained tokens).

    ``hidden`` is the decoder output ``[batch, seq, dim]`` and ``labels`` the unshifted labels ``[batch, seq]``.
    ``allow_empty`` accepts a batch with nothing to train (the filler a rank gets when the data does not divide
    evenly across ranks) and returns a zero that still reaches every parameter, as distributed backward needs.
    """
    if getattr(lm_head, "bias", None) is not None:
        raise NotImplementedError("LM heads with a bias are not supported by the chunked loss")
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    selected, targets = hidden[:, :-1][mask], targets[mask]
    count = int(targets.numel())
    if count == 0:
        if allow_empty:
            return hidden.sum() * 0.0, 0
        raise ValueError("batch has no trainable tokens (every example should have been checked when tokenised)")
    total = hidden.new_zeros((), dtype=torch.float32)
    needs_grad = torch.is_grad_enabled() and selected.requires_grad
    early = needs_grad and not lm_head.weight.requires_grad
    for start in range(0, count, chunk_size):
        args = (selected[start:start + chunk_size], targets[start:start + chunk_size], lm_head.weight, softcap)
        if early:
            chunk = _LossWithEarlyGradient.apply(*args, 1.0 if reduction == "sum" else 1.0 / count)
        elif needs_grad:
            chunk = checkpoint(_chunk_loss, *args, use_reentrant=False)
        else:
            chunk = _chunk_loss(*args)
        total = total + chunk
    return (total if reduction == "sum" else total / count), count
