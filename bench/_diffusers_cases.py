"""The models of ``bench/vs_diffusers.py``: each diffusers module built with random weights, saved
with ``save_pretrained``, loaded with ``vdm_jax.convert.load_diffusers``, and the calls to time
on the same input in both frameworks (ours channels-last).

``CONFIGS[model][size]`` holds the diffusers constructor arguments and the input size, for
``size`` ``"full"`` (the benchmark) and ``"quick"`` (a smoke test of a few seconds).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from bench._flops import latte_forward_flops
from vdm_jax.convert import load_diffusers

_LATTE_BLOCKS = dict(activation_fn="gelu-approximate", attention_bias=True,  # Latte-1's blocks
                     norm_elementwise_affine=False, norm_eps=1e-6, norm_type="ada_norm_single",
                     num_embeds_ada_norm=1000, in_channels=4, out_channels=8, patch_size=2)
_COG = dict(down_block_types=("CogVideoXDownBlock3D",) * 4,
            up_block_types=("CogVideoXUpBlock3D",) * 4, temporal_compression_ratio=4)
_UNET3D_TWO_LEVELS = dict(down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                         up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"))
# The training step recomputes attention in the backward pass and keeps every weight matmul's
# output, as torch's CPU scaled_dot_product_attention does (it keeps only softmax statistics);
# every layer's attention probabilities instead costs more memory traffic than recomputing them.
LATTE_TRAIN_REMAT = "dots_with_no_batch_dims_saveable"
# The UNet's training step keeps convolution outputs too (Latte's policy keeps only matmuls, so
# each resnet's first conv would run again) and the attention outputs, recomputing the
# elementwise work around them: about 9.0 s a step on one core at the full size, against
# 10.7 s keeping everything and 13.5 s under Latte's policy (measured before attention had its
# own backward pass; with it, all four policies are within 8% of each other).
UNET3D_TRAIN_REMAT = "dots_saveable"
_SD = dict(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)

CONFIGS = {
    "latte": {  # Latte-S width (6 heads x 64), text-conditioned, 12 spatial + 12 temporal blocks
        # (twice the depth of the paper's S/2, 6 + 6; VARIANTS["S/2"] in vdm_jax.models.latte)
        "full": dict(diffusers=dict(num_attention_heads=6, attention_head_dim=64, num_layers=12,
                                    sample_size=32, video_length=16, caption_channels=384,
                                    cross_attention_dim=384, **_LATTE_BLOCKS),
                     batch=1, frames=16, size=32, context_len=16),
        "quick": dict(diffusers=dict(num_attention_heads=2, attention_head_dim=16, num_layers=2,
                                     sample_size=8, video_length=4, caption_channels=32,
                                     cross_attention_dim=32, **_LATTE_BLOCKS),
                      batch=1, frames=4, size=8, context_len=4),
    },
    "unet3d": {  # ModelScope's structure (CrossAttnDownBlock3D x 3 + DownBlock3D and back, 2
        # resnets a down level, 32 groups) at a quarter of its width or less (ModelScope: 320,
        # 640, 1280, 1280; 64-channel heads; 1024-wide text), on 8 frames of 32 x 32 latents
        "full": dict(diffusers=dict(block_out_channels=(64, 128, 128, 128), layers_per_block=2,
                                    attention_head_dim=32, cross_attention_dim=256,
                                    in_channels=4, sample_size=32),
                     batch=1, frames=8, size=32, context_len=16),
        "quick": dict(diffusers=dict(block_out_channels=(16, 32), layers_per_block=1,
                                     norm_num_groups=8, attention_head_dim=8,
                                     cross_attention_dim=32, in_channels=4, sample_size=8,
                                     **_UNET3D_TWO_LEVELS),
                      batch=1, frames=4, size=8, context_len=4),
    },
    "causal_vae": {  # CogVideoX VAE structure (4 levels, 3 resnets a level), narrower; 17 frames
        # are 9 + 8 frames encoded and 3 + 2 latents decoded, diffusers' batching
        "full": dict(diffusers=dict(block_out_channels=(32, 64, 64, 128), latent_channels=16,
                                    norm_num_groups=8, **_COG), frames=17, size=128),
        "quick": dict(diffusers=dict(block_out_channels=(8, 16, 16, 16), latent_channels=4,
                                     norm_num_groups=4, layers_per_block=1, **_COG),
                      frames=9, size=32),  # one frame batch each way: half the compile time
    },
    "image_vae": {  # SD VAE structure (4 levels, 2 resnets a level, 32 groups), narrower, on
        # every frame of the causal VAE's clip (diffusers: the frames as a batch of images)
        "full": dict(diffusers=dict(block_out_channels=(32, 64, 64, 128), layers_per_block=2,
                                    latent_channels=4, sample_size=128, **_SD),
                     frames=17, size=128),
        "quick": dict(diffusers=dict(block_out_channels=(8, 16, 16, 16), layers_per_block=1,
                                     norm_num_groups=4, latent_channels=4, sample_size=32, **_SD),
                      frames=9, size=32),
    },
}


@dataclasses.dataclass
class Pass:
    """One timed call: ``torch_fn()`` and ``jax_fn(*jax_args)`` compute the same thing;
    ``check(torch_out, jax_out)`` is their relative error."""

    name: str
    torch_fn: Callable[[], object]
    jax_fn: Callable
    jax_args: tuple
    check: Callable[[object, object], float]
    analytic_flops: float | None = None


@dataclasses.dataclass
class Case:
    model: str
    shape: str
    params: int
    passes: list[Pass]


def relative(got, want) -> float:
    got, want = (np.atleast_1d(np.asarray(a, np.float64)) for a in (got, want))
    if got.shape != want.shape:
        raise ValueError(f"shapes differ: {got.shape} vs {want.shape}")
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def randomise(torch, module) -> None:
    """Every parameter random (diffusers zero-initialises some, which would hide a missed
    weight): matrices and kernels at ``fan_in ** -0.5`` so deep stacks stay O(1), vector
    weights (norm scales) near 1, biases near 0."""
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn_like(p) * p[0].numel() ** -0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(0.1 * torch.randn_like(p))


def _saved(torch, cls, config: dict, folder: str):
    ref = cls(**config)
    randomise(torch, ref)
    ref.eval().save_pretrained(folder)
    model, params = load_diffusers(folder)
    return ref, model, params, sum(p.numel() for p in ref.parameters())


def _grad_norm(torch, module) -> float:
    return float(torch.sqrt(sum(p.grad.double().square().sum() for p in module.parameters())))


def _train_step(model):
    def loss(params, x, t, ctx):
        return jnp.mean(jnp.square(model.apply(params, x, t, ctx)))

    def step(params, x, t, ctx):
        return jax.value_and_grad(loss)(params, x, t, ctx)

    return step


def _latte_analytic(cfg: dict) -> float:
    d = cfg["diffusers"]
    return latte_forward_flops(
        hidden=d["num_attention_heads"] * d["attention_head_dim"], layers=d["num_layers"],
        batch=cfg["batch"], frames=cfg["frames"], height=cfg["size"], width=cfg["size"],
        patch=d["patch_size"], in_channels=d["in_channels"], out_channels=d["out_channels"],
        caption_channels=d["caption_channels"], context_len=cfg["context_len"])


def _denoiser_case(torch, name: str, saved, cfg: dict, context_channels: int, remat: str,
                   flops: float | None = None) -> Case:
    """A text-conditioned video denoiser at raw diffusers timesteps: one sampling-step forward
    and a training step (loss = mean square of the output, grads with respect to every
    parameter; ours under the ``remat`` policy)."""
    ref, model, params, count = saved
    model = model.clone(time_scale=1.0, time_shift=0.0)
    b, t, s, n = cfg["batch"], cfg["frames"], cfg["size"], cfg["context_len"]
    c = cfg["diffusers"]["in_channels"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, c, t, s, s)).astype(np.float32)
    ctx = rng.standard_normal((b, n, context_channels)).astype(np.float32)
    steps = np.full((b,), 500)
    tx, tt, tctx = torch.tensor(x), torch.tensor(steps), torch.tensor(ctx)
    args = (params, jnp.asarray(x.transpose(0, 2, 3, 4, 1)), jnp.asarray(steps, jnp.float32),
            jnp.asarray(ctx))

    def forward():
        with torch.no_grad():
            return ref(tx, tt, tctx).sample

    def train_step():
        ref.zero_grad(set_to_none=True)
        loss = ref(tx, tt, tctx).sample.square().mean()
        loss.backward()
        return loss

    def check_step(loss, got):
        value, grads = got
        norm = float(jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads))))
        return max(relative(value, loss.item()), relative(norm, _grad_norm(torch, ref)))

    fwd = Pass("forward", forward, model.apply, args,
               lambda want, got: relative(got, want.numpy().transpose(0, 2, 3, 4, 1)), flops)
    step = Pass("forward+backward", train_step, _train_step(model.clone(remat=remat)),
                args, check_step, None if flops is None else 3 * flops)
    shape = f"{b}x{t}x{s}x{s}x{c} + {n}x{context_channels} text"
    return Case(name, shape, count, [fwd, step])


def latte_case(torch, diffusers, cfg: dict, folder: str) -> Case:
    """Latte, with the analytic FLOP count next to XLA's."""
    saved = _saved(torch, diffusers.LatteTransformer3DModel, cfg["diffusers"], folder)
    return _denoiser_case(torch, "latte", saved, cfg, cfg["diffusers"]["caption_channels"],
                          LATTE_TRAIN_REMAT, _latte_analytic(cfg))


