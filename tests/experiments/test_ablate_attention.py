"""The attention/conv ablation's measurements and report on tiny networks."""

import numpy as np
from PIL import Image

from experiments import ablate_attention as ablate
from vdm_jax.models.timesformer import TimeSformer
from vdm_jax.models.video_resnet import VideoResNet

TINY = dict(num_classes=4, num_frames=4, image_size=16, patch_size=4, width=16, depth=2,
            num_heads=2)


def test_measure_reports_costs_that_grow_as_the_survey_argues():
    clip, long_clip = ablate._clip(4, 16), ablate._clip(16, 16)
    rows = {}
    for variant in ("joint", "divided"):
        model = TimeSformer(attention=variant, **{**TINY, "num_frames": 16})
        rows[variant] = ablate.measure(model, clip, repeats=1)
        rows[variant]["gflops_long"] = ablate.forward_gflops(model, long_clip)
    for row in rows.values():
        assert row["params_M"] > 0 and row["gflops"] > 0 and row["activation_MiB"] > 0
        assert row["fwd_bwd_s"] > 0
    # Joint attention's cost grows with (T H W)^2, divided's linearly in T: 4x the frames.
    ratio = lambda key: rows["joint"][key] / rows["divided"][key]  # noqa: E731
    assert ratio("gflops_long") > 1.5 * ratio("gflops")
    assert 3.5 < rows["divided"]["gflops_long"] / rows["divided"]["gflops"] < 4.5


def test_direction_training_and_report(tmp_path):
    model = VideoResNet(num_classes=4, conv="spatial", widths=(8,), blocks_per_stage=1,
                        stem_stride=2)
    acc = ablate.direction_accuracy(model, steps=2, frames=4, size=16, batch=4)
    assert 0.0 <= acc <= 1.0
    rows = [{"family": "attention", "variant": "joint", "params_M": 1.0, "gflops": 2.0},
            {"family": "conv", "variant": "spatial", "params_M": 0.5, "gflops": 1.0,
             "direction_acc": acc}]
    table = ablate.markdown_table(rows, 32)
    assert table.splitlines()[0].startswith("| family | variant | params (M) | GFLOPs/clip |")
    assert "| conv | spatial | 0.5 | 1.0 |" in table
    ablate.bar_chart(rows, tmp_path / "chart.png")
    image = np.asarray(Image.open(tmp_path / "chart.png"))
    assert image.ndim == 3 and (image != 255).any()


def test_forward_gflops_counts_every_layer():
    clip = ablate._clip(4, 16)
    flops = [ablate.forward_gflops(TimeSformer(attention="space", **{**TINY, "depth": d}), clip)
             for d in (2, 3, 4)]
    # Each added block adds the same cost (the last block's unused token outputs are pruned by
    # the compiler in every depth alike).
    assert flops[1] - flops[0] > 0
    np.testing.assert_allclose(flops[2] - flops[1], flops[1] - flops[0], rtol=1e-3)
