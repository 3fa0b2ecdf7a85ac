"""Grain input pipeline: source -> shuffled, per-process, tokenized, batched model inputs.

``MapDataset.source`` -> ``shuffle(seed)`` (a new permutation each epoch) -> per-process slice ->
``repeat(num_epochs)`` -> per-record map (tokenize, keep numeric labels) -> ``to_iter_dataset`` ->
drop unreadable (``None``) records, counted -> ``batch`` -> uint8 video to float32 in [-1, 1].

Batches are dicts of numpy arrays::

    {"video": float32 (b, t, h, w, 3) in [-1, 1], "tokens": int32 (b, L), <label>: (b,) ...}

Records of a latent cache (``vdm_jax.data.latents``) carry float32 ``latents`` instead; they
arrive as ``video`` unchanged, ``(b, t', h', w', c')``.

Strings (the caption and any other non-numeric field) are kept out of batches so a batch can go
to devices as one pytree; ``WordTokenizer.decode`` recovers the caption from ``tokens``. Numeric
scalar fields of the records (e.g. the shapes labels) are kept as int32 / float32 ``(b,)``.

The iterator is checkpointable (``get_state`` / ``set_state``, or Orbax with
``grain.checkpoint.CheckpointSave`` / ``CheckpointRestore``); the dropped-record counter is part
of its state, so it survives a restore (``skipped_count(iterator)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grain
import jax
import numpy as np
from absl import flags

from vdm_jax.data import video_io
from vdm_jax.data.tokenizer import WordTokenizer

_SKIPPED_KEY = "vdm_skipped_records"


class _ToModelRecord:
    """Record -> ``{"video": uint8 (t, h, w, 3), "tokens": int32 (L,), <numeric labels>}``.

    A class rather than a closure so it pickles into multiprocessing workers.
    """

    def __init__(self, tokenizer: WordTokenizer):
        self.tokenizer = tokenizer

    def __call__(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if isinstance(record, Mapping) and {"latents", "caption"} <= set(record):
            return self._latent_record(record)
        if not isinstance(record, Mapping) or not {"video", "caption"} <= set(record):
            got = sorted(record) if isinstance(record, Mapping) else type(record).__name__
            raise ValueError(f"a record must be a dict with 'video' (or 'latents') and "
                             f"'caption', got {got}")
        video = record["video"]
        if not (isinstance(video, np.ndarray) and video.dtype == np.uint8 and video.ndim == 4):
            got = f"{type(video).__name__} {getattr(video, 'dtype', '')} "
            got += f"{getattr(video, 'shape', '')}"
            raise ValueError(f"record 'video' must be a uint8 (t, h, w, 3) array, got {got}")
        if video.shape[-1] != 3:
            raise ValueError(f"record 'video' must have 3 channels (RGB), got {video.shape}")
        return self._with_labels({"video": video}, record)

    def _latent_record(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """A latent-cache record: float32 latents travel as ``video`` (already model inputs)."""
        latents = np.asarray(record["latents"], np.float32)
        if latents.ndim != 4:
            raise ValueError(f"record 'latents' must be (t, h, w, c), got {latents.shape}")
        return self._with_labels({"video": latents}, record)

    def _with_labels(self, out: dict, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out["tokens"] = self.tokenizer.encode(record["caption"])
        for key, value in record.items():
            if key in ("video", "latents", "caption"):
                continue
            value = np.asarray(value)
            if value.ndim == 0 and np.issubdtype(value.dtype, np.integer):
                out[key] = value.astype(np.int32)
            elif value.ndim == 0 and np.issubdtype(value.dtype, np.floating):
                out[key] = value.astype(np.float32)
        return out


def _video_to_float(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """uint8 video (b, t, h, w, 3) -> float32 in [-1, 1] (after batching: buffers stay uint8);
    float latents pass unchanged."""
    if batch["video"].dtype != np.uint8:
        return batch
    batch = dict(batch)
    batch["video"] = video_io.to_float(batch["video"])
    return batch


class _DropNoneIterator(grain.DatasetIterator):
    """Skips ``None`` elements and counts them; the count is part of the iterator state."""

    def __init__(self, parent: grain.DatasetIterator):
        super().__init__(parent)
        self.skipped = 0

    def __next__(self):
        while True:
            element = next(self._parent)
            if element is not None:
                return element
            self.skipped += 1

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), _SKIPPED_KEY: self.skipped}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self.skipped = int(state[_SKIPPED_KEY])


class _DropNoneIterDataset(grain.IterDataset):
    """``IterDataset`` that drops ``None`` elements, counting them (see ``skipped_count``)."""

    def __iter__(self) -> _DropNoneIterator:
        return _DropNoneIterator(self._parent.__iter__())

    def __str__(self) -> str:
        return "DropNoneIterDataset"


def skipped_count(iterator: grain.DatasetIterator) -> int:
    """Number of ``None`` (unreadable) records this process's iterator has dropped so far.

    Read from the iterator state, so it includes records dropped inside multiprocessing workers
    and counts from before a checkpoint restore.
    """

    def total(node: Any) -> int:
        if isinstance(node, Mapping):
            return sum(int(v) if k == _SKIPPED_KEY else total(v) for k, v in node.items())
        if isinstance(node, (list, tuple)):
            return sum(total(v) for v in node)
        return 0

    return total(iterator.get_state())


def state_for_process_count(states: list[Mapping[str, Any]], process_count: int) -> dict:
    """The iterator state for each process of a ``process_count``-process run that continues
    where the per-process ``states`` of a run with another process count stopped.

    The global position (records read by all processes together, dropped ones included) is
    kept: each new process starts at ``total // process_count`` of its own slice, so without
    dropped records each following global batch holds the records the old run's would have (in
    another order within the batch). Needs the ``worker_count=0`` pipeline's state.
    """
    positions, skipped = [], 0
    for state in states:
        parent = state.get("parent") if isinstance(state, Mapping) else None
        if not isinstance(parent, Mapping) or set(parent) != {"next_index"}:
            raise ValueError("the input-pipeline state cannot move to a different process count "
                             "(only the worker_count=0 pipeline's state can); resume with the "
                             f"process count that wrote it ({len(states)})")
        positions.append(int(parent["next_index"]))
        skipped += int(state[_SKIPPED_KEY])
    return {"parent": {"next_index": sum(positions) // process_count},
            _SKIPPED_KEY: skipped // process_count}


def _ensure_flags_parsed() -> None:
    """Grain's worker processes read absl flags; outside ``absl.app.run`` use their defaults."""
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def process_slice(length: int, process_index: int, process_count: int) -> slice:
    """Slice of a (shuffled) epoch for one process: equal lengths, disjoint strides.

    Every process gets ``length // process_count`` elements so multi-host loops stay in lockstep;
    the ``length % process_count`` leftover positions of each (shuffled) epoch are unused.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    per_process = length // process_count
    if per_process == 0:
        raise ValueError(f"{length} examples cannot be split over {process_count} processes")
    return slice(process_index, per_process * process_count, process_count)


def make_pipeline(
    source: Any,
    *,
    batch_size: int,
    tokenizer: WordTokenizer,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    worker_count: int = 0,
    read_options: grain.ReadOptions | None = None,
) -> grain.IterDataset:
    """Build the training input pipeline for one process.

    Args:
      source: random-access source (``__len__``, ``__getitem__``) of records
        ``{"video": uint8 (t, h, w, 3), "caption": str, ...}`` or ``None`` for unreadable items.
      batch_size: per-process batch size b.
      tokenizer: encodes captions to ``tokens`` int32 (L,).
      seed: shuffle seed; each epoch uses a different permutation derived from it.
      shuffle: shuffle globally (before the per-process slice, so processes stay disjoint).
      num_epochs: passes over the data; ``None`` repeats forever.
      drop_remainder: drop a final partial batch.
      process_index, process_count: this process's data slice; default
        ``jax.process_index()`` / ``jax.process_count()``.
      worker_count: >0 runs loading and batching in that many worker processes. Each worker
        batches its own stride of records, so batches differ from ``worker_count=0`` (still
        deterministic for a given count) and, with a finite ``num_epochs``, each worker drops
        its own final partial batch.
      read_options: Grain thread-pool options; default 8 threads and a small buffer (records can
        be large videos).

    Returns:
      A ``grain.IterDataset`` of batches (see module docstring).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(source) == 0:
        raise ValueError("source is empty")
    pi = jax.process_index() if process_index is None else int(process_index)
    pc = jax.process_count() if process_count is None else int(process_count)
    ds = grain.MapDataset.source(source)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    ds = ds[process_slice(len(ds), pi, pc)]
    ds = ds.repeat(num_epochs)
    ds = ds.map(_ToModelRecord(tokenizer))
    if read_options is None:
        read_options = grain.ReadOptions(
            num_threads=8, prefetch_buffer_size=max(16, 2 * batch_size)
        )
    it_ds = ds.to_iter_dataset(read_options, allow_nones=True)
    it_ds = _DropNoneIterDataset(it_ds)
    it_ds = it_ds.batch(batch_size, drop_remainder=drop_remainder)
    it_ds = it_ds.map(_video_to_float)
    if worker_count > 0:
        _ensure_flags_parsed()
        it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return it_ds
