"""Keep freed host memory for reuse instead of handing it back to the kernel after every large tensor.

glibc serves every allocation above 32 MB (less, at first) with a fresh ``mmap`` and returns it with ``munmap`` on
free, so each such tensor is page-faulted in anew, zeroed by the kernel, and then discarded. On this project's 2-core
CPU box, copying a 600 MB tensor took 173 ms fresh vs 25 ms into reused memory. The loss's logits, the largest
tensors, keep their own buffers (``model/loss.py``); for everything else, this setting added 6.7% to quickstart
training tokens/s (``bench/cpu_training.py``, variants ``now`` vs ``system_malloc``).

The price: resident memory stays at its peak instead of shrinking after it, and a fragmented heap can raise the peak
(freed holes below live blocks are kept). Measured on the quickstart (10 steps): 4.26 GB peak RSS vs 3.87 GB with
glibc's defaults. ``RT_LIGHTNING_SYSTEM_MALLOC=1`` keeps glibc's defaults.
"""

from __future__ import annotations

import ctypes
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
    libc = ctypes.CDLL(None)  # the C library the interpreter runs on (find_library would spawn ldconfig)
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):  # musl has no mallopt tuning
        return False
    # mallopt returns 1 on success. No mmap for allocations (they come from the heap and are reused after free), and
    # the heap's free top goes back to the kernel only beyond 2 GiB (2**31 - 1: the largest value the int takes).
    applied = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    if not applied:
        log.debug("mallopt refused; keeping the C library's allocation defaults")
    return applied
