"""Diffusion core: schedules, parameterisations, losses, samplers and guidance (pure functions)."""

from vdm_jax.diffusion.guidance import (
    Guidance,
    ReconstructionGuidance,
    classifier_free,
    drop_conditioning,
)
from vdm_jax.diffusion.losses import (
    TIME_SAMPLINGS,
    WEIGHTINGS,
    diffusion_loss,
    loss_weight,
    masked_mean,
    sample_time,
)
from vdm_jax.diffusion.parameterization import (
    PARAMETERIZATIONS,
    check_parameterization,
    eps_from_x0,
    expand_like,
    log_x0_mse_factor,
    prediction_from_x0_eps,
    to_x0_eps,
    training_target,
)
from vdm_jax.diffusion.samplers import SAMPLERS, sample, time_grid
from vdm_jax.diffusion.schedules import (
    SCHEDULES,
    Schedule,
    alpha_sigma_from_log_snr,
    cosine,
    discrete_log_alpha_bar,
    get_schedule,
    linear,
    scaled_linear,
    shifted_cosine,
)

__all__ = [
    "PARAMETERIZATIONS",
    "SAMPLERS",
    "SCHEDULES",
    "TIME_SAMPLINGS",
    "WEIGHTINGS",
    "Guidance",
    "ReconstructionGuidance",
    "Schedule",
    "alpha_sigma_from_log_snr",
    "check_parameterization",
    "classifier_free",
    "cosine",
    "diffusion_loss",
    "discrete_log_alpha_bar",
    "drop_conditioning",
    "eps_from_x0",
    "expand_like",
    "get_schedule",
    "linear",
    "log_x0_mse_factor",
    "loss_weight",
    "masked_mean",
    "prediction_from_x0_eps",
    "sample",
    "sample_time",
    "scaled_linear",
    "shifted_cosine",
    "time_grid",
    "to_x0_eps",
    "training_target",
]
