"""Sibling projections of one input (q/k/v, gate/up) computed as one product during generation.

A decoder layer multiplies the same normed hidden state by the query, key and value projections, and again by the
gate and up projections, each through its own LoRA wrapper: per layer five base products, five fp32 casts of the
same input and five LoRA-A products, each a separate call that costs more in overhead than in arithmetic at decode
shapes. Here each group runs as one packed product over the concatenated base weights and one product over the
concatenated LoRA-A factors; each member then takes its slice and adds its own LoRA-B term in PEFT's order of
operations. On the README's ``eval`` command (Gemma-3-270M + LoRA, 16 rows decoding together), generation went from
3.57x to 4.04x the old code's tokens/s with this on top of packing (``bench/cpu_eval.py``, two runs).

The values are PEFT's: every group is checked at set-up on probe inputs against its members' own forwards, bit for
bit, and a group that differs is left alone. At run time the first member computes the group's outputs and the
others take theirs only if they are called with that very input tensor; any other call (another input, a gradient,
adapters switched off, dropout in training mode) runs the member's own forward.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
from torch.nn import functional as F

from rt_lightning.model.packed_linear import (
    MIN_PACKED_WIDTH,
    PackingBudget,
    packable_weight,
    packing_available,
    probe_inputs,
    restore_forwards,
    run_packed,
    swap_forward,
)

# HF's names for projections of one input, in the order the model calls them.
SIBLINGS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
_FUSED = "_rt_fused_sibling"


def _lora_parts(member: torch.nn.Module) -> Optional[tuple]:
    """(adapter, A, B) if ``member`` is a PEFT LoRA linear running one plain adapter, else None."""
    if not hasattr(member, "lora_A") or getattr(member, "merged", False) or member.disable_adapters:
        return None
    active = member.active_adapters
    if len(active) != 1 or active[0] not in member.lora_A or active[0] in getattr(member, "lora_variant", {}):
        return None
    adapter = active[0]
    a, b = member.lora_A[adapter], member.lora_B[adapter]
    if not (isinstance(a, torch.nn.Linear) and isinstance(b, torch.nn.Linear)) or a.bias is not None:
        return None
    return adapter, a, b


def _version_of(x: torch.Tensor) -> Optional[int]:
    # Inference-mode tensors keep no version counter; HF modules do not write into a projection's input in place.
    return None if x.is_inference() else x._version


class _Group:
    def __init__(self, members: list[torch.nn.Module], bases: list[torch.nn.Module], weights: list[torch.Tensor],
                 loras: list[Optional[tuple]]):
        self.members, self.bases, self.loras = members, bases, loras
        self.widths = [w.shape[0] for w in weights]
        self.packed = torch.ops.mkldnn._reorder_linear_weight(torch.cat(weights).detach(), 16)
        self.bias = None
        if any(base.bias is not None for base in bases):
            self.bias = torch.cat([base.bias.detach().to(w.dtype) if base.bias is not None
                                   else w.new_zeros(w.shape[0]) for base, w in zip(bases, weights)])
        self.lora_a = torch.cat([a.weight for _, a, _ in loras]).detach() if loras[0] else None
        self.ranks = [a.weight.shape[0] for _, a, _ in loras] if loras[0] else []
        self.input: Optional[torch.Tensor] = None
        self.outputs: list[Optional[torch.Tensor]] = []

    def runs_fused(self, x: torch.Tensor) -> bool:
        if x.dtype != self.packed.dtype or x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
            return False
        if not self.loras[0]:
            return True
        leader = self.members[0]
        return (not leader.disable_adapters and not leader.merged and list(leader.active_adapters) == [self.loras[0][0]]
                and all(not m.lora_dropout[adapter].training for m, (adapter, _, _) in zip(self.members, self.loras)))

    def compute(self, x: torch.Tensor) -> None:
        base = run_packed(x, self.packed, self.bias)
        outputs, start = [], 0
        if self.lora_a is not None:
            low = F.linear(x.to(self.lora_a.dtype), self.lora_a)  # PEFT casts the input to the adapter's dtype
            low_start = 0
        for index, width in enumerate(self.widths):
            out = base[..., start:start + width]
            if self.lora_a is not None:
                member, (adapter, _, b) = self.members[index], self.loras[index]
                rank = self.ranks[index]
                out = (out + F.linear(low[..., low_start:low_start + rank], b.weight, b.bias)
                       * member.scaling[adapter]).to(base.dtype)
                low_start += rank
            outputs.append(out)
            start += width
        self.input, self.version, self.outputs = x, _version_of(x), outputs

    def take(self, index: int, x: torch.Tensor) -> Optional[torch.Tensor]:
        if self.input is not x or _version_of(x) != self.version or self.outputs[index] is None:
            return None
        out, self.outputs[index] = self.outputs[index], None
        if all(o is None for o in self.outputs):
            self.input = None  # everything taken: let go of the input
        return out


def _fused_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    group, index, own_forward, _ = getattr(self, _FUSED)
    if args or kwargs or not group.runs_fused(x):
        return own_forward(x, *args, **kwargs)
    out = group.take(index, x) if index else None
    if out is None:
        group.compute(x)
        out = group.take(index, x)
    return out


def _group_of(parent: torch.nn.Module, names: tuple[str, ...], budget: PackingBudget) -> Optional[_Group]:
    members = [getattr(parent, name, None) for name in names]
    if any(m is None for m in members):
        return None
    loras = [_lora_parts(m) for m in members]
    bases = [m.base_layer if lora else m for m, lora in zip(members, loras)]
    weights = [packable_weight(base) for base in bases]
    if any(w is None for w in weights) or len({(w.shape[1], w.dtype) for w in weights}) != 1:
        return None
    adapted = {hasattr(m, "lora_A") for m in members}
    if len(adapted) != 1 or (adapted == {True} and None in loras):
        return None  # a mix of adapted and plain members, or an adapter set-up PEFT's plain path does not describe
    if loras[0] and len({(a.weight.dtype, adapter) for adapter, a, _ in loras}) != 1:
        return None
    if min(min(w.shape) for w in weights) < MIN_PACKED_WIDTH or not budget.take(*weights):
        return None
    return _Group(members, bases, weights, loras)


def _gives_member_bits(group: _Group) -> bool:
    for x in probe_inputs(group.packed.shape[1], group.packed.dtype):
        group.compute(x)
        fused = list(group.outputs)
        if not all(torch.equal(out, member(x)) for out, member in zip(fused, group.members)):
            return False
    group.input, group.outputs = None, []
    return True


def fuse_siblings(model: torch.nn.Module, budget: Optional[PackingBudget] = None) -> list[torch.nn.Module]:
    """Fuse each sibling group of ``model`` that gives its members' bits, while ``budget`` allows; returns the fused
    groups' base layers."""
    if not packing_available():
        return []
    budget = budget or PackingBudget()
    fused_bases = []
    for parent in list(model.modules()):
        for names in SIBLINGS:
            group = _group_of(parent, names, budget)
            if group is None or not _gives_member_bits(group):
                continue
            for index, member in enumerate(group.members):
                swap_forward(member, _FUSED, (group, index), _fused_forward)
            fused_bases.extend(group.bases)
    return fused_bases


def unfuse_siblings(model: torch.nn.Module) -> None:
    """Undo :func:`fuse_siblings`: members get back the forward they had; the concatenated weights are freed."""
    restore_forwards(model, _FUSED)


@contextmanager
def fused_for_inference(model: torch.nn.Module, enabled: bool = True,
                        budget: Optional[PackingBudget] = None) -> Iterator[list[torch.nn.Module]]:
    """Within the block, sibling groups run fused; yields the fused groups' base layers (packed here already)."""
    fused = fuse_siblings(model, budget) if enabled else []
    try:
        yield fused
    finally:
        if fused:
            unfuse_siblings(model)
