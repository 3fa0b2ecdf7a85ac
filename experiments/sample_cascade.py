"""Sample a video through trained Make-A-Video stages.

    W=workdir
    python -m experiments.sample_cascade --prompt "a red circle moving right" \
      --out $W/cascade [--seed 0] [--num_steps base=50,sr_h=20] \
      --workdirs base=$W/mav_base_video,interp=$W/mav_interp,sr_l=$W/mav_sr_l_video,sr_h=$W/mav_sr_h

D_t's keyframes (``generate``, the image embedding from its prior) -> F (``interpolate`` with the
run's ``sample.skip``) -> SR_l (``super_resolve``) -> SR_h (``super_resolve``, noise shared
across frames when its run says so). Each stage samples with its own run's ``sample`` settings
(sampler, steps, guidance; ``--num_steps`` overrides the steps) as its own compiled program.
Trailing stages may be left out (``base`` alone, ``base,interp``, ...).

Writes to ``--out``: ``<stage>.mp4``, ``.gif`` and ``.png`` (a frame strip) per stage,
``cascade.png`` (a row per stage, each at the final size and frame count, keyframes at their time
positions) and ``cascade.json`` (compile and run seconds and output shape per stage; compile
seconds include loading from the persistent compilation cache when it holds the program).
"""

import dataclasses
import logging
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments import report
from experiments.common import init_runtime

STAGES = ("base", "interp", "sr_l", "sr_h")
TASK_OF_STAGE = {"base": "generate", "interp": "interpolate", "sr_l": "super_resolve",
                 "sr_h": "super_resolve"}

_WORKDIRS = flags.DEFINE_list("workdirs", None,
                              "stage=workdir pairs, stages a prefix of base,interp,sr_l,sr_h.")
_PROMPT = flags.DEFINE_string("prompt", None, "Text prompt.")
_SEED = flags.DEFINE_integer("seed", 0, "Random seed.")
_NUM_STEPS = flags.DEFINE_list("num_steps", [], "stage=N sampling steps overriding a run's.")
flags.mark_flags_as_required(["workdirs", "prompt"])

log = logging.getLogger(__name__)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not value:
            raise ValueError(f"--{flag} takes stage=value pairs, got {item!r}")
        if name not in STAGES:
            raise ValueError(f"--{flag}: unknown stage {name!r}; stages are {', '.join(STAGES)}")
        if name in pairs:
            raise ValueError(f"--{flag}: stage {name!r} given twice")
        pairs[name] = value
    return pairs


def stage_workdirs(items: list[str]) -> dict[str, str]:
    """``["base=D1", "interp=D2"]`` -> ``{"base": "D1", "interp": "D2"}`` in cascade order; the
    stages must be a prefix of ``STAGES``."""
    workdirs = _pairs(items, "workdirs")
    want = STAGES[:len(workdirs)]
    if set(workdirs) != set(want):
        missing = [s for s in want if s not in workdirs]
        raise ValueError(f"--workdirs must name a prefix of {','.join(STAGES)} (trailing stages "
                         f"may be left out); got {','.join(workdirs)}, missing "
                         f"{','.join(missing)}")
    return {name: workdirs[name] for name in want}


def step_overrides(items: list[str], stages) -> dict[str, int]:
    """``["base=50"]`` -> ``{"base": 50}``, each stage one of ``stages``."""
    steps = {}
    for name, value in _pairs(items, "num_steps").items():
        if name not in stages:
            raise ValueError(f"--num_steps names {name!r}, which --workdirs leaves out")
        if not value.isdigit() or int(value) < 1:
            raise ValueError(f"--num_steps {name}={value}: steps must be a positive integer")
        steps[name] = int(value)
    return steps


@dataclasses.dataclass
class Stage:
    """A loaded stage run and the sampler of its EMA weights."""

    name: str
    workdir: str
    experiment: object  # vdm_jax.train.experiment.Experiment
    sampler: object  # vdm_jax.pipelines.make_a_video.StageSampler
    checkpoint_step: int

    @property
    def config(self):
        return self.experiment.config

    @property
    def task(self) -> str:
        return TASK_OF_STAGE[self.name]


def load_stages(workdirs: dict[str, str], num_steps: dict[str, int]) -> list[Stage]:
    """Each run's latest checkpoint and a sampler of its EMA weights, ``num_steps`` applied."""
    from vdm_jax.pipelines.make_a_video import stage_sampler
    from vdm_jax.train.restore import load_run

    stages = []
    for name, workdir in workdirs.items():
        experiment, state, step = load_run(workdir)
        sampler = stage_sampler(experiment, state.ema_params)
        if name in num_steps:
            sampler.settings = dataclasses.replace(sampler.settings, num_steps=num_steps[name])
        stages.append(Stage(name, workdir, experiment, sampler, step))
    return stages


def interp_skip(config) -> int:
    """F's sampling skip: ``sample.skip``, else its largest training skip (as its samples)."""
    return int(config.sample.get("skip", max(config.task.skips)))


