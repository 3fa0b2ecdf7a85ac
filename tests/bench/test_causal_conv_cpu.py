"""bench/causal_conv_cpu.py times every tap layout and torch on each shape it lists."""

import bench.causal_conv_cpu as causal_conv_cpu


def test_table_has_a_row_per_shape_with_the_auto_layout_marked(monkeypatch):
    monkeypatch.setattr(causal_conv_cpu, "SHAPES", [(2, 8, 2, 8), (3, 8, 4, 4)])
    lines = causal_conv_cpu.table(repeats=1)
    assert len(lines) == 4
    assert "(auto)" in lines[2] and lines[2].count("|") == len(causal_conv_cpu.LAYOUTS) + 5
    assert lines[3].split("|")[4].strip().endswith("(auto)")  # 4 -> 4 channels: "sum"
