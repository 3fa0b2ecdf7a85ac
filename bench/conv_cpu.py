"""CPU convolutions: XLA as vdm_jax configures it vs jax's default, beside torch.

Run: PYTHONPATH=. .venv/bin/python bench/conv_cpu.py [--repeats 7]

Times (jit, warm-up, median) the 2D convolutions our autoencoders run on 17x128x128 clips (a
video as a batch of frames, and a causal 3x3x3 conv as one 2D conv over its three stacked
time taps), once in a child process with vdm_jax's XLA CPU flag (``vdm_jax/_xla_cpu.py``) and
once with ``VDM_JAX_XLA_DEFAULTS=1`` (jax's own setting), with torch's ``conv2d`` on the same
shapes for reference. Prints ms per convolution and the ratio default / vdm_jax.
"""

import argparse
import json
import os

COMMAND = "PYTHONPATH=. .venv/bin/python bench/conv_cpu.py"
# (frames, size, input channels, output channels, kernel): image VAE and causal-VAE layers.
SHAPES = [(17, 128, 32, 32, 3), (17, 128, 64, 32, 3), (17, 128, 64, 32, 1), (17, 64, 64, 64, 3),
          (9, 128, 96, 32, 3), (9, 128, 192, 32, 3), (9, 64, 192, 64, 3), (17, 128, 32, 3, 3)]


def jax_times(repeats: int) -> list[float]:
    """ms per convolution of every shape in this process (flags as the environment sets)."""
    import jax
    import numpy as np

    import vdm_jax  # noqa: F401  (applies the XLA CPU flag unless told not to)
    from bench._timing import alternating_medians

    out = []
    for n, size, ci, co, k in SHAPES:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, size, size, ci), np.float32)
        w = rng.standard_normal((k, k, ci, co), np.float32)
        pad = ((k // 2, k // 2),) * 2
        conv = jax.jit(lambda x, w, pad=pad: jax.lax.conv_general_dilated(
            x, w, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")))
        call = {"conv": lambda c=conv, x=x, w=w: jax.block_until_ready(c(x, w))}
        out.append(1e3 * alternating_medians(call, repeats)["conv"])
    return out


def torch_times(repeats: int) -> list[float]:
    import torch

    from bench._timing import alternating_medians

    torch.set_num_threads(os.cpu_count())
    out = []
    with torch.no_grad():
        for n, size, ci, co, k in SHAPES:
            x, w = torch.randn(n, ci, size, size), torch.randn(co, ci, k, k)
            call = {"conv": lambda x=x, w=w, k=k: torch.nn.functional.conv2d(x, w, padding=k // 2)}
            out.append(1e3 * alternating_medians(call, repeats)["conv"])
    return out


def child(setting: str, repeats: int) -> list[float]:
    from bench._timing import child_json

    return child_json(__file__, ["--child", "--repeats", str(repeats)],
                      {"VDM_JAX_XLA_DEFAULTS": "1" if setting == "default" else "0"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(jax_times(args.repeats)))
        return
    import importlib.metadata

    ours, default = child("vdm_jax", args.repeats), child("default", args.repeats)
    reference = torch_times(args.repeats)
    print(f"jaxlib {importlib.metadata.version('jaxlib')}, {os.cpu_count()} cores")
    print("| conv (frames x size^2, in -> out, k x k) | GFLOP | jax default ms | vdm_jax ms "
          "| default / vdm_jax | torch conv2d ms |")
    print("|---|---|---|---|---|---|")
    for (n, size, ci, co, k), d, o, t in zip(SHAPES, default, ours, reference, strict=True):
        gflop = 2 * n * size * size * k * k * ci * co / 1e9
        print(f"| {n}x{size}^2, {ci}->{co}, {k}x{k} | {gflop:.1f} | {d:.1f} | {o:.1f} "
              f"| {d / o:.2f}x | {t:.1f} |")
    print(f"rerun: {COMMAND}")


if __name__ == "__main__":
    main()
