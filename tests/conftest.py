"""Test setup: 8 fake CPU devices (set before jax is imported) and shared fixtures."""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import tempfile  # noqa: E402

import jax  # noqa: E402

# Many tests compile the same small programs (train steps, samplers); a persistent cache shared by
# the whole session (and by the subprocesses the script tests start) compiles each once.
_CACHE = os.environ.setdefault(
    "VDM_JAX_COMPILATION_CACHE", os.path.join(tempfile.gettempdir(), "vdm_jax_test_xla_cache")
)
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
