"""k-means as hard-assignment EM (Lloyd's algorithm): E-step, combine and M-step.

The E-step assigns every row to its nearest centre and accumulates, per cluster, the
sample weight and the weighted sum of ``x - c``, around a fixed reference point ``c``
carried by the parameters (the mean of the initial centres, kept by every M-step so
that identical assignments give bitwise identical centres, as scikit-learn's
label-equality test needs). The "log-likelihood" is minus the inertia, the
small-variance limit of a spherical Gaussian mixture, which Lloyd's iterations never
increase. Convergence is scikit-learn's: the squared centre shift summed over clusters
is at most ``tol`` times the mean per-feature variance of the data (read from the
same pass).

Clusters left empty take the rows farthest from their centres (scikit-learn's
relocation): every pass keeps the ``n_clusters`` farthest rows of the data.

Per tile, the E-step is one BLAS product (the scores) and one pass of a compiled kernel
(:mod:`daskem.models.kmeans_kernels`) for everything after it.

A model with ``weighted=True`` reads each block's last column as the sample weights.

Blocks may be scipy.sparse CSR matrices (or arrays), e.g. TF-IDF text: their E-step
never centres or densifies the rows. Distances are ``|x|^2 - 2 x.c + |c|^2`` with one
sparse-dense product per tile, the sums per cluster one sparse product with the
(weighted) one-hot assignment; centres stay dense. The statistics are the same values
(centred on the same reference), so combine and the M-step do not know which kind of
block they came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from daskem.errors import ParameterError
from daskem.models.base import count_nonfinite, split_weights
from daskem.models.gaussian import FloatArray, check_shape

#: Rows per tile of the E-step (a (rows, d) tile and its (rows, k) distances stay in cache).
TILE_ROWS = 4096


@dataclass(frozen=True)
class KMeansParams:
    """Cluster centres and the fixed reference point statistics are centred on.

    Attributes
    ----------
    centers : ndarray of shape (k, d)
    reference : ndarray of shape (d,)
    """

    centers: FloatArray
    reference: FloatArray
    variance: float | None = None

    @classmethod
    def from_centers(cls, centers: Any, reference: Any = None) -> KMeansParams:
        """Parameters from initial centres; the reference defaults to their mean.

        Runs fitted together share one E-step tile when they share the reference.
        """
        centers = np.array(centers, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):  # huge centres: the fit reports it
            ref = centers.mean(axis=0) if reference is None else np.array(reference, dtype=np.float64)
        return cls(centers, ref)

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters as named arrays (``variance`` once it is known)."""
        arrays = {"centers": self.centers, "reference": self.reference}
        if self.variance is not None:
            arrays["variance"] = np.array([self.variance])
        return arrays


def shared_reference(centers: Sequence[Any]) -> list[KMeansParams]:
    """Initial parameters of runs fitted together, all centred on the first run's reference.

    Runs that share the reference share each E-step tile (:meth:`KMeansModel.e_step_batch`).
    """
    first = KMeansParams.from_centers(centers[0])
    return [KMeansParams.from_centers(c, first.reference) for c in centers]


@dataclass(frozen=True)
class KMeansStats:
    """Statistics of a set of rows under one set of centres.

    Attributes
    ----------
    n : float
        Rows seen.
    loglik : float
        Minus the weighted inertia (sum of squared distances to the nearest centre).
    n_nonfinite : int
        NaN or infinite values seen (weights included).
    shift : ndarray of shape (d,)
        Reference point the sums are centred on.
    weight : ndarray of shape (k,)
        Sample weight assigned to each cluster.
    sums : ndarray of shape (k, d)
        Weighted sums of ``x - shift`` per cluster.
    moment_rows : float
        Rows counted in ``feature_sum`` / ``feature_sq`` and ``n_nonfinite``: all of
        them on the first pass (parameters without a known ``variance``), else 0.
    feature_sum, feature_sq : ndarray of shape (d,)
        Unweighted sums of ``x - shift`` and of its squares (the data variance).
    far : ndarray of shape (m, d + 3)
        The ``m <= k`` rows farthest from their centres, most distant first, as columns
        ``[distance, label, weight, x - shift]``.
    """

    n: float
    loglik: float
    n_nonfinite: int
    shift: FloatArray = field(repr=False)
    moment_rows: float
    weight: FloatArray = field(repr=False)
    sums: FloatArray = field(repr=False)
    feature_sum: FloatArray = field(repr=False)
    feature_sq: FloatArray = field(repr=False)
    far: FloatArray = field(repr=False)

    @property
    def inertia(self) -> float:
        """The weighted sum of squared distances to the nearest centre."""
        return -self.loglik


