"""The entry points as a user runs them: train, sample (and extend), evaluate, bad input."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, check=True):
    env = dict(os.environ)
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{args} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run")
    _run("experiments.train", "--config", "configs/vdm_shapes.py:test", "--workdir", str(workdir),
         "--config.train.steps=2")
    return workdir


def test_sample_writes_videos(trained):
    out = trained / "out" / "blue.mp4"
    _run("experiments.sample", "--workdir", str(trained), "--prompt", "a blue circle moving right",
         "--num_samples", "2", "--steps", "3", "--out", str(out))
    for suffix in (".mp4", ".gif", ".png"):
        assert out.with_suffix(suffix).stat().st_size > 0


def test_sample_extends_a_clip(trained):
    from vdm_jax.data import video_io

    first = trained / "out" / "first.mp4"
    _run("experiments.sample", "--workdir", str(trained), "--prompt", "a red square moving left",
         "--num_samples", "1", "--steps", "3", "--out", str(first))
    extended = trained / "out" / "extended.mp4"
    _run("experiments.sample", "--workdir", str(trained), "--prompt", "a red square moving left",
         "--num_samples", "1", "--steps", "3", "--num_frames", "6", "--extend", str(first),
         "--out", str(extended))
    assert video_io.read_video(extended).shape[0] == 6


def test_unknown_prompt_word_is_a_clear_error(trained):
    result = _run("experiments.sample", "--workdir", str(trained), "--prompt",
                  "a purple elephant moving left", "--out", str(trained / "x.mp4"), check=False)
    assert result.returncode != 0
    assert "elephant" in result.stderr


def test_unknown_config_key_is_an_error(tmp_path):
    result = _run("experiments.train", "--config", "configs/vdm_shapes.py:test", "--workdir",
                  str(tmp_path), "--config.train.no_such_key=1", check=False)
    assert result.returncode != 0
    assert "no_such_key" in result.stderr


def test_evaluate_reports_prompt_agreement(trained):
    result = _run("experiments.evaluate", "--workdir", str(trained), "--num_samples", "4")
    assert "prompt agreement" in result.stdout
    assert list((trained / "eval").glob("*.json"))


def test_frame_count_the_model_cannot_take_is_a_clear_error(trained):
    result = _run("experiments.sample", "--workdir", str(trained), "--prompt",
                  "a red circle moving left", "--num_frames", "0", "--out",
                  str(trained / "x.mp4"), check=False)
    assert result.returncode != 0
    assert "at least 1 frame" in result.stderr


def test_latte_trains_and_samples_through_the_same_scripts(tmp_path):
    """Trained jointly on videos and images (two stills appended to each clip)."""
    _run("experiments.train", "--config", "configs/latte_shapes.py:test", "--workdir",
         str(tmp_path), "--config.train.steps=2", "--config.train.num_image_frames=2")
    out = tmp_path / "latte.mp4"
    _run("experiments.sample", "--workdir", str(tmp_path), "--prompt",
         "a green square moving up", "--num_samples", "1", "--steps", "2", "--guidance", "2",
         "--out", str(out))
    assert out.stat().st_size > 0


def test_latent_latte_from_a_trained_autoencoder(tmp_path):
    """train_vae -> encode_latents -> train Latte on the latents -> sample (decoded to pixels)."""
    vae, latents, run = tmp_path / "vae", tmp_path / "latents", tmp_path / "latte"
    _run("experiments.train_vae", "--config", "configs/causal_vae_shapes.py:test", "--workdir",
         str(vae), "--config.train.steps=2", "--config.loss.disc_weight=0")
    _run("experiments.encode_latents", "--autoencoder", str(vae), "--out", str(latents),
         "--num_examples", "8", "--num_eval", "4", "--shards", "2")
    _run("experiments.train", "--config", "configs/latte_shapes_latent.py:test", "--workdir",
         str(run), "--config.train.steps=2", f"--config.data.path={latents / 'train'}",
         f"--config.data.eval_path={latents / 'eval'}")
    out = run / "out.mp4"
    _run("experiments.sample", "--workdir", str(run), "--prompt", "a blue circle moving right",
         "--num_samples", "1", "--steps", "2", "--out", str(out))
    from vdm_jax.data import video_io

    assert video_io.read_video(out).shape[:3] == (9, 64, 64)  # 9x16x16 pixels, written 4x
