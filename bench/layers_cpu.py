"""CPU micro-benchmarks for the VDM layers and the "tiny" UNet3D + text encoder.

Run: PYTHONPATH=. .venv/bin/python bench/layers_cpu.py [--variant tiny] [--batch 8] [--size 32]

Times (jit, warm-up, median of 5) a train-like forward+backward of the model, and our GroupNorm
and SpatialConv against ``flax.linen.GroupNorm`` and ``lax`` 3D convolution on a representative
activation, printing ms and ratios.
"""

import argparse
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.models import build_model, count_params, model_config
from vdm_jax.nn import GroupNorm, SpatialConv

COMMAND = "PYTHONPATH=. .venv/bin/python bench/layers_cpu.py"


def median_ms(fn, *args, repeats: int = 5) -> float:
    """Median wall time of ``fn(*args)`` in ms, after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def fwd_bwd(apply):
    """jit of the gradient of a scalar loss wrt (params, input) for ``apply(params, x)``."""
    return jax.jit(jax.grad(lambda p, x: jnp.mean(jnp.square(apply(p, x))), argnums=(0, 1)))


def bench_model(variant: str, b: int, t: int, size: int, tokens: int) -> None:
    model = build_model(model_config(variant))
    keys = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(keys[0], (b, t, size, size, 3))
    times = jax.random.uniform(keys[1], (b,))
    tok = jax.random.randint(keys[2], (b, tokens), 1, 100)
    params = model.init(keys[3], x, times, tok)
    n = count_params(model, x, times, tok)

    def loss(p, x):
        return jnp.mean(jnp.square(model.apply(p, x, times, tok, train=True) - x))

    step = jax.jit(jax.value_and_grad(loss))
    ms = median_ms(step, params, x)
    print(f"model {variant} ({n / 1e6:.2f}M params) fwd+bwd on {x.shape} + {tokens} tokens: "
          f"{ms:.1f} ms/step")


def bench_groupnorm(shape) -> None:
    x = jax.random.normal(jax.random.key(1), shape)
    groups = min(32, shape[-1] // 4)
    ours, ref = GroupNorm(groups), nn.GroupNorm(groups, epsilon=1e-5)
    p = ours.init(jax.random.key(0), x)
    for label, fn in (("fwd", lambda m: jax.jit(m.apply)), ("fwd+bwd", lambda m: fwd_bwd(m.apply))):
        a, r = median_ms(fn(ours), p, x), median_ms(fn(ref), p, x)
        print(f"GroupNorm {label} {shape}: ours {a:.2f} ms, flax {r:.2f} ms, "
              f"flax/ours = {r / a:.2f}x")


def bench_spatial_conv(shape, features: int) -> None:
    x = jax.random.normal(jax.random.key(2), shape)
    conv = SpatialConv(features)
    p = conv.init(jax.random.key(0), x)

    def lax3d(p, x):
        k = nn.meta.unbox(p)["params"]["kernel"][None]
        y = jax.lax.conv_general_dilated(
            x, k, (1, 1, 1), ((0, 0), (1, 1), (1, 1)),
            dimension_numbers=("NDHWC", "DHWIO", "NDHWC"),
        )
        return y + nn.meta.unbox(p)["params"]["bias"]

    for label, wrap in (("fwd", jax.jit), ("fwd+bwd", fwd_bwd)):
        a, r = median_ms(wrap(conv.apply), p, x), median_ms(wrap(lax3d), p, x)
        print(f"SpatialConv {label} {shape}->{features}: ours {a:.2f} ms, lax conv3d {r:.2f} ms,"
              f" conv3d/ours = {r / a:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=8)
    args = parser.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.device_count()}")
    bench_groupnorm((args.batch, args.frames, args.size, args.size, 64))
    bench_spatial_conv((args.batch, args.frames, args.size, args.size, 32), 32)
    bench_model(args.variant, args.batch, args.frames, args.size, args.tokens)
    print(f"rerun: {COMMAND} --variant {args.variant} --batch {args.batch} "
          f"--frames {args.frames} --size {args.size} --tokens {args.tokens}")


if __name__ == "__main__":
    main()
