"""The autoencoder ablation's ``--from_image``: which runs it trains, in which order, from where
(training and scoring replaced by recorders, so this runs in a second)."""

import numpy as np
import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import ablate_vae
from vdm_jax.train import vae


@pytest.fixture
def ablation(monkeypatch, tmp_path):
    """``run(*flags) -> (trained, reported)``: ``(run name, train config)`` per training in order,
    and the report's rows."""
    trained, reported = [], []
    monkeypatch.setattr(ablate_vae, "init_runtime", lambda: None)
    monkeypatch.setattr(vae, "train_vae", lambda config, workdir: trained.append(
        (workdir.name, config.train.to_dict())))
    monkeypatch.setattr(vae, "held_out_clips", lambda config, num: np.zeros((num, 1, 4, 4, 3)))

    def design(name, out):
        ablate_vae._train(name, out)
        return {"design": name, "init": ablate_vae.start_of(name)}, None

    monkeypatch.setattr(ablate_vae, "run_design", design)
    monkeypatch.setattr(ablate_vae, "write_report",
                        lambda out, results, clip, recons: reported.extend(results))

    def run(*argv):
        with flagsaver.flagsaver():
            flags.FLAGS.unparse_flags()
            flags.FLAGS(["ablate_vae", "--out", str(tmp_path), "--steps", "3", *argv])
            try:
                ablate_vae.main([])
            finally:
                flags.FLAGS.unparse_flags()  # as pytest found them: no flags parsed
        return trained, reported

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
    row = {"design": "magicvideo", "init": "image_vae", "latent_shape": [9, 4, 4, 4],
           "compression": 12.0, "params": 1e6, "psnr": 20.0, "ssim": 0.5, "flicker": 0.01,
           "steps_per_second": 2.0}
    clip = np.zeros((9, 16, 16, 3), np.float32)
    ablate_vae.write_report(tmp_path, [row], clip, [clip])
    table = (tmp_path / "ablate_vae.md").read_text()
    assert "| train steps/s | init |" in table and "| 2.0 | image_vae |" in table
