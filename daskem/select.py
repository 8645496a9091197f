"""Model selection by BIC / AIC over a grid of candidates fitted in shared passes.

Two grids, each named by the registry entry of its model
(:class:`daskem.registry.Selectable`, which ``daskem select`` reads; :data:`SELECTIONS`):

:func:`select_mixture`
    Gaussian mixtures, every number of components with every covariance type, scored by
    the mixture's log-likelihood (as scikit-learn's ``bic`` / ``aic``).
:func:`select_kmeans`
    k-means with every number of clusters, scored by the criterion of X-means (Pelleg &
    Moore 2000): the log-likelihood of the identical spherical Gaussians the partition
    implies (:func:`kmeans_log_likelihood`).

Every candidate is fitted by EM in the same passes over the data
(:func:`daskem.em.driver.fit_em_restarts` with one model per run):

1. one uniform sample of at most :data:`daskem.em.init.INIT_SAMPLE_ROWS` rows, on which
   each number of components gets the best of ``n_init`` k-means (k-means++ seeds and
   Lloyd, in memory): a mixture starts from its hard assignment (every covariance type
   with that many components), a k-means candidate from its centres (all of them
   centred on one reference point, so that the candidates share each centred tile of
   the E-step as restarts do);
2. the EM iterations of all candidates, each block read once per pass for all of them
   (a candidate that converges leaves the pass);
3. one last pass for the log-likelihood ``L`` of every candidate's final parameters, from
   which ``BIC = -2 log L + p log n`` and ``AIC = -2 log L + 2 p`` (lower is better), ``p``
   the candidate's free parameters and ``n`` the rows.

Progress is reported after each phase and each EM pass (:class:`SelectionProgress`,
``callback=``). With ``checkpoint=``, every candidate is run ``r`` of one engine
checkpoint (:class:`daskem.checkpoint.Checkpoint`); a selection started again on the
same location continues from the last committed pass and ends bitwise as an
uninterrupted one (the k-means starts are committed as every candidate's iteration 0,
and drawn again, from the stored seed, only when the kill came before that commit).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import ArrayLike

from daskem.checkpoint.checkpoint import Checkpoint, CheckpointMismatchError, UnreadableCheckpointError, fit_metadata
from daskem.em.checks import check_stats
from daskem.em.driver import fit_em_restarts
from daskem.em.init import INIT_SAMPLE_ROWS, data_moments, sample_rows, weighted_kmeans
from daskem.em.runs import BatchedModel, EMResult, RestartsResult
from daskem.em.session import FitSession, resolve_split_every
from daskem.errors import ParameterError
from daskem.io.sources import DataSource, as_source
from daskem.models.gaussian import COVARIANCE_TYPES, covariance_type
from daskem.models.gaussian_prior import GaussianPrior, check_prior_spec, needs_data, resolve_prior
from daskem.models.gmm import GaussianMixtureModel
from daskem.models.kmeans import KMeansModel, KMeansParams, KMeansStats, shared_reference


def _label(n_components: int, covariance: str | None) -> str:
    """``k=4 full``, or ``k=4`` for a grid without covariance types."""
    return f"k={n_components}" + (f" {covariance}" if covariance is not None else "")


@dataclass(frozen=True)
class Candidate:
    """One fitted candidate of a selection grid.

    Attributes
    ----------
    n_components : int
        Number of components (k-means: of clusters).
    covariance_type : str or None
        The mixture's covariance type (None for k-means).
    params : GaussianMixtureParams or KMeansParams
        Final parameters.
    log_likelihood : float
        Total log-likelihood of the data under ``params``, as the criterion reads it (the
        mixture's; k-means: :func:`kmeans_log_likelihood`).
    n_parameters : int
        Free parameters of the model scored.
    bic, aic : float
        Information criteria (lower is better).
    n_iter : int
    converged : bool
    history : tuple of float
        The estimator's per-sample objective at every EM iteration (``lower_bounds_``:
        the mean log-likelihood of a mixture, minus the mean squared distance for k-means).
    hyperparameters : dict
        The estimator's constructor arguments of this candidate (:class:`daskem.GaussianMixture`,
        :class:`daskem.KMeans`): what ``daskem select -o`` restores it with.
    """

    n_components: int
    covariance_type: str | None
    params: Any
    log_likelihood: float
    n_parameters: int
    bic: float
    aic: float
    n_iter: int
    converged: bool
    history: tuple[float, ...]
    hyperparameters: dict[str, Any]

    @property
    def label(self) -> str:
        """``k=4 full`` (``k=4`` without a covariance type)."""
        return _label(self.n_components, self.covariance_type)


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_mixture` or :func:`select_kmeans`.

    Attributes
    ----------
    candidates : tuple of Candidate
        In grid order (covariance type major, then number of components).
    best_bic, best_aic : Candidate
        The candidates with the lowest BIC and AIC.
    n_samples : int
    n_passes : int
        Passes over the data a selection makes from start to end, shared by every
        candidate: the sample's, one per EM iteration of the slowest candidate, the final
        pass (a resumed selection reports the count of an uninterrupted one).
    """

    candidates: tuple[Candidate, ...]
    best_bic: Candidate
    best_aic: Candidate
    n_samples: int
    n_passes: int


