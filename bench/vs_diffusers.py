"""vdm_jax vs diffusers (PyTorch) on this CPU: the same configurations, side by side.

Run: PYTHONPATH=. .venv/bin/python bench/vs_diffusers.py
     [--models latte,unet3d,causal_vae,image_vae] [--repeats 5] [--quick] [--json OUT]
     [--torch-threads N] [--malloc-defaults]

For each model with a diffusers counterpart (configurations in ``bench/_diffusers_cases.py``):
build the diffusers module with random weights, ``save_pretrained`` it, load it with
``vdm_jax.convert.load_diffusers``, check both give the same output on the same input (relative
error printed; a row whose error exceeds 1e-3 is reported and not timed), then time both in this
process, alternating one call of each per round, after a warm-up round, median of ``--repeats``:

* latte and unet3d (ModelScope's text-to-video UNet): one sampling-step forward, and a
  training step (loss = mean square of the output, gradients with respect to every parameter;
  torch ``loss.backward()``). Ours recomputes Latte's attention in the backward pass
  (``remat="dots_with_no_batch_dims_saveable"``), as torch's CPU
  ``scaled_dot_product_attention`` does; the UNet keeps matmul and conv outputs and recomputes
  the elementwise work (``remat="dots_saveable"``).
* causal_vae (CogVideoX VAE) and image_vae (SD VAE on every frame): encode, posterior mode,
  decode.

Both frameworks share the process's allocator: freed memory is kept in it
(:func:`vdm_jax.memory.keep_freed_memory`, as the scripts do on CPU) unless
``--malloc-defaults``. torch runs with ``torch.set_num_threads(os.cpu_count())``
(``--torch-threads`` changes it), in eval mode, under ``no_grad`` for the forward-only rows;
the jax side is the jitted function (compile time reported apart, as lower + compile seconds),
waited on with ``block_until_ready``.

FLOPs, for both frameworks' GFLOP/s, come from XLA's cost analysis of the compiled jax program.
It counts a loop's body once, so when the compiled program still has a loop (Latte's scanned
blocks; the causal VAE's frame-batch scan when it runs more than once) the count is taken from
the same program compiled with every scan unrolled (``bench/_flops.py``; ``--quick`` scales the
count by the unroll factor of the lowered program instead of compiling twice). Latte's is
printed next to an analytic matmul + attention count (they agree within 1%).
"% peak" is against the faster of a jitted ``jnp.dot`` and ``torch.mm`` of two square float32
matrices, measured in the same run. Ratio = diffusers time / vdm_jax time (> 1: vdm_jax faster).
"""

import argparse
import os
import sys
import tempfile

from bench._diffusers_cases import BUILDERS, CONFIGS
from bench._flops import has_loops, scaled_flops, unrolled_flops, xla_flops
from bench._timing import (
    alternating_medians,
    blocking,
    compile_timed,
    finish_report,
    machine,
    matmul_peak,
)
from vdm_jax.memory import keep_freed_memory

