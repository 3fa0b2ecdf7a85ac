"""diffusers LatteTransformer3DModel -> vdm_jax LatteTransformer: same outputs (float32, relative
error <= 1e-4) on random weights, the CLI round trip, and the converter's errors."""

import json
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import safetensors.numpy  # noqa: E402
import safetensors.torch  # noqa: E402

from vdm_jax.convert import load_converted, load_diffusers  # noqa: E402
from vdm_jax.convert.__main__ import main  # noqa: E402

TINY = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8,
            num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
            caption_channels=16, cross_attention_dim=16, video_length=4,
            norm_type="ada_norm_single")
# The released Latte-1 text-to-video checkpoint's block settings.
LATTE_1 = dict(activation_fn="gelu-approximate", attention_bias=True,
               norm_elementwise_affine=False, norm_eps=1e-6)
WEIGHTS = "diffusion_pytorch_model.safetensors"


def save_random_latte(path, **overrides):
    """A tiny diffusers Latte with every parameter random (diffusers zero-initialises some, which
    would hide a missed weight), saved with ``save_pretrained``."""
    torch.manual_seed(0)
    ref = diffusers.LatteTransformer3DModel(**{**TINY, **overrides}).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(0.2 * torch.randn_like(p))
    ref.save_pretrained(path)
    return ref


def relative_error(ref, path, *, height=8, width=8, masked=False, temporal=True):
    b, c, t, L = 2, 4, 4, 5
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, c, t, height, width)).astype(np.float32)
    ctx = rng.standard_normal((b, L, 16)).astype(np.float32)
    steps = np.array([3, 870])
    mask = np.ones((b, L), bool)
    mask[1, 2:] = False
    kwargs = {}
    if masked:  # diffusers' Latte takes the additive bias per (example, frame)
        bias = torch.tensor((~mask) * -10000.0, dtype=torch.float32)
        kwargs["encoder_attention_mask"] = bias.repeat_interleave(t, 0)[:, None]
    with torch.no_grad():
        want = ref(torch.tensor(x), torch.tensor(steps), torch.tensor(ctx),
                   enable_temporal_attentions=temporal, **kwargs).sample.numpy()
    model, params = load_diffusers(path)
    model = model.clone(time_scale=1.0, time_shift=0.0)  # raw diffusers timesteps
    got = jax.jit(model.apply, static_argnames=("enable_temporal",))(
        params, jnp.asarray(x.transpose(0, 2, 3, 4, 1)), jnp.asarray(steps, jnp.float32),
        jnp.asarray(ctx), jnp.asarray(mask) if masked else None, enable_temporal=temporal)
    got = np.asarray(got).transpose(0, 4, 1, 2, 3)  # (b, t, h, w, c) -> (b, c, t, h, w)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.mark.parametrize("overrides,inputs", [
    ({}, {}),
    ({}, dict(temporal=False)),
    ({}, dict(masked=True)),
    (LATTE_1, {}),
    (dict(sample_size=128), dict(height=16, width=8)),  # positions rescaled, non-square
], ids=["tiny", "no-temporal", "caption-mask", "latte-1-blocks", "rescaled-positions"])
def test_matches_diffusers(tmp_path, overrides, inputs):
    ref = save_random_latte(tmp_path, **overrides)
    assert relative_error(ref, tmp_path, **inputs) <= 1e-4


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("latte")
    save_random_latte(path)
    return path


def test_cli_round_trip(saved, tmp_path, capsys):
    dst = tmp_path / "converted"
    main(["--src", str(saved), "--dst", str(dst)])
    assert "LatteTransformer" in capsys.readouterr().out
    assert json.loads((dst / "model_config.json").read_text())["adaln"] == "single"
    model, params = load_converted(dst)
    want_model, want = load_diffusers(saved)
    assert model == want_model
    assert jax.tree.structure(params) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(FileExistsError, match="overwrite"):
        main(["--src", str(saved), "--dst", str(dst)])
    main(["--src", str(saved), "--dst", str(dst), "--overwrite"])


def test_unknown_class_lists_the_supported_ones(saved, edited_copy):
    path = edited_copy(saved, edit_config=lambda c: c.update(_class_name="Foo"))
    with pytest.raises(ValueError, match=r"'Foo'.*LatteTransformer3DModel"):
        load_diffusers(path)


def test_shape_mismatch_names_the_weight(saved, edited_copy):
    key = "transformer_blocks.1.attn1.to_k.weight"
    path = edited_copy(saved,
                       edit_weights=lambda w: w.update({key: np.zeros((16, 12), np.float32)}))
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_diffusers(path)


def test_missing_and_unknown_weights_are_errors(saved, edited_copy):
    path = edited_copy(saved,
                       edit_weights=lambda w: w.pop("temporal_transformer_blocks.0.ff.net.2.bias"))
    with pytest.raises(ValueError, match=r"blocks/temporal/ff/proj_out/bias.*\[0\]"):
        load_diffusers(path)
    extra = {"transformer_blocks.0.attn1.norm_q.weight": np.ones((8,), np.float32)}
    path = edited_copy(saved, edit_weights=lambda w: w.update(extra))
    with pytest.raises(ValueError, match="unrecognised.*norm_q"):
        load_diffusers(path)


def test_bfloat16_checkpoints_load(saved, tmp_path):
    half = {k: torch.tensor(v).bfloat16() for k, v in
            safetensors.numpy.load_file(saved / WEIGHTS).items()}
    (tmp_path / "config.json").write_text((saved / "config.json").read_text())
    safetensors.torch.save_file(half, tmp_path / WEIGHTS)
    _, params = load_diffusers(tmp_path)
    _, full = load_diffusers(saved)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(full), strict=True):
        assert a.dtype == jnp.float32
        np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-2)


def test_converter_does_not_import_torch():
    code = "import sys, vdm_jax.convert; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
