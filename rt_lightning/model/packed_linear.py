"""bf16 linear layers on CPU from weights reordered once for oneDNN, for generation.

``F.linear`` on a bf16 weight hands oneDNN the weight in PyTorch's row-major layout at every call. Reordered once into
oneDNN's blocked layout (the packing ``torch.compile``'s freezing pass does for CPU), the same product runs faster and
gives the same bits: on this project's 2-core AVX-512-BF16 CPU, Gemma-3-270M's 262k-token head on 16 rows took
33.3 ms per decode step plain and 20.6 ms packed, the layers' projections ~1.4x less time each (``bench/cpu_eval.py``
shows the whole effect). Generation is most of a CPU evaluation, and the weights are frozen there, so a packed copy
made once per ``generate`` call pays for itself within a step or two.

Exactness is checked, not assumed: each weight shape is packed only if, on a probe input, the packed product equals
``F.linear``'s bit for bit on this CPU; otherwise that layer keeps the plain path. So greedy tokens stay those of the
plain model. The cost is memory while generating: one more bf16 copy of each packed weight (freed at the end).

Only ``torch.nn.Linear`` layers whose forward is the plain one, or the dense copies of frozen 4-bit layers
(:mod:`rt_lightning.model.dense4bit`), are packed; LoRA's low-rank factors are too thin to gain and stay as they are.
"""

from __future__ import annotations

import functools
import logging
import types
from contextlib import contextmanager
from typing import Collection, Iterator, Optional

import torch

from rt_lightning.model.dense4bit import _DENSE

log = logging.getLogger(__name__)

_PACKED = "_rt_packed_linear"
# Below this width a product is dominated by call overhead, not by the weight's layout (LoRA's rank-r factors).
MIN_PACKED_WIDTH = 128


@functools.lru_cache(maxsize=None)
def packing_available() -> bool:
    """oneDNN's bf16 weight packing exists in this torch build *and* runs on this CPU (it needs avx512bw/vl/dq or
    avx_ne_convert; elsewhere ``_reorder_linear_weight`` raises for bf16), probed once."""
    mkldnn = getattr(torch.ops, "mkldnn", None)
    if not (torch.backends.mkldnn.is_available() and hasattr(mkldnn, "_reorder_linear_weight")
            and hasattr(mkldnn, "_linear_pointwise")):
        return False
    try:
        mkldnn._reorder_linear_weight(torch.zeros(16, 16, dtype=torch.bfloat16), 16)
    except RuntimeError as err:  # the CPU cannot run the bf16 path: plain linears, as without oneDNN
        log.info("Packed bf16 linears are off on this CPU (%s)", str(err).splitlines()[0][:160])
        return False
    return True


def _available_memory() -> Optional[int]:
    try:  # Linux; elsewhere the budget is unlimited
        with open("/proc/meminfo") as fh:
            return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


class PackingBudget:
    """Bytes packed copies may take: half the memory available when packing starts (after any dense 4-bit copies
    are made), so a model too large for two copies runs (partly) plain instead of running the machine out of memory."""

    def __init__(self, fraction: float = 0.5):
        self.fraction, self.refused = fraction, 0
        self.left: Optional[int] = None
        self._started = False

    def take(self, *tensors: torch.Tensor) -> bool:
        """Whether packed copies of ``tensors`` fit; if they do, their bytes are taken from what is left."""
        if not self._started:  # measured at the first request, not when the budget is made
            available, self._started = _available_memory(), True
            self.left = None if available is None else int(available * self.fraction)
        nbytes = sum(t.numel() * t.element_size() for t in tensors)
        if self.left is not None and nbytes > self.left:
            self.refused += 1
            return False
        if self.left is not None:
            self.left -= nbytes
        return True

    def report(self) -> None:
        if self.refused:
            log.info("%d linear layers run unpacked: their packed copies would exceed half the available memory",
                     self.refused)


