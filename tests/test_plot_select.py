"""Pictures (`daskem plot`), model selection (`daskem select`, select_mixture) and the CLI help."""

from __future__ import annotations

import json

import click
import matplotlib.image
import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

import daskem
from daskem.cli import main
from daskem.models.gaussian import covariance_type
from daskem.select import n_parameters, select_mixture
from daskem.testing import make_mixture_array, write_mixture_zarr
from daskem.testing.cli import run_cli as daskem_cli

TRUE_K = 4


@pytest.fixture(scope="module")
def data():
    # Well separated: BIC must find the true number of components.
    X, _spec = make_mixture_array(6000, 3, TRUE_K, seed=5, chunk_rows=1000, separation=8.0)
    return X


@pytest.fixture(scope="module")
def selection(data):
    return select_mixture(data, [1, 2, 3, 4, 5, 6], ["full", "diag"], random_state=0, tol=1e-4)


def assert_not_blank(path):
    image = matplotlib.image.imread(str(path))
    rgb = image[..., :3]
    assert rgb.shape[0] > 200
    assert rgb.shape[1] > 200
    # Not one flat colour: drawn pixels differ from the background, and enough of them.
    assert float(rgb.std()) > 0.05
    assert float((rgb.mean(axis=-1) < 0.9).mean()) > 0.005


def test_select_finds_the_true_number_of_components(selection):
    assert (selection.best_bic.n_components, selection.best_bic.covariance_type) == (TRUE_K, "full")
    assert len(selection.candidates) == 12
    # Shared passes: the sample, the EM iterations of the slowest candidate, the final pass.
    most = max(c.n_iter for c in selection.candidates)
    assert selection.n_passes <= 1 + most + 1
    assert selection.n_passes < sum(c.n_iter for c in selection.candidates)


def test_select_criteria_equal_scikit_learns_for_the_same_parameters(selection, data):
    X = data.compute()
    for c in selection.candidates:
        sk = SklearnGaussianMixture(c.n_components, covariance_type=c.covariance_type)
        p = c.params
        sk.weights_, sk.means_, sk.covariances_, sk.precisions_cholesky_ = (
            p.weights,
            p.means,
            p.covariances,
            p.precisions_cholesky,
        )
        sk.precisions_ = covariance_type(c.covariance_type).precisions(p.precisions_cholesky)
        sk.n_features_in_ = X.shape[1]
        assert c.bic == pytest.approx(sk.bic(X), rel=1e-10)
        assert c.aic == pytest.approx(sk.aic(X), rel=1e-10)
        assert c.n_parameters == sk._n_parameters()
        assert c.n_parameters == n_parameters(c.n_components, X.shape[1], c.covariance_type)


def test_select_candidates_equal_their_own_fits(selection, data):
    # Each candidate of the grid equals a fit of its model alone from the same start (shared
    # passes change nothing): the k=2 full candidate vs GaussianMixture from its final means is
    # at least as good as scikit-learn's own fit.
    X = data.compute()
    best = selection.best_bic
    sk = SklearnGaussianMixture(best.n_components, covariance_type="full", random_state=0, tol=1e-4).fit(X)
    assert best.log_likelihood / X.shape[0] == pytest.approx(sk.score(X), abs=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_components": []}, "The grid is empty"),
        ({"n_components": [0]}, "Numbers of components must be ints >= 1; got 0."),
        ({"n_components": [2], "covariance_types": ["banana"]}, "Unknown covariance type 'banana'"),
        ({"n_components": [10_000]}, "n_components=10000 is more than the 6000 rows of the data"),
    ],
)
def test_select_bad_grid(data, kwargs, message):
    with pytest.raises(daskem.ParameterError, match=message):
        select_mixture(data, **kwargs)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("plot") / "data.zarr"
    write_mixture_zarr(str(path), 8000, 3, 3, seed=2, chunk_rows=2000)
    return path


