"""The registry's models as command-line options, and the options that say how to read DATA.

``daskem fit`` takes the options of every registered model (:mod:`daskem.registry`):
models that share an option share it on the command line, with each model's default
named in its help. Once ``--model`` is known, :func:`model_arguments` refuses an option
the model does not take and maps the others to the estimator's constructor parameters.
The model options are built when a command first needs them (:class:`ModelCommand`),
so that ``daskem --help`` does not import the estimators.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from daskem.registry import ModelEntry, Option

#: The model ``daskem fit`` and ``daskem select`` use without ``--model``.
DEFAULT_MODEL = "gmm"

#: The engine's options, which every model has (EMEstimator's parameters), and the
#: parameters they set before a model's renames (:meth:`daskem.registry.ModelEntry.param`).
ENGINE_PARAMS = {
    "max_iter": "max_iter",
    "tol": "tol",
    "seed": "random_state",
    "split_every": "split_every",
    "accelerate": "accelerate",
    "checkpoint": "checkpoint",
    "checkpoint_every": "checkpoint_every",
    "keep_last": "keep_last",
    "force_restart": "overwrite_checkpoint",
}

#: ``--cache`` as the estimators' ``cache`` parameter.
CACHE_CHOICES: dict[str, str | bool] = {"auto": "auto", "yes": True, "no": False}

#: The schedule options (:mod:`daskem.em.schedules`): the constructor parameter each one
#: sets. Like the engine's options they are declared once for every model, and apply to
#: the models whose estimator takes the parameter (``--learning-decay`` and
#: ``--learning-offset`` also set LDA's online learning rate, which has the same form).
SCHEDULE_PARAMS = {
    "schedule": "schedule",
    "step_blocks": "step_blocks",
    "learning_decay": "learning_decay",
    "learning_offset": "learning_offset",
    "average": "average",
    "no_shuffle": "shuffle",
}

#: The schedules that read each schedule setting (for a model with a ``schedule`` parameter).
SCHEDULE_SETTINGS = {
    "step_blocks": ("incremental", "online"),
    "learning_decay": ("online",),
    "learning_offset": ("online",),
    "average": ("online", "stochastic"),
    "no_shuffle": ("online",),
}


class AverageType(click.ParamType):
    """``--average``: ``no`` (False), ``half`` (True: the second half) or a count ``N >= 0``."""

    name = "no|half|N"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bool | int:
        """The estimators' ``average`` from the text given (a usage error naming the spellings)."""
        if isinstance(value, bool | int):
            return value
        text = str(value).strip().lower()
        if text == "no":
            return False
        if text == "half":
            return True
        try:
            count = int(text)
        except ValueError:
            count = -1
        if count < 0:
            self.fail(
                f"{value!r} is not one of: no (report the last parameters), half (average over the second half of "
                "the steps or iterations), or a count N >= 0 (average over those after the first N).",
                param,
                ctx,
            )
        return count


class LearningDecayType(click.ParamType):
    """``--learning-decay``: a float in (0.5, 1]."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        """The decay, refused outside (0.5, 1] with the reason."""
        try:
            decay = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number: give a decay in (0.5, 1], e.g. 0.55.", param, ctx)
        if not 0.5 < decay <= 1.0:
            self.fail(
                f"{value!r} is not in (0.5, 1]: the step sizes (t + offset)^-decay must sum to infinity and their "
                "squares must not. Give a decay in (0.5, 1], e.g. 0.55.",
                param,
                ctx,
            )
        return decay


class ModelCommand(click.Command):
    """A command whose model options are built on first use, from the registry.

    ``daskem --help`` lists the commands without them, so it never imports the
    estimators; ``daskem fit --help`` and every run of the command build them once.

    Parameters
    ----------
    *args, **kwargs
        Those of :class:`click.Command`.
    model_params : callable
        Returns the options to put before the command's own (declared) ones.
    """

    def __init__(self, *args: Any, model_params: Callable[[], list[click.Parameter]], **kwargs: Any) -> None:
        self._model_params = model_params
        self._built: list[click.Parameter] | None = None
        super().__init__(*args, **kwargs)

    @property
    def params(self) -> list[click.Parameter]:
        """The model options, then the declared ones."""
        if self._built is None:
            self._built = [*self._model_params(), *self._declared]
        return self._built

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._declared = list(value)
        self._built = None


def engine_defaults(entries: tuple[ModelEntry, ...], param: str) -> str:
    """Every model's default of the engine parameter ``param``, for ``--help``."""
    return ", ".join(f"{entry.name}={entry.estimator_default(entry.param(param))!r}" for entry in entries)


