"""k-means as hard-assignment EM (Lloyd's algorithm): pure NumPy E-step, combine and M-step.

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

A model with ``weighted=True`` reads each block's last column as the sample weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from daskem.errors import ParameterError
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

    @classmethod
    def from_centers(cls, centers: Any) -> KMeansParams:
        """Parameters from initial centres (the reference is their mean)."""
        centers = np.array(centers, dtype=np.float64)
        return cls(centers, centers.mean(axis=0))

    def to_arrays(self) -> dict[str, FloatArray]:
        """Return the parameters as named arrays."""
        return {"centers": self.centers, "reference": self.reference}


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

    # -- contract ----------------------------------------------------------------------

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON-able values."""
        return {"model": "kmeans", "n_clusters": int(self.n_clusters), "weighted": bool(self.weighted)}

    def zero_stats(self, params: KMeansParams) -> KMeansStats:
        """Statistics of no rows."""
        k, d = params.centers.shape
        return KMeansStats(
            0.0, 0.0, 0, params.reference, np.zeros(k), np.zeros((k, d)), np.zeros(d), np.zeros(d), np.zeros((0, d + 3))
        )

    def combine(self, a: KMeansStats, b: KMeansStats) -> KMeansStats:
        """Sum the statistics of two disjoint sets of rows; keep the farthest rows of both."""
        return KMeansStats(
            n=a.n + b.n,
            loglik=a.loglik + b.loglik,
            n_nonfinite=a.n_nonfinite + b.n_nonfinite,
            shift=a.shift,
            weight=a.weight + b.weight,
            sums=a.sums + b.sums,
            feature_sum=a.feature_sum + b.feature_sum,
            feature_sq=a.feature_sq + b.feature_sq,
            far=_farthest(np.concatenate([a.far, b.far]), self.n_clusters),
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
        return KMeansParams(centers, check_shape("reference", arrays["reference"], (centers.shape[1],)))

    def e_step(self, params: KMeansParams, block: NDArray[Any]) -> KMeansStats:
        """Assign every row of ``block`` to its nearest centre and accumulate the statistics."""
        k, d = params.centers.shape
        shift = params.reference
        weight = np.zeros(k)
        sums = np.zeros((k, d))
        feature_sum = np.zeros(d)
        feature_sq = np.zeros(d)
        inertia = 0.0
        n_nonfinite = 0
        far = [np.zeros((0, d + 3))]
        with np.errstate(invalid="ignore", over="ignore"):
            for xs, w, labels, dist in self.assign_tiles(params, block):
                n_nonfinite += xs.size - int(np.count_nonzero(np.isfinite(xs)))
                if w is not None:
                    n_nonfinite += w.size - int(np.count_nonzero(np.isfinite(w)))
                onehot = (labels[:, None] == np.arange(k)).astype(xs.dtype)
                if w is None:
                    weight += onehot.sum(axis=0, dtype=np.float64)
                    sums += onehot.T @ xs
                    inertia += float(dist.sum(dtype=np.float64))
                else:
                    onehot *= w[:, None]
                    weight += onehot.sum(axis=0, dtype=np.float64)
                    sums += onehot.T @ xs
                    inertia += float(w @ dist)
                feature_sum += xs.sum(axis=0, dtype=np.float64)
                feature_sq += np.einsum("ij,ij->j", xs, xs, dtype=np.float64)
                rows = np.empty((xs.shape[0], d + 3))
                rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3:] = dist, labels, 1.0 if w is None else w, xs
                far.append(_farthest(rows, k))
        return KMeansStats(
            n=float(block.shape[0]),
            loglik=-inertia,
            n_nonfinite=n_nonfinite,
            shift=shift,
            weight=weight,
            sums=sums,
            feature_sum=feature_sum,
            feature_sq=feature_sq,
            far=_farthest(np.concatenate(far), k),
        )

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
        if params is None:
            if not filled.all():
                raise ValueError(f"{int((~filled).sum())} cluster(s) received no rows in the initial assignment.")
            centers = stats.shift + sums / weight[:, None]
        else:
            centers = params.centers.copy()
            centers[filled] = stats.shift + sums[filled] / weight[filled, None]
        return KMeansParams(centers, stats.shift)

    def converged(self, stats: KMeansStats, params: KMeansParams, new_params: KMeansParams, tol: float) -> bool:
        """scikit-learn's test: squared centre shift <= ``tol`` x mean per-feature data variance."""
        mean = stats.feature_sum / stats.n
        variance = np.maximum(stats.feature_sq / stats.n - mean * mean, 0.0)
        shift = float(((new_params.centers - params.centers) ** 2).sum())
        return shift <= tol * float(variance.mean())

    # -- vector form (acceleration) --------------------------------------------------------

    def to_vector(self, params: KMeansParams) -> FloatArray:
        """The centres, flattened."""
        return params.centers.ravel().copy()

    def from_vector(self, vector: FloatArray, like: KMeansParams) -> KMeansParams:
        """Centres from a flat vector (any finite vector is valid)."""
        return KMeansParams(np.asarray(vector, dtype=np.float64).reshape(like.centers.shape), like.reference)

    # -- prediction per block --------------------------------------------------------------

    def predict(self, params: KMeansParams, block: NDArray[Any]) -> NDArray[np.intp]:
        """Index of the nearest centre of every row: shape (n,)."""
        out = [labels for _, _, labels, _ in self.assign_tiles(params, block)]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.intp)

    def transform(self, params: KMeansParams, block: NDArray[Any]) -> FloatArray:
        """Euclidean distance of every row to every centre: shape (n, k)."""
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
        distance to it, computed directly (not by the expansion used to choose the label).
        """
        x_all = block[:, :-1] if self.weighted else block
        dtype = np.dtype(np.float32) if x_all.dtype == np.float32 else np.dtype(np.float64)
        cs = (params.centers - params.reference).astype(dtype)
        half_norms = 0.5 * np.square(cs).sum(axis=1)
        for start in range(0, block.shape[0], TILE_ROWS):
            stop = min(start + TILE_ROWS, block.shape[0])
            xs = np.subtract(x_all[start:stop], params.reference, dtype=dtype)
            # argmin |x - c|^2 = argmin (|c|^2 / 2 - x.c): one matrix product per tile.
            labels = np.argmin(half_norms - xs @ cs.T, axis=1)
            diff = xs - cs[labels]
            dist = np.einsum("ij,ij->i", diff, diff)
            w = np.asarray(block[start:stop, -1], dtype=np.float64) if self.weighted else None
            yield xs, w, labels, dist
