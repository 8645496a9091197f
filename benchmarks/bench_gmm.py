"""Seconds per EM iteration: daskem against scikit-learn and a fused pure-NumPy reference.

All runs fit the same in-memory data (a synthetic mixture, d=16, k=8, float64) from the
same initial parameters for a fixed number of iterations (tol=0), in one process run,
so the ratios printed at the end compare like with like on this machine:

- ``sklearn``: ``sklearn.mixture.GaussianMixture`` (weights/means/precisions_init given,
  so it skips its k-means start);
- ``numpy``: one fused E+M step per iteration in plain NumPy, the design PEERS.md
  describes: blocks of 4,096 rows, the E-step of a block as one matrix product of the
  stacked precision factors with the block, the second moments as one more product,
  2 Python threads over blocks with one BLAS thread each;
- ``daskem``: ``daskem.GaussianMixture`` on Dask's threaded scheduler (2 threads);
- ``daskem-dist``: the same on a LocalCluster of 2 single-threaded worker processes
  (the data persisted on the workers once).

Usage::

    python benchmarks/bench_gmm.py                      # n = 200,000 and 2,000,000
    python benchmarks/bench_gmm.py --n 200000 --iters 5 --types full diag
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import linalg
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from threadpoolctl import threadpool_limits

import daskem
from daskem.testing import make_mixture_array

D, K = 16, 8
BLOCK = 4096


# --- the fused pure-NumPy reference -----------------------------------------------------


def _prec_chol(cov: np.ndarray, ct: str) -> np.ndarray:
    if ct == "full":
        return np.stack([linalg.solve_triangular(linalg.cholesky(c, lower=True), np.eye(D), lower=True).T for c in cov])
    if ct == "tied":
        return linalg.solve_triangular(linalg.cholesky(cov, lower=True), np.eye(D), lower=True).T
    return 1.0 / np.sqrt(cov)


def _numpy_block(xt: np.ndarray, w, mu, pc, ct: str, c: np.ndarray):
    """E-step statistics of one feature-major block xt (d x b), centred on c."""
    xs = xt - c[:, None]
    m = mu - c
    if ct in ("full", "tied"):
        pcs = pc if ct == "full" else np.broadcast_to(pc, (K, D, D))
        stacked = pcs.transpose(0, 2, 1).reshape(K * D, D)  # (k*d, d): rows L_k^T
        y = stacked @ xs - np.einsum("kde,kd->ke", pcs, m).reshape(K * D, 1)
        logdet = np.log(np.diagonal(pcs, axis1=1, axis2=2)).sum(1)
    else:
        p = pc.reshape(K, -1) * np.ones((1, D))
        y = (p[:, :, None] * xs[None, :, :] - (m * p)[:, :, None]).reshape(K * D, -1)
        logdet = np.log(p).sum(1)
    q = (y * y).reshape(K, D, -1).sum(1)
    lp = -0.5 * q + (np.log(w) + logdet - 0.5 * D * np.log(2 * np.pi))[:, None]
    top = lp.max(0)
    e = np.exp(lp - top)
    tot = e.sum(0)
    r = e / tot
    ll = float((np.log(tot) + top).sum())
    nk = r.sum(1)
    s1 = r @ xs.T
    if ct == "full":
        s2 = ((r[:, None, :] * xs[None, :, :]).reshape(K * D, -1) @ xs.T).reshape(K, D, D)
    elif ct == "tied":
        s2 = xs @ xs.T
    else:
        s2 = r @ (xs * xs).T
    return nk, s1, s2, ll


def numpy_fit(xt_blocks, w, mu, cov, ct: str, iters: int, reg: float = 1e-6) -> list[float]:
    """Fixed-iteration EM in plain NumPy; returns seconds per iteration."""
    pc = _prec_chol(cov, ct)
    times = []
    with ThreadPoolExecutor(2) as pool, threadpool_limits(1, "blas"):
        for _ in range(iters):
            t0 = time.perf_counter()
            c = w @ mu
            parts = list(pool.map(lambda b, c=c, w=w, mu=mu, pc=pc: _numpy_block(b, w, mu, pc, ct, c), xt_blocks))
            nk = sum(p[0] for p in parts) + 1e-15
            s1 = sum(p[1] for p in parts)
            s2 = sum(p[2] for p in parts)
            a = s1 / nk[:, None]
            mu = c + a
            if ct == "full":
                cov = (s2 - nk[:, None, None] * a[:, :, None] * a[:, None, :]) / nk[:, None, None] + reg * np.eye(D)
            elif ct == "tied":
                cov = (s2 - (a * nk[:, None]).T @ a) / nk.sum() + reg * np.eye(D)
            else:
                cov = (s2 - nk[:, None] * a * a) / nk[:, None] + reg
                if ct == "spherical":
                    cov = cov.mean(1)
            w = nk / nk.sum()
            pc = _prec_chol(cov, ct)
            times.append(time.perf_counter() - t0)
    return times


# --- runs ---------------------------------------------------------------------------------


def initial(X: np.ndarray, ct: str):
    """Shared initial parameters: daskem's k-means initialiser on a sample."""
    model = daskem.GaussianMixtureModel(K, ct)
    (p,) = daskem.initial_params(model, daskem.as_source(X), "kmeans", [np.random.default_rng(0)])
    prec = {"full": lambda pc: pc @ pc.transpose(0, 2, 1), "tied": lambda pc: pc @ pc.T}.get(ct, lambda pc: pc**2)
    return p, prec(p.precisions_cholesky)


