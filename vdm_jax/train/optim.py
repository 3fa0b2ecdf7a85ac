"""Optimizer from config: AdamW, linear warm-up then cosine decay, global-norm clipping."""

import ml_collections
import optax


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
    """AdamW with the schedule above, gradients clipped to ``cfg.grad_clip`` global norm."""
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip),
        optax.adamw(
            learning_rate=learning_rate_schedule(cfg),
            b1=cfg.adam_b1,
            b2=cfg.adam_b2,
            weight_decay=cfg.weight_decay,
        ),
    )
