"""The Latte ablation grid, and two tiny runs end to end (train, score, report, resume)."""

import json
import logging

import numpy as np
from PIL import Image

from configs.latte_shapes import get_config
from experiments import ablate_latte as ablate


def test_one_factor_grid_has_the_documented_runs():
    specs = ablate.one_factor_grid()
    assert [s.name for s in specs] == ["baseline", "variant2", "variant3", "variant4", "tubelet",
                                       "rope", "tokens"]
    configs = {tuple(sorted(s.model_overrides().items())) for s in specs}
    assert len(configs) == 7
    assert specs[0].model_overrides() == {"variant": 1, "patch_size_t": 1,
                                          "temporal_pos": "absolute", "conditioning": "adaln",
                                          "adaln": "block"}
    # Every run but the baseline changes exactly one factor.
    assert [ablate.changed_factor(s) for s in specs] == [
        None, "variant", "variant", "variant", "patches", "temporal_pos", "conditioning"]


def test_full_grid_has_32_distinct_runs_and_reuses_one_factor_names():
    specs = ablate.full_grid()
    assert len(specs) == 32
    assert len({s.name for s in specs}) == 32
    assert len({tuple(sorted(s.model_overrides().items())) for s in specs}) == 32
    assert {s.name for s in ablate.one_factor_grid()} <= {s.name for s in specs}
    for spec in specs:
        if spec.conditioning == "tokens":
            assert spec.model_overrides()["adaln"] == "block"


def test_run_config_and_selection():
    base = get_config("test")
    spec = next(s for s in ablate.one_factor_grid() if s.name == "tokens")
    config = ablate.run_config(base, spec, steps=3, sample_steps=2)
    assert config.model.conditioning == "tokens" and config.model.adaln == "block"
    assert config.train.steps == 3 and config.sample.num_steps == 2
    assert base.model.adaln == "single"  # the base config is not modified
    assert [s.name for s in ablate.select(ablate.one_factor_grid(), ["rope", "baseline"])] == [
        "baseline", "rope"]
    try:
        ablate.select(ablate.one_factor_grid(), ["nope"])
    except ValueError as err:
        assert "nope" in str(err)
    else:
        raise AssertionError("unknown run name accepted")


def test_compare_with_paper():
    rows = [{"name": "baseline", "changed": "", "val_loss": 1.0},
            {"name": "tokens", "changed": "conditioning", "val_loss": 1.2},
            {"name": "variant2", "changed": "variant", "val_loss": 0.8},
            {"name": "rope", "changed": "temporal_pos", "val_loss": 0.995}]
    ablate.compare_with_paper(rows, tolerance=0.01)
    assert [r.get("agrees") for r in rows] == [None, "yes", "no", "yes"]
    assert rows[1]["paper"] == "S-AdaLN > tokens"


def test_two_runs_train_score_report_and_resume(tmp_path, caplog):
    base = get_config("test")
    specs = ablate.select(ablate.one_factor_grid(), ["baseline", "rope"])
    kwargs = dict(steps=2, num_samples=2, sample_steps=2, val_clips=2, val_repeats=1)
    rows = ablate.run_ablation(base, specs, tmp_path, **kwargs)
    assert [r["name"] for r in rows] == ["baseline", "rope"]
    for r in rows:
        assert r["trained"] and r["step"] == 2
        for key in ("params_M", "val_loss", "steps_per_s", "colour", "direction",
                    "colour_and_direction", "temporal_consistency"):
            assert np.isfinite(r[key]), key
    assert rows[1]["agrees"] in ("yes", "no")

    report = ablate.write_report(rows, tmp_path, settings={"steps": 2}, rerun="python -m x")
    lines = report.splitlines()
    assert lines[0].startswith("| run | variant | patches | temporal pos. | conditioning |")
    assert "agrees with paper?" in lines[0]
    assert lines[2].startswith("| baseline | 1 | uniform | absolute | S-AdaLN |")
    assert lines[3].startswith("| rope | 1 | uniform | rope | S-AdaLN |")
    assert "absolute >= RoPE" in lines[3]
    assert "rerun: python -m x" in report
    saved = json.loads((tmp_path / "ablate_latte.json").read_text())
    assert [r["name"] for r in saved["rows"]] == ["baseline", "rope"]
    image = np.asarray(Image.open(tmp_path / "ablate_latte.png"))
    assert image.ndim == 3 and (image != 255).any()

    checkpoint = tmp_path / "runs" / "baseline" / "checkpoints" / "2"
    mtime = checkpoint.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger=ablate.__name__):
        again = ablate.run_ablation(base, specs[:1], tmp_path, **kwargs)
    assert not again[0]["trained"]
    assert "skipped" in caplog.text and "reusing scores" in caplog.text
    assert checkpoint.stat().st_mtime_ns == mtime
    assert again[0]["val_loss"] == rows[0]["val_loss"]