#: What :attr:`SelectionProgress.phase` names, in the order a selection goes through them.
PHASES = ("sample", "kmeans", "em", "loglik")


@dataclass(frozen=True)
class SelectionProgress:
    """Where a selection stands; ``callback`` gets one after every phase.

    Attributes
    ----------
    phase : {"sample", "kmeans", "em", "loglik"}
        What just ended: the uniform sample for the k-means starts was read
        (``"sample"``), the k-means starts were computed on it (``"kmeans"``), one EM pass
        over the data for every candidate still iterating (``"em"``, once per pass), or the
        last pass, for the final log-likelihoods (``"loglik"``, always the last event). A
        resumed selection skips the first two when every candidate has a committed
        iteration.
    n_candidates : int
        Candidates in the grid.
    alive : int
        Candidates still iterating (neither converged nor at ``max_iter``): all of them
        before EM, none at ``"loglik"``.
    passes : int
        Passes over the data so far, as the EM records count them: the initialisation's,
        then one per EM pass (a resumed selection counts its checkpointed passes); 0 in
        the ``"sample"`` and ``"kmeans"`` events, before EM has counted any.
    iteration : int
        EM iterations of the candidate furthest along (0 before EM).
    seconds : float
        Wall-clock seconds of this phase or pass.
    elapsed : float
        Wall-clock seconds since the selection started (in this process).
    resumed_from : int
        Most iterations any candidate read back from the checkpoint (0: nothing resumed).
    best_n_components : int or None
        Number of components of the candidate with the lowest BIC so far (None before
        EM), among those an EM pass of this process evaluated.
    best_covariance_type : str or None
        Its covariance type (None for k-means).
    best_log_likelihood : float or None
        Its log-likelihood per sample, as the criterion reads it: during EM, of the
        parameters its latest pass evaluated; at ``"loglik"``, of its final parameters.
    best_bic : float or None
        Its BIC, from that log-likelihood.
    """

    phase: str
    n_candidates: int
    alive: int
    passes: int
    iteration: int
    seconds: float
    elapsed: float
    resumed_from: int = 0
    best_n_components: int | None = None
    best_covariance_type: str | None = None
    best_log_likelihood: float | None = None
    best_bic: float | None = None

    @property
    def best_label(self) -> str | None:
        """``k=4 full`` (``k=4`` without a covariance type) of the best so far; None before EM."""
        if self.best_n_components is None:
            return None
        return _label(self.best_n_components, self.best_covariance_type)


SelectionCallback = Callable[[SelectionProgress], None]

