"""CausalVAE (CogVideoX): chunked == one pass, causality across frame batches, shapes and
frame-count errors, tile blending, released parameter count and logical names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models.causal_vae import (
    VARIANTS,
    CausalVAE,
    count_params,
    example_inputs,
    frame_batches,
    run_tiled,
)
from vdm_jax.models.causal_vae_blocks import latent_frames, modulate_nearest

# Three levels (4x time, 4x space): the cheapest config with both time halvings.
CONFIG = dict(block_out_channels=(8, 16, 16), latent_channels=4, layers_per_block=1,
              norm_num_groups=4)


@pytest.fixture(scope="module")
def vae():
    """Every parameter random (0.2 * normal) from the init shapes, without compiling init."""
    model = CausalVAE(**CONFIG)
    shapes = nn.meta.unbox(jax.eval_shape(model.init, jax.random.key(0), *example_inputs(model)))
    rng = np.random.default_rng(0)
    return model, jax.tree.map(
        lambda v: jnp.asarray(0.2 * rng.standard_normal(v.shape), jnp.float32), shapes)


@pytest.fixture(scope="module")
def roundtrip(vae):
    model, params = vae
    run = jax.jit(lambda p, x, chunked: model.apply(p, x, chunked=chunked), static_argnums=2)
    return lambda x, chunked: run(params, x, chunked)


@pytest.fixture(scope="module")
def clip():
    """25 frames: encoder batches 9+8+8 (latent batches 3+2+2), so the scan runs twice."""
    return jax.random.normal(jax.random.key(1), (1, 25, 8, 8, 3))


def test_frame_batches_follow_the_reference():
    assert frame_batches(49, 8) == (9, 8, 8, 8, 8, 8)
    assert frame_batches(13, 2) == (3, 2, 2, 2, 2, 2)
    assert frame_batches(21, 8) == (13, 8)
    assert frame_batches(5, 8) == (5,) and frame_batches(1, 2) == (1,)
    assert frame_batches(49, None) == (49,)


def test_chunked_equals_one_pass(roundtrip, clip):
    rec, post = roundtrip(clip, True)
    rec1, post1 = roundtrip(clip, False)
    assert post.mean.shape == (1, 7, 2, 2, 4) and rec.shape == clip.shape
    for a, b in ((rec, rec1), (post.mean, post1.mean), (post.logvar, post1.logvar)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(b).max()))


def test_causal_across_frame_batches(roundtrip, clip):
    """Frames of the third batch (17..24) change neither the latents of earlier batches (0..4)
    nor the frames decoded from them (0..16). Within a batch the GroupNorm statistics pool all
    frames, so the model is causal per batch, not per frame (as the reference)."""
    rec, post = roundtrip(clip, True)
    changed = clip.at[:, 20].add(1.0)
    rec2, post2 = roundtrip(changed, True)
    np.testing.assert_array_equal(post2.mean[:, :5], post.mean[:, :5])
    np.testing.assert_array_equal(rec2[:, :17], rec[:, :17])
    assert not np.allclose(post2.mean[:, 5:], post.mean[:, 5:])
    assert not np.allclose(rec2[:, 17:], rec[:, 17:])


@pytest.mark.parametrize("frames,latents,decoded", [(1, 1, 1), (49, 13, 49), (21, 6, 24)])
def test_shapes(vae, frames, latents, decoded):
    """4k+1 frames -> k+1 latents; an image is one frame. Like the reference, an even latent
    count decodes to 4x as many frames (only 8k+1 frames round-trip)."""
    model, params = vae
    rec, post = jax.eval_shape(model.apply, params, jnp.zeros((2, frames, 8, 12, 3)))
    assert post.mean.shape == (2, latents, 2, 3, 4)
    assert rec.shape == (2, decoded, 8, 12, 3)


def test_bad_sizes_name_the_valid_ones(vae):
    model, params = vae
    with pytest.raises(ValueError, match="got 20 frames; use 17 or 21"):
        model.apply(params, jnp.zeros((1, 20, 8, 8, 3)), method="encode")
    with pytest.raises(ValueError, match="got 0 frames; use 1(?! or)"):
        model.apply(params, jnp.zeros((1, 0, 8, 8, 3)), method="encode")
    with pytest.raises(ValueError, match="height must be a multiple of 4; got 10; use 8 or 12"):
        model.apply(params, jnp.zeros((1, 5, 10, 8, 3)), method="encode")
    with pytest.raises(ValueError, match=r"expected videos \(b, t, h, w, 3\)"):
        model.apply(params, jnp.zeros((1, 5, 8, 8)), method="encode")


def test_frame_batches_must_keep_resampling_aligned():
    with pytest.raises(ValueError, match="encoder_frame_batch=6 must be a multiple of"):
        CausalVAE(**CONFIG, encoder_frame_batch=6).check_config()
    with pytest.raises(ValueError, match="decoder_frame_batch=3 must be even"):
        CausalVAE(**CONFIG, decoder_frame_batch=3).check_config()
    with pytest.raises(ValueError, match="temporal_compression_ratio=8"):
        CausalVAE(**CONFIG, temporal_compression_ratio=8).check_config()


def test_tiles_blend_back_to_the_untiled_result():
    """Tiling geometry: with a position-wise tile function (here identity, and 2x2 average
    pooling with latent-sized crops) the blended tiles reproduce the untiled output, so every
    output position is covered once and overlaps are weighted to 1."""
    x = jax.random.normal(jax.random.key(2), (1, 2, 20, 28, 3))
    same = run_tiled(lambda v: v, x, (8, 12), (6, 8), (2, 4), (6, 8))
    np.testing.assert_allclose(same, x, rtol=1e-6, atol=1e-6)
    def pool(v):
        return v.reshape(*v.shape[:2], v.shape[2] // 2, 2, v.shape[3] // 2, 2, 3).mean((3, 5))

    pooled = run_tiled(pool, x, (8, 12), (6, 8), (1, 2), (3, 4))
    np.testing.assert_allclose(pooled, pool(x), rtol=1e-6, atol=1e-6)


def test_released_vae_size_and_variants():
    # 215.58M parameters: diffusers' AutoencoderKLCogVideoX() (the 2b and 5b VAE config).
    assert count_params(CausalVAE(**VARIANTS["cogvideox-2b"])) == 215_583_907
    assert CausalVAE(**VARIANTS["cogvideox-5b"]).scaling_factor == 0.7


def test_every_parameter_has_logical_names(vae):
    model, _ = vae
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), *example_inputs(model)))
    leaves = jax.tree.leaves(boxed["params"], is_leaf=lambda v: isinstance(v, nn.Partitioned))
    assert leaves and all(isinstance(v, nn.Partitioned) for v in leaves)
    assert all(len(v.names) == v.value.ndim for v in leaves)


def test_chunked_decode_memory_does_not_grow_with_frames(vae):
    """XLA's temporary buffers for the scan over latent batches stay flat from 49 to 81 frames,
    while one pass grows with the clip."""
    model, params = vae

    def temp_bytes(latents, chunked):
        z = jax.ShapeDtypeStruct((1, latents, 8, 8, 4), jnp.float32)
        fn = jax.jit(lambda p, z: model.apply(p, z, chunked=chunked, method="decode"))
        return fn.lower(params, z).compile().memory_analysis().temp_size_in_bytes

    short, long = temp_bytes(13, True), temp_bytes(21, True)
    assert long < 1.25 * short
    assert temp_bytes(21, False) > 3 * long


@pytest.mark.parametrize("frames", [1, 4, 9])
def test_spatial_norm_modulation_is_a_nearest_resize_of_the_latent(frames):
    """SpatialNorm3D's ``f * up(scale) + up(shift)``, written without materialising ``up``,
    equals an explicit nearest resize by the reference's rule (frame 0 alone for odd counts)."""
    latents = 1 if frames == 1 else 3 if frames % 2 else 2
    f, scale, shift = (jax.random.normal(jax.random.key(i), s) for i, s in
                       enumerate([(2, frames, 8, 12, 4), (2, latents, 2, 3, 4),
                                  (2, latents, 2, 3, 4)]))
    if frames % 2:
        index = [0] + [1 + (i - 1) * (latents - 1) // (frames - 1) for i in range(1, frames)]
    else:
        index = [i * latents // frames for i in range(frames)]

    def up(m):
        return jnp.repeat(jnp.repeat(m[:, np.asarray(index)], 4, axis=2), 4, axis=3)

    got = modulate_nearest(f, latent_frames(scale, frames), latent_frames(shift, frames))
    np.testing.assert_allclose(got, f * up(scale) + up(shift), rtol=1e-6, atol=1e-6)
