"""The survey's video-autoencoder designs (§2.2) at one budget on the built-in shapes data.

    python -m experiments.ablate_vae --out workdir/ablate_vae [--steps 1500] [--only ...]
        [--config configs/causal_vae_shapes.py:tiny] [--nofrom_image]

Trains each design with the same config, widths, data and step budget through
``experiments.train_vae``'s code (runs in ``OUT/runs/<name>``, resumable), then scores held-out
clips with the posterior mode:

- ``image_vae``: the image autoencoder per frame (the naive latent-video baseline);
- ``magicvideo``: the same with temporal attention in the decoder (MagicVideo);
- ``video_vae``: temporal-aware spatial encoder, then a temporal autoencoder (VideoVAE);
- ``causal_vae``: CogVideoX's causal 3D autoencoder.

With ``--from_image`` (the default) the two designs built on an image autoencoder start from the
``image_vae`` run, as their papers do (``train.init_from``; that run is trained first, and
reused, even when ``--only`` leaves it out of the report): ``magicvideo`` then trains only its
temporal layers (``train.freeze_spatial``), ``video_vae`` every parameter; each still gets
``--steps`` steps of its own. ``--nofrom_image`` trains every design from scratch. A run resumed
from ``OUT/runs`` must have started the same way.

Writes ``OUT/ablate_vae.{md,json}`` (compression ratio, parameters, PSNR, SSIM, flicker, steps/s,
where training started) and ``OUT/ablate_vae.png``: one held-out clip, then each design's
reconstruction, frames side by side.
"""

import json
import logging
import statistics
from pathlib import Path

import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import report
from experiments.common import init_runtime

log = logging.getLogger(__name__)

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/causal_vae_shapes.py:tiny", "Autoencoder config shared by all runs.")
_STEPS = flags.DEFINE_integer("steps", 1500, "Training steps per design (same for every one).")
_FROM_IMAGE = flags.DEFINE_boolean(
    "from_image", True, "Start magicvideo and video_vae from the image_vae run.")

DESIGNS = ("image_vae", "magicvideo", "video_vae", "causal_vae")  # image_vae first: a start point
# Designs that start from the image autoencoder, and whether their spatial layers stay frozen.
FREEZE_SPATIAL = {"magicvideo": True, "video_vae": False}
IMAGE_RUN = "image_vae"
SHOWN_CLIP = 0  # the held-out clip drawn in the PNG


def start_of(name: str) -> str:
    """Where ``name``'s training starts: ``"image_vae"`` (that run's weights) or ``"scratch"``."""
    return IMAGE_RUN if _FROM_IMAGE.value and name in FREEZE_SPATIAL else "scratch"


def _run_config(name: str, out: Path):
    config = _CONFIG.value.copy_and_resolve_references()
    config.model.name = name
    config.train.steps = _STEPS.value
    config.train.checkpoint_every = _STEPS.value
    if start_of(name) == IMAGE_RUN:
        config.train.init_from = str(out / "runs" / IMAGE_RUN)
        config.train.freeze_spatial = FREEZE_SPATIAL[name]
    return config


def _train(name: str, out: Path):
    """Trains ``name`` to ``--steps`` (resuming ``OUT/runs/<name>``); returns its config."""
    from vdm_jax.train.vae import train_vae

    config = _run_config(name, out)
    log.info("design %s: %d steps from %s", name, _STEPS.value, start_of(name))
    train_vae(config, out / "runs" / name)
    return config


def _steps_per_second(workdir: Path) -> float:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["steps_per_second"] for r in rows if "steps_per_second" in r][1:]
    return statistics.median(rates) if rates else float("nan")


def run_design(name: str, out: Path) -> tuple[dict, np.ndarray]:
    """Trains ``name`` (or resumes), returns its scores and the shown clip's reconstruction."""
    from vdm_jax.models import autoencoders
    from vdm_jax.models.counting import count_params
    from vdm_jax.train.vae import evaluate, held_out_clips, load_autoencoder

    config = _train(name, out)
    workdir = out / "runs" / name
    model, params, _ = load_autoencoder(workdir)
    videos = held_out_clips(config, config.eval.num_samples)
    recons, metrics = evaluate(model, params, videos, config.eval.batch_size)
    shape = videos.shape[1:]
    scores = {
        "design": name,
        "init": start_of(name),
        "compression": autoencoders.compression_ratio(model, shape),
        "latent_shape": list(autoencoders.latent_shape(model, shape)),
        "params": count_params(model, videos[:1], method=autoencoders.reconstruct),
        "steps_per_second": _steps_per_second(workdir),
        **metrics,
    }
    return scores, recons[SHOWN_CLIP]


def write_report(out: Path, results: list[dict], clip: np.ndarray, recons: list) -> None:
    from vdm_jax.data import video_io

    head = ["design", "latent (t, h, w, c)", "compression", "params", "PSNR dB", "SSIM",
            "flicker", "train steps/s", "init"]
    rows = [[r["design"], "x".join(map(str, r["latent_shape"])), f"{r['compression']:.0f}x",
             f"{r['params'] / 1e6:.2f}M", f"{r['psnr']:.2f}", f"{r['ssim']:.3f}",
             f"{r['flicker']:.4f}", f"{r['steps_per_second']:.1f}", r["init"]] for r in results]
    table = report.markdown_table(head, rows)
    (out / "ablate_vae.md").write_text(table + "\n")
    (out / "ablate_vae.json").write_text(json.dumps(results, indent=2))
    rows = np.clip(np.stack([clip, *recons]), -1.0, 1.0)
    video_io.write_frame_grid(out / "ablate_vae.png", rows, scale=4)
    print(table)
    print(f"\nrows of {out / 'ablate_vae.png'}: input, " + ", ".join(r["design"] for r in results))


def main(argv):
    del argv
    init_runtime()
    from vdm_jax.train.vae import held_out_clips

    out = report.out_dir("workdir/ablate_vae")
    out.mkdir(parents=True, exist_ok=True)
    designs = [d for d in DESIGNS if not report.ONLY.value or d in report.ONLY.value]
    unknown = set(report.ONLY.value) - set(DESIGNS)
    if unknown:
        raise SystemExit(f"unknown designs {sorted(unknown)}; choose from {DESIGNS}")
    if IMAGE_RUN not in designs and any(start_of(d) == IMAGE_RUN for d in designs):
        _train(IMAGE_RUN, out)  # the starting point, not a row of the report
    results, recons = [], []
    for name in designs:
        scores, recon = run_design(name, out)
        results.append(scores)
        recons.append(recon)
    clip = held_out_clips(_run_config(designs[0], out), SHOWN_CLIP + 1)[SHOWN_CLIP]
    write_report(out, results, clip, recons)


if __name__ == "__main__":
    app.run(main)