#: One candidate of a grid: its number of components and covariance type (None for k-means).
Point = tuple[int, str | None]


class _Grid(Protocol):
    """The candidates of one selection: their models, starts, scores and estimators."""

    #: The model's name in the checkpoint's ``select`` section (its spec's ``model``).
    name: ClassVar[str]

    @property
    def n_components(self) -> tuple[int, ...]:
        """The numbers of components (k-means: of clusters) to try, as given."""
        ...

    @property
    def points(self) -> list[Point]:
        """The candidates, in grid order."""
        ...

    def models(self) -> list[Any]:
        """One model per candidate."""
        ...

    def section(self) -> dict[str, Any]:
        """The grid's own fields of the checkpoint's ``select`` section."""
        ...

    def starts(self, sample: np.ndarray, centres: dict[int, KMeansParams]) -> list[Any]:
        """The candidates' initial parameters from the sample and the best k-means of it per k."""
        ...

    def log_likelihood(self, model: Any, stats: Any) -> float:
        """The total log-likelihood the criterion scores, from a candidate's statistics."""
        ...

    def n_parameters(self, point: Point, n_features: int) -> int:
        """Free parameters of a candidate."""
        ...

    def hyperparameters(self, point: Point) -> dict[str, Any]:
        """The estimator's constructor arguments of a candidate."""
        ...


def n_parameters(n_components: int, n_features: int, covariance: str) -> int:
    """Free parameters of a Gaussian mixture (as scikit-learn counts them for BIC)."""
    k, d = n_components, n_features
    return int(covariance_type(covariance).n_cov_parameters(k, d) + k * d + k - 1)


@dataclass(frozen=True)
class _MixtureGrid:
    """Gaussian mixtures: every number of components with every covariance type."""

    n_components: tuple[int, ...]
    covariance_types: tuple[str, ...]
    reg_covar: float
    prior: Any = None
    #: Each candidate's resolved prior (:meth:`prepare`), in grid order.
    priors: tuple[GaussianPrior | None, ...] | None = None
    name: ClassVar[str] = "gmm"

    @property
    def points(self) -> list[Point]:
        return [(k, ct) for ct in self.covariance_types for k in self.n_components]

    def prepare(self, session: FitSession) -> tuple[_MixtureGrid, int]:
        """The grid with every candidate's prior resolved, and the passes that took (the data's
        mean and covariance, read once for every candidate, when the default needs them)."""
        if self.prior is None:
            return self, 0
        moments = data_moments(session) if needs_data(self.prior) else None
        d = session.source.n_features
        priors = tuple(
            resolve_prior(self.prior, str(ct), k, d, None if moments is None else (lambda: moments))
            for k, ct in self.points
        )
        return replace(self, priors=priors), int(moments is not None)

    def models(self) -> list[Any]:
        priors = self.priors or (None,) * len(self.points)
        return [
            GaussianMixtureModel(k, str(ct), self.reg_covar, prior=prior)
            for (k, ct), prior in zip(self.points, priors, strict=True)
        ]

    def section(self) -> dict[str, Any]:
        prior = self.prior if self.prior is None or isinstance(self.prior, str) else _json_prior(self.prior)
        return {
            "covariance_types": list(self.covariance_types),
            "reg_covar": float(self.reg_covar),
            # Only when set: the sections of selections without a prior stay as they were.
            **({"prior": prior} if self.prior is not None else {}),
        }

    def starts(self, sample: np.ndarray, centres: dict[int, KMeansParams]) -> list[Any]:
        # Each k's hard assignment, computed once for every covariance type.
        resp = {k: np.eye(k)[KMeansModel(k).predict(params, sample)] for k, params in centres.items()}
        return [model.params_from_responsibilities(sample, resp[model.n_components]) for model in self.models()]

    def log_likelihood(self, model: Any, stats: Any) -> float:
        # The log-likelihood, also under a prior (mclust's BIC: at the MAP estimate).
        return float(stats.loglik)

    def n_parameters(self, point: Point, n_features: int) -> int:
        return n_parameters(point[0], n_features, str(point[1]))

    def hyperparameters(self, point: Point) -> dict[str, Any]:
        out: dict[str, Any] = {"n_components": point[0], "covariance_type": point[1], "reg_covar": self.reg_covar}
        if self.priors is not None:
            prior = self.priors[self.points.index(point)]
            out["prior"] = None if prior is None else prior.to_dict()
        return out


