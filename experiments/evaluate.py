"""Score a trained run's samples against their prompts on the built-in shapes data.

    python -m experiments.evaluate --workdir workdir/vdm_tiny --num_samples 48

Prints colour / shape / direction agreement and temporal consistency of the samples, next to
the detector's own accuracy on real held-out clips; writes ``workdir/eval/<step>.json``.
"""

import json
import logging
from pathlib import Path

import numpy as np
from absl import app, flags

from experiments.common import init_runtime

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory holding checkpoints.")
_NUM = flags.DEFINE_integer("num_samples", None, "Samples to score (default: config.eval).")
_STEP = flags.DEFINE_integer("checkpoint_step", None, "Checkpoint step (default: latest).")
flags.mark_flags_as_required(["workdir"])


def _real_clip_scores(experiment, num: int) -> dict:
    from vdm_jax.data.sources import build_source, pixel_data_config
    from vdm_jax.eval.prompt_agreement import prompt_agreement

    source = build_source(pixel_data_config(experiment.config.data), split="eval")
    records = [source[i] for i in range(num)]
    videos = np.stack([r["video"] for r in records])
    return prompt_agreement(videos, [r["caption"] for r in records])


def main(argv):
    del argv
    init_runtime()
    from vdm_jax.eval.prompt_agreement import format_report
    from vdm_jax.train.restore import load_run
    from vdm_jax.train.samples import make_pipeline, score_prompt_agreement

    experiment, state, step = load_run(_WORKDIR.value, _STEP.value)
    cfg = experiment.config.eval
    from vdm_jax.data.sources import is_shapes_data

    if not is_shapes_data(experiment.config.data):
        raise SystemExit("prompt agreement needs the built-in shapes data (data.source=shapes)")
    num = _NUM.value or cfg.num_samples
    pipeline = make_pipeline(experiment, state.ema_params)
    samples = score_prompt_agreement(pipeline, experiment, num_samples=num,
                                     batch_size=cfg.batch_size, seed=cfg.seed)
    real = _real_clip_scores(experiment, max(num, 200))
    print(f"\nprompt agreement of {num} samples at step {step}: {format_report(samples)}")
    print(f"detector on {max(num, 200)} real held-out clips: {format_report(real)}\n")
    out = Path(_WORKDIR.value) / "eval" / f"{step}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"step": step, "samples": samples, "real_clips": real}, indent=2))
    logging.info("wrote %s", out)


if __name__ == "__main__":
    app.run(main)
