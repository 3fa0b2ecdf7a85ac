"""``python -m vdm_jax.convert --src DIFFUSERS_DIR --dst OUT_DIR [--variant fp16] [--overwrite]``

Converts a diffusers model folder to ``OUT_DIR/params`` (Orbax) + ``OUT_DIR/model_config.json``.
"""

import argparse

import jax

from vdm_jax.convert.diffusers import load_diffusers, save_converted


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m vdm_jax.convert", description=__doc__)
    parser.add_argument("--src", required=True, help="diffusers model folder (config.json)")
    parser.add_argument("--dst", required=True, help="output folder")
    parser.add_argument("--variant", default=None, help="weights variant, e.g. fp16")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --dst")
    args = parser.parse_args(argv)
    model, params = load_diffusers(args.src, variant=args.variant)
    save_converted(args.dst, model, params, overwrite=args.overwrite)
    count = sum(x.size for x in jax.tree.leaves(params))
    print(f"{type(model).__name__}: {count / 1e6:.2f}M parameters -> {args.dst}")


if __name__ == "__main__":
    main()
