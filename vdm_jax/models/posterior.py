"""Diagonal Gaussian posterior of a VAE encoder, for channels-last tensors of any rank.

The encoder emits ``2 * c`` channels, the mean then the log-variance (the layout of diffusers'
``DiagonalGaussianDistribution``, which splits channel dim 1 where we split the last). The
posterior is a pytree, so it can be returned from ``model.apply`` and crosses ``jax.jit``.
"""

import flax.struct
import jax
import jax.numpy as jnp

# diffusers clamps the log-variance to this range before exponentiating.
LOGVAR_RANGE = (-30.0, 20.0)


@flax.struct.dataclass
class DiagonalGaussian:
    """``N(mean, exp(logvar))`` per element; ``mean``/``logvar`` ``(b, ..., c)``."""

    mean: jax.Array
    logvar: jax.Array

    @classmethod
    def from_moments(cls, moments: jax.Array) -> "DiagonalGaussian":
        """Splits ``(b, ..., 2c)`` into mean and (clamped) log-variance, each ``(b, ..., c)``."""
        if moments.shape[-1] % 2:
            raise ValueError(f"moments need an even channel count (mean, logvar), got "
                             f"shape {moments.shape}")
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean, jnp.clip(logvar, *LOGVAR_RANGE))

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    @property
    def var(self) -> jax.Array:
        return jnp.exp(self.logvar)

    def sample(self, key: jax.Array) -> jax.Array:
        """Reparameterised draw ``mean + std * eps``."""
        eps = jax.random.normal(key, self.mean.shape, jnp.float32).astype(self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> jax.Array:
        return self.mean

    def kl(self, other: "DiagonalGaussian | None" = None) -> jax.Array:
        """``KL(self || other)`` (``other`` defaults to ``N(0, I)``), summed over all but the
        batch axis: ``(b,)``."""
        if other is None:
            terms = jnp.square(self.mean) + self.var - 1.0 - self.logvar
        else:
            terms = (jnp.square(self.mean - other.mean) / other.var + self.var / other.var
                     - 1.0 - self.logvar + other.logvar)
        return 0.5 * _sum_but_batch(terms)

    def nll(self, x: jax.Array) -> jax.Array:
        """Negative log-likelihood of ``x`` (same shape as ``mean``), summed per example."""
        terms = jnp.log(2.0 * jnp.pi) + self.logvar + jnp.square(x - self.mean) / self.var
        return 0.5 * _sum_but_batch(terms)


def _sum_but_batch(x: jax.Array) -> jax.Array:
    return jnp.sum(x.astype(jnp.float32), axis=tuple(range(1, x.ndim)))
