"""bench/xla_cpu_flags.py --quick: each setting runs in its own process with its own XLA flags
and times every pass of the model."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")

from bench import xla_cpu_flags  # noqa: E402
from vdm_jax._xla_cpu import EIGEN_KERNELS, jaxlib_release  # noqa: E402


def test_every_setting_times_every_pass_under_its_own_flags():
    report = xla_cpu_flags.main(["--quick", "--models", "image_vae", "--rounds", "1",
                                 "--repeats", "1"])
    assert set(report["medians"]) == set(xla_cpu_flags.SETTINGS)
    for times in report["medians"].values():
        assert list(times) == ["image_vae encode+decode"] and all(t > 0 for t in times.values())
    flags = report["xla_flags"]
    assert flags["jax default"] == ""
    assert flags["Eigen convolutions"].endswith("=-individual_convolution")
    if jaxlib_release() == (0, 10):
        assert EIGEN_KERNELS in flags["vdm_jax"]
