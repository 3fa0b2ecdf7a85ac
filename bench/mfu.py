"""Model FLOPs utilisation (MFU) of full training steps on one accelerator.

Run: PYTHONPATH=. .venv/bin/python bench/mfu.py [--models latte,unet3d] [--batch N]
     [--steps 10] [--dtype bfloat16] [--remat none] [--quick] [--json OUT]

Each model's training step is the one a trainer runs: forward, mean-square loss against a target,
gradients of every parameter, an AdamW (optax) update; jitted with the parameters and optimiser
state donated, compute in ``--dtype`` (the model's ``dtype``; parameters stay float32, drawn from
a normal distribution: the work does not depend on their values), attention through the
library's default path (``vdm_jax.nn.attention.dot_product_attention``: on GPU
``jax.nn.dot_product_attention`` with ``implementation=None``, which jax 0.10 resolves to its
XLA softmax path, not cuDNN; the path the compiled program took is reported, a cuDNN fused
kernel showing up as a custom call).

* latte: Latte-XL/2 (``latte.VARIANTS["XL/2"]``, 14 spatial/temporal pairs) on 16x32x32x4
  latents (a 256x256 16-frame video), batch 4, conditioned like the text-to-video Latte:
  adaLN-single and 120 caption embeddings 4096 wide (T5-XXL's; random, the text encoder is not
  part of the step), as ``configs/latte_shapes.py``.
* unet3d: ModelScope's text-to-video UNet (``unet3d_condition.VARIANTS["modelscope"]``, 1.4B) on
  16x32x32x4 latents with 77x1024 text embeddings, batch 1.

Timing: lower + compile seconds, two warm-up steps, then the median of ``--steps`` steps, each
waited on with ``block_until_ready``. FLOPs per step: XLA's cost analysis of the step compiled
with every scan unrolled (``bench/_flops.py``; a loop body would otherwise count once); for Latte
also the analytic matmul + attention count (3x the forward). With ``--remat`` other than none the
XLA count includes the recomputation (hardware FLOPs), the analytic one does not.
MFU = FLOPs / step time / peak, against two peaks: a jitted ``jnp.dot`` of two square matrices
in ``--dtype`` measured in this run (8192 wide; 512 with ``--quick``), and the card's datasheet
dense bf16 rate where ``device_kind`` is in the table. On GPU the device's peak allocation so far
(``memory_stats``) is printed after each model, with the compiled step's own footprint.
``--quick``: tiny versions of both models, float32 by default, one compilation each (the FLOP
count scaled by the unroll factor of the lowered program, as ``bench/vs_diffusers.py --quick``).
"""

import argparse
import dataclasses
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench._flops import has_loops, latte_forward_flops, scaled_flops, unrolled_flops, xla_flops
from bench._timing import alternating_medians, blocking, compile_timed, finish_report
from vdm_jax.models import latte, unet3d_condition
from vdm_jax.nn.remat import REMAT_POLICIES

COMMAND = "PYTHONPATH=. .venv/bin/python bench/mfu.py"
MODELS = ("latte", "unet3d")
WARMUP_STEPS = 2
MATMUL_SIZE = {"full": 8192, "quick": 512}
# Dense (not sparse) bf16 tensor-core TFLOP/s from the datasheets, by jax's device_kind.
DATASHEET_BF16_TFLOPS = {
    "NVIDIA H100 80GB HBM3": 989.4,  # H100 SXM
    "NVIDIA H200": 989.4,
    "NVIDIA A100-SXM4-80GB": 312.0,
    "NVIDIA A100-SXM4-40GB": 312.0,
}
# Latte: the text-to-video model's caption embeddings (T5-XXL); ModelScope: OpenCLIP's 77 tokens.
SIZES = {
    "latte": {"full": dict(batch=4, frames=16, size=32, context=(120, 4096)),
              "quick": dict(batch=1, frames=4, size=8, context=(8, 32))},
    "unet3d": {"full": dict(batch=1, frames=16, size=32, context=(77, 1024)),
               "quick": dict(batch=1, frames=4, size=8, context=(8, 32))},
}

# The "tiny" variant cut to one level (cross-attention down, mid, cross-attention up): every
# block kind once, half the compile time.
QUICK_UNET3D = dict(unet3d_condition.VARIANTS["tiny"], block_out_channels=(32,),
                    down_block_types=("CrossAttnDownBlock3D",),
                    up_block_types=("CrossAttnUpBlock3D",))


