"""Selecting the number of k-means clusters: ``select_kmeans`` and ``daskem select --model kmeans``.

The criterion is X-means' BIC (Pelleg & Moore 2000), checked against a direct oracle: the
log-likelihood summed row by row (SciPy's normal log-density) over scikit-learn's k-means
partition from the same starting centres. The candidates share every pass, their E-steps
batched on one reference (each candidate's statistics equal its own E-step bitwise); a
selection interrupted after a committed pass ends bitwise as an uninterrupted one.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.cluster import KMeans as SklearnKMeans

import daskem
import daskem.select
from daskem.checkpoint import Checkpoint, CheckpointMismatchError
from daskem.em.runs import BatchedModel
from daskem.models import KMeansModel
from daskem.models.kmeans import shared_reference
from daskem.select import PHASES, kmeans_log_likelihood, select_kmeans, select_mixture
from daskem.testing import make_mixture_array, write_mixture_zarr
from daskem.testing.cli import invoke_cli as daskem_cli

TRUE_K = 4
KS = [1, 2, 3, 4, 5]


@pytest.fixture(scope="module")
def blobs():
    # Far apart: X-means' BIC must find the true number of clusters.
    X, _spec = make_mixture_array(4000, 3, TRUE_K, seed=5, chunk_rows=1000, separation=10.0)
    return X


@pytest.fixture(scope="module")
def overlapping():
    X, _spec = make_mixture_array(3000, 2, 3, seed=3, chunk_rows=500, separation=2.0)
    return X


@pytest.fixture
def small_sample(monkeypatch):
    """Starts from 300 sampled rows, so that Lloyd's iterations over all rows still move them."""
    monkeypatch.setattr(daskem.select, "INIT_SAMPLE_ROWS", 300)


def oracle_bic(X, labels, centres):
    """X-means' BIC and AIC of a partition, the log-likelihood summed row by row."""
    n, d = X.shape
    k = centres.shape[0]
    counts = np.bincount(labels, minlength=k)
    sigma = np.sqrt(((X - centres[labels]) ** 2).sum() / (d * (n - k)))
    loglik = (np.log(counts[labels] / n) + norm.logpdf(X, loc=centres[labels], scale=sigma).sum(axis=1)).sum()
    p = (k - 1) + k * d + 1
    return -2.0 * loglik + p * np.log(n), -2.0 * loglik + 2.0 * p


def test_criterion_equals_a_direct_oracle_on_scikit_learns_partition(overlapping, small_sample, tmp_path):
    ckpt = tmp_path / "select.zarr"
    selection = select_kmeans(overlapping, KS, checkpoint=ckpt, keep_last=100)
    X = overlapping.compute()
    assert max(c.n_iter for c in selection.candidates) > 2  # the starts moved
    for r, c in enumerate(selection.candidates):
        start = Checkpoint(ckpt).run(r).read(0).params["centers"]
        km = SklearnKMeans(c.n_components, init=start, n_init=1, max_iter=300, tol=1e-4, algorithm="lloyd").fit(X)
        np.testing.assert_allclose(c.params.centers, km.cluster_centers_, rtol=1e-10, atol=1e-12)
        bic, aic = oracle_bic(X, km.labels_, km.cluster_centers_)
        assert c.bic == pytest.approx(bic, rel=1e-10)
        assert c.aic == pytest.approx(aic, rel=1e-10)
        counts = np.bincount(km.labels_, minlength=c.n_components)
        assert c.log_likelihood == pytest.approx(kmeans_log_likelihood(counts, km.inertia_, X.shape[1]), rel=1e-12)
        assert c.n_parameters == c.n_components * (X.shape[1] + 1)
        assert c.covariance_type is None
        assert c.hyperparameters == {"n_clusters": c.n_components}


