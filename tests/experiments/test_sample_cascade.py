"""The Make-A-Video cascade script on four tiny trained stage runs: a video per stage, the
comparison picture, the timings; runs in the wrong slot and sizes that do not chain are refused."""

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from configs import mav_base, mav_interp, mav_sr_h, mav_sr_l
from experiments import cascade_outputs, sample_cascade
from vdm_jax.data import video_io
from vdm_jax.train.experiment import Experiment
from vdm_jax.train.loop import fit, setup

ROOT = Path(__file__).resolve().parents[2]
PROMPT = "a red circle moving right"
# Output (frames, size) per stage: 3 keyframes of 8x8 -> 5 frames (skip 2) -> 16x16 -> 32x32.
SHAPES = {"base": (3, 8), "interp": (5, 8), "sr_l": (5, 16), "sr_h": (5, 32)}


def _tiny(config, **data):
    """A stage's test config at one UNet level and one training step."""
    config.model.update(channels=8, channel_mult=(1,), attention_levels=(0,), head_dim=8,
                        prior_hidden=16)
    config.model.text.update(width=16, depth=1, num_heads=2)
    config.data.update(data)
    config.train.update(steps=1, warmup_steps=1, checkpoint_every=1)
    return config


def _configs():
    sr_h = _tiny(mav_sr_h.get_config("test"), resolution=32)
    sr_h.task.low_resolution = 16
    return {
        "base": _tiny(mav_base.get_config("video_test"), resolution=8, num_frames=3),
        "interp": _tiny(mav_interp.get_config("test"), resolution=8),  # 5 frames, skip 2
        "sr_l": _tiny(mav_sr_l.get_config("video_test")),  # 8 -> 16
        "sr_h": sr_h,
    }


def _compiled_init_state(experiment):
    """``Experiment.init_state`` as one program at XLA optimisation level 0: initialising op by
    op compiles hundreds of small programs (~15 s of a tiny stage's setup)."""
    init = jax.jit(functools.partial(_EAGER_INIT_STATE, experiment))
    return init.lower().compile({"xla_backend_optimization_level": 0})()


_EAGER_INIT_STATE = Experiment.init_state


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """stage -> the workdir of a run trained for one step by the training loop."""
    workdirs = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Experiment, "init_state", _compiled_init_state)
        for name, config in _configs().items():
            workdirs[name] = tmp_path_factory.mktemp(name)
            run = setup(config, workdirs[name])
            run.hooks.clear()  # no samples while training: the cascade samples
            fit(run)
    return workdirs


@pytest.fixture(scope="module")
def cascade(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade")
    return out, sample_cascade.run_cascade(runs, PROMPT, out, seed=0)


def test_cascade_writes_every_stage_at_its_size(cascade):
    out, report = cascade
    assert [row["stage"] for row in report["stages"]] == list(SHAPES)
    for row in report["stages"]:
        frames, size = SHAPES[row["stage"]]
        assert row["output_shape"] == [1, frames, size, size, 3]
        assert row["compile_seconds"] > 0 and row["run_seconds"] > 0
        scale = cascade_outputs.display_scale(size)
        video = video_io.read_video(out / f"{row['stage']}.mp4")
        assert video.shape == (frames, size * scale, size * scale, 3)
        assert (out / f"{row['stage']}.gif").stat().st_size > 0
        assert (out / f"{row['stage']}.png").stat().st_size > 0
    saved = json.loads((out / "cascade.json").read_text())
    assert saved["stages"] == report["stages"] and saved["prompt"] == PROMPT
    assert [r["num_steps"] for r in saved["stages"]] == [2, 2, 2, 2]  # each run's own


def test_comparison_has_a_row_per_stage_at_the_final_size(cascade):
    out, _ = cascade
    picture = np.asarray(Image.open(out / "cascade.png"))
    pitch = 32 * cascade_outputs.display_scale(32) + cascade_outputs.SEPARATOR
    assert picture.shape[0] == 4 * pitch - cascade_outputs.SEPARATOR
    assert picture.shape[1] == cascade_outputs.LABEL_WIDTH + 5 * pitch - cascade_outputs.SEPARATOR
    base_row = picture[:pitch - cascade_outputs.SEPARATOR, cascade_outputs.LABEL_WIDTH:]
    cells = [base_row[:, i * pitch:(i + 1) * pitch - cascade_outputs.SEPARATOR] for i in range(5)]
    assert not cells[1].any() and not cells[3].any()  # between keyframes 0, 2, 4: black


def _script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=dict(os.environ),
                          capture_output=True, text=True, timeout=600)


