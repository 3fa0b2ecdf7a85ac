"""An XLA CPU setting applied when vdm_jax is imported (before jax starts its CPU backend).

jaxlib 0.10 hands every convolution and every lone matmul on CPU to YNNPACK. Its convolutions
run those of our autoencoders and UNets at about half the speed of XLA's own (Eigen) ones on
x86 (``bench/conv_cpu.py``). With Eigen's matmuls too, Latte's training step of
``bench/vs_diffusers.py`` runs 1.06x faster and the ModelScope UNet's forward 1.13x, the rest
unchanged within noise (``bench/xla_cpu_flags.py``, 2-core x86). YNNPACK keeps the matmuls it
fuses with their neighbours (a LayerNorm before a projection, the softmax around attention's).
jaxlib 0.11's YNNPACK convolutions are faster than both, so only 0.10 is changed. Results are
unchanged up to float rounding.

The flag goes into ``XLA_FLAGS``, which jax reads when it first starts a backend, so it takes
effect only if vdm_jax is imported before the first jax computation. It is left out when
``XLA_FLAGS`` already sets the YNN fusion types, or when ``VDM_JAX_XLA_DEFAULTS=1``.
"""

import importlib.metadata
import os

EIGEN_KERNELS = ("--xla_cpu_experimental_ynn_fusion_type="
                 "-individual_convolution,-individual_dot")
SLOWER_YNN_RELEASES = ((0, 10),)  # jaxlib (major, minor) releases measured slower
KEEP_DEFAULTS_ENV = "VDM_JAX_XLA_DEFAULTS"


def jaxlib_release() -> tuple[int, int] | None:
    """``(major, minor)`` of the installed jaxlib, None if it cannot be read."""
    try:
        major, minor = importlib.metadata.version("jaxlib").split(".")[:2]
        return int(major), int(minor)
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return None


def cpu_flags_to_add(xla_flags: str, release: tuple[int, int] | None, keep_defaults: bool) -> str:
    """The flag to append to ``xla_flags`` ("" for none)."""
    if keep_defaults or release not in SLOWER_YNN_RELEASES or "ynn_fusion_type" in xla_flags:
        return ""
    return EIGEN_KERNELS


def prefer_eigen_kernels() -> None:
    """Appends :data:`EIGEN_KERNELS` to ``XLA_FLAGS`` where it helps (see module doc)."""
    current = os.environ.get("XLA_FLAGS", "")
    extra = cpu_flags_to_add(current, jaxlib_release(), os.environ.get(KEEP_DEFAULTS_ENV) == "1")
    if extra:
        os.environ["XLA_FLAGS"] = f"{current} {extra}".strip()
