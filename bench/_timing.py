"""Timing helpers shared by the side-by-side benchmarks: the machine, a matmul peak measured in
the same process, alternating medians, and timed compilation."""

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp

from vdm_jax.memory import keeping_freed_memory


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(torch) -> dict:
    """CPU, cores and library versions, for the report header and the JSON file."""
    import diffusers

    return {"cpu": cpu_model(), "cores": os.cpu_count(),
            "usable_cores": len(os.sched_getaffinity(0)), "load_average": os.getloadavg()[0],
            "jax": jax.__version__,
            "jax_device": str(jax.devices()[0]), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "diffusers": diffusers.__version__,
            "allocator": ("freed memory kept (vdm_jax.memory)" if keeping_freed_memory()
                          else "glibc defaults, async dispatch")}


def alternating_medians(fns: dict[str, Callable[[], object]], repeats: int,
                        warmup: int = 1) -> dict[str, float]:
    """Median seconds of each zero-argument call, interleaved: warm-up rounds, then ``repeats``
    rounds each calling every function once in turn (so load drifts hit all of them alike).
    Each function must return only when its work is done (``block_until_ready`` for jax)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def compile_timed(fn, *args):
    """``(compiled, seconds)``: ``jax.jit(fn)`` lowered and compiled for ``args``."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def blocking(compiled, *args) -> Callable[[], object]:
    """A zero-argument call of ``compiled(*args)`` that waits for the result."""
    return lambda: jax.block_until_ready(compiled(*args))


def matmul_peak(torch, n: int, repeats: int) -> dict[str, float]:
    """GFLOP/s of an ``n x n @ n x n`` float32 matmul, jitted ``jnp.dot`` and ``torch.mm``,
    timed alternately (median); ``peak`` is the larger, the reference for "% of peak"."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    dot, _ = compile_timed(jnp.dot, a, b)
    ta, tb = torch.randn(n, n), torch.randn(n, n)
    secs = alternating_medians({"jnp.dot": blocking(dot, a, b),
                                "torch.mm": lambda: torch.mm(ta, tb)}, max(repeats, 5))
    rates = {name: 2 * n**3 / s / 1e9 for name, s in secs.items()}
    return {**rates, "peak": max(rates.values()), "n": n}


def child_json(script: str, args: list[str], env: dict[str, str]) -> object:
    """Runs ``script args`` in a fresh Python process (XLA reads its flags once per process)
    with jax's XLA settings taken from ``env`` alone (``XLA_FLAGS`` and
    ``VDM_JAX_XLA_DEFAULTS`` of this process dropped) and the repository importable; returns
    the JSON on its last line of output. A failing child raises with its stderr."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    child_env = {k: v for k, v in os.environ.items()
                 if k not in ("XLA_FLAGS", "VDM_JAX_XLA_DEFAULTS")}
    child_env.update(env)
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, child_env.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, script, *args], env=child_env, capture_output=True,
                         text=True)
    if out.returncode:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def finish_report(report: dict, json_path: str | None) -> dict:
    """Writes ``report`` to ``json_path`` (when given) and prints its rerun command."""
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
    print(f"\nrerun: {report['command']}")
    return report