def test_a_prefix_of_the_stages_from_the_command_line(runs, tmp_path):
    out = tmp_path / "prefix"
    result = _script("experiments.sample_cascade", "--prompt", PROMPT, "--workdirs",
                     f"base={runs['base']},interp={runs['interp']}", "--num_steps", "interp=1",
                     "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "| stage | task |" in result.stdout and "| interp | interpolate |" in result.stdout
    stages = json.loads((out / "cascade.json").read_text())["stages"]
    assert [(s["stage"], s["num_steps"]) for s in stages] == [("base", 2), ("interp", 1)]
    assert video_io.read_video(out / "interp.mp4").shape[0] == 5
    assert not (out / "sr_l.mp4").exists()


def test_the_single_run_sampler_takes_only_the_keyframe_stage(runs, tmp_path):
    out = tmp_path / "keyframes.mp4"
    result = _script("experiments.sample", "--workdir", str(runs["base"]), "--prompt", PROMPT,
                     "--num_samples", "1", "--steps", "2", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert video_io.read_video(out).shape[:3] == (3, 32, 32)  # 3 keyframes of 8x8, written 4x
    result = _script("experiments.sample", "--workdir", str(runs["sr_l"]), "--prompt", PROMPT,
                     "--out", str(tmp_path / "x.mp4"))
    assert result.returncode != 0
    assert "'super_resolve' stage" in result.stderr
    assert "experiments.sample_cascade" in result.stderr


def test_a_run_in_the_wrong_slot_is_refused_before_sampling(runs, tmp_path):
    with pytest.raises(ValueError, match="base slot takes a 'generate' run.*'interpolate'"):
        sample_cascade.run_cascade({"base": runs["interp"]}, PROMPT, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_resolutions_that_do_not_chain_are_refused():
    configs = _configs()
    configs["sr_l"].task.low_resolution = 12
    with pytest.raises(ValueError, match="sr_l takes inputs of 12x12 but the previous stage "
                                         "puts out 8x8"):
        sample_cascade.check_chain(configs)
    configs = _configs()
    configs["interp"].data.resolution = 16
    with pytest.raises(ValueError, match="interp interpolates frames of 16x16"):
        sample_cascade.check_chain(configs)


def test_the_trained_configs_chain_to_16_frames_of_64x64():
    configs = {"base": mav_base.get_config("video"), "interp": mav_interp.get_config("tiny"),
               "sr_l": mav_sr_l.get_config("video"), "sr_h": mav_sr_h.get_config("tiny")}
    shapes = sample_cascade.check_chain(configs)
    assert shapes == {"base": (4, 16, 16), "interp": (16, 16, 16), "sr_l": (16, 32, 32),
                      "sr_h": (16, 64, 64)}


def test_stage_flags_must_name_a_prefix_of_the_cascade():
    assert list(sample_cascade.stage_workdirs(["interp=b", "base=a"])) == ["base", "interp"]
    with pytest.raises(ValueError, match="prefix of base,interp,sr_l,sr_h.*missing interp"):
        sample_cascade.stage_workdirs(["base=a", "sr_l=b"])
    with pytest.raises(ValueError, match="unknown stage 'sr'"):
        sample_cascade.stage_workdirs(["base=a", "sr=b"])
    with pytest.raises(ValueError, match="stage=value"):
        sample_cascade.stage_workdirs(["base"])
    with pytest.raises(ValueError, match="leaves out"):
        sample_cascade.step_overrides(["sr_h=3"], {"base": "a"})
    with pytest.raises(ValueError, match="positive integer"):
        sample_cascade.step_overrides(["base=0"], {"base": "a"})


def test_keyframes_sit_at_their_time_positions():
    keyframes = np.linspace(-0.5, 0.5, 4 * 2 * 2 * 3, dtype=np.float32).reshape(4, 2, 2, 3)
    full = cascade_outputs.at_final_size(keyframes, 16, (4, 4))
    assert full.shape == (16, 4, 4, 3)
    np.testing.assert_array_equal(full[::5, ::2, ::2], keyframes)  # nearest upsampling
    np.testing.assert_array_equal(full[::5, 1::2, 1::2], keyframes)
    assert (np.delete(full, [0, 5, 10, 15], axis=0) == -1).all()
