"""What context parallelism buys: per-device memory and communication of a long-video train
step for context = 1, 2, 4, 8, read from compiled programs (nothing is run).

Run: PYTHONPATH=. .venv/bin/python bench/sharding.py [--model latte unet] [--modes ring divided]
     [--quick]

For each model, scheme and context size c, the AdamW train step is compiled for c of 8 fake
CPU devices on the mesh ``(data, fsdp, context, tensor) = (1, 1, c, 1)``: the clip's tokens
(or frames) split over ``context`` as ``mesh.context_parallel`` does, parameters and optimizer
state split over the same devices (FSDP on the context group, ``fsdp_cp`` rules with the
parameter names moved to ``context``). The table gives per-device argument and temp (activation
and gradient workspace) bytes from ``compiled.memory_analysis()`` and the bytes each device
sends or receives in collectives per step, summed over the HLO's all-to-all, all-gather,
all-reduce, reduce-scatter and collective-permute results; layer scans are unrolled before
compiling so every layer's collectives are counted. Models: Latte-B/2 on 16x64x64x4 latents
with 16 caption tokens (``--quick``: S/2 on 8x32x32) and the UNet3D ``small`` variant on a
16x64x64 clip (``--quick``: 8x32x32).
"""

import os

os.environ.setdefault("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.extend.core as jcore  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from bench._flops import _unroll_jaxpr  # noqa: E402
from vdm_jax.models import latte, unet3d  # noqa: E402
from vdm_jax.sharding import activate, get_rules, logical_to_mesh_sharding, make_mesh  # noqa: E402

COMMAND = "PYTHONPATH=. .venv/bin/python bench/sharding.py"
CONTEXTS = (1, 2, 4, 8)
COLLECTIVES = ("all-to-all", "all-gather", "all-reduce", "reduce-scatter", "collective-permute")
_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2,
          "s16": 2, "u16": 2, "s8": 1, "u8": 1, "pred": 1}
# FSDP over the context group: the parameter names fsdp_cp puts on "fsdp" go on "context" too.
_PARAM_OVERRIDES = {n: ("fsdp", "context") for n in ("embed", "mlp", "heads", "vocab",
                                                     "conv_out", "conv_in")}


def latte_case(quick: bool):
    size, (t, s) = ("S/2", (8, 32)) if quick else ("B/2", (16, 64))
    model = latte.LatteTransformer(**latte.VARIANTS[size], sample_size=s, caption_channels=64)
    inputs = (jax.ShapeDtypeStruct((1, t, s, s, 4), jnp.float32),
              jax.ShapeDtypeStruct((1,), jnp.float32),
              jax.ShapeDtypeStruct((1, 16, 64), jnp.float32))
    return f"Latte-{size} {t}x{s}x{s}x4", model, inputs


def unet_case(quick: bool):
    t, s = (8, 32) if quick else (16, 64)
    fields = {k: v for k, v in unet3d.VARIANTS["small"].items() if k != "text"}
    model = unet3d.UNet3D(**fields)
    inputs = (jax.ShapeDtypeStruct((1, t, s, s, 3), jnp.float32),
              jax.ShapeDtypeStruct((1,), jnp.float32),
              jax.ShapeDtypeStruct((1, 16, 64), jnp.float32))
    return f"UNet3D small {t}x{s}x{s}x3", model, inputs


CASES = {"latte": latte_case, "unet": unet_case}


def train_step(model, optimizer):
    """Loss, gradients and AdamW update of a denoiser on inputs ``(x, t, context)``."""
    def step(params, opt_state, x, t, context):
        def loss(params):
            out = model.apply({"params": params}, x, t, context)
            return jnp.mean(jnp.square(out[..., : x.shape[-1]] - x))

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return step