def check_chain(configs: dict[str, object]) -> dict[str, tuple[int, int, int]]:
    """Checks that the stages' runs (``configs``: stage -> its run's config, in cascade order)
    fit their slots and chain; returns each stage's output ``(frames, height, width)``."""
    from vdm_jax.train.experiment import clip_shape
    from vdm_jax.train.tasks import task_from_config

    shapes, previous = {}, None
    for name, config in configs.items():
        _check_slot(name, config)
        t, h, w, _ = clip_shape(config.data)
        if name == "base":
            shapes[name] = (t, h, w)
        elif name == "interp":
            _check_size(name, "interpolates frames of", (h, w), previous)
            frames = (previous[0] - 1) * interp_skip(config) + 1
            if frames != t:
                log.warning("interp turns %d keyframes into %d frames but was trained on %d",
                            previous[0], frames, t)
            shapes[name] = (frames, h, w)
        else:
            _check_size(name, "takes inputs of", task_from_config(config).low_resolution,
                        previous)
            shapes[name] = (previous[0], h, w)
        previous = shapes[name]
    return shapes


def _check_slot(name: str, config) -> None:
    if config.model.name != "make_a_video":
        raise ValueError(f"the {name} run is a {config.model.name!r} model, not a Make-A-Video "
                         "stage (model.name=make_a_video)")
    task = config.get("task", {}).get("name", "generate")
    if task != TASK_OF_STAGE[name]:
        raise ValueError(f"the {name} slot takes a {TASK_OF_STAGE[name]!r} run, but this run's "
                         f"task is {task!r}; check the order of --workdirs")


def _check_size(name: str, verb: str, size, previous) -> None:
    if tuple(size) != tuple(previous[1:]):
        raise ValueError(f"resolutions do not chain: {name} {verb} {size[0]}x{size[1]} but the "
                         f"previous stage puts out {previous[1]}x{previous[2]}")


def stage_arguments(stage: Stage, tokens, previous, key) -> tuple:
    """The arguments of ``stage.sampler.<task>`` for one video."""
    if stage.task == "generate":  # the image embedding comes from the run's prior
        return (tokens, (1, *stage.experiment.video_shape), key)
    if stage.task == "interpolate":
        return (tokens, previous, interp_skip(stage.config), key)
    size = tuple(stage.experiment.video_shape[1:3])
    return (tokens, previous, size, key, float(stage.config.sample.get("aug_level", 0.0)))


def run_stage(stage: Stage, tokens, previous, key) -> tuple[jax.Array, dict]:
    """Compiles the stage's sampler ahead, then times one call; returns the video and a row."""
    args = stage_arguments(stage, tokens, previous, key)
    compile_seconds = stage.sampler.compile(stage.task, *args)
    start = time.perf_counter()
    video = getattr(stage.sampler, stage.task)(*args).block_until_ready()
    settings = stage.sampler.settings
    return video, {
        "stage": stage.name, "workdir": str(stage.workdir), "task": stage.task,
        "checkpoint_step": stage.checkpoint_step, "sampler": settings.sampler,
        "num_steps": settings.num_steps, "guidance": settings.guidance,
        "compile_seconds": compile_seconds, "run_seconds": time.perf_counter() - start,
        "output_shape": list(video.shape),
    }


def run_cascade(workdirs: dict[str, str], prompt: str, out: str | Path, *, seed: int = 0,
                num_steps: dict[str, int] | None = None) -> dict:
    """Samples ``prompt`` through the stages in ``workdirs`` (stage -> run directory, a prefix
    of ``STAGES``) and writes the videos, pictures and report to ``out``; returns the report."""
    from experiments import cascade_outputs

    stages = load_stages(workdirs, num_steps or {})
    check_chain({s.name: s.config for s in stages})
    tokens = [jnp.asarray(s.experiment.tokenizer.encode_batch([prompt])) for s in stages]
    keys = jax.random.split(jax.random.PRNGKey(seed), len(stages))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    videos, rows, previous = {}, [], None
    for i, stage in enumerate(stages):
        log.info("stage %d/%d %s (%s, %d steps): compiling and sampling", i + 1, len(stages),
                 stage.name, stage.task, stage.sampler.settings.num_steps)
        previous, row = run_stage(stage, tokens[i], previous, keys[i])
        log.info("stage %d/%d %s: %s in %.2f s (compiled in %.2f s)", i + 1, len(stages),
                 stage.name, "x".join(map(str, previous.shape)), row["run_seconds"],
                 row["compile_seconds"])
        videos[stage.name] = np.asarray(previous[0])
        cascade_outputs.write_stage_video(out, stage.name, videos[stage.name],
                                          stage.config.sample.fps)
        rows.append(row)
    cascade_outputs.write_comparison(out / "cascade.png", videos)
    result = {"prompt": prompt, "seed": seed, "backend": jax.default_backend(),
              "device": jax.devices()[0].device_kind, "stages": rows}
    cascade_outputs.write_report(out / "cascade.json", result)
    return result


def main(argv):
    del argv
    init_runtime()
    from experiments.cascade_outputs import timing_table

    try:
        workdirs = stage_workdirs(_WORKDIRS.value)
        num_steps = step_overrides(_NUM_STEPS.value, workdirs)
    except ValueError as e:
        raise app.UsageError(str(e)) from e
    out = report.out_dir("workdir/cascade")
    result = run_cascade(workdirs, _PROMPT.value, out, seed=_SEED.value, num_steps=num_steps)
    print(timing_table(result["stages"]))
    logging.info("wrote %s (a video per stage, cascade.png, cascade.json)", out)


if __name__ == "__main__":
    app.run(main)
