"""Context-parallel attention on 8 fake CPU devices equals the single-device kernel: forward
and gradients, joint / divided / causal masks, biases, lengths that do and do not divide the
context size; each scheme really communicates the way it claims (read from the compiled HLO)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.nn.attention import STEP_TOKEN_AXES, AttentionStep, dot_product_attention, step_mask
from vdm_jax.nn.attention_core import expand_to_4d, local_attention
from vdm_jax.nn.attention_cp import TokenAxes
from vdm_jax.sharding import activate, get_rules, make_mesh

HEADS, DIM = 8, 8
T, H, W = 4, 4, 4  # divided-attention masks over the 64 raster tokens of a 4x4x4 clip


@pytest.fixture(scope="module")
def mesh():
    return make_mesh((1, 1, 8, 1))


def _inputs(n, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.normal(size=(batch, n, HEADS, DIM)), jnp.float32)
                 for _ in range(3))


def _masks(n):
    """name -> (mask, bias) over n tokens; the divided ones are the raster masks of a clip."""
    rng = np.random.default_rng(1)
    bias = jnp.asarray(rng.normal(size=(HEADS, n, n)), jnp.float32)
    masks = {"joint": (None, None), "causal": (np.tril(np.ones((n, n), bool)), None),
             "causal_bias": (np.tril(np.ones((n, n), bool)), bias)}
    if n == T * H * W:
        masks["space"] = (step_mask(AttentionStep("space"), T, H, W), None)
        masks["time"] = (step_mask(AttentionStep("time"), T, H, W), bias)
    return masks


def _loss(fn):
    return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))


def _sharded(mesh, mode, mask, bias, axes=None):
    def fn(q, k, v):
        return dot_product_attention(q, k, v, mask=mask, bias=bias, axes=axes)

    def run(q, k, v):
        with activate(mesh, get_rules("fsdp_cp"), mode):
            out = jax.jit(fn)(q, k, v)
            grads = jax.jit(jax.grad(_loss(fn), argnums=(0, 1, 2)))(q, k, v)
            return out, grads, jax.jit(fn).lower(q, k, v).compile().as_text()

    return run


def _reference(q, k, v, mask, bias):
    fn = lambda q, k, v: local_attention(q, k, v, expand_to_4d(bias), expand_to_4d(mask))  # noqa: E731
    return fn(q, k, v), jax.grad(_loss(fn), argnums=(0, 1, 2))(q, k, v)


def _assert_close(got, want):
    scale = float(jnp.abs(want).max())
    assert float(jnp.abs(got - want).max()) <= 1e-5 * scale


@pytest.mark.parametrize("mode, collective", [("ulysses", "all-to-all"),
                                              ("ring", "collective-permute")])
@pytest.mark.parametrize("n", [64, 61])  # 61 does not divide over 8 devices: padded
def test_sequence_parallel_equals_one_device(mesh, mode, collective, n):
    q, k, v = _inputs(n)
    for name, (mask, bias) in _masks(n).items():
        out, grads, hlo = _sharded(mesh, mode, mask, bias)(q, k, v)
        want, want_grads = _reference(q, k, v, mask, bias)
        _assert_close(out, want)
        for g, w in zip(grads, want_grads, strict=True):
            _assert_close(g, w)
        assert collective in hlo, (mode, name)


@pytest.mark.parametrize("groups", [16, 5])  # 5 groups do not divide over 8 devices: padded
def test_divided_groups_equal_one_device(mesh, groups):
    q, k, v = _inputs(12, batch=groups)
    keys = np.random.default_rng(2).random((groups, 1, 1, 12)) > 0.3
    keys[..., 0] = True
    out, grads, _ = _sharded(mesh, "divided", keys, None, STEP_TOKEN_AXES["time"])(q, k, v)
    want, want_grads = _reference(q, k, v, keys, None)
    _assert_close(out, want)
    for g, w in zip(grads, want_grads, strict=True):
        _assert_close(g, w)


def test_divided_spatial_step_moves_tokens_with_all_to_all_not_gather(mesh):
    """A video ``(b, t, n, d)`` split over its tokens (as a temporal step leaves it) reaches
    the spatial step's frame-split layout by an all-to-all; nothing is gathered."""
    b, t, n = 1, 8, 64
    x = jnp.asarray(np.random.default_rng(3).normal(size=(b, t, n, HEADS, DIM)), jnp.float32)
    spec = jax.sharding.PartitionSpec(None, None, "context")
    x = jax.device_put(x, jax.sharding.NamedSharding(mesh, spec))

    def spatial(x):
        grouped = x.reshape(b * t, n, HEADS, DIM)
        y = dot_product_attention(grouped, grouped, grouped, axes=STEP_TOKEN_AXES["space"])
        return y.reshape(x.shape)

    with activate(mesh, get_rules("fsdp_cp"), "divided"):
        compiled = jax.jit(spatial, out_shardings=x.sharding).lower(x).compile()
        got = jax.jit(spatial)(x)
    hlo = compiled.as_text()
    assert "all-to-all" in hlo and "all-gather" not in hlo
    grouped = x.reshape(b * t, n, HEADS, DIM)
    _assert_close(got, local_attention(grouped, grouped, grouped).reshape(x.shape))


def test_cross_attention_and_unsplit_sequences_stay_local(mesh):
    """Keys that are not on ``context`` (a caption; a temporal step under a token split) run
    the one-device kernel: no ring, no all-to-all."""
    q, _, _ = _inputs(64)
    k, v = _inputs(8)[:2]
    for axes in (STEP_TOKEN_AXES["time"], TokenAxes(seq=())):
        fn = lambda q, k, v, axes=axes: dot_product_attention(q, k, v, axes=axes)  # noqa: E731
        with activate(mesh, get_rules("fsdp_cp"), "ring"):
            hlo = jax.jit(fn).lower(q, k, v).compile().as_text()
        assert "collective-permute" not in hlo


def test_ulysses_needs_divisible_heads(mesh):
    q, k, v = (a[:, :, :6] for a in _inputs(64))
    with pytest.raises(ValueError, match="6 heads do not divide over 8 devices"):
        _sharded(mesh, "ulysses", None, None)(q, k, v)


def test_inert_without_a_context_axis():
    q, k, v = _inputs(16)
    with activate(make_mesh((1, 8, 1, 1)), get_rules("fsdp_cp"), "ring"):
        hlo = jax.jit(lambda q, k, v: dot_product_attention(q, k, v)).lower(q, k, v).compile()
    assert "collective-permute" not in hlo.as_text()


def test_unknown_mode_is_a_clear_error(mesh):
    with pytest.raises(ValueError, match="unknown context-parallel mode 'rings'"):
        with activate(mesh, get_rules("fsdp_cp"), "rings"):
            pass
