"""Sharded training on a device mesh: where the train state and the batches live.

The config's ``mesh`` section (see ``vdm_jax.sharding.mesh``) picks a preset. Parameters, both
Adam moments and the EMA are split as the preset's rules say for each parameter's logical names
(so under ``fsdp`` each device holds a slice of every large tensor); counters and the RNG key are
replicated. Batches are split over the mesh axes of ``act_batch`` and assembled from each
process's slice with ``jax.make_array_from_process_local_data``. Without a mesh section (or with
``preset="none"``) the trainer keeps its single-device path.
"""

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from vdm_jax.sharding import (
    activate,
    context_parallel_of,
    logical_to_mesh_sharding,
    mesh_and_rules,
)
from vdm_jax.sharding.rules import Rules, batch_spec
from vdm_jax.train.state import TrainState

BATCH_KEYS = {"video": 5, "tokens": 2}  # what the diffusion step reads, and its rank


@dataclasses.dataclass(frozen=True)
class Placement:
    """A mesh, its rules, and the ``NamedSharding`` of every train-state leaf."""

    mesh: jax.sharding.Mesh
    rules: Rules
    state: Any  # a TrainState of NamedSharding
    context_parallel: str = "none"  # attention scheme over the context axis

    def active(self):
        """The context that model code is traced in: mesh, rules and attention scheme."""
        return activate(self.mesh, self.rules, self.context_parallel)

    def batch_sharding(self, ndim: int) -> NamedSharding:
        return NamedSharding(self.mesh, batch_spec(ndim, self.rules))

    def init_state(self, experiment) -> TrainState:
        """The initial state, created directly in its shards (no device holds it whole)."""
        with self.active():
            return jax.jit(experiment.init_state, out_shardings=self.state)()

    def jit_step(self, step_fn: Callable) -> Callable:
        """``step_fn`` jitted with the state's and batches' shardings, donating the state;
        traced with the mesh and rules active, so the models' ``shard()`` calls take effect."""
        batch = {k: self.batch_sharding(ndim) for k, ndim in BATCH_KEYS.items()}
        replicated = NamedSharding(self.mesh, PartitionSpec())
        jitted = jax.jit(step_fn, in_shardings=(self.state, batch),
                         out_shardings=(self.state, replicated), donate_argnums=(0,))

        def train_step(state, batch):
            with self.active():
                return jitted(state, batch)

        return train_step

    def to_device(self, batch: dict) -> dict:
        """This process's host batch -> global arrays split over the batch axes."""
        out = {}
        for key, ndim in BATCH_KEYS.items():
            local = np.asarray(batch[key])
            local = local.astype(jax.dtypes.canonicalize_dtype(local.dtype), copy=False)
            out[key] = jax.make_array_from_process_local_data(self.batch_sharding(ndim), local)
        return out


def _check_batch(config, mesh, rules) -> None:
    spec = batch_spec(1, rules)[0]
    axes = () if spec is None else (spec,) if isinstance(spec, str) else tuple(spec)
    ways = math.prod(mesh.shape[a] for a in axes)
    total = config.data.batch_size * jax.process_count()
    if total % ways:
        raise ValueError(
            f"the global batch ({config.data.batch_size} per process x {jax.process_count()} "
            f"processes = {total}) must divide by the {ways} batch shards (mesh axes {axes} of "
            f"shape {dict(mesh.shape)}); change data.batch_size or mesh.shape")


def make_placement(config, experiment) -> Placement | None:
    """The run's placement from ``config.mesh``, or ``None`` for the single-device path."""
    found = mesh_and_rules(config)
    if found is None:
        return None
    mesh, rules = found
    _check_batch(config, mesh, rules)

    def boxed_state(key):
        init_key, train_key = jax.random.split(key)
        return TrainState.create(experiment.init_boxed_params(init_key), experiment.optimizer(),
                                 train_key)

    abstract = jax.eval_shape(boxed_state, jax.random.PRNGKey(config.seed))
    return Placement(mesh, rules, logical_to_mesh_sharding(abstract, mesh, rules),
                     context_parallel_of(config))
