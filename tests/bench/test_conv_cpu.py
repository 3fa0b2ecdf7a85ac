"""bench/conv_cpu.py times every shape it lists, in jax and torch."""

import bench.conv_cpu as conv_cpu


def test_times_every_shape(monkeypatch):
    monkeypatch.setattr(conv_cpu, "SHAPES", [(2, 8, 4, 4, 3), (1, 8, 8, 4, 1)])
    for times in (conv_cpu.jax_times(repeats=1), conv_cpu.torch_times(repeats=1)):
        assert len(times) == 2 and all(t > 0 for t in times)
