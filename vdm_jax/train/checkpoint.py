"""Orbax checkpoints of a run: train state, Grain iterator state, config and a content digest.

Orbax has no checksum on array data, so each checkpoint carries a SHA-256 of the state's
arrays; restore verifies it and falls back to the previous good step with a warning.
"""

import hashlib
import logging
from pathlib import Path
from typing import Any

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


class IncompatibleCheckpointError(ValueError):
    """The workdir holds a checkpoint that the current config cannot restore."""


def state_digest(state) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes (this process's shards)."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        h.update(jax.tree_util.keystr(path).encode())
        for shard in _local_shards(leaf):
            h.update(f"{shard.dtype}{shard.shape}".encode())
            h.update(np.ascontiguousarray(shard).tobytes())
    return h.hexdigest()


def _local_shards(leaf) -> list[np.ndarray]:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        return [np.asarray(s.data) for s in leaf.addressable_shards if s.replica_id == 0]
    return [np.asarray(leaf)]


def _differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Keys whose values differ between two nested dicts, as ``a.b: saved -> current``."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<missing>"), current.get(key, "<missing>")
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif _normalise(a) != _normalise(b):
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _normalise(value):
    return list(value) if isinstance(value, tuple) else value


class Checkpointer:
    """One run's checkpoints under ``directory`` (``workdir/checkpoints``).

    Items: ``state`` (the TrainState pytree), ``data`` (Grain iterator state, optional) and
    ``meta`` (JSON: config, tokenizer, digest).
    """

    def __init__(self, directory: str | Path, *, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, meta: dict, data_iterator=None) -> None:
        """Saves asynchronously (device-to-host copy happens before this returns)."""
        items = {
            "state": ocp.args.StandardSave(state),
            "meta": ocp.args.JsonSave({**meta, "digest": state_digest(state), "step": step}),
        }
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def read_meta(self, step: int | None = None) -> dict:
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint under {self.directory}")
        restored = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return restored["meta"]

    def check_compatible(self, config: dict, sections=("model", "diffusion")) -> None:
        """Raises IncompatibleCheckpointError if the saved config differs in ``sections``."""
        saved = self.read_meta()["config"]
        diffs = []
        for name in sections:
            diffs += _differences(saved.get(name, {}), config.get(name, {}), f"{name}.")
        if diffs:
            raise IncompatibleCheckpointError(
                f"{self.directory} holds a checkpoint of a different model; it cannot resume "
                "with this config. Differences (checkpoint -> config):\n  "
                + "\n  ".join(diffs)
                + "\nUse a new --workdir, or the config the checkpoint was trained with."
            )

    def restore(self, state_template, data_iterator=None,
                step: int | None = None) -> tuple[Any, int]:
        """Restores the newest checkpoint whose digest verifies, newest first.

        ``state_template`` is a concrete or abstract (``jax.ShapeDtypeStruct``) state carrying
        the current shardings; ``data_iterator`` is restored in place when given.
        """
        self.manager.wait_until_finished()
        steps = [step] if step is not None else self.all_steps()[::-1]
        for candidate in steps:
            state = self._restore_step(candidate, state_template, data_iterator)
            if state is not None:
                return state, candidate
        raise FileNotFoundError(f"no valid checkpoint under {self.directory} (tried {steps})")

    def _restore_step(self, step: int, state_template, data_iterator):
        items = {"state": ocp.args.StandardRestore(state_template), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**items))
        except ValueError as err:
            raise IncompatibleCheckpointError(
                f"checkpoint step {step} under {self.directory} does not match the current "
                f"model's parameter shapes: {err}"
            ) from err
        if state_digest(restored["state"]) != restored["meta"]["digest"]:
            log.warning("checkpoint step %d failed its digest check; trying an older one", step)
            return None
        return restored["state"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
