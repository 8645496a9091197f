"""Compiled inner loop of the k-means E-step (numba, GIL released).

The matrix product of a tile with the centres runs in BLAS; everything after it (the
nearest centre of every row, the weighted sums per cluster, the inertia and the running
set of the rows farthest from their centres) is one pass of this kernel over the tile,
instead of a dozen NumPy calls each holding the GIL between them.
"""

from __future__ import annotations

from numba import njit


@njit(nogil=True, cache=True, inline="always")
def nearest(xs, scores, half_norms, i):  # type: ignore[no-untyped-def]
    """Row ``i``'s nearest centre (first on ties) and squared distance to it, clipped at 0."""
    label = 0
    best = scores[i, 0] + half_norms[0]
    for c in range(1, scores.shape[1]):
        v = scores[i, c] + half_norms[c]
        if v < best:
            best = v
            label = c
    x2 = 0.0
    for j in range(xs.shape[1]):
        x2 += xs[i, j] * xs[i, j]
    dist = x2 + 2.0 * best
    return label, (0.0 if dist < 0.0 else dist)  # NaN stays NaN (non-finite data are reported)


@njit(nogil=True, cache=True)
def label_tile(xs, scores, half_norms, w, labels):  # type: ignore[no-untyped-def]
    """Each row's nearest centre into ``labels``; return the tile's (weighted) inertia."""
    inertia = 0.0
    for i in range(xs.shape[0]):
        label, dist = nearest(xs, scores, half_norms, i)
        labels[i] = label
        inertia += (1.0 if w.shape[0] == 0 else w[i]) * dist
    return inertia


@njit(nogil=True, cache=True)
def accumulate_tile(xs, scores, half_norms, w, weight, sums, far_dist, far_row, far_label, offset):  # type: ignore[no-untyped-def]
    """Assign the rows of a centred tile and add them to the statistics; return the inertia.

    ``scores`` are ``xs @ -c.T`` (BLAS); a row's nearest centre minimises ``scores +
    half_norms`` (first on ties) and its squared distance is ``|x|^2 + 2 min``, clipped at
    0. ``w`` holds the rows' weights (empty: all 1). ``weight`` (k,) and ``sums`` (k, d)
    accumulate in float64. ``far_dist`` / ``far_row`` / ``far_label`` keep the rows with
    the largest distances seen so far (a row replaces the smallest kept one when it is
    strictly larger; ``offset`` is added to the tile's row indices).
    """
    t, d = xs.shape
    m = far_dist.shape[0]
    inertia = 0.0
    low = 0
    for c in range(m):
        if far_dist[c] < far_dist[low]:
            low = c
    for i in range(t):
        label, dist = nearest(xs, scores, half_norms, i)
        wi = 1.0 if w.shape[0] == 0 else w[i]
        weight[label] += wi
        for j in range(d):
            sums[label, j] += wi * xs[i, j]
        inertia += wi * dist
        if m and dist > far_dist[low]:
            far_dist[low] = dist
            far_row[low] = offset + i
            far_label[low] = label
            for c in range(m):
                if far_dist[c] < far_dist[low]:
                    low = c
    return inertia
