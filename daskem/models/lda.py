"""Latent Dirichlet allocation by variational EM (scikit-learn's batch and online updates).

The parameters are the topic-word variational Dirichlet parameters ``components``
(``lambda``, k x V). The E-step of a block of documents (scipy.sparse CSR rows of word
counts, or dense rows) runs scikit-learn's per-document variational updates
(``sklearn.decomposition._lda._update_doc_distribution``) from the constant start
(every document's ``gamma`` = 1: scikit-learn's start when it draws no random values),
with ``exp(E[log beta])`` computed once per block, in one compiled kernel
(:mod:`daskem.models.lda_kernels`, imported on the first E-step). Its statistics are
additive over documents: the topic-word statistics (already multiplied by
``exp(E[log beta])``, as scikit-learn's ``_em_step``), the documents, the words, and
each document's part of the variational bound (scikit-learn's ``_approx_bound``). The
topics' own part of the bound depends on ``components`` alone: it is computed once per
parameter set on the driver (:meth:`LDAModel.make_params`) and carried by the
parameters, so :meth:`LDAModel.log_likelihood` gives the bound (the ELBO) and the
perplexity needs no extra pass.

The batch M-step is scikit-learn's (``components = topic_word_prior + sstats``); the
online update of a mini-batch is in :class:`OnlineLDA`, a sequential scan over the
blocks (:meth:`daskem.em.session.FitSession.fold`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from daskem.errors import DataError
from daskem.models.base import FloatArray, count_nonfinite

_EMPTY = np.zeros((0, 0))


@dataclass(frozen=True)
class LDAParams:
    """The topic-word variational parameters and what the driver derives from them once.

    Attributes
    ----------
    components : ndarray of shape (k, n_features)
        ``lambda``: topic-word Dirichlet parameters (scikit-learn's ``components_``).
    topic_word_bound : float
        ``E[log p(beta | eta) - log q(beta | lambda)]`` (the topics' part of the bound).
    perplexity : float
        The training perplexity of the parameters these were computed from (NaN for
        initial parameters): the perplexity rule compares it with the next pass's.
    """

    components: FloatArray = field(repr=False)
    topic_word_bound: float
    perplexity: float = math.nan

    def to_arrays(self) -> dict[str, FloatArray]:
        """``components`` (and ``perplexity`` once known) as named arrays."""
        arrays = {"components": self.components}
        if not math.isnan(self.perplexity):
            arrays["perplexity"] = np.array([self.perplexity])
        return arrays


@dataclass(frozen=True)
class LDAStats:
    """Statistics of a set of documents under one set of topics.

    Attributes
    ----------
    n : float
        Documents.
    doc_bound : float
        The documents' part of the variational bound (summed over documents).
    n_nonfinite : int
        NaN or infinite counts seen.
    n_words : float
        The sum of the counts.
    sstats : ndarray of shape (k, n_features)
        Topic-word statistics times ``exp(E[log beta])`` (scikit-learn's ``suff_stats``).
    topic_word_bound : float
        The topics' part of the bound, of the parameters the statistics were computed
        with (not summed: equal in every block of a pass).
    """

    n: float
    doc_bound: float
    n_nonfinite: int
    n_words: float
    sstats: FloatArray = field(repr=False)
    topic_word_bound: float

    @property
    def loglik(self) -> float:
        """The variational bound (ELBO) of the documents: scikit-learn's ``score``."""
        return self.doc_bound + self.topic_word_bound


def _csr(block: Any) -> Any:
    """A block as a float64 CSR matrix (dense rows: their non-zero entries, as scikit-learn reads them)."""
    x = block.tocsr() if sparse.issparse(block) else sparse.csr_matrix(np.asarray(block))
    return x.astype(np.float64) if x.dtype != np.float64 else x


def check_counts(x: Any) -> None:
    """Refuse negative counts (scikit-learn's message); NaN and infinity are counted by the E-step."""
    values = x.data
    if values.size and np.nanmin(values) < 0:
        raise DataError(
            "Negative values in data passed to LatentDirichletAllocation: a document-word matrix holds counts "
            "(or other non-negative weights). Remove the negative entries."
        )


@dataclass(frozen=True)
class LDAModel:
    """Latent Dirichlet allocation: variational E-step per block, scikit-learn's batch M-step.

    Parameters
    ----------
    n_components : int
        Topics ``k``.
    doc_topic_prior : float
        ``alpha``, the prior of every document's topic proportions.
    topic_word_prior : float
        ``eta``, the prior of every topic's word distribution.
    max_doc_update_iter : int
        Most variational updates per document and E-step.
    mean_change_tol : float
        A document's updates stop when the mean absolute change of its ``gamma`` is
        below it.
    total_samples : float
        Documents in the whole corpus: the perplexity with ``sub_sampling`` and the
        online update scale a mini-batch's statistics by ``total_samples / batch``.
    """

    n_components: int
    doc_topic_prior: float
    topic_word_prior: float
    max_doc_update_iter: int = 100
    mean_change_tol: float = 1e-3
    total_samples: float = 1e6

    # -- parameters ------------------------------------------------------------------------

    def make_params(self, components: Any, perplexity: float = math.nan) -> LDAParams:
        """Parameters from ``components``, with the topics' part of the bound (computed here, once)."""
        from daskem.models.lda_kernels import dirichlet_expectation_2d, topic_word_bound

        lam = np.ascontiguousarray(components, dtype=np.float64)
        bound = float(topic_word_bound(lam, dirichlet_expectation_2d(lam), float(self.topic_word_prior)))
        return LDAParams(lam, bound, float(perplexity))

    def params_from_arrays(self, arrays: dict[str, FloatArray]) -> LDAParams:
        """Rebuild parameters from :meth:`LDAParams.to_arrays` output."""
        components = np.asarray(arrays["components"], dtype=np.float64)
        if components.ndim != 2 or components.shape[0] != self.n_components or not np.all(components > 0):
            raise ValueError(
                f"components must be a positive array of shape ({self.n_components}, n_features); "
                f"got shape {components.shape}."
            )
        perplexity = float(np.asarray(arrays["perplexity"])[0]) if "perplexity" in arrays else math.nan
        return self.make_params(components, perplexity)

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON."""
        return {
            "model": "lda",
            "n_components": int(self.n_components),
            "doc_topic_prior": float(self.doc_topic_prior),
            "topic_word_prior": float(self.topic_word_prior),
            "max_doc_update_iter": int(self.max_doc_update_iter),
            "mean_change_tol": float(self.mean_change_tol),
            "total_samples": float(self.total_samples),
        }

    # -- the E-step ------------------------------------------------------------------------

    def _run(self, params: LDAParams, block: Any, stats: bool, bound: bool) -> tuple[Any, ...]:
        """The kernel on a block: (its CSR rows, gamma, sstats (k, V) or None, per-document bound or None).

        ``exp(E[log beta])`` (and ``E[log beta]`` for the bound) are computed here, once per block.
        """
        from daskem.models.lda_kernels import dirichlet_expectation_2d, doc_updates

        x = _csr(block)
        check_counts(x)
        k, v = params.components.shape
        if x.shape[1] != v:
            raise DataError(f"X has {x.shape[1]} features, but the topics have {v} words.")
        elog_beta = dirichlet_expectation_2d(params.components)
        exp_beta = np.exp(elog_beta)
        n = x.shape[0]
        gamma = np.empty((n, k))
        sstats_t = np.zeros((v, k)) if stats else _EMPTY
        per_doc = np.zeros(n)
        doc_updates(
            x.indptr,
            x.indices,
            x.data,
            np.ascontiguousarray(exp_beta.T),
            np.ascontiguousarray(elog_beta.T) if bound else _EMPTY,
            float(self.doc_topic_prior),
            int(self.max_doc_update_iter),
            float(self.mean_change_tol),
            float(np.finfo(np.float64).eps),
            sstats_t,
            gamma,
            per_doc,
        )
        sstats = sstats_t.T * exp_beta if stats else None
        return x, gamma, sstats, per_doc if bound else None

    def e_step(self, params: LDAParams, block: NDArray[Any]) -> LDAStats:
        """Statistics of a block of documents (CSR or dense rows of counts)."""
        x, _, sstats, per_doc = self._run(params, block, stats=True, bound=True)
        return LDAStats(
            n=float(x.shape[0]),
            doc_bound=float(per_doc.sum()),
            n_nonfinite=count_nonfinite(x),
            n_words=float(x.data.sum()),
            sstats=sstats,
            topic_word_bound=params.topic_word_bound,
        )

    def zero_stats(self, params: LDAParams) -> LDAStats:
        """The identity of :meth:`combine` for statistics under ``params``."""
        return LDAStats(0.0, 0.0, 0, 0.0, np.zeros_like(params.components), params.topic_word_bound)

    def combine(self, a: LDAStats, b: LDAStats) -> LDAStats:
        """Merge the statistics of two disjoint sets of documents (under the same parameters)."""
        return LDAStats(
            n=a.n + b.n,
            doc_bound=a.doc_bound + b.doc_bound,
            n_nonfinite=a.n_nonfinite + b.n_nonfinite,
            n_words=a.n_words + b.n_words,
            sstats=a.sstats + b.sstats,
            topic_word_bound=a.topic_word_bound,
        )

    # -- the driver ------------------------------------------------------------------------

    def log_likelihood(self, stats: LDAStats) -> float:
        """The variational bound (ELBO) of the documents behind ``stats``."""
        return stats.loglik

    def perplexity(self, stats: LDAStats, sub_sampling: bool = False) -> float:
        """scikit-learn's perplexity, ``exp(-bound / words)``, from the statistics.

        ``sub_sampling`` scales the documents' part of the bound and the words by
        ``total_samples / documents`` (scikit-learn's ``perplexity(X, sub_sampling=True)``).
        """
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # no words: inf or NaN, as scikit-learn
            ratio = np.float64(self.total_samples) / stats.n if sub_sampling else 1.0
            bound = stats.doc_bound * ratio + stats.topic_word_bound
            return float(np.exp(-1.0 * (bound / (np.float64(stats.n_words) * ratio))))

    def m_step(self, stats: LDAStats, params: LDAParams | None) -> LDAParams:
        """scikit-learn's batch update, ``components = topic_word_prior + sstats``.

        The new parameters carry the perplexity of ``params`` (read from ``stats``) for
        the stopping rule (:meth:`converged`).
        """
        return self.make_params(self.topic_word_prior + stats.sstats, self.perplexity(stats))

    def converged(self, stats: LDAStats, params: LDAParams, new_params: LDAParams, tol: float) -> bool:
        """scikit-learn's rule: the training perplexity changed by less than ``tol`` (``perp_tol``).

        ``stats`` give the perplexity of ``params``, which carry that of the parameters
        before them; the first iteration (no earlier perplexity) never converges, as in
        scikit-learn. Unmoved parameters have converged.
        """
        if np.array_equal(params.components, new_params.components):
            return True
        return bool(abs(params.perplexity - self.perplexity(stats)) < tol)

    # -- per-document maps -------------------------------------------------------------------

    def unnormalized_transform(self, params: LDAParams, block: NDArray[Any]) -> NDArray[Any]:
        """Every document's variational Dirichlet parameters ``gamma``: shape (n, k), in the block's
        float dtype (float32 for float32 blocks, else float64)."""
        gamma = self._run(params, block, stats=False, bound=False)[1]
        return np.asarray(gamma, dtype=np.float32 if block.dtype == np.float32 else np.float64)

    def transform(self, params: LDAParams, block: NDArray[Any]) -> NDArray[Any]:
        """Every document's topic proportions (``gamma`` normalised): shape (n, k), dtype as
        :meth:`unnormalized_transform`."""
        gamma = self._run(params, block, stats=False, bound=False)[1]
        return np.asarray(
            gamma / gamma.sum(axis=1)[:, np.newaxis], dtype=np.float32 if block.dtype == np.float32 else np.float64
        )


@dataclass(frozen=True)
class MapLDAModel(LDAModel):
    """LDA by MAP-EM, as Spark MLlib's EM optimizer defines it (Asuncion et al. 2009).

    The topics' word distributions ``beta`` and every document's topic proportions
    ``theta`` are parameters with Dirichlet priors (``alpha = doc_topic_prior`` and
    ``eta = topic_word_prior``, both at least 1), and EM maximises their posterior
    ``sum_dw n_dw log sum_t theta_dt beta_tw + (alpha - 1) sum log theta + (eta - 1) sum
    log beta``. The parameters kept between passes are ``components = N + eta - 1`` (``N``
    the expected topic-word counts), whose rows normalised are ``beta``. The E-step of a
    block maximises each document's ``theta`` given ``beta`` (concave for ``alpha >= 1``:
    its one maximum, reached by EM updates from the uniform start; Spark's EM takes one
    such update per iteration and keeps ``theta`` between iterations, which has the same
    fixed points) and returns the expected counts; the M-step is Spark's,
    ``beta_tw = (N_tw + eta - 1) / (N_t + V (eta - 1))``. The bound is the log posterior
    (without constants), which never decreases.
    """

    def make_params(self, components: Any, perplexity: float = math.nan) -> LDAParams:
        """Parameters from ``components`` (``N + eta - 1``), with the topics' prior term."""
        lam = np.ascontiguousarray(components, dtype=np.float64)
        beta = lam / lam.sum(axis=1, keepdims=True)
        eta = float(self.topic_word_prior)
        bound = float((eta - 1.0) * np.log(beta).sum()) if eta != 1.0 else 0.0
        return LDAParams(lam, bound, float(perplexity))

    def spec(self) -> dict[str, Any]:
        """The hyperparameters as JSON (``"model": "lda-map"``)."""
        return {**super().spec(), "model": "lda-map"}

    def topics(self, params: LDAParams) -> FloatArray:
        """``beta``: every topic's word distribution (rows sum to 1)."""
        return np.asarray(params.components / params.components.sum(axis=1, keepdims=True))

    def _run(self, params: LDAParams, block: Any, stats: bool, bound: bool) -> tuple[Any, ...]:
        """The MAP kernel on a block: (its CSR rows, theta, expected counts (k, V) or None, objective or None)."""
        from daskem.models.lda_kernels import map_doc_updates

        x = _csr(block)
        check_counts(x)
        k, v = params.components.shape
        if x.shape[1] != v:
            raise DataError(f"X has {x.shape[1]} features, but the topics have {v} words.")
        beta = self.topics(params)
        n = x.shape[0]
        theta = np.empty((n, k))
        sstats_t = np.zeros((v, k)) if stats else _EMPTY
        per_doc = np.zeros(n)
        map_doc_updates(
            x.indptr,
            x.indices,
            x.data,
            np.ascontiguousarray(beta.T),
            float(self.doc_topic_prior),
            int(self.max_doc_update_iter),
            float(self.mean_change_tol),
            sstats_t,
            theta,
            per_doc,
        )
        sstats = sstats_t.T * beta if stats else None
        return x, theta, sstats, per_doc if bound else None

    def m_step(self, stats: LDAStats, params: LDAParams | None) -> LDAParams:
        """Spark's MAP update: ``components = N + eta - 1`` (``beta`` its rows normalised)."""
        return self.make_params(stats.sstats + (self.topic_word_prior - 1.0), self.perplexity(stats))


@dataclass(frozen=True)
class OnlineState:
    """Where an online pass stands: the topics, the updates made, the documents not yet used.

    Attributes
    ----------
    params : LDAParams
        The current topics.
    n_batch_iter : int
        scikit-learn's ``n_batch_iter_`` (1 before the first update).
    pending : scipy.sparse.csr_matrix or None
        Documents read but fewer than a mini-batch (they join the next block's first one).
    """

    params: LDAParams
    n_batch_iter: int
    pending: Any = None


@dataclass(frozen=True)
class OnlineLDA:
    """scikit-learn's online variational Bayes: mini-batches of ``batch_size`` documents in order.

    Each mini-batch's E-step is :meth:`LDAModel.e_step` and its update
    ``components = (1 - rho) components + rho (eta + total_samples * sstats / batch)``,
    ``rho = (learning_offset + n_batch_iter)^-learning_decay``. :meth:`block` takes the
    blocks in order (a scan, :meth:`daskem.em.session.FitSession.fold`); documents left
    over at the end of a block start the next block's first mini-batch, so the
    mini-batches are scikit-learn's ``gen_batches`` over all the rows, whatever the
    chunking; :meth:`finish` updates with the last, shorter one.

    Parameters
    ----------
    model : LDAModel
        The model (its ``total_samples`` scales the mini-batches' statistics).
    batch_size : int
        Documents per mini-batch.
    learning_decay : float
        ``kappa``.
    learning_offset : float
        ``tau_0``.
    """

    model: LDAModel
    batch_size: int
    learning_decay: float
    learning_offset: float

    def update(self, state: OnlineState, batch: Any) -> OnlineState:
        """The state after one mini-batch's update (scikit-learn's ``_em_step(batch_update=False)``).

        The mini-batch's bound is not computed (nothing reads it), nor the topics' part of
        the bound of the new parameters (NaN until :meth:`LDAModel.make_params`).
        """
        x, _, sstats, _ = self.model._run(state.params, batch, stats=True, bound=False)
        bad = count_nonfinite(x)
        if bad:
            raise DataError(f"X contains {bad} NaN or infinite value(s): fix or drop those rows.")
        weight = np.power(self.learning_offset + state.n_batch_iter, -self.learning_decay)
        doc_ratio = float(self.model.total_samples) / x.shape[0]
        components = state.params.components * (1 - weight)
        components += weight * (self.model.topic_word_prior + doc_ratio * sstats)
        return OnlineState(LDAParams(components, math.nan), state.n_batch_iter + 1, state.pending)

    def block(self, state: OnlineState, block: Any) -> OnlineState:
        """Update with every whole mini-batch of ``state.pending`` and ``block``; keep the rest pending."""
        rows = _csr(block)
        if state.pending is not None:
            rows = sparse.vstack([state.pending, rows], format="csr")
        size = int(self.batch_size)
        whole = rows.shape[0] - rows.shape[0] % size
        for start in range(0, whole, size):
            state = self.update(state, rows[start : start + size])
        return OnlineState(state.params, state.n_batch_iter, rows[whole:] if whole < rows.shape[0] else None)

    def finish(self, state: OnlineState) -> OnlineState:
        """Update with the documents still pending (the last, shorter mini-batch), if any."""
        if state.pending is None:
            return state
        done = self.update(state, state.pending)
        return OnlineState(done.params, done.n_batch_iter, None)