def _farthest(rows: FloatArray, count: int) -> FloatArray:
    """The ``count`` rows with the largest first column, largest first (ties: first row first)."""
    if rows.shape[0] > count:
        rows = rows[np.argpartition(-rows[:, 0], count - 1, kind="introselect")[:count]]
    return rows[np.lexsort((rows[:, 1], -rows[:, 0]))]


@dataclass(frozen=True)
class KMeansModel:
    """k-means with ``n_clusters`` centres as hard EM.

    Parameters
    ----------
    n_clusters : int
        Number of clusters.
    weighted : bool
        Whether each block's last column holds the sample weights.
    """

    n_clusters: int
    weighted: bool = False

    #: What to do when the statistics are not finite (see daskem.em.checks.check_stats).
    numerical_advice = "the squared distances overflow float64: scale the features (e.g. standardise them)."

    # -- contract ----------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values."""
        return {"model": "kmeans", "n_clusters": int(self.n_clusters), "weighted": bool(self.weighted)}

    def zero_stats(self, params: KMeansParams) -> KMeansStats:
        """Statistics of no rows."""
        k, d = params.centers.shape
        return KMeansStats(
            0.0,
            0.0,
            0,
            params.reference,
            0.0,
            np.zeros(k),
            np.zeros((k, d)),
            np.zeros(d),
            np.zeros(d),
            np.zeros((0, d + 3)),
        )

    def combine(self, a: KMeansStats, b: KMeansStats) -> KMeansStats:
        """Sum the statistics of two disjoint sets of rows; keep the farthest rows of both."""
        return KMeansStats(
            n=a.n + b.n,
            loglik=a.loglik + b.loglik,
            n_nonfinite=a.n_nonfinite + b.n_nonfinite,
            shift=a.shift,
            moment_rows=a.moment_rows + b.moment_rows,
            weight=a.weight + b.weight,
            sums=a.sums + b.sums,
            feature_sum=a.feature_sum + b.feature_sum,
            feature_sq=a.feature_sq + b.feature_sq,
            far=_farthest(np.concatenate([a.far, b.far]), self.n_clusters),
        )

    def recentre(self, stats: KMeansStats, like: KMeansStats) -> KMeansStats:
        """``stats`` with every sum of ``x - shift`` taken around ``like.shift`` instead.

        With ``delta = shift - shift'``: ``sums + weight delta``, ``feature_sum +
        moment_rows delta``, ``feature_sq + 2 delta feature_sum + moment_rows delta^2``, and
        the far rows' ``x - shift`` plus ``delta`` (their distances, labels and weights stay).
        """
        if stats.shift is like.shift or np.array_equal(stats.shift, like.shift):
            return stats
        delta = stats.shift - like.shift
        rows = stats.moment_rows
        far = stats.far.copy()
        far[:, 3:] += delta
        return replace(
            stats,
            shift=np.array(like.shift),
            sums=stats.sums + stats.weight[:, None] * delta,
            feature_sum=stats.feature_sum + rows * delta,
            feature_sq=stats.feature_sq + 2.0 * delta * stats.feature_sum + rows * delta * delta,
            far=far,
        )

    def scale(self, stats: KMeansStats, factor: float) -> KMeansStats:
        """``stats`` with ``n``, ``loglik``, the weights and sums per cluster, the feature
        moments (``moment_rows`` included) and the far rows' weights times ``factor``.

        A far row carries its share of its cluster's weight, which the M-step's relocation
        moves (``weight[label] -= w``, ``sums[label] -= w x``): it scales with the weights,
        so the relocated centres do not change. Its distance, label and ``x - shift``
        describe the row itself and stay.
        """
        far = stats.far.copy()
        far[:, 2] *= factor
        return replace(
            stats,
            n=stats.n * factor,
            loglik=stats.loglik * factor,
            moment_rows=stats.moment_rows * factor,
            weight=stats.weight * factor,
            sums=stats.sums * factor,
            feature_sum=stats.feature_sum * factor,
            feature_sq=stats.feature_sq * factor,
            far=far,
        )

    def log_likelihood(self, stats: KMeansStats) -> float:
        """Minus the inertia."""
        return float(stats.loglik)

    def params_from_arrays(self, arrays: dict[str, FloatArray]) -> KMeansParams:
        """Rebuild parameters from named arrays, checking their shapes."""
        centers = np.asarray(arrays["centers"], dtype=np.float64)
        if centers.ndim != 2:
            raise ParameterError(
                f"The parameter 'centers' should be 2-D (n_clusters, n_features), but got {centers.shape}."
            )
        check_shape("centers", centers, (self.n_clusters, centers.shape[1]))
        variance = float(check_shape("variance", arrays["variance"], (1,))[0]) if "variance" in arrays else None
        return KMeansParams(centers, check_shape("reference", arrays["reference"], (centers.shape[1],)), variance)

    def e_step(self, params: KMeansParams, block: NDArray[Any]) -> KMeansStats:
        """Assign every row of ``block`` to its nearest centre and accumulate the statistics."""
        return self.e_step_batch((params,), block)[0]

    def batch_key(self) -> tuple[str, bool]:
        """k-means models batch together whatever their number of clusters (not their weighting)."""
        return ("kmeans", self.weighted)

    def e_step_batch(self, params: Sequence[KMeansParams], block: NDArray[Any]) -> tuple[KMeansStats, ...]:
        """:meth:`e_step` for several parameter sets at once (restarts, a selection grid).

        Each set may have its own number of centres (the candidates of a selection: its
        statistics are those of the model with that many clusters). Runs that share a
        reference share each centred tile, its squared norms and its first-pass moments;
        each run's arithmetic is exactly that of its own e_step.
        """
        if sparse.issparse(block):
            x, w = self._split(block)
            return tuple(_sparse_stats(p, x, w) for p in params)
        x_all, w_all = split_weights(block, self.weighted)
        dtype = np.dtype(np.float32) if x_all.dtype == np.float32 else np.dtype(np.float64)
        n, d = x_all.shape
        t = max(1, min(TILE_ROWS, n))
        runs = [_Accumulator(p, dtype, t) for p in params]
        groups: dict[bytes, list[_Accumulator]] = {}
        for run in runs:
            groups.setdefault(run.params.reference.tobytes(), []).append(run)
        tile = np.empty((t, d), dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            for start in range(0, n, t):
                stop = min(start + t, n)
                w = None if w_all is None else np.asarray(w_all[start:stop], dtype=np.float64)
                for group in groups.values():
                    xs = _centre_tile(x_all[start:stop], group[0].params.reference, tile)
                    moments = None
                    if any(r.params.variance is None for r in group):
                        moments = _tile_moments(xs, x_all[start:stop], w)
                    for run in group:
                        run.add(xs, w, moments, start)
            return tuple(r.stats(float(n), x_all, w_all) for r in runs)

    def m_step(self, stats: KMeansStats, params: KMeansParams | None) -> KMeansParams:
        """Centres as the weighted means of their rows; empty clusters take the farthest rows.

        A cluster that is still empty (fewer distinct far rows than empty clusters) keeps
        its previous centre. ``params=None`` (an initial M-step) has no previous centres:
        empty clusters there raise.
        """
        weight = stats.weight.copy()
        sums = stats.sums.copy()
        empty = np.flatnonzero(weight <= 0.0)
        for cluster, row in zip(empty, stats.far, strict=False):
            old, w, x = int(row[1]), row[2], row[3:]
            if weight[old] <= w:  # never empty the cluster the row comes from
                continue
            sums[old] -= w * x
            weight[old] -= w
            sums[cluster] = w * x
            weight[cluster] = w
        filled = weight > 0.0
        if stats.moment_rows > 0:
            mean = stats.feature_sum / stats.moment_rows
            with np.errstate(over="ignore", invalid="ignore"):
                spread = np.maximum(stats.feature_sq / stats.moment_rows - mean * mean, 0.0).mean()
            variance: float | None = float(spread)
        else:
            variance = None if params is None else params.variance
        if params is None:
            if not filled.all():
                raise ValueError(f"{int((~filled).sum())} cluster(s) received no rows in the initial assignment.")
            centers = stats.shift + sums / weight[:, None]
        else:
            centers = params.centers.copy()
            centers[filled] = stats.shift + sums[filled] / weight[filled, None]
        return KMeansParams(centers, stats.shift, variance)

    def converged(self, stats: KMeansStats, params: KMeansParams, new_params: KMeansParams, tol: float) -> bool:
        """scikit-learn's test: squared centre shift <= ``tol`` x mean per-feature data variance.

        The variance (unweighted, as scikit-learn's) is read from the first pass and carried
        by the parameters.
        """
        assert new_params.variance is not None
        shift = float(((new_params.centers - params.centers) ** 2).sum())
        return shift <= tol * new_params.variance

    # -- vector form (acceleration) --------------------------------------------------------

    def to_vector(self, params: KMeansParams) -> FloatArray:
        """The centres, flattened."""
        return params.centers.ravel().copy()

    def from_vector(self, vector: FloatArray, like: KMeansParams) -> KMeansParams:
        """Centres from a flat vector (any finite vector is valid)."""
        return KMeansParams(
            np.asarray(vector, dtype=np.float64).reshape(like.centers.shape), like.reference, like.variance
        )

    # -- prediction per block --------------------------------------------------------------

    def predict(self, params: KMeansParams, block: NDArray[Any]) -> NDArray[np.intp]:
        """Index of the nearest centre of every row: shape (n,)."""
        out = [labels for _, _, labels, _ in self.assign_tiles(params, block)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.intp)

    def labels_inertia(self, params: KMeansParams, block: NDArray[Any]) -> tuple[NDArray[np.intp], float]:
        """The nearest centre of every row and the block's (weighted) inertia, in one read.

        Dense blocks run the E-step's assignment (the compiled kernel, one BLAS product per
        tile) without its sums; sparse ones :meth:`assign_tiles`.
        """
        if sparse.issparse(block):
            parts = [
                (labels, float((d if w is None else w * d).sum()))
                for _, w, labels, d in self.assign_tiles(params, block)
            ]
            return np.concatenate([p[0] for p in parts]), sum(p[1] for p in parts)
        from daskem.models.kmeans_kernels import label_tile

        x_all, w_all = split_weights(block, self.weighted)
        dtype = np.dtype(np.float32) if x_all.dtype == np.float32 else np.dtype(np.float64)
        n, d = x_all.shape
        t = max(1, min(TILE_ROWS, n))
        centres = _Centres.of(params, dtype)
        tile, scores = np.empty((t, d), dtype), np.empty((t, centres.minus_t.shape[1]), dtype)
        labels = np.empty(n, dtype=np.intp)
        inertia = 0.0
        with np.errstate(invalid="ignore", over="ignore"):
            for start in range(0, n, t):
                stop = min(start + t, n)
                xs = _centre_tile(x_all[start:stop], params.reference, tile)
                w = _NO_WEIGHTS if w_all is None else np.asarray(w_all[start:stop], dtype=np.float64)
                product = np.matmul(xs, centres.minus_t, out=scores[: stop - start])
                inertia += label_tile(xs, product, centres.half_norms, w, labels[start:stop])
        return labels, inertia

    def transform(self, params: KMeansParams, block: NDArray[Any]) -> FloatArray:
        """Euclidean distance of every row to every centre: shape (n, k)."""
        if sparse.issparse(block):
            sq = _sparse_distances(self._split(block)[0], params.centers, np.float64)
            return np.sqrt(np.maximum(sq, 0.0))
        x = np.asarray(block[:, :-1] if self.weighted else block, dtype=np.float64)
        diff = x[:, None, :] - params.centers[None, :, :]
        return np.sqrt(np.einsum("ikj,ikj->ik", diff, diff))

    def score_samples(self, params: KMeansParams, block: NDArray[Any]) -> FloatArray:
        """Minus the (weighted) squared distance of every row to its nearest centre: shape (n,)."""
        parts = [-(dist if w is None else w * dist) for _, w, _, dist in self.assign_tiles(params, block)]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)

    # -- internals -------------------------------------------------------------------------

    def assign_tiles(self, params: KMeansParams, block: NDArray[Any]):  # type: ignore[no-untyped-def]
        """Yield ``(xs, w, labels, dist)`` per tile of rows.

        ``xs`` is the tile minus the reference (float32 for float32 data, else float64),
        ``w`` its weights (or None), ``labels`` the nearest centre and ``dist`` the squared
        distance to it.
        """
        if sparse.issparse(block):
            x, w_all = self._split(block)
            t = max(1, min(TILE_ROWS, x.shape[0]))
            for start in range(0, x.shape[0], t):
                tile = x[start : start + t]
                labels, dist = _sparse_assign(tile, params)
                yield tile, None if w_all is None else w_all[start : start + t], labels, dist
            return
        x_all = block[:, :-1] if self.weighted else block
        dtype = np.dtype(np.float32) if x_all.dtype == np.float32 else np.dtype(np.float64)
        n = x_all.shape[0]
        t = max(1, min(TILE_ROWS, n))
        centres = _Centres.of(params, dtype)
        for start in range(0, n, t):
            stop = min(start + t, n)
            xs = np.subtract(x_all[start:stop], params.reference, dtype=dtype)
            labels, dist = _assign(xs, np.einsum("ij,ij->i", xs, xs), centres, None)
            w = np.asarray(block[start:stop, -1], dtype=np.float64) if self.weighted else None
            yield xs, w, labels, dist

    def _split(self, block: Any) -> tuple[Any, NDArray[np.float64] | None]:
        """A sparse block's rows (CSR) and its weights (dense, float64; None when unweighted)."""
        x = block.tocsr()
        if not self.weighted:
            return x, None
        w = np.asarray(x[:, -1].toarray(), dtype=np.float64).ravel()
        return x[:, :-1], w


