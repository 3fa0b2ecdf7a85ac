"""Keeping freed memory in the process, for CPU runs whose every step allocates gigabytes.

XLA's CPU runtime maps one buffer for all of a program's temporaries at every call (3 GB for
the ModelScope UNet's training step in ``bench/vs_diffusers.py``) and unmaps it when the call
ends, so each call faults every page in afresh (0.8 to 1 million faults and 1.5 to 2 s of
kernel time for that step). On a virtual machine that hands freed pages back to its host, a
page the host has taken back costs more again: on the 2-core VM of the README's benchmarks that
UNet step takes 2.8 s when calls come back to back and 3.8 to 4.0 s when they are 4 s apart.

:func:`retain_freed_memory` sets glibc's allocator to serve every allocation from its main heap
and never give memory back to the kernel, so each call reuses the pages of the one before: the
same step then takes 2.7 to 3.1 s either way. It has costs: the process holds its peak memory
until it exits, and with one arena the threads wait for each other's small allocations, which
slows convolution-heavy programs (the causal VAE's encode+decode of the benchmark, 1.9 -> 2.4 s).
So it is opt-in: the scripts call it when ``VDM_JAX_RETAIN_FREED_MEMORY=1``, and
``bench/vs_diffusers.py --retain-freed-memory`` times both frameworks under it. It does nothing
off glibc.
"""

import ctypes
import os

OPT_IN_ENV = "VDM_JAX_RETAIN_FREED_MEMORY"
# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
# One arena: a thread's own arena maps a block too large for its heap whatever M_MMAP_MAX says
# (XLA's temporaries are allocated on worker threads). No mmap: every block comes from the main
# heap. Trim threshold SIZE_MAX (-1 as glibc's size_t): never hand the heap's free top back.
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
_state = {"retaining": False}


def _glibc():
    """The C library if it is glibc, else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError off glibc)
        return libc
    except (OSError, AttributeError):
        return None


def retain_freed_memory() -> bool:
    """Applies :data:`SETTINGS` to glibc's allocator (see the module doc); True if it did.

    Call it before the first jax computation: threads that already hold an arena of their own
    keep it."""
    libc = _glibc()
    if libc is not None:
        _state["retaining"] = all(libc.mallopt(p, value) == 1 for p, value in SETTINGS)
    return _state["retaining"]


def retain_if_asked() -> bool:
    """:func:`retain_freed_memory` if ``VDM_JAX_RETAIN_FREED_MEMORY=1``; True if applied."""
    return os.environ.get(OPT_IN_ENV) == "1" and retain_freed_memory()


def retaining_freed_memory() -> bool:
    """Whether :func:`retain_freed_memory` has set up this process."""
    return _state["retaining"]