def compile_step(model, inputs, context: int, mode: str):
    """The unrolled train step compiled for ``context`` devices; returns the compiled program."""
    mesh = make_mesh((1, 1, context, 1), jax.devices()[:context])
    rules = get_rules("fsdp_cp", _PARAM_OVERRIDES)
    optimizer = optax.adamw(1e-4)
    boxed = jax.eval_shape(lambda *a: model.init(jax.random.key(0), *a)["params"], *inputs)
    boxed_state = (boxed, jax.eval_shape(optimizer.init, boxed))
    state = nn.unbox(boxed_state)
    with activate(mesh, rules, mode):
        state_shardings = logical_to_mesh_sharding(boxed_state, mesh, rules)
        video = NamedSharding(mesh, PartitionSpec(None, "context"))
        replicated = NamedSharding(mesh, PartitionSpec())
        shardings = (*state_shardings, video, replicated, replicated)
        closed = jax.make_jaxpr(train_step(model, optimizer))(*state, *inputs)
        program = jcore.jaxpr_as_fun(jcore.ClosedJaxpr(_unroll_jaxpr(closed.jaxpr),
                                                       closed.consts))
        flat_args = jax.tree.leaves((*state, *inputs))
        flat_shardings = jax.tree.leaves(shardings,
                                         is_leaf=lambda x: isinstance(x, NamedSharding))
        return jax.jit(program, in_shardings=flat_shardings).lower(*flat_args).compile()


def collective_bytes(hlo: str) -> dict[str, int]:
    """Result bytes of each collective kind in optimised HLO text (per device)."""
    totals = dict.fromkeys(COLLECTIVES, 0)
    pattern = re.compile(r"=\s*(\(.*?\)|\S+)\s+(" + "|".join(COLLECTIVES) + r")(-start)?\(")
    for line in hlo.splitlines():
        match = pattern.search(line)
        if not match:
            continue
        for dtype, dims in re.findall(r"(\w+)\[([\d,]*)\]", match.group(1)):
            count = 1
            for d in filter(None, dims.split(",")):
                count *= int(d)
            totals[match.group(2)] += count * _BYTES.get(dtype, 4)
    return totals


def _mib(n: float) -> str:
    return f"{n / 2**20:9.1f}"


def run(case_name: str, model, inputs, modes) -> list[dict]:
    rows = []
    print(f"\n{case_name}")
    print(f"{'scheme':>9} {'context':>7} {'args MiB':>9} {'temp MiB':>9} {'temp/ctx1':>9} "
          f"{'comm MiB':>9} {'compile s':>9}  largest collectives")
    for mode in modes:
        base = None
        for c in CONTEXTS:
            if mode == "ulysses" and getattr(model, "num_heads", 0) % c:
                print(f"{mode:>9} {c:>7}  skipped: {model.num_heads} heads do not split over {c}")
                continue
            start = time.perf_counter()
            compiled = compile_step(model, inputs, c, mode if c > 1 else "none")
            seconds = time.perf_counter() - start
            memory = compiled.memory_analysis()
            comm = collective_bytes(compiled.as_text())
            base = memory.temp_size_in_bytes if c == 1 else base
            ratio = memory.temp_size_in_bytes / base
            top = ", ".join(f"{k} {v / 2**20:.0f}" for k, v in
                            sorted(comm.items(), key=lambda kv: -kv[1])[:2] if v)
            print(f"{mode:>9} {c:>7} {_mib(memory.argument_size_in_bytes)} "
                  f"{_mib(memory.temp_size_in_bytes)} {ratio:9.3f} "
                  f"{_mib(sum(comm.values()))} {seconds:9.1f}  {top}", flush=True)
            rows.append(dict(model=case_name, mode=mode, context=c, temp_ratio=ratio,
                             args=memory.argument_size_in_bytes,
                             temp=memory.temp_size_in_bytes, comm=comm))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", default=["latte", "unet"], choices=sorted(CASES))
    parser.add_argument("--modes", nargs="+", default=["divided", "ring", "ulysses"],
                        choices=["divided", "ring", "ulysses"])
    parser.add_argument("--quick", action="store_true", help="small shapes (a smoke run)")
    args = parser.parse_args()
    for name in args.model:
        run(*CASES[name](args.quick), args.modes)
    print(f"\nrerun: {COMMAND} --model {' '.join(args.model)} --modes {' '.join(args.modes)}"
          + (" --quick" if args.quick else ""))


if __name__ == "__main__":
    main()