def _json_prior(prior: Any) -> dict[str, Any]:
    return {key: np.asarray(value).tolist() for key, value in dict(prior).items()}


def kmeans_log_likelihood(counts: ArrayLike, inertia: float, n_features: int) -> float:
    """The log-likelihood X-means scores a k-means partition by (Pelleg & Moore 2000).

    The partition of ``n`` rows into ``k`` clusters of ``n_j`` rows, with sum of squared
    distances ``inertia`` to their centres, is read as a mixture of ``k`` identical
    spherical Gaussians in ``d`` dimensions with weights ``n_j / n``, every row drawn from
    its own cluster::

        sigma^2 = inertia / (d (n - k))
        log L   = sum_j n_j log(n_j / n) - (n d / 2) log(2 pi sigma^2) - d (n - k) / 2

    the last term being ``-inertia / (2 sigma^2)``; ``sigma^2`` is the common variance
    (X-means' estimate: the maximum-likelihood one with the ``k`` centres' degrees of
    freedom taken off). Its free parameters are ``p = (k - 1) + k d + 1`` (weights,
    centres, the variance), so ``BIC = -2 log L + p log n`` and ``AIC = -2 log L + 2 p``,
    lower is better, as for the mixtures.

    Parameters
    ----------
    counts : array-like of shape (k,)
        Rows in each cluster (an empty cluster adds nothing).
    inertia : float
        Sum of squared distances of the rows to their centres.
    n_features : int
        ``d``.

    Returns
    -------
    float
        ``log L`` (``+inf`` when every row lies on its centre).
    """
    n_j = np.asarray(counts, dtype=np.float64)
    n, k, d = float(n_j.sum()), n_j.size, n_features
    filled = n_j[n_j > 0]
    with np.errstate(divide="ignore"):
        spread = np.log(2.0 * np.pi * inertia / (d * (n - k)))
    return float((filled * np.log(filled / n)).sum() - 0.5 * n * d * spread - 0.5 * d * (n - k))


@dataclass(frozen=True)
class _KMeansGrid:
    """k-means with every number of clusters, scored by X-means' criterion."""

    n_components: tuple[int, ...]
    name: ClassVar[str] = "kmeans"

    @property
    def points(self) -> list[Point]:
        return [(k, None) for k in self.n_components]

    def models(self) -> list[Any]:
        return [KMeansModel(k) for k in self.n_components]

    def section(self) -> dict[str, Any]:
        return {}

    def starts(self, sample: np.ndarray, centres: dict[int, KMeansParams]) -> list[Any]:
        # One reference for every candidate: each pass's E-step shares the centred tiles.
        return shared_reference([centres[k].centers for k in self.n_components])

    def log_likelihood(self, model: Any, stats: KMeansStats) -> float:
        return kmeans_log_likelihood(stats.weight, stats.inertia, stats.sums.shape[1])

    def n_parameters(self, point: Point, n_features: int) -> int:
        k = point[0]
        return (k - 1) + k * n_features + 1

    def hyperparameters(self, point: Point) -> dict[str, Any]:
        return {"n_clusters": point[0]}


