"""The model contract suite: tests every EM model must pass, shipped with daskem.

Subclass :class:`ModelContract` in a test module (the way zarr's ``zarr/testing/store.py``
is subclassed per store) and provide three pytest fixtures:

``model``
    The model under test (any :class:`daskem.models.Model`); parametrize this fixture to
    run the suite for several configurations.
``data``
    A NumPy array of shape (n_samples, n_features), a few hundred rows.
``params``
    Initial parameters for ``model`` on ``data``, reasonably close to a good fit so
    that a few dozen iterations move them but do not collapse a component.

and, optionally, override :meth:`ModelContract.params_close` and
:meth:`ModelContract.stats_close` when the generic comparisons (every array of
``to_arrays()`` / of the statistics, relative to the array's largest magnitude) do not
suit the model. Tolerances are class attributes.

The suite checks the laws the EM engine relies on:

* chunk additivity: the E-step of all rows equals the ``combine`` of the E-steps of any
  split of the rows, zero-length pieces included (with the messages a model that
  carries them between blocks computes: :func:`daskem.models.base.block_stats`);
* combine laws: associative, commutative, ``zero_stats`` its identity;
* the same fit through :func:`daskem.fit_em` on different row chunkings and reduction
  fan-ins (a single block has no reduction, so only its one reference fit) agrees to
  ``1e-12`` relative, and is bitwise reproducible for one chunking;
* the log-likelihood never decreases over 50 iterations;
* parameters survive ``to_arrays`` / ``params_from_arrays`` exactly;
* the law of every optional capability the model implements (the protocols of
  :mod:`daskem.models.base`; the test skips for a model without it): ``VectorForm``
  round trip, ``BatchedEStep`` equal to each solo E-step bitwise, ``OwnConvergence``
  stops on unmoved parameters only, ``MessagePassing`` gives the unsplit statistics,
  ``RowScores`` split per row and sum to the statistics' log-likelihood,
  ``RegularisedMStep``'s gap is >= 0 and bounds the decrease of an M-step,
  ``StatsAlgebra``: recentring on the own reference is the identity, merging statistics
  of one parameter set is ``combine`` bitwise, merging those of two parameter sets gives
  the same M-step in either order, and scaled statistics give the same M-step.

This module imports neither pytest nor hypothesis at import time (``daskem.testing`` is
also imported by the CLI, where test dependencies need not be installed): the
chunkings and fan-ins are parametrized by :meth:`ModelContract.pytest_generate_tests`,
which pytest calls on test classes, and hypothesis is imported inside the one test that
uses it.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import dask.array as da
import numpy as np

from daskem.em.driver import fit_em
from daskem.em.monitor import LikelihoodDecreaseWarning
from daskem.models.base import (
    BatchedEStep,
    MessagePassing,
    OwnConvergence,
    RegularisedMStep,
    RowScores,
    StatsAlgebra,
    VectorForm,
    block_stats,
    carries_messages,
    merge_stats,
)

__all__ = ["ModelContract", "relative_difference"]


def relative_difference(a: Any, b: Any) -> float:
    """Largest absolute difference of two arrays relative to their largest magnitude.

    Scaled per array rather than per element, so that entries that are nearly zero
    (off-diagonal covariances, first moments around a reference) are judged on the
    scale of the array they belong to. Two all-zero arrays differ by 0.

    Parameters
    ----------
    a, b : array-like
        Arrays of the same shape.

    Returns
    -------
    float
        ``max|a - b| / max(max|a|, max|b|)``; ``inf`` if the shapes differ or exactly
        one of the values is non-finite where the other is not.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        return float("inf")
    if x.size == 0:
        return 0.0
    fx, fy = np.isfinite(x), np.isfinite(y)
    if not np.array_equal(fx, fy) or not np.array_equal(x[~fx], y[~fy], equal_nan=True):
        return float("inf")
    if not fx.any():
        return 0.0
    finite = fx
    scale = max(float(np.abs(x[finite]).max()), float(np.abs(y[finite]).max()))
    diff = float(np.abs(x[finite] - y[finite]).max())
    return 0.0 if diff == 0.0 else (diff / scale if scale > 0.0 else float("inf"))


