"""Reconstruction metrics for videos ``(b, t, h, w, c)`` in ``[-1, 1]``: PSNR, SSIM, flicker.

All return one value per video ``(b,)``, so callers can average over a held-out set or report
a spread. SSIM follows Wang et al. 2004 (11-tap Gaussian window, sigma 1.5, valid filtering,
constants from a dynamic range of 2 for ``[-1, 1]``), computed per frame and channel and
averaged.
"""

import jax
import jax.numpy as jnp
import numpy as np

DATA_RANGE = 2.0  # [-1, 1]


def _check_pair(x: jax.Array, y: jax.Array) -> None:
    if x.shape != y.shape or x.ndim != 5:
        raise ValueError(f"expected two videos (b, t, h, w, c) of one shape, got {x.shape} and "
                         f"{y.shape}")


def psnr(x: jax.Array, y: jax.Array) -> jax.Array:
    """Peak signal-to-noise ratio in dB per video; identical videos give +inf."""
    _check_pair(x, y)
    mse = jnp.mean((x.astype(jnp.float32) - y.astype(jnp.float32)) ** 2, axis=(1, 2, 3, 4))
    return 10.0 * jnp.log10(DATA_RANGE**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size, dtype=np.float32) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: jax.Array, window: np.ndarray) -> jax.Array:
    """Separable valid filtering of ``(n, h, w)`` planes."""
    k = jnp.asarray(window)
    rows = jax.vmap(lambda p: jax.vmap(lambda r: jnp.convolve(r, k, mode="valid"))(p))(x)
    cols = jnp.swapaxes(rows, 1, 2)
    cols = jax.vmap(lambda p: jax.vmap(lambda r: jnp.convolve(r, k, mode="valid"))(p))(cols)
    return jnp.swapaxes(cols, 1, 2)


def ssim(x: jax.Array, y: jax.Array, window_size: int = 11) -> jax.Array:
    """Mean structural similarity per video (frames and channels averaged)."""
    _check_pair(x, y)
    b, t, h, w, c = x.shape
    size = min(window_size, h, w) | 1  # small frames: the largest odd window that fits
    window = _gaussian_window(size, 1.5 * size / 11)

    def planes(v):
        return jnp.moveaxis(v.astype(jnp.float32), -1, 2).reshape(b * t * c, h, w)

    p, q = planes(x), planes(y)
    mu_p, mu_q = _blur(p, window), _blur(q, window)
    var_p = _blur(p * p, window) - mu_p**2
    var_q = _blur(q * q, window) - mu_q**2
    cov = _blur(p * q, window) - mu_p * mu_q
    c1, c2 = (0.01 * DATA_RANGE) ** 2, (0.03 * DATA_RANGE) ** 2
    numerator = (2 * mu_p * mu_q + c1) * (2 * cov + c2)
    s = numerator / ((mu_p**2 + mu_q**2 + c1) * (var_p + var_q + c2))
    return s.reshape(b, -1).mean(axis=1)


def flicker(reconstruction: jax.Array, target: jax.Array) -> jax.Array:
    """Mean absolute difference between the frame-to-frame changes of the reconstruction and of
    the target, per video (0 for a reconstruction whose changes match the input's; a decoder
    that flickers adds changes the input does not have). Single-frame videos give 0."""
    _check_pair(reconstruction, target)
    if reconstruction.shape[1] < 2:
        return jnp.zeros(reconstruction.shape[:1])
    dr = jnp.diff(reconstruction.astype(jnp.float32), axis=1)
    dt = jnp.diff(target.astype(jnp.float32), axis=1)
    return jnp.mean(jnp.abs(dr - dt), axis=(1, 2, 3, 4))


def reconstruction_metrics(reconstruction: jax.Array, target: jax.Array) -> dict[str, float]:
    """``{"psnr", "ssim", "flicker"}`` averaged over the batch."""
    return {
        "psnr": float(jnp.mean(psnr(reconstruction, target))),
        "ssim": float(jnp.mean(ssim(reconstruction, target))),
        "flicker": float(jnp.mean(flicker(reconstruction, target))),
    }