class _Progress:
    """Builds the :class:`SelectionProgress` events of one selection and hands them to the callback."""

    def __init__(
        self, callback: SelectionCallback | None, grid: _Grid, models: list[Any], n: int, d: int, max_iter: int
    ):
        self.callback = callback
        self.grid = grid
        self.points = grid.points
        self.models = models
        self.n = n
        self.penalties = [grid.n_parameters(point, d) * np.log(n) for point in self.points]
        self.max_iter = max_iter
        self.start = self.last = time.perf_counter()
        self.passes = self.iteration = self.resumed_from = 0
        self.alive = len(self.points)
        self.scores: dict[int, float] = {}  # each candidate's log L at its latest evaluated parameters
        self.best: tuple[int | None, str | None, float | None, float | None] = (None, None, None, None)

    def emit(self, phase: str) -> None:
        now = time.perf_counter()
        event = SelectionProgress(
            phase,
            len(self.points),
            self.alive,
            self.passes,
            self.iteration,
            now - self.last,
            now - self.start,
            self.resumed_from,
            *self.best,
        )
        self.last = now
        if self.callback is not None:
            self.callback(event)

    def em_pass(self, passes: int, results: tuple[EMResult, ...], stats: dict[int, Any]) -> None:
        """The engine's ``pass_callback``: one ``"em"`` event per pass."""
        self.passes = passes
        self.iteration = max(r.n_iter for r in results)
        self.resumed_from = max(r.resumed_from for r in results)
        self.alive = sum(not (r.converged or r.pruned or r.n_iter >= self.max_iter) for r in results)
        for i, s in stats.items():
            self.scores[i] = self.grid.log_likelihood(self.models[i], s)
        if self.scores:
            bic, i = min((-2.0 * loglik + self.penalties[i], i) for i, loglik in self.scores.items())
            self.best = (*self.points[i], self.scores[i] / self.n, bic)
        self.emit("em")


def _passes_made(outcome: RestartsResult) -> int:
    """Passes an uninterrupted selection makes up to the end of EM: the initialisation's,
    then one per iteration of the slowest candidate.

    Read from the records, so that a resumed selection reports what an uninterrupted one
    does (a run whose last commit was cut off by a kill redoes its pass alongside the
    others' next one, which would otherwise count one pass more).
    """
    firsts = [r.history[0].passes for r in outcome.results if r.history]
    if not firsts:
        return outcome.n_passes
    return min(firsts) - 1 + max(r.n_iter for r in outcome.results)


#: Root sections of a selection checkpoint that must match to resume it, compared in this
#: order (the grid and its settings first, so that a changed grid is named as such).
SELECT_COMPARED = ("select", "data", "config", "model")


