"""vdm_jax.memory: freed memory stays in the process, so reusing it faults no pages in."""

import json
import os
import subprocess
import sys

import pytest

from vdm_jax import memory

# A child process allocates, touches and frees 256 MiB twice; it prints the page faults of the
# second round. glibc maps a block that large afresh each time, unless memory is retained.
_CHILD = """
import ctypes, json, resource, sys
from vdm_jax import memory
retained = memory.retain_if_asked()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"retained": retained, "faults": faults,
                  "reported": memory.retaining_freed_memory()}))
"""


def _child(asked: str) -> dict:
    env = {**os.environ, memory.OPT_IN_ENV: asked}
    result = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                            check=True, env=env)
    return json.loads(result.stdout)


@pytest.mark.skipif(memory._glibc() is None, reason="glibc's allocator only")
def test_retained_memory_is_reused_without_page_faults():
    pages = (256 << 20) // 4096
    default = _child("0")
    kept = _child("1")
    assert not default["retained"] and not default["reported"]
    assert kept["retained"] and kept["reported"]
    assert default["faults"][1] > pages // 100  # mapped afresh: faults again (2 MB pages or 4 KB)
    assert kept["faults"][1] < pages // 1000  # the first round's pages, reused
