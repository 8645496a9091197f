"""Pictures (`daskem plot`), model selection (`daskem select`, select_mixture) and the CLI help."""

from __future__ import annotations

import json

import click
import matplotlib.image
import numpy as np
import pytest
import zarr
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

import daskem
from daskem.checkpoint.store import read_arrays_group
from daskem.cli import main
from daskem.models.gaussian import covariance_type
from daskem.select import n_parameters, select_mixture
from daskem.testing import make_mixture_array, write_mixture_zarr
from daskem.testing.cli import invoke_cli as daskem_cli

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
    assert "is not a range like 2-16 (or 2..16) or a list like 2,4,8" in result.stderr


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


def test_cli_plot_of_a_model_file_draws_the_data_the_fit_read(store, tmp_path):
    # `daskem fit DATA --output M.zarr` records where the data are; `daskem plot M.zarr`
    # draws both pictures from there, also after the model is loaded and saved again.
    model, again = tmp_path / "model.zarr", tmp_path / "again.zarr"
    fit = daskem_cli("fit", store, "-k", "3", "--workers", "0", "--max-iter", "5", "--output", model, "-q")
    assert fit.returncode == 0, fit.stderr
    _arrays, info = read_arrays_group(model)
    assert info["fit"]["source"] == {"location": str(store), "options": {}}
    daskem.load(model).save(again)
    assert read_arrays_group(again)[1]["fit"]["source"] == info["fit"]["source"]
    for path in (model, again):
        result = daskem_cli("plot", path, "--sample", "1000")
        assert result.returncode == 0, result.stderr
        files = [tmp_path / f"{path.stem}-loglik.png", tmp_path / f"{path.stem}-components.png"]
        assert result.stdout.split() == [w for f in files for w in ("wrote", str(f))]
        for file in files:
            assert_not_blank(file)


def test_cli_plot_of_an_in_memory_fit_fails_naming_data(store, tmp_path):
    X = np.asarray(zarr.open_array(str(store), mode="r")[:])
    model = tmp_path / "model.zarr"
    daskem.GaussianMixture(3, random_state=0, max_iter=5).fit(X).save(model)
    assert read_arrays_group(model)[1]["fit"]["source"] is None
    alone = daskem_cli("plot", model, "-o", tmp_path / "a")
    # The picture that can be drawn is written, then the command fails and names --data.
    assert alone.returncode == 1, alone.stderr
    assert alone.stdout.split() == ["wrote", str(tmp_path / "a-loglik.png")]
    assert "records no data location" in alone.stderr
    assert "pass --data DATA" in alone.stderr
    assert_not_blank(tmp_path / "a-loglik.png")
    assert not (tmp_path / "a-components.png").exists()
    with_data = daskem_cli("plot", model, "--data", store, "-o", tmp_path / "b", "--sample", "1000")
    assert with_data.returncode == 0, with_data.stderr
    assert_not_blank(tmp_path / "b-components.png")


def test_cli_plot_output_prefix_and_directory(checkpoint, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "existing").mkdir()
    cases = [
        (str(tmp_path / "x" / "run"), ["x/run-loglik.png", "x/run-components.png"]),
        (str(tmp_path / "new") + "/", ["new/loglik.png", "new/components.png"]),
        (str(tmp_path / "existing"), ["existing/loglik.png", "existing/components.png"]),
    ]
    for prefix, names in cases:
        result = daskem_cli("plot", checkpoint, "-o", prefix, "--sample", "500")
        assert result.returncode == 0, result.stderr
        files = [tmp_path / name for name in names]
        assert result.stdout.split() == [w for f in files for w in ("wrote", str(f))]
        for file in files:
            assert_not_blank(file)
    assert not (tmp_path / "x" / "runloglik.png").exists()
    assert not (tmp_path / "existingloglik.png").exists()


def test_picture_paths_defaults_beside_run():
    from daskem.plot import picture_paths

    names = ["loglik", "components"]
    assert picture_paths("out/run.zarr", None, "svg", names) == ["out/run-loglik.svg", "out/run-components.svg"]
    assert picture_paths("out/run.zarr/", None, "png", names) == ["out/run-loglik.png", "out/run-components.png"]
    prefixed = ["figs/fit_loglik.png", "figs/fit_components.png"]
    assert picture_paths("out/run.zarr", "figs/fit_", "png", names) == prefixed
    assert picture_paths("out/run.zarr", "figs/", "png", ["states"]) == ["figs/states.png"]


@pytest.fixture
def drawn(monkeypatch):
    """The figures daskem.plot draws, after they are saved (the axes of each, in order)."""
    import daskem.plot

    figures = []
    finish = daskem.plot._finish

    def keep(plt, fig, path, show):
        out = finish(plt, fig, path, show)
        figures.append(fig)
        return out

    monkeypatch.setattr(daskem.plot, "_finish", keep)
    return figures


def rgb(colours):
    return np.round(np.asarray(colours, dtype=float)[..., :3], 6)


@pytest.mark.parametrize("kind", ["gmm", "kmeans"])
def test_plot_components_colours_each_component_alike(data, drawn, tmp_path, kind):
    from daskem.plot import component_colours, plot_components

    X = data.compute()[:3000]
    est = daskem.GaussianMixture(TRUE_K, random_state=0) if kind == "gmm" else daskem.KMeans(TRUE_K, random_state=0)
    est.fit(X)
    plot_components(est, X, str(tmp_path / "c.png"))
    (fig,) = drawn
    (ax,) = fig.axes
    labels = est.predict(X)
    assert len(set(labels.tolist())) == TRUE_K
    expected = rgb(component_colours(TRUE_K))
    assert len({tuple(c) for c in expected}) == TRUE_K  # distinct colours
    points, means = ax.collections
    # Every point has its component's colour; so has the component's mean marker ...
    assert np.array_equal(rgb(points.get_facecolors()), expected[labels])
    assert np.array_equal(rgb(means.get_facecolors()), expected)
    # ... and, for a mixture, both of its ellipses.
    if kind == "gmm":
        assert len(ax.patches) == 2 * TRUE_K
        for j in range(TRUE_K):
            for patch in ax.patches[2 * j : 2 * j + 2]:
                assert np.array_equal(rgb(patch.get_edgecolor()), expected[j])
                assert np.allclose(patch.center, ((est.means_[j] - X.mean(axis=0)) @ _basis(X))[:2])
    else:
        assert not ax.patches


def _basis(X):
    from daskem.plot import projection

    return projection(X)[1]


def test_plot_history_ticks_are_whole_iterations(drawn, tmp_path):
    from daskem.plot import plot_history

    plot_history([np.array([-3.0, -2.5, -2.4]), np.array([-3.2, -2.9])], 0, str(tmp_path / "h.png"))
    (fig,) = drawn
    ticks = fig.axes[0].get_xticks()
    assert len(ticks) >= 2
    assert np.array_equal(ticks, np.round(ticks))
    low, high = fig.axes[0].get_xlim()
    assert {1, 2, 3} <= {int(t) for t in ticks if low <= t <= high}


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
