"""Pictures of fits: the log-likelihood per iteration, and each model's own figures.

:data:`FIGURES` names the figures a model's registry entry can ask ``daskem plot`` for:
``components`` (mixtures, k-means: the data and the components), ``loadings`` and
``latent`` (PPCA, factor analysis), ``transitions`` and ``states`` (hidden Markov
models), ``sources`` (independent factor analysis: the learned source densities). Every
model also gets :func:`plot_history`. ``unmixing`` (FastICA) draws the recovered sources
each against each.

matplotlib is imported only here and only when a picture is drawn (``pip install
daskem[plot]``); the figures are written with the non-interactive Agg backend unless a
window is asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from daskem.errors import DaskemError
from daskem.models.gaussian import covariance_type


def picture_paths(run: str, prefix: str | None, fmt: str, names: Sequence[str]) -> list[str]:
    """The files ``daskem plot`` writes, one per figure name.

    Parameters
    ----------
    run : str
        The checkpoint or model file drawn.
    prefix : str or None
        ``-o``: a directory (an existing one, or any path ending in ``/``) receives
        ``NAME.FMT`` for every name; any other prefix gives ``PREFIX-NAME.FMT`` (no ``-``
        is added after a prefix that ends in ``-`` or ``_``). None: ``RUN-NAME.FMT``
        beside ``RUN``, without its ``.zarr``.
    fmt : str
        The file extension (``png``, ``svg``).
    names : sequence of str
        The figures (``loglik``, then the model's own: ``components``, ...).

    Returns
    -------
    list of str
        One file per name, in order.
    """
    if prefix is None:  # beside RUN (never inside it, even where RUN has no .zarr suffix)
        stripped = run.rstrip("/" + os.sep) or run
        base = stripped[: -len(".zarr")] if stripped.endswith(".zarr") else stripped
        return [f"{base}-{name}.{fmt}" for name in names]
    if prefix.endswith(("/", os.sep)) or os.path.isdir(prefix):
        return [os.path.join(prefix, f"{name}.{fmt}") for name in names]
    joined = prefix if prefix.endswith(("-", "_")) else prefix + "-"
    return [f"{joined}{name}.{fmt}" for name in names]


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


def plot_history(
    histories: Sequence[np.ndarray],
    best: int,
    path: str,
    *,
    objective: str = "mean log-likelihood",
    show: bool = False,
) -> str:
    """Plot the mean log-likelihood per iteration of every run (the kept one bold).

    Parameters
    ----------
    histories : sequence of ndarray
        The mean log-likelihood per iteration of each run.
    best : int
        Index of the kept run (drawn bold, with markers).
    path : str
        File to write; its extension picks the format (PNG, SVG, ...).
    objective : str, default "mean log-likelihood"
        What the histories hold (the y axis): the model's per-sample ``lower_bound_``.
    show : bool, default False
        Also open the figure in a window.

    Returns
    -------
    str
        ``path``.
    """
    plt = _pyplot(show)  # first: without matplotlib, its message
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # iterations: no 1.5
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
    ax.set_ylabel(objective)
    if not ax.get_title():
        ax.set_title("EM convergence")
    ax.grid(True, alpha=0.3)
    if len(histories) > 1:
        ax.legend(fontsize="small")
    return _finish(plt, fig, path, show)


def component_colours(k: int) -> np.ndarray:
    """The RGBA colour of each of ``k`` components: matplotlib's ``tab10``, repeating after 10.

    Component ``j``'s points, ellipses and mean share ``component_colours(k)[j]``.

    Parameters
    ----------
    k : int
        Number of components.

    Returns
    -------
    ndarray of shape (k, 4)
        RGBA values in [0, 1].
    """
    from matplotlib import colormaps

    return np.asarray(colormaps["tab10"](np.arange(k) % 10), dtype=np.float64).reshape(k, 4)


def plot_components(est: Any, sample: np.ndarray, path: str, *, show: bool = False) -> str:
    """Plot a data sample and the fitted components over their 2-D principal projection.

    Each point takes the colour of the component it is assigned to (``est.predict``),
    the same colour as that component's mean (a filled cross) and, for mixtures, its 1-
    and 2-sigma ellipses (the covariance projected on the plane); k-means: the centres.

    Parameters
    ----------
    est : GaussianMixture, KMeans or another fitted estimator with ``predict``
        With ``means_`` and ``covariance_type`` (ellipses drawn) or ``cluster_centers_``.
    sample : ndarray of shape (n_rows, n_features)
        The data rows to draw.
    path : str
        File to write; its extension picks the format (PNG, SVG, ...).
    show : bool, default False
        Also open the figure in a window.

    Returns
    -------
    str
        ``path``.
    """
    plt = _pyplot(show)  # first: without matplotlib, its message
    from matplotlib.patches import Ellipse

    centre, basis = projection(sample)
    points = (sample - centre) @ basis
    fig, ax = plt.subplots(figsize=(6.5, 6))
    labels = np.asarray(est.predict(sample), dtype=np.intp)
    mixture = hasattr(est, "means_")
    centres = np.asarray(est.means_ if mixture else est.cluster_centers_)
    k = centres.shape[0]
    colours = component_colours(k)
    # Explicit colours, not a colormap over the labels: a colormap would be normalised to
    # the labels present, so component j's points would not take component j's colour.
    ax.scatter(points[:, 0], points[:, 1], color=colours[labels], s=4, alpha=0.35, linewidths=0, gid="points")
    projected = (centres - centre) @ basis
    if mixture:
        covariances = covariance_type(est.covariance_type).to_full(est.covariances_, k, centres.shape[1])
        for j in range(k):
            plane = basis.T @ covariances[j] @ basis
            values, vectors = np.linalg.eigh(plane)
            angle = float(np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1])))
            for sigma in (1.0, 2.0):
                width, height = 2.0 * sigma * np.sqrt(np.maximum(values[::-1], 0.0))
                ax.add_patch(
                    Ellipse(
                        (projected[j, 0], projected[j, 1]),
                        width,
                        height,
                        angle=angle,
                        fill=False,
                        color=colours[j],
                        linewidth=2.0 / sigma,
                        gid=f"ellipse-{j}-{sigma:g}sigma",
                    )
                )
        title = f"{type(est).__name__} ({est.covariance_type}), {k} components"
    else:
        title = f"{type(est).__name__}, {k} clusters"
    ax.scatter(
        projected[:, 0],
        projected[:, 1],
        color=colours,
        edgecolors="black",
        linewidths=0.8,
        marker="X",
        s=90,
        label="means" if mixture else "centres",
        gid="means",
    )
    axes = "features 1 and 2" if sample.shape[1] <= 2 else "first two principal axes of the sample"
    ax.set_title(f"{title}\n{sample.shape[0]:,} sampled rows, {axes}", fontsize="medium")
    ax.set_aspect("equal", adjustable="datalim")
    legend = ax.legend(fontsize="small", loc="best")
    legend.legend_handles[0].set_facecolor("white")  # the key stands for every component's mean
    return _finish(plt, fig, path, show)


def plot_selection(selection: Any, path: str, *, show: bool = False) -> str:
    """Plot BIC and AIC against the number of components, one line per covariance type (one
    line for k-means, whose candidates have none)."""
    plt = _pyplot(show)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharex=True)
    types = list(dict.fromkeys(c.covariance_type for c in selection.candidates))
    for ax, name, best in ((axes[0], "bic", selection.best_bic), (axes[1], "aic", selection.best_aic)):
        for ct in types:
            rows = sorted((c for c in selection.candidates if c.covariance_type == ct), key=lambda c: c.n_components)
            ax.plot([c.n_components for c in rows], [getattr(c, name) for c in rows], marker="o", label=ct)
        ax.scatter([best.n_components], [getattr(best, name)], s=160, facecolors="none", edgecolors="black")
        ax.set_title(f"{name.upper()} (best: {best.label})", fontsize="medium")
        ax.set_xlabel("components")
        ax.grid(True, alpha=0.3)
        if types != [None]:
            ax.legend(fontsize="small")
    axes[0].set_ylabel("criterion (lower is better)")
    return _finish(plt, fig, path, show)


def plot_loadings(est: Any, path: str, *, show: bool = False) -> str:
    """Plot the loading matrix ``components_`` of PPCA or factor analysis as a heat map.

    One row per latent factor, one column per feature, on a symmetric blue-red scale
    (white is 0), each cell annotated where there are few enough.

    Parameters
    ----------
    est : PPCA or FactorAnalysis
        Fitted.
    path : str
        File to write; its extension picks the format (PNG, SVG, ...).
    show : bool, default False
        Also open the figure in a window.

    Returns
    -------
    str
        ``path``.
    """
    plt = _pyplot(show)
    loadings = np.asarray(est.components_, dtype=np.float64)
    q, d = loadings.shape
    fig, ax = plt.subplots(figsize=(max(4.5, min(0.5 * d + 2.5, 14.0)), max(2.5, min(0.5 * q + 1.8, 10.0))))
    scale = float(np.abs(loadings).max()) or 1.0
    image = ax.imshow(loadings, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto", interpolation="nearest")
    if q * d <= 200:
        for (i, j), value in np.ndenumerate(loadings):
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small")
    ax.set_xlabel("feature")
    ax.set_ylabel("factor")
    ax.set_xticks(range(d) if d <= 30 else [])
    ax.set_yticks(range(q) if q <= 30 else [])
    fig.colorbar(image, ax=ax, label="loading")
    ax.set_title(f"{type(est).__name__}: loadings of {q} factor(s) on {d} feature(s)", fontsize="medium")
    return _finish(plt, fig, path, show)


def plot_latent(est: Any, sample: np.ndarray, path: str, *, show: bool = False) -> str:
    """Plot a data sample in the latent space of PPCA or factor analysis (``transform``).

    The first two latent factors as a scatter plot; a histogram of the factor for a
    one-factor model.

    Parameters
    ----------
    est : PPCA or FactorAnalysis
        Fitted.
    sample : ndarray of shape (n_rows, n_features)
        The data rows to draw.
    path : str
        File to write; its extension picks the format (PNG, SVG, ...).
    show : bool, default False
        Also open the figure in a window.

    Returns
    -------
    str
        ``path``.
    """
    plt = _pyplot(show)
    latent = np.asarray(est.transform(sample), dtype=np.float64)
    fig, ax = plt.subplots(figsize=(6.5, 6) if latent.shape[1] > 1 else (7, 4.5))
    if latent.shape[1] > 1:
        ax.scatter(latent[:, 0], latent[:, 1], s=5, alpha=0.4, linewidths=0, gid="latent")
        ax.set_xlabel("factor 0")
        ax.set_ylabel("factor 1")
        ax.set_aspect("equal", adjustable="datalim")
    else:
        ax.hist(latent[:, 0], bins=50, gid="latent")
        ax.set_xlabel("factor 0")
        ax.set_ylabel("rows")
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{type(est).__name__}: {sample.shape[0]:,} sampled rows in the latent space", fontsize="medium")
    return _finish(plt, fig, path, show)


def plot_transitions(est: Any, path: str, *, show: bool = False) -> str:
    """Plot a hidden Markov model's start and transition probabilities as heat maps.

    Parameters
    ----------
    est : GaussianHMM or CategoricalHMM
        Fitted.
    path : str
        File to write; its extension picks the format (PNG, SVG, ...).
    show : bool, default False
        Also open the figure in a window.

    Returns
    -------
    str
        ``path``.
    """
    plt = _pyplot(show)
    transmat = np.asarray(est.transmat_, dtype=np.float64)
    startprob = np.asarray(est.startprob_, dtype=np.float64)[None, :]
    k = transmat.shape[0]
    size = max(4.0, min(0.6 * k + 2.5, 12.0))
    fig, (top, ax) = plt.subplots(
        2, 1, figsize=(size + 1.0, size + 1.0), gridspec_kw={"height_ratios": [1, max(k, 1)]}, sharex=True
    )
    for axis, values in ((top, startprob), (ax, transmat)):
        image = axis.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        if k <= 12:
            for (i, j), value in np.ndenumerate(values):
                colour = "black" if value > 0.6 else "white"
                axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize="x-small", color=colour)
    top.set_yticks([0], labels=["start"])
    top.set_title(f"{type(est).__name__}: start and transition probabilities", fontsize="medium")
    ax.set_xlabel("to state")
    ax.set_ylabel("from state")
    ax.set_xticks(range(k) if k <= 30 else [])
    ax.set_yticks(range(k) if k <= 30 else [])
    fig.colorbar(image, ax=[top, ax], label="probability")
    return _finish(plt, fig, path, show, tight=False)


def plot_states(est: Any, rows: Rows, path: str, *, show: bool = False) -> str:
    """Plot the most probable states of consecutive rows under a hidden Markov model.

    Top: the first feature of every row (for categorical emissions, the symbol), each
    point in the colour of its decoded state; bottom: the state sequence. Sequence
    boundaries are dashed vertical lines.

    Parameters
    ----------
    est : GaussianHMM or CategoricalHMM
        Fitted; ``predict(rows.values, rows.lengths)`` decodes the rows.
    rows : Rows
        Consecutive rows from the start of the data, with their sequence lengths.
    path : str
        File to write; its extension picks the format (PNG, SVG, ...).
    show : bool, default False
        Also open the figure in a window.

    Returns
    -------
    str
        ``path``.
    """
    plt = _pyplot(show)
    states = np.asarray(est.predict(rows.values, rows.lengths), dtype=np.intp)
    k = int(np.shape(est.transmat_)[0])
    colours = component_colours(k)
    t = np.arange(rows.values.shape[0])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 5), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    top.scatter(t, rows.values[:, 0], color=colours[states], s=6, linewidths=0, gid="rows")
    top.set_ylabel("feature 0")
    bottom.step(t, states, where="mid", color="black", linewidth=1.0)
    bottom.scatter(t, states, color=colours[states], s=4, linewidths=0, gid="states")
    bottom.set_ylabel("state")
    bottom.set_yticks(range(k) if k <= 12 else [])
    bottom.set_xlabel("row")
    if rows.lengths is not None:
        for start in np.cumsum(rows.lengths)[:-1]:
            for axis in (top, bottom):
                axis.axvline(start - 0.5, color="grey", linestyle="--", linewidth=0.6)
    top.set_title(
        f"{type(est).__name__}: decoded states of the first {t.size:,} rows ({est.algorithm})", fontsize="medium"
    )
    return _finish(plt, fig, path, show)


def plot_sources(est: Any, sample: np.ndarray, path: str, *, show: bool = False) -> str:
    """Plot the learned density of every source of independent factor analysis.

    One panel per source: its mixture of Gaussians (the components dashed, their sum
    solid) over a histogram of the sampled rows' posterior source means (``transform``),
    which are shrunk towards the modes by the noise.

    Parameters
    ----------
    est : IndependentFactorAnalysis
        Fitted.
    sample : ndarray of shape (n_rows, n_features)
        The data rows whose sources are drawn.
    path : str
        File to write; its extension picks the format (PNG, SVG, ...).
    show : bool, default False
        Also open the figure in a window.

    Returns
    -------
    str
        ``path``.
    """
    plt = _pyplot(show)
    latent = np.asarray(est.transform(sample), dtype=np.float64)
    weights, means, variances = (
        np.asarray(v, dtype=np.float64) for v in (est.source_weights_, est.source_means_, est.source_variances_)
    )
    q = weights.shape[0]
    columns = min(q, 4)
    rows = -(-q // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, 3.0 * rows), squeeze=False)
    spread = 4.0 * np.sqrt(np.nanmax(variances + means**2))
    grid = np.linspace(-spread, spread, 400)
    for i, ax in enumerate(axes.ravel()):
        if i >= q:
            ax.set_visible(False)
            continue
        ax.hist(latent[:, i], bins=50, density=True, color="0.75", gid="posterior-means")
        keep = ~np.isnan(weights[i])
        parts = (
            weights[i, keep, None]
            * np.exp(-0.5 * (grid - means[i, keep, None]) ** 2 / variances[i, keep, None])
            / np.sqrt(2.0 * np.pi * variances[i, keep, None])
        )
        for part in parts:
            ax.plot(grid, part, linestyle="--", linewidth=0.8)
        ax.plot(grid, parts.sum(axis=0), color="black", linewidth=1.5, gid="density")
        ax.set_title(f"source {i}", fontsize="medium")
        ax.set_xlabel("value")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{type(est).__name__}: source densities over {sample.shape[0]:,} rows' posterior means")
    return _finish(plt, fig, path, show)


def plot_unmixing(est: Any, sample: np.ndarray, path: str, *, show: bool = False) -> str:
    """Plot the sources FastICA recovers from a data sample, each against each.

    A scatter matrix of the first (at most 4) sources of the sampled rows (``transform``):
    a histogram of each source on the diagonal, every pair below it. Independent sources
    fill axis-aligned shapes (a square for uniform sources, a cross for heavy-tailed ones);
    a rotated or elliptic cloud is a mixture left unmixed.

    Parameters
    ----------
    est : FastICA
        Fitted.
    sample : ndarray of shape (n_rows, n_features)
        The data rows whose sources are drawn.
    path : str
        File to write; its extension picks the format (PNG, SVG, ...).
    show : bool, default False
        Also open the figure in a window.

    Returns
    -------
    str
        ``path``.
    """
    plt = _pyplot(show)
    sources = np.asarray(est.transform(sample), dtype=np.float64)
    q = min(sources.shape[1], 4)
    fig, axes = plt.subplots(q, q, figsize=(2.6 * q + 1.0, 2.6 * q + 0.6), squeeze=False)
    for i in range(q):
        for j in range(q):
            ax = axes[i, j]
            if i == j:
                ax.hist(sources[:, i], bins=40, color="C0", gid=f"source-{i}")
            elif i > j:
                ax.scatter(sources[:, j], sources[:, i], s=3, alpha=0.3, linewidths=0, color="C0")
            else:
                ax.axis("off")
            if i == q - 1:
                ax.set_xlabel(f"source {j}")
            if j == 0 and i > 0:
                ax.set_ylabel(f"source {i}")
    fig.suptitle(
        f"{type(est).__name__}: {min(q, sources.shape[1])} of {sources.shape[1]} source(s) of "
        f"{sample.shape[0]:,} sampled rows",
        fontsize="medium",
    )
    return _finish(plt, fig, path, show)


@dataclass(frozen=True)
class Rows:
    """Data rows a figure draws.

    Attributes
    ----------
    values : ndarray of shape (n_rows, n_features)
    lengths : ndarray of int, optional
        The lengths of the sequences the rows form (sequence models), else None.
    """

    values: np.ndarray
    lengths: np.ndarray | None = None


@dataclass(frozen=True)
class Figure:
    """A figure ``daskem plot`` draws for the models that name it (``ModelEntry.figures``).

    Attributes
    ----------
    data : {None, "sample", "head"}
        The rows it draws: none, a uniform sample, or the first rows in order with their
        sequence lengths.
    draw : callable
        ``draw(estimator, rows, path, show) -> path``; ``rows`` is a :class:`Rows`, or
        None when ``data`` is None.
    """

    data: Literal["sample", "head"] | None
    draw: Callable[[Any, Any, str, bool], str]


#: Every figure a model can name in its registry entry, by name (its files are PREFIX-NAME.FMT).
FIGURES: dict[str, Figure] = {
    "components": Figure("sample", lambda est, rows, path, show: plot_components(est, rows.values, path, show=show)),
    "loadings": Figure(None, lambda est, rows, path, show: plot_loadings(est, path, show=show)),
    "latent": Figure("sample", lambda est, rows, path, show: plot_latent(est, rows.values, path, show=show)),
    "transitions": Figure(None, lambda est, rows, path, show: plot_transitions(est, path, show=show)),
    "states": Figure("head", lambda est, rows, path, show: plot_states(est, rows, path, show=show)),
    "unmixing": Figure("sample", lambda est, rows, path, show: plot_unmixing(est, rows.values, path, show=show)),
    "sources": Figure("sample", lambda est, rows, path, show: plot_sources(est, rows.values, path, show=show)),
}


def _finish(plt: Any, fig: Any, path: str, show: bool, *, tight: bool = True) -> str:
    if tight:  # a colorbar shared by several axes is placed by matplotlib, not by tight_layout
        fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    if show:
        plt.show()
    plt.close(fig)
    return path
