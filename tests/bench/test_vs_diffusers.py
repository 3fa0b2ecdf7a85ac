"""bench/vs_diffusers.py --quick, in process, one repeat: every row is there, agrees with
diffusers, is timed, and has a FLOP count (Latte's near the analytic one)."""

import json
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from bench import vs_diffusers  # noqa: E402

EXPECTED = {("latte", "forward"), ("latte", "forward+backward"),
            ("unet3d", "forward"), ("unet3d", "forward+backward"),
            ("causal_vae", "encode+decode"), ("image_vae", "encode+decode")}


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "rows.json"
    # One torch thread: the test checks the plumbing, not speed, and stays quick on busy cores.
    return vs_diffusers.main(["--quick", "--repeats", "1", "--torch-threads", "1",
                              "--json", str(out)]), out


def test_rows_agree_and_are_timed(report):
    report, _ = report
    rows = {(r["model"], r["pass"]): r for r in report["rows"]}
    assert set(rows) == EXPECTED
    for row in rows.values():
        assert row["status"] == "ok" and row["rel_error"] <= 1e-4, row
        for key in ("diffusers_ms", "vdm_jax_ms", "ratio", "gflop", "vdm_jax_peak_pct"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row)


def test_latte_flops_are_unrolled_and_near_the_analytic_count(report):
    report, _ = report
    for row in report["rows"]:
        if row["model"] == "latte":
            assert row["flops_from"] == "cost analysis x unroll factor"  # --quick
            assert 0.8 < row["xla_over_analytic"] < 1.5, row


def test_table_json_and_rerun_command(report, capsys):
    report, out = report
    assert json.loads(out.read_text())["rows"] == report["rows"]
    assert report["command"].endswith(f"--quick --torch-threads 1 --json {out}")
    assert report["matmul_peak"]["peak"] > 0
    table = vs_diffusers.format_table(report["rows"])
    assert table.count("\n") == 1 + len(EXPECTED)
    assert "| latte | forward+backward |" in table


def test_unknown_model_is_an_error():
    with pytest.raises(SystemExit):
        vs_diffusers.parse_args(["--models", "latte,unet"])
