"""The Latte paper's design ablations (Ma et al. 2024, arXiv 2401.03048, §4.3), measured.

    python -m experiments.ablate_latte --out workdir/ablate_latte [--steps 600] [--only ...]
        [--config configs/latte_shapes.py:tiny] [--full_grid]

The paper varies four design choices of its text/class-to-video transformer and reports FVD:

- model variant (§3.1): 1 interleaved spatial/temporal blocks, 2 late fusion, 3 factorised
  self-attention in a block, 4 split spatial/temporal heads -- *variant 1 is best*;
- patch embedding (§3.2): uniform per-frame patches vs. 3D tubelets (``patch_size_t=2``) --
  *uniform is better*;
- temporal positions: absolute sin-cos vs. RoPE -- *absolute is as good or slightly better*;
- timestep-class injection: S-AdaLN (DiT adaLN) vs. "all tokens" -- *S-AdaLN is better*.

As the paper does, this changes one factor at a time around a baseline (variant 1, uniform,
absolute, S-AdaLN): the baseline plus ``variant2``, ``variant3``, ``variant4``, ``tubelet``,
``rope``, ``tokens`` = 7 runs; ``--full_grid`` runs all 4x2x2x2 = 32 combinations. Every run
uses the same config and step budget (S-AdaLN is ``adaln="block"`` in every run, including the
token runs, which require it), trains through the library's loop (``vdm_jax.train.loop.train``,
as ``experiments/train.py``) in ``OUT/runs/<name>`` and is then scored from its final
checkpoint's EMA params:

- validation loss: the diffusion loss averaged over a fixed batch of held-out shapes clips at
  fixed noise levels and noise (``--val_clips`` x ``--val_repeats`` draws, same for every run);
- prompt agreement (colour, direction, colour and direction) and temporal consistency of
  ``--num_samples`` samples of held-out captions (``--sample_steps`` sampler steps);
- parameters and training steps/s (median over the logged intervals after the first, which
  includes compilation).

Rerunning with the same ``--out`` skips runs whose final checkpoint exists (and reuses their
scores when the scoring settings match). Writes ``OUT/ablate_latte.{md,json,png}``; the table
sets the paper's finding beside each one-factor change and whether the measured validation
loss agrees with it. The paper's numbers are FVD on real video after long training; these are
small runs on the built-in shapes data, so read disagreements as "not reproduced at this
scale", not as evidence against the paper.
"""

import dataclasses
import itertools
import json
import logging
import statistics
import sys
from pathlib import Path

import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from experiments import report
from experiments.common import init_runtime

