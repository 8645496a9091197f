"""Synthetic Gaussian-mixture data, generated block by block with Dask (``daskem make-data``).

Also exported by :mod:`daskem.testing` for tests and benchmarks.

Each block draws from its own ``SeedSequence`` child, so the data depend only on the
seed and the block size, never on scheduling, and no process ever holds the whole array.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
import zarr

from daskem.errors import ParameterError


@dataclass(frozen=True)
class MixtureSpec:
    """True parameters of a synthetic mixture.

    Attributes
    ----------
    weights : ndarray of shape (k,)
    means : ndarray of shape (k, d)
    covariance_factors : ndarray of shape (k, d, d)
        Lower-triangular factors ``A_j`` with covariance ``A_j A_j^T``.
    """

    weights: np.ndarray
    means: np.ndarray
    covariance_factors: np.ndarray

    @property
    def covariances(self) -> np.ndarray:
        """Covariances of shape (k, d, d)."""
        return np.asarray(self.covariance_factors @ self.covariance_factors.transpose(0, 2, 1))


def mixture_spec(n_features: int, n_components: int, seed: int, separation: float = 4.0) -> MixtureSpec:
    """Draw the true parameters of a well-separated synthetic mixture.

    Parameters
    ----------
    n_features, n_components : int
        Dimensions.
    seed : int
        Seed.
    separation : float
        Standard deviation of the component means (in units of the noise scale ~1).

    Returns
    -------
    MixtureSpec
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    weights = rng.dirichlet(np.full(n_components, 5.0))
    means = rng.normal(scale=separation, size=(n_components, n_features))
    raw = rng.normal(scale=0.3, size=(n_components, n_features, n_features))
    factors = np.tril(raw, -1) + np.eye(n_features) * rng.uniform(0.5, 1.5, size=(n_components, 1, n_features))
    return MixtureSpec(weights, means, factors)


def _block(spec: MixtureSpec, seed: np.random.SeedSequence, rows: int, dtype: Any) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.choice(spec.weights.shape[0], size=rows, p=spec.weights)
    z = rng.standard_normal((rows, spec.means.shape[1]))
    out = np.empty_like(z)
    for j in range(spec.weights.shape[0]):
        mask = labels == j
        out[mask] = spec.means[j] + z[mask] @ spec.covariance_factors[j].T
    return out.astype(dtype, copy=False)


def make_mixture_array(
    n_samples: int,
    n_features: int,
    n_components: int,
    *,
    seed: int = 0,
    chunk_rows: int = 65_536,
    dtype: Any = np.float64,
    separation: float = 4.0,
) -> tuple[da.Array, MixtureSpec]:
    """A lazy dask array of rows drawn from a synthetic Gaussian mixture.

    Returns
    -------
    X : dask.array.Array of shape (n_samples, n_features)
    spec : MixtureSpec
        The true parameters.
    """
    for name, value in (("n_samples", n_samples), ("n_features", n_features), ("n_components", n_components)):
        if value < 1:
            raise ParameterError(f"{name} must be >= 1; got {value}.")
    if chunk_rows < 1:
        raise ParameterError(f"chunk_rows must be >= 1; got {chunk_rows}.")
    spec = mixture_spec(n_features, n_components, seed, separation)
    sizes = [min(chunk_rows, n_samples - s) for s in range(0, n_samples, chunk_rows)]
    seeds = np.random.SeedSequence([seed, 1]).spawn(len(sizes))

    blocks = [
        da.from_delayed(dask.delayed(_block, pure=True)(spec, s, r, dtype), shape=(r, n_features), dtype=dtype)
        for s, r in zip(seeds, sizes, strict=True)
    ]
    return da.concatenate(blocks, axis=0), spec


def _check_replaceable(path: str | os.PathLike[str]) -> None:
    """Refuse to overwrite anything but an array written by :func:`write_mixture_zarr`."""
    from daskem.checkpoint.store import existing_content
    from daskem.errors import DestinationExistsError

    found = existing_content(path)
    if found is None:
        return
    try:
        truth = zarr.open_array(store=os.fspath(path), mode="r").attrs.get("daskem_truth")
    except Exception:
        truth = None
    if truth is None:
        raise DestinationExistsError(
            f"{os.fspath(path)!r} holds {found[1]}, not a dataset written by daskem make-data; it is never "
            "replaced. Choose another path."
        )


def write_mixture_zarr(
    path: str | os.PathLike[str],
    n_samples: int,
    n_features: int,
    n_components: int,
    *,
    seed: int = 0,
    chunk_rows: int = 65_536,
    dtype: Any = np.float64,
    compress: bool = False,
    overwrite: bool = False,
    separation: float = 4.0,
) -> MixtureSpec:
    """Write a synthetic mixture to a Zarr v3 array, block by block, in parallel.

    The true parameters are stored in the array's attributes under ``"daskem_truth"``.
    Random floats do not compress (zstd ratio ~1.03), so the default writes
    uncompressed chunks, which read about twice as fast. ``overwrite`` replaces only an
    array written here before (one with ``"daskem_truth"``): anything else at ``path``
    raises :class:`~daskem.errors.DestinationExistsError` (a ``FileExistsError``) naming
    it. ``separation`` is the spread of the true means (see :func:`mixture_spec`).
    """
    if overwrite:
        _check_replaceable(path)
    X, spec = make_mixture_array(
        n_samples, n_features, n_components, seed=seed, chunk_rows=chunk_rows, dtype=dtype, separation=separation
    )
    target = zarr.create_array(
        store=os.fspath(path),
        shape=X.shape,
        chunks=(chunk_rows, n_features),
        dtype=np.dtype(dtype),
        compressors="auto" if compress else None,
        overwrite=overwrite,
    )
    da.store(X, target, lock=False)  # type: ignore[arg-type]  # zarr.Array supports __setitem__
    target.attrs["daskem_truth"] = {
        "weights": spec.weights.tolist(),
        "means": spec.means.tolist(),
        "seed": seed,
    }
    return spec
