from vdm_jax.sharding.logical import ACT_AXES, PARAM_AXES, shard

__all__ = ["ACT_AXES", "PARAM_AXES", "shard"]
