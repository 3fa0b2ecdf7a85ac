"""The CogVideoX causal 3D VAE (Yang et al. 2024), as diffusers' ``AutoencoderKLCogVideoX``.

Videos ``(b, 4k+1, 8h, 8w, 3)`` in ``[-1, 1]`` encode to a :class:`DiagonalGaussian` over
latents ``(b, k+1, h, w, 16)`` and decode back (for the released configs: temporal ratio 4,
three spatial halvings). Every conv is causal in time (it sees the current and earlier frames)
and the first frame is compressed alone, so an image is the 1-frame video; GroupNorm pools the
frames of a batch (below), so the whole network is causal batch by batch.

Frame batches: the reference encodes 8 frames and decodes 2 latents at a time (the first batch
also takes the remainder: 9 then 8, 8, ... for 49 frames; 3 then 2, 2, ... for 13 latents),
carrying each causal conv's last input frames to the next batch. Its GroupNorm statistics
therefore cover one batch, and that is the model's output (one pass with clip-wide statistics
differs from it, by 2-8% on random weights). ``encode``/``decode`` reproduce it either way:

* ``chunked=True`` (default): batch by batch in a ``lax.scan`` that carries the causal cache,
  so memory holds one batch's activations (49 or 81 frames at full resolution).
* ``chunked=False``: the whole clip at once, each GroupNorm normalising per batch.

Both give the same result. ``encoder_frame_batch=None`` / ``decoder_frame_batch=None`` make the
whole clip one batch (clip-wide statistics; what calling diffusers' ``vae.encoder`` directly
computes). ``tiling`` adds diffusers' overlapping spatial tiles, blended linearly.

As in the reference, the decoder keeps the first latent apart only when the latent count is
odd: ``2m+1`` latents decode to ``8m+1`` frames, an even count ``n`` to ``4n``, so only
``8m+1``-frame videos round-trip (49 -> 13 -> 49).

Apply with ``model.apply(params, x, method="encode")`` etc.; ``model.apply(params, x, key)``
returns ``(reconstruction, posterior)``.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from einops import rearrange

from vdm_jax.models import counting
from vdm_jax.models.causal_vae_blocks import SPATIAL_NORM_EPS, ResnetStack, SpatialNorm3D
from vdm_jax.models.posterior import DiagonalGaussian
from vdm_jax.models.sizes import nearest_valid
from vdm_jax.nn.conv import CausalConv3d
from vdm_jax.nn.norms import GroupNorm

Dtype = jnp.dtype


@dataclasses.dataclass(frozen=True)
class Tiling:
    """Spatial tiles in pixels and their overlap fractions (diffusers' ``enable_tiling``).

    Input larger than one tile is cut into tiles ``sample_*`` pixels (``sample_* // f``
    latents) apart by ``1 - overlap_*`` of a tile; each is coded alone and the overlaps blended.
    """

    sample_height: int
    sample_width: int
    overlap_height: float = 1 / 6
    overlap_width: float = 1 / 5


class Encoder3D(nn.Module):
    """``(b, t, H, W, c) -> (b, t', H/f, W/f, 2 * latent)`` (``CogVideoXEncoder3D``)."""

    block_out_channels: tuple[int, ...]
    latent_channels: int
    layers_per_block: int
    num_groups: int
    epsilon: float
    temporal_levels: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x, cache=None, segments=None):
        cache, new, chs = cache or {}, {}, self.block_out_channels
        conv_in = CausalConv3d(chs[0], dtype=self.dtype, name="conv_in")
        h, new["conv_in"] = conv_in(x, cache.get("conv_in"))
        for i, ch in enumerate(chs):
            name = f"down_blocks_{i}"
            block = ResnetStack(
                ch, self.layers_per_block, self.num_groups, self.epsilon,
                resample=None if i == len(chs) - 1 else "down",
                compress_time=i < self.temporal_levels, dtype=self.dtype, name=name)
            h, new[name], segments = block(h, cache.get(name), segments)
        mid = ResnetStack(chs[-1], 2, self.num_groups, self.epsilon, dtype=self.dtype,
                          name="mid_block")
        h, new["mid_block"], _ = mid(h, cache.get("mid_block"), segments)
        norm = GroupNorm(self.num_groups, SPATIAL_NORM_EPS, dtype=self.dtype, name="norm_out")
        h = nn.silu(norm(h, segments=segments))
        conv_out = CausalConv3d(2 * self.latent_channels, dtype=self.dtype, name="conv_out")
        h, new["conv_out"] = conv_out(h, cache.get("conv_out"))
        return h, new


class Decoder3D(nn.Module):
    """``(b, t', h, w, latent) -> (b, t, h*f, w*f, out)`` (``CogVideoXDecoder3D``); every norm
    is a :class:`SpatialNorm3D` conditioned on the decoder's own input."""

    block_out_channels: tuple[int, ...]
    out_channels: int
    layers_per_block: int
    num_groups: int
    epsilon: float
    temporal_levels: int
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, z, cache=None, segments=None):
        cache, new = cache or {}, {}
        chs = self.block_out_channels[::-1]
        conv_in = CausalConv3d(chs[0], dtype=self.dtype, name="conv_in")
        h, new["conv_in"] = conv_in(z, cache.get("conv_in"))
        mid = ResnetStack(chs[0], 2, self.num_groups, self.epsilon, dtype=self.dtype,
                          name="mid_block")
        h, new["mid_block"], _ = mid(h, cache.get("mid_block"), segments, z)
        for i, ch in enumerate(chs):
            name = f"up_blocks_{i}"
            block = ResnetStack(
                ch, self.layers_per_block + 1, self.num_groups, self.epsilon,
                resample=None if i == len(chs) - 1 else "up",
                compress_time=i < self.temporal_levels, dtype=self.dtype, name=name)
            h, new[name], segments = block(h, cache.get(name), segments, z)
        norm = SpatialNorm3D(chs[-1], self.num_groups, self.dtype, name="norm_out")
        h = nn.silu(norm(h, z, segments))
        conv_out = CausalConv3d(self.out_channels, dtype=self.dtype, name="conv_out")
        h, new["conv_out"] = conv_out(h, cache.get("conv_out"))
        return h, new


