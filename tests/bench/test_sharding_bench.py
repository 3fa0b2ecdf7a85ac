"""bench/sharding.py: collective bytes are read from HLO text, and a tiny Latte's compiled
train step needs less temp memory per device as the context axis grows."""

import jax.numpy as jnp
from jax import ShapeDtypeStruct

from bench.sharding import collective_bytes, compile_step
from vdm_jax.models.latte import LatteTransformer

HLO = """
  %all-to-all.1 = f32[2,16,8]{2,1,0} all-to-all(f32[2,16,8]{2,1,0} %x), dimensions={1}
  %cp = (bf16[4,4]{1,0}, bf16[4,4]{1,0}) collective-permute(%a, %b), source_target_pairs={{0,1}}
  %ag = f32[10]{0} all-gather-start(f32[5]{0} %p), dimensions={0}
  %add = f32[2,16,8]{2,1,0} add(%all-to-all.1, %all-to-all.1)
"""


def test_collective_bytes_sums_result_shapes():
    got = collective_bytes(HLO)
    assert got["all-to-all"] == 2 * 16 * 8 * 4
    assert got["collective-permute"] == 2 * 4 * 4 * 2
    assert got["all-gather"] == 10 * 4
    assert got["all-reduce"] == got["reduce-scatter"] == 0


def test_context_parallel_step_shrinks_temp_memory():
    model = LatteTransformer(hidden_size=32, num_layers=1, num_heads=2, sample_size=16,
                             caption_channels=16)
    inputs = (ShapeDtypeStruct((1, 8, 16, 16, 4), jnp.float32),
              ShapeDtypeStruct((1,), jnp.float32), ShapeDtypeStruct((1, 4, 16), jnp.float32))
    one = compile_step(model, inputs, 1, "none")
    four = compile_step(model, inputs, 4, "divided")
    assert four.memory_analysis().temp_size_in_bytes < \
        0.5 * one.memory_analysis().temp_size_in_bytes
    assert sum(collective_bytes(four.as_text()).values()) > 0
    assert sum(collective_bytes(one.as_text()).values()) == 0
