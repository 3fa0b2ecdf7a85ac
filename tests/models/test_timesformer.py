"""TimeSformer: the survey's parameter table, and every attention variant runs end to end."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vdm_jax.models.timesformer import TimeSformer, count_params
from vdm_jax.nn.attention import ATTENTION_VARIANTS

# Survey §1.2.2 / TimeSformer Table 1, in millions, ViT-B/16, 8 x 224 x 224.
TABLE = {"space": 85.9, "joint": 85.9, "divided": 121.4, "sparse_local_global": 121.4,
         "axial": 156.8}


@pytest.mark.parametrize("variant", sorted(TABLE))
def test_parameter_counts_reproduce_the_table(variant):
    # The table's figures are those of the 174-class (Something-Something v2) models.
    assert round(count_params(TimeSformer(num_classes=174, attention=variant)) / 1e6, 1) == (
        TABLE[variant])


def test_kinetics_head_adds_exactly_its_extra_classes():
    ssv2 = count_params(TimeSformer(num_classes=174, attention="divided"))
    k400 = count_params(TimeSformer(num_classes=400, attention="divided"))
    assert k400 - ssv2 == (400 - 174) * (768 + 1)


TINY = dict(num_classes=4, num_frames=4, image_size=16, patch_size=4, width=16, depth=3,
            num_heads=2)


@pytest.mark.parametrize("variant", ATTENTION_VARIANTS)
def test_every_variant_runs_and_trains(variant):
    model = TimeSformer(attention=variant, **TINY)
    clips = jax.random.normal(jax.random.key(0), (2, 4, 16, 16, 3))
    params = model.init(jax.random.key(1), clips)
    logits = model.apply(params, clips)
    assert logits.shape == (2, 4) and bool(jnp.all(jnp.isfinite(logits)))
    labels = jnp.array([1, 3])
    loss = lambda p: -jnp.mean(  # noqa: E731
        jnp.take_along_axis(jax.nn.log_softmax(model.apply(p, clips)), labels[:, None], 1))
    grads = jax.grad(loss)(params)
    norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and sum(norms) > 0


def test_space_variant_ignores_frame_order_and_the_others_do_not():
    clips = jax.random.normal(jax.random.key(2), (1, 4, 16, 16, 3))
    reversed_clips = clips[:, ::-1]
    for variant, invariant in (("space", True), ("divided", False)):
        model = TimeSformer(attention=variant, **TINY)
        params = model.init(jax.random.key(3), clips)
        same = np.allclose(model.apply(params, clips), model.apply(params, reversed_clips),
                           atol=1e-5)
        assert same == invariant, variant


def test_bad_input_errors():
    model = TimeSformer(attention="divided", **TINY)
    with pytest.raises(ValueError, match="expected clips"):
        model.init(jax.random.key(0), jnp.zeros((1, 4, 8, 8, 3)))
    with pytest.raises(ValueError, match="exceed num_frames"):
        model.init(jax.random.key(0), jnp.zeros((1, 6, 16, 16, 3)))
    with pytest.raises(ValueError, match="unknown attention variant"):
        TimeSformer(attention="full", **TINY).init(jax.random.key(0), jnp.zeros((1, 4, 16, 16, 3)))