COMMAND = "PYTHONPATH=. .venv/bin/python bench/vs_diffusers.py"
MAX_REL_ERROR = 1e-3
MATMUL_SIZE = {"full": 2048, "quick": 512}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(BUILDERS),
                        help=f"comma-separated subset of {','.join(BUILDERS)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median)")
    parser.add_argument("--quick", action="store_true", help="tiny configurations (smoke test)")
    parser.add_argument("--json", metavar="OUT", help="write the machine, peak and rows here")
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="glibc's default allocator settings and jax's async CPU dispatch "
                        "(default: freed memory kept in the process, vdm_jax.memory)")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                        help="torch.set_num_threads (default: every core; jax always uses all)")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(BUILDERS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {list(BUILDERS)}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def count_flops(compiled, p, exact: bool) -> tuple[float, str]:
    """``(flops, how)``: XLA's count, from the unrolled program when ``compiled`` has loops
    (``exact=False``: scaled by the unroll factor of the lowered program instead)."""
    if not has_loops(compiled):
        return xla_flops(compiled), "cost analysis"
    if exact:
        return unrolled_flops(p.jax_fn, *p.jax_args), "cost analysis, scans unrolled"
    return scaled_flops(compiled, p.jax_fn, *p.jax_args), "cost analysis x unroll factor"


def add_rates(row: dict, secs: dict, flops: float, peak: float) -> None:
    for name, s in secs.items():
        row[f"{name}_ms"] = 1e3 * s
        row[f"{name}_gflops"] = flops / s / 1e9
        row[f"{name}_peak_pct"] = 100 * flops / s / 1e9 / peak
    row["ratio"] = secs["diffusers"] / secs["vdm_jax"]


def run_pass(case, p, repeats: int, peak: float, exact: bool) -> dict:
    """One table row: agreement, compile time, FLOPs and the alternating timings."""
    row = {"model": case.model, "pass": p.name, "shape": case.shape,
           "params_m": case.params / 1e6}
    compiled, row["compile_s"] = compile_timed(p.jax_fn, *p.jax_args)
    call = blocking(compiled, *p.jax_args)
    row["rel_error"] = p.check(p.torch_fn(), call())
    print(f"  {p.name}: relative error {row['rel_error']:.2e}, compiled in "
          f"{row['compile_s']:.1f} s", flush=True)
    if not row["rel_error"] <= MAX_REL_ERROR:  # NaN is a mismatch too
        print(f"  {p.name}: MISMATCH (> {MAX_REL_ERROR:g}), not timed", flush=True)
        return {**row, "status": "mismatch"}
    flops, row["flops_from"] = count_flops(compiled, p, exact)
    row["gflop"] = flops / 1e9
    if p.analytic_flops:
        row["analytic_gflop"] = p.analytic_flops / 1e9
        row["xla_over_analytic"] = flops / p.analytic_flops
    secs = alternating_medians({"diffusers": p.torch_fn, "vdm_jax": call}, repeats)
    add_rates(row, secs, flops, peak)
    return {**row, "status": "ok"}


def run_model(torch, diffusers, name: str, size: str, repeats: int, peak: float) -> list[dict]:
    cfg = CONFIGS[name][size]
    with tempfile.TemporaryDirectory() as folder:
        case = BUILDERS[name](torch, diffusers, cfg, folder)
        print(f"{name} ({case.params / 1e6:.2f}M params) on {case.shape}", flush=True)
        return [run_pass(case, p, repeats, peak, size == "full") for p in case.passes]


def _cell(row: dict, key: str, fmt: str) -> str:
    return format(row[key], fmt) if key in row else "-"


def _rate(row: dict, name: str) -> str:
    if f"{name}_gflops" not in row:
        return "-"
    return f"{row[f'{name}_gflops']:.1f} ({row[f'{name}_peak_pct']:.0f}%)"


HEADER = ("| model | pass | input | params (M) | rel. error | diffusers ms | vdm_jax ms "
          "| diffusers / vdm_jax | GFLOP | diffusers GFLOP/s (% peak) "
          "| vdm_jax GFLOP/s (% peak) | compile s |")


def format_table(rows: list[dict]) -> str:
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for r in rows:
        ratio = _cell(r, "ratio", ".2f") + "x" if "ratio" in r else r.get("status", "-")
        cells = [r["model"], r["pass"], r["shape"], f"{r['params_m']:.2f}",
                 f"{r['rel_error']:.1e}", _cell(r, "diffusers_ms", ".1f"),
                 _cell(r, "vdm_jax_ms", ".1f"), ratio, _cell(r, "gflop", ".2f"),
                 _rate(r, "diffusers"), _rate(r, "vdm_jax"), f"{r['compile_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flop_notes(rows: list[dict]) -> list[str]:
    notes = []
    for r in rows:
        if "gflop" not in r:
            continue
        line = f"{r['model']} {r['pass']}: {r['gflop']:.2f} GFLOP ({r['flops_from']})"
        if "analytic_gflop" in r:
            line += (f"; analytic matmul + attention count {r['analytic_gflop']:.2f} GFLOP, "
                     f"XLA / analytic = {r['xla_over_analytic']:.2f}")
        notes.append(line)
    return notes


def rerun_command(args: argparse.Namespace) -> str:
    cmd = f"{COMMAND} --models {','.join(args.models)} --repeats {args.repeats}"
    cmd += " --quick" if args.quick else ""
    cmd += " --malloc-defaults" if args.malloc_defaults else ""
    cmd += f" --torch-threads {args.torch_threads}" if args.torch_threads != os.cpu_count() else ""
    return cmd + (f" --json {args.json}" if args.json else "")


def print_header(info: dict, peak: dict) -> None:
    print(f"machine: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable); "
          f"jax {info['jax']} ({info['jax_device']}), torch {info['torch']} "
          f"({info['torch_threads']} threads), diffusers {info['diffusers']}; "
          f"allocator: {info['allocator']}")
    print(f"matmul peak ({peak['n']}^3 float32): jnp.dot {peak['jnp.dot']:.1f} GFLOP/s, "
          f"torch.mm {peak['torch.mm']:.1f} GFLOP/s; peak = {peak['peak']:.1f}", flush=True)
    if info["load_average"] > 0.5:
        print(f"warning: load average {info['load_average']:.2f} before the run; other work "
              "shares the cores and the timings (torch's most: its threads wait for each other "
              "at every op) are contended", flush=True)


def main(argv=None) -> dict:
    """Runs the benchmark; returns ``{"machine", "matmul_peak", "rows", "command"}``."""
    args = parse_args(argv)
    if not args.malloc_defaults:  # both frameworks share this process and its allocator
        keep_freed_memory()
    import diffusers
    import torch

    torch.set_num_threads(args.torch_threads)
    size = "quick" if args.quick else "full"
    info = machine(torch)
    peak = matmul_peak(torch, MATMUL_SIZE[size], args.repeats)
    print_header(info, peak)
    rows = []
    for name in args.models:
        rows += run_model(torch, diffusers, name, size, args.repeats, peak["peak"])
    print()
    print(format_table(rows))
    print()
    for note in flop_notes(rows):
        print(note)
    report = {"machine": info, "matmul_peak": peak, "rows": rows, "command": rerun_command(args)}
    return finish_report(report, args.json)


if __name__ == "__main__":
    sys.exit(any(r["status"] != "ok" for r in main()["rows"]))