def click_type(option: Option, choices: tuple[str, ...] | None) -> Any:
    """The click type of ``option``'s values (``choices``: those of every model that takes it)."""
    if choices:
        return click.Choice(choices)
    if option.kind is int:
        return click.IntRange(min=None if option.minimum is None else int(option.minimum))
    if option.kind is float:
        return click.FloatRange(min=option.minimum)
    return click.STRING


def shared_options(entries: tuple[ModelEntry, ...]) -> dict[tuple[str, ...], list[tuple[ModelEntry, Option]]]:
    """The models' options grouped by their flags, checked to agree where models share them."""
    groups: dict[tuple[str, ...], list[tuple[ModelEntry, Option]]] = {}
    spelled: dict[str, tuple[str, ...]] = {}
    for entry in entries:
        for option in entry.options:
            for flag in option.flags:
                if spelled.setdefault(flag, option.flags) != option.flags:
                    raise click.ClickException(
                        f"The model {entry.name!r} declares {flag} as {option.flags}, another model as "
                        f"{spelled[flag]}: declare shared options alike (daskem.registry.Option)."
                    )
            groups.setdefault(option.flags, []).append((entry, option))
    for flags, declared in groups.items():
        first = declared[0][1]
        for entry, option in declared[1:]:
            same = (option.kind, option.help, option.minimum, option.metavar, option.target)
            if same != (first.kind, first.help, first.minimum, first.metavar, first.target):
                raise click.ClickException(
                    f"The model {entry.name!r} declares {flags[0]} otherwise than {declared[0][0].name!r} (kind, "
                    "help, minimum, metavar or target): declare shared options alike (daskem.registry.Option)."
                )
    return groups


def fit_params() -> list[click.Parameter]:
    """``--model``, every model's options and the engine's options of ``daskem fit``."""
    from daskem import registry
    from daskem.em.accelerate import ACCELERATIONS

    entries = registry.entries()
    described = "; ".join(f"{entry.name}: {entry.description}" for entry in entries)
    params: list[click.Parameter] = [
        click.Option(
            ["--model"],
            type=click.Choice([entry.name for entry in entries]),
            default=DEFAULT_MODEL,
            show_default=True,
            help=f"Model to fit ({described}).",
        )
    ]
    for flags, declared in shared_options(entries).items():
        first = declared[0][1]
        choices = tuple(dict.fromkeys(c for _, option in declared for c in option.choices or ()))
        if first.target == "data":
            where = ", ".join(entry.name for entry, _ in declared)
        else:
            where = "default: " + ", ".join(f"{entry.name}={entry.default(option)!r}" for entry, option in declared)
        params.append(
            click.Option(
                [first.name, *flags],
                type=click_type(first, choices),
                default=None,
                metavar=first.metavar,
                help=f"{first.help} [{where}]",
            )
        )
    return [
        *params,
        *_engine_params(entries, tuple(a for a in ACCELERATIONS if a is not None)),
        *schedule_options(entries),
    ]


def takes(entry: ModelEntry, param: str) -> bool:
    """Whether the estimator of ``entry`` has the constructor parameter ``param``."""
    import inspect

    return param in inspect.signature(entry.estimator).parameters