@dataclasses.dataclass
class Case:
    """A model and its step inputs ``(x, t, context)`` and regression target, as shapes."""

    name: str
    model: nn.Module
    inputs: tuple
    target: jax.ShapeDtypeStruct
    analytic_flops: float | None = None


def latte_model(quick: bool, dtype, remat: str) -> latte.LatteTransformer:
    size = dict(hidden_size=64, num_layers=2, num_heads=4, patch_size=2) if quick \
        else latte.VARIANTS["XL/2"]
    caption = SIZES["latte"]["quick" if quick else "full"]["context"][1]
    return latte.LatteTransformer(**size, sample_size=8 if quick else 32, adaln="single",
                                  caption_channels=caption, dtype=dtype, remat=remat)


def unet3d_model(quick: bool, dtype, remat: str) -> unet3d_condition.UNet3DCondition:
    variant = QUICK_UNET3D if quick else unet3d_condition.VARIANTS["modelscope"]
    return unet3d_condition.UNet3DCondition(**variant, dtype=dtype, remat=remat)


def build_case(name: str, quick: bool, batch: int | None, dtype, remat: str) -> Case:
    cfg = SIZES[name]["quick" if quick else "full"]
    b = batch or cfg["batch"]
    model = (latte_model if name == "latte" else unet3d_model)(quick, dtype, remat)
    f, s, (n, width) = cfg["frames"], cfg["size"], cfg["context"]
    inputs = (jax.ShapeDtypeStruct((b, f, s, s, 4), jnp.float32),
              jax.ShapeDtypeStruct((b,), jnp.float32),
              jax.ShapeDtypeStruct((b, n, width), jnp.float32))
    target = jax.eval_shape(model.apply, init_shapes(model, inputs), *inputs)
    analytic = None
    if name == "latte":
        analytic = 3 * latte_forward_flops(
            hidden=model.hidden_size, layers=model.num_layers, batch=b, frames=f, height=s,
            width=s, patch=model.patch_size, in_channels=model.in_channels,
            out_channels=model.out_channels, caption_channels=width, context_len=n)
    return Case(name, model, inputs, target, analytic)


def init_fn(model):
    """``(key, *inputs) -> params``: float32 parameters, logical-partitioning boxes removed."""
    return lambda key, *inputs: nn.meta.unbox(model.init(key, *inputs))


def init_shapes(model, inputs):
    return jax.eval_shape(init_fn(model), jax.random.key(0), *inputs)


def random_params(shapes):
    """Normal(0, 0.02) parameters of the initialised shapes: the work does not depend on the
    values, and ``model.init`` would compile the forward once more."""
    leaves, tree = jax.tree.flatten(shapes)
    sizes = [s.size for s in leaves]

    def sample(key):  # one draw cut into leaves: a draw per leaf compiles for minutes on CPU
        flat = 0.02 * jax.random.normal(key, (sum(sizes),), jnp.float32)
        parts = jnp.split(flat, np.cumsum(sizes)[:-1])
        return [p.reshape(s.shape).astype(s.dtype) for p, s in zip(parts, leaves, strict=True)]

    return jax.tree.unflatten(tree, jax.jit(sample)(jax.random.key(0)))


def train_step(model, optimizer):
    """``(params, opt_state, x, t, context, target) -> (params, opt_state, loss)``."""
    def loss_fn(params, x, t, context, target):
        return jnp.mean(jnp.square(model.apply(params, x, t, context) - target))

    def step(params, opt_state, x, t, context, target):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, t, context, target)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def compile_donated(step, *args):
    """``(compiled, seconds)``: ``step`` jitted with its state donated, lowered and compiled."""
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(*args).compile()
    return compiled, time.perf_counter() - start


def random_inputs(case: Case, key):
    """Normal latents, context and target; times uniform in [0, 1]."""
    kx, kt, kc, ky = jax.random.split(key, 4)
    x, t, ctx = case.inputs
    return (jax.random.normal(kx, x.shape), jax.random.uniform(kt, t.shape),
            jax.random.normal(kc, ctx.shape), jax.random.normal(ky, case.target.shape))


