"""Evaluation metrics for generated videos."""

from vdm_jax.eval.prompt_agreement import (
    Detection,
    detect,
    format_report,
    prompt_agreement,
    temporal_consistency,
)

__all__ = ["Detection", "detect", "format_report", "prompt_agreement", "temporal_consistency"]
