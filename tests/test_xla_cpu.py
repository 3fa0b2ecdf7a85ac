"""vdm_jax/_xla_cpu.py: the XLA CPU flag goes in only where it was measured to help
and never over a user's own setting."""

import os

from vdm_jax._xla_cpu import (
    EIGEN_KERNELS,
    KEEP_DEFAULTS_ENV,
    cpu_flags_to_add,
    jaxlib_release,
)


def test_flag_added_for_jaxlib_0_10_only():
    assert cpu_flags_to_add("", (0, 10), keep_defaults=False) == EIGEN_KERNELS
    assert cpu_flags_to_add("--xla_force_host_platform_device_count=8", (0, 10), False) \
        == EIGEN_KERNELS
    for release in [(0, 9), (0, 11), (1, 0), None]:
        assert cpu_flags_to_add("", release, keep_defaults=False) == ""


def test_user_settings_win():
    own = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    assert cpu_flags_to_add(own, (0, 10), keep_defaults=False) == ""
    assert cpu_flags_to_add("", (0, 10), keep_defaults=True) == ""


def test_importing_vdm_jax_sets_the_ynn_fusion_types_on_jaxlib_0_10():
    import vdm_jax  # noqa: F401

    if jaxlib_release() == (0, 10) and os.environ.get(KEEP_DEFAULTS_ENV) != "1":
        assert "ynn_fusion_type" in os.environ.get("XLA_FLAGS", "")
