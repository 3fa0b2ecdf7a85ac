"""vdm_jax.memory: a CPU program's temporaries are reused between calls without page faults."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from vdm_jax import memory

ROOT = Path(__file__).resolve().parents[1]
# A child process calls a jitted program with 64 MiB of temporaries (an outer product that a
# matmul must read materialised) 16 times and prints the page faults of each of the last 8.
# In the first calls a kept heap can still grow by another 64 MiB now and then, when other
# allocations have split the freed block (glibc's mallinfo2 shows 94 MiB free in the heap
# before such a call): the test asks that most calls after those fault nothing new.
_CHILD = """
import json, resource, sys
from vdm_jax import memory
setup = sys.argv[1]
kept = getattr(memory, setup)() if setup else False
import jax, jax.numpy as jnp
x = jnp.linspace(0.0, 1.0, 4096)
w = jnp.outer(x, x[:16])
f = jax.jit(lambda x, w: (jnp.outer(x, x) @ w, jnp.outer(x, x).T @ w))
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    jax.block_until_ready(f(x, w))
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults[8:], "reported": memory.keeping_freed_memory()}))
"""


def _child(setup: str) -> dict:
    result = subprocess.run([sys.executable, "-c", _CHILD, setup], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.skipif(memory._glibc() is None, reason="glibc's allocator only")
def test_kept_memory_serves_the_next_call_without_page_faults():
    pages = (64 << 20) // 4096
    default, kept = (_child(s) for s in ("", "keep_freed_memory"))
    assert not default["kept"] and not default["reported"]
    assert kept["kept"] and kept["reported"]
    # mapped afresh at (nearly) every call: faults again (2 MB pages or 4 KB)
    assert statistics.median(default["faults"]) > pages // 100, default["faults"]
    # the previous calls' pages, reused
    assert statistics.median(kept["faults"]) < pages // 10, kept["faults"]


_SCRIPT_CHILD = """
import jax
from experiments.common import init_runtime
from vdm_jax import memory
init_runtime()
print(memory.keeping_freed_memory(), jax.config.read("jax_cpu_enable_async_dispatch"))
"""


@pytest.mark.parametrize("opt_out, want", [("0", "True False"), ("1", "False True")])
def test_scripts_keep_freed_memory_unless_opted_out(opt_out, want, tmp_path):
    env = {**os.environ, memory.OPT_OUT_ENV: opt_out,
           "VDM_JAX_COMPILATION_CACHE": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", _SCRIPT_CHILD], capture_output=True,
                            text=True, check=True, env=env, cwd=ROOT)
    assert result.stdout.split("\n")[-2] == want
