"""Rule presets: every parameter of every model lands where its logical names say, on the 8
fake CPU devices; fsdp leaves no large parameter replicated; config validation errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import pytest
from jax.sharding import PartitionSpec as P

from configs import latte_shapes, mav_base, mav_interp, vdm_shapes
from vdm_jax.models import (
    TextEncoder,
    TimeSformer,
    autoencoder_kl,
    causal_vae,
    unet3d_condition,
    video_vae,
)
from vdm_jax.sharding import ACT_AXES, PARAM_AXES, PRESETS, get_rules, logical_to_mesh_sharding
from vdm_jax.sharding.mesh import make_mesh, mesh_and_rules, resolve_shape
from vdm_jax.train.experiment import build_experiment

# (data, fsdp, context, tensor) per preset: every axis the preset uses is larger than 1.
SHAPES = {"dp": (8, 1, 1, 1), "fsdp": (2, 4, 1, 1), "fsdp_tp": (2, 2, 1, 2),
          "fsdp_cp": (1, 4, 2, 1), "vae_spatial": (2, 1, 4, 1)}
# The tiny models' largest parameters hold 1k-18k elements (UNet test config 18,432, Latte
# 8,192, the VAEs 2,304-6,912, the text encoder 2,048, TimeSformer 1,024): a threshold of 2**14
# would test one tensor, so the check covers every parameter of >= 2**10 elements instead.
LARGE = 2**10


def _boxed(model, *args):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), *args))["params"]


def _diffusion(config):
    ex = build_experiment(config)
    video = jnp.zeros((1, *ex.video_shape))
    return _boxed(ex.model, video, jnp.zeros((1,)), jnp.asarray(ex.tokenizer.null_tokens())[None])


def _vae(module, cls):
    model = getattr(module, cls)(**module.VARIANTS["tiny"])
    return _boxed(model, *module.example_inputs(model))


MODELS = {
    "unet3d": lambda: _diffusion(vdm_shapes.get_config("test")),
    "latte": lambda: _diffusion(latte_shapes.get_config("test")),
    "autoencoder_kl": lambda: _vae(autoencoder_kl, "AutoencoderKL"),
    "causal_vae": lambda: _vae(causal_vae, "CausalVAE"),
    "video_vae": lambda: _vae(video_vae, "VideoVAE"),
    "unet3d_condition": lambda: _vae(unet3d_condition, "UNet3DCondition"),
    "make_a_video_base": lambda: _diffusion(mav_base.get_config("video_test")),
    "make_a_video_interp": lambda: _diffusion(mav_interp.get_config("test")),
    "text_encoder": lambda: _boxed(TextEncoder(vocab_size=32, width=16, depth=2, num_heads=2,
                                               max_len=10), jnp.ones((1, 4), jnp.int32)),
    "timesformer": lambda: _boxed(TimeSformer(num_classes=4, num_frames=4, image_size=16,
                                              patch_size=4, width=16, depth=3, num_heads=2),
                                  jnp.zeros((1, 4, 16, 16, 3))),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def boxed(request):
    return request.param, MODELS[request.param]()


def _leaves(tree):
    is_box = lambda x: isinstance(x, nn.Partitioned)  # noqa: E731
    return jax.tree_util.tree_leaves_with_path(tree, is_leaf=is_box)


def _axes(entry):
    return () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)


def test_every_parameter_has_logical_names(boxed):
    name, tree = boxed
    plain = [jax.tree_util.keystr(p) for p, x in _leaves(tree) if not isinstance(x, nn.Partitioned)]
    assert not plain, f"{name}: parameters without logical names: {plain}"
    for path, leaf in _leaves(tree):
        unknown = set(leaf.names) - set(PARAM_AXES) - {None}
        assert not unknown, f"{name}{jax.tree_util.keystr(path)}: names {unknown}"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_parameter_lands_where_its_names_say(boxed, preset):
    """Per dim: split over exactly the mesh axes the preset gives its name, or left whole only
    because those axes are taken by a higher-priority name of the same array or do not divide
    the dim; never one mesh axis twice."""
    name, tree = boxed
    rules, mesh = get_rules(preset), make_mesh(SHAPES[preset])
    table, priority = dict(rules), [n for n, _ in rules]
    shardings = jax.tree.leaves(logical_to_mesh_sharding(tree, mesh, rules))
    for (path, leaf), sharding in zip(_leaves(tree), shardings, strict=True):
        where = f"{name}{jax.tree_util.keystr(path)} {leaf.names} {leaf.value.shape} [{preset}]"
        spec = tuple(sharding.spec) + (None,) * (leaf.value.ndim - len(sharding.spec))
        used = [a for entry in spec for a in _axes(entry)]
        assert len(used) == len(set(used)), where
        for dim, (logical, entry) in enumerate(zip(leaf.names, spec, strict=True)):
            want = table.get(logical)
            if entry is not None:
                assert entry == want, where
                assert leaf.value.shape[dim] % mesh_size(mesh, entry) == 0, where
            elif want is not None:
                earlier = {a for d, n in enumerate(leaf.names) if n in table and
                           priority.index(n) < priority.index(logical) for a in _axes(spec[d])}
                blocked = bool(earlier & set(_axes(want)))
                assert blocked or leaf.value.shape[dim] % mesh_size(mesh, want), where


def mesh_size(mesh, entry):
    size = 1
    for a in _axes(entry):
        size *= mesh.shape[a]
    return size


def test_fsdp_leaves_no_large_parameter_replicated(boxed):
    name, tree = boxed
    mesh = make_mesh(SHAPES["fsdp"])
    shardings = jax.tree.leaves(logical_to_mesh_sharding(tree, mesh, get_rules("fsdp")))
    replicated = [f"{jax.tree_util.keystr(p)} {x.value.shape}"
                  for (p, x), s in zip(_leaves(tree), shardings, strict=True)
                  if x.value.size >= LARGE and all(e is None for e in s.spec)]
    assert not replicated, f"{name}: replicated under fsdp: {replicated}"


def test_known_specs():
    tree = MODELS["latte"]()
    kernel = tree["latte"]["blocks"]["spatial"]["attn1"]["to_q"]["kernel"]
    assert kernel.names == ("layers", "embed", "heads", "kv")
    want = {"dp": P(None, None, None, None), "fsdp": P(None, "fsdp", None, None),
            "fsdp_tp": P(None, "fsdp", "tensor", None), "vae_spatial": P(None, None, None, None)}
    for preset, spec in want.items():
        got = logical_to_mesh_sharding(kernel, make_mesh(SHAPES[preset]), get_rules(preset))
        assert tuple(got.spec) + (None,) * (4 - len(got.spec)) == tuple(spec), preset
    # ("embed", "mlp") under fsdp: embed has priority, mlp stays whole.
    mlp = tree["latte"]["blocks"]["spatial"]["ff"]["proj_in"]["kernel"]
    got = logical_to_mesh_sharding(mlp, make_mesh(SHAPES["fsdp"]), get_rules("fsdp"))
    assert tuple(got.spec)[-2:] == ("fsdp", None)


def test_presets_name_every_logical_axis_once():
    for preset, rules in PRESETS.items():
        names = [n for n, _ in rules]
        assert sorted(names) == sorted(PARAM_AXES + ACT_AXES), preset


def test_overrides_and_config():
    rules = dict(get_rules("fsdp", {"embed": None, "act_batch": ["data"]}))
    assert rules["embed"] is None and rules["act_batch"] == "data" and rules["mlp"] == "fsdp"
    with pytest.raises(ValueError, match="unknown logical axes"):
        get_rules("fsdp", {"embedding": "fsdp"})
    with pytest.raises(ValueError, match="unknown mesh axes"):
        get_rules("fsdp", {"embed": "model"})
    with pytest.raises(ValueError, match="unknown sharding preset"):
        get_rules("zero3")
    config = ml_collections.ConfigDict({"mesh": {"preset": "fsdp_tp", "shape": (2, -1, 1, 2),
                                                 "rules_overrides": {"heads": None}}})
    mesh, rules = mesh_and_rules(config)
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "context": 1, "tensor": 2}
    assert dict(rules)["heads"] is None
    assert mesh_and_rules(ml_collections.ConfigDict({"mesh": {"preset": "none"}})) is None
    assert mesh_and_rules(ml_collections.ConfigDict({"seed": 0})) is None


@pytest.mark.parametrize("shape, match", [
    ((2, 4), "one size per mesh axis"), ((-1, -1, 1, 1), "more than one -1"),
    ((0, 8, 1, 1), "must be positive"), ((3, -1, 1, 1), "do not divide"),
    ((2, 2, 1, 1), "there are 8"),
])
def test_bad_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        resolve_shape(shape, 8)
    assert resolve_shape((2, -1, 1, 2), 8) == (2, 2, 1, 2)
