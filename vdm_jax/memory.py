"""Keeping freed memory in the process, for CPU runs whose every step allocates gigabytes.

XLA's CPU runtime allocates one buffer for all of a program's temporaries at every call (3 GB
for the ModelScope UNet's training step in ``bench/vs_diffusers.py``) and frees it when the call
ends. glibc serves a block that large with a fresh ``mmap`` and unmaps it on free, so every call
faults every page in again: 0.9 million faults and 5.5 s of kernel time per step for that UNet
on a 2-core VM, where the step itself takes 4 s of wall time without them.

:func:`keep_freed_memory` stops that in two parts, both needed:

- glibc's main heap serves blocks of any size (no ``mmap``) and never hands its free top back
  to the kernel (no trim), so a freed temporaries buffer is there, faulted in, for the next call;
- jax runs CPU programs on the calling thread (``jax_cpu_enable_async_dispatch=False``). With
  async dispatch they run on a runtime thread whose allocations come from a per-thread arena,
  and such an arena maps any block too large for its 64 MiB heaps whatever the settings above.
  Leaving the other threads their own arenas keeps their small allocations from contending for
  one lock (limiting glibc to one arena instead slowed the causal VAE's convolutions by ~20%).

The heap may still grow by another temporaries buffer a few times in the first calls, when
other allocations have split the freed one (a program with 64 MiB of temporaries settles at 2-3
buffers' worth of heap within about five calls); from then on calls fault nothing new.

Measured on a 2-core AMD EPYC VM, jax only, median of 4 calls (``bench/vs_diffusers.py``'s
models): UNet3D training step 7.5 s -> 4.1 s, Latte's 14.3 s -> 12.4 s, causal VAE
encode+decode unchanged (3.6 s -> 3.5 s), the ``tiny`` demo's training step 277-335 ms -> 236 ms.
The cost: the process keeps its peak heap until it exits, and Python waits for each CPU
computation (which on a saturated CPU overlaps little anyway). Accelerator backends are not
touched: the dispatch setting is the CPU client's only.

The scripts (the allocator part on the CPU backend only) and the benchmarks apply it by
default; ``VDM_JAX_MALLOC_DEFAULTS=1`` opts out. Off glibc only the dispatch setting applies.
"""

import ctypes
import os

import jax

OPT_OUT_ENV = "VDM_JAX_MALLOC_DEFAULTS"
# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
# No mmap: every block of the main arena comes from its heap. Trim threshold SIZE_MAX (-1 as
# glibc's size_t): never hand the heap's free top back.
SETTINGS = ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
_state = {"keeping": False}


def _glibc():
    """The C library if it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError off glibc)
        return libc
    except (OSError, AttributeError):
        return None


def run_cpu_programs_inline() -> None:
    """CPU programs run on the calling thread; takes effect only before jax starts its CPU
    backend (the setting is read when the client is made)."""
    jax.config.update("jax_cpu_enable_async_dispatch", False)


def keep_freed_heap() -> bool:
    """Applies :data:`SETTINGS` to glibc's allocator; True if it took them."""
    libc = _glibc()
    if libc is not None:
        _state["keeping"] = all(libc.mallopt(p, value) == 1 for p, value in SETTINGS)
    return _state["keeping"]


def keep_freed_memory() -> bool:
    """Both parts of the module doc: call it before the first jax computation. True if the
    allocator took the settings."""
    run_cpu_programs_inline()
    return keep_freed_heap()


def opted_out() -> bool:
    return os.environ.get(OPT_OUT_ENV) == "1"


def keeping_freed_memory() -> bool:
    """Whether :func:`keep_freed_heap` has set up this process."""
    return _state["keeping"]