def schedule_options(entries: tuple[ModelEntry, ...]) -> list[click.Parameter]:
    """``--schedule`` and its settings (:mod:`daskem.em.schedules`), for the models that take them."""
    from daskem.em.schedules import SCHEDULES

    def users(param: str) -> str:
        return ", ".join(entry.name for entry in entries if takes(entry, param)) or "none"

    def defaults(param: str) -> str:
        return engine_defaults(tuple(e for e in entries if takes(e, param)), param) or "none"

    return [
        click.Option(
            ["--schedule"],
            type=click.Choice(SCHEDULES),
            default=None,
            help="Which blocks each M-step reads: batch (all, every iteration: EM), incremental (a step re-reads "
            "--step-blocks blocks and replaces their statistics; an iteration is a sweep), online (running "
            "statistics with step sizes (t + offset)^-decay; an iteration is an epoch), stochastic (drawn "
            "components, a chain of --max-iter iterations). Not batch: one initialisation, no --accelerate "
            f"[models: {users('schedule')}; default: batch].",
        ),
        click.Option(
            ["--step-blocks"],
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            help="Blocks (chunks of --chunk-rows rows) read per step of the incremental and online schedules "
            "[default: incremental a quarter of the blocks, online 1].",
        ),
        click.Option(
            ["--learning-decay"],
            type=LearningDecayType(),
            default=None,
            help="Online step sizes (t + offset)^-decay: the decay, in (0.5, 1] "
            f"[default: {defaults('learning_decay')}].",
        ),
        click.Option(
            ["--learning-offset"],
            type=click.FloatRange(min=0.0),
            default=None,
            help=f"Online step sizes (t + offset)^-decay: the offset, >= 0 [default: {defaults('learning_offset')}].",
        ),
        click.Option(
            ["--average"],
            type=AverageType(),
            default=None,
            metavar="no|half|N",
            help="Online and stochastic schedules: report the parameters' average (Polyak-Ruppert; the chain's "
            "mean) over the steps (online) or iterations (stochastic) after the first N, or over the second half "
            "of them (half), instead of the last parameters (no) [default: no].",
        ),
        click.Option(
            ["--no-shuffle"],
            is_flag=True,
            default=None,
            help="Online schedule: visit the blocks in order every epoch (default: a new seeded order per epoch).",
        ),
    ]


