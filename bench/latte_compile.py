"""Compile time of a Latte train step: the blocks are one ``nn.scan``, so it stays flat in depth.

Run: PYTHONPATH=. .venv/bin/python bench/latte_compile.py [--size XL/2] [--frames 16] [--run]

Lowers and compiles (no parameters allocated) the AdamW train step of a text-conditioned
Latte on ``(1, frames, 32, 32, 4)`` latents with 16 caption tokens, for the requested size and
for S/2, and prints both compile times and their ratio. ``--run`` also allocates the model and
times one step.
"""

import argparse
import time

import jax
import jax.numpy as jnp
import optax

from vdm_jax.models import latte

COMMAND = "PYTHONPATH=. .venv/bin/python bench/latte_compile.py"


def train_step_fn(model, optimizer):
    def loss(params, x, t, ctx):
        return jnp.mean(jnp.square(model.apply(params, x, t, ctx) - jnp.concatenate([x, x], -1)))

    def step(params, opt_state, x, t, ctx):
        value, grads = jax.value_and_grad(loss)(params, x, t, ctx)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax.jit(step, donate_argnums=(0, 1))


def compile_step(size: str, frames: int, remat: str):
    model = latte.LatteTransformer(**latte.VARIANTS[size], caption_channels=64, remat=remat)
    x = jax.ShapeDtypeStruct((1, frames, 32, 32, 4), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    ctx = jax.ShapeDtypeStruct((1, 16, 64), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.key(0), x, t, ctx)
    optimizer = optax.adamw(1e-4)
    opt_state = jax.eval_shape(optimizer.init, params)
    step = train_step_fn(model, optimizer)
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, x, t, ctx).compile()
    seconds = time.perf_counter() - start
    count = sum(a.size for a in jax.tree.leaves(params))
    return model, optimizer, compiled, seconds, count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="XL/2", choices=sorted(latte.VARIANTS))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--remat", default="full", choices=sorted(latte.REMAT_POLICIES))
    parser.add_argument("--run", action="store_true")
    args = parser.parse_args()
    rows = {}
    for size in dict.fromkeys((args.size, "S/2")):
        model, optimizer, compiled, seconds, count = compile_step(size, args.frames, args.remat)
        rows[size] = seconds
        print(f"Latte-{size} ({count / 1e6:.2f}M params, {2 * model.num_layers} blocks) train "
              f"step on (1, {args.frames}, 32, 32, 4) latents, remat={args.remat}: "
              f"compiled in {seconds:.1f} s", flush=True)
        if args.run and size == args.size:
            key = jax.random.key(0)
            x = jax.random.normal(key, (1, args.frames, 32, 32, 4))
            t, ctx = jnp.full((1,), 0.5), jax.random.normal(key, (1, 16, 64))
            params = jax.jit(model.init)(key, x, t, ctx)
            opt_state = optimizer.init(params)
            for i in range(2):
                start = time.perf_counter()
                params, opt_state, loss = compiled(params, opt_state, x, t, ctx)
                jax.block_until_ready(loss)
                print(f"  step {i}: {time.perf_counter() - start:.1f} s", flush=True)
    if len(rows) == 2:
        print(f"compile time {args.size} / S/2 = {rows[args.size] / rows['S/2']:.2f}x "
              f"(scan: flat in depth)")
    print(f"rerun: {COMMAND} --size {args.size} --frames {args.frames} --remat {args.remat}"
          + (" --run" if args.run else ""))


if __name__ == "__main__":
    main()
