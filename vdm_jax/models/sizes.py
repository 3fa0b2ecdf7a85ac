"""Wording for input-size errors, shared by the models' shape checks."""


def nearest_valid(n: int, step: int, offset: int = 0) -> str:
    """``"use a or b"``: the valid sizes ``offset + k * step`` (positive) nearest below and above
    ``n``, or only the one above when none lies below."""
    lo = max((n - offset) // step * step + offset, offset or step)
    return f"use {lo}" if lo >= n else f"use {lo} or {lo + step}"
