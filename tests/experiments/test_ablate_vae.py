"""The autoencoder ablation end to end on the test config: table, JSON and picture."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ablation_writes_table_json_and_picture(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.ablate_vae", "--out", str(tmp_path), "--steps", "2",
         "--config", "configs/causal_vae_shapes.py:test", "--only", "image_vae,video_vae"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "ablate_vae.json").read_text())
    assert [r["design"] for r in rows] == ["image_vae", "video_vae"]
    # 9x16x16x3 clips: per-frame 4x spatial -> 12x; with 4x time on top -> 36x.
    assert [round(r["compression"]) for r in rows] == [12, 36]
    assert all(r["psnr"] > 0 and 0 <= r["flicker"] for r in rows)
    assert "| image_vae | 9x4x4x4 | 12x |" in (tmp_path / "ablate_vae.md").read_text()
    assert (tmp_path / "ablate_vae.png").stat().st_size > 0


def test_unknown_design_is_an_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "experiments.ablate_vae", "--out", str(tmp_path), "--only", "vq"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "unknown designs ['vq']" in result.stderr
