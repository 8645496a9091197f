"""The model registry: the models the ``daskem`` command fits, and how each one is shown.

Each estimator class declares its entry with :func:`register`, a class decorator in the
estimator's own module: its command-line name, its options and the constructor
parameters they set, the summary of a fitted model, the figures ``daskem plot``
draws and, for a model ``daskem select`` can choose, how its grid is fitted and scored
(:class:`Selectable`). The command line (``daskem fit``, ``resume``, ``inspect``,
``plot``, ``select``) reads the registry and never names a model, so a model added later
joins every command by registering.

Layers: estimators import this module to declare their entries and the CLI imports it
to read them. It imports no estimator at import time (:func:`entries` imports the
built-in ones, :mod:`daskem.estimators`, on first use), and no CLI or plotting code.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np

from daskem.errors import DataError, ParameterError
from daskem.models.gaussian import COVARIANCE_TYPES
from daskem.models.missing import MISSING_POLICIES

__all__ = [
    "ALGORITHM_HELP",
    "COVARIANCE_TYPE",
    "LENGTHS",
    "MISSING",
    "N_COMPONENTS",
    "N_INIT",
    "SAMPLE_WEIGHT",
    "SEQUENCE_IDS",
    "ModelEntry",
    "Option",
    "Selectable",
    "Summary",
    "attribute_summary",
    "entries",
    "entry_for",
    "get",
    "read_lengths",
    "register",
]

E = TypeVar("E", bound=type)


@dataclass(frozen=True)
class Option:
    """A command-line option of a model.

    Models that share an option declare it with the same ``flags``, ``kind``, ``help``,
    ``minimum``, ``metavar`` and ``target`` (the command shows it once); ``param``,
    ``default``, ``choices`` and ``convert`` may differ from model to model.

    Attributes
    ----------
    flags : tuple of str
        Its spellings, the long one first (``("--n-components", "-k")``).
    param : str
        The constructor parameter it sets (``target="estimator"``), or the keyword of
        :func:`daskem.as_source` (``target="data"``).
    help : str
        One sentence for ``--help``, capitalised.
    kind : {int, float, str}
        The type of its value.
    default : object, optional
        The command's default; None leaves the estimator's own default.
    minimum : float, optional
        The smallest value allowed (numbers).
    choices : tuple of str, optional
        The values allowed.
    metavar : str, optional
        The value's name in ``--help`` (``FILE``, ``COLUMN``).
    convert : callable, optional
        Applied to the value given on the command line (e.g. read a file of lengths).
    target : {"estimator", "data"}
        Whether the option sets a constructor parameter or says how to read the data.
    """

    flags: tuple[str, ...]
    param: str
    help: str
    kind: type = int
    default: Any = None
    minimum: float | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    convert: Callable[[Any], Any] | None = None
    target: Literal["estimator", "data"] = "estimator"

    @property
    def name(self) -> str:
        """The option's name in Python (``n_components`` for ``--n-components``)."""
        return self.flags[0].lstrip("-").replace("-", "_")