def test_selects_the_true_number_of_well_separated_clusters(blobs):
    events = []
    selection = select_kmeans(blobs, [1, 2, 3, 4, 5, 6, 7, 8], callback=events.append)
    assert selection.best_bic.n_components == TRUE_K
    assert selection.best_bic.label == f"k={TRUE_K}"
    assert [c.n_components for c in selection.candidates] == [1, 2, 3, 4, 5, 6, 7, 8]
    phases = [e.phase for e in events]
    assert set(phases) == set(PHASES)
    assert (phases[0], phases[1], phases[-1]) == ("sample", "kmeans", "loglik")
    assert all(e.best_covariance_type is None for e in events)
    last = events[-1]
    assert (last.best_n_components, last.best_bic, last.alive) == (TRUE_K, selection.best_bic.bic, 0)
    assert last.best_label == f"k={TRUE_K}"


def test_grid_of_numbers_of_clusters_batches_each_e_step_bitwise(overlapping, monkeypatch):
    X = overlapping.compute()
    rng = np.random.default_rng(0)
    params = shared_reference([X[rng.choice(len(X), k, replace=False)] for k in (1, 3, 5)])
    models = tuple(KMeansModel(p.centers.shape[0]) for p in params)
    assert len({m.batch_key() for m in models}) == 1
    assert KMeansModel(2).batch_key() != KMeansModel(2, weighted=True).batch_key()
    with monkeypatch.context() as patched:  # one e_step_batch computes them all
        patched.setattr(KMeansModel, "e_step", lambda *args: pytest.fail("the grid's E-steps were not batched"))
        batched = BatchedModel(models[0], models).e_step(tuple(params), X)
    for got, model, p in zip(batched, models, params, strict=True):
        solo = model.e_step(p, X)
        for name in ("n", "loglik", "weight", "sums", "feature_sum", "feature_sq", "far"):
            assert np.asarray(getattr(got, name)).tobytes() == np.asarray(getattr(solo, name)).tobytes(), name


class Interrupt(Exception):
    pass


def assert_same_selection(a, b):
    assert (a.n_passes, a.n_samples) == (b.n_passes, b.n_samples)
    for x, y in zip(a.candidates, b.candidates, strict=True):
        assert (x.n_components, x.n_iter, x.converged, x.history) == (y.n_components, y.n_iter, y.converged, y.history)
        assert (x.log_likelihood, x.bic, x.aic) == (y.log_likelihood, y.bic, y.aic)
        for name, value in x.params.to_arrays().items():
            assert value.tobytes() == y.params.to_arrays()[name].tobytes(), name


def test_resumes_bitwise_after_an_interruption(overlapping, small_sample, tmp_path):
    plain = select_kmeans(overlapping, KS)
    ckpt = tmp_path / "select.zarr"

    def stop(event):
        if event.phase == "em" and event.iteration == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        select_kmeans(overlapping, KS, checkpoint=ckpt, callback=stop)
    states = [Checkpoint(ckpt).run(r).latest() for r in range(len(KS))]
    assert {s.iteration for s in states if not s.finished} == {2}
    events = []
    resumed = select_kmeans(overlapping, KS, checkpoint=ckpt, callback=events.append)
    assert_same_selection(resumed, plain)
    assert [e.phase for e in events if e.phase in ("sample", "kmeans")] == []
    assert (events[0].iteration, events[0].resumed_from) == (3, 2)


def test_refuses_a_checkpoint_of_another_selection(overlapping, tmp_path):
    ckpt = tmp_path / "select.zarr"
    select_mixture(overlapping, [1, 2], max_iter=1, checkpoint=ckpt)
    with pytest.raises(CheckpointMismatchError, match="holds a selection of gmm candidates, not of kmeans"):
        select_kmeans(overlapping, [1, 2], checkpoint=ckpt)
    select_kmeans(overlapping, [1, 2], checkpoint=ckpt, overwrite=True)
    with pytest.raises(CheckpointMismatchError, match=r"select\.n_components=\[1, 2\]"):
        select_kmeans(overlapping, [1, 3], checkpoint=ckpt)


@pytest.mark.parametrize(
    ("ks", "message"),
    [([], "The grid is empty"), ([0], "got 0"), ([4000], "n_clusters=4000 is more than 3999")],
)
def test_refuses_a_bad_grid(blobs, ks, message):
    with pytest.raises(daskem.ParameterError, match=message):
        select_kmeans(blobs, ks)


