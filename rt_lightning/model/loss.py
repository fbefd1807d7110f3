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


_CPU_WORKSPACE: dict[tuple, torch.Tensor] = {}
"""Logits buffers of the CPU loss, kept between chunks and steps: glibc serves every fresh tensor of this size
(256 positions x 262k tokens x 4 bytes) with a new mmap that the kernel page-faults and zeroes again, which cost more
than the arithmetic on them (measured: a 600 MB copy 173 ms fresh vs 25 ms into reused memory, 2 cores). GPU
allocators already reuse memory, so GPU chunks allocate as usual."""


def _cpu_buffer(role: str, dtype: torch.dtype, rows: int, columns: int) -> torch.Tensor:
    size = rows * columns
    buffer = _CPU_WORKSPACE.get((role, dtype))
    if buffer is None or buffer.numel() < size:
        buffer = _CPU_WORKSPACE[(role, dtype)] = torch.empty(size, dtype=dtype)
    return buffer[:size].view(rows, columns)


def release_cpu_loss_buffers() -> None:
    """Free the CPU loss's logits buffers (they are made again by the next loss)."""
    _CPU_WORKSPACE.clear()


def _cpu_loss_and_gradient(hidden: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor, grad_scale: float):
    """The chunk's summed loss and its gradient with respect to ``hidden``, in reused CPU buffers.

    The same arithmetic autograd does for ``cross_entropy(linear(hidden, weight).float())``: logits in the matmul's
    dtype (autocast's, when it is on, as ``linear`` would use), softmax in fp32, gradient
    ``grad_scale * (softmax - onehot)`` cast back to that dtype for the matmul; only fp32 rounding in the softmax
    differs (``exp(x - logsumexp)`` instead of ``exp(log_softmax)``).
    """
    rows, vocab = hidden.shape[0], weight.shape[0]
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else weight.dtype
    with torch.autocast("cpu", enabled=False):  # out= buffers and autocast do not mix; dtypes are explicit here
        weight = weight.to(dtype)
        logits = torch.mm(hidden.to(dtype), weight.t(), out=_cpu_buffer("logits", dtype, rows, vocab))
        probs = _cpu_buffer("probs", torch.float32, rows, vocab).copy_(logits)
        log_normaliser = torch.logsumexp(probs, dim=-1, keepdim=True)
        loss = (log_normaliser.squeeze(1) - probs.gather(1, targets[:, None]).squeeze(1)).sum()
        probs.sub_(log_normaliser).exp_()
        probs[torch.arange(rows), targets] -= 1.0
        probs.mul_(grad_scale)
        grad = torch.mm(logits.copy_(probs), weight)
    return loss, grad.to(hidden.dtype)


class _LossWithEarlyGradient(torch.autograd.Function):
    """A chunk's loss whose gradient with respect to ``hidden`` is computed in forward (for ``grad_scale``, the
    gradient the caller is expected to send back: 1/count for a mean) and only rescaled in backward if it differs."""

    @staticmethod
    def forward(ctx, hidden, targets, weight, softcap, grad_scale: float):
        if hidden.device.type == "cpu" and softcap is None:
            loss, grad = _cpu_loss_and_gradient(hidden, targets, weight, grad_scale)
        else:
            with torch.enable_grad():
                leaf = hidden.detach().requires_grad_(True)
                loss = _chunk_loss(leaf, targets, weight, softcap)
                (grad,) = torch.autograd.grad(loss, leaf, torch.tensor(grad_scale, dtype=loss.dtype,
                                                                       device=loss.device))
            loss = loss.detach()
        ctx.save_for_backward(grad)
        ctx.grad_scale = grad_scale
        return loss

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
