"""Model selection by BIC / AIC over a grid of Gaussian mixtures, in shared passes.

Every candidate (number of components x covariance type) is fitted by EM in the same
passes over the data (:func:`daskem.em.driver.fit_em_restarts` with one model per run):

1. one uniform sample of at most :data:`daskem.em.init.INIT_SAMPLE_ROWS` rows, on which
   each number of components gets the best of ``n_init`` k-means (k-means++ seeds and
   Lloyd, in memory) whose hard assignment starts every covariance type with that many
   components;
2. the EM iterations of all candidates, each block read once per pass for all of them
   (a candidate that converges leaves the pass);
3. one last pass for the log-likelihood of every candidate's final parameters, from
   which ``BIC = -2 log L + p log n`` and ``AIC = -2 log L + 2 p``.

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
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskem.checkpoint.checkpoint import Checkpoint, CheckpointMismatchError, UnreadableCheckpointError, fit_metadata
from daskem.em.checks import check_stats
from daskem.em.driver import fit_em_restarts
from daskem.em.init import INIT_SAMPLE_ROWS, sample_rows, weighted_kmeans
from daskem.em.runs import BatchedModel, EMResult, RestartsResult
from daskem.em.session import FitSession, resolve_split_every
from daskem.errors import ParameterError
from daskem.io.sources import as_source
from daskem.models.gaussian import COVARIANCE_TYPES, covariance_type
from daskem.models.gmm import GaussianMixtureModel, GaussianMixtureParams
from daskem.models.kmeans import KMeansModel, KMeansParams


@dataclass(frozen=True)
class Candidate:
    """One fitted candidate of a selection grid.

    Attributes
    ----------
    n_components : int
    covariance_type : str
    params : GaussianMixtureParams
        Final parameters.
    log_likelihood : float
        Total log-likelihood of the data under ``params``.
    n_parameters : int
        Free parameters of the mixture.
    bic, aic : float
        Information criteria (lower is better).
    n_iter : int
    converged : bool
    history : tuple of float
        Mean log-likelihood per sample at every EM iteration (``lower_bounds_``).
    """

    n_components: int
    covariance_type: str
    params: GaussianMixtureParams
    log_likelihood: float
    n_parameters: int
    bic: float
    aic: float
    n_iter: int
    converged: bool
    history: tuple[float, ...]


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select_mixture`.

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
    """Where a selection stands; ``select_mixture(callback=...)`` gets one after every phase.

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
        Wall-clock seconds since :func:`select_mixture` started (in this process).
    resumed_from : int
        Most iterations any candidate read back from the checkpoint (0: nothing resumed).
    best_n_components : int or None
        Number of components of the candidate with the lowest BIC so far (None before EM).
    best_covariance_type : str or None
        Its covariance type.
    best_log_likelihood : float or None
        Its mean log-likelihood per sample: during EM, of the parameters its latest pass
        evaluated; at ``"loglik"``, of its final parameters.
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


SelectionCallback = Callable[[SelectionProgress], None]