# -- daskem select --model kmeans ------------------------------------------------------------------


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("kmeans") / "data.zarr"
    write_mixture_zarr(str(path), 4000, 3, TRUE_K, seed=5, chunk_rows=1000, separation=10.0)
    return path


@pytest.fixture(scope="module")
def selected(store, tmp_path_factory):
    """``daskem select DATA --model kmeans -k 2-7 --json -o best.zarr --checkpoint sel.zarr``."""
    root = tmp_path_factory.mktemp("selected")
    args = ["select", store, "--model", "kmeans", "-k", "2-7", "--workers", "0", "-q", "--json"]
    result = daskem_cli(*args, "--checkpoint", root / "sel.zarr", "-o", root / "best.zarr", "--plot", root / "bic.png")
    assert result.returncode == 0, result.stderr
    return root, args, json.loads(result.stdout)


def test_cli_selects_kmeans_and_writes_the_best_model(store, selected):
    root, _, table = selected
    rows = table["candidates"]
    assert [r["n_components"] for r in rows] == [2, 3, 4, 5, 6, 7]
    assert all("covariance_type" not in r for r in rows)
    best = min(rows, key=lambda r: r["bic"])
    assert best["n_components"] == TRUE_K
    selection = select_kmeans(str(store), range(2, 8))
    assert [r["bic"] for r in rows] == [c.bic for c in selection.candidates]
    assert table["n_passes"] == selection.n_passes
    model = daskem.load(root / "best.zarr")
    assert isinstance(model, daskem.KMeans)
    assert model.n_clusters == TRUE_K
    assert model.cluster_centers_.tobytes() == selection.best_bic.params.centers.tobytes()
    assert model.lower_bounds_ == list(selection.best_bic.history)
    assert (root / "bic.png").stat().st_size > 0
    # The checkpoint holds one k-means run per candidate.
    inspected = daskem_cli("inspect", root / "sel.zarr", "--json")
    assert inspected.returncode == 0, inspected.stderr
    assert [spec["n_clusters"] for spec in json.loads(inspected.stdout)["model"]] == [2, 3, 4, 5, 6, 7]
    plotted = daskem_cli("plot", root / "best.zarr", "--sample", "300")
    assert plotted.returncode == 0, plotted.stderr
    assert plotted.stdout.split()[-1] == str(root / "best-components.png")


def test_cli_run_again_on_its_checkpoint_prints_the_same_table(selected):
    root, args, table = selected
    again = daskem_cli(*args, "--checkpoint", root / "sel.zarr")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == table


def test_cli_table_and_progress_lines(store):
    result = daskem_cli("select", store, "--model", "kmeans", "-k", "3..5", "--workers", "0", "--progress", "lines")
    assert result.returncode == 0, result.stderr
    assert "covariance" not in result.stdout
    assert f"best by BIC: k={TRUE_K}; best by AIC: k={TRUE_K}" in result.stdout
    assert f"best by BIC k={TRUE_K}  log-lik " in result.stderr


def test_cli_refuses_a_model_that_cannot_be_selected_and_foreign_options(store):
    result = daskem_cli("select", store, "--model", "ppca", "--workers", "0")
    assert result.returncode == 2
    assert "--model ppca cannot be selected by BIC/AIC: choose among gmm, kmeans." in result.stderr
    foreign = daskem_cli("select", store, "--model", "kmeans", "--covariance-type", "diag", "--workers", "0")
    assert foreign.returncode == 2
    assert "--covariance-type does not apply to --model kmeans" in foreign.stderr
    bad = daskem_cli("select", store, "--covariance-type", "full,banana", "--workers", "0")
    assert bad.returncode == 2
    assert "--covariance-type 'banana' is not accepted by --model gmm" in bad.stderr


@pytest.mark.parametrize(("text", "ks"), [("2-5", [2, 3, 4, 5]), ("2..4", [2, 3, 4]), ("2,4,8", [2, 4, 8]), ("3", [3])])
def test_cli_numbers_of_components(text, ks):
    from daskem.cli.selection import _IntRangeList

    assert _IntRangeList().convert(text, None, None) == ks
