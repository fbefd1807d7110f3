import subprocess
import sys

import pytest

# In a child process: the setting is process-wide and must not change how the rest of the suite allocates.
# mallinfo2().hblkhd is the bytes glibc holds in mmapped blocks; a 64 MiB tensor lands there unless the setting holds.
PROBE = """
import ctypes, sys
from rt_lightning.host_memory import reuse_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
applied = reuse_freed_memory()
before = libc.mallinfo2().hblkhd
block = bytearray(64 * 2**20)
print(applied, libc.mallinfo2().hblkhd - before >= 64 * 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("system_malloc, expected", [("0", "True False"), ("1", "False True")])
def test_large_allocations_leave_mmap_unless_turned_off(system_malloc, expected):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={"RT_LIGHTNING_SYSTEM_MALLOC": system_malloc, "PATH": ""})
    assert out.stdout.split()[-2:] == expected.split()
