"""XLA CPU flags on whole models: vdm_jax's setting against jax's default and against the
convolution flag alone, timing our side of ``bench/vs_diffusers.py``.

Run: PYTHONPATH=. .venv/bin/python bench/xla_cpu_flags.py [--models latte,unet3d]
     [--rounds 2] [--repeats 5] [--quick]

XLA reads its flags once per process, so every setting runs in its own child process, the
settings taking turns for ``--rounds`` rounds (so load drifts hit all of them alike). A child
builds each model of ``bench/_diffusers_cases.py`` (random diffusers weights, converted),
compiles every pass (forward and training step, or VAE encode+decode) and prints the median of
``--repeats`` timed calls after a warm-up call. The table shows, per pass, the median over
rounds of each setting and the ratio of jax's default to vdm_jax's. ``--quick`` runs the tiny
configurations (a smoke test).
"""

import argparse
import json
import os
import statistics
import tempfile

COMMAND = "PYTHONPATH=. .venv/bin/python bench/xla_cpu_flags.py"
_YNN = "--xla_cpu_experimental_ynn_fusion_type="
# name -> environment of the child; vdm_jax's own setting is whatever importing it chooses.
SETTINGS = {
    "jax default": {"VDM_JAX_XLA_DEFAULTS": "1"},
    "Eigen convolutions": {"XLA_FLAGS": _YNN + "-individual_convolution"},
    "vdm_jax": {},
}
BASELINE, OURS = "jax default", "vdm_jax"


def child(models: list[str], repeats: int, size: str) -> None:
    """Times every pass of ``models`` in this process; prints one JSON object."""
    from vdm_jax.memory import keep_freed_memory

    keep_freed_memory()
    import diffusers
    import torch

    from bench._diffusers_cases import BUILDERS, CONFIGS
    from bench._timing import alternating_medians, blocking, compile_timed

    times = {}
    for name in models:
        with tempfile.TemporaryDirectory() as folder:
            case = BUILDERS[name](torch, diffusers, CONFIGS[name][size], folder)
        for p in case.passes:
            compiled, _ = compile_timed(p.jax_fn, *p.jax_args)
            times[f"{name} {p.name}"] = alternating_medians(
                {"call": blocking(compiled, *p.jax_args)}, repeats)["call"]
    print(json.dumps({"xla_flags": os.environ.get("XLA_FLAGS", ""), "times": times}))


def run_child(setting: str, models: list[str], repeats: int, quick: bool) -> dict:
    from bench._timing import child_json

    return child_json(__file__, ["--child", "--models", ",".join(models), "--repeats",
                                 str(repeats)] + (["--quick"] if quick else []),
                      SETTINGS[setting])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="latte,unet3d,causal_vae,image_vae")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="tiny configurations (smoke test)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.child:
        return child(models, args.repeats, "quick" if args.quick else "full")
    runs = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        for name in SETTINGS:
            result = run_child(name, models, args.repeats, args.quick)
            runs[name].append(result)
            print(f"round {r + 1}, {name} (XLA_FLAGS={result['xla_flags']!r}): "
                  + ", ".join(f"{k} {1e3 * s:.0f} ms" for k, s in result["times"].items()),
                  flush=True)
    passes = list(runs[OURS][0]["times"])
    medians = {name: {p: statistics.median(r["times"][p] for r in rs) for p in passes}
               for name, rs in runs.items()}
    print("\n| pass | " + " | ".join(f"{n} ms" for n in SETTINGS)
          + f" | {BASELINE} / {OURS} |")
    print("|---" * (len(SETTINGS) + 2) + "|")
    for p in passes:
        cells = [f"{1e3 * medians[n][p]:.0f}" for n in SETTINGS]
        print(f"| {p} | " + " | ".join(cells)
              + f" | {medians[BASELINE][p] / medians[OURS][p]:.2f}x |")
    rerun = f"{COMMAND} --models {','.join(models)} --rounds {args.rounds} --repeats {args.repeats}"
    print(f"\nrerun: {rerun}" + (" --quick" if args.quick else ""))
    return {"medians": medians,
            "xla_flags": {name: rs[0]["xla_flags"] for name, rs in runs.items()}}


if __name__ == "__main__":
    main()
