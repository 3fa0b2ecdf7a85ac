"""How to adapt 2D attention and convolution to video, measured (survey §0.2, §1.2.1-1.2.2).

    python -m experiments.ablate_attention --out workdir/ablation [--train_steps 300]

For every self-attention variant (a TimeSformer ViT-B/16 over 8x224x224 clips) and every
convolution variant (an 18-layer video ResNet on the same clips) prints and writes:

- parameters (the TimeSformer rows with the 400-class Kinetics head; the survey's table counts
  the 174-class Something-Something head, also printed);
- forward GFLOPs per clip, from the compiled program's cost analysis;
- peak activation memory of a training step (the compiled step's temporary buffers);
- measured forward+backward time per clip on this machine (median of ``--repeats`` after a
  warm-up; compile time separately);
- with ``--train_steps N``: accuracy at classifying motion direction on held-out built-in shapes
  clips after N steps of a small version of the same network.

It also prints the forward GFLOPs at ``--long_frames`` frames, where joint space-time attention's
(T·H·W)² term dominates. Results go to ``OUT/ablation.md``, ``OUT/ablation.json`` and a bar
chart ``OUT/ablation.png``.
"""

import json
import logging
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from experiments import report
from experiments.common import init_runtime
from vdm_jax.models.timesformer import TimeSformer
from vdm_jax.models.video_resnet import VideoResNet
from vdm_jax.nn.attention import ATTENTION_VARIANTS
from vdm_jax.nn.conv import CONV_VARIANTS

_FRAMES = flags.DEFINE_integer("frames", 8, "Frames per clip.")
_SIZE = flags.DEFINE_integer("image_size", 224, "Frame side in pixels.")
_LONG = flags.DEFINE_integer("long_frames", 32, "Frames for the GFLOPs scaling column.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed forward+backward runs per variant.")
_TRAIN = flags.DEFINE_integer("train_steps", 0, "Direction-classification steps (0: skip).")

SSV2_CLASSES = 174  # the head the survey's parameter table counts


def attention_model(variant: str, frames: int, size: int, num_classes: int = 400):
    return TimeSformer(num_classes=num_classes, attention=variant, num_frames=frames,
                       image_size=size)


def conv_model(variant: str, num_classes: int = 400):
    return VideoResNet(num_classes=num_classes, conv=variant)


def _clip(frames: int, size: int, batch: int = 1):
    return jax.ShapeDtypeStruct((batch, frames, size, size, 3), jnp.float32)


def _param_shapes(model, clip):
    return jax.eval_shape(model.init, jax.random.key(0), clip)


def _count(shapes) -> int:
    return sum(x.size for x in jax.tree.leaves(shapes))


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def forward_gflops(model, clip) -> float:
    """Forward FLOPs of one clip from XLA's cost analysis (compiled, never run)."""
    compiled = jax.jit(model.apply).lower(_param_shapes(model, clip), clip).compile()
    return _flops(compiled) / 1e9 / clip.shape[0]


def _train_loss(model):
    def loss(params, video):
        return jnp.mean(jnp.square(model.apply(params, video)))
    return jax.jit(jax.grad(loss))


def measure(model, clip, repeats: int) -> dict:
    """Params, forward GFLOPs, training-step temp memory and timings of one network."""
    shapes = _param_shapes(model, clip)
    row = {"params_M": _count(shapes) / 1e6, "gflops": forward_gflops(model, clip)}
    step = _train_loss(model)
    start = time.perf_counter()
    compiled = step.lower(shapes, clip).compile()
    row["compile_s"] = time.perf_counter() - start
    row["activation_MiB"] = compiled.memory_analysis().temp_size_in_bytes / 2**20
    if repeats:
        params = jax.jit(model.init)(jax.random.key(0), jnp.zeros(clip.shape))
        video = jax.random.normal(jax.random.key(1), clip.shape)
        jax.block_until_ready(compiled(params, video))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(compiled(params, video))
            times.append(time.perf_counter() - start)
        row["fwd_bwd_s"] = statistics.median(times)
    return row


# ---- short training: which variants can tell motion direction ---------------------------------

def _direction_data(num: int, offset: int, frames: int, size: int):
    from vdm_jax.data import video_io
    from vdm_jax.data.shapes import ShapesSource

    source = ShapesSource(num_examples=offset + num, num_frames=frames, resolution=size, seed=7)
    records = [source[i] for i in range(offset, offset + num)]
    video = video_io.to_float(np.stack([r["video"] for r in records]))
    return video, np.array([r["direction"] for r in records], np.int32)


