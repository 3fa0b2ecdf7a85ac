"""Orbax checkpoints of a run: train state, Grain iterator state, config and a content digest.

Orbax has no checksum on array data, so each checkpoint carries a digest of the state's
arrays; restore verifies it and falls back to the previous good step with a warning. The digest
does not depend on how the arrays are sharded, so a checkpoint written by several processes on
one mesh verifies when restored by one process on another.

Every process of a multi-host run calls ``save`` and ``restore`` (Orbax coordinates them; each
writes its own shards and its own Grain iterator state). Restoring with a different number of
processes continues the input pipeline at the same global position of its shuffled stream.
"""

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from vdm_jax.data.pipeline import state_for_process_count

log = logging.getLogger(__name__)


def _data_file_name(process_index: int, process_count: int) -> str:
    """Grain's name for one process's iterator state inside a checkpoint."""
    return f"process_{process_index}-of-{process_count}.json"


class IncompatibleCheckpointError(ValueError):
    """The workdir holds a checkpoint that the current config cannot restore."""


def state_digest(state) -> str:
    """SHA-256 over every leaf's path, dtype, shape and a position-keyed checksum of its bits.

    Each process sums hashes of (element position, element bits) over the shards it holds
    (one replica of each); the sums add up across processes, so the digest is the same for any
    sharding and process count (every process of a multi-host run must call it).
    """
    leaves = jax.tree_util.tree_leaves_with_path(state)
    sums = np.zeros((len(leaves), 2), np.uint32)
    for i, (_, leaf) in enumerate(leaves):
        sums[i] = _leaf_checksum(leaf)
    if jax.process_count() > 1:
        sums = np.sum(multihost_utils.process_allgather(sums), axis=0, dtype=np.uint32)
    h = hashlib.sha256()
    for (path, leaf), pair in zip(leaves, sums, strict=True):
        h.update(f"{jax.tree_util.keystr(path)}{jnp.result_type(leaf)}{np.shape(leaf)}".encode())
        h.update(pair.astype("<u4").tobytes())
    return h.hexdigest()


def _leaf_checksum(leaf) -> np.ndarray:
    """Two uint32 sums (wrapping) of hashed (position, bits) over this process's shards."""
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    if not isinstance(leaf, jax.Array):
        leaf = np.asarray(leaf)
        shards = [(leaf, (slice(None),) * leaf.ndim)] if jax.process_index() == 0 else []
    else:
        shards = [(np.asarray(s.data), s.index) for s in leaf.addressable_shards
                  if s.replica_id == 0]
    total = np.zeros(2, np.uint32)
    for data, index in shards:
        total += _shard_checksum(data, index, np.shape(leaf))
    return total


def _shard_checksum(data: np.ndarray, index: tuple, shape: tuple) -> np.ndarray:
    bits = np.ascontiguousarray(data)
    if bits.dtype == np.bool_:
        bits = bits.astype(np.uint8)
    unsigned = {1: np.uint8, 2: np.uint16}.get(bits.dtype.itemsize, np.uint32)
    bits = bits.reshape(-1).view(unsigned).reshape(*data.shape, -1).astype(np.uint32)
    position = np.zeros((1,) * bits.ndim, np.uint32)
    for axis, (where, size) in enumerate(zip(index, shape, strict=True)):
        start = where.start or 0
        coords = np.arange(start, start + data.shape[axis], dtype=np.uint32)
        position = position * np.uint32(size) + np.expand_dims(
            coords, [a for a in range(bits.ndim) if a != axis])
    words = np.arange(bits.shape[-1], dtype=np.uint32)
    position = position * np.uint32(bits.shape[-1]) + words
    mixed = _fmix32(bits ^ _fmix32(position + np.uint32(0x9E3779B9)))
    return np.array([np.sum(mixed, dtype=np.uint32),
                     np.sum(_fmix32(mixed + position), dtype=np.uint32)], np.uint32)


def _fmix32(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser (wrapping uint32 arithmetic)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


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
        self.directory = Path(directory).resolve()
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
        data_files = self._data_files(step)
        same_layout = _data_file_name(jax.process_index(), jax.process_count()) in data_files
        if data_iterator is not None and same_layout:
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
        if data_iterator is not None and not same_layout:
            self._move_data_position(step, data_files, data_iterator)
        return restored["state"]

    def _data_files(self, step: int) -> dict[str, Path]:
        """The Grain iterator states of checkpoint ``step``, one file per process that wrote it."""
        directory = self.directory / str(step) / "data"
        if not directory.is_dir():
            return {}
        return {f.name: f for f in directory.glob("process_*-of-*.json")}

    def _move_data_position(self, step: int, data_files: dict[str, Path], data_iterator) -> None:
        """Positions ``data_iterator`` where the processes that wrote ``step`` left off."""
        if not data_files:
            raise FileNotFoundError(f"checkpoint step {step} under {self.directory} holds no "
                                    "input-pipeline state to resume from")
        counts = {int(name.rsplit("-of-", 1)[1].removesuffix(".json")) for name in data_files}
        saved = [json.loads(data_files[_data_file_name(i, n)].read_text())
                 for n in counts for i in range(n)]
        data_iterator.set_state(state_for_process_count(saved, jax.process_count()))
        log.warning("checkpoint step %d was written by %s processes and this run has %d: the "
                    "input pipeline continues at the same global position of its stream",
                    step, "/".join(map(str, sorted(counts))), jax.process_count())

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