def unet3d_case(torch, diffusers, cfg: dict, folder: str) -> Case:
    """ModelScope's text-to-video UNet (diffusers' UNet3DConditionModel)."""
    saved = _saved(torch, diffusers.UNet3DConditionModel, cfg["diffusers"], folder)
    return _denoiser_case(torch, "unet3d", saved, cfg, cfg["diffusers"]["cross_attention_dim"],
                          UNET3D_TRAIN_REMAT)


def _roundtrip(module, x):
    """encode -> posterior mode -> decode, per video (both VAE classes name it the same)."""
    z = module.encode_video(x).mode()
    return z, module.decode_video(z)


def _vae_case(torch, name: str, cls, cfg: dict, folder: str, per_frame: bool) -> Case:
    ref, model, params, count = _saved(torch, cls, cfg["diffusers"], folder)
    t, s = cfg["frames"], cfg["size"]
    x = np.random.default_rng(0).uniform(-1, 1, (1, t, s, s, 3)).astype(np.float32)
    # diffusers: (b, c, t, h, w) videos, or the frames as a batch of (c, h, w) images.
    tx = torch.tensor(x[0].transpose(0, 3, 1, 2) if per_frame else x.transpose(0, 4, 1, 2, 3))

    def to_ours(a):
        a = a.numpy()
        return a.transpose(0, 2, 3, 1)[None] if per_frame else a.transpose(0, 2, 3, 4, 1)

    def forward():
        with torch.no_grad():
            z = ref.encode(tx).latent_dist.mode()
            return z, ref.decode(z).sample

    def check(want, got):
        return max(relative(g, to_ours(w)) for g, w in zip(got, want, strict=True))

    def apply(params, x):
        return model.apply(params, x, method=_roundtrip)

    fwd = Pass("encode+decode", forward, apply, (params, jnp.asarray(x)), check)
    return Case(name, f"1x{t}x{s}x{s}x3", count, [fwd])


def causal_vae_case(torch, diffusers, cfg: dict, folder: str) -> Case:
    """CogVideoX causal VAE: a 4k+1-frame clip, diffusers' default frame batching."""
    return _vae_case(torch, "causal_vae", diffusers.AutoencoderKLCogVideoX, cfg, folder, False)


def image_vae_case(torch, diffusers, cfg: dict, folder: str) -> Case:
    """SD-structured image VAE on every frame of the same-sized clip (diffusers: a batch)."""
    return _vae_case(torch, "image_vae", diffusers.AutoencoderKL, cfg, folder, True)


BUILDERS = {"latte": latte_case, "unet3d": unet3d_case, "causal_vae": causal_vae_case,
            "image_vae": image_vae_case}