def test_cli_select_prints_json_and_plots(store, tmp_path):
    plot, model = tmp_path / "select.png", tmp_path / "best.zarr"
    result = daskem_cli(
        "select", store, "-k", "1..4", "--covariance-type", "full,diag", "--workers", "0", "--json",
        "--plot", plot, "-o", model,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert [(r["n_components"], r["covariance_type"]) for r in table["candidates"]] == [
        (k, ct) for ct in ("full", "diag") for k in range(1, 5)
    ]
    best = min(table["candidates"], key=lambda r: r["bic"])
    assert best["n_components"] == 3
    assert_not_blank(plot)
    fitted = daskem.load(model)
    assert fitted.n_components == best["n_components"]
    assert fitted.covariance_type == best["covariance_type"]


def test_cli_select_rejects_a_bad_range(store):
    result = daskem_cli("select", store, "-k", "4..x", "--workers", "0")
    assert result.returncode == 2
    assert "is not a range like 2..16 or a list like 2,4,8" in result.stderr


@pytest.fixture(scope="module")
def checkpoint(store, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "run.zarr"
    result = daskem_cli(
        "fit", store, "-k", "3", "--workers", "0", "--n-init", "2", "--init-params", "random_from_data",
        "--checkpoint", run, "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return run


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_cli_plot_writes_pictures(checkpoint, tmp_path, fmt):
    prefix = tmp_path / "fig-"
    result = daskem_cli("plot", checkpoint, "-o", prefix, "--format", fmt, "--sample", "2000")
    assert result.returncode == 0, result.stderr
    files = [tmp_path / f"fig-loglik.{fmt}", tmp_path / f"fig-components.{fmt}"]
    assert result.stdout.split() == [w for f in files for w in ("wrote", str(f))]
    if fmt == "png":
        for path in files:
            assert_not_blank(path)
    else:
        for path in files:
            text = path.read_text()
            assert text.lstrip().startswith("<?xml")
            assert "<svg" in text
            assert text.count("<path") > 10


def test_cli_plot_of_a_model_file_needs_data_for_components(checkpoint, store, tmp_path):
    model = tmp_path / "model.zarr"
    daskem.load(checkpoint).save(model)
    alone = daskem_cli("plot", model, "-o", tmp_path / "a-")
    assert alone.returncode == 0, alone.stderr
    assert "pass --data to draw the components" in alone.stderr
    assert_not_blank(tmp_path / "a-loglik.png")
    assert not (tmp_path / "a-components.png").exists()
    with_data = daskem_cli("plot", model, "--data", store, "-o", tmp_path / "b-")
    assert with_data.returncode == 0, with_data.stderr
    assert_not_blank(tmp_path / "b-components.png")


def test_every_command_and_option_has_help():
    assert main.help
    for name, command in main.commands.items():
        assert command.help, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.help, (name, param.opts)
                assert param.help[0].isupper(), (name, param.opts)
    result = daskem_cli("--help")
    assert result.returncode == 0
    for name in main.commands:
        assert name in result.stdout
        sub = daskem_cli(name, "--help")
        assert sub.returncode == 0, sub.stderr
        for param in main.commands[name].params:
            if isinstance(param, click.Option):
                assert param.opts[0] in sub.stdout, (name, param.opts)


def test_projection_keeps_two_features_and_finds_the_principal_plane():
    from daskem.plot import projection

    rng = np.random.default_rng(0)
    flat = np.column_stack([rng.normal(0, 10, 500), rng.normal(0, 3, 500), rng.normal(0, 0.01, 500)])
    centre, basis = projection(flat)
    assert np.allclose(np.abs(basis), np.eye(3, 2), atol=1e-2)
    assert np.allclose(centre, flat.mean(axis=0))
    centre2, basis2 = projection(flat[:, :2])
    assert np.array_equal(basis2, np.eye(2))
    assert np.array_equal(centre2, np.zeros(2))
