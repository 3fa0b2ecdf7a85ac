"""Dense layers whose kernels carry one logical axis name per axis, at any rank."""

from collections.abc import Callable

import flax.linen as nn
import jax.numpy as jnp

Dtype = jnp.dtype


def logical_init(names, init):
    """``init`` carrying one logical axis name per parameter axis."""
    return nn.with_logical_partitioning(init, names)


class DenseND(nn.Module):
    """Dense from the last ``len(names) - len(features)`` axes of ``x`` to ``features`` axes.

    Unlike ``nn.DenseGeneral``, which initialises a flattened 2D kernel and reshapes it, the
    kernel is created at full rank, so its logical names (one per axis) also hold under a mesh.
    ``init`` defaults to LeCun normal with the fan-in over all input axes.
    """

    features: tuple[int, ...]
    names: tuple[str | None, ...]
    init: Callable | None = None
    bias_names: tuple[str | None, ...] | None = None
    dtype: Dtype | None = None
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        n_in = len(self.names) - len(self.features)
        axes = tuple(range(len(self.names)))
        init = self.init or nn.initializers.lecun_normal(in_axis=axes[:n_in],
                                                         out_axis=axes[n_in:])
        kernel = self.param("kernel", logical_init(self.names, init),
                            x.shape[x.ndim - n_in:] + self.features, jnp.float32)
        if not self.use_bias:
            x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
            return jnp.tensordot(x, kernel, n_in)
        bias = self.param("bias", logical_init(self.bias_names or self.names[n_in:],
                                        nn.initializers.zeros), self.features, jnp.float32)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return jnp.tensordot(x, kernel, n_in) + bias


def dense(features, names, name, dtype, init=None, bias_names=None):
    """A :class:`DenseND` to ``features`` (an int or a tuple of output sizes)."""
    features = (features,) if isinstance(features, int) else tuple(features)
    return DenseND(features, names, init, bias_names, dtype, name=name)
