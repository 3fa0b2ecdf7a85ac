"""diffusers AutoencoderKLCogVideoX -> vdm_jax CausalVAE: same posteriors and reconstructions
(float32, relative error <= 1e-4) on random weights, with diffusers' frame batching, on a single
image, with spatial tiling, and the save/load round trip."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from vdm_jax.convert import load_converted, load_diffusers, save_converted  # noqa: E402
from vdm_jax.models.causal_vae import CausalVAE, Tiling, count_params  # noqa: E402

# Four levels like the released VAE (two halve time and space, one space only, one neither).
TINY = dict(block_out_channels=(8, 16, 16, 16), latent_channels=4, layers_per_block=1,
            norm_num_groups=4, down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, temporal_compression_ratio=4)
# Tiles of 32 x 24 pixels (4 x 3 latents) overlapping by 1/4 and 1/3: a 2 x 2 grid below.
TILES = dict(tile_sample_min_height=32, tile_sample_min_width=24,
             tile_overlap_factor_height=1 / 4, tile_overlap_factor_width=1 / 3)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny diffusers CogVideoX VAE with every parameter random, saved with save_pretrained."""
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKLCogVideoX(**TINY).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("cogvideox_vae")
    ref.save_pretrained(path)
    return ref, path


@pytest.fixture(scope="module")
def converted(saved):
    return load_diffusers(saved[1])


def to_jax(x):
    return jnp.asarray(x.transpose(0, 2, 3, 4, 1))  # (b, c, t, h, w) -> (b, t, h, w, c)


def rel(got, want):
    got = np.asarray(got).transpose(0, 4, 1, 2, 3)
    assert got.shape == want.shape
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def reference(ref, x):
    """diffusers' default encode / decode(mode) path (frame batches with a conv cache)."""
    with torch.no_grad():
        post = ref.encode(torch.tensor(x)).latent_dist
        rec = ref.decode(post.mean).sample
    return post.mean.numpy(), post.logvar.numpy(), rec.numpy()


def video(frames, height=16, width=16):
    return np.random.default_rng(frames).standard_normal((1, 3, frames, height, width)).astype(
        np.float32)


def test_video_matches_the_batched_reference(saved, converted):
    """25 frames: the reference encodes frame batches 9+8+8 and decodes latent batches 3+2+2,
    normalising each batch alone; our default (scan over batches) matches it. Its clip-wide
    alternative (diffusers' bare encoder) is different, and matches encoder_frame_batch=None."""
    ref, _ = saved
    model, params = converted
    x = video(25)
    mean, logvar, rec = reference(ref, x)
    with torch.no_grad():
        whole = ref.encoder(torch.tensor(x))[0].numpy()

    @jax.jit
    def run(params, x):
        got_rec, post = model.apply(params, x)
        clip_wide = model.clone(encoder_frame_batch=None).apply(
            params, x, chunked=False, method="encode_moments")
        return got_rec, post, clip_wide

    got_rec, post, clip_wide = run(params, to_jax(x))
    assert post.mean.shape == (1, 7, 2, 2, 4) and got_rec.shape == (1, 25, 16, 16, 3)
    assert rel(post.mean, mean) <= 1e-4
    assert rel(post.logvar, logvar) <= 1e-4
    assert rel(got_rec, rec) <= 1e-4
    assert rel(clip_wide, whole) <= 1e-4
    assert np.linalg.norm(whole[:, :4] - mean) / np.linalg.norm(mean) > 1e-2


def test_image_matches_reference(saved, converted):
    ref, _ = saved
    model, params = converted
    x = video(1)
    mean, logvar, rec = reference(ref, x)
    got_rec, post = jax.jit(model.apply)(params, to_jax(x))
    assert got_rec.shape == (1, 1, 16, 16, 3)
    assert max(rel(post.mean, mean), rel(post.logvar, logvar), rel(got_rec, rec)) <= 1e-4


@pytest.fixture
def tiled_ref(saved):
    ref, _ = saved
    ref.enable_tiling(**TILES)
    yield ref
    ref.disable_tiling()


def test_tiled_encode_matches_reference(tiled_ref, converted):
    model, params = converted
    tiling = Tiling(32, 24, 1 / 4, 1 / 3)
    x = video(1, 32, 32)  # 2 x 2 tiles: rows at 0, 24; columns at 0, 16
    with torch.no_grad():
        post_ref = tiled_ref.encode(torch.tensor(x)).latent_dist
    post = jax.jit(lambda p, x: model.apply(p, x, tiling=tiling, method="encode"))(
        params, to_jax(x))
    assert rel(post.mean, post_ref.mean.numpy()) <= 1e-4
    assert rel(post.logvar, post_ref.logvar.numpy()) <= 1e-4


def test_tiled_decode_matches_reference(tiled_ref, converted):
    model, params = converted
    tiling = Tiling(32, 24, 1 / 4, 1 / 3)
    z = np.random.default_rng(1).standard_normal((1, 4, 1, 5, 4)).astype(np.float32)
    with torch.no_grad():
        want = tiled_ref.decode(torch.tensor(z)).sample.numpy()  # 2 x 2 latent tiles
    got = jax.jit(lambda p, z: model.apply(p, z, tiling=tiling, method="decode"))(
        params, to_jax(z))
    assert rel(got, want) <= 1e-4


def test_save_load_round_trip(saved, converted, tmp_path):
    model, params = converted
    save_converted(tmp_path / "vae", model, params)
    again, loaded = load_converted(tmp_path / "vae")
    assert again == model and isinstance(again, CausalVAE)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_released_config_parameter_count():
    with torch.device("meta"):
        ref = diffusers.AutoencoderKLCogVideoX()  # the CogVideoX-2b/5b VAE config
    assert count_params(CausalVAE()) == sum(p.numel() for p in ref.parameters())


def test_unsupported_config_and_unknown_weights(saved):
    from vdm_jax.convert import cogvideox_vae

    ref, _ = saved
    weights = {k: v.numpy() for k, v in ref.state_dict().items()}
    config = dict(ref.config)
    with pytest.raises(ValueError, match="use_quant_conv"):
        cogvideox_vae.convert({**config, "use_quant_conv": True}, weights)
    extra = {**weights, "encoder.conv_in.conv.extra": np.zeros(2, np.float32)}
    with pytest.raises(ValueError, match=r"unrecognised.*conv_in\.conv\.extra"):
        cogvideox_vae.convert(config, extra)
