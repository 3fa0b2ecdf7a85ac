"""bench/mfu.py --quick, in process, one timed step: both models are timed, have a FLOP count
(Latte's with its scanned blocks multiplied out, near the analytic count) and a plausible MFU;
and the bf16 setting computes in bf16 with float32 parameters."""

import json
import math

import jax
import jax.numpy as jnp
import pytest

from bench import mfu


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "mfu.json"
    return mfu.main(["--quick", "--steps", "1", "--json", str(out)]), out


def test_rows_are_timed_with_a_plausible_mfu(report):
    report, _ = report
    rows = {r["model"]: r for r in report["rows"]}
    assert set(rows) == set(mfu.MODELS)
    for row in rows.values():
        for key in ("step_ms", "tflop", "tflops", "compile_s", "params_m"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)
        assert 0 < row["mfu_measured"] <= 1.5, row
        assert row["mfu_datasheet"] is None  # no datasheet peak for a CPU
        assert math.isfinite(row["loss"]) and row["param_dtypes"] == ["float32"], row


def test_latte_flops_multiply_out_the_scan(report):
    row = next(r for r in report[0]["rows"] if r["model"] == "latte")
    assert row["tflop"] > 1.5 * row["looped_tflop"], row  # 2 scanned pairs, counted once looped
    assert 0.8 < row["tflop"] / row["analytic_tflop"] < 1.5, row


def test_table_json_and_rerun_command(report):
    report, out = report
    assert json.loads(out.read_text())["rows"] == report["rows"]
    assert report["command"].endswith(f"--steps 1 --dtype float32 --quick --json {out}")
    assert report["peaks_tflops"]["measured"] > 0
    table = mfu.format_table(report["rows"])
    assert table.count("\n") == 1 + len(mfu.MODELS)
    assert "| latte | " in table and "| unet3d | " in table


@pytest.mark.parametrize("name", mfu.MODELS)
def test_bfloat16_computes_in_bf16_with_float32_params(name):
    case = mfu.build_case(name, True, None, jnp.bfloat16, "none")
    params = mfu.init_shapes(case.model, case.inputs)
    assert {a.dtype for a in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}
    jaxpr = str(jax.make_jaxpr(case.model.apply)(params, *case.inputs))
    assert "dot_general" in jaxpr and "bf16" in jaxpr


def test_defaults_and_errors():
    assert mfu.parse_args([]).dtype == "bfloat16"
    assert mfu.parse_args(["--quick"]).dtype == "float32"
    with pytest.raises(SystemExit):
        mfu.parse_args(["--models", "latte,unet"])
    with pytest.raises(SystemExit):
        mfu.parse_args(["--steps", "0"])
