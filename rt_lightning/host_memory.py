"""Keep freed host memory for reuse instead of handing it back to the kernel after every large tensor.

glibc serves every allocation above 32 MB (less, at first) with a fresh ``mmap`` and returns it with ``munmap`` on
free. A CPU training step of Gemma-3-270M allocates and frees several such tensors per layer and per loss chunk
(logits alone: 256 positions × 262k tokens × 4 bytes), so each one is page-faulted in anew, zeroed by the kernel,
and then discarded. Measured on this project's 2-core CPU box: copying a 600 MB tensor 173 ms → 25 ms, a fp32
``log_softmax`` over the logits 216 → 52 ms, and quickstart training steps 1.15-1.2× faster (``bench/cpu_training.py``).

The price is that the process's resident memory stays at its peak instead of shrinking after the peak has passed;
the peak itself does not grow. ``RT_LIGHTNING_SYSTEM_MALLOC=1`` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_MAX = -4


def reuse_freed_memory() -> bool:
    """Serve large allocations from the heap and keep freed heap memory (glibc only); returns whether it applied."""
    if os.environ.get("RT_LIGHTNING_SYSTEM_MALLOC") == "1" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):  # musl has no mallopt tuning
        return False
    # mallopt returns 1 on success. No mmap for allocations (they come from the heap and are reused after free), and
    # the heap's free top goes back to the kernel only beyond 2 GiB (2**31 - 1: the largest value the int takes).
    applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not applied:
        log.debug("mallopt refused; keeping the C library's allocation defaults")
    return applied
