"""Optimizer from config: AdamW, linear warm-up then cosine decay, global-norm clipping;
optionally only the temporal layers train (``freeze_spatial``, Make-A-Video's fine-tuning)."""

import ml_collections
import optax

from vdm_jax.models.param_paths import temporal_param_labels


def learning_rate_schedule(cfg: ml_collections.ConfigDict) -> optax.Schedule:
    """Warm-up from 0 to ``cfg.learning_rate`` over ``cfg.warmup_steps``, then cosine to
    ``cfg.learning_rate * cfg.final_lr_fraction`` at ``cfg.steps``."""
    warmup = max(int(cfg.warmup_steps), 1)
    decay_steps = max(int(cfg.steps), warmup + 1)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=cfg.learning_rate,
        warmup_steps=warmup,
        decay_steps=decay_steps,
        end_value=cfg.learning_rate * cfg.final_lr_fraction,
    )


def make_optimizer(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with the schedule above, gradients clipped to ``cfg.grad_clip`` global norm. With
    ``cfg.freeze_spatial`` only temporal parameters (``param_paths.is_temporal``) are updated;
    the others get zero updates (and no optimizer state)."""
    tx = optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(
            learning_rate=learning_rate_schedule(cfg),
            b1=cfg.adam_b1,
            b2=cfg.adam_b2,
            weight_decay=cfg.weight_decay,
        ),
    )
    if not cfg.get("freeze_spatial", False):
        return tx
    return optax.multi_transform({"temporal": tx, "frozen": optax.set_to_zero()},
                                 temporal_param_labels)
