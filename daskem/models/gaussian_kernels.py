"""Compiled elementwise passes of the Gaussian E-step (numba, GIL released).

The matrix products of a tile (whitening, scatter) run in BLAS. The elementwise work
between them is done here in one pass each over the (k, d, t) buffer, where NumPy would
take two or three (a temporary per operation), each holding the GIL.
"""

from __future__ import annotations

import numpy as np
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


@njit(nogil=True, cache=True)
def observed_residuals(rows, means, missing, out):  # type: ignore[no-untyped-def]
    """``out[k, i, j] = rows[i, j] - means[k, j]``, 0 at the missing coordinates.

    ``rows`` (n, d) are incomplete rows, ``missing`` (n, m) their missing coordinates,
    ``out`` (k, n, d) float64: the residuals from each component's mean that a
    conditional Gaussian starts from.
    """
    k, n, d = out.shape
    m = missing.shape[1]
    for c in range(k):
        for i in range(n):
            for j in range(d):
                out[c, i, j] = rows[i, j] - means[c, j]
            for a in range(m):
                out[c, i, missing[i, a]] = 0.0


@njit(nogil=True, cache=True)
def condition_missing(filled, product, covariance, inverse, missing, quad):  # type: ignore[no-untyped-def]
    """Fill the missing coordinates with their conditional means; the observed part's distance.

    ``filled`` (k, n, d) holds the observed residuals ``y`` (0 where missing),
    ``product`` (k, n, d) ``Lambda_k y``, ``covariance`` (k, p, m, m) ``Lambda_MM^-1`` per
    pattern, ``inverse`` (n,) each row's pattern and ``missing`` (n, m) its missing
    coordinates. With ``v = (Lambda y)_M`` and ``z = -Lambda_MM^-1 v``, ``z`` is written into
    the missing coordinates of ``filled`` and ``quad`` (k, n) receives the observed
    coordinates' squared Mahalanobis distance ``y^T Lambda y + z^T v``.
    """
    k, n, d = filled.shape
    m = missing.shape[1]
    z = np.empty(m)
    for c in range(k):
        for i in range(n):
            total = 0.0
            for j in range(d):
                total += filled[c, i, j] * product[c, i, j]
            cov = covariance[c, inverse[i]]
            for a in range(m):
                acc = 0.0
                for b in range(m):
                    acc -= cov[a, b] * product[c, i, missing[i, b]]
                z[a] = acc
            for a in range(m):
                total += z[a] * product[c, i, missing[i, a]]
                filled[c, i, missing[i, a]] = z[a]
            quad[c, i] = total


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def weighted_rows(filled, resp, out, sums):  # type: ignore[no-untyped-def]
    """``out[k, i] = resp[k, i] * filled[k, i]`` and ``sums[k] += sum_i out[k, i]`` (row-major tiles)."""
    k, n, d = filled.shape
    for c in range(k):
        for i in range(n):
            r = resp[c, i]
            for j in range(d):
                v = r * filled[c, i, j]
                out[c, i, j] = v
                sums[c, j] += v


@njit(nogil=True, cache=True)
def pattern_inverses(precisions, patterns, covariance, log_det):  # type: ignore[no-untyped-def]
    """The inverse and log-determinant of each precision's missing block, per pattern.

    ``precisions`` (k, d, d), ``patterns`` (p, m) sets of missing coordinates;
    ``covariance`` (k, p, m, m) receives ``Lambda_MM^-1`` (the missing coordinates'
    conditional covariance) and ``log_det`` (k, p) ``log |Lambda_MM|``, by a Cholesky
    factorisation of each ``m x m`` block (positive definite as a block of one).
    """
    k = precisions.shape[0]
    p, m = patterns.shape
    low = np.empty((m, m))
    inv = np.zeros((m, m))
    for c in range(k):
        for q in range(p):
            idx = patterns[q]
            for i in range(m):
                for j in range(m):
                    low[i, j] = precisions[c, idx[i], idx[j]]
            total = 0.0
            for j in range(m):
                s = low[j, j]
                for t in range(j):
                    s -= low[j, t] * low[j, t]
                pivot = np.sqrt(s) if s > 0.0 else np.nan
                low[j, j] = pivot
                total += np.log(pivot)
                for i in range(j + 1, m):
                    s = low[i, j]
                    for t in range(j):
                        s -= low[i, t] * low[j, t]
                    low[i, j] = s / pivot
            log_det[c, q] = 2.0 * total
            # inv = L^-1 (lower), then Lambda_MM^-1 = inv^T inv.
            for j in range(m):
                inv[j, j] = 1.0 / low[j, j]
                for i in range(j + 1, m):
                    s = 0.0
                    for t in range(j, i):
                        s -= low[i, t] * inv[t, j]
                    inv[i, j] = s / low[i, i]
            for a in range(m):
                for b in range(a, m):
                    s = 0.0
                    for t in range(b, m):
                        s += inv[t, a] * inv[t, b]
                    covariance[c, q, a, b] = s
                    covariance[c, q, b, a] = s