def time_steps(compiled, params, opt_state, batch, steps: int) -> tuple[list[float], float]:
    """Seconds of each of ``steps`` steps after the warm-up ones, and the last loss."""
    times = []
    for i in range(WARMUP_STEPS + steps):
        start = time.perf_counter()
        params, opt_state, loss = compiled(params, opt_state, *batch)
        jax.block_until_ready((params, opt_state, loss))
        if i >= WARMUP_STEPS:
            times.append(time.perf_counter() - start)
    return times, float(loss)


def attention_path(compiled) -> str:
    """Which attention kernel the compiled program runs."""
    if "cudnn$fmha" in compiled.as_text():
        return "cuDNN fused (custom call; its FLOPs may be missing from XLA's count)"
    if jax.default_backend() == "cpu":
        return "einsum (the library's CPU path)"
    return "XLA (jax.nn.dot_product_attention, implementation=None)"


def count_flops(step, compiled, shapes, exact: bool) -> tuple[float, float, str]:
    """``(flops, looped, how)``: XLA's count with every scan unrolled (``exact=False``: the
    compiled count times the unroll factor of the lowered program, no second compilation), and
    of ``compiled`` as it is (each loop body once)."""
    looped = xla_flops(compiled)
    if not has_loops(compiled):
        return looped, looped, "cost analysis"
    if exact:
        return unrolled_flops(step, *shapes), looped, "cost analysis, scans unrolled"
    return scaled_flops(compiled, step, *shapes), looped, "cost analysis x unroll factor"


def program_bytes(compiled) -> int | None:
    """Arguments + outputs + temporaries of the compiled step, donated buffers counted once."""
    m = compiled.memory_analysis()
    if m is None:
        return None
    return (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
            - m.alias_size_in_bytes)


def peak_bytes() -> int | None:
    """The device's peak allocation so far in this process (GPU; None where unsupported)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def run_case(case: Case, steps: int, peaks: dict, exact: bool = True) -> dict:
    """One row: compile, FLOPs, timed steps, MFU against each known peak."""
    optimizer = optax.adamw(1e-4)
    step = train_step(case.model, optimizer)
    params = init_shapes(case.model, case.inputs)
    shapes = (params, jax.eval_shape(optimizer.init, params), *case.inputs, case.target)
    compiled, compile_s = compile_donated(step, *shapes)
    print(f"{case.name}: compiled in {compile_s:.1f} s", flush=True)
    flops, looped, how = count_flops(step, compiled, shapes, exact)
    params = random_params(shapes[0])
    leaves = jax.tree.leaves(params)
    row = {"model": case.name, "params_m": sum(a.size for a in leaves) / 1e6,
           "param_dtypes": sorted({str(a.dtype) for a in leaves}),
           "batch": case.inputs[0].shape[0], "input": "x".join(map(str, case.inputs[0].shape[1:])),
           "context": "x".join(map(str, case.inputs[2].shape[1:])),
           "dtype": jnp.dtype(case.model.dtype).name, "remat": case.model.remat,
           "compile_s": compile_s, "tflop": flops / 1e12, "looped_tflop": looped / 1e12,
           "flops_from": how,
           "attention": attention_path(compiled), "program_gib": _gib(program_bytes(compiled))}
    if case.analytic_flops:
        row["analytic_tflop"] = case.analytic_flops / 1e12
    batch = random_inputs(case, jax.random.key(1))
    times, row["loss"] = time_steps(compiled, params, jax.jit(optimizer.init)(params), batch,
                                    steps)
    row["step_ms"] = 1e3 * statistics.median(times)
    row["tflops"] = flops / statistics.median(times) / 1e12
    for name, peak in peaks.items():
        row[f"mfu_{name}"] = row["tflops"] / peak if peak else None
    row["peak_gib"] = _gib(peak_bytes())
    return row


def _gib(n: int | None) -> float | None:
    return None if n is None else n / 2**30


def matmul_tflops(n: int, dtype, repeats: int = 10) -> float:
    """TFLOP/s of a jitted ``jnp.dot`` of two ``n x n`` matrices in ``dtype`` (median)."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), dtype)
    dot, _ = compile_timed(jnp.dot, a, b)
    secs = alternating_medians({"dot": blocking(dot, a, b)}, max(repeats, 5))["dot"]
    return 2 * n**3 / secs / 1e12


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help=f"comma-separated subset of {','.join(MODELS)}")
    parser.add_argument("--batch", type=int, help="batch of every model (default: latte 4, "
                        "unet3d 1; 1 with --quick)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median)")
    parser.add_argument("--dtype", help="compute dtype (default bfloat16; float32 with --quick)")
    parser.add_argument("--remat", default="none", choices=sorted(REMAT_POLICIES))
    parser.add_argument("--quick", action="store_true", help="tiny models (smoke test)")
    parser.add_argument("--json", metavar="OUT", help="write the device, peaks and rows here")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(args.models) - set(MODELS):
        parser.error(f"unknown models {sorted(set(args.models) - set(MODELS))}; "
                     f"choose from {list(MODELS)}")
    if args.steps < 1 or (args.batch is not None and args.batch < 1):
        parser.error("--steps and --batch must be at least 1")
    args.dtype = args.dtype or ("float32" if args.quick else "bfloat16")
    return args


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