def _row_norms(x: Any) -> NDArray[Any]:
    """Squared Euclidean norm of every row of a sparse matrix, in its dtype."""
    return np.asarray(x.multiply(x).sum(axis=1)).ravel()


def _sparse_distances(x: Any, centers: NDArray[Any], dtype: Any = None) -> NDArray[Any]:
    """Squared distances ``|x|^2 - 2 x.c + |c|^2`` of sparse rows to dense centres, shape (n, k).

    Computed in the rows' dtype (float32 rows: float32, as scikit-learn), or with the
    centres in ``dtype`` (``transform``: float64).
    """
    c = centers.astype(dtype or x.dtype, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):
        return _row_norms(x)[:, None] - 2.0 * np.asarray(x @ c.T) + np.square(c).sum(axis=1)


def _sparse_assign(x: Any, params: KMeansParams) -> tuple[NDArray[np.intp], NDArray[Any]]:
    """Nearest centre of every sparse row (first on ties) and the squared distance to it (clipped at 0)."""
    dist = _sparse_distances(x, params.centers)
    if dist.shape[0] == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=dist.dtype)
    labels = dist.argmin(axis=1)
    return labels, np.maximum(dist[np.arange(dist.shape[0]), labels], 0.0)


def _sparse_stats(params: KMeansParams, x: Any, w: NDArray[np.float64] | None) -> KMeansStats:
    """One run's :class:`KMeansStats` of a sparse block (see the module docstring).

    The sums are taken of the raw rows, then centred on the reference (``sums - weight *
    reference``): exact for the zero reference sparse fits use.
    """
    k, d = params.centers.shape
    n = x.shape[0]
    ref = params.reference
    labels_parts, dist_parts = [], []
    t = max(1, min(TILE_ROWS, n))
    for start in range(0, n, t):
        labels, dist = _sparse_assign(x[start : start + t], params)
        labels_parts.append(labels)
        dist_parts.append(dist)
    labels = np.concatenate(labels_parts) if labels_parts else np.zeros(0, dtype=np.intp)
    dist = (np.concatenate(dist_parts) if dist_parts else np.zeros(0)).astype(np.float64)
    wv = np.ones(n) if w is None else w
    onehot = sparse.csr_matrix((wv, (labels, np.arange(n))), shape=(k, n))
    x64 = x.astype(np.float64)
    weight = np.bincount(labels, weights=wv, minlength=k).astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        raw_sums = np.asarray((onehot @ x64).toarray())
        sums = raw_sums - weight[:, None] * ref if ref.any() else raw_sums
        inertia = float(np.dot(wv, dist))
        moment_rows, n_nonfinite = 0.0, 0
        feature_sum, feature_sq = np.zeros(d), np.zeros(d)
        if params.variance is None:
            col_sum = np.asarray(x64.sum(axis=0)).ravel()
            col_sq = np.asarray(x64.multiply(x64).sum(axis=0)).ravel()
            feature_sum = col_sum - n * ref
            feature_sq = col_sq - 2.0 * ref * col_sum + n * ref * ref
            moment_rows = float(n)
            n_nonfinite = count_nonfinite(x) + (0 if w is None else count_nonfinite(w))
        far = _sparse_far(params, x64, labels, dist, wv, k)
    return KMeansStats(
        n=float(n),
        loglik=-inertia,
        n_nonfinite=n_nonfinite,
        shift=ref,
        moment_rows=moment_rows,
        weight=weight,
        sums=sums,
        feature_sum=feature_sum,
        feature_sq=feature_sq,
        far=far,
    )