class _Progress:
    """Builds the :class:`SelectionProgress` events of one selection and hands them to the callback."""

    def __init__(self, callback: SelectionCallback | None, grid: list[tuple[int, str]], n: int, d: int, max_iter: int):
        self.callback = callback
        self.grid = grid
        self.n = n
        self.penalties = [n_parameters(k, d, ct) * np.log(n) for k, ct in grid]
        self.max_iter = max_iter
        self.start = self.last = time.perf_counter()
        self.passes = self.iteration = self.resumed_from = 0
        self.alive = len(grid)
        self.best: tuple[int | None, str | None, float | None, float | None] = (None, None, None, None)

    def emit(self, phase: str) -> None:
        now = time.perf_counter()
        event = SelectionProgress(
            phase,
            len(self.grid),
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

    def em_pass(self, passes: int, results: tuple[EMResult, ...]) -> None:
        """The engine's ``pass_callback``: one ``"em"`` event per pass."""
        self.passes = passes
        self.iteration = max(r.n_iter for r in results)
        self.resumed_from = max(r.resumed_from for r in results)
        self.alive = sum(not (r.converged or r.pruned or r.n_iter >= self.max_iter) for r in results)
        scored = [
            (-2.0 * r.history[-1].log_likelihood * self.n + penalty, i)
            for i, (r, penalty) in enumerate(zip(results, self.penalties, strict=True))
            if r.history
        ]
        if scored:
            bic, i = min(scored)
            self.best = (*self.grid[i], results[i].history[-1].log_likelihood, bic)
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
    try:
        return checkpoint.prepare(meta, compare=SELECT_COMPARED, overwrite=overwrite)
    except CheckpointMismatchError as err:
        message = str(err).replace("daskem fit --force-restart", "daskem select --force-restart")
        raise CheckpointMismatchError(message.replace("a new fit there", "a new selection there")) from None


def n_parameters(n_components: int, n_features: int, covariance: str) -> int:
    """Free parameters of a Gaussian mixture (as scikit-learn counts them for BIC)."""
    k, d = n_components, n_features
    return int(covariance_type(covariance).n_cov_parameters(k, d) + k * d + k - 1)


def _kmeans_labels(sample: np.ndarray, k: int, rng: np.random.Generator, n_init: int) -> np.ndarray:
    """Labels of the best (lowest inertia) of ``n_init`` in-memory k-means of the sample."""
    model = KMeansModel(k)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        params = KMeansParams.from_centers(weighted_kmeans(sample, np.ones(sample.shape[0]), k, rng))
        inertia = model.e_step(params, sample).inertia
        if inertia < best_inertia:
            best, best_inertia = params, inertia
    assert best is not None
    return model.predict(best, sample)


def _check_grid(n_components: Sequence[int], covariance_types: Sequence[str], n_samples: int) -> None:
    if not n_components or not covariance_types:
        raise ParameterError("The grid is empty: give at least one number of components and one covariance type.")
    for k in n_components:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ParameterError(f"Numbers of components must be ints >= 1; got {k!r}.")
        if k > n_samples:
            raise ParameterError(f"n_components={k} is more than the {n_samples} rows of the data; lower it.")
    for ct in covariance_types:
        if ct not in COVARIANCE_TYPES:
            raise ParameterError(f"Unknown covariance type {ct!r}; choose among {sorted(COVARIANCE_TYPES)}.")


def select_mixture(
    X: Any,
    n_components: Sequence[int],
    covariance_types: Sequence[str] = ("full",),
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    reg_covar: float = 1e-6,
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
    _check_grid(n_components, covariance_types, source.n_samples)
    fan_in = resolve_split_every(split_every)
    session = FitSession(source, cache=cache, split_every=fan_in)  # every pass reads through it
    grid = [(int(k), ct) for ct in covariance_types for k in n_components]
    models = [GaussianMixtureModel(k, ct, reg_covar) for k, ct in grid]
    n, d = source.n_samples, source.n_features
    # default_rng(int) seeds SeedSequence(int): the same generator as before checkpoints.
    entropy = int(random_state) if random_state is not None else int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    runs = None
    if checkpoint is not None:
        location = checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(checkpoint)
        grid_section = {
            "n_components": [int(k) for k in n_components],
            "covariance_types": list(covariance_types),
            "reg_covar": float(reg_covar),
            "n_init": int(n_init),
            "random_state": None if random_state is None else int(random_state),
            "sample_rows": INIT_SAMPLE_ROWS,
        }
        meta = {**fit_metadata(models, source, fan_in), "select": grid_section, "random": {"entropy": entropy}}
        stored = _prepare_checkpoint(location, meta, overwrite)
        entropy = int(stored["random"]["entropy"])
        runs = [location.run(i) for i in range(len(models))]
    progress = _Progress(callback, grid, n, d, max_iter)

    def starts() -> list[GaussianMixtureParams]:
        # Called by the engine only when a candidate has nothing committed; seeded, so a
        # resumed selection recomputes exactly the starts of the interrupted one.
        rng = np.random.default_rng(entropy)
        sample = sample_rows(session, INIT_SAMPLE_ROWS, rng)
        progress.emit("sample")
        labels = {k: _kmeans_labels(sample, k, rng, n_init) for k in sorted({k for k, _ in grid})}
        params = [
            model.params_from_responsibilities(sample, np.eye(k)[labels[k]])
            for model, (k, _) in zip(models, grid, strict=True)
        ]
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
    batched = BatchedModel(models[0], tuple(models))
    stats = session.stats(batched, finals)
    candidates = []
    for (k, ct), model, result, s in zip(grid, models, outcome.results, stats, strict=True):
        check_stats(s, n, model=model)
        loglik = model.log_likelihood(s)
        p = n_parameters(k, d, ct)
        candidates.append(
            Candidate(
                k,
                ct,
                result.params,
                loglik,
                p,
                -2.0 * loglik + p * np.log(n),
                -2.0 * loglik + 2.0 * p,
                result.n_iter,
                result.converged,
                tuple(record.log_likelihood for record in result.history),
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
