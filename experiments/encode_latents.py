"""Encode a dataset once with a video autoencoder into a latent cache (ArrayRecord shards).

    python -m experiments.encode_latents --autoencoder workdir/vae --out workdir/latents \
        --num_examples 20000 --num_eval 256

``--autoencoder`` is an ``experiments.train_vae`` workdir (its data section is encoded unless
``--data_config`` names another) or a folder from ``python -m vdm_jax.convert`` (an imported
diffusers VAE; ``--data_config`` required). Writes ``OUT/train`` and ``OUT/eval``, each a cache
that ``data.source=latents`` serves to ``experiments.train`` (see
``configs/latte_shapes_latent.py``). Latents are posterior means scaled to unit variance: by the
imported VAE's ``scaling_factor`` / ``shift_factor``, or for a trained one by 1 / their standard
deviation measured on the first training batches.
"""

import logging
from pathlib import Path

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments.common import init_runtime

_AUTOENCODER = flags.DEFINE_string("autoencoder", None, "Autoencoder workdir or converted dir.")
_OUT = flags.DEFINE_string("out", None, "Cache directory (train/ and eval/ are written).")
_DATA = config_flags.DEFINE_config_file("data_config", None, "Config whose data section to "
                                        "encode (default: the autoencoder run's).")
_NUM = flags.DEFINE_integer("num_examples", 4096, "Training clips to encode.")
_NUM_EVAL = flags.DEFINE_integer("num_eval", 256, "Held-out clips to encode.")
_BATCH = flags.DEFINE_integer("batch_size", 16, "Clips per encoder call.")
_SHARDS = flags.DEFINE_integer("shards", 4, "ArrayRecord files per split.")
flags.mark_flags_as_required(["autoencoder", "out"])

SCALE_SAMPLES = 256  # clips whose latents set the scale of a trained autoencoder


def _data_config(autoencoder: Path):
    if _DATA.value is not None:
        return _DATA.value.data
    if not (autoencoder / "checkpoints").is_dir():
        raise SystemExit(f"{autoencoder} is an imported autoencoder: pass --data_config to say "
                         "which data to encode")
    from vdm_jax.train.vae import load_autoencoder

    return load_autoencoder(autoencoder)[2].data


def _encoder(model, params):
    import jax

    encode = jax.jit(lambda p, v: model.apply(p, v, method="encode_video").mode())
    return lambda videos: np.asarray(encode(params, videos))


def _batches(source, num: int, batch_size: int):
    """``(records, float32 videos in [-1, 1])`` for the first ``num`` items of ``source``."""
    from vdm_jax.data import video_io

    for start in range(0, num, batch_size):
        records = [source[i] for i in range(start, min(start + batch_size, num))]
        videos = video_io.to_float(np.stack([r["video"] for r in records]))
        yield records, videos


def _latent_records(source, num: int, encode, scale: float, shift: float):
    from tqdm.auto import tqdm

    with tqdm(total=num, desc="encode", unit="clip") as bar:
        for records, videos in _batches(source, num, _BATCH.value):
            for record, z in zip(records, encode(videos), strict=True):
                labels = {k: v for k, v in record.items() if k not in ("video", "caption")}
                yield {"latents": (z - shift) * scale, "caption": record["caption"], **labels}
            bar.update(len(records))


def _scale_and_shift(model, encode, source, trained: bool) -> tuple[float, float]:
    if not trained and hasattr(model, "scaling_factor"):
        return float(model.scaling_factor), float(getattr(model, "shift_factor", None) or 0.0)
    num = min(SCALE_SAMPLES, len(source))
    latents = np.concatenate([encode(v) for _, v in _batches(source, num, _BATCH.value)])
    return 1.0 / float(latents.std()), 0.0


def main(argv):
    del argv
    init_runtime()
    from vdm_jax.data.latents import load_autoencoder_dir, write_shards
    from vdm_jax.data.sources import build_source

    autoencoder = Path(_AUTOENCODER.value).absolute()
    data = _data_config(autoencoder)
    model, params = load_autoencoder_dir(autoencoder)
    encode = _encoder(model, params)
    train = build_source(data, split="train")
    scale, shift = _scale_and_shift(model, encode, train,
                                    (autoencoder / "checkpoints").is_dir())
    meta = {"autoencoder": str(autoencoder), "scale": scale, "shift": shift,
            "data": data.to_dict()}
    for split, num in (("train", _NUM.value), ("eval", _NUM_EVAL.value)):
        source = train if split == "train" else build_source(data, split="eval")
        num = min(num, len(source))
        out = Path(_OUT.value) / split
        write_shards(out, _latent_records(source, num, encode, scale, shift), num,
                     {**meta, "split": split}, num_shards=_SHARDS.value)
        logging.info("wrote %d %s latents to %s (scale %.4g)", num, split, out, scale)


if __name__ == "__main__":
    app.run(main)
