"""The causal VAE's 3x3x3 convolutions, each way ``conv_over_time_taps`` can lay out time taps.

Run: PYTHONPATH=. .venv/bin/python bench/causal_conv_cpu.py [--repeats 7]

For the convolutions of a CogVideoX-style causal VAE on 128x128 clips (a frame chunk with its
two cached frames in front), times in one process, alternating, after warm-up (median ms):
one conv per tap over the whole chunk, summed (``sum, whole chunk``); the same a group of
output frames at a time (``sum``, groups of ``FRAME_GROUP_BYTES``); the taps stacked on input
or on output channels; and torch's ``conv3d`` on the same shapes. ``auto`` marks the layout
vdm_jax picks, and the last ratio is whole-chunk sum / auto.
"""

import argparse
import os

import jax
import numpy as np

from bench._timing import alternating_medians
from vdm_jax.nn.conv import conv_over_time_taps, tap_layout

COMMAND = "PYTHONPATH=. .venv/bin/python bench/causal_conv_cpu.py"
# (output frames, size, input channels, output channels): causal-VAE layers on 8-frame chunks.
SHAPES = [(8, 128, 3, 32), (8, 128, 32, 32), (8, 128, 64, 32), (8, 128, 32, 3), (4, 64, 64, 64),
          (2, 32, 128, 128)]
LAYOUTS = {"sum, whole chunk": ("sum", 1 << 62), "sum": ("sum", None),
           "stack_inputs": ("stack_inputs", None), "stack_outputs": ("stack_outputs", None)}


def jax_times(frames: int, size: int, ci: int, co: int, repeats: int) -> dict[str, float]:
    """ms of each layout on one ``(1, frames + 2, size, size, ci)`` input."""
    rng = np.random.default_rng(0)
    x = jax.numpy.asarray(rng.standard_normal((1, frames + 2, size, size, ci), np.float32))
    kernel = jax.numpy.asarray(rng.standard_normal((3, 3, 3, ci, co), np.float32))
    calls = {}
    for name, (layout, group_bytes) in LAYOUTS.items():
        fn = jax.jit(lambda x, k, layout=layout, g=group_bytes: conv_over_time_taps(
            x, k, layout=layout, group_bytes=g))
        calls[name] = lambda fn=fn: jax.block_until_ready(fn(x, kernel))
    return {k: 1e3 * v for k, v in alternating_medians(calls, repeats).items()}


def torch_time(frames: int, size: int, ci: int, co: int, repeats: int) -> float:
    import torch

    torch.set_num_threads(os.cpu_count())
    x, w = torch.randn(1, ci, frames + 2, size, size), torch.randn(co, ci, 3, 3, 3)

    def call():
        with torch.no_grad():
            torch.nn.functional.conv3d(x, w, padding=(0, 1, 1))

    return 1e3 * alternating_medians({"conv3d": call}, repeats)["conv3d"]


def table(repeats: int) -> list[str]:
    names = list(LAYOUTS)
    lines = ["| conv (frames x size^2, in -> out) | GFLOP | " + " | ".join(names)
             + " | torch conv3d | whole chunk / auto |", "|---" * (len(names) + 4) + "|"]
    for frames, size, ci, co in SHAPES:
        ms = jax_times(frames, size, ci, co, repeats)
        auto = tap_layout(3, ci, co)
        cells = [f"**{ms[n]:.1f}** (auto)" if n == auto else f"{ms[n]:.1f}" for n in names]
        gflop = 2 * 27 * ci * co * frames * size * size / 1e9
        lines.append(f"| {frames}x{size}^2, {ci}->{co} | {gflop:.1f} | " + " | ".join(cells)
                     + f" | {torch_time(frames, size, ci, co, repeats):.1f} "
                     f"| {ms['sum, whole chunk'] / ms[auto]:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(f"jax {jax.__version__}, {os.cpu_count()} cores, ms per conv (median)")
    print("\n".join(table(args.repeats)))
    print(f"rerun: {COMMAND}")


if __name__ == "__main__":
    main()
