"""An 18-layer video ResNet whose convolutions are any variant of :mod:`vdm_jax.nn.conv`.

The convolution counterpart of the TimeSformer comparison: the same network with the 3x3 convs
of its residual blocks made per-frame (``spatial``), full 3D (``naive3d``, R3D), factorised
(``2plus1d``, R(2+1)D) or temporally causal (``causal3d``), as in Tran et al. 2018. The stem
and the stride-2 transitions are per-frame 2D convs in every variant; frames are never pooled,
so every variant sees the whole clip.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from vdm_jax.nn.conv import CONV_VARIANTS, SpatialConv, SpatialDownsample, video_conv
from vdm_jax.nn.norms import GroupNorm

Dtype = jnp.dtype


class BasicBlock(nn.Module):
    """conv -> GN -> ReLU -> conv -> GN, plus the input (projected when widths differ)."""

    features: int
    conv: str
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, x):
        groups = min(32, self.features // 4)
        y = video_conv(self.conv, self.features, dtype=self.dtype, name="conv1")(x)
        y = nn.relu(GroupNorm(groups, dtype=self.dtype, name="norm1")(y))
        y = video_conv(self.conv, self.features, dtype=self.dtype, name="conv2")(y)
        y = GroupNorm(groups, dtype=self.dtype, name="norm2")(y)
        if x.shape[-1] != self.features:
            x = nn.Dense(self.features, dtype=self.dtype, name="skip")(x)
        return nn.relu(x + y)


class VideoResNet(nn.Module):
    """``(b, t, H, W, 3)`` -> ``(b, num_classes)``; defaults are ResNet-18 widths at 224 px."""

    num_classes: int = 400
    conv: str = "2plus1d"
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks_per_stage: int = 2
    stem_stride: int = 4
    dtype: Dtype | None = None

    @nn.compact
    def __call__(self, video: jax.Array) -> jax.Array:
        if self.conv not in CONV_VARIANTS:
            raise ValueError(f"conv must be one of {CONV_VARIANTS}, got {self.conv!r}")
        if video.ndim != 5:
            raise ValueError(f"expected clips (b, t, h, w, 3), got shape {video.shape}")
        s = self.stem_stride
        x = SpatialConv(self.widths[0], kernel_size=(s + 3, s + 3), strides=(s, s),
                        dtype=self.dtype, name="stem")(video.astype(self.dtype or video.dtype))
        x = nn.relu(x)
        for stage, width in enumerate(self.widths):
            if stage:
                x = SpatialDownsample(width, dtype=self.dtype, name=f"down_{stage}")(x)
            for i in range(self.blocks_per_stage):
                x = BasicBlock(width, self.conv, dtype=self.dtype, name=f"stage{stage}_{i}")(x)
        pooled = x.mean(axis=(1, 2, 3))
        return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(pooled).astype(
            jnp.float32)


# Named sizes: ResNet-18 (R3D-18 / R(2+1)D-18 depth) and ResNet-34 stage layouts are not both
# expressible with one blocks_per_stage, so only the 18-layer network is named.
VARIANTS = {
    "r18": dict(widths=(64, 128, 256, 512), blocks_per_stage=2),
}
