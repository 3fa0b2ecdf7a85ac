"""The survey's video-autoencoder designs (§2.2) at one budget on the built-in shapes data.

    python -m experiments.ablate_vae --out workdir/ablate_vae [--steps 1500] [--only ...]
        [--config configs/causal_vae_shapes.py:tiny]

Trains each design with the same config, widths, data and step budget through
``experiments.train_vae``'s code (runs in ``OUT/runs/<name>``, resumable), then scores held-out
clips with the posterior mode:

- ``image_vae``: the image autoencoder per frame (the naive latent-video baseline);
- ``magicvideo``: the same with temporal attention in the decoder (MagicVideo);
- ``video_vae``: temporal-aware spatial encoder, then a temporal autoencoder (VideoVAE);
- ``causal_vae``: CogVideoX's causal 3D autoencoder.

Writes ``OUT/ablate_vae.{md,json}`` (compression ratio, parameters, PSNR, SSIM, flicker, steps/s)
and ``OUT/ablate_vae.png``: one held-out clip, then each design's reconstruction, frames side by
side.
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

DESIGNS = ("image_vae", "magicvideo", "video_vae", "causal_vae")
SHOWN_CLIP = 0  # the held-out clip drawn in the PNG


def _run_config(name: str):
    config = _CONFIG.value.copy_and_resolve_references()
    config.model.name = name
    config.train.steps = _STEPS.value
    config.train.checkpoint_every = _STEPS.value
    return config


def _steps_per_second(workdir: Path) -> float:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["steps_per_second"] for r in rows if "steps_per_second" in r][1:]
    return statistics.median(rates) if rates else float("nan")


def run_design(name: str, out: Path) -> tuple[dict, np.ndarray]:
    """Trains ``name`` (or resumes), returns its scores and the shown clip's reconstruction."""
    from vdm_jax.models import autoencoders
    from vdm_jax.models.counting import count_params
    from vdm_jax.train.vae import evaluate, held_out_clips, load_autoencoder, train_vae

    config = _run_config(name)
    workdir = out / "runs" / name
    train_vae(config, workdir)
    model, params, _ = load_autoencoder(workdir)
    videos = held_out_clips(config, config.eval.num_samples)
    recons, metrics = evaluate(model, params, videos, config.eval.batch_size)
    shape = videos.shape[1:]
    scores = {
        "design": name,
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
            "flicker", "train steps/s"]
    rows = [[r["design"], "x".join(map(str, r["latent_shape"])), f"{r['compression']:.0f}x",
             f"{r['params'] / 1e6:.2f}M", f"{r['psnr']:.2f}", f"{r['ssim']:.3f}",
             f"{r['flicker']:.4f}", f"{r['steps_per_second']:.1f}"] for r in results]
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
    results, recons = [], []
    for name in designs:
        log.info("design %s: %d steps", name, _STEPS.value)
        scores, recon = run_design(name, out)
        results.append(scores)
        recons.append(recon)
    clip = held_out_clips(_run_config(designs[0]), SHOWN_CLIP + 1)[SHOWN_CLIP]
    write_report(out, results, clip, recons)


if __name__ == "__main__":
    app.run(main)
