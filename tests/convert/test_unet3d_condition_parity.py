"""diffusers UNet3DConditionModel (ModelScope text-to-video) -> vdm_jax UNet3DCondition: same
outputs (float32, relative error <= 1e-4) on random weights for several batch sizes, frame
counts and latent sizes, the saved and reloaded converted model, the parameter count of the
released model, and the converter's errors."""

import functools

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vdm_jax.convert import load_converted, load_diffusers, save_converted  # noqa: E402
from vdm_jax.models import unet3d_condition  # noqa: E402

TINY = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
            attention_head_dim=8, cross_attention_dim=32, sample_size=8,
            down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
            up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"))
STEPS = np.array([3, 870])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny diffusers UNet3DConditionModel with every parameter random (diffusers
    zero-initialises the last temporal conv, which would hide a missed weight), saved with
    ``save_pretrained``; and the loaded reference."""
    torch.manual_seed(0)
    ref = diffusers.UNet3DConditionModel(**TINY).eval()
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(0.15 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("unet3d")
    ref.save_pretrained(path)
    return path, ref


@pytest.fixture(scope="module")
def converted(saved):
    return load_diffusers(saved[0])


def _inputs(b, t, h, w):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, 4, t, h, w)).astype(np.float32)
    ctx = rng.standard_normal((b, 7, TINY["cross_attention_dim"])).astype(np.float32)
    return x, ctx, STEPS[:b]


@pytest.fixture(scope="module")
def reference(saved):
    """diffusers' output on ``_inputs(*shape)``, computed once per shape."""
    outputs = {}

    def run(shape):
        if shape not in outputs:
            x, ctx, steps = _inputs(*shape)
            with torch.no_grad():
                out = saved[1](torch.tensor(x), torch.tensor(steps), torch.tensor(ctx)).sample
            outputs[shape] = out.numpy()
        return outputs[shape]

    return run


@functools.partial(jax.jit, static_argnums=4)
def _apply(params, x, t, ctx, model):
    """The model is static: an equal one (e.g. reloaded) reuses the compiled function."""
    return model.apply(params, x, t, ctx)


def _ours(model, params, x, ctx, t):
    """``x (b, c, t, h, w)`` -> ``(b, c, t, h, w)`` through the channels-last model."""
    got = _apply(params, jnp.asarray(x.transpose(0, 2, 3, 4, 1)), jnp.asarray(t, jnp.float32),
                 jnp.asarray(ctx), model)
    return np.asarray(got).transpose(0, 4, 1, 2, 3)


def relative_error(got, want):
    return float(np.abs(got - want).max() / np.abs(want).max())


RAW_STEPS = dict(time_scale=1.0, time_shift=0.0)  # the model embeds diffusers' timesteps as given


@pytest.mark.parametrize("shape, raw", [((2, 2, 8, 8), True), ((2, 5, 8, 8), False),
                                        ((1, 3, 5, 6), True)],
                         ids=["2-frames", "5-frames-unit-time", "odd-size"])
def test_matches_diffusers(converted, reference, shape, raw):
    """With the default time convention ``t = (k + 1) / 1000`` is diffusers' step ``k``."""
    x, ctx, steps = _inputs(*shape)
    model, params = converted
    model, t = (model.clone(**RAW_STEPS), steps) if raw else (model, (steps + 1) / 1000)
    err = relative_error(_ours(model, params, x, ctx, t), reference(shape))
    print(f"{shape}: relative error {err:.2e}")
    assert err <= 1e-4


def test_reloaded_model_matches_diffusers(converted, reference, tmp_path):
    """save_converted -> load_converted gives the same model and params, and its output."""
    save_converted(tmp_path / "converted", *converted)
    model, params = load_converted(tmp_path / "converted")
    assert model == converted[0] and model.time_scale == 1000.0
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(converted[1]), strict=True):
        np.testing.assert_array_equal(a, b)
    x, ctx, steps = _inputs(2, 5, 8, 8)
    got = _ours(model, params, x, ctx, (steps + 1) / 1000)
    err = relative_error(got, reference((2, 5, 8, 8)))
    print(f"reloaded: relative error {err:.2e}")
    assert err <= 1e-4


def test_modelscope_parameter_count():
    with torch.device("meta"):
        ref = diffusers.UNet3DConditionModel()  # the defaults are ModelScope's 1.7B release
    want = sum(p.numel() for p in ref.parameters())
    model = unet3d_condition.UNet3DCondition(**unet3d_condition.VARIANTS["modelscope"])
    assert unet3d_condition.count_params(model) == want == 1_411_233_860


@pytest.mark.parametrize("edit, match", [
    (dict(act_fn="gelu"), "act_fn='gelu'"),
    (dict(num_attention_heads=4), "num_attention_heads=4"),
    (dict(time_cond_proj_dim=16), "time_cond_proj_dim=16"),
    (dict(downsample_padding=0), "downsample_padding=0"),
    (dict(attention_head_dim=[8, 8]), "attention_head_dim must be one int"),
    (dict(down_block_types=["DownBlockSpatioTemporal", "DownBlock3D"]),
     "DownBlockSpatioTemporal.*not supported"),
    (dict(norm_num_groups=12), "norm_num_groups=12 does not divide"),
])
def test_unsupported_configs_are_errors(saved, edited_copy, edit, match):
    path = edited_copy(saved[0], edit_config=lambda c: c.update(edit))
    with pytest.raises(ValueError, match=match):
        load_diffusers(path)


def test_missing_unknown_and_misshapen_weights_are_errors(saved, edited_copy):
    key = "mid_block.temp_convs.1.conv4.3.weight"
    path = edited_copy(saved[0], edit_weights=lambda w: w.pop(key))
    with pytest.raises(ValueError, match="mid_block/temporal_convs_1/conv4/kernel"):
        load_diffusers(path)
    extra = {"down_blocks.0.attentions.0.pos_embed.weight": np.ones((8,), np.float32)}
    path = edited_copy(saved[0], edit_weights=lambda w: w.update(extra))
    with pytest.raises(ValueError, match="unrecognised.*pos_embed"):
        load_diffusers(path)
    bad = {key: np.zeros((64, 64, 3, 3), np.float32)}
    path = edited_copy(saved[0], edit_weights=lambda w: w.update(bad))
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        load_diffusers(path)