HEADER = ("| model | params (M) | batch | input | dtype | compile s | step ms | TFLOP/step "
          "| achieved TFLOP/s | MFU vs measured matmul | MFU vs datasheet |")


def format_table(rows: list[dict]) -> str:
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for r in rows:
        cells = [r["model"], f"{r['params_m']:.1f}", str(r["batch"]),
                 f"{r['input']} + {r['context']} text", r["dtype"], f"{r['compile_s']:.1f}",
                 f"{r['step_ms']:.1f}", f"{r['tflop']:.4g}", f"{r['tflops']:.4g}",
                 _fmt(r["mfu_measured"], ".1%"), _fmt(r["mfu_datasheet"], ".1%")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(rows: list[dict]) -> list[str]:
    lines = []
    for r in rows:
        line = (f"{r['model']}: {r['tflop']:.4g} TFLOP/step ({r['flops_from']}; "
                f"{r['looped_tflop']:.4g} counting each loop body once)")
        if "analytic_tflop" in r:
            line += (f"; analytic 3 x forward {r['analytic_tflop']:.4g} "
                     f"(XLA / analytic {r['tflop'] / r['analytic_tflop']:.2f})")
        lines.append(line)
        lines.append(f"  attention: {r['attention']}; remat {r['remat']}; parameters "
                     f"{'/'.join(r['param_dtypes'])}; loss {r['loss']:.4g}; program "
                     f"{_fmt(r['program_gib'], '.2f')} GiB; device peak so far "
                     f"{_fmt(r['peak_gib'], '.2f')} GiB")
    return lines


def rerun_command(args: argparse.Namespace) -> str:
    cmd = f"{COMMAND} --models {','.join(args.models)} --steps {args.steps} --dtype {args.dtype}"
    cmd += f" --batch {args.batch}" if args.batch else ""
    cmd += f" --remat {args.remat}" if args.remat != "none" else ""
    cmd += " --quick" if args.quick else ""
    return cmd + (f" --json {args.json}" if args.json else "")


def measure_peaks(quick: bool, dtype) -> dict:
    """Measured matmul and datasheet TFLOP/s (the datasheet one None off a known GPU)."""
    n = MATMUL_SIZE["quick" if quick else "full"]
    kind = jax.devices()[0].device_kind
    peaks = {"measured": matmul_tflops(n, dtype), "datasheet": DATASHEET_BF16_TFLOPS.get(kind)}
    print(f"device: {kind} ({jax.default_backend()}), jax {jax.__version__}")
    print(f"matmul {n}^3 {jnp.dtype(dtype).name}: {peaks['measured']:.4g} TFLOP/s measured; "
          f"datasheet dense bf16: {_fmt(peaks['datasheet'], '.1f')} TFLOP/s", flush=True)
    return peaks


def main(argv=None) -> dict:
    """Runs the benchmark; returns ``{"device", "peaks", "rows", "command"}``."""
    args = parse_args(argv)
    dtype = jnp.dtype(args.dtype)
    peaks = measure_peaks(args.quick, dtype)
    rows = [run_case(build_case(name, args.quick, args.batch, dtype, args.remat), args.steps,
                     peaks, exact=not args.quick) for name in args.models]
    print()
    print(format_table(rows))
    print()
    print("\n".join(notes(rows)))
    report = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend(),
              "jax": jax.__version__, "peaks_tflops": peaks, "rows": rows,
              "command": rerun_command(args)}
    return finish_report(report, args.json)


if __name__ == "__main__":
    main()