log = logging.getLogger(__name__)

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/latte_shapes.py:tiny", "Latte config file[:variant] shared by all runs.")
_STEPS = flags.DEFINE_integer("steps", 600, "Training steps per run (same for every run).")
_FULL = flags.DEFINE_bool("full_grid", False, "All 32 combinations instead of one-factor.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 32, "Samples scored per run.")
_SAMPLE_STEPS = flags.DEFINE_integer("sample_steps", 25, "Sampler steps when scoring.")
_VAL_CLIPS = flags.DEFINE_integer("val_clips", 64, "Held-out clips in the validation batch.")
_VAL_REPEATS = flags.DEFINE_integer("val_repeats", 4, "Noise draws per validation clip.")
_TOL = flags.DEFINE_float("tolerance", 0.01, "Relative val-loss difference counted as a tie.")

# ---- the grid ------------------------------------------------------------------------------------

PATCHES = {"uniform": 1, "tubelet": 2}  # name -> patch_size_t


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One ablation run: the four factors (and the run's directory name)."""

    name: str
    variant: int = 1
    patches: str = "uniform"
    temporal_pos: str = "absolute"
    conditioning: str = "adaln"

    def factors(self) -> dict:
        return {"variant": self.variant, "patches": self.patches,
                "temporal_pos": self.temporal_pos, "conditioning": self.conditioning}

    def model_overrides(self) -> dict:
        """``config.model`` fields of this run. S-AdaLN is DiT's per-block adaLN ("block") in
        every run: the token runs need it, and it keeps their single change the injection."""
        return {"variant": self.variant, "patch_size_t": PATCHES[self.patches],
                "temporal_pos": self.temporal_pos, "conditioning": self.conditioning,
                "adaln": "block"}


BASELINE = RunSpec("baseline")
LEVELS = {"variant": (1, 2, 3, 4), "patches": ("uniform", "tubelet"),
          "temporal_pos": ("absolute", "rope"), "conditioning": ("adaln", "tokens")}

# factor -> (paper's finding, sign the change's val loss should have relative to the baseline:
# +1 "worse than baseline", 0 "not better than baseline").
PAPER = {
    "variant": ("variant 1 (interleaved) is best", +1),
    "patches": ("uniform patches > tubelets", +1),
    "temporal_pos": ("absolute >= RoPE", 0),
    "conditioning": ("S-AdaLN > tokens", +1),
}


def _single_change_name(factor: str, level) -> str:
    return f"variant{level}" if factor == "variant" else str(level)


def one_factor_grid() -> list[RunSpec]:
    """The baseline and each single change: baseline, variant2-4, tubelet, rope, tokens."""
    specs = [BASELINE]
    for factor, levels in LEVELS.items():
        for level in levels:
            if level != getattr(BASELINE, factor):
                specs.append(dataclasses.replace(
                    BASELINE, name=_single_change_name(factor, level), **{factor: level}))
    return specs


def full_grid() -> list[RunSpec]:
    """All 32 combinations; those in the one-factor grid keep its names (and run directories)."""
    named = {tuple(s.factors().values()): s.name for s in one_factor_grid()}
    specs = []
    for combo in itertools.product(*LEVELS.values()):
        v, p, pos, cond = combo
        name = named.get(combo, f"v{v}-{p}-{pos}-{cond}")
        specs.append(RunSpec(name, v, p, pos, cond))
    return specs


def changed_factor(spec: RunSpec) -> str | None:
    """The one factor ``spec`` changes from the baseline; None for the baseline or several."""
    diff = [k for k, v in spec.factors().items() if v != BASELINE.factors()[k]]
    return diff[0] if len(diff) == 1 else None


def select(specs: list[RunSpec], only) -> list[RunSpec]:
    if not only:
        return specs
    known = {s.name for s in specs}
    unknown = [n for n in only if n not in known]
    if unknown:
        raise ValueError(f"unknown run names {unknown}; this grid has {sorted(known)}")
    return [s for s in specs if s.name in only]


def run_config(base: ml_collections.ConfigDict, spec: RunSpec, steps: int,
               sample_steps: int) -> ml_collections.ConfigDict:
    """``base`` with the run's model fields and the shared budget."""
    config = ml_collections.ConfigDict(base.to_dict())
    if config.model.name != "latte":
        raise ValueError(f"the Latte ablation needs a Latte config, got model {config.model.name}")
    config.model.update(spec.model_overrides())
    config.train.steps = steps
    config.train.warmup_steps = min(config.train.warmup_steps, steps)
    config.sample.num_steps = sample_steps  # the loop's end-of-training samples too
    return config


# ---- training and scoring ------------------------------------------------------------------------

def final_step(workdir: Path) -> int | None:
    from vdm_jax.train.checkpoint import Checkpointer

    directory = Path(workdir) / "checkpoints"
    if not directory.exists():
        return None
    checkpointer = Checkpointer(directory)
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()


def train_run(config: ml_collections.ConfigDict, workdir: Path) -> bool:
    """Trains (or resumes) to ``config.train.steps``; False when it had already finished."""
    from vdm_jax.train.loop import train

    if final_step(workdir) == config.train.steps:
        log.info("skipped %s: final checkpoint (step %d) exists", workdir, config.train.steps)
        return False
    config.lock()
    train(config, workdir)
    return True


def held_out_batch(experiment, num_clips: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``num_clips`` held-out clips (float in [-1, 1]) and their caption tokens."""
    from vdm_jax.data import video_io
    from vdm_jax.data.sources import build_source

    source = build_source(experiment.config.data, split="eval")
    records = [source[i] for i in range(num_clips)]
    video = video_io.to_float(np.stack([r["video"] for r in records]))
    tokens = np.stack([experiment.tokenizer.encode(r["caption"]) for r in records])
    return video, tokens.astype(np.int32)


def validation_loss(experiment, params, *, num_clips: int, repeats: int, seed: int = 0,
                    chunk: int = 16) -> float:
    """Mean diffusion loss (the training objective, no caption dropout) of ``params`` on a fixed
    held-out batch; noise levels and noise come from fixed keys, the same for every run."""
    import jax
    import jax.numpy as jnp

    from vdm_jax.diffusion import diffusion_loss

    settings = experiment.step_settings()
    model = experiment.model

    @jax.jit
    def loss(params, video, tokens, key):
        def model_fn(z, t):
            return model.apply({"params": params}, z, t, tokens, train=False)

        per_example, _ = diffusion_loss(model_fn, video, key, schedule=settings.schedule,
                                        parameterization=settings.parameterization,
                                        weighting=settings.loss_weighting)
        return per_example.sum()

    video, tokens = held_out_batch(experiment, num_clips)
    root = jax.random.key(seed)
    total = 0.0
    for r in range(repeats):
        for i in range(0, num_clips, chunk):
            key = jax.random.fold_in(jax.random.fold_in(root, r), i)
            total += float(loss(params, jnp.asarray(video[i:i + chunk]),
                                jnp.asarray(tokens[i:i + chunk]), key))
    return total / (num_clips * repeats)


def steps_per_second(workdir: Path) -> float:
    """Median logged training speed, leaving out the first interval (compilation) if possible."""
    path = Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return float("nan")
    speeds = [r["steps_per_second"] for r in map(json.loads, path.read_text().splitlines())
              if "steps_per_second" in r]
    if not speeds:
        return float("nan")
    return statistics.median(speeds[1:] or speeds)


def score_run(workdir: Path, *, num_samples: int, sample_steps: int, val_clips: int,
              val_repeats: int) -> dict:
    """Scores the final checkpoint's EMA params (cached in ``workdir/ablate_scores.json``)."""
    import jax

    from vdm_jax.train.restore import load_run
    from vdm_jax.train.samples import make_pipeline, score_prompt_agreement

    settings = {"num_samples": num_samples, "sample_steps": sample_steps,
                "val_clips": val_clips, "val_repeats": val_repeats}
    cache = Path(workdir) / "ablate_scores.json"
    step = final_step(workdir)
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("settings") == settings and cached.get("step") == step:
            log.info("reusing scores of %s", workdir)
            return cached["scores"]
    experiment, state, step = load_run(workdir)
    config = ml_collections.ConfigDict(experiment.config.to_dict())
    config.sample.num_steps = sample_steps
    experiment = dataclasses.replace(experiment, config=config)
    params = state.ema_params
    scores = {
        "step": step,
        "params_M": sum(x.size for x in jax.tree.leaves(params)) / 1e6,
        "val_loss": validation_loss(experiment, params, num_clips=val_clips,
                                    repeats=val_repeats),
    }
    if config.data.source == "shapes":
        pipeline = make_pipeline(experiment, params)
        agreement = score_prompt_agreement(
            pipeline, experiment, num_samples=num_samples,
            batch_size=min(config.eval.batch_size, num_samples), seed=config.eval.seed,
            progress=False)
        scores.update({k: agreement[k] for k in ("colour", "direction", "colour_and_direction",
                                                 "temporal_consistency")})
    cache.write_text(json.dumps({"settings": settings, "step": step, "scores": scores},
                                indent=2))
    return scores


def run_ablation(base: ml_collections.ConfigDict, specs: list[RunSpec], out: str | Path, *,
                 steps: int, num_samples: int = 32, sample_steps: int = 25, val_clips: int = 64,
                 val_repeats: int = 4, tolerance: float = 0.01) -> list[dict]:
    """Trains (or skips) and scores every run of ``specs`` under ``out/runs/<name>``; returns
    the table rows (with the paper comparison filled in)."""
    rows = []
    for spec in specs:
        workdir = Path(out) / "runs" / spec.name
        log.info("run %s: %s", spec.name, spec.model_overrides())
        trained = train_run(run_config(base, spec, steps, sample_steps), workdir)
        row = {"name": spec.name, "changed": changed_factor(spec) or "", **spec.factors(),
               "trained": trained}
        row.update(score_run(workdir, num_samples=num_samples, sample_steps=sample_steps,
                             val_clips=val_clips, val_repeats=val_repeats))
        row["steps_per_s"] = steps_per_second(workdir)
        rows.append(row)
        log.info("%s", row)
    compare_with_paper(rows, tolerance)
    return rows


def compare_with_paper(rows: list[dict], tolerance: float = 0.01) -> None:
    """Adds ``paper`` (the finding) and ``agrees`` ("yes"/"no"/"tie") to each single-change row,
    from its validation loss relative to the baseline's (a relative difference within
    ``tolerance`` is a tie; for "absolute >= RoPE" a tie agrees)."""
    base = next((r for r in rows if r["name"] == BASELINE.name), None)
    for r in rows:
        factor = r.get("changed")
        if not factor or factor not in PAPER:
            continue
        finding, sign = PAPER[factor]
        r["paper"] = finding
        if base is None:
            r["agrees"] = "n/a (no baseline)"
            continue
        rel = (r["val_loss"] - base["val_loss"]) / abs(base["val_loss"])
        r["val_loss_vs_baseline"] = rel
        if sign == 0:
            r["agrees"] = "yes" if rel >= -tolerance else "no"
        else:
            r["agrees"] = "yes" if rel > tolerance else ("no" if rel < -tolerance else "tie")


# ---- report --------------------------------------------------------------------------------------

COLUMNS = [("params_M", "params (M)", "{:.3f}"), ("steps_per_s", "steps/s", "{:.2f}"),
           ("val_loss", "val. loss", "{:.4f}"), ("val_loss_vs_baseline", "vs. baseline", "{:+.1%}"),
           ("colour", "colour", "{:.0%}"), ("direction", "direction", "{:.0%}"),
           ("colour_and_direction", "colour+dir.", "{:.0%}"),
           ("temporal_consistency", "temporal cons.", "{:.3f}")]


def _cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    return "" if value is None else fmt.format(value)


def markdown_table(rows: list[dict]) -> str:
    head = (["run", "variant", "patches", "temporal pos.", "conditioning"]
            + [title for _, title, _ in COLUMNS] + ["paper (§4.3)", "agrees with paper?"])
    cells = [[r["name"], str(r["variant"]), r["patches"], r["temporal_pos"],
              "S-AdaLN" if r["conditioning"] == "adaln" else r["conditioning"]]
             + [_cell(r, key, fmt) for key, _, fmt in COLUMNS]
             + [r.get("paper", ""), r.get("agrees", "")] for r in rows]
    return report.markdown_table(head, cells)


FACTOR_COLOURS = {"": report.GREY, "variant": (70, 110, 190), "patches": (220, 130, 50),
                  "temporal_pos": (60, 160, 90), "conditioning": (180, 70, 150)}


def bar_chart(rows: list[dict], path: Path) -> None:
    """One panel per measured quantity, one bar per run, coloured by the changed factor."""
    metrics = [c for c in COLUMNS if c[0] != "val_loss_vs_baseline"
               and any(np.isfinite(r.get(c[0], float("nan"))) for r in rows)]
    report.bar_chart(path, [r["name"] for r in rows],
                     [(title, [r.get(key) for r in rows], fmt) for key, title, fmt in metrics],
                     [FACTOR_COLOURS.get(r.get("changed", ""), report.GREY) for r in rows])


def factor_means(rows: list[dict]) -> list[str]:
    """With the full grid: mean validation loss over all runs at each level of each factor."""
    notes = []
    for factor, levels in LEVELS.items():
        parts = []
        for level in levels:
            losses = [r["val_loss"] for r in rows if r[factor] == level]
            if losses:
                parts.append(f"{level}: {np.mean(losses):.4f} ({len(losses)} runs)")
        if len(parts) == len(levels):
            notes.append(f"mean val. loss by {factor}: " + ", ".join(parts))
    return notes


def write_report(rows: list[dict], out: str | Path, *, settings: dict, rerun: str) -> str:
    """Writes ``out/ablate_latte.{md,json,png}``; returns the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = [
        "One factor changed at a time around the baseline (variant 1, uniform patches, absolute "
        "temporal positions, S-AdaLN = DiT per-block adaLN, in every run).",
        "'agrees with paper?' compares each single change's validation loss with the "
        f"baseline's (a relative difference within {settings.get('tolerance', 0.01):.0%} is a "
        "tie; for absolute >= RoPE a tie agrees). The paper ranks by FVD after long training "
        "on real video; these are short runs on the shapes data.",
        "settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
    ]
    if len(rows) == len(full_grid()):
        notes += factor_means(rows)
    notes.append(f"rerun: {rerun}")
    text = markdown_table(rows) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    (out / "ablate_latte.md").write_text(text)
    (out / "ablate_latte.json").write_text(
        json.dumps({"settings": settings, "rows": rows}, indent=2))
    bar_chart(rows, out / "ablate_latte.png")
    return text


def main(argv):
    del argv
    init_runtime()
    out = report.out_dir("workdir/ablate_latte")
    specs = select(full_grid() if _FULL.value else one_factor_grid(), report.ONLY.value)
    settings = {"config": flags.FLAGS["config"].config_filename, "steps": _STEPS.value,
                "num_samples": _NUM_SAMPLES.value, "sample_steps": _SAMPLE_STEPS.value,
                "val_clips": _VAL_CLIPS.value, "val_repeats": _VAL_REPEATS.value,
                "tolerance": _TOL.value}
    rows = run_ablation(_CONFIG.value, specs, out, steps=_STEPS.value,
                        num_samples=_NUM_SAMPLES.value, sample_steps=_SAMPLE_STEPS.value,
                        val_clips=_VAL_CLIPS.value, val_repeats=_VAL_REPEATS.value,
                        tolerance=_TOL.value)
    rerun = "python -m experiments.ablate_latte " + " ".join(sys.argv[1:])
    text = write_report(rows, out, settings=settings, rerun=rerun)
    print("\n" + text)
    logging.info("wrote %s/ablate_latte.{md,json,png}", out)


if __name__ == "__main__":
    app.run(main)
