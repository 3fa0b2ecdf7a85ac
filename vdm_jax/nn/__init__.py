"""Reusable Linen layers for video models (channels-last ``(b, t, h, w, c)``)."""

from vdm_jax.nn.attention import (
    Attention,
    CrossAttention,
    RelativePositionBias,
    SpatialAttention,
    TemporalAttention,
    dot_product_attention,
    image_frame_mask,
    relative_position_buckets,
)
from vdm_jax.nn.conv import (
    Conv3d,
    PseudoConv3d,
    SpatialConv,
    SpatialDownsample,
    SpatialUpsample,
    TemporalConv,
)
from vdm_jax.nn.embeddings import TimestepEmbedding, timestep_embedding
from vdm_jax.nn.norms import GroupNorm

__all__ = [
    "Attention",
    "Conv3d",
    "CrossAttention",
    "GroupNorm",
    "PseudoConv3d",
    "RelativePositionBias",
    "SpatialAttention",
    "SpatialConv",
    "SpatialDownsample",
    "SpatialUpsample",
    "TemporalAttention",
    "TemporalConv",
    "TimestepEmbedding",
    "dot_product_attention",
    "image_frame_mask",
    "relative_position_buckets",
    "timestep_embedding",
]
