"""The device mesh: axes ``("data", "fsdp", "context", "tensor")``, built from a config.

A config's ``mesh`` section::

    mesh = dict(preset="none",        # none | dp | fsdp | fsdp_tp | fsdp_cp | vae_spatial
                shape=(),             # sizes of (data, fsdp, context, tensor); one may be -1
                rules_overrides={},   # logical name -> mesh axes, e.g. {"embed": None}
                context_parallel="none")  # none | ulysses | ring | divided (nn.attention_cp)

``shape=()`` takes the preset's default, which gives every device to the preset's main axis.
Axes use ``AxisType.Auto`` (the compiler propagates shardings between the constraints).
"""

import contextlib
import contextvars
import math
from collections.abc import Sequence

import flax.linen as nn
import jax

MESH_AXES = ("data", "fsdp", "context", "tensor")

DEFAULT_SHAPES = {
    "dp": (-1, 1, 1, 1),
    "fsdp": (1, -1, 1, 1),
    "fsdp_tp": (1, -1, 1, 1),
    "fsdp_cp": (1, -1, 1, 1),
    "vae_spatial": (1, 1, -1, 1),
}


CONTEXT_PARALLEL_MODES = ("none", "ulysses", "ring", "divided")
_CONTEXT_PARALLEL = contextvars.ContextVar("vdm_jax_context_parallel", default="none")


def resolve_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """``shape`` with its one ``-1`` (if any) replaced by the rest of ``num_devices``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh.shape {shape} needs one size per mesh axis {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh.shape {shape} has more than one -1")
    if any(s == 0 or s < -1 for s in shape):
        raise ValueError(f"mesh.shape {shape}: sizes must be positive (or one -1)")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"mesh.shape {shape}: the fixed sizes (product {known}) do not "
                             f"divide the {num_devices} devices")
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices:
        raise ValueError(f"mesh.shape {shape} has {math.prod(shape)} devices, but there are "
                         f"{num_devices}")
    return shape


def make_mesh(shape: Sequence[int], devices: Sequence[jax.Device] | None = None):
    """A mesh over ``devices`` (default: all) with the four named axes."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_shape(shape, len(devices))
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 4,
                         devices=devices)


def mesh_and_rules(config):
    """``(mesh, rules)`` from a config's ``mesh`` section, or ``None`` without one (or with
    ``preset="none"``): the single-device path."""
    from vdm_jax.sharding.rules import get_rules  # rules imports MESH_AXES from here

    section = config.get("mesh") if hasattr(config, "get") else None
    if section is None or section.get("preset", "none") == "none":
        return None
    preset = section.preset
    rules = get_rules(preset, section.get("rules_overrides") or {})
    shape = tuple(section.get("shape") or ()) or DEFAULT_SHAPES[preset]
    return make_mesh(shape), rules


def context_parallel_of(config) -> str:
    """The config's ``mesh.context_parallel`` scheme (``"none"`` when absent), validated."""
    section = config.get("mesh") if hasattr(config, "get") else None
    mode = "none" if section is None else section.get("context_parallel", "none")
    if mode not in CONTEXT_PARALLEL_MODES:
        raise ValueError(f"unknown mesh.context_parallel {mode!r}; choose one of "
                         f"{list(CONTEXT_PARALLEL_MODES)}")
    return mode


@contextlib.contextmanager
def context_parallel(mode: str):
    """Attention traced inside splits over the ``context`` axis with scheme ``mode`` (see
    :mod:`vdm_jax.nn.attention_cp`); inert without a mesh or with context size 1."""
    if mode not in CONTEXT_PARALLEL_MODES:
        raise ValueError(f"unknown context-parallel mode {mode!r}; choose one of "
                         f"{list(CONTEXT_PARALLEL_MODES)}")
    token = _CONTEXT_PARALLEL.set(mode)
    try:
        yield
    finally:
        _CONTEXT_PARALLEL.reset(token)


def current_context_parallel() -> str:
    return _CONTEXT_PARALLEL.get()


@contextlib.contextmanager
def activate(mesh, rules, context_parallel_mode: str = "none"):
    """Makes ``mesh`` current, ``rules`` the logical-axis rules and ``context_parallel_mode``
    the attention scheme, so that model code traced in this context constrains activations
    (``shard()``) and splits attention over ``context``."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules), context_parallel(
            context_parallel_mode):
        yield
