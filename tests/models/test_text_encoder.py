"""Caption encoder: shapes, PAD masking, input validation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models import TextEncoder


@pytest.fixture(scope="module")
def encoder():
    enc = TextEncoder(vocab_size=32, width=16, depth=2, num_heads=2, max_len=10)
    params = enc.init(jax.random.key(0), jnp.ones((1, 4), jnp.int32))
    return enc, params, jax.jit(enc.apply)


def test_shape_and_scanned_params(encoder):
    enc, params, apply = encoder
    out = apply(params, jnp.array([[1, 5, 6, 0, 0, 0]], jnp.int32))
    assert out.shape == (1, 6, 16)
    # Blocks are scanned: stacked on a leading "layers" axis.
    kernel = params["params"]["blocks"]["attn"]["to_q"]["kernel"]
    assert kernel.value.shape[0] == 2 and kernel.names[0] == "layers"


def test_pad_positions_are_ignored(encoder):
    _, params, apply = encoder
    short = jnp.array([[1, 5, 7, 0], [1, 0, 0, 0]], jnp.int32)
    long = jnp.pad(short, ((0, 0), (0, 5)))  # same captions, more PAD
    a, b = apply(params, short), apply(params, long)
    np.testing.assert_allclose(a[0, :3], b[0, :3], atol=1e-5)
    np.testing.assert_allclose(a[1, :1], b[1, :1], atol=1e-5)  # BOS-only caption
    assert bool(jnp.isfinite(b).all())
    # Real tokens do matter.
    c = apply(params, short.at[0, 2].set(9))
    assert float(jnp.abs(c[0, 0] - a[0, 0]).max()) > 1e-4


def test_bad_tokens(encoder):
    enc, params, _ = encoder
    with pytest.raises(ValueError, match="max_len=10"):
        enc.apply(params, jnp.ones((1, 11), jnp.int32))
    with pytest.raises(ValueError, match=r"\(b, L\)"):
        enc.apply(params, jnp.ones((4,), jnp.int32))