def _sparse_far(
    params: KMeansParams, x: Any, labels: NDArray[np.intp], dist: NDArray[Any], w: NDArray[Any], k: int
) -> FloatArray:
    """The block's ``k`` farthest rows as :class:`KMeansStats` ``far`` rows (only they are densified)."""
    n, d = x.shape
    m = min(n, _FAR_CANDIDATES * k)
    if m == 0:
        return np.zeros((0, d + 3))
    order = np.where(np.isfinite(dist), dist, -np.inf)
    rows = np.sort(np.argpartition(-order, m - 1)[:m]) if n > m else np.arange(n)
    xs = x[rows].toarray() - params.reference
    diff = xs - (params.centers - params.reference)[labels[rows]]
    far = np.empty((rows.size, d + 3))
    far[:, 0], far[:, 1], far[:, 2] = np.einsum("ij,ij->i", diff, diff), labels[rows], w[rows]
    far[:, 3:] = xs
    return _farthest(far, k)


def _centred(params: KMeansParams, dtype: Any) -> tuple[NDArray[Any], NDArray[Any]]:
    """The centres minus the reference, in ``dtype``, and half their squared norms."""
    cs = (params.centers - params.reference).astype(dtype)
    return cs, 0.5 * np.square(cs).sum(axis=1)


