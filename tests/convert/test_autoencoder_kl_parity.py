"""diffusers AutoencoderKL -> vdm_jax AutoencoderKL: the same posterior and decoded images
(float32, relative error <= 1e-4) on random weights, old attention names, the save/load round
trip, and the converter's errors."""

import json

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import safetensors.numpy  # noqa: E402

from vdm_jax.convert import load_converted, load_diffusers, save_converted  # noqa: E402

TINY = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=4,
            latent_channels=4, sample_size=16)
WEIGHTS = "diffusion_pytorch_model.safetensors"


def save_random_vae(path, **overrides):
    """A tiny diffusers AutoencoderKL with every parameter random (GroupNorm affines included),
    saved with ``save_pretrained``."""
    torch.manual_seed(0)
    ref = diffusers.AutoencoderKL(**{**TINY, **overrides}).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    ref.save_pretrained(path)
    return ref


def relative(got, want) -> float:
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def nchw(x):
    return np.asarray(x).transpose(0, 3, 1, 2)


def parity_errors(ref, path, height=16, width=16) -> dict[str, float]:
    x = np.random.default_rng(0).standard_normal((2, 3, height, width)).astype(np.float32)
    with torch.no_grad():
        post = ref.encode(torch.tensor(x)).latent_dist
        images = ref.decode(post.mean).sample.numpy()
    model, params = load_diffusers(path)
    got = jax.jit(lambda p, x: model.apply(p, x, method="encode"))(
        params, jnp.asarray(x.transpose(0, 2, 3, 1)))
    z = jnp.asarray(post.mean.numpy().transpose(0, 2, 3, 1))
    decoded = jax.jit(lambda p, z: model.apply(p, z, method="decode"))(params, z)
    return {"mean": relative(nchw(got.mean), post.mean.numpy()),
            "logvar": relative(nchw(got.logvar), post.logvar.numpy()),
            "decode": relative(nchw(decoded), images)}


@pytest.mark.parametrize("overrides,size", [
    ({}, (16, 16)),
    (dict(mid_block_add_attention=False), (16, 8)),
    (dict(use_quant_conv=False, use_post_quant_conv=False, latent_channels=8), (8, 16)),
], ids=["tiny", "no-mid-attention-non-square", "no-quant-convs"])
def test_matches_diffusers(tmp_path, overrides, size):
    ref = save_random_vae(tmp_path, **overrides)
    errors = parity_errors(ref, tmp_path, *size)
    assert max(errors.values()) <= 1e-4, errors


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("vae")
    save_random_vae(path, scaling_factor=0.5, shift_factor=0.25)
    return path


_OLD_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _edited_copy(saved, dst, edit_weights=None, edit_config=None):
    config = json.loads((saved / "config.json").read_text())
    weights = dict(safetensors.numpy.load_file(saved / WEIGHTS))
    if edit_config:
        edit_config(config)
    if edit_weights:
        weights = edit_weights(weights)
    dst.mkdir(exist_ok=True)
    (dst / "config.json").write_text(json.dumps(config))
    safetensors.numpy.save_file(weights, dst / WEIGHTS)
    return dst


def _old_attention_names(weights):
    out = {}
    for key, w in weights.items():
        for new, old in _OLD_NAMES.items():
            key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        out[key] = w
    return out


def test_old_attention_names_load_the_same(saved, tmp_path):
    path = _edited_copy(saved, tmp_path / "old", edit_weights=_old_attention_names)
    assert any("proj_attn" in k for k in safetensors.numpy.load_file(path / WEIGHTS))
    _, got = load_diffusers(path)
    _, want = load_diffusers(saved)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_save_load_round_trip(saved, tmp_path):
    model, params = load_diffusers(saved)
    assert (model.scaling_factor, model.shift_factor) == (0.5, 0.25)
    save_converted(tmp_path / "converted", model, params)
    got_model, got = load_converted(tmp_path / "converted")
    assert got_model == model
    assert jax.tree.structure(got) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(a, b)


def test_unsupported_config_and_unknown_weights_are_errors(saved, tmp_path):
    attn_blocks = lambda c: c.update(down_block_types=["AttnDownEncoderBlock2D"] * 2)  # noqa: E731
    path = _edited_copy(saved, tmp_path / "attn", edit_config=attn_blocks)
    with pytest.raises(ValueError, match="down_block_types.*DownEncoderBlock2D"):
        load_diffusers(path)
    extra = lambda w: {**w, "encoder.mid_block.attentions.0.norm_q.weight": w[  # noqa: E731
        "encoder.conv_in.bias"]}
    path = _edited_copy(saved, tmp_path / "extra", edit_weights=extra)
    with pytest.raises(ValueError, match="unrecognised.*norm_q"):
        load_diffusers(path)
    missing = lambda w: {k: v for k, v in w.items() if k != "decoder.conv_out.bias"}  # noqa: E731
    path = _edited_copy(saved, tmp_path / "missing", edit_weights=missing)
    with pytest.raises(ValueError, match="decoder/conv_out/bias"):
        load_diffusers(path)
