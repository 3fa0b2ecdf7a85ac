"""Parameter counts without allocating parameters."""

import flax.linen as nn
import jax


def count_params(model: nn.Module, *args, **kwargs) -> int:
    """Parameter count from ``jax.eval_shape`` of ``model.init`` (no memory is allocated);
    ``args`` may be arrays or ``jax.ShapeDtypeStruct``s."""
    shapes = jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a, **kwargs), *args)
    leaves = jax.tree.leaves(nn.meta.unbox(shapes["params"]))
    return int(sum(leaf.size for leaf in leaves))