def _centre_tile(x: NDArray[Any], reference: FloatArray, buffer: NDArray[Any]) -> NDArray[Any]:
    """``x - reference`` written into the front rows of ``buffer`` (reused across tiles)."""
    out = buffer[: x.shape[0]]
    np.subtract(x, reference, out=out, casting="same_kind")
    return out


@dataclass(frozen=True)
class _Centres:
    """A run's centres prepared for :func:`_assign`: ``-c`` transposed and ``|c|^2 / 2``."""

    minus_t: NDArray[Any]
    half_norms: NDArray[Any]

    @classmethod
    def of(cls, params: KMeansParams, dtype: Any) -> _Centres:
        cs, half_norms = _centred(params, dtype)
        return cls(np.ascontiguousarray(-cs.T), half_norms.astype(dtype))


def _assign(
    xs: NDArray[Any], x2: NDArray[Any], centres: _Centres, out: NDArray[Any] | None
) -> tuple[NDArray[np.intp], NDArray[Any]]:
    """Nearest centre of every row of a centred tile and the squared distance to it.

    ``argmin |x - c|^2 = argmin (|c|^2 / 2 - x.c)``: one matrix product per tile (into
    ``out`` when given); the distance is ``|x|^2 + 2 min(...)``, clipped at 0 (rows and
    centres are centred on the reference, so the expansion does not cancel for data far
    from the origin; see :func:`rounding_bound` for where it is indistinguishable from 0).
    """
    scores = np.matmul(xs, centres.minus_t, out=None if out is None else out[: xs.shape[0]])
    scores += centres.half_norms
    labels = scores.argmin(axis=1)
    best = np.take_along_axis(scores, labels[:, None], axis=1)[:, 0]
    return labels, np.maximum(x2 + 2.0 * best, 0.0)


