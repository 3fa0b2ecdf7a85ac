"""Process-level setup shared by the entry points (the only place that sets jax.config)."""

import logging
import os

import jax

from vdm_jax import memory


def init_runtime(**distributed) -> None:
    """Freed memory kept in the process on CPU (:mod:`vdm_jax.memory`; opt out with
    ``VDM_JAX_MALLOC_DEFAULTS=1``), logging, multi-host initialisation
    (``init_distributed(**distributed)``), and a persistent compilation cache so repeated runs
    skip recompiling."""
    if not memory.opted_out():
        memory.run_cpu_programs_inline()  # before the backend starts
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    multi_process = init_distributed(**distributed)
    if not memory.opted_out() and jax.default_backend() == "cpu":
        memory.keep_freed_heap()
    cache = os.environ.get("VDM_JAX_COMPILATION_CACHE", os.path.expanduser("~/.cache/vdm_jax/xla"))
    if multi_process and jax.default_backend() == "cpu":
        # Only process 0 writes cache entries and on CPU the other processes' keys differ, so
        # process 0 would load programs that the others still compile; their first collective
        # would then wait past Gloo's fixed 30 s connection timeout.
        cache = ""
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)


def init_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, *, auto: bool = False) -> bool:
    """Joins a multi-process run; must come before anything touches a JAX device.

    Explicit settings (all three together) start ``jax.distributed.initialize`` with them;
    ``auto`` (or a ``JAX_COORDINATOR_ADDRESS`` environment variable) lets JAX detect them from the
    cluster environment (SLURM, Open MPI, Cloud TPU, ...). Without either this is a
    single-process run. Processes other than 0 then log warnings only. Returns whether a
    multi-process runtime was initialised.
    """
    explicit = {"coordinator_address": coordinator_address, "num_processes": num_processes,
                "process_id": process_id}
    given = sorted(k for k, v in explicit.items() if v is not None)
    if given and auto:
        raise ValueError(f"--distributed detects the coordinator settings from the environment; "
                         f"do not also pass --{', --'.join(given)}")
    if given:
        _check_explicit(coordinator_address, num_processes, process_id, given)
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif auto or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()
    else:
        return False
    if jax.process_index() != 0:
        logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger(__name__).info("multi-host run: %d processes, %d devices (%d local)",
                                     jax.process_count(),
                                     jax.device_count(), jax.local_device_count())
    return True


def _check_explicit(address, num_processes, process_id, given) -> None:
    if len(given) != 3:
        raise ValueError("a multi-process launch needs all of --coordinator_address, "
                         f"--num_processes and --process_id; got only --{', --'.join(given)}")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator_address must be host:port, got {address!r}")
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id must be in [0, --num_processes={num_processes}), "
                         f"got {process_id}")