def _stats_fields(stats: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(stats):
        return {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)}
    return dict(vars(stats))


def _leaves(stats: Any, prefix: str = "") -> dict[str, Any]:
    """Every field of statistics, those of nested statistics (an HMM's emission) flattened in."""
    if not dataclasses.is_dataclass(stats):
        return {prefix: stats}
    out: dict[str, Any] = {}
    for name, value in _stats_fields(stats).items():
        out.update(_leaves(value, f"{prefix}{name}."))
    return out


def _assert_stats_equal(a: Any, b: Any) -> None:
    """Assert that two statistics are equal bitwise, field by field (nested ones included)."""
    fa, fb = _leaves(a), _leaves(b)
    assert fa.keys() == fb.keys()
    for name in fa:
        assert np.array_equal(fa[name], fb[name]), name


def _row_chunks(name: str, n: int) -> tuple[int, ...]:
    """Row chunk sizes of ``n`` rows for a chunking named by the suite's parameters."""
    if name == "single":
        return (n,)
    if name == "regular":
        return tuple(min(64, n - s) for s in range(0, n, 64))
    if name == "irregular":
        # A one-row block, an empty block, a ragged tail: everything a store can produce.
        head = [min(1, n), 0, min(13, max(n - 1, 0))]
        rest = n - sum(head)
        return (*head, *(min(97, rest - s) for s in range(0, rest, 97)))
    raise ValueError(f"unknown chunking {name!r}")


