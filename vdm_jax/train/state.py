"""The train state: one pytree holding everything a step reads and writes."""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    """Step counter, parameters, optimizer state, EMA parameters and the root RNG key.

    ``nonfinite`` counts skipped steps (non-finite loss or gradients), ``nonfinite_streak``
    the ones in a row, so the loop can stop a diverged run with a clear message.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any
    rng: jax.Array
    nonfinite: jax.Array
    nonfinite_streak: jax.Array

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation, rng: jax.Array) -> "TrainState":
        """A fresh state at step 0; the EMA starts equal to the parameters."""
        # Distinct buffers for every leaf: the jitted step donates the whole state.
        def zero():
            return jnp.zeros((), jnp.int32)

        return cls(
            step=zero(),
            params=params,
            opt_state=tx.init(params),
            ema_params=jax.tree.map(jnp.copy, params),
            rng=rng,
            nonfinite=zero(),
            nonfinite_streak=zero(),
        )


def ema_decay_at(step: jax.Array, max_decay: float) -> jax.Array:
    """EMA decay with warm-up, ``min(max_decay, (1 + step) / (10 + step))``.

    Short runs (the CPU demo trains ~1000 steps) would otherwise sample from an average that is
    still mostly the random initialisation.
    """
    step = step.astype(jnp.float32)
    return jnp.minimum(max_decay, (1.0 + step) / (10.0 + step))


def update_ema(ema_params, params, decay: jax.Array):
    """``ema ← decay · ema + (1 − decay) · params``, leaf by leaf."""
    return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)
