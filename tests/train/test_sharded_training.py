"""Sharded training on the 8 fake CPU devices equals the single-device run, under every preset:
same losses and parameters after a few steps; the state lands in the preset's shards."""

import jax
import numpy as np
import pytest

from configs import latte_shapes, vdm_shapes
from vdm_jax.sharding import PRESETS
from vdm_jax.train.loop import setup

STEPS = 2
# (data, fsdp, context, tensor): every axis the preset uses is larger than 1.
SHAPES = {"dp": (8, 1, 1, 1), "fsdp": (2, 4, 1, 1), "fsdp_tp": (2, 2, 1, 2),
          "fsdp_cp": (1, 4, 2, 1), "vae_spatial": (2, 1, 4, 1)}
CONFIGS = {"unet3d": vdm_shapes, "latte": latte_shapes}


def _config(model, preset="none", context_parallel="none"):
    c = CONFIGS[model].get_config("test")
    c.data.batch_size = 8  # divides by every preset's batch shards
    if model == "unet3d":  # one level with every block kind: a quicker compile
        c.model.update(channel_mult=(1,), attention_levels=(0,), head_dim=8)  # 2 heads
    c.mesh.update(preset=preset, shape=SHAPES.get(preset, ()), context_parallel=context_parallel)
    return c


def _train(config, workdir):
    run = setup(config, workdir)
    losses = []
    for _ in range(STEPS):
        run.state, metrics = run.train_step(run.state, run.to_device(next(run.data_iterator)))
        losses.append(float(metrics["loss"]))
    run.checkpointer.close()
    run.writer.close()
    return run.state, losses


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    cache = {}

    def get(model):
        if model not in cache:
            cache[model] = _train(_config(model), tmp_path_factory.mktemp(f"ref_{model}"))
        return cache[model]

    return get


# Each case compiles a train step (~10-30 s on a 2-core CPU): every preset for both models, and
# fsdp_cp with each context-parallel attention scheme (nn.attention_cp).
CASES = [(m, p, "none") for m in ("latte", "unet3d") for p in sorted(PRESETS)] + [
    (m, "fsdp_cp", cp) for m in ("latte", "unet3d") for cp in ("ulysses", "ring", "divided")]


@pytest.mark.parametrize("model, preset, context_parallel", CASES)
def test_sharded_steps_equal_unsharded(model, preset, context_parallel, reference, tmp_path):
    want_state, want_losses = reference(model)
    state, losses = _train(_config(model, preset, context_parallel), tmp_path)
    np.testing.assert_allclose(losses, want_losses, rtol=1e-5, atol=1e-6)
    assert int(state.step) == STEPS
    for name in ("params", "ema_params"):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                     jax.device_get(getattr(state, name)), jax.device_get(getattr(want_state,
                                                                                   name)))
    leaves = jax.tree.leaves(state.params)
    assert all(len(x.sharding.device_set) == 8 for x in leaves)
    split = [x for x in leaves if not x.sharding.is_fully_replicated]
    adam = [x for x in jax.tree.leaves(state.opt_state, is_leaf=lambda x: hasattr(x, "mu"))
            if hasattr(x, "mu")][0]
    for moments in (adam.mu, adam.nu, state.ema_params):  # all follow the parameters
        assert jax.tree.leaves(jax.tree.map(lambda m, p: m.sharding == p.sharding, moments,
                                            state.params)) == [True] * len(leaves)
    if preset.startswith("fsdp"):
        assert all(not x.sharding.is_fully_replicated for x in leaves if x.size >= 2**10)
    else:
        assert not split  # dp and vae_spatial replicate parameters


def test_bad_batch_is_a_clear_error(tmp_path):
    c = _config("latte", "dp")
    c.data.batch_size = 6
    with pytest.raises(ValueError, match="must divide by the 8 batch shards"):
        setup(c, tmp_path)
