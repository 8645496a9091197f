"""Initial parameters without loading the data into memory.

Methods (scikit-learn's ``init_params`` names), for models that build parameters from
responsibilities (``params_from_responsibilities`` / ``stats_from_responsibilities``):

``"kmeans"``
    k-means over all the data without loading it: k-means|| (:func:`kmeans_parallel`,
    at most 6 passes) then at most :data:`KMEANS_INIT_ITER` Lloyd passes; components
    start from the hard assignment to the final centres (one more pass).
``"k-means++"``
    k-means++ seeding on a uniform random sample of at most :data:`INIT_SAMPLE_ROWS`
    rows; each component starts at one seed.
``"random_from_data"``
    ``n_components`` distinct rows drawn uniformly; each component starts at one row.
``"random"``
    Uniform random responsibilities for every row, in one pass over the blocks
    (each block draws from its own ``SeedSequence`` child, so the result does not
    depend on scheduling).

scikit-learn's draws (``"random"``, ``"random_from_data"``): given a legacy
:class:`numpy.random.RandomState` (``random_state=`` of :func:`initial_params`; the
estimators pass ``RandomState(seed)`` for data held in memory, :func:`sklearn_random_state`),
the initialisations draw exactly what scikit-learn's ``BaseMixture._initialize_parameters``
draws from ``check_random_state(seed)``, in order, one initialisation after the other
(:func:`sklearn_responsibilities`): ``uniform(size=(n_samples, n_components))`` normalised
by rows, or ``choice(n_samples, size=n_components, replace=False)`` as one-hot
responsibilities. A fit on a NumPy array with an integer ``random_state`` then starts where
scikit-learn's starts. For data not in memory the draws stay the ones above: scikit-learn's
are one sequential Mersenne-Twister stream of ``n_samples x n_components`` uniforms (or a
permutation of all ``n_samples`` rows) that no block can draw its own part of, so
reproducing them would take driver memory and transfers proportional to the rows.

Several initialisations (``n_init``) are computed together: every pass over the data
serves all of them. Every read goes through the fit's
:class:`daskem.em.session.FitSession` (its cached or streamed blocks, its pass count).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from daskem.em.checks import check_stats, nonfinite_error
from daskem.em.driver import fit_em_restarts
from daskem.em.runs import BatchedModel
from daskem.em.session import Cache, FitSession, as_session
from daskem.errors import DataError, NumericalError
from daskem.models.base import count_infinite, count_nonfinite, dense_rows, split_weights
from daskem.models.kmeans import KMeansModel, KMeansParams, rounding_bound, shared_reference

INIT_METHODS = ("kmeans", "k-means++", "random", "random_from_data")

#: Magnitude beyond which squared distances overflow float64 (divided by sqrt(n_features)).
OVERFLOW_LIMIT = float(np.sqrt(np.finfo(np.float64).max)) / 4.0

#: Largest row sample the in-memory initialisers ("kmeans", "k-means++") read.
INIT_SAMPLE_ROWS = 100_000

#: Most Lloyd passes of the "kmeans" initialiser after its k-means|| start.
KMEANS_INIT_ITER = 10


def sample_rows(data: Any, size: int, rng: np.random.Generator, *, allow_missing: bool = False) -> np.ndarray:
    """A uniform random sample of ``size`` distinct rows, in data order, as NumPy.

    Only the sampled rows are held in memory; only the blocks holding them are read, from
    the session's blocks (:meth:`daskem.em.session.FitSession.rows`: persisted blocks are
    not read again; a sample touching more than half of the blocks counts as a pass).
    ``data`` is a :class:`daskem.em.session.FitSession`, or data to read once, uncached.
    NaN or infinite values are refused, or with ``allow_missing`` infinite ones only
    (NaN are missing values, kept).
    """
    session = data if isinstance(data, FitSession) else FitSession(data, cache=False)
    n = session.source.n_samples
    index = np.arange(n) if size >= n else np.sort(rng.choice(n, size=size, replace=False))
    rows = np.asarray(session.rows(index), dtype=np.float64)
    bad = count_infinite(rows) if allow_missing else count_nonfinite(rows)
    if bad:
        raise nonfinite_error(bad, rows.shape[0], where=" of the initialisation sample")
    largest = float(np.nanmax(np.abs(rows), initial=0.0))
    if largest > OVERFLOW_LIMIT / np.sqrt(max(rows.shape[1], 1)):
        raise NumericalError(
            f"X holds values up to {largest:.3g}: their squared distances overflow float64. Scale the features "
            "(e.g. standardise them) before fitting."
        )
    return rows


def _squared_distances(X: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Squared distances of every row of ``X`` to every row of ``points``: shape (m, n)."""
    diff = X[None, :, :] - points[:, None, :]
    return np.einsum("mnd,mnd->mn", diff, diff)


