"""The pure train step: one diffusion loss evaluation, one optimizer update, EMA, skip guard."""

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vdm_jax.diffusion import Schedule, diffusion_loss
from vdm_jax.train.state import TrainState, ema_decay_at, update_ema
from vdm_jax.train.tasks import Task, drop_text_conditioning


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """What the step needs besides the model and optimizer (all static under jit)."""

    schedule: Schedule
    parameterization: str
    loss_weighting: str
    cond_drop_rate: float
    ema_decay: float
    num_image_frames: int
    time_warp: float = 1.0  # diffusion.losses.warp_time power on training times (1: none)
    task: Task = Task()  # the conditioning built from each clip (tasks.py); default: none
    prior_weight: float = 0.0  # weight of the image prior's loss (models with one)


def append_image_frames(key: jax.Array, video: jax.Array, num_images: int):
    """Appends ``num_images`` stills to each clip for joint image-video training (VDM §3).

    The stills are frames of the same clip at random times, so the clip's caption still
    describes them; the returned mask ``(b, t + k)`` marks them as images, which the model keeps
    out of temporal attention, making them independent image examples.

    video: ``(b, t, h, w, c)`` -> ``(b, t + k, h, w, c)``, image_frames ``(b, t + k)`` bool.
    """
    b, t = video.shape[:2]
    if num_images == 0:
        return video, None
    stills = random_frames(key, video, num_images)
    image_frames = jnp.concatenate(
        [jnp.zeros((b, t), bool), jnp.ones((b, num_images), bool)], axis=1
    )
    return jnp.concatenate([video, stills], axis=1), image_frames


def random_frames(key: jax.Array, video: jax.Array, per_clip: int) -> jax.Array:
    """``per_clip`` frames of each clip drawn at random times: ``(b, per_clip, h, w, c)``."""
    b, t = video.shape[:2]
    index = jax.random.randint(key, (b, per_clip), 0, t)
    return jnp.take_along_axis(video, index[:, :, None, None, None], axis=1)


def keep_if(finite: jax.Array, new, old):
    """``new`` where ``finite`` (a scalar bool), else ``old``, leaf by leaf: the skip guard."""
    return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    settings: StepSettings,
    null_tokens: jax.Array,
) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
    """Returns ``train_step(state, batch) -> (state, metrics)``, pure and jittable.

    batch: ``video (b, t, h, w, 3)`` in [-1, 1] and ``tokens (b, L)`` int32. ``settings.task``
    builds the stage's conditioning from the clips (``tasks.py``; none for plain generation) and
    passes it as the model's ``cond``; a model with an image prior adds its loss, weighted by
    ``settings.prior_weight``, to ``loss`` (and reports it as ``prior_loss``). The per-step key is
    ``fold_in(state.rng, state.step)``, so a resumed run draws the same randomness. A step with
    a non-finite loss or gradient norm leaves params, optimizer state and EMA untouched and is
    counted in ``state.nonfinite``.
    """

    def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
        key = jax.random.fold_in(state.rng, state.step)
        k_images, k_drop, k_loss, k_dropout, k_task = jax.random.split(key, 5)
        video, image_frames = append_image_frames(
            k_images, batch["video"], settings.num_image_frames
        )
        real_cond = settings.task.conditioning(k_task, video, settings.schedule)
        tokens, cond = drop_text_conditioning(k_drop, batch["tokens"], real_cond, null_tokens,
                                              settings.cond_drop_rate)
        inputs = {"cond": cond} if cond else {}  # models without stage inputs take none

        def loss_fn(params):
            def model_fn(z, t):
                return model.apply(
                    {"params": params}, z, t, tokens, image_frames=image_frames, train=True,
                    rngs={"dropout": k_dropout}, **inputs,
                )

            per_example, _ = diffusion_loss(
                model_fn, video, k_loss, schedule=settings.schedule,
                parameterization=settings.parameterization, weighting=settings.loss_weighting,
                time_warp=settings.time_warp,
            )
            loss, aux = per_example.mean(), {}
            if settings.prior_weight and "image_embed" in real_cond:
                aux["prior_loss"] = model.apply(
                    {"params": params}, batch["tokens"], real_cond["image_embed"],
                    method="prior_loss").mean()
                loss = loss + settings.prior_weight * aux["prior_loss"]
            return loss, aux

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = update_ema(state.ema_params, params, ema_decay_at(state.step, settings.ema_decay))
        skipped = (~finite).astype(jnp.int32)
        new_state = state.replace(
            step=state.step + 1,
            params=keep_if(finite, params, state.params),
            opt_state=keep_if(finite, opt_state, state.opt_state),
            ema_params=keep_if(finite, ema, state.ema_params),
            nonfinite=state.nonfinite + skipped,
            nonfinite_streak=(state.nonfinite_streak + skipped) * skipped,
        )
        metrics = {"loss": loss, "grad_norm": grad_norm, "skipped": skipped, **aux}
        return new_state, metrics

    return train_step
