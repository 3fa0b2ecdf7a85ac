"""bench/_flops.py: XLA counts a scan's body once; the unrolled count (and its cheap scaled
estimate) multiply it out, through nested scans, jit and convolutions."""

import jax
import jax.numpy as jnp
import pytest

from bench._flops import has_loops, latte_forward_flops, scaled_flops, unrolled_flops, xla_flops

N, LAYERS, INNER = 64, 6, 3


def nested(x, ws):
    """LAYERS x (INNER matmuls in an inner scan under jit, then a 3x3 conv), N x N."""

    @jax.jit
    def inner(c, w):
        return jax.lax.scan(lambda h, _: (h @ w, None), c, None, length=INNER)[0]

    def layer(c, w):
        c = inner(c, w)
        k = jnp.ones((3, 3, 1, 1), c.dtype)
        y = jax.lax.conv_general_dilated(c[None, :, :, None], k, (1, 1), "SAME",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y[0, :, :, 0], None

    return jax.lax.scan(layer, x, ws)[0]


def test_unrolled_count_multiplies_out_nested_scans():
    x, ws = jnp.ones((N, N)), jnp.ones((LAYERS, N, N))
    matmuls = 2 * N**3 * INNER * LAYERS
    compiled = jax.jit(nested).lower(x, ws).compile()
    assert has_loops(compiled)
    assert xla_flops(compiled) < matmuls / 4  # the loop bodies counted once
    exact = unrolled_flops(nested, x, ws)
    assert exact == pytest.approx(matmuls, rel=0.05)  # + the 3x3 convs' 18 N^2 per layer
    assert scaled_flops(compiled, nested, x, ws) == pytest.approx(exact, rel=0.05)


def test_latte_analytic_count_of_one_linear_layer_pair():
    """No attention cost at one token per frame and one frame: only the linear layers remain."""
    flops = latte_forward_flops(hidden=8, layers=1, batch=1, frames=1, height=2, width=2,
                                patch=2, in_channels=1, out_channels=1, caption_channels=8,
                                context_len=1)
    linear = 8 * 8 * (4 + 2 + 4 + 16)  # self q/k/v/out twice, cross q/out, two 4x MLPs
    attention = 2 * 8 * 3  # spatial, temporal and caption scores + values, one pair each
    outside = 8 * 4 * 2 + 8 * 8 * 2 + 2 * 8 * 8  # patch in/out, caption MLP, cross k/v
    assert flops == 2 * (linear + attention + outside)