def read_lengths(path: str | os.PathLike[str]) -> np.ndarray:
    """Sequence lengths from a text file: one integer per line, in row order (blank lines skipped).

    Parameters
    ----------
    path : str or os.PathLike
        The file (``daskem fit --lengths FILE``).

    Returns
    -------
    ndarray of int64
        The lengths; :func:`daskem.as_source` checks them against the data.

    Raises
    ------
    DataError
        The file cannot be read, holds no lengths, or a line is not an integer.
    """
    try:
        with open(path, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except OSError as err:
        raise DataError(
            f"Cannot read the lengths file {os.fspath(path)!r} ({err.strerror or err}): pass a text file with one "
            "sequence length per line."
        ) from None
    values = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        try:
            values.append(int(text))
        except ValueError:
            raise DataError(
                f"Line {number} of the lengths file {os.fspath(path)!r} is {text!r}, not an integer: write one "
                "sequence length per line."
            ) from None
    if not values:
        raise DataError(f"The lengths file {os.fspath(path)!r} holds no lengths: write one sequence length per line.")
    return np.asarray(values, dtype=np.int64)


#: The number of components (mixtures), clusters, states or latent factors.
N_COMPONENTS = Option(
    ("--n-components", "-k"),
    "n_components",
    "Number of components: mixture components, clusters, hidden states or latent factors.",
    minimum=1,
)

#: The form of Gaussian covariances (mixture components, HMM states).
COVARIANCE_TYPE = Option(
    ("--covariance-type",),
    "covariance_type",
    "Form of the Gaussian covariances.",
    kind=str,
    choices=tuple(sorted(COVARIANCE_TYPES)),
)

#: Initialisations fitted in shared passes, the best kept.
N_INIT = Option(("--n-init",), "n_init", "Initialisations, fitted in shared passes; the best is kept.", minimum=1)

#: The help of ``--algorithm``, which models declare with their own choices (an HMM's decoder, FastICA's search).
ALGORITHM_HELP = (
    "Algorithm: an HMM's decoder of predict (viterbi: the most probable path; map: the most probable state of each "
    "row), or FastICA's search (parallel: every component at once; deflation: one after the other)."
)

#: What NaN entries of the data are: errors, or values missing at random that the fit marginalises.
MISSING = Option(
    ("--missing",),
    "missing",
    "NaN entries: an error, or values missing at random, marginalised (observed coordinates' likelihood).",
    kind=str,
    choices=MISSING_POLICIES,
)

#: Sequence boundaries from a file (sequence models).
LENGTHS = Option(
    ("--lengths",),
    "lengths",
    "File of the sequence lengths, one integer per line in row order; they sum to the rows of DATA.",
    kind=str,
    metavar="FILE",
    convert=read_lengths,
    target="data",
)

#: Sequence boundaries from a column of sequence ids (tables, sequence models).
SEQUENCE_IDS = Option(
    ("--sequence-ids",),
    "sequence_ids",
    "Column of sequence ids in Parquet/CSV data (a sequence wherever the id changes); not a feature.",
    kind=str,
    metavar="COLUMN",
    target="data",
)


#: Row weights from a file (models whose fit takes ``sample_weight``).
SAMPLE_WEIGHT = Option(
    ("--sample-weight",),
    "sample_weight",
    "Weight of every row of DATA: a .npy file or a 1-D Zarr array of non-negative numbers, one per row.",
    kind=str,
    metavar="PATH",
    target="data",
)


@dataclass(frozen=True)
class Selectable:
    """How ``daskem select`` fits a grid of candidates of a model and scores them.

    Every grid spans the number of components (``-k``); ``axes`` are the model's other
    options it spans. The candidates are fitted in shared passes and scored by BIC and
    AIC (lower is better) by a function of :mod:`daskem.select`.

    Attributes
    ----------
    selection : str
        The function, by its name in :data:`daskem.select.SELECTIONS` (``"mixture"``,
        ``"kmeans"``). It is called with the data and the numbers of components, then by
        keyword with the axes' lists, the settings and the selection's own options
        (``max_iter``, ``tol``, ``random_state``, ``n_init``, ``cache``, ``callback``,
        ``checkpoint``, ``overwrite``).
    criterion : str
        The likelihood that BIC and AIC score, in a few words (``daskem select --help``).
    axes : mapping of str to str
        Options of the model (by :attr:`Option.name`) the grid also spans, each given on
        the command line as a comma-separated list, and the function's keyword that takes
        the list (``{"covariance_type": "covariance_types"}``).
    settings : tuple of str
        Options of the model (by :attr:`Option.name`) that apply to every candidate,
        passed by their parameter name (``("reg_covar",)``).
    """

    selection: str
    criterion: str
    axes: Mapping[str, str] = field(default_factory=dict)
    settings: tuple[str, ...] = ()

    def options(self, entry: ModelEntry) -> tuple[Option, ...]:
        """The options of ``entry`` that ``daskem select`` takes: its axes, then its settings."""
        by_name = {option.name: option for option in entry.options}
        return tuple(by_name[name] for name in (*self.axes, *self.settings))


@dataclass(frozen=True)
class Summary:
    """What a fitted model looks like, for ``daskem inspect`` and the end of ``daskem fit``.

    Attributes
    ----------
    title : str
        The estimator and its main hyperparameters (``GaussianMixture (full)``).
    columns : tuple of str
        Headers of the table: the row label, then one per attribute.
    rows : tuple of tuple of str
        One row per component, cluster, state or factor, formatted.
    notes : tuple of str
        Lines shown under the table (attributes that are not per row).
    values : dict
        Every attribute shown, in full, JSON-able (``inspect --json``), keyed by its name
        without the trailing underscore.
    """

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...]
    values: dict[str, Any]