class ModelContract:
    """Base class of the contract tests; subclass it and provide the fixtures.

    Required fixtures: ``model``, ``params``, ``data`` (see the module docstring).

    Attributes
    ----------
    additivity_rtol : float
        Tolerance of the E-step of the whole against the combine of its pieces (only
        the order of floating-point sums differs).
    combine_rtol : float
        Tolerance of the combine laws.
    chunking_rtol : float
        Tolerance of fits on different chunkings and fan-ins against each other.
    fit_iter : int
        Iterations of the chunking-invariance and reproducibility fits (``tol=0``).
    monotone_iter : int
        Iterations of the monotone log-likelihood check (``tol=0``).
    monotone_rtol : float
        Rounding allowed in "never decreases": a change below
        ``-monotone_rtol * |log-likelihood|`` fails.
    split_points : tuple of tuple of float
        Cut points, as fractions of the rows, of the deterministic additivity test.
    chunkings : tuple of str
        Row chunkings of the fits: ``"single"``, ``"regular"`` (64 rows),
        ``"irregular"`` (1, 0, 13, then 97-row blocks).
    split_everys : tuple of int
        Reduction fan-ins of the fits.
    hypothesis_examples : int
        Random splits tried by the property-based additivity test.
    """

    additivity_rtol: float = 1e-12
    combine_rtol: float = 1e-13
    chunking_rtol: float = 1e-12
    fit_iter: int = 20
    monotone_iter: int = 50
    monotone_rtol: float = 1e-13
    split_points: tuple[tuple[float, ...], ...] = (
        (0.0,),
        (1.0,),
        (0.5,),
        (0.0, 0.0, 1.0),
        (0.1, 0.1, 0.7),
        (0.01, 0.02, 0.5, 0.5, 0.99),
    )
    chunkings: tuple[str, ...] = ("single", "regular", "irregular")
    split_everys: tuple[int, ...] = (2, 3, 8)
    hypothesis_examples: int = 25
    _reference_fits: ClassVar[dict[str, Any]] = {}

    # -- parametrization, without importing pytest --------------------------------------

    def pytest_generate_tests(self, metafunc: Any) -> None:
        """Parametrize the suite's own arguments (pytest calls this on test classes)."""
        if "split_fractions" in metafunc.fixturenames:
            ids = ["-".join(f"{c:g}" for c in cuts) for cuts in self.split_points]
            metafunc.parametrize("split_fractions", self.split_points, ids=ids)
        if {"chunking", "split_every"} <= set(metafunc.fixturenames):
            # One block has no reduction: its fan-ins would repeat the reference fit itself.
            pairs = [(c, s) for c in self.chunkings for s in self.split_everys if c != "single"]
            ids = [f"{c}-split_every={s}" for c, s in pairs]
            metafunc.parametrize(("chunking", "split_every"), pairs, ids=ids)

    # -- comparisons (override for models whose arrays need other treatment) --------------

    def params_close(self, a: Any, b: Any, rtol: float) -> bool:
        """Whether two parameter sets agree to ``rtol`` (every array, relative to its scale)."""
        xa, xb = a.to_arrays(), b.to_arrays()
        return xa.keys() == xb.keys() and all(relative_difference(xa[k], xb[k]) <= rtol for k in xa)

    def stats_close(self, a: Any, b: Any, rtol: float) -> bool:
        """Whether two statistics agree: counts exactly, every other field to ``rtol``."""
        fa, fb = _stats_fields(a), _stats_fields(b)
        if fa.keys() != fb.keys() or a.n != b.n or a.n_nonfinite != b.n_nonfinite:
            return False
        return all(relative_difference(fa[k], fb[k]) <= rtol for k in fa)

    def assert_params_close(self, a: Any, b: Any, rtol: float) -> None:
        """Assert :meth:`params_close`, reporting the per-array relative differences."""
        if not self.params_close(a, b, rtol):
            xa, xb = a.to_arrays(), b.to_arrays()
            diffs = {k: relative_difference(xa[k], xb.get(k, np.nan)) for k in xa}
            raise AssertionError(f"parameters differ beyond rtol={rtol:g}: relative differences {diffs}")

    def assert_stats_close(self, a: Any, b: Any, rtol: float) -> None:
        """Assert :meth:`stats_close`, reporting the per-field relative differences."""
        if not self.stats_close(a, b, rtol):
            fa, fb = _stats_fields(a), _stats_fields(b)
            diffs = {k: relative_difference(fa[k], fb.get(k, np.nan)) for k in fa}
            raise AssertionError(f"statistics differ beyond rtol={rtol:g}: relative differences {diffs}")

    # -- helpers ------------------------------------------------------------------------

    @staticmethod
    def pieces(data: np.ndarray, cuts: Sequence[int]) -> list[np.ndarray]:
        """Split ``data`` at sorted row indices ``cuts`` (repeated cuts give empty pieces)."""
        bounds = [0, *sorted(int(c) for c in cuts), data.shape[0]]
        return [data[lo:hi] for lo, hi in itertools.pairwise(bounds)]

    def fit(self, model: Any, params: Any, data: np.ndarray, chunking: str, split_every: int, max_iter: int) -> Any:
        """Run :func:`daskem.fit_em` with ``tol=0`` on ``data`` chunked as named."""
        X = da.from_array(data, chunks=(_row_chunks(chunking, data.shape[0]), data.shape[1]))
        with warnings.catch_warnings():
            warnings.simplefilter("error", LikelihoodDecreaseWarning)
            return fit_em(model, X, params, max_iter=max_iter, tol=0.0, split_every=split_every)

    def reference_fit(self, model: Any, params: Any, data: np.ndarray) -> Any:
        """The one-block fit of ``fit_iter`` iterations the chunked fits are compared with.

        Computed once per model, parameters and data (the fixtures may rebuild equal ones).
        """
        from dask.base import tokenize

        key = tokenize(model.spec(), params.to_arrays(), data, self.fit_iter)
        cache = ModelContract._reference_fits
        if key not in cache:
            cache[key] = self.fit(model, params, data, "single", 2, self.fit_iter)
        return cache[key]

    def _check_split(self, model: Any, params: Any, data: np.ndarray, cuts: Sequence[int]) -> None:
        (whole,) = block_stats(model, params, [data])
        parts = block_stats(model, params, self.pieces(data, cuts))
        combined = functools.reduce(model.combine, parts)
        self.assert_stats_close(combined, whole, self.additivity_rtol)
        assert combined.n == data.shape[0]
        self.assert_params_close(model.m_step(combined, params), model.m_step(whole, params), self.additivity_rtol)

    # -- the contract ---------------------------------------------------------------------

    def test_e_step_counts_rows(self, model: Any, params: Any, data: np.ndarray) -> None:
        stats = model.e_step(params, data)
        assert stats.n == data.shape[0]
        assert stats.n_nonfinite == 0
        assert np.isfinite(model.log_likelihood(stats))
        assert model.log_likelihood(stats) == stats.loglik

    def test_e_step_of_no_rows_is_zero_stats(self, model: Any, params: Any, data: np.ndarray) -> None:
        empty = model.e_step(params, data[:0])
        zero = model.zero_stats(params)
        self.assert_stats_close(empty, zero, 0.0)
        assert empty.n == 0
        assert empty.loglik == 0.0

    def test_chunk_additivity(
        self, model: Any, params: Any, data: np.ndarray, split_fractions: tuple[float, ...]
    ) -> None:
        n = data.shape[0]
        self._check_split(model, params, data, [round(f * n) for f in split_fractions])

    def test_chunk_additivity_random_splits(self, model: Any, params: Any, data: np.ndarray) -> None:
        import pytest

        hypothesis = pytest.importorskip("hypothesis")
        st = hypothesis.strategies
        n = data.shape[0]

        @hypothesis.settings(
            max_examples=self.hypothesis_examples, deadline=None, derandomize=True, database=None, print_blob=True
        )
        @hypothesis.given(cuts=st.lists(st.integers(0, n), max_size=6))
        @hypothesis.example(cuts=[0, 0, n, n])
        def check(cuts: list[int]) -> None:
            self._check_split(model, params, data, cuts)

        check()

    def test_combine_is_associative(self, model: Any, params: Any, data: np.ndarray) -> None:
        n = data.shape[0]
        a, b, c = block_stats(model, params, self.pieces(data, [n // 5, n // 2]))
        left = model.combine(model.combine(a, b), c)
        right = model.combine(a, model.combine(b, c))
        self.assert_stats_close(left, right, self.combine_rtol)

    def test_combine_is_commutative(self, model: Any, params: Any, data: np.ndarray) -> None:
        n = data.shape[0]
        a, b = block_stats(model, params, self.pieces(data, [n // 3]))
        self.assert_stats_close(model.combine(a, b), model.combine(b, a), self.combine_rtol)

    def test_zero_stats_is_identity(self, model: Any, params: Any, data: np.ndarray) -> None:
        stats = model.e_step(params, data)
        zero = model.zero_stats(params)
        self.assert_stats_close(model.combine(zero, stats), stats, 0.0)
        self.assert_stats_close(model.combine(stats, zero), stats, 0.0)
        self.assert_stats_close(model.combine(zero, zero), zero, 0.0)

    def test_params_round_trip(self, model: Any, params: Any) -> None:
        rebuilt = model.params_from_arrays(params.to_arrays())
        arrays, again = params.to_arrays(), rebuilt.to_arrays()
        assert arrays.keys() == again.keys()
        for name in arrays:
            np.testing.assert_array_equal(again[name], arrays[name], err_msg=name)

    def test_fit_independent_of_chunking(
        self, model: Any, params: Any, data: np.ndarray, chunking: str, split_every: int
    ) -> None:
        reference = self.reference_fit(model, params, data)
        result = self.fit(model, params, data, chunking, split_every, self.fit_iter)
        assert result.n_iter == reference.n_iter
        # tol=0 runs every iteration, unless the model's own rule sees a fixed point.
        assert reference.n_iter == self.fit_iter or (isinstance(model, OwnConvergence) and reference.converged)
        self.assert_params_close(result.params, reference.params, self.chunking_rtol)
        np.testing.assert_allclose(
            [r.log_likelihood for r in result.history],
            [r.log_likelihood for r in reference.history],
            rtol=self.chunking_rtol,
            atol=0.0,
        )

    def test_fit_is_bitwise_reproducible(self, model: Any, params: Any, data: np.ndarray) -> None:
        first = self.fit(model, params, data, "irregular", 3, self.fit_iter)
        second = self.fit(model, params, data, "irregular", 3, self.fit_iter)
        a, b = first.params.to_arrays(), second.params.to_arrays()
        assert a.keys() == b.keys()
        for name in a:
            assert np.array_equal(a[name], b[name]), name
        assert [r.log_likelihood for r in first.history] == [r.log_likelihood for r in second.history]

    def test_log_likelihood_never_decreases(self, model: Any, params: Any, data: np.ndarray) -> None:
        result = self.fit(model, params, data, "regular", 3, self.monotone_iter)
        ll = np.array([r.log_likelihood for r in result.history])
        assert ll.shape == (self.monotone_iter,) or (isinstance(model, OwnConvergence) and result.converged)
        assert np.all(np.isfinite(ll))
        change = np.diff(ll)
        slack = self.monotone_rtol * np.abs(ll[1:])
        assert np.all(change >= -slack), f"log-likelihood decreased: min change {change.min():.3e}"
        # EM from the given start must actually climb, else the check above is vacuous.
        assert ll[-1] > ll[0]

    # -- the laws of the optional capabilities (daskem.models.base), where a model has them --

    @staticmethod
    def _require(model: Any, capability: type, has: bool = True) -> None:
        if not (has and isinstance(model, capability)):
            import pytest

            pytest.skip(f"{type(model).__name__} does not implement {capability.__name__}")

    def _moved(self, model: Any, params: Any, data: np.ndarray) -> Any:
        """A second parameter set: one EM step from ``params``."""
        return model.m_step(functools.reduce(model.combine, block_stats(model, params, [data])), params)

    def test_vector_form_round_trips(self, model: Any, params: Any, data: np.ndarray) -> None:
        self._require(model, VectorForm)
        vector = model.to_vector(params)
        assert vector.ndim == 1
        assert np.all(np.isfinite(vector))
        self.assert_params_close(model.from_vector(vector, params), params, 1e-12)
        # Any finite vector maps back to valid parameters: an E-step under them is finite.
        nudged = vector + np.random.default_rng(0).normal(scale=0.5, size=vector.shape)
        stats = functools.reduce(model.combine, block_stats(model, model.from_vector(nudged, params), [data]))
        assert stats.n_nonfinite == 0
        assert np.isfinite(model.log_likelihood(stats))

    def test_batched_e_step_equals_each_solo_e_step(self, model: Any, params: Any, data: np.ndarray) -> None:
        self._require(model, BatchedEStep)
        sets = (params, self._moved(model, params, data), params)
        batched = model.e_step_batch(sets, data)
        assert len(batched) == len(sets)
        for got, one in zip(batched, sets, strict=True):
            self.assert_stats_close(got, model.e_step(one, data), 0.0)

    def test_unmoved_parameters_have_converged(self, model: Any, params: Any, data: np.ndarray) -> None:
        self._require(model, OwnConvergence)
        moved = self._moved(model, params, data)  # from an M-step: what the rule sees in a fit
        stats = functools.reduce(model.combine, block_stats(model, moved, [data]))
        for tol in (0.0, 1e-4):
            assert model.converged(stats, moved, moved, tol)
        first = functools.reduce(model.combine, block_stats(model, params, [data]))
        assert not model.converged(first, params, moved, 0.0)

    def test_messages_give_the_unsplit_statistics(self, model: Any, params: Any, data: np.ndarray) -> None:
        self._require(model, MessagePassing, carries_messages(model))
        n = data.shape[0]
        blocks = self.pieces(data, [n // 7, n // 7, n // 2, n - 1])
        messages = model.messages(params, [model.summarize(params, b) for b in blocks])
        assert len(messages) == len(blocks)
        parts = [model.e_step(params, b, m) for b, m in zip(blocks, messages, strict=True)]
        whole = model.e_step(params, data, model.messages(params, [model.summarize(params, data)])[0])
        self.assert_stats_close(functools.reduce(model.combine, parts), whole, self.additivity_rtol)

    def test_regularised_m_step_gap_bounds_its_decrease(self, model: Any, params: Any, data: np.ndarray) -> None:
        self._require(model, RegularisedMStep)
        for start in (params, self._moved(model, params, data)):
            stats = functools.reduce(model.combine, block_stats(model, start, [data]))
            gap = model.m_step_gap(stats)
            assert gap >= 0.0
            after = functools.reduce(model.combine, block_stats(model, model.m_step(stats, start), [data]))
            # EM's bound: L(new) - L(old) >= Q(new) - Q(old) >= -gap.
            before = model.log_likelihood(stats)
            assert model.log_likelihood(after) >= before - gap - 1e-10 * abs(before)

    def test_row_scores_split_and_sum_to_the_log_likelihood(self, model: Any, params: Any, data: np.ndarray) -> None:
        self._require(model, RowScores, not carries_messages(model))
        scores = model.score_samples(params, data)
        assert scores.shape == (data.shape[0],)
        pieces = [model.score_samples(params, b) for b in self.pieces(data, [1, data.shape[0] // 2])]
        np.testing.assert_array_equal(np.concatenate(pieces), scores)
        loglik = model.e_step(params, data).loglik
        assert relative_difference(scores.sum(), loglik) <= 1e-10, (float(scores.sum()), loglik)

    def test_recentre_on_its_own_reference_is_identity(self, model: Any, params: Any, data: np.ndarray) -> None:
        self._require(model, StatsAlgebra)
        (stats,) = block_stats(model, params, [data])
        assert model.recentre(stats, stats) is stats

    def test_merge_under_one_parameter_set_is_combine(self, model: Any, params: Any, data: np.ndarray) -> None:
        self._require(model, StatsAlgebra)
        a, b = block_stats(model, params, self.pieces(data, [data.shape[0] // 3]))
        _assert_stats_equal(merge_stats(model, a, b), model.combine(a, b))
        _assert_stats_equal(merge_stats(model, b, a), model.combine(b, a))

    def test_merge_under_two_parameter_sets_is_symmetric(self, model: Any, params: Any, data: np.ndarray) -> None:
        self._require(model, StatsAlgebra)
        moved = self._moved(model, params, data)
        blocks = self.pieces(data, [data.shape[0] // 3])
        a = block_stats(model, params, blocks)[0]
        b = block_stats(model, moved, blocks)[1]
        forward, backward = merge_stats(model, a, b), merge_stats(model, b, a)
        assert forward.n == backward.n == data.shape[0]
        self.assert_params_close(model.m_step(forward, moved), model.m_step(backward, moved), 1e-10)

    def test_scaled_statistics_give_the_same_m_step(self, model: Any, params: Any, data: np.ndarray) -> None:
        self._require(model, StatsAlgebra)
        (stats,) = block_stats(model, params, [data])
        scaled = model.scale(stats, 3.5)
        assert scaled.n == stats.n * 3.5
        assert model.log_likelihood(scaled) == model.log_likelihood(stats) * 3.5
        assert scaled.n_nonfinite == stats.n_nonfinite
        self.assert_params_close(model.m_step(scaled, params), model.m_step(stats, params), 1e-10)