def run(n: int, ct: str, iters: int, client) -> dict[str, float]:
    X = np.ascontiguousarray(make_mixture_array(n, D, K, seed=0)[0].compute())
    p0, prec0 = initial(X, ct)
    inits = {"weights_init": p0.weights, "means_init": p0.means, "precisions_init": prec0}
    out: dict[str, float] = {}

    sk = SkGaussianMixture(K, covariance_type=ct, max_iter=iters, tol=0.0, **inits)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk.fit(X)
    out["sklearn"] = (time.perf_counter() - t0) / iters

    xt_blocks = [np.ascontiguousarray(X[i : i + BLOCK].T) for i in range(0, n, BLOCK)]
    out["numpy"] = statistics.median(numpy_fit(xt_blocks, p0.weights, p0.means, p0.covariances, ct, iters))

    def daskem_fit() -> float:
        est = daskem.GaussianMixture(K, covariance_type=ct, max_iter=iters, tol=0.0, **inits)
        secs: list[float] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(X, callback=lambda rec, _: secs.append(rec.seconds))
        return statistics.median(secs)

    out["daskem"] = daskem_fit()
    if client is not None:
        with client.as_current():
            out["daskem-dist"] = daskem_fit()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[200_000, 2_000_000])
    parser.add_argument("--types", nargs="+", default=["full", "tied", "diag", "spherical"])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--no-distributed", action="store_true")
    args = parser.parse_args()

    client = cluster = None
    if not args.no_distributed:
        from distributed import Client

        from daskem.cli import local_cluster

        cluster = local_cluster(2, 1)
        client = Client(cluster, set_as_default=False)

    rows = []
    print(f"{'n':>9} {'type':>9} {'sklearn':>9} {'numpy':>9} {'daskem':>9} {'dist':>9}  (s/iter)")
    for n in args.n:
        for ct in args.types:
            r = run(n, ct, args.iters, client)
            rows.append((n, ct, r))
            print(
                f"{n:>9} {ct:>9} {r['sklearn']:9.4f} {r['numpy']:9.4f} {r['daskem']:9.4f} "
                f"{r.get('daskem-dist', float('nan')):9.4f}",
                flush=True,
            )
    print()
    print(f"{'n':>9} {'type':>9} {'daskem/sklearn':>15} {'daskem/numpy':>13} {'dist/threads':>13}")
    for n, ct, r in rows:
        dist = r.get("daskem-dist", float("nan")) / r["daskem"]
        print(f"{n:>9} {ct:>9} {r['daskem'] / r['sklearn']:15.3f} {r['daskem'] / r['numpy']:13.3f} {dist:13.3f}")
    if client is not None:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
