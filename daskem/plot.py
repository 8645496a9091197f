"""Pictures of fits: the log-likelihood per iteration and the components over the data.

matplotlib is imported only here and only when a picture is drawn (``pip install
daskem[plot]``); the figures are written with the non-interactive Agg backend unless a
window is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from daskem.errors import DaskemError

#: Rows of the data drawn under the components.
PLOT_SAMPLE_ROWS = 5_000


def _pyplot(show: bool) -> Any:
    try:
        import matplotlib
    except ImportError:
        raise DaskemError("Plotting needs matplotlib: pip install 'daskem[plot]' (or matplotlib).") from None
    if not show:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def projection(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The centre and the (d, 2) basis of the sample's two leading principal axes.

    Data with at most two features are shown as they are (an identity basis, padded with
    a zero axis for one feature).
    """
    d = sample.shape[1]
    centre = sample.mean(axis=0)
    if d <= 2:
        basis = np.eye(d, 2)
        return np.zeros(d), basis
    values, vectors = np.linalg.eigh(np.cov(sample, rowvar=False))
    return centre, vectors[:, np.argsort(values)[::-1][:2]]


def full_covariances(covariance_type: str, covariances: np.ndarray, k: int, d: int) -> np.ndarray:
    """Covariances of any type as a (k, d, d) stack."""
    if covariance_type == "full":
        return np.asarray(covariances)
    if covariance_type == "tied":
        return np.broadcast_to(covariances, (k, d, d))
    if covariance_type == "diag":
        return np.stack([np.diag(c) for c in covariances])
    return np.stack([np.eye(d) * c for c in covariances])


def plot_history(histories: Sequence[np.ndarray], best: int, path: str, *, show: bool = False) -> str:
    """Plot the mean log-likelihood per iteration of every run (the kept one bold) to ``path``."""
    plt = _pyplot(show)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, history in enumerate(histories):
        iterations = np.arange(1, len(history) + 1)
        kept = index == best
        ax.plot(
            iterations,
            history,
            marker="o" if kept else None,
            markersize=3,
            linewidth=2.0 if kept else 1.0,
            alpha=1.0 if kept else 0.5,
            label=f"run {index}" + (" (kept)" if kept else ""),
        )
    # The first iterations from a crude start can sit orders of magnitude below the rest:
    # scale the axis to the iterations after the first, so the convergence stays visible.
    later = np.concatenate([h[1:] for h in histories if len(h) > 1] or [np.zeros(0)])
    first = np.array([h[0] for h in histories if len(h)])
    if later.size and first.size and first.min() < later.min():
        low, high = later.min(), max(later.max(), first.max())
        margin = 0.05 * (high - low) or 1.0
        ax.set_ylim(low - margin, high + margin)
        ax.set_title("EM convergence (first iterations below the axis are cut off)", fontsize="medium")
    ax.set_xlabel("iteration")
    ax.set_ylabel("mean log-likelihood per sample")
    if not ax.get_title():
        ax.set_title("EM convergence")
    ax.grid(True, alpha=0.3)
    if len(histories) > 1:
        ax.legend(fontsize="small")
    return _finish(plt, fig, path, show)


def plot_components(est: Any, sample: np.ndarray, path: str, *, show: bool = False) -> str:
    """Plot a data sample and the fitted components over their 2-D principal projection.

    Mixtures: each component's mean and its 1- and 2-sigma ellipses (the covariance
    projected on the plane); k-means: the centres, points coloured by cluster.
    """
    from matplotlib.patches import Ellipse

    plt = _pyplot(show)
    centre, basis = projection(sample)
    points = (sample - centre) @ basis
    fig, ax = plt.subplots(figsize=(6.5, 6))
    if hasattr(est, "means_"):
        labels = est.predict(sample)
        means = (est.means_ - centre) @ basis
        k, d = est.means_.shape
        covariances = full_covariances(est.covariance_type, est.covariances_, k, d)
        ax.scatter(points[:, 0], points[:, 1], c=labels, s=4, cmap="tab10", alpha=0.35, linewidths=0)
        for j in range(k):
            plane = basis.T @ covariances[j] @ basis
            values, vectors = np.linalg.eigh(plane)
            angle = float(np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1])))
            for sigma in (1.0, 2.0):
                width, height = 2.0 * sigma * np.sqrt(np.maximum(values[::-1], 0.0))
                ax.add_patch(
                    Ellipse(
                        (means[j, 0], means[j, 1]),
                        width,
                        height,
                        angle=angle,
                        fill=False,
                        color=plt.cm.tab10(j % 10),
                        linewidth=2.0 / sigma,
                    )
                )
        ax.scatter(means[:, 0], means[:, 1], c="black", marker="x", s=60, label="means")
        title = f"{type(est).__name__} ({est.covariance_type}), {k} components"
    else:
        labels = est.predict(sample)
        centres = (est.cluster_centers_ - centre) @ basis
        ax.scatter(points[:, 0], points[:, 1], c=labels, s=4, cmap="tab10", alpha=0.35, linewidths=0)
        ax.scatter(centres[:, 0], centres[:, 1], c="black", marker="x", s=60, label="centres")
        title = f"{type(est).__name__}, {est.cluster_centers_.shape[0]} clusters"
    axes = "features 1 and 2" if sample.shape[1] <= 2 else "first two principal axes of the sample"
    ax.set_title(f"{title}\n{sample.shape[0]:,} sampled rows, {axes}", fontsize="medium")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(fontsize="small", loc="best")
    return _finish(plt, fig, path, show)


def plot_selection(selection: Any, path: str, *, show: bool = False) -> str:
    """Plot BIC and AIC against the number of components, one line per covariance type."""
    plt = _pyplot(show)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharex=True)
    types = sorted({c.covariance_type for c in selection.candidates})
    for ax, name, best in ((axes[0], "bic", selection.best_bic), (axes[1], "aic", selection.best_aic)):
        for ct in types:
            rows = sorted((c for c in selection.candidates if c.covariance_type == ct), key=lambda c: c.n_components)
            ax.plot([c.n_components for c in rows], [getattr(c, name) for c in rows], marker="o", label=ct)
        ax.scatter([best.n_components], [getattr(best, name)], s=160, facecolors="none", edgecolors="black")
        ax.set_title(f"{name.upper()} (best: k={best.n_components}, {best.covariance_type})", fontsize="medium")
        ax.set_xlabel("components")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    axes[0].set_ylabel("criterion (lower is better)")
    return _finish(plt, fig, path, show)


def _finish(plt: Any, fig: Any, path: str, show: bool) -> str:
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    if show:
        plt.show()
    plt.close(fig)
    return path
