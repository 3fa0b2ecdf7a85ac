"""FLOP counts for the benchmarks: XLA's cost analysis of a program with every scan unrolled, and
an analytic matmul count for Latte to check it against.

XLA's ``cost_analysis()`` counts a while loop's body once, whatever its trip count, so a model
whose blocks are an ``nn.scan`` would be under-counted by the depth. :func:`unrolled_flops`
rewrites the traced program (a jaxpr) so that every ``scan``, at any nesting depth (inside jit,
remat, cond, ...), is fully unrolled, compiles that and reads its ``flops``; XLA then sees each
iteration as straight-line code and counts it. The rewritten program computes the same values.
:func:`scaled_flops` skips the second compilation (for ``--quick`` runs).
"""

import jax
import jax.extend.core as jcore


def _unroll_param(value):
    if isinstance(value, jcore.ClosedJaxpr):
        return jcore.ClosedJaxpr(_unroll_jaxpr(value.jaxpr), value.consts)
    if isinstance(value, jcore.Jaxpr):
        return _unroll_jaxpr(value)
    if type(value) is tuple:  # e.g. cond branches (not named tuples such as conv dimensions)
        return tuple(_unroll_param(v) for v in value)
    return value


def _unroll_eqn(eqn):
    params = {k: _unroll_param(v) for k, v in eqn.params.items()}
    if eqn.primitive.name == "scan":
        params["unroll"] = max(int(params["length"]), 1)
    return eqn.replace(params=params)


def _unroll_jaxpr(jaxpr):
    return jaxpr.replace(eqns=[_unroll_eqn(e) for e in jaxpr.eqns])


def xla_flops(program) -> float:
    """``flops`` of a lowered or compiled program's cost analysis (a loop body counts once)."""
    cost = program.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", 0.0))


def has_loops(compiled) -> bool:
    """Whether the optimised HLO still contains a while loop."""
    return " while(" in compiled.as_text()


def _lower_unrolled(fn, *args):
    """``jax.jit(fn).lower(*args)`` with every ``lax.scan`` unrolled (flat arguments)."""
    closed = jax.make_jaxpr(fn)(*args)
    program = jcore.jaxpr_as_fun(jcore.ClosedJaxpr(_unroll_jaxpr(closed.jaxpr), closed.consts))
    return jax.jit(program).lower(*jax.tree.leaves(args))


def unrolled_flops(fn, *args) -> float:
    """XLA's FLOP count of ``fn(*args)`` compiled with every ``lax.scan`` unrolled: exact, at
    the price of a second compilation."""
    compiled = _lower_unrolled(fn, *args).compile()
    if has_loops(compiled):
        print("  warning: a loop survived unrolling (not a scan); its body is counted once")
    return xla_flops(compiled)


def scaled_flops(compiled, fn, *args) -> float:
    """``compiled``'s count times the factor by which unrolling multiplies the count of the
    lowered (not yet optimised) program: no second compilation. On the Latte of the benchmark
    it is within 0.1% of :func:`unrolled_flops`; on the ``--quick`` one within 3%."""
    looped = xla_flops(jax.jit(fn).lower(*args))
    return xla_flops(compiled) * xla_flops(_lower_unrolled(fn, *args)) / looped


def latte_forward_flops(*, hidden: int, layers: int, batch: int, frames: int, height: int,
                        width: int, patch: int, in_channels: int, out_channels: int,
                        caption_channels: int, context_len: int, mlp_ratio: float = 4.0) -> float:
    """Analytic forward FLOPs (2 per multiply-add) of a text-conditioned Latte (variant 1,
    ``layers`` spatial/temporal pairs): the linear layers plus the attention score and value
    products. Elementwise work (norms, softmax, GELU, adaLN) is left out; it is a few percent.

    Per pair, with ``N`` tokens of width ``d``: self-attention projections ``4 N d^2`` twice
    (spatial, temporal), cross-attention q/out ``2 N d^2``, two MLPs ``2 * 2 r N d^2``; the
    attention products ``2 d`` per (query, key) pair: ``S^2`` per frame spatially (``S`` patches
    a frame), ``T^2`` per patch position temporally, ``S * L`` per frame for the caption.
    """
    d, s = hidden, (height // patch) * (width // patch)
    frames_total = batch * frames
    n = frames_total * s
    linear = n * d * d * (4 + 2 + 4 + 4 * mlp_ratio)
    cross_kv = 2 * batch * context_len * d * d
    attention = 2 * d * (frames_total * s * s + batch * s * frames * frames + n * context_len)
    per_pair = linear + cross_kv + attention
    outside = n * d * patch * patch * (in_channels + out_channels)  # patch embed, proj_out
    outside += batch * context_len * (caption_channels * d + d * d)  # caption projection
    return 2.0 * (layers * per_pair + outside)