def _brief(value: np.ndarray) -> str:
    """A scalar to 4 decimals, a vector as its first 4 values to 3 decimals."""
    if value.ndim == 0:
        return f"{float(value):.4f}"
    flat = value.ravel()
    return ", ".join(f"{v:.3f}" for v in flat[:4]) + (", ..." if flat.size > 4 else "")


def attribute_summary(
    label: str,
    rows: Sequence[tuple[str, str]],
    notes: Sequence[tuple[str, str]] = (),
    title: Sequence[str] = (),
) -> Callable[[Any], Summary]:
    """A summary function that tabulates fitted attributes.

    Parameters
    ----------
    label : str
        What a row is (``"component"``, ``"state"``).
    rows : sequence of (header, attribute)
        Attributes with one entry per row (``("weight", "weights_")``); scalars are shown
        to 4 decimals, vectors by their first 4 values.
    notes : sequence of (header, attribute), optional
        Other attributes, one line each under the table.
    title : sequence of str, optional
        Hyperparameters shown after the class name (``("covariance_type",)``).

    Returns
    -------
    callable
        ``summary(estimator) -> Summary``.
    """

    def summary(est: Any) -> Summary:
        shown = ", ".join(str(getattr(est, name)) for name in title)
        tables = [(header, np.asarray(getattr(est, attribute))) for header, attribute in rows]
        body = tuple((str(j), *(_brief(values[j]) for _, values in tables)) for j in range(tables[0][1].shape[0]))
        lines = tuple(f"{header}: {_brief(np.asarray(getattr(est, attribute)))}" for header, attribute in notes)
        values = {
            attribute.strip("_"): np.asarray(getattr(est, attribute)).tolist() for _, attribute in (*rows, *notes)
        }
        return Summary(
            type(est).__name__ + (f" ({shown})" if shown else ""),
            (label, *(header for header, _ in rows)),
            body,
            lines,
            values,
        )

    return summary


