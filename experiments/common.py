"""Process-level setup shared by the entry points (the only place that sets jax.config)."""

import logging
import os

import jax


def init_runtime() -> None:
    """Logging, multi-host initialisation when launched with coordinator settings, and a
    persistent compilation cache so repeated runs skip recompiling."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        datefmt="%H:%M:%S", force=True)
    for noisy in ("absl", "orbax", "jax._src"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()
    cache = os.environ.get("VDM_JAX_COMPILATION_CACHE", os.path.expanduser("~/.cache/vdm_jax/xla"))
    if cache:
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 2.0)