def kmeans_plusplus(
    X: np.ndarray, n_clusters: int, rng: np.random.Generator, weights: np.ndarray | None = None
) -> np.ndarray:
    """Indices of ``n_clusters`` k-means++ seeds among the rows of ``X``.

    D^2 sampling with greedy local trials (``2 + log k`` candidates per seed, the one
    that lowers the potential most is kept), as scikit-learn seeds. With ``weights``,
    row ``i`` counts ``weights[i]`` times (k-means|| reclusters its weighted candidates
    this way).
    """
    n = X.shape[0]
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    trials = 2 + int(np.log(n_clusters))
    chosen = [int(rng.choice(n, p=w / w.sum()))]
    closest = _squared_distances(X, X[chosen])[0]
    potential = float(w @ closest)
    for _ in range(1, n_clusters):
        if potential <= 0.0:  # every row already is a seed: fewer distinct rows than seeds
            chosen.append(int(rng.choice(n, p=w / w.sum())))
            continue
        picks = np.searchsorted(np.cumsum(w * closest), rng.uniform(size=trials) * potential)
        picks = np.minimum(picks, n - 1)
        candidate = np.minimum(closest, _squared_distances(X, X[picks]))
        potentials = candidate @ w
        best = int(np.argmin(potentials))
        chosen.append(int(picks[best]))
        closest, potential = candidate[best], float(potentials[best])
    return np.asarray(chosen)


def weighted_kmeans(
    X: np.ndarray, weights: np.ndarray, n_clusters: int, rng: np.random.Generator, *, max_iter: int = 300
) -> np.ndarray:
    """Centres of a weighted k-means of in-memory rows: k-means++ seeds, then Lloyd iterations.

    The recluster step of k-means||: ``X`` are its candidates, ``weights`` the rows
    nearest each. Lloyd's iterations are those of :class:`daskem.models.KMeansModel`
    (scikit-learn's ``tol=1e-4`` convergence test).
    """
    model = KMeansModel(n_clusters, weighted=True)
    rows = np.column_stack([X, weights])
    params = KMeansParams.from_centers(X[kmeans_plusplus(X, n_clusters, rng, weights)])
    for _ in range(max_iter):
        stats = model.e_step(params, rows)
        new = model.m_step(stats, params)
        done = model.converged(stats, params, new, 1e-4)
        params = new
        if done:
            break
    return params.centers