def direction_accuracy(model, steps: int, frames: int, size: int, batch: int = 16) -> float:
    """Trains ``model`` (4 classes) for ``steps`` and returns held-out direction accuracy."""
    train_x, train_y = _direction_data(steps * batch, 0, frames, size)
    test_x, test_y = _direction_data(512, 10**6, frames, size)
    params = model.init(jax.random.key(0), jnp.asarray(train_x[:1]))
    optimizer = optax.adamw(optax.warmup_cosine_decay_schedule(0, 1e-3, steps // 10, steps))
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, x, y):
        def loss(p):
            logits = model.apply(p, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        grads = jax.grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for i in range(steps):
        sl = slice(i * batch, (i + 1) * batch)
        params, opt_state = train_step(params, opt_state, train_x[sl], train_y[sl])
    predict = jax.jit(lambda p, x: jnp.argmax(model.apply(p, x), -1))
    preds = np.concatenate([predict(params, test_x[i:i + 128]) for i in range(0, 512, 128)])
    return float(np.mean(preds == test_y))


def small_attention_model(variant: str):
    return TimeSformer(num_classes=4, attention=variant, num_frames=8, image_size=32,
                       patch_size=4, width=64, depth=4, num_heads=4)


def small_conv_model(variant: str):
    return VideoResNet(num_classes=4, conv=variant, widths=(16, 32, 64), blocks_per_stage=1,
                       stem_stride=2)


# ---- report ------------------------------------------------------------------------------------

COLUMNS = [("params_M", "params (M)", "{:.1f}"), ("gflops", "GFLOPs/clip", "{:.1f}"),
           ("gflops_long", "GFLOPs/clip @long", "{:.1f}"),
           ("activation_MiB", "train-step activations (MiB)", "{:.0f}"),
           ("fwd_bwd_s", "fwd+bwd (s/clip)", "{:.2f}"), ("compile_s", "compile (s)", "{:.0f}"),
           ("direction_acc", "direction acc.", "{:.1%}")]


def markdown_table(rows: list[dict], long_frames: int) -> str:
    columns = [c for c in COLUMNS if any(c[0] in r for r in rows)]
    head = ["family", "variant"] + [c[1].replace("@long", f"@{long_frames}f") for c in columns]
    cells = [[r["family"], r["variant"]] + [fmt.format(r[key]) if key in r else ""
                                            for key, _, fmt in columns] for r in rows]
    return report.markdown_table(head, cells)


FAMILY_COLOURS = {"attention": (70, 110, 190), "conv": (220, 130, 50)}


def bar_chart(rows: list[dict], path: Path) -> None:
    """One panel per measured quantity, one bar per variant."""
    metrics = [c for c in COLUMNS if c[0] != "compile_s" and any(c[0] in r for r in rows)]
    report.bar_chart(path, [f"{r['family']}: {r['variant']}" for r in rows],
                     [(title, [r.get(key) for r in rows], fmt) for key, title, fmt in metrics],
                     [FAMILY_COLOURS[r["family"]] for r in rows])


def main(argv):
    del argv
    init_runtime()
    out = report.out_dir("workdir/ablation")
    out.mkdir(parents=True, exist_ok=True)
    frames, size = _FRAMES.value, _SIZE.value
    wanted = lambda name: not report.ONLY.value or name in report.ONLY.value  # noqa: E731
    rows = []
    for variant in filter(wanted, ATTENTION_VARIANTS):
        logging.info("attention %s", variant)
        row = {"family": "attention", "variant": variant}
        row.update(measure(attention_model(variant, frames, size), _clip(frames, size),
                           _REPEATS.value))
        ssv2 = attention_model(variant, frames, size, SSV2_CLASSES)
        row["params_ssv2_M"] = _count(_param_shapes(ssv2, _clip(frames, size))) / 1e6
        long_model = attention_model(variant, _LONG.value, size)
        row["gflops_long"] = forward_gflops(long_model, _clip(_LONG.value, size))
        if _TRAIN.value:
            row["direction_acc"] = direction_accuracy(small_attention_model(variant),
                                                      _TRAIN.value, 8, 32)
        rows.append(row)
        logging.info("%s", row)
    for variant in filter(wanted, CONV_VARIANTS):
        logging.info("conv %s", variant)
        row = {"family": "conv", "variant": variant}
        row.update(measure(conv_model(variant), _clip(frames, size), _REPEATS.value))
        row["gflops_long"] = forward_gflops(conv_model(variant), _clip(_LONG.value, size))
        if _TRAIN.value:
            row["direction_acc"] = direction_accuracy(small_conv_model(variant), _TRAIN.value,
                                                      8, 32)
        rows.append(row)
        logging.info("%s", row)

    table = markdown_table(rows, _LONG.value)
    by_name = {r["variant"]: r for r in rows}
    notes = []
    if "joint" in by_name and "divided" in by_name:
        j, d = by_name["joint"], by_name["divided"]
        notes.append(f"joint / divided forward GFLOPs: {j['gflops'] / d['gflops']:.2f}x at "
                     f"{frames} frames, {j['gflops_long'] / d['gflops_long']:.2f}x at "
                     f"{_LONG.value} frames")
    attention_rows = [r for r in rows if r["family"] == "attention"]
    if attention_rows:
        notes.append("parameters with the survey's 174-class head: " + ", ".join(
            f"{r['variant']} {r['params_ssv2_M']:.1f}M" for r in attention_rows))
    notes.append(f"clip {frames}x{size}x{size}, batch 1, {jax.devices()[0].device_kind} "
                 f"({jax.device_count()} device(s)); rerun: python -m experiments.ablate_attention "
                 + " ".join(sys.argv[1:]))
    text = table + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    print("\n" + text)
    (out / "ablation.md").write_text(text)
    (out / "ablation.json").write_text(json.dumps(rows, indent=2))
    bar_chart(rows, out / "ablation.png")
    logging.info("wrote %s/ablation.{md,json,png}", out)


if __name__ == "__main__":
    app.run(main)
