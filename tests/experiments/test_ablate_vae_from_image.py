"""The autoencoder ablation's ``--from_image``: which runs it trains, in which order, from where
(training and scoring replaced by recorders in ``ablate_vae_recorder.py``, a child process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RECORDER = Path(__file__).with_name("ablate_vae_recorder.py")


def _child(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture
def ablation(tmp_path):
    """``run(*flags) -> (trained, reported)``: ``(run name, train config)`` per training in order,
    and the report's rows."""

    def run(*argv):
        out = _child([str(RECORDER), "--out", str(tmp_path), "--steps", "3", *argv])
        got = json.loads(out.stdout.strip().splitlines()[-1])
        return [tuple(t) for t in got["trained"]], got["reported"]

    return run


def test_from_image_trains_the_image_run_first_without_reporting_it(ablation, tmp_path):
    trained, reported = ablation("--only", "video_vae,magicvideo")
    assert [name for name, _ in trained] == ["image_vae", "magicvideo", "video_vae"]
    start = {name: (cfg["init_from"], cfg["freeze_spatial"], cfg["steps"]) for name, cfg in trained}
    image = str(tmp_path / "runs" / "image_vae")
    assert start == {"image_vae": ("", False, 3), "magicvideo": (image, True, 3),
                     "video_vae": (image, False, 3)}
    assert [(r["design"], r["init"]) for r in reported] == [
        ("magicvideo", "image_vae"), ("video_vae", "image_vae")]


def test_every_design_reported_with_where_it_started(ablation):
    _, reported = ablation()
    assert [(r["design"], r["init"]) for r in reported] == [
        ("image_vae", "scratch"), ("magicvideo", "image_vae"), ("video_vae", "image_vae"),
        ("causal_vae", "scratch")]


def test_nofrom_image_trains_from_scratch(ablation):
    trained, reported = ablation("--nofrom_image", "--only", "magicvideo")
    assert [(name, cfg["init_from"], cfg["freeze_spatial"]) for name, cfg in trained] == [
        ("magicvideo", "", False)]
    assert reported[0]["init"] == "scratch"


def test_report_table_has_an_init_column(tmp_path):
    code = f"""
import numpy as np
from experiments import ablate_vae
row = dict(design="magicvideo", init="image_vae", latent_shape=[9, 4, 4, 4], compression=12.0,
           params=1e6, psnr=20.0, ssim=0.5, flicker=0.01, steps_per_second=2.0)
clip = np.zeros((9, 16, 16, 3), np.float32)
ablate_vae.write_report(__import__("pathlib").Path({str(tmp_path)!r}), [row], clip, [clip])
"""
    _child(["-c", code])
    table = (tmp_path / "ablate_vae.md").read_text()
    assert "| train steps/s | init |" in table and "| 2.0 | image_vae |" in table