@dataclass(frozen=True)
class ModelEntry:
    """One model of the ``daskem`` command.

    Attributes
    ----------
    name : str
        Its name on the command line (``daskem fit --model NAME``).
    estimator : type
        The estimator class (an :class:`daskem.estimators.EMEstimator`).
    description : str
        What it fits, in a few words (``--help``).
    summary : callable
        ``summary(estimator) -> Summary`` of a fitted estimator (see
        :func:`attribute_summary`).
    options : tuple of Option
        Its own options; the engine's (``--max-iter``, ``--tol``, ``--seed``, checkpoints,
        ...) are every model's.
    renames : mapping
        Engine parameters the estimator spells otherwise (``{"max_iter": "n_iter"}``).
    figures : tuple of str
        The figures ``daskem plot`` draws besides the log-likelihood history, by their
        names in :data:`daskem.plot.FIGURES`.
    data : {"features", "symbols", "counts"}
        The data it fits: rows of real features, one column of integer symbols, or rows
        of non-negative counts (documents by words).
    objective : str
        What its per-sample ``lower_bound_`` is (summaries, the history figure's axis).
    select : Selectable, optional
        How ``daskem select`` chooses among its candidates; None: it cannot be selected.
    """

    name: str
    estimator: type
    description: str
    summary: Callable[[Any], Summary]
    options: tuple[Option, ...] = ()
    renames: Mapping[str, str] = field(default_factory=dict)
    figures: tuple[str, ...] = ()
    data: Literal["features", "symbols", "counts"] = "features"
    objective: str = "mean log-likelihood"
    select: Selectable | None = None

    def param(self, name: str) -> str:
        """The constructor parameter of the engine parameter ``name`` (``max_iter`` -> ``n_iter``)."""
        return self.renames.get(name, name)

    def default(self, option: Option) -> Any:
        """The value ``option`` takes when it is not given: its own default, else the estimator's."""
        if option.default is not None or option.target == "data":
            return option.default
        return self.estimator_default(option.param)

    def estimator_default(self, param: str) -> Any:
        """The estimator's default value of the constructor parameter ``param``."""
        return inspect.signature(self.estimator).parameters[param].default

    def arguments(self, given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The constructor keywords and the data-reading keywords of the options given.

        Parameters
        ----------
        given : mapping
            Values by option name (:attr:`Option.name`); None (or absent) for an option
            that was not given.

        Returns
        -------
        (dict, dict)
            Keywords of the estimator's constructor (each option's default where it was
            not given) and of :func:`daskem.as_source`.

        Raises
        ------
        ParameterError
            Two options that set the same parameter were both given.
        """
        chosen: dict[str, Option] = {}
        for option in self.options:
            if given.get(option.name) is None:
                continue
            other = chosen.get(option.param)
            if other is not None:
                raise ParameterError(
                    f"{other.flags[0]} and {option.flags[0]} both set {option.param} of {self.name}: pass one of them."
                )
            chosen[option.param] = option
        estimator: dict[str, Any] = {}
        data: dict[str, Any] = {}
        for option in self.options:
            into = estimator if option.target == "estimator" else data
            if chosen.get(option.param) is option:
                value = given[option.name]
                into[option.param] = option.convert(value) if option.convert is not None else value
            elif option.param not in chosen and option.default is not None:
                into[option.param] = option.default
        return estimator, data


_ENTRIES: dict[str, ModelEntry] = {}


def register(
    name: str,
    *,
    description: str,
    summary: Callable[[Any], Summary],
    options: Sequence[Option] = (),
    renames: Mapping[str, str] | None = None,
    figures: Sequence[str] = (),
    data: Literal["features", "symbols", "counts"] = "features",
    objective: str = "mean log-likelihood",
    select: Selectable | None = None,
) -> Callable[[E], E]:
    """Declare an estimator class as the model ``name`` of the ``daskem`` command.

    A class decorator; the parameters are those of :class:`ModelEntry`. ::

        @register("gmm", description="Gaussian mixture", summary=attribute_summary(...))
        class GaussianMixture(EMEstimator): ...

    Raises
    ------
    ParameterError
        ``name`` is registered already for another class, an option's parameter is not
        one of the constructor's, or ``select`` names an option the model does not have.
    """

    def declare(cls: E) -> E:
        entry = ModelEntry(
            name,
            cls,
            description,
            summary,
            tuple(options),
            dict(renames or {}),
            tuple(figures),
            data,
            objective,
            select,
        )
        accepted = inspect.signature(cls).parameters
        unknown = [o.param for o in entry.options if o.target == "estimator" and o.param not in accepted]
        unknown += [p for p in entry.renames.values() if p not in accepted]
        if unknown:
            raise ParameterError(
                f"The model {name!r} declares options for {unknown}, which {cls.__name__} does not take."
            )
        own = {option.name for option in entry.options}
        missing = [o for o in (*select.axes, *select.settings) if o not in own] if select is not None else []
        if missing:
            raise ParameterError(f"The model {name!r} selects over options it does not declare: {missing}.")
        known = _ENTRIES.get(name)
        if known is not None and known.estimator.__qualname__ != cls.__qualname__:
            raise ParameterError(
                f"The model name {name!r} is registered already for {known.estimator.__qualname__}: choose another."
            )
        _ENTRIES[name] = entry
        return cls

    return declare


def entries() -> tuple[ModelEntry, ...]:
    """Every registered model, sorted by name (the built-in ones are imported first)."""
    import daskem.estimators  # noqa: F401  (the built-in models register when imported)

    return tuple(_ENTRIES[name] for name in sorted(_ENTRIES))


def get(name: str) -> ModelEntry:
    """The model registered as ``name``.

    Raises
    ------
    ParameterError
        No model has that name (the message lists them).
    """
    found = {entry.name: entry for entry in entries()}
    if name not in found:
        raise ParameterError(f"Unknown model {name!r}: choose among {', '.join(found)}.")
    return found[name]


def entry_for(cls: type) -> ModelEntry:
    """The entry of the estimator class ``cls``, or of its nearest registered base class.

    Raises
    ------
    ParameterError
        Neither ``cls`` nor a base class of it is registered.
    """
    by_class = {entry.estimator: entry for entry in entries()}
    for base in cls.__mro__:
        if base in by_class:
            return by_class[base]
    raise ParameterError(
        f"{cls.__name__} is not a model of the daskem command (no daskem.registry.register entry): use it from Python."
    )
