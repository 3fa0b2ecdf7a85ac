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
retained = memory.retain_freed_memory() if sys.argv[1] == "retain" else False
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


def _child(mode: str, **env) -> dict:
    result = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                            check=True, env={**os.environ, **env})
    return json.loads(result.stdout)


@pytest.mark.skipif(memory._glibc() is None, reason="glibc's allocator only")
def test_retained_memory_is_reused_without_page_faults():
    pages = (256 << 20) // 4096
    default = _child("default")
    kept = _child("retain")
    assert not default["retained"] and not default["reported"]
    assert kept["retained"] and kept["reported"]
    assert default["faults"][1] > pages // 100  # mapped afresh: faults again (2 MB pages or 4 KB)
    assert kept["faults"][1] < pages // 1000  # the first round's pages, reused
    assert _child("retain", VDM_JAX_MALLOC_DEFAULTS="1")["retained"] is False
