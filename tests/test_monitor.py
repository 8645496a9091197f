"""The convergence monitor: scikit-learn's rule, history, and the decrease warning."""

from __future__ import annotations

import math

import pytest

from daskem.em import ConvergenceMonitor, LikelihoodDecreaseWarning


def test_first_change_is_infinite_and_not_converged():
    monitor = ConvergenceMonitor(tol=1e-3, max_iter=10)
    record = monitor.update(-5.0, 0.25)
    assert record.iteration == 1
    assert record.change == math.inf
    assert record.seconds == 0.25
    assert not monitor.converged
    assert not monitor.done


def test_converges_when_abs_change_below_tol():
    monitor = ConvergenceMonitor(tol=1e-3, max_iter=10)
    for value in (-5.0, -4.5, -4.4995):
        monitor.update(value, 0.0)
    assert monitor.history[-1].change == pytest.approx(5e-4)
    assert monitor.converged
    assert monitor.done
    assert [r.iteration for r in monitor.history] == [1, 2, 3]


def test_stops_at_max_iter_without_converging():
    monitor = ConvergenceMonitor(tol=0.0, max_iter=3)
    for value in (-3.0, -2.0, -1.0):
        monitor.update(value, 0.0)
    assert not monitor.converged
    assert monitor.done


def test_decrease_warns_with_both_values():
    monitor = ConvergenceMonitor(tol=1e-6, max_iter=10)
    monitor.update(-2.0, 0.0)
    with pytest.warns(LikelihoodDecreaseWarning, match=r"iteration 2: -2\.0 -> -2\.5"):
        monitor.update(-2.5, 0.0)


def test_rounding_level_decrease_does_not_warn(recwarn):
    monitor = ConvergenceMonitor(tol=1e-6, max_iter=10)
    monitor.update(-2.0, 0.0)
    monitor.update(-2.0 - 1e-14, 0.0)
    assert not [w for w in recwarn if issubclass(w.category, LikelihoodDecreaseWarning)]