@dataclass(frozen=True)
class _Oversample:
    """Reduction of a k-means|| sampling pass: per run, the data's cost and its top-``size`` keys.

    A run's statistic is ``(cost, rows, n_nonfinite)`` with ``rows`` of columns ``[key, x]``: the
    Efraimidis-Spirakis keys ``log(u) / (w d^2)`` of a weighted sample without replacement
    (mergeable: the ``size`` largest keys of the union are those of the union's sample).
    """

    size: int

    def combine(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(
            (ca + cb, _top_keys(np.concatenate([ra, rb]), self.size), na + nb)
            for (ca, ra, na), (cb, rb, nb) in zip(a, b, strict=True)
        )


def _top_keys(rows: np.ndarray, size: int) -> np.ndarray:
    if rows.shape[0] > size:
        rows = rows[np.argpartition(-rows[:, 0], size - 1)[:size]]
    return rows[np.argsort(-rows[:, 0], kind="stable")]


def _nearest(model: KMeansModel, centers: np.ndarray, block: np.ndarray):  # type: ignore[no-untyped-def]
    """Tiles of ``block`` assigned to ``centers`` (see :meth:`KMeansModel.assign_tiles`).

    Non-finite data give NaN distances without warnings; callers count them.
    """
    m = KMeansModel(centers.shape[0], model.weighted)
    params = KMeansParams.from_centers(centers)
    with np.errstate(invalid="ignore", over="ignore"):
        for xs, w, labels, dist in m.assign_tiles(params, block):
            # A row equal to a candidate is at distance 0, not at the expansion's rounding.
            dist[dist <= rounding_bound(xs, labels, params)] = 0.0
            yield xs, w, labels, dist


def _oversample_block(
    reducer: _Oversample, runs: tuple[tuple[KMeansModel, np.ndarray], ...], block: np.ndarray, seeds: tuple[Any, ...]
) -> tuple[Any, ...]:
    out = []
    for (model, centers), seed in zip(runs, seeds, strict=True):
        rng = np.random.default_rng(seed)
        d = centers.shape[1]
        cost, rows, start, bad = 0.0, [np.zeros((0, d + 1))], 0, 0
        for xs, w, _, dist in _nearest(model, centers, block):
            if count_nonfinite(xs):  # centring can overflow finite data: count the raw rows
                bad += count_nonfinite(block[start : start + xs.shape[0], :d])
            mass = dist if w is None else w * dist
            cost += float(mass.sum(dtype=np.float64))
            with np.errstate(divide="ignore"):
                keys = np.log1p(-rng.uniform(size=xs.shape[0])) / mass
            keep = np.flatnonzero(mass > 0.0)
            if keep.size > reducer.size:
                keep = keep[np.argpartition(-keys[keep], reducer.size - 1)[: reducer.size]]
            tile = np.empty((keep.size, d + 1))
            tile[:, 0], tile[:, 1:] = keys[keep], dense_rows(block[start + keep, :d])
            rows.append(tile)
            start += xs.shape[0]
        out.append((cost, _top_keys(np.concatenate(rows), reducer.size), bad))
    return tuple(out)


@dataclass(frozen=True)
class _Counts:
    """Reduction of the k-means|| weighting pass: per run, the weight nearest each candidate."""

    def combine(self, a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        return tuple(x + y for x, y in zip(a, b, strict=True))


def _count_block(
    reducer: _Counts, runs: tuple[tuple[KMeansModel, np.ndarray], ...], block: np.ndarray
) -> tuple[np.ndarray, ...]:
    out = []
    for model, centers in runs:
        counts = np.zeros(centers.shape[0])
        for _, w, labels, _ in _nearest(model, centers, block):
            counts += np.bincount(labels, weights=w, minlength=centers.shape[0])
        out.append(counts)
    return tuple(out)


#: Sampling rounds of k-means|| (Bahmani et al. recommend about 5).
KMEANS_PARALLEL_ROUNDS = 5

#: Rows sampled per round of k-means||, as a multiple of the number of clusters.
KMEANS_PARALLEL_OVERSAMPLING = 2.0


def kmeans_parallel(
    data: Any,
    n_clusters: int,
    rngs: Sequence[np.random.Generator],
    *,
    weighted: bool = False,
    rounds: int = KMEANS_PARALLEL_ROUNDS,
    oversampling: float = KMEANS_PARALLEL_OVERSAMPLING,
    split_every: int | None = None,
) -> list[np.ndarray]:
    """k-means|| initial centres (Bahmani et al. 2012), one set per generator in ``rngs``.

    One uniformly drawn row starts each run's candidate set. Each of ``rounds`` passes
    over the blocks then adds ``oversampling * n_clusters`` rows drawn with probability
    proportional to ``w d^2`` (their weighted squared distance to the candidates so far)
    by a mergeable weighted sample without replacement, and measures the data's cost.
    One more pass counts the (weighted) rows nearest each candidate, and a weighted
    k-means++ with Lloyd iterations (:func:`weighted_kmeans`) reduces the candidates to
    ``n_clusters`` centres. All runs share every pass: ``rounds + 1`` passes in all
    (fewer if the candidates cover the data).

    Parameters
    ----------
    data : FitSession, DataSource or array-like
        The fit's session (:class:`daskem.em.session.FitSession`), or data to open one on
        (with the sample weights as last column when ``weighted``).
    n_clusters : int
        Centres per run.
    rngs : sequence of numpy.random.Generator
        One source of randomness per run.
    weighted : bool
        Whether the last column holds sample weights.
    rounds : int
        Sampling passes.
    oversampling : float
        Rows sampled per round per cluster.
    split_every : int, optional
        Reduction fan-in (of a session opened here).

    Returns
    -------
    list of ndarray of shape (n_clusters, n_features)
    """
    session = as_session(data, split_every=split_every)
    model = KMeansModel(n_clusters, weighted)
    d = session.source.n_features - int(weighted)
    candidates = [sample_rows(session, 1, rng)[:, :d] for rng in rngs]
    reducer = _Oversample(max(1, int(np.ceil(oversampling * n_clusters))))
    n_blocks = len(session.blocks())
    for _ in range(rounds):
        seeds = [np.random.SeedSequence(int(rng.integers(2**63))).spawn(n_blocks) for rng in rngs]
        runs = tuple((model, c) for c in candidates)
        per_block = [(tuple(s[i] for s in seeds),) for i in range(n_blocks)]
        sampled = session.stats(reducer, runs, block_fn=_oversample_block, block_args=per_block)
        if sampled[0][2]:
            raise nonfinite_error(sampled[0][2], session.source.n_samples)
        if all(rows.shape[0] == 0 for _, rows, _ in sampled):
            break  # every row is a candidate already
        candidates = [np.concatenate([c, rows[:, 1:]]) for c, (_, rows, _) in zip(candidates, sampled, strict=True)]
    counts = session.stats(_Counts(), tuple((model, c) for c in candidates), block_fn=_count_block)
    return [weighted_kmeans(c, w, n_clusters, rng) for c, w, rng in zip(candidates, counts, rngs, strict=True)]


def sklearn_random_state(rngs: Sequence[np.random.Generator]) -> np.random.RandomState:
    """The legacy generator scikit-learn would draw from, for the fit whose generators are ``rngs``.

    The estimators' generators are ``default_rng(SeedSequence(seed).spawn(n_init)[i])``
    (``seed`` is ``random_state`` itself when it is an int, the checkpoint's stored entropy
    on a resume); this is ``RandomState(seed)``, which is
    ``sklearn.utils.check_random_state(seed)`` for an int.
    """
    seed_seq = rngs[0].bit_generator.seed_seq
    entropy = getattr(seed_seq, "entropy", None)
    if not isinstance(entropy, int):
        raise ValueError("The generators do not come from one integer seed.")
    return np.random.RandomState(entropy % 2**32 if entropy >= 2**32 else entropy)


def sklearn_draw(method: str, n_samples: int, n_components: int, random_state: np.random.RandomState) -> np.ndarray:
    """One initialisation's draw, as scikit-learn's ``_initialize_parameters`` makes it.

    Parameters
    ----------
    method : {"random", "random_from_data"}
        ``init_params``.
    n_samples, n_components : int
        The rows and components.
    random_state : numpy.random.RandomState
        Advanced by the draw (initialisations draw one after the other from it).

    Returns
    -------
    ndarray
        ``"random"``: responsibilities (n_samples, n_components), float64; ``"random_from_data"``:
        the ``n_components`` row indices, component ``j`` starting at row ``indices[j]``.
    """
    if method == "random":
        resp = np.asarray(random_state.uniform(size=(n_samples, n_components)), dtype=np.float64)
        resp /= resp.sum(axis=1)[:, np.newaxis]
        return resp
    if method == "random_from_data":
        return np.asarray(random_state.choice(n_samples, size=n_components, replace=False))
    raise ValueError(f"scikit-learn's draws are for 'random' and 'random_from_data'; got {method!r}.")


def sklearn_responsibilities(
    method: str,
    n_samples: int,
    n_components: int,
    random_state: np.random.RandomState,
    dtype: Any = np.float64,
) -> np.ndarray:
    """scikit-learn's initial responsibilities for ``init_params`` ``"random"`` or ``"random_from_data"``.

    Call it once per initialisation, in order, on one ``RandomState`` (scikit-learn's
    ``check_random_state(random_state)``, made once per fit) to get what scikit-learn's
    ``GaussianMixture`` / ``BayesianGaussianMixture`` start from with ``n_init > 1``.

    Parameters
    ----------
    method : {"random", "random_from_data"}
        ``init_params``.
    n_samples, n_components : int
        The rows and components.
    random_state : numpy.random.RandomState
        The fit's generator (advanced by the draw).
    dtype : numpy dtype, default=float64
        The data's dtype (scikit-learn draws in float64 and casts, then normalises in it).

    Returns
    -------
    ndarray of shape (n_samples, n_components)
    """
    if method == "random":
        resp = np.asarray(random_state.uniform(size=(n_samples, n_components)), dtype=dtype)
        resp /= resp.sum(axis=1)[:, np.newaxis]
        return resp
    indices = sklearn_draw(method, n_samples, n_components, random_state)
    resp = np.zeros((n_samples, n_components), dtype=dtype)
    resp[indices, np.arange(n_components)] = 1
    return resp


def _sklearn_initial_params(
    model: Any, session: FitSession, method: str, n_init: int, random_state: np.random.RandomState
) -> list[Any]:
    """The initialisations scikit-learn's draws give (see the module), weights ``nk / n`` as its."""
    n, k = session.source.n_samples, model.n_components
    out = []
    if method == "random":
        rows = np.asarray(session.rows(np.arange(n)), dtype=np.float64)  # the data are in memory: one read
        bad = count_nonfinite(rows)
        if bad:
            raise nonfinite_error(bad, n)
        shift = rows[: min(1024, n)].mean(axis=0)
        for _ in range(n_init):
            resp = sklearn_draw(method, n, k, random_state)
            stats = model.stats_from_responsibilities(rows, resp, shift)
            check_stats(stats, n, model=model)
            out.append(_sklearn_weights(model.m_step(stats, None), stats.resp_sum, n))
        return out
    gram = None
    if getattr(model, "covariance_type", None) == "tied":
        # scikit-learn's tied covariance is (X^T X - sum_k nk mu_k mu_k^T) / sum_k nk over every
        # row, whatever its responsibilities: from one-hot rows, the other rows' scatter. Reproduced.
        every = sample_rows_at(session, np.arange(n))
        gram = every.T @ every
    for _ in range(n_init):
        indices = sklearn_draw(method, n, k, random_state)
        order = np.argsort(indices)
        picked = sample_rows_at(session, indices[order])
        rows = np.empty_like(picked)
        rows[order] = picked
        params = model.params_from_responsibilities(rows, np.eye(k))
        if gram is not None:
            nk = np.ones(k) + 10.0 * np.finfo(np.float64).eps
            covariance = gram - (nk[:, None] * params.means).T @ params.means
            covariance = covariance / nk.sum()
            covariance.flat[:: covariance.shape[0] + 1] += model.reg_covar
            from dataclasses import replace

            from daskem.models.gaussian import covariance_type

            chol = covariance_type("tied").precision_cholesky(covariance, model.reg_covar)
            params = replace(params, covariances=covariance, precisions_cholesky=chol)
        out.append(_sklearn_weights(params, np.ones(k), n))
    return out


def _sklearn_weights(params: Any, resp_sum: np.ndarray, n_samples: int) -> Any:
    """``params`` with scikit-learn's initial weights ``(r_k + 10 eps) / n_samples``."""
    from dataclasses import replace

    return replace(params, weights=(resp_sum + 10.0 * np.finfo(np.float64).eps) / n_samples)


def sample_rows_at(session: FitSession, index: np.ndarray) -> np.ndarray:
    """The rows at sorted ``index`` as float64 NumPy, refused if not finite (as :func:`sample_rows`)."""
    rows = np.asarray(session.rows(index), dtype=np.float64)
    bad = count_nonfinite(rows)
    if bad:
        raise nonfinite_error(bad, rows.shape[0], where=" of the initialisation sample")
    return rows


@dataclass(frozen=True)
class _Moments:
    """Reduction of the data's moments: per part ``(rows, mean, scatter around it, non-finite)``,
    merged by Chan et al.'s pairwise rule (each part centred on its own mean: no cancellation)."""

    def combine(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        (na, ma, sa, ba), (nb, mb, sb, bb) = a, b
        if na == 0.0 or nb == 0.0:
            return (na + nb, ma if nb == 0.0 else mb, sa if nb == 0.0 else sb, ba + bb)
        n = na + nb
        delta = mb - ma
        return (n, ma + delta * (nb / n), sa + sb + np.outer(delta, delta) * (na * nb / n), ba + bb)


def _moments_block(reducer: _Moments, params: Any, block: np.ndarray) -> tuple[Any, ...]:
    d = block.shape[1]
    out: tuple[Any, ...] = (0.0, np.zeros(d), np.zeros((d, d)), 0)
    step = max(64, (1 << 19) // max(d, 1))
    for start in range(0, block.shape[0], step):  # tiles bound the float64 copies
        rows = np.asarray(dense_rows(block[start : start + step]), dtype=np.float64)
        with np.errstate(invalid="ignore", over="ignore"):  # non-finite rows are counted, and refused by the caller
            mean = rows.mean(axis=0)
            centred = rows - mean
            out = reducer.combine(out, (float(rows.shape[0]), mean, centred.T @ centred, count_nonfinite(rows)))
    return out


def data_moments(data: Any) -> tuple[np.ndarray, np.ndarray]:
    """The data's mean and sample covariance (denominator ``n - 1``, R's ``var``): one counted pass.

    Each tile's moments are taken around its own mean and merged pairwise (Chan, Golub &
    LeVeque), so data far from the origin lose nothing to cancellation. For mclust's
    default prior (:func:`daskem.models.gaussian_prior.default_prior`).

    Parameters
    ----------
    data : FitSession, DataSource or array-like
        The fit's session, or data to open one on.

    Returns
    -------
    mean : ndarray of shape (d,)
    covariance : ndarray of shape (d, d)

    Raises
    ------
    DataError
        The data hold NaN or infinite values.
    """
    session = as_session(data)
    n, mean, scatter, bad = session.stats(_Moments(), None, block_fn=_moments_block)
    if bad:
        raise nonfinite_error(int(bad), session.source.n_samples)
    covariance = scatter / max(n - 1.0, 1.0)
    return np.asarray(mean), 0.5 * (covariance + covariance.T)


def _random_block_stats(
    batched: BatchedModel, shift: np.ndarray, block: np.ndarray, seeds: tuple[np.random.SeedSequence, ...]
) -> tuple[Any, ...]:
    out = []
    for seed in seeds:
        resp = np.random.default_rng(seed).uniform(size=(block.shape[0], batched.model.n_components))
        resp /= resp.sum(axis=1, keepdims=True)
        out.append(batched.model.stats_from_responsibilities(block, resp, shift))
    return tuple(out)


def _hard_block_stats(
    batched: BatchedModel, centers: tuple[np.ndarray, ...], block: np.ndarray, weighted: bool
) -> tuple[Any, ...]:
    model = batched.model
    out = []
    for c in centers:
        labels = KMeansModel(c.shape[0], weighted=weighted).predict(KMeansParams.from_centers(c), block)
        resp = np.zeros((block.shape[0], c.shape[0]))
        resp[np.arange(block.shape[0]), labels] = 1.0
        out.append(model.stats_from_responsibilities(block, resp, c.mean(axis=0)))
    return tuple(out)


def _weighted_seeds(model: Any, session: FitSession, method: str, sample_size: int, rng: np.random.Generator) -> Any:
    """``"k-means++"`` or ``"random_from_data"`` parameters from rows of a sample drawn by their weights
    (the sample's last column; see :func:`initial_params`)."""
    k = model.n_components
    sample = sample_rows(session, sample_size, rng)
    x, w = split_weights(sample, True)
    if np.count_nonzero(w) < k:
        raise DataError(
            f"init_params={method!r} draws {k} rows of positive weight but its sample of {w.size} rows holds "
            f"{np.count_nonzero(w)}. Give more rows positive weight, or use init_params='kmeans'."
        )
    if method == "k-means++":
        picks = kmeans_plusplus(x, k, rng, w)
    else:
        picks = rng.choice(w.size, size=k, replace=False, p=w / w.sum())
    return replace(model, weighted=False).params_from_responsibilities(x[picks], np.eye(k))


def _checked(stats: Sequence[Any], session: FitSession, model: Any) -> Sequence[Any]:
    for s in stats:
        check_stats(s, session.source.n_samples, model=model)
    return stats


def kmeans_centers(
    data: Any,
    n_clusters: int,
    rngs: Sequence[np.random.Generator],
    *,
    max_iter: int = KMEANS_INIT_ITER,
    split_every: int | None = None,
    weighted: bool = False,
) -> list[np.ndarray]:
    """k-means centres for each generator: k-means|| then up to ``max_iter`` Lloyd passes.

    Never loads the data: every step is a pass over the blocks shared by all runs.
    ``data`` is the fit's :class:`daskem.em.session.FitSession`, or data to open one on
    (with ``split_every``). ``weighted``: the data's last column holds the sample weights.
    """
    session = as_session(data, split_every=split_every)
    starts = kmeans_parallel(session, n_clusters, rngs, weighted=weighted)
    lloyd = KMeansModel(n_clusters, weighted=weighted)
    outcome = fit_em_restarts(lloyd, session, shared_reference(starts), max_iter=max_iter, tol=1e-4)
    return [r.params.centers for r in outcome.results]


def max_init_passes(method: str, n_init: int) -> int:
    """The most passes over the data :func:`initial_params` makes with ``method`` (for progress displays).

    ``"kmeans"``: the k-means|| sampling passes, its weighting pass, the Lloyd passes and
    the assignment pass; the sampling methods: one row sample per initialisation (a
    sample counts as a pass when it touches most blocks); ``"random"``: one pass.
    """
    bounds = {
        "kmeans": KMEANS_PARALLEL_ROUNDS + 1 + KMEANS_INIT_ITER + 1,
        "k-means++": n_init,
        "random_from_data": n_init,
        "random": 1,
    }
    if method not in bounds:
        raise ValueError(f"init_params must be one of {list(INIT_METHODS)}; got {method!r}.")
    return bounds[method]


def initial_params(
    model: Any,
    data: Any,
    method: str,
    rngs: Sequence[np.random.Generator],
    *,
    split_every: int | None = None,
    sample_size: int = INIT_SAMPLE_ROWS,
    cache: Cache = "auto",
    random_state: np.random.RandomState | None = None,
    weighted: bool = False,
) -> list[Any]:
    """Initial parameters of ``model`` by one of :data:`INIT_METHODS`, one set per generator.

    Methods that pass over the data run every initialisation in the same passes.

    Parameters
    ----------
    model : Model
        A model with ``params_from_responsibilities`` and ``stats_from_responsibilities``
        (mixtures).
    data : FitSession, DataSource or array-like
        The fit's session (:class:`daskem.em.session.FitSession`), or data to open one on
        (with ``split_every`` and ``cache``).
    method : str
        One of :data:`INIT_METHODS`.
    rngs : sequence of numpy.random.Generator
        One source of randomness per initialisation.
    split_every : int, optional
        Reduction fan-in of the passes (of a session opened here).
    sample_size : int
        Row sample bound of ``"k-means++"``.
    cache : {"auto", True, False}
        Cache policy of a session opened here (see :func:`daskem.em.session.should_cache`).
    random_state : numpy.random.RandomState, optional
        For ``"random"`` and ``"random_from_data"``: draw scikit-learn's initialisations
        from it (see the module; meant for data in memory) instead of from ``rngs``.
    weighted : bool
        The data's last column holds the sample weights (``model`` reads them too); it is
        never a feature. They enter where scikit-learn's KMeans takes them: ``"kmeans"`` is
        a weighted k-means|| with weighted Lloyd passes, the components starting from the
        weighted statistics of the hard assignment; ``"k-means++"`` seeds by weighted D^2
        sampling on the row sample; ``"random_from_data"`` draws its ``n_components`` rows
        from such a sample with probability proportional to their weights (KMeans'
        ``init="random"``); ``"random"`` weights every row's random responsibilities.

    Returns
    -------
    list of Params
        One per generator.
    """
    if method not in INIT_METHODS:
        raise ValueError(f"init_params must be one of {list(INIT_METHODS)}; got {method!r}.")
    session = as_session(data, cache=cache, split_every=split_every)
    k = model.n_components
    d = session.source.n_features - int(weighted)
    if random_state is not None and method in ("random", "random_from_data") and not weighted:
        return _sklearn_initial_params(model, session, method, len(rngs), random_state)
    batched = BatchedModel(model)
    if method == "kmeans":
        centers = kmeans_centers(session, k, rngs, weighted=weighted)
        flags = [(weighted,)] * len(session.blocks())
        stats = session.stats(batched, tuple(centers), block_fn=_hard_block_stats, block_args=flags)
        return [model.m_step(s, None) for s in _checked(stats, session, model)]
    if weighted and method in ("k-means++", "random_from_data"):
        return [_weighted_seeds(model, session, method, sample_size, rng) for rng in rngs]
    if method == "k-means++":
        out = []
        for rng in rngs:
            sample = sample_rows(session, sample_size, rng)
            out.append(model.params_from_responsibilities(sample[kmeans_plusplus(sample, k, rng)], np.eye(k)))
        return out
    if method == "random_from_data":
        return [model.params_from_responsibilities(sample_rows(session, k, rng), np.eye(k)) for rng in rngs]
    n_blocks = len(session.blocks())
    seeds = [np.random.SeedSequence(int(rng.integers(2**63))).spawn(n_blocks) for rng in rngs]
    first = np.arange(min(1024, session.source.n_samples))
    shift = np.asarray(session.rows(first, reduce=lambda rows: rows[:, :d].mean(axis=0)), dtype=np.float64)
    per_block = [(tuple(s[i] for s in seeds),) for i in range(n_blocks)]
    stats = session.stats(batched, shift, block_fn=_random_block_stats, block_args=per_block)
    return [model.m_step(s, None) for s in _checked(stats, session, model)]