def schedule_arguments(entry: ModelEntry, given: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor keywords of the schedule options given (:data:`SCHEDULE_PARAMS`).

    Parameters
    ----------
    entry : ModelEntry
        The model chosen with ``--model``.
    given : mapping
        The schedule options' values by name; None (``--no-shuffle``: False) where not given.

    Returns
    -------
    dict
        ``schedule``, ``step_blocks``, ... as the estimator takes them.

    Raises
    ------
    click.UsageError
        An option the model's estimator does not take (naming the models that take it and
        the model's own options), or a setting that the schedule chosen does not read.
    """
    from daskem import registry

    out: dict[str, Any] = {}
    chosen = {name: value for name, value in given.items() if value is not None and value is not False}
    for name, value in chosen.items():
        param = SCHEDULE_PARAMS[name]
        flag = "--" + name.replace("_", "-")
        if not takes(entry, param):
            users = [e.name for e in registry.entries() if takes(e, param)]
            own = ", ".join(o.flags[0] for o in entry.options) or "none besides the engine's"
            raise click.UsageError(
                f"{flag} does not apply to --model {entry.name}: {entry.estimator.__name__} has no {param!r} "
                f"parameter (the models that take it: {', '.join(users)}). The options of {entry.name}: {own}."
            )
        out[param] = False if name == "no_shuffle" else value
    if takes(entry, "schedule"):
        schedule = chosen.get("schedule", entry.estimator_default("schedule"))
        for name in chosen:
            reading = SCHEDULE_SETTINGS.get(name)
            if reading is not None and schedule not in reading:
                flag = "--" + name.replace("_", "-")
                raise click.UsageError(
                    f"{flag} is a setting of --schedule {' or '.join(reading)}; it has no effect with --schedule "
                    f"{schedule}. Add --schedule {reading[0]}, or drop {flag}."
                )
    return out


def stopping_options(entries: tuple[ModelEntry, ...], min_iter: int, tol_rule: str) -> list[click.Parameter]:
    """``--max-iter`` (at least ``min_iter``) and ``--tol`` (judged by ``tol_rule``), defaults per model."""
    return [
        click.Option(
            ["--max-iter"],
            type=click.IntRange(min=min_iter),
            default=None,
            help=f"EM iterations at most [default: {engine_defaults(entries, 'max_iter')}].",
        ),
        click.Option(
            ["--tol"],
            type=click.FloatRange(min=0.0),
            default=None,
            help=f"Convergence threshold, by {tol_rule} [default: {engine_defaults(entries, 'tol')}].",
        ),
    ]


def _engine_params(entries: tuple[ModelEntry, ...], accelerations: tuple[str, ...]) -> list[click.Parameter]:
    rule = (
        "each model's own rule (mixtures, PPCA, FA: change of the mean log-likelihood; HMMs: gain of the total "
        "log-likelihood; k-means: centre shift)"
    )
    return [
        *stopping_options(entries, 0, rule),
        click.Option(["--seed"], type=int, default=0, show_default=True, help="Seed of the fit (random_state)."),
        click.Option(["--split-every"], type=click.IntRange(min=2), default=None, help="Fan-in of the reduction tree."),
        click.Option(
            ["--accelerate"],
            type=click.Choice(accelerations),
            default=None,
            help="Accelerate EM (SQUAREM: extrapolated steps, never a lower likelihood); default: plain EM.",
        ),
        click.Option(
            ["--checkpoint"],
            type=click.Path(),
            default=None,
            help="Checkpoint to this Zarr group after iterations; if it holds a checkpoint of this fit, resume it.",
        ),
        click.Option(
            ["--checkpoint-every"],
            type=click.IntRange(min=1),
            default=1,
            show_default=True,
            help="Iterations between commits (incremental and online schedules: M-steps, inside iterations too).",
        ),
        click.Option(
            ["--keep-last"], type=click.IntRange(min=1), default=2, show_default=True, help="Committed iterations kept."
        ),
        click.Option(["--force-restart"], is_flag=True, help="Discard an existing checkpoint and start afresh."),
    ]


def model_option_names() -> set[str]:
    """The names of every model's options (the keyword arguments ``daskem fit`` receives for them)."""
    from daskem import registry

    return {option.name for entry in registry.entries() for option in entry.options}


def model_arguments(entry: ModelEntry, given: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The constructor and data-reading keywords of ``entry`` from the model options given.

    Parameters
    ----------
    entry : ModelEntry
        The model chosen with ``--model``.
    given : mapping
        Every model option's value by name, None where it was not given.

    Returns
    -------
    (dict, dict)
        See :meth:`daskem.registry.ModelEntry.arguments`.

    Raises
    ------
    click.UsageError
        An option of another model was given, or a value the model does not accept.
    """
    from daskem import registry

    own = {option.name: option for option in entry.options}
    for name, value in given.items():
        if value is None:
            continue
        option = own.get(name)
        if option is None:
            users = [e for e in registry.entries() if any(o.name == name for o in e.options)]
            flag = next(o.flags[0] for o in users[0].options if o.name == name)
            takes = ", ".join(o.flags[0] for o in entry.options) or "none besides the engine's"
            raise click.UsageError(
                f"{flag} does not apply to --model {entry.name}; it is an option of "
                f"{', '.join(e.name for e in users)}. The options of {entry.name}: {takes}."
            )
        if option.choices and value not in option.choices:
            raise click.UsageError(
                f"{option.flags[0]} {value!r} is not accepted by --model {entry.name}: choose among "
                f"{', '.join(option.choices)}."
            )
    return entry.arguments(given)


def engine_arguments(entry: ModelEntry, given: Mapping[str, Any]) -> dict[str, Any]:
    """The constructor keywords of the engine options given (None: the estimator's default)."""
    return {entry.param(ENGINE_PARAMS[name]): value for name, value in given.items() if value is not None}


def source_options(func: Any) -> Any:
    """The options that say how to read DATA (shared by fit and select; stored for resume)."""
    options = [
        click.option("--variable", default=None, help="Variable of a NetCDF file, or array inside a Zarr group."),
        click.option("--columns", default=None, help="Comma-separated columns of Parquet/CSV data (default: numeric)."),
        click.option("--dataset", default=None, help="Dataset inside an HDF5 file, e.g. /data/x."),
        click.option("--chunk-rows", type=click.IntRange(min=1), default=None, help="Rows per block (rechunks)."),
        click.option(
            "--cache",
            type=click.Choice(list(CACHE_CHOICES)),
            default="auto",
            show_default=True,
            help="Persist the data in cluster memory once, or stream them every iteration.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def source_kwargs(
    variable: str | None, columns: str | None, dataset: str | None, chunk_rows: int | None
) -> dict[str, Any]:
    """The keywords of :func:`daskem.as_source` from the source options given."""
    found = {
        "variable": variable,
        "columns": [c.strip() for c in columns.split(",")] if columns else None,
        "dataset": dataset,
        "chunk_rows": chunk_rows,
    }
    return {k: v for k, v in found.items() if v is not None}
