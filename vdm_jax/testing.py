"""Helpers for tests and benchmarks: parameters without paying for ``model.init`` compiles.

On CPU, XLA spends a noticeable time optimising the RNG of every parameter of ``model.init``;
tests that only need *some* weights fill them from numpy instead.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def random_params(model: nn.Module, *args, scale: float = 0.2, seed: int = 1, **kwargs):
    """``{"params": ...}`` (unboxed) with every leaf ``scale * N(0, 1)``, shapes from
    ``eval_shape``; GroupNorm affines and zero-initialised layers are random too, so a test
    compares every weight."""
    shapes = nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.key(0), *args, **kwargs)))
    leaves, tree = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    return tree.unflatten([jnp.asarray(scale * rng.standard_normal(v.shape), v.dtype)
                           for v in leaves])


def fast_init(model: nn.Module, *args, seed: int = 2, **kwargs):
    """``model.init`` (the real initialisers, unboxed) compiled at XLA optimisation level 0."""
    key = jax.random.key(seed)
    init = jax.jit(lambda k, *a: model.init(k, *a, **kwargs))
    compiled = init.lower(key, *args).compile({"xla_backend_optimization_level": 0})
    return nn.meta.unbox(compiled(key, *args))


def leaves_equal(a, b) -> bool:
    """Two pytrees of the same structure hold bit-identical leaves."""
    pairs = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(np.array_equal(x, y) for x, y in pairs)


def assert_same_value_and_grads(model: nn.Module, other: nn.Module, params, *inputs,
                                atol: float) -> None:
    """``model`` and ``other`` (the same weights, e.g. one rematerialised) give the same
    ``sum(out ** 2)`` on ``inputs`` (rtol 1e-5) and gradients wrt ``params`` (rtol 1e-4,
    ``atol``)."""
    def value_and_grads(m):
        loss = lambda p: jnp.sum(jnp.square(m.apply(p, *inputs)))  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    (value, want), (got_value, got) = value_and_grads(model), value_and_grads(other)
    np.testing.assert_allclose(got_value, value, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=atol), got, want)
