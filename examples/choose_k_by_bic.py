"""How many clusters? Fit a Gaussian mixture for each k and choose k by BIC.

The story: you do not know how many groups your data contain. Fit a mixture for every
candidate number of components, and keep the one with the lowest Bayesian information
criterion (BIC = -2 log-likelihood + parameters x log n), which pays for every extra
parameter; the Akaike criterion (AIC) is printed too (it penalises less and tends to
choose more components on large data). Here the data are drawn from a known mixture, so
you can check that BIC finds the true number of components.

The script draws the data lazily with ``daskem.testing.make_mixture_array`` and keeps
them as a dask array in memory (``.persist()``); every fit and every ``bic``/``aic`` call
runs on its blocks. It prints a table of log-likelihood, BIC and AIC per k, the k chosen
by each criterion, and writes a plot of BIC and AIC against k to a PNG when matplotlib
is installed (``pip install matplotlib``; the script says so and skips the plot
otherwise).

Run it (a few seconds; ``--help`` for the options)::

    python examples/choose_k_by_bic.py
    python examples/choose_k_by_bic.py --true-k 6 --k-max 10 --plot bic.png

For data on disk, ``daskem select DATA.zarr -k 1..8 --plot bic.png`` does the same
search from the shell, fitting all the candidates in shared passes over the data.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=200_000, help="rows (default 200000)")
    parser.add_argument("--n-features", type=int, default=5, help="columns (default 5)")
    parser.add_argument("--true-k", type=int, default=4, help="components of the generating mixture (default 4)")
    parser.add_argument("--k-min", type=int, default=1, help="smallest k tried (default 1)")
    parser.add_argument("--k-max", type=int, default=8, help="largest k tried (default 8)")
    parser.add_argument("--covariance-type", default="full", choices=["full", "tied", "diag", "spherical"])
    parser.add_argument("--n-init", type=int, default=1, help="initialisations per k (default 1)")
    parser.add_argument("--chunk-rows", type=int, default=25_000, help="rows per block (default 25000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the fits")
    parser.add_argument("--plot", type=Path, default=Path("bic_vs_k.png"), help="PNG to write (default bic_vs_k.png)")
    parser.add_argument("--no-plot", action="store_true", help="do not draw the plot")
    return parser.parse_args(argv)


def plot(path: Path, ks: list[int], bics: list[float], aics: list[float], chosen: int, true_k: int) -> bool:
    """Draw BIC and AIC against k; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(ks, bics, "o-", label="BIC")
    ax.plot(ks, aics, "s--", label="AIC")
    ax.axvline(chosen, color="tab:green", linestyle=":", label=f"chosen k = {chosen}")
    ax.set_xlabel("number of components k")
    ax.set_ylabel("criterion (lower is better)")
    ax.set_title(f"Choosing k by BIC (data drawn with k = {true_k})")
    ax.set_xticks(ks)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import daskem
    from daskem.testing import make_mixture_array

    X, _ = make_mixture_array(args.n_samples, args.n_features, args.true_k, seed=args.seed, chunk_rows=args.chunk_rows)
    X = X.persist()  # drawn once, then kept in memory as a dask array
    print(f"data: {args.n_samples:,} x {args.n_features} drawn from a mixture of {args.true_k} Gaussians")

    ks = list(range(args.k_min, args.k_max + 1))
    bics, aics = [], []
    print(f"{'k':>3} {'log-lik/row':>12} {'BIC':>14} {'AIC':>14} {'iters':>6} {'secs':>6}")
    for k in ks:
        start = time.perf_counter()
        gm = daskem.GaussianMixture(
            n_components=k,
            covariance_type=args.covariance_type,
            n_init=args.n_init,
            max_iter=200,
            random_state=args.seed,
        ).fit(X)
        bic, aic = gm.bic(X), gm.aic(X)
        bics.append(bic)
        aics.append(aic)
        print(
            f"{k:>3} {gm.lower_bound_:>12.5f} {bic:>14.1f} {aic:>14.1f} {gm.n_iter_:>6} "
            f"{time.perf_counter() - start:>6.2f}"
        )

    chosen = ks[min(range(len(ks)), key=bics.__getitem__)]
    by_aic = ks[min(range(len(ks)), key=aics.__getitem__)]
    print(f"chosen k by BIC: {chosen} (true k: {args.true_k})")
    print(f"chosen k by AIC: {by_aic}")
    if args.no_plot:
        return
    if plot(args.plot, ks, bics, aics, chosen, args.true_k):
        print(f"plot written to {args.plot}")
    else:
        print("matplotlib is not installed: no plot (pip install matplotlib)")


if __name__ == "__main__":
    main()