def rounding_bound(xs: NDArray[Any], labels: NDArray[np.intp], params: KMeansParams) -> NDArray[Any]:
    """The rounding error bound of :func:`_assign`'s distances: below it a distance is 0."""
    if sparse.issparse(xs):  # uncentred expansion: the bound grows with |x|^2 + |c|^2
        c2 = np.square(params.centers).sum(axis=1)
        return 8.0 * np.finfo(xs.dtype).eps * (_row_norms(xs) + c2[labels])
    half_norms = _centred(params, xs.dtype)[1]
    return 8.0 * np.finfo(xs.dtype).eps * (np.einsum("ij,ij->i", xs, xs) + 2.0 * half_norms[labels])


def _tile_moments(xs: NDArray[Any], x: NDArray[Any], w: NDArray[Any] | None) -> tuple[NDArray[Any], NDArray[Any], int]:
    """Per-feature sums and sums of squares of a centred tile, and the non-finite count of
    its raw rows ``x`` (centring can overflow huge finite values; that is not bad data)."""
    bad = 0
    if not np.all(np.isfinite(xs)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if w is not None:
        bad += w.size - int(np.count_nonzero(np.isfinite(w)))
    return xs.sum(axis=0, dtype=np.float64), np.einsum("ij,ij->j", xs, xs, dtype=np.float64), bad


#: Candidate farthest rows kept per cluster count: selected by the expanded distance,
#: then ordered exactly, so a margin of candidates absorbs the expansion's rounding.
_FAR_CANDIDATES = 2

_NO_WEIGHTS = np.zeros(0)


class _Accumulator:
    """The statistics of one parameter set, accumulated tile by tile.

    Each tile costs one BLAS product (the scores) and one pass of the compiled
    :func:`~daskem.models.kmeans_kernels.accumulate_tile`.
    """

    def __init__(self, params: KMeansParams, dtype: Any, tile_rows: int) -> None:
        k, d = params.centers.shape
        self.params = params
        self.k = k
        self.dtype = dtype
        self.cs = _centred(params, dtype)[0]
        self.centres = _Centres.of(params, dtype)
        self.scores = np.empty((tile_rows, k), dtype)
        self.weight = np.zeros(k)
        self.sums = np.zeros((k, d))
        self.feature_sum = np.zeros(d)
        self.feature_sq = np.zeros(d)
        self.moment_rows = 0.0
        self.n_nonfinite = 0
        self.inertia = 0.0
        m = _FAR_CANDIDATES * k
        self.far_dist = np.full(m, -np.inf)
        self.far_row = np.zeros(m, dtype=np.int64)
        self.far_label = np.zeros(m, dtype=np.int64)

    def add(
        self,
        xs: NDArray[Any],
        w: NDArray[Any] | None,
        moments: tuple[NDArray[Any], NDArray[Any], int] | None,
        offset: int,
    ) -> None:
        # Imported on first use: numba costs ~100 MiB of memory the other models do not pay.
        from daskem.models.kmeans_kernels import accumulate_tile

        scores = np.matmul(xs, self.centres.minus_t, out=self.scores[: xs.shape[0]])
        self.inertia += accumulate_tile(
            xs,
            scores,
            self.centres.half_norms,
            _NO_WEIGHTS if w is None else w,
            self.weight,
            self.sums,
            self.far_dist,
            self.far_row,
            self.far_label,
            offset,
        )
        if moments is not None and self.params.variance is None:
            self.feature_sum += moments[0]
            self.feature_sq += moments[1]
            self.n_nonfinite += moments[2]
            self.moment_rows += xs.shape[0]

    def _far(self, x_all: NDArray[Any], w_all: NDArray[Any] | None) -> FloatArray:
        """The block's ``k`` farthest rows as :class:`KMeansStats` ``far`` rows, exactly ordered."""
        kept = np.isfinite(self.far_dist)
        rows, labels = self.far_row[kept], self.far_label[kept]
        xs = np.subtract(x_all[rows], self.params.reference, dtype=self.dtype)
        far = np.empty((rows.size, xs.shape[1] + 3))
        diff = xs - self.cs[labels]
        # The candidates' distances directly (exact ordering for the relocation).
        far[:, 0], far[:, 1] = np.einsum("ij,ij->i", diff, diff), labels
        far[:, 2] = 1.0 if w_all is None else w_all[rows]
        far[:, 3:] = xs
        return _farthest(far[np.lexsort((rows,))], self.k)

    def stats(self, n: float, x_all: NDArray[Any], w_all: NDArray[Any] | None) -> KMeansStats:
        return KMeansStats(
            n=n,
            loglik=-self.inertia,
            n_nonfinite=self.n_nonfinite,
            shift=self.params.reference,
            moment_rows=self.moment_rows,
            weight=self.weight,
            sums=self.sums,
            feature_sum=self.feature_sum,
            feature_sq=self.feature_sq,
            far=self._far(x_all, w_all),
        )
