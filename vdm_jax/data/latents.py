"""Latent caches: a dataset encoded once by a video autoencoder, stored as ArrayRecord shards.

Layout of a cache directory (``experiments.encode_latents`` writes it)::

    DIR/meta.json                      latent shape, scale, the autoencoder, the source data
    DIR/latents-00000-of-00004.array_record, ...

Each record is msgpack of ``{"latents": float32 (t, h, w, c), "caption": str, <int labels>}``;
``latents`` are the posterior means already multiplied by ``meta["scale"]`` (unit variance, what
a diffusion model trains on). :class:`LatentSource` serves them to the same Grain pipeline as
pixel videos, so the diffusion trainer needs no second code path.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from flax import serialization

META = "meta.json"
PATTERN = "latents-*.array_record"


def _shard_path(directory: Path, index: int, count: int) -> Path:
    return directory / f"latents-{index:05d}-of-{count:05d}.array_record"


def encode_record(record: dict) -> bytes:
    """``{"latents": float array, "caption": str, <scalar labels>}`` -> bytes."""
    out = {"latents": np.asarray(record["latents"], np.float32), "caption": record["caption"]}
    for key, value in record.items():
        if key not in out:
            out[key] = int(value)
    return serialization.msgpack_serialize(out)


def decode_record(data: bytes) -> dict:
    record = serialization.msgpack_restore(data)
    record["latents"] = np.asarray(record["latents"], np.float32)
    return record


def write_shards(directory: str | Path, records: Iterable[dict], num_records: int,
                 meta: dict, num_shards: int = 1) -> Path:
    """Writes ``num_records`` records round-robin over ``num_shards`` ArrayRecord files plus
    ``meta.json`` (``num_records`` and the shape of the first record's latents are added)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob(PATTERN):
        old.unlink()
    writers = [ArrayRecordWriter(str(_shard_path(directory, i, num_shards)), "group_size:1")
               for i in range(num_shards)]
    shape = None
    try:
        for i, record in enumerate(records):
            shape = shape or list(np.shape(record["latents"]))
            writers[i % num_shards].write(encode_record(record))
    finally:
        for writer in writers:
            writer.close()
    (directory / META).write_text(json.dumps(
        {**meta, "num_records": num_records, "latent_shape": shape}, indent=2))
    return directory


def read_meta(directory: str | Path) -> dict:
    file = Path(directory) / META
    if not file.is_file():
        raise FileNotFoundError(f"{file} not found: not a latent cache (write one with "
                                "`python -m experiments.encode_latents`)")
    return json.loads(file.read_text())


class LatentSource:
    """Grain random-access source over a latent cache directory; records follow the source
    contract with ``latents`` in place of ``video``."""

    def __init__(self, directory: str | Path, num_examples: int | None = None):
        import grain

        self.directory = Path(directory)
        self.meta = read_meta(self.directory)
        paths = sorted(self.directory.glob(PATTERN))
        if not paths:
            raise FileNotFoundError(f"no {PATTERN} files in {self.directory}")
        self._source = grain.sources.ArrayRecordDataSource([str(p) for p in paths])
        self._len = len(self._source) if num_examples is None else min(num_examples,
                                                                       len(self._source))

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self._len:
            raise IndexError(f"index {index} out of range for {self._len} records")
        return decode_record(self._source[int(index)])

    def __repr__(self) -> str:
        return f"LatentSource({self.directory}, {self._len} records)"

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.meta["latent_shape"])

    def captions(self) -> list[str]:
        """Every caption, for building a tokenizer."""
        return [self[i]["caption"] for i in range(len(self))]


def load_autoencoder_dir(path: str | Path):
    """``(model, params)`` from an autoencoder training workdir (``experiments.train_vae``) or a
    folder written by ``python -m vdm_jax.convert`` (an imported diffusers VAE)."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        from vdm_jax.train.vae import load_autoencoder

        model, params, _ = load_autoencoder(path)
        return model, {"params": params}
    from vdm_jax.convert import load_converted

    return load_converted(path)


def latent_decoder(directory: str | Path):
    """A jitted ``latents -> videos`` for a cache's latents: unscaled by its ``meta.json``, then
    decoded by the autoencoder that encoded them."""
    import jax

    meta = read_meta(directory)
    model, params = load_autoencoder_dir(meta["autoencoder"])
    scale, shift = meta["scale"], meta["shift"]
    decode = jax.jit(lambda p, z: model.apply(p, z / scale + shift, method="decode_video"))
    return lambda latents: decode(params, latents)
