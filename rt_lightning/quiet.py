"""Filters for library notices a user of rt_lightning cannot act on, so that ours stand out.

Filtered: deprecation and future warnings raised inside the libraries we build on (they concern how *we* call them,
and are fixed here, not by the user), bitsandbytes' notice that an optional CPU kernel package is missing (we never
use that kernel: 4-bit layers run from dense copies on CPU), Lightning's advertising tips, and its model summary's
note that it cannot size bf16-mixed weights. Not filtered: every warning raised from rt_lightning's own code or the
user's, and everything else the libraries say.
``RT_LIGHTNING_VERBOSE=1`` turns the filters off.
"""

from __future__ import annotations

import logging
import os
import warnings

LIBRARIES = ("transformers", "peft", "bitsandbytes", "lightning", "lightning_fabric", "pytorch_lightning", "torch",
             "torchmetrics", "jsonargparse", "datasets", "huggingface_hub", "accelerate")
"""Packages whose own deprecation/future warnings are hidden."""

MESSAGES = (
    r".*litmodels.*",  # Lightning's tip to install its cloud model registry
    r".*litlogger.*",
    r".*`is_gradient_checkpointing` is deprecated.*",  # raised from transformers for PEFT's call
    r"Precision .* is not supported by the model summary",  # only its size estimate; the counts above it are right
)
"""Warning messages (regular expressions, matched at the start) hidden wherever they are raised."""

LOG_MESSAGES = {
    "bitsandbytes.backends.cpu.ops": ("Failed to load CPU gemm_4bit_forward from kernels-community",),
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:",),
    "lightning.fabric.utilities.rank_zero": ("💡 Tip:",),
}
"""Logger name (exactly the emitting one: filters do not apply to child loggers) → starts of records hidden."""


class _DropMessages(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).lstrip().startswith(self.prefixes)


def quiet_library_notices() -> None:
    """Install the filters (idempotent). Call it before the libraries are imported: some warn at import time."""
    if os.environ.get("RT_LIGHTNING_VERBOSE"):
        return
    for library in LIBRARIES:
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", category=category, module=rf"{library}(\.|$)")
    for message in MESSAGES:
        warnings.filterwarnings("ignore", message=message)
    for name, prefixes in LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(prefixes))