def frame_batches(frames: int, batch: int | None) -> tuple[int, ...]:
    """The reference's split of ``frames``: ``batch + frames % batch`` first, then ``batch``s
    (one batch when ``batch`` is None or more than ``frames``)."""
    if batch is None or frames < batch:
        return (frames,)
    return (batch + frames % batch,) + (batch,) * (frames // batch - 1)


def _scan_step(module, cache, chunk):
    y, cache = module(chunk, cache)
    return cache, y


def run_batched(module: nn.Module, x: jax.Array, sizes: tuple[int, ...]) -> jax.Array:
    """``module(x_batch, cache) -> (y, cache)`` over the frame batches ``sizes`` of ``x``: the
    first outside the loop (it has no cache and may be longer), the rest in an ``nn.scan``."""
    y, cache = module(x[:, : sizes[0]])
    if len(sizes) == 1:
        return y
    rest = rearrange(x[:, sizes[0]:], "b (n c) ... -> n b c ...", c=sizes[1])
    scan = nn.scan(_scan_step, variable_broadcast="params", split_rngs={"params": False})
    _, ys = scan(module, cache, rest)
    return jnp.concatenate([y, rearrange(ys, "n b c ... -> b (n c) ...")], axis=1)


def blend(a: jax.Array, b: jax.Array, extent: int, axis: int) -> jax.Array:
    """``b`` with its first ``extent`` rows along ``axis`` faded in from ``a``'s last ones
    (weights ``1 - y / extent`` on ``a``), diffusers' ``blend_v``/``blend_h``."""
    extent = min(a.shape[axis], b.shape[axis], extent)
    if extent <= 0:
        return b
    shape = [1] * b.ndim
    shape[axis] = extent
    w = (jnp.arange(extent, dtype=jnp.float32) / extent).reshape(shape)
    tail = jax.lax.slice_in_dim(a, a.shape[axis] - extent, a.shape[axis], axis=axis)
    head = jax.lax.slice_in_dim(b, 0, extent, axis=axis)
    rest = jax.lax.slice_in_dim(b, extent, b.shape[axis], axis=axis)
    return jnp.concatenate([(tail * (1 - w) + head * w).astype(b.dtype), rest], axis=axis)


def run_tiled(fn, x: jax.Array, tile: tuple[int, int], stride: tuple[int, int],
              extent: tuple[int, int], keep: tuple[int, int]) -> jax.Array:
    """``fn`` on ``tile``-sized windows of ``x`` ``(b, t, H, W, c)`` every ``stride``; each
    result is blended with its upper and left neighbours over ``extent`` and cropped to
    ``keep``. Neighbours are the already-blended tiles, as the reference blends in place."""
    rows = [[fn(x[:, :, i: i + tile[0], j: j + tile[1]]) for j in range(0, x.shape[3], stride[1])]
            for i in range(0, x.shape[2], stride[0])]
    out = []
    for i, row in enumerate(rows):
        for j, y in enumerate(row):
            if i > 0:
                y = blend(rows[i - 1][j], y, extent[0], axis=2)
            if j > 0:
                y = blend(row[j - 1], y, extent[1], axis=3)
            row[j] = y
        out.append(jnp.concatenate([y[:, :, : keep[0], : keep[1]] for y in row], axis=3))
    return jnp.concatenate(out, axis=2)


class CausalVAE(nn.Module):
    """diffusers ``AutoencoderKLCogVideoX`` (no quant convs, SiLU).

    Attributes:
      in_channels, out_channels: pixel channels.
      block_out_channels: width of each level; all but the last halve h and w.
      latent_channels: latent channels (the encoder emits twice as many: mean, logvar).
      layers_per_block: resnets per encoder level (the decoder has one more per level).
      norm_num_groups, norm_eps: GroupNorm groups everywhere; eps of the resnets' GroupNorms.
      temporal_compression_ratio: a power of two; the first log2 of it levels also halve time.
      encoder_frame_batch, decoder_frame_batch: frames (latents) per batch, see the module
        docstring; ``None`` is the whole clip.
      sample_size: the training resolution ``(h, w)``; :meth:`default_tiling` uses half of it.
      scaling_factor: latent normalisation for the diffusion model.
    """

    in_channels: int = 3
    out_channels: int = 3
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512)
    latent_channels: int = 16
    layers_per_block: int = 3
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    temporal_compression_ratio: int = 4
    encoder_frame_batch: int | None = 8
    decoder_frame_batch: int | None = 2
    sample_size: tuple[int, int] = (480, 720)
    scaling_factor: float = 1.15258426
    dtype: Dtype | None = None

    def __post_init__(self):
        # Configs read back from JSON hold lists; keep the attributes hashable and comparable.
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        object.__setattr__(self, "sample_size", tuple(self.sample_size))
        super().__post_init__()

    def setup(self):
        self.check_config()
        common = dict(num_groups=self.norm_num_groups, epsilon=self.norm_eps,
                      temporal_levels=self.temporal_levels, dtype=self.dtype)
        self.encoder = Encoder3D(self.block_out_channels, self.latent_channels,
                                 self.layers_per_block, **common)
        self.decoder = Decoder3D(self.block_out_channels, self.out_channels,
                                 self.layers_per_block, **common)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def temporal_levels(self) -> int:
        return int(math.log2(self.temporal_compression_ratio))

    def check_config(self) -> None:
        r, levels = self.temporal_compression_ratio, len(self.block_out_channels) - 1
        if r < 1 or r & (r - 1) or r > 2 ** levels:
            raise ValueError(f"temporal_compression_ratio={r} must be a power of two of at most "
                             f"2**{levels} (one halving per downsampling level)")
        if any(ch % self.norm_num_groups for ch in self.block_out_channels):
            raise ValueError(f"norm_num_groups={self.norm_num_groups} must divide every width "
                             f"in block_out_channels={self.block_out_channels}")
        # Later batches must stay even through every time resampling to line up with one pass.
        enc, dec = self.encoder_frame_batch, self.decoder_frame_batch
        if enc is not None and (enc < 1 or enc % r):
            raise ValueError(f"encoder_frame_batch={enc} must be a multiple of "
                             f"temporal_compression_ratio={r} (or None)")
        if dec is not None and (dec < 1 or (r > 1 and dec % 2)):
            raise ValueError(f"decoder_frame_batch={dec} must be even (or None)")

    def check_video(self, x: jax.Array) -> None:
        """Raises unless ``x`` is ``(b, r*k+1, h, w, in)`` with ``h``, ``w`` multiples of ``f``."""
        c, r, f = self.in_channels, self.temporal_compression_ratio, self.spatial_factor
        if x.ndim != 5 or x.shape[-1] != c:
            raise ValueError(f"expected videos (b, t, h, w, {c}), got shape {x.shape}")
        t, h, w = x.shape[1:4]
        if t < 1 or (t - 1) % r:
            raise ValueError(f"the causal VAE needs {r}k+1 frames (1 for an image); got {t} "
                             f"frames; {nearest_valid(t, r, 1)}")
        for name, n in (("height", h), ("width", w)):
            if n % f:
                raise ValueError(f"{name} must be a multiple of {f}; got {n}; "
                                 f"{nearest_valid(n, f)}")

    def default_tiling(self) -> Tiling:
        """diffusers' default tiles: half the training resolution, overlaps 1/6 and 1/5."""
        return Tiling(self.sample_size[0] // 2, self.sample_size[1] // 2)

    def _batched(self, module, x, batch, chunked):
        sizes = frame_batches(x.shape[1], batch)
        if chunked:
            return run_batched(module, x, sizes)
        return module(x, None, sizes)[0]

    def encode_moments(self, x: jax.Array, *, chunked: bool = True,
                       tiling: Tiling | None = None) -> jax.Array:
        """``(b, t, H, W, in) -> (b, t', H/f, W/f, 2 * latent)``, unchecked (any size)."""
        x = x.astype(self.dtype or x.dtype)
        run = lambda v: self._batched(self.encoder, v, self.encoder_frame_batch, chunked)  # noqa: E731
        th, tw = (tiling.sample_height, tiling.sample_width) if tiling else x.shape[2:4]
        if x.shape[2] <= th and x.shape[3] <= tw:
            return run(x)
        f, oh, ow = self.spatial_factor, tiling.overlap_height, tiling.overlap_width
        lh, lw = int(th / f), int(tw / f)
        eh, ew = int(lh * oh), int(lw * ow)
        return run_tiled(run, x, (th, tw), (int(th * (1 - oh)), int(tw * (1 - ow))),
                         (eh, ew), (lh - eh, lw - ew))

    def encode(self, x: jax.Array, *, chunked: bool = True,
               tiling: Tiling | None = None) -> DiagonalGaussian:
        """Videos ``(b, r*k+1, H, W, in)`` -> posterior over ``(b, k+1, H/f, W/f, latent)``."""
        self.check_video(x)
        return DiagonalGaussian.from_moments(
            self.encode_moments(x, chunked=chunked, tiling=tiling).astype(jnp.float32))

    def decode(self, z: jax.Array, *, chunked: bool = True,
               tiling: Tiling | None = None) -> jax.Array:
        """Latents ``(b, n, h, w, latent)`` -> ``(b, t, h*f, w*f, out)``: ``t = 4n-3`` for odd
        ``n`` (``r(n-1)+1`` in general), ``4n`` for even ``n`` (see the module docstring)."""
        c = self.latent_channels
        if z.ndim != 5 or z.shape[-1] != c or z.shape[1] < 1:
            raise ValueError(f"expected latents (b, t, h, w, {c}), got shape {z.shape}")
        z = z.astype(self.dtype or z.dtype)
        run = lambda v: self._batched(self.decoder, v, self.decoder_frame_batch, chunked)  # noqa: E731
        th, tw = (tiling.sample_height, tiling.sample_width) if tiling else (None, None)
        f = self.spatial_factor
        lh, lw = (int(th / f), int(tw / f)) if tiling else z.shape[2:4]
        if z.shape[2] <= lh and z.shape[3] <= lw:
            return run(z)
        oh, ow = tiling.overlap_height, tiling.overlap_width
        eh, ew = int(th * oh), int(tw * ow)
        return run_tiled(run, z, (lh, lw), (int(lh * (1 - oh)), int(lw * (1 - ow))),
                         (eh, ew), (th - eh, tw - ew))

    def encode_video(self, x: jax.Array) -> DiagonalGaussian:
        """:meth:`encode` with the defaults (the name every video autoencoder shares)."""
        return self.encode(x)

    def decode_video(self, z: jax.Array) -> jax.Array:
        """:meth:`decode` with the defaults (the name every video autoencoder shares)."""
        return self.decode(z)

    def __call__(self, x: jax.Array, key: jax.Array | None = None, *, chunked: bool = True,
                 tiling: Tiling | None = None):
        """Videos -> ``(reconstruction, posterior)``; decodes a posterior sample drawn with
        ``key``, or its mode without one."""
        post = self.encode(x, chunked=chunked, tiling=tiling)
        z = post.mode() if key is None else post.sample(key)
        return self.decode(z, chunked=chunked, tiling=tiling), post

    def scale_latents(self, z: jax.Array) -> jax.Array:
        """Raw latents -> the unit-variance latents a diffusion model is trained on."""
        return z * self.scaling_factor

    def unscale_latents(self, z: jax.Array) -> jax.Array:
        """Inverse of :meth:`scale_latents`, before :meth:`decode`."""
        return z / self.scaling_factor


def example_inputs(model: CausalVAE) -> tuple[jax.Array]:
    """The smallest valid ``model.init`` input, one frame (parameter shapes do not depend on
    its size)."""
    f = model.spatial_factor
    return (jnp.zeros((1, 1, f, f, model.in_channels)),)


def count_params(model: CausalVAE) -> int:
    return counting.count_params(model, *example_inputs(model))


# Released VAEs (diffusers configs of THUDM/CogVideoX-2b and -5b: same network, 215.6M
# parameters, different latent scale).
VARIANTS = {
    "cogvideox-2b": dict(scaling_factor=1.15258426),
    "cogvideox-5b": dict(scaling_factor=0.7),
    "tiny": dict(block_out_channels=(8, 16, 16, 16), latent_channels=4, layers_per_block=1,
                 norm_num_groups=4, sample_size=(64, 64)),
}
