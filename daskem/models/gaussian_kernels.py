"""Compiled elementwise passes of the Gaussian E-step (numba, GIL released).

The matrix products of a tile (whitening, scatter) run in BLAS. The elementwise work
between them is done here in one pass each over the (k, d, t) buffer, where NumPy would
take two or three (a temporary per operation), each holding the GIL.
"""

from __future__ import annotations

from numba import njit


@njit(nogil=True, cache=True)
def log_prob_from_products(res, bias, log_norm, out, square):  # type: ignore[no-untyped-def]
    """Weighted log-densities from the whitening product of a tile (full and tied).

    ``res`` (k, d, t) holds ``L_k^T x`` (BLAS), ``bias`` (k, d) ``L_k^T a_k``; the residuals
    ``res - bias`` replace ``res`` (their squares if ``square``), and ``out`` (k, t)
    receives ``log_norm[k] - |res[k, :, t] - bias[k]|^2 / 2`` (``log_norm`` (k, 1): the log
    weight plus the normalising constant).
    """
    k, d, t = res.shape
    for c in range(k):
        row = out[c]
        row[:] = 0.0
        for f in range(d):
            r = res[c, f]
            b = bias[c, f]
            if square:
                for i in range(t):
                    v = r[i] - b
                    r[i] = v * v
                    row[i] += r[i]
            else:
                for i in range(t):
                    v = r[i] - b
                    r[i] = v
                    row[i] += v * v
        half = log_norm[c, 0]
        for i in range(t):
            row[i] = half - 0.5 * row[i]


@njit(nogil=True, cache=True)
def log_prob_diagonal(xt, scales, bias, log_norm, res, out, square):  # type: ignore[no-untyped-def]
    """Weighted log-densities of a tile under diagonal precision factors (diag, spherical).

    ``xt`` (d, t) is the tile centred on the reference, ``scales`` (k, d) the factors,
    ``bias`` (k, d) ``scales * a_k``; ``res`` (k, d, t) receives the whitened residuals
    ``scales x - bias`` (their squares if ``square``) and ``out`` (k, t) the log-densities
    as :func:`log_prob_from_products`.
    """
    k, d, t = res.shape
    for c in range(k):
        row = out[c]
        row[:] = 0.0
        for f in range(d):
            x = xt[f]
            r = res[c, f]
            p = scales[c, f]
            b = bias[c, f]
            if square:
                for i in range(t):
                    v = p * x[i] - b
                    r[i] = v * v
                    row[i] += r[i]
            else:
                for i in range(t):
                    v = p * x[i] - b
                    r[i] = v
                    row[i] += v * v
        half = log_norm[c, 0]
        for i in range(t):
            row[i] = half - 0.5 * row[i]


# Reassociation lets LLVM vectorise the sums over a tile (several partial sums instead of
# one serial chain); the order is still fixed by the compiled code, so results repeat.
@njit(nogil=True, cache=True, fastmath={"reassoc"})
def weighted_residuals(xt, offsets, resp, out, sums):  # type: ignore[no-untyped-def]
    """``out[k, :, t] = resp[k, t] (x_t - a_k)`` and ``sums[k] += sum_t out[k, :, t]``.

    ``xt`` (d, t) is a tile centred on the reference, ``offsets`` (k, d) the components'
    centres from the reference, ``resp`` (k, t) the weights; ``sums`` (k, d) accumulates in
    float64: the weighted first moments around each component's own centre.
    """
    k, d, t = out.shape
    for c in range(k):
        w = resp[c]
        for f in range(d):
            x = xt[f]
            a = offsets[c, f]
            o = out[c, f]
            total = 0.0
            for i in range(t):
                v = w[i] * (x[i] - a)
                o[i] = v
                total += v
            sums[c, f] += total


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def summed_weighted_residuals(xt, offsets, resp, out, sums):  # type: ignore[no-untyped-def]
    """``out[:, t] = sum_k resp[k, t] (x_t - a_k)`` and ``sums[k] += sum_t resp[k, t] (x_t - a_k)``.

    The tied-covariance form of :func:`weighted_residuals`: ``out`` is (d, t).
    """
    k = offsets.shape[0]
    d, t = out.shape
    out[:, :] = 0.0
    for c in range(k):
        w = resp[c]
        for f in range(d):
            x = xt[f]
            a = offsets[c, f]
            o = out[f]
            total = 0.0
            for i in range(t):
                v = w[i] * (x[i] - a)
                o[i] += v
                total += v
            sums[c, f] += total
