"""Incremental, online and stochastic EM (daskem.em.schedules), on the Gaussian mixture.

Oracles: batch EM itself (incremental with every block per step is batch EM bit for bit;
online with step size 1 on the whole data is one batch step), the batch fixed point,
the observed-data log-likelihood of every committed step (read back from a real Zarr
checkpoint), sampling error for stochastic EM, and uninterrupted fits for resumes.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from daskem import GaussianMixture
from daskem.checkpoint.checkpoint import Checkpoint
from daskem.em.driver import fit_em
from daskem.em.progress import reporting_progress
from daskem.em.schedules import Schedule, fit_scheduled, stats_from_arrays, stats_to_arrays
from daskem.errors import ParameterError
from daskem.models.gmm import GaussianMixtureModel

# Fits stopped after a few epochs on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

ATTRS = ("weights_", "means_", "covariances_", "precisions_cholesky_")
CENTRES = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [4.0, -4.0, 2.0]])


def _mixture(n: int = 6000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    scales = np.array([1.0, 0.6, 1.3])
    return CENTRES[labels] + rng.normal(size=(n, 3)) * scales[labels, None]


def _start(model: GaussianMixtureModel, X: np.ndarray, seed: int = 1):
    """A deliberately poor start: random responsibilities."""
    resp = np.random.default_rng(seed).random((X.shape[0], model.n_components))
    return model.params_from_responsibilities(X, resp / resp.sum(axis=1, keepdims=True))


def _explicit(means_shift: float = 0.5) -> dict:
    return {
        "means_init": CENTRES + means_shift,
        "weights_init": np.full(3, 1 / 3),
        "precisions_init": np.stack([np.eye(3)] * 3),
        "random_state": 0,
    }


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("weights", "means", "covariances"))


# -- incremental EM ------------------------------------------------------------------------------


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_incremental_with_every_block_per_step_is_batch_em_bitwise(covariance_type):
    X = _mixture()
    model = GaussianMixtureModel(3, covariance_type)
    start = _start(model, X)
    data = da.from_array(X, chunks=500)  # 12 blocks: the reduction tree has two levels
    batch = fit_em(model, data, start, max_iter=15, tol=0.0, split_every=4)
    incremental = fit_scheduled(
        model, data, start, Schedule("incremental", step_blocks=12), max_iter=15, tol=0.0, split_every=4
    )
    assert _same(batch.params, incremental.params)
    assert [r.log_likelihood for r in batch.history] == [r.log_likelihood for r in incremental.history]
    assert incremental.n_passes == batch.n_passes == 15


def test_incremental_never_lowers_the_log_likelihood_and_reaches_the_batch_fixed_point(tmp_path):
    """Every committed step's parameters, read back from the checkpoint, are scored on all
    the data: the observed-data log-likelihood never falls, step after step, from the start
    (the first iteration is a full E-step and its M-step, as Neal & Hinton start)."""
    X = _mixture(seed=2)
    model = GaussianMixtureModel(3, "full")
    start = _start(model, X)
    data = da.from_array(X, chunks=600)
    checkpoint = Checkpoint(tmp_path / "run.zarr")
    checkpoint.prepare({"config": {}}, compare=())
    schedule = Schedule("incremental", step_blocks=3)
    result = fit_scheduled(
        model, data, start, schedule, max_iter=12, tol=0.0, checkpoint=checkpoint.run(0), keep_last=100
    )
    run = checkpoint.run(0)
    steps = run.iterations()
    assert steps == list(range(steps[-1] + 1))
    assert steps[-1] == 1 + 11 * 4  # the full first iteration, then 10 blocks, 3 per step: 4 M-steps a sweep
    scores = [model.e_step(model.params_from_arrays(run.read(s).params), X).loglik for s in steps]
    drops = np.diff(scores)
    assert drops.min() >= -1e-9 * abs(scores[-1]), drops.min()

    # From a start near it, both run to their fixed point (tol=0: every iteration allowed),
    # which is the same one.
    near = result.params
    batch = fit_em(model, data, near, max_iter=150, tol=0.0)
    converged = fit_scheduled(model, data, near, schedule, max_iter=80, tol=0.0)
    for field in ("weights", "means", "covariances"):
        np.testing.assert_allclose(getattr(converged.params, field), getattr(batch.params, field), rtol=0, atol=1e-8)
    # ... and incremental EM gets there in fewer reads of the data.
    quick_batch = fit_em(model, data, near, max_iter=150, tol=1e-10)
    quick = fit_scheduled(model, data, near, schedule, max_iter=150, tol=1e-10)
    assert quick.converged
    assert quick_batch.converged
    assert quick.n_passes < quick_batch.n_passes
    assert result.n_steps == steps[-1]


# -- online EM ----------------------------------------------------------------------------------


def test_online_with_step_size_one_on_the_whole_data_is_one_batch_step():
    X = _mixture()
    model = GaussianMixtureModel(3, "full")
    start = _start(model, X)
    online = fit_scheduled(model, da.from_array(X, chunks=-1), start, Schedule("online"), max_iter=1, tol=0.0)
    batch = fit_em(model, X, start, max_iter=1, tol=0.0)
    for field in ("weights", "means", "covariances"):
        np.testing.assert_allclose(getattr(online.params, field), getattr(batch.params, field), rtol=1e-13, atol=1e-14)


def test_online_epochs_converge_to_the_batch_maximum_likelihood_estimate():
    X = _mixture(n=20000, seed=3)
    model = GaussianMixtureModel(3, "full")
    start = model.params_from_responsibilities(X, np.eye(3)[np.argmin(((X[:, None] - CENTRES - 0.5) ** 2).sum(-1), 1)])
    batch = fit_em(model, X, start, max_iter=500, tol=1e-12)
    schedule = Schedule("online", learning_decay=0.6, average=True, seed=4)
    online = fit_scheduled(model, da.from_array(X, chunks=500), start, schedule, max_iter=20, tol=0.0)
    order = np.argsort(online.params.means[:, 0] + online.params.means[:, 1])
    expected = np.argsort(batch.params.means[:, 0] + batch.params.means[:, 1])
    np.testing.assert_allclose(online.params.means[order], batch.params.means[expected], atol=0.01)
    np.testing.assert_allclose(online.params.weights[order], batch.params.weights[expected], atol=0.002)
    np.testing.assert_allclose(online.params.covariances[order], batch.params.covariances[expected], atol=0.02)
    # One epoch on 20,000 rows already gets the per-sample log-likelihood within 0.1%.
    one = fit_scheduled(model, da.from_array(X, chunks=500), start, Schedule("online", seed=4), max_iter=1, tol=0.0)
    gap = model.e_step(one.params, X).loglik - model.e_step(batch.params, X).loglik
    assert abs(gap) / abs(model.e_step(batch.params, X).loglik) < 1e-3


def test_partial_fit_over_the_blocks_in_order_is_fit_bitwise():
    X = _mixture()
    fitted = GaussianMixture(3, schedule="online", shuffle=False, max_iter=1, **_explicit()).fit(
        da.from_array(X, chunks=750)
    )
    online = GaussianMixture(3, **_explicit())
    for start in range(0, X.shape[0], 750):
        online.partial_fit(X[start : start + 750])
    for attr in ATTRS:
        assert np.array_equal(getattr(online, attr), getattr(fitted, attr)), attr
    assert online.n_steps_ == fitted.n_steps_ == 8
    assert online.n_samples_seen_ == fitted.n_samples_seen_ == X.shape[0]


def test_a_shuffled_epoch_is_partial_fit_in_the_schedule_s_order():
    X = _mixture()
    fitted = GaussianMixture(3, schedule="online", max_iter=1, **_explicit()).fit(da.from_array(X, chunks=1000))
    order = Schedule("online", seed=0).epoch_order(0, 6)
    assert sorted(order) == list(range(6))
    assert list(order) != list(range(6))
    online = GaussianMixture(3, **_explicit())
    for block in order:
        online.partial_fit(X[block * 1000 : (block + 1) * 1000])
    for attr in ATTRS:
        assert np.array_equal(getattr(online, attr), getattr(fitted, attr)), attr


def test_partial_fit_continues_an_online_fit():
    X = _mixture()
    whole = GaussianMixture(3, schedule="online", shuffle=False, max_iter=1, **_explicit()).fit(
        da.from_array(X, chunks=1000)
    )
    part = GaussianMixture(3, schedule="online", shuffle=False, max_iter=1, **_explicit()).fit(
        da.from_array(X[:3000], chunks=1000)
    )
    for start in range(3000, 6000, 1000):
        part.partial_fit(X[start : start + 1000])
    for attr in ATTRS:
        assert np.array_equal(getattr(part, attr), getattr(whole, attr)), attr


def test_polyak_ruppert_average_is_the_mean_of_the_steps_parameters():
    X = _mixture()
    est = GaussianMixture(3, average=2, **_explicit())
    model = GaussianMixtureModel(3, "full")
    vectors = []
    for start in range(0, 6000, 1000):
        est.partial_fit(X[start : start + 1000])
        vectors.append(model.to_vector(est._online_state.params))
    expected = model.from_vector(np.mean(vectors[2:], axis=0), est._online_state.params)
    np.testing.assert_allclose(est.means_, expected.means, rtol=1e-12)
    np.testing.assert_allclose(est.covariances_, expected.covariances, rtol=1e-10)


# -- stochastic EM --------------------------------------------------------------------------------


def test_stochastic_em_is_reproducible_and_independent_of_the_chunking():
    X = _mixture()
    settings = {"schedule": "stochastic", "max_iter": 12, "average": 6, **_explicit()}
    a = GaussianMixture(3, **settings).fit(da.from_array(X, chunks=1000))
    b = GaussianMixture(3, **settings).fit(da.from_array(X, chunks=1000))
    c = GaussianMixture(3, **settings).fit(da.from_array(X, chunks=700))
    for attr in ATTRS:
        assert np.array_equal(getattr(a, attr), getattr(b, attr))
        np.testing.assert_allclose(getattr(a, attr), getattr(c, attr), rtol=1e-9)
    other = GaussianMixture(3, **{**settings, "random_state": 1}).fit(da.from_array(X, chunks=1000))
    assert not np.array_equal(other.means_, a.means_)
    assert not a.converged_
    assert a.n_iter_ == 12


def test_stochastic_em_average_is_within_sampling_error_of_the_batch_estimate():
    X = _mixture(n=20000, seed=5)
    batch = GaussianMixture(3, tol=1e-10, max_iter=500, **_explicit()).fit(X)
    chain = GaussianMixture(3, schedule="stochastic", max_iter=40, average=True, **_explicit()).fit(X)
    counts = batch.weights_ * X.shape[0]
    sd = np.sqrt(np.diagonal(batch.covariances_, axis1=1, axis2=2) / counts[:, None])
    assert np.all(np.abs(chain.means_ - batch.means_) < 4 * sd)
    assert np.all(np.abs(chain.weights_ - batch.weights_) < 4 * np.sqrt(batch.weights_ * (1 - batch.weights_) / 20000))


# -- resume -----------------------------------------------------------------------------------------


class _Stop(Exception):
    pass


@pytest.mark.parametrize(
    ("schedule", "settings", "stop_at"),
    [
        ("incremental", {"step_blocks": 2, "max_iter": 6, "tol": 0.0}, ("step", 9)),
        ("online", {"max_iter": 3, "tol": 0.0, "average": 5}, ("step", 10)),
        ("stochastic", {"max_iter": 8, "average": 3}, ("fitting", 4)),
    ],
)
def test_an_interrupted_fit_resumes_bitwise(tmp_path, schedule, settings, stop_at):
    """Stopped in the middle of an epoch (sweep), a checkpointed fit resumes where it stopped."""
    X = _mixture()
    data = da.from_array(X, chunks=1000)
    settings = {"schedule": schedule, **settings, **_explicit()}
    expected = GaussianMixture(3, **settings).fit(data)
    ckpt = str(tmp_path / "run.zarr")
    seen = {"n": 0}

    def listener(event):
        if event.phase == stop_at[0] and event.passes:
            seen["n"] += 1
            if seen["n"] == stop_at[1]:
                raise _Stop

    with pytest.raises(_Stop), reporting_progress(listener):
        GaussianMixture(3, checkpoint=ckpt, **settings).fit(data)
    state = Checkpoint(ckpt).run(0).latest()
    assert state is not None
    assert state.key > 0
    resumed = GaussianMixture(3, checkpoint=ckpt, **settings).fit(data)
    for attr in ATTRS:
        assert np.array_equal(getattr(resumed, attr), getattr(expected, attr)), attr
    assert resumed.lower_bounds_ == expected.lower_bounds_
    assert resumed.n_steps_ == expected.n_steps_


def test_a_checkpoint_of_another_schedule_is_refused(tmp_path):
    X = _mixture(n=2000)
    ckpt = str(tmp_path / "run.zarr")
    GaussianMixture(3, checkpoint=ckpt, schedule="online", max_iter=1, **_explicit()).fit(X)
    with pytest.raises(Exception, match="schedule"):
        GaussianMixture(3, checkpoint=ckpt, schedule="incremental", max_iter=1, **_explicit()).fit(X)


def test_statistics_round_trip_through_checkpoint_arrays():
    X = _mixture(n=500)
    model = GaussianMixtureModel(3, "tied")
    params = _start(model, X)
    parts = [model.e_step(params, X[:200]), model.e_step(params, X[200:])]
    back = stats_from_arrays(stats_to_arrays(parts, "s"), "s", model.zero_stats(params))
    for a, b in zip(parts, back, strict=True):
        assert a.n == b.n
        assert a.loglik == b.loglik
        assert a.n_nonfinite == b.n_nonfinite
        for field in ("shift", "resp_sum", "first", "second"):
            assert np.array_equal(getattr(a, field), getattr(b, field))


# -- bad settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"schedule": "minibatch"}, r"'schedule' parameter of GaussianMixture must be a str among \['batch'"),
        ({"schedule": "online", "learning_decay": 0.4}, r"'learning_decay' .* in \(0.5, 1\] .*Got 0.4"),
        ({"schedule": "online", "learning_offset": -1.0}, r"'learning_offset' .* >= 0. Got -1.0"),
        ({"schedule": "incremental", "step_blocks": 0}, r"'step_blocks' .* int >= 1 or None. Got 0"),
        ({"schedule": "online", "average": -2}, r"'average' .* bool or an int >= 0. Got -2"),
        ({"schedule": "online", "n_init": 3}, r"n_init=3 .* Use n_init=1, or schedule='batch'"),
        ({"schedule": "online", "accelerate": "squarem"}, r"accelerate='squarem' .* Use accelerate=None"),
        ({"schedule": "stochastic", "missing": "marginalize"}, r"missing='marginalize' needs the batch"),
    ],
)
def test_bad_schedule_settings_are_refused_with_the_fix(settings, message):
    X = _mixture(n=600)
    with pytest.raises(ParameterError, match=message):
        GaussianMixture(3, random_state=0, max_iter=2, **settings).fit(X)


def test_partial_fit_refuses_averaging_from_halfway():
    with pytest.raises(ParameterError, match=r"average=True.*average=100"):
        GaussianMixture(3, average=True, random_state=0).partial_fit(_mixture(n=600))
