"""``daskem corpus`` and ``daskem topics``: text corpora in, topics out.

``daskem corpus DOCWORD -o CORPUS.zarr`` converts a UCI bag-of-words file to the Zarr CSR
layout (:mod:`daskem.io.corpus`) that topic models fit out of core; ``daskem topics RUN``
prints the top words of every topic of a fitted topic model (a checkpoint or a model
file, loaded as ``daskem plot`` loads it), its topics being the rows of ``components_``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import click


def top_words(components: Any, vocabulary: Sequence[str] | None = None, top: int = 10) -> list[dict[str, Any]]:
    """The ``top`` heaviest words of every topic, by weight within the topic.

    Parameters
    ----------
    components : array-like of shape (n_topics, n_words)
        Non-negative word weights per topic (``components_``); each row is normalised to
        sum to 1 (a row of zeros stays zeros).
    vocabulary : sequence of str, optional
        One word per column; without it, words are named by their column index.
    top : int
        Words per topic (at most ``n_words``).

    Returns
    -------
    list of dict
        One per topic: ``{"topic": k, "words": [{"word", "index", "weight"}, ...]}``,
        heaviest first (ties: the lower column first).
    """
    import numpy as np

    weights = np.asarray(components, dtype=np.float64)
    if weights.ndim != 2:
        raise ValueError(f"components must be 2-D (topics x words); got shape {weights.shape}.")
    if vocabulary is not None and len(vocabulary) != weights.shape[1]:
        raise ValueError(
            f"The vocabulary has {len(vocabulary)} words but the model has {weights.shape[1]} (components_ columns)."
        )
    totals = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    topics = []
    for k, row in enumerate(weights):
        order = np.argsort(-row, kind="stable")[: max(0, top)]
        words = [
            {"word": str(i) if vocabulary is None else vocabulary[i], "index": int(i), "weight": float(row[i])}
            for i in order
        ]
        topics.append({"topic": k, "words": words})
    return topics


def format_topics(topics: list[dict[str, Any]]) -> str:
    """One line per topic of :func:`top_words`: ``topic K  word (weight), ...``."""
    width = len(str(max(len(topics) - 1, 0)))
    return "\n".join(
        f"topic {t['topic']:>{width}}  " + ", ".join(f"{w['word']} ({w['weight']:.4f})" for w in t["words"])
        for t in topics
    )


@click.command("topics")
@click.argument("run", type=click.Path(exists=True))
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Words shown per topic.")
@click.option(
    "--vocab",
    "vocab",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Vocabulary file, one word a line (default: the vocabulary of the data the fit read, else word indices).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the topics as JSON, for scripts.")
def topics(run: str, top: int, vocab: str | None, as_json: bool) -> None:
    """Print the top words of every topic of the topic model in RUN (checkpoint or model file).

    A topic's words are weighted by its row of components_, normalised to sum to 1. The
    words are those of --vocab, else of the vocabulary of the data the fit read (a corpus
    written by `daskem corpus`, or the vocab.NAME.txt beside a docword.NAME.txt file, as
    recorded in RUN), else the column indices.
    """
    from daskem.cli.reporting import _histories
    from daskem.errors import DaskemError
    from daskem.estimators._base import load
    from daskem.io.corpus import read_vocabulary, source_vocabulary

    words: tuple[str, ...] | None
    origin: str | None
    try:
        est = load(run)
        components = getattr(est, "components_", None)
        if components is None:
            raise DaskemError(f"{run} holds a {type(est).__name__}, not a topic model (it has no components_).")
        if vocab is not None:
            words, origin = read_vocabulary(vocab), vocab
        else:
            stored = _histories(run, est)[2]
            location = stored.get("location")
            words = None if location is None else source_vocabulary(location, stored.get("options"))
            origin = None if words is None else location
        found = top_words(components, words, top)
    except (DaskemError, ValueError) as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps({"run": run, "vocabulary": origin, "topics": found}, indent=2, allow_nan=False))
        return
    click.echo(format_topics(found))


@click.command("corpus")
@click.argument("docword", type=click.Path())
@click.option(
    "--vocab",
    "vocab",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Vocabulary file, one word a line [default: vocab.NAME.txt beside docword.NAME.txt, if there].",
)
@click.option("--out", "-o", "out", required=True, type=click.Path(), help="The Zarr corpus to write (new).")
@click.option(
    "--chunk-rows", type=click.IntRange(min=1), default=None, help="Documents per row chunk [default: 16384]."
)
def corpus(docword: str, vocab: str | None, out: str, chunk_rows: int | None) -> None:
    """Convert the UCI bag-of-words file DOCWORD (docword.NAME.txt or .txt.gz) to a Zarr corpus.

    The corpus (a Zarr v3 group of CSR arrays in row chunks of documents, with the
    vocabulary) is what topic models fit out of core: `daskem fit OUT.zarr`, each task
    reading its documents only. DOCWORD is read once, sequentially, a chunk of documents
    at a time. Nothing at OUT is ever replaced.
    """
    import time

    from daskem.errors import DaskemError
    from daskem.io.corpus import DEFAULT_CHUNK_ROWS, docword_to_zarr

    start = time.perf_counter()
    try:
        n_docs, n_words = docword_to_zarr(docword, out, vocabulary=vocab, chunk_rows=chunk_rows or DEFAULT_CHUNK_ROWS)
    except DaskemError as err:
        raise click.ClickException(str(err)) from None
    except FileNotFoundError as err:
        raise click.ClickException(f"Cannot read {docword!r}: {err}") from None
    click.echo(f"wrote {out}: {n_docs:,} documents x {n_words:,} words in {time.perf_counter() - start:.1f}s", err=True)
