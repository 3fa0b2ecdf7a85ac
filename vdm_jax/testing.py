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
