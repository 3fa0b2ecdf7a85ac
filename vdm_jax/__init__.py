"""vdm_jax: video diffusion models in JAX/Flax."""

from vdm_jax._xla_cpu import prefer_eigen_kernels

__version__ = "0.1.0"

prefer_eigen_kernels()