def packable_weight(module: torch.nn.Module) -> Optional[torch.Tensor]:
    """The dense bf16 CPU weight ``module``'s forward multiplies by, or None if it is not a plain linear product."""
    if not isinstance(module, torch.nn.Linear):
        return None
    dense = getattr(module, _DENSE, None)
    if dense is not None:  # a frozen 4-bit layer running from its dense copy
        weight = dense
    elif type(module).forward is torch.nn.Linear.forward and "forward" not in vars(module):
        weight = module.weight
    else:
        return None
    if (weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or weight.dim() != 2
            or min(weight.shape) < MIN_PACKED_WIDTH):
        return None
    return weight


def run_packed(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def probe_inputs(width: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Two decode-shaped rows and a prompt-shaped block: oneDNN may pick different kernels for each. (Contiguous:
    ``linear`` on a strided 3-D bf16 input copies the weight per row, seconds for a 262k-token head.)"""
    block = torch.randn(2, 5, width, generator=torch.Generator().manual_seed(0)).to(dtype)
    return block[:, :1].contiguous(), block


def _gives_plain_bits(weight: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> bool:
    return all(torch.equal(run_packed(x, packed, bias), torch.nn.functional.linear(x, weight, bias))
               for x in probe_inputs(weight.shape[1], weight.dtype))


def _packed_forward(self, x: torch.Tensor) -> torch.Tensor:
    packed, bias, plain_forward, _ = getattr(self, _PACKED)
    if x.dtype != torch.bfloat16 or x.device.type != "cpu" or (torch.is_grad_enabled() and x.requires_grad):
        return plain_forward(x)  # outside what was checked (another dtype, a backward): the layer's own path
    return run_packed(x, packed, bias)


def pack_linears(model: torch.nn.Module, skip: Collection[torch.nn.Module] = (),
                 budget: Optional[PackingBudget] = None) -> int:
    """Give each eligible linear layer of ``model`` (but those in ``skip``) a packed copy of its weight, while
    ``budget`` allows; returns how many got one."""
    if not packing_available():
        return 0
    budget = budget or PackingBudget()
    checked: dict[tuple, bool] = {}  # (shape, has bias) -> whether packing is exact on this CPU
    skipped = {id(module) for module in skip}
    count = 0
    for module in model.modules():
        weight = packable_weight(module)
        if weight is None or getattr(module, _PACKED, None) is not None or id(module) in skipped \
                or not budget.take(weight):
            continue
        bias = None if module.bias is None else module.bias.detach().to(weight.dtype)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), 16)
        key = (tuple(weight.shape), bias is not None)
        if key not in checked:
            checked[key] = _gives_plain_bits(weight.detach(), packed, bias)
        if not checked[key]:
            continue
        swap_forward(module, _PACKED, (packed, bias), _packed_forward)
        count += 1
    return count


def swap_forward(module: torch.nn.Module, attribute: str, state: tuple, forward) -> None:
    """Give ``module`` the instance method ``forward``; ``attribute`` keeps ``state``, the forward it had (called
    where the new one does not apply) and its instance forward if it had one (a dense 4-bit copy's), restored by
    :func:`restore_forwards`."""
    setattr(module, attribute, (*state, module.forward, vars(module).get("forward")))
    module.forward = types.MethodType(forward, module)


def restore_forwards(model: torch.nn.Module, attribute: str) -> None:
    """Undo :func:`swap_forward` on every module of ``model`` that has ``attribute`` (freeing what it held)."""
    for module in model.modules():
        state = getattr(module, attribute, None)
        if state is None:
            continue
        delattr(module, attribute)
        del module.forward
        if state[-1] is not None:
            module.forward = state[-1]


def unpack_linears(model: torch.nn.Module) -> None:
    """Undo :func:`pack_linears`: each layer gets back the forward it had, and the packed copies are freed."""
    restore_forwards(model, _PACKED)


@contextmanager
def packed_for_inference(model: torch.nn.Module, enabled: bool = True, skip: Collection[torch.nn.Module] = (),
                         budget: Optional[PackingBudget] = None) -> Iterator[int]:
    """Within the block, eligible bf16 CPU linear layers (but those in ``skip``) run from packed weights, as far as
    ``budget`` allows; yields how many do."""
    count = pack_linears(model, skip, budget) if enabled else 0
    if budget is not None:
        budget.report()
    try:
        yield count
    finally:
        if count:
            unpack_linears(model)