def _prepare_checkpoint(checkpoint: Checkpoint, meta: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """Create the selection checkpoint, or check an existing one against ``meta``; the stored root."""
    if checkpoint.exists() and not overwrite:
        try:
            stored = checkpoint.metadata()
        except UnreadableCheckpointError:
            stored = None  # prepare() decides: a crash at creation, or damage
        if stored is not None and "select" not in stored:
            raise CheckpointMismatchError(
                f"The checkpoint at {checkpoint.location!r} was written by a fit (daskem fit or an estimator), not "
                "by a model selection. Choose another checkpoint location, or pass overwrite=True (daskem select "
                "--force-restart) to start a selection there."
            )
        model, wanted = (stored or {}).get("select", {}).get("model"), meta["select"]["model"]
        if stored is not None and model != wanted:
            raise CheckpointMismatchError(
                f"The checkpoint at {checkpoint.location!r} holds a selection of {model} candidates, not of "
                f"{wanted}. Choose another checkpoint location, or pass overwrite=True (daskem select "
                "--force-restart) to start this selection there."
            )
    try:
        return checkpoint.prepare(meta, compare=SELECT_COMPARED, overwrite=overwrite)
    except CheckpointMismatchError as err:
        message = str(err).replace("daskem fit --force-restart", "daskem select --force-restart")
        raise CheckpointMismatchError(message.replace("a new fit there", "a new selection there")) from None


def _best_kmeans(sample: np.ndarray, k: int, rng: np.random.Generator, n_init: int) -> KMeansParams:
    """The best (lowest inertia) of ``n_init`` in-memory k-means of the sample."""
    model = KMeansModel(k)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        params = KMeansParams.from_centers(weighted_kmeans(sample, np.ones(sample.shape[0]), k, rng))
        inertia = model.e_step(params, sample).inertia
        if inertia < best_inertia:
            best, best_inertia = params, inertia
    assert best is not None
    return best


def _check_numbers(numbers: Sequence[int], what: str, most: int, why: str) -> None:
    """Refuse an empty list, a number that is not an int >= 1, or one above ``most`` (``why``)."""
    if not numbers:
        raise ParameterError("The grid is empty: give at least one number of components.")
    for k in numbers:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ParameterError(f"Numbers of components must be ints >= 1; got {k!r}.")
        if k > most:
            raise ParameterError(f"{what}={k} is more than {why}; lower it.")


def select_mixture(
    X: Any,
    n_components: Sequence[int],
    covariance_types: Sequence[str] = ("full",),
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
    prior: Any = None,
    random_state: int | None = 0,
    n_init: int = 3,
    split_every: int | None = None,
    cache: str | bool = "auto",
    callback: SelectionCallback | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
    checkpoint_every: int = 1,
    keep_last: int = 2,
    overwrite: bool = False,
) -> Selection:
    """Fit a Gaussian mixture for every grid point in shared passes and score it by BIC/AIC.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, str or DataSource
        The data.
    n_components : sequence of int
        Numbers of components to try.
    covariance_types : sequence of str
        Covariance types to try.
    max_iter, tol, reg_covar, split_every, cache
        As for :class:`daskem.GaussianMixture`.
    prior : None, "default" or dict
        MAP-EM under mclust's conjugate prior, as :class:`daskem.GaussianMixture`'s
        ``prior``: each candidate gets its own (mclust's ``defaultPrior`` depends on the
        number of components and the covariance type), all from the data's mean and
        covariance, read in one more pass when the default needs them. The criteria score
        the log-likelihood at the MAP estimates, as mclust's BIC does.
    random_state : int or None
        Seed of the sample and of the k-means starts (None: fresh entropy, which a
        checkpoint stores so that a resumed selection draws the same starts).
    n_init : int
        k-means runs on the sample per number of components; the lowest inertia starts EM.
    callback : callable, optional
        Called as ``callback(progress)`` with a :class:`SelectionProgress` after the
        sample, after the k-means starts, after every EM pass (candidates still
        iterating, the best by BIC so far, iteration, seconds) and after the final
        log-likelihood pass.
    checkpoint : str, os.PathLike or Checkpoint, optional
        Zarr location (path or fsspec URL) to checkpoint into: candidate ``r`` of the grid
        (covariance type major, then number of components) is run ``r``, committed after
        the passes as ``checkpoint_every`` says. If it holds a checkpoint of the same grid
        (numbers of components, covariance types, ``reg_covar``, ``n_init``,
        ``random_state``), data and ``split_every``, the selection resumes from the last
        committed pass and ends bitwise as an uninterrupted one would; a checkpoint of
        anything else raises :class:`daskem.checkpoint.CheckpointMismatchError` naming the
        first differing field. The k-means starts are committed as iteration 0 of every
        candidate. A changed ``max_iter`` or ``tol`` applies from the committed pass on
        (as for a resumed fit).
    checkpoint_every : int
        Commit every ``checkpoint_every`` iterations (and always a candidate's last).
    keep_last : int
        Committed iterations kept per candidate.
    overwrite : bool
        Discard an existing checkpoint at ``checkpoint`` and start afresh.

    Returns
    -------
    Selection

    Raises
    ------
    ParameterError
        The grid is empty or names a bad number of components or covariance type.
    CheckpointMismatchError
        ``checkpoint`` holds a checkpoint of another grid, other data or a fit.
    """
    source = as_source(X)
    n = source.n_samples
    _check_numbers(n_components, "n_components", n, f"the {n} rows of the data")
    if not covariance_types:
        raise ParameterError("The grid is empty: give at least one covariance type.")
    for ct in covariance_types:
        if ct not in COVARIANCE_TYPES:
            raise ParameterError(f"Unknown covariance type {ct!r}; choose among {sorted(COVARIANCE_TYPES)}.")
    check_prior_spec("select_mixture", prior)
    grid = _MixtureGrid(tuple(int(k) for k in n_components), tuple(covariance_types), float(reg_covar), prior)
    return _select(
        source,
        grid,
        max_iter=max_iter,
        tol=tol,
        random_state=random_state,
        n_init=n_init,
        split_every=split_every,
        cache=cache,
        callback=callback,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        overwrite=overwrite,
    )


def select_kmeans(
    X: Any,
    n_clusters: Sequence[int],
    *,
    max_iter: int = 300,
    tol: float = 1e-4,
    random_state: int | None = 0,
    n_init: int = 3,
    split_every: int | None = None,
    cache: str | bool = "auto",
    callback: SelectionCallback | None = None,
    checkpoint: str | os.PathLike[str] | Checkpoint | None = None,
    checkpoint_every: int = 1,
    keep_last: int = 2,
    overwrite: bool = False,
) -> Selection:
    """Fit k-means for every number of clusters in shared passes and score it by X-means' BIC/AIC.

    Each candidate starts from the best of ``n_init`` k-means of one uniform sample and
    runs Lloyd's iterations over all the data (as :class:`daskem.KMeans` from those
    centres), every candidate in the same passes. It is scored by the criterion of
    X-means (Pelleg & Moore 2000), the BIC of the identical spherical Gaussian mixture its
    partition implies: ``sigma^2 = inertia / (d (n - k))``,
    ``log L = sum_j n_j log(n_j / n) - (n d / 2) log(2 pi sigma^2) - d (n - k) / 2`` and
    ``p = (k - 1) + k d + 1`` (:func:`kmeans_log_likelihood`); ``BIC = -2 log L + p log n``,
    ``AIC = -2 log L + 2 p``, lower is better.

    Parameters
    ----------
    X : array-like, dask array, zarr.Array, str or DataSource
        The data.
    n_clusters : sequence of int
        Numbers of clusters to try, each below the number of rows.
    max_iter, tol, split_every, cache
        As for :class:`daskem.KMeans`.
    random_state, n_init, callback, checkpoint, checkpoint_every, keep_last, overwrite
        As for :func:`select_mixture` (the grid a checkpoint must match: the numbers of
        clusters, ``n_init`` and ``random_state``).

    Returns
    -------
    Selection
        Its candidates have ``covariance_type`` None and ``n_components`` the number of
        clusters.

    Raises
    ------
    ParameterError
        The grid is empty or names a bad number of clusters.
    CheckpointMismatchError
        ``checkpoint`` holds a checkpoint of another grid, other data or a fit.
    """
    source = as_source(X)
    n = source.n_samples
    _check_numbers(n_clusters, "n_clusters", n - 1, f"{n - 1}: the variance needs more rows ({n}) than clusters")
    return _select(
        source,
        _KMeansGrid(tuple(int(k) for k in n_clusters)),
        max_iter=max_iter,
        tol=tol,
        random_state=random_state,
        n_init=n_init,
        split_every=split_every,
        cache=cache,
        callback=callback,
        checkpoint=checkpoint,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        overwrite=overwrite,
    )


def _select(
    source: DataSource,
    grid: _Grid,
    *,
    max_iter: int,
    tol: float,
    random_state: int | None,
    n_init: int,
    split_every: int | None,
    cache: str | bool,
    callback: SelectionCallback | None,
    checkpoint: str | os.PathLike[str] | Checkpoint | None,
    checkpoint_every: int,
    keep_last: int,
    overwrite: bool,
) -> Selection:
    """Fit and score ``grid``'s candidates in shared passes (the body of every selection)."""
    fan_in = resolve_split_every(split_every)
    session = FitSession(source, cache=cache, split_every=fan_in)  # every pass reads through it
    prepare = getattr(grid, "prepare", None)
    if prepare is not None:  # a mixture grid's priors (its pass counts as the session's)
        grid, _ = prepare(session)
    points = grid.points
    models = grid.models()
    n, d = source.n_samples, source.n_features
    # default_rng(int) seeds SeedSequence(int): the same generator as before checkpoints.
    entropy = int(random_state) if random_state is not None else int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    runs = None
    if checkpoint is not None:
        location = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(checkpoint)
        section = {
            "model": grid.name,
            "n_components": list(grid.n_components),
            **grid.section(),
            "n_init": int(n_init),
            "random_state": None if random_state is None else int(random_state),
            "sample_rows": INIT_SAMPLE_ROWS,
        }
        meta = {**fit_metadata(models, source, fan_in), "select": section, "random": {"entropy": entropy}}
        stored = _prepare_checkpoint(location, meta, overwrite)
        entropy = int(stored["random"]["entropy"])
        runs = [location.run(i) for i in range(len(models))]
    progress = _Progress(callback, grid, models, n, d, max_iter)

    def starts() -> list[Any]:
        # Called by the engine only when a candidate has nothing committed; seeded, so a
        # resumed selection recomputes exactly the starts of the interrupted one.
        rng = np.random.default_rng(entropy)
        sample = sample_rows(session, INIT_SAMPLE_ROWS, rng)
        progress.emit("sample")
        centres = {k: _best_kmeans(sample, k, rng, n_init) for k in sorted(set(grid.n_components))}
        params = grid.starts(sample, centres)
        progress.emit("kmeans")
        return params

    outcome = fit_em_restarts(
        models,
        session,
        starts,
        max_iter=max_iter,
        tol=tol,
        checkpoint=runs,
        checkpoint_every=checkpoint_every,
        keep_last=keep_last,
        pass_callback=progress.em_pass,
    )
    finals = tuple(r.params for r in outcome.results)
    stats = session.stats(BatchedModel(models[0], tuple(models)), finals)
    candidates = []
    for point, model, result, s in zip(points, models, outcome.results, stats, strict=True):
        check_stats(s, n, model=model)
        loglik = grid.log_likelihood(model, s)
        p = grid.n_parameters(point, d)
        candidates.append(
            Candidate(
                *point,
                result.params,
                loglik,
                p,
                -2.0 * loglik + p * np.log(n),
                -2.0 * loglik + 2.0 * p,
                result.n_iter,
                result.converged,
                tuple(record.log_likelihood for record in result.history),
                grid.hyperparameters(point),
            )
        )
    best_bic = min(candidates, key=lambda c: c.bic)
    n_passes = _passes_made(outcome) + 1
    progress.passes, progress.alive = n_passes, 0
    progress.iteration = max(c.n_iter for c in candidates)
    progress.resumed_from = max(r.resumed_from for r in outcome.results)
    progress.best = (best_bic.n_components, best_bic.covariance_type, best_bic.log_likelihood / n, best_bic.bic)
    progress.emit("loglik")
    return Selection(
        candidates=tuple(candidates),
        best_bic=best_bic,
        best_aic=min(candidates, key=lambda c: c.aic),
        n_samples=n,
        n_passes=n_passes,
    )


#: The selections :class:`daskem.registry.Selectable` names: each is called as
#: ``selection(X, numbers_of_components, **keywords)`` and returns a :class:`Selection`.
SELECTIONS: dict[str, Callable[..., Selection]] = {"mixture": select_mixture, "kmeans": select_kmeans}
