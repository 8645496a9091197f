"""Latent Dirichlet allocation: daskem against scikit-learn (and gensim), batch, online, out of core.

The corpora are drawn from LDA's generative model with a seed (nothing is downloaded):
``--topics`` topics over ``--vocab`` words, each ``Dirichlet(0.05)``; every document's
topic proportions ``Dirichlet(0.1)``, its length ``Poisson(--length)`` tokens, every token
a topic from the proportions, then a word from the topic. Held-out documents
(``--test-docs``) come from the same topics. Everything is fitted in one process run on
the same CSR matrix (float64 counts), so the ratios printed at the end compare like with
like on this machine:

- ``batch``: ``daskem.LatentDirichletAllocation`` (Dask's threaded scheduler, 2 threads)
  against ``sklearn.decomposition.LatentDirichletAllocation(learning_method="batch",
  n_jobs=2)``, ``--iters`` iterations each from the same initial ``components_``
  (scikit-learn's draw ``gamma(100, 0.01)`` for ``--seed``: daskem's ``components_init=``,
  and for scikit-learn a subclass that sets them after ``_init_latent_vars``). daskem
  starts every document's ``gamma`` from 1 (its E-step does not depend on the chunking);
  the subclass does the same for scikit-learn (``random_state_ = None``, its start in
  ``transform``), so both compute the same iterations and reach the same perplexity. Seconds
  per iteration: the median of the per-iteration seconds (daskem: the fit's callback;
  scikit-learn: its ``_em_step`` timed), after a warm-up fit of both on a slice (numba
  compilation, joblib's worker processes); ``wall``: a whole fit over its iterations
  (both add one final pass for ``bound_``).
- ``online``: documents per second of ``--epochs`` calls of ``partial_fit`` on the whole
  corpus (``--batch-size`` documents per mini-batch, ``total_samples`` the corpus size,
  the same initial ``components_`` and document start as above; only the mini-batch
  updates are timed, no perplexity pass), daskem against scikit-learn's online learner
  (``n_jobs=2``); and, when ``gensim`` is importable, ``gensim.models.LdaMulticore(workers=2)``
  with the same priors, ``chunksize``, passes, decay (0.7), offset (10) and at most 100
  updates per document (its own random start: it takes no initial topics).
- held-out perplexity of every fit's topics on the same held-out documents, all computed
  by one evaluator (scikit-learn's ``perplexity`` with the topics set; a document's
  ``gamma`` started from 1).

Targets (issue 16, at 100,000 documents, 20,000 words, ~100 tokens a document, k=50):
batch seconds per iteration daskem / scikit-learn <= 0.5 at equal perplexity; online
documents per second daskem / scikit-learn >= 2 at equal perplexity.

``--out-of-core`` writes a Zarr CSR corpus (``daskem.io.corpus.write_csr_zarr``, block by
block from the generator: never held in memory) of ``--ratio`` (default 3) times the total
memory limit of a LocalCluster of ``--workers`` (default 2) single-threaded worker
processes (``--memory-limit`` each, default 768 MiB: a worker holds about 400 MiB of
libraries), counting its CSR arrays as read (float64
values, int32 columns, int64 row pointers), and fits it streamed (``cache=False``) for
``--ooc-iters`` batch iterations with ``--ooc-topics`` topics and at most
``--ooc-doc-iter`` updates per document (the memory a pass needs does not depend on
them; they keep the run short). It prints the peak resident memory of every worker (the
kernel's ``VmHWM``, reset after each iteration) per iteration and for the final
perplexity pass, against the limit. Dask pauses a worker at 80% of its limit, and a
paused worker keeps the tasks queued on it, so the fit would wait for good: a watchdog
aborts it when a worker stays paused for ``--pause-timeout`` seconds. ``--no-pause``
turns pausing off (the peaks alone); ``--keep`` keeps the corpus and reuses one written
with the same settings.

Usage::

    python benchmarks/bench_lda.py                                  # the issue's size
    python benchmarks/bench_lda.py --docs 20000 --topics 20 --iters 5 --epochs 1
    python benchmarks/bench_lda.py --parts online --docs 20000 --topics 20 --no-gensim
    python benchmarks/bench_lda.py --out-of-core --ratio 3 --memory-limit 768MiB
    python benchmarks/bench_lda.py --out-of-core --ratio 3 --workers 1 --memory-limit 1GiB
    python benchmarks/bench_lda.py --out-of-core --keep --no-pause
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
import warnings
from collections.abc import Iterator
from typing import Any

import dask
import numpy as np
import zarr
from _memory import MiB, fit_with_peaks, pause_note, peak_rss, summary
from dask.utils import format_bytes, parse_bytes
from scipy import sparse
from sklearn.decomposition import LatentDirichletAllocation as SklearnLDA
from sklearn.decomposition._online_lda_fast import _dirichlet_expectation_2d

import daskem
from daskem.io.corpus import corpus_attributes, write_csr_zarr

TOPIC_PRIOR = 0.05  # of the generating topics over the words
DOC_PRIOR = 0.1  # of the documents' topic proportions
GEN_BLOCK = 16_384  # documents drawn at a time
CSR_BYTES_PER_VALUE = 8 + 4  # float64 value and int32 column, as read
CSR_BYTES_PER_ROW = 8  # int64 row pointer


# --- the corpus ---------------------------------------------------------------------------


def make_topics(k: int, vocab: int, seed: int) -> np.ndarray:
    """The generating topics: k word distributions, each Dirichlet(TOPIC_PRIOR)."""
    return np.random.default_rng([seed, 0]).dirichlet(np.full(vocab, TOPIC_PRIOR), size=k)


def draw_block(topics: np.ndarray, n: int, length: float, seed: int, part: int, index: int) -> sparse.csr_matrix:
    """``n`` documents from the LDA generative model, as CSR counts (float64).

    Each token's topic comes from its document's proportions; the words of a topic's
    tokens in the block are one multinomial draw from the topic, shuffled over the tokens
    (the same distribution as one draw per token, without a search per token).
    """
    k, vocab = topics.shape
    rng = np.random.default_rng([seed, part, index])
    theta = rng.dirichlet(np.full(k, DOC_PRIOR), size=n)
    per_topic = rng.multinomial(rng.poisson(length, size=n), theta)  # (n, k) tokens of each topic
    docs, words = [], []
    for t in range(k):
        tokens = per_topic[:, t]
        w = np.repeat(np.arange(vocab, dtype=np.int32), rng.multinomial(int(tokens.sum()), topics[t]))
        rng.shuffle(w)
        docs.append(np.repeat(np.arange(n, dtype=np.int32), tokens))
        words.append(w)
    doc, word = np.concatenate(docs), np.concatenate(words)
    return sparse.coo_matrix((np.ones(doc.size), (doc, word)), shape=(n, vocab)).tocsr()  # duplicates summed


def blocks(topics: np.ndarray, n: int, length: float, seed: int, part: int) -> Iterator[sparse.csr_matrix]:
    """``n`` documents in blocks of GEN_BLOCK (block ``i`` drawn from its own seed)."""
    for i, start in enumerate(range(0, n, GEN_BLOCK)):
        yield draw_block(topics, min(GEN_BLOCK, n - start), length, seed, part, i)


def csr_bytes(m: sparse.csr_matrix) -> int:
    return m.nnz * CSR_BYTES_PER_VALUE + (m.shape[0] + 1) * CSR_BYTES_PER_ROW


# --- scikit-learn, aligned ------------------------------------------------------------------


class AlignedSklearnLDA(SklearnLDA):
    """scikit-learn's LDA from ``self.start`` topics, each document's gamma started from 1, EM steps timed."""

    start: np.ndarray
    step_seconds: list[float]

    def _init_latent_vars(self, n_features: int, dtype: Any = np.float64) -> None:
        super()._init_latent_vars(n_features, dtype)
        self.components_ = self.start.astype(dtype, copy=True)
        self.exp_dirichlet_component_ = np.exp(_dirichlet_expectation_2d(self.components_))
        self.random_state_ = None  # _e_step then starts every gamma from 1, as daskem does

    def _em_step(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = super()._em_step(*args, **kwargs)
        self.step_seconds.append(time.perf_counter() - start)
        return out


def aligned_sklearn(k: int, start: np.ndarray, **params: Any) -> AlignedSklearnLDA:
    est = AlignedSklearnLDA(n_components=k, n_jobs=2, **params)
    est.start, est.step_seconds = start, []
    return est


def heldout_perplexity(components: np.ndarray, X_test: sparse.csr_matrix) -> float:
    """Perplexity of ``X_test`` under topics ``components`` (priors 1/k), scikit-learn's computation."""
    k, vocab = components.shape
    ev = SklearnLDA(n_components=k, n_jobs=2)
    ev.components_ = np.asarray(components, dtype=np.float64)
    ev.exp_dirichlet_component_ = np.exp(_dirichlet_expectation_2d(ev.components_))
    ev.doc_topic_prior_ = ev.topic_word_prior_ = 1.0 / k
    ev.n_features_in_ = vocab
    ev.random_state_ = None
    return float(ev.perplexity(X_test))


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


# --- batch and online ---------------------------------------------------------------------


def warm_up(X: sparse.csr_matrix, k: int, start: np.ndarray) -> None:
    """Compile daskem's kernels and start joblib's workers on a slice."""
    head = X[:2000]
    daskem.LatentDirichletAllocation(k, max_iter=1, components_init=start).fit(head)
    daskem.LatentDirichletAllocation(k, learning_method="online", components_init=start).partial_fit(head)
    aligned_sklearn(k, start, max_iter=1).fit(head)
    aligned_sklearn(k, start, learning_method="online", total_samples=2000).partial_fit(head)


def run_batch(X, X_test, k: int, start: np.ndarray, iters: int) -> dict[str, dict[str, float]]:
    sk = aligned_sklearn(k, start, learning_method="batch", max_iter=iters, evaluate_every=-1)
    t0 = time.perf_counter()
    sk.fit(X)
    sk_wall = time.perf_counter() - t0

    secs: list[float] = []
    est = daskem.LatentDirichletAllocation(k, max_iter=iters, evaluate_every=-1, components_init=start)
    t0 = time.perf_counter()
    est.fit(X, callback=lambda rec, _: secs.append(rec.seconds))
    dk_wall = time.perf_counter() - t0

    assert len(sk.step_seconds) == len(secs) == iters, (sk.step_seconds, secs)
    return {
        "sklearn": {
            "iter": statistics.median(sk.step_seconds),
            "wall": sk_wall / iters,
            "perplexity": heldout_perplexity(sk.components_, X_test),
        },
        "daskem": {
            "iter": statistics.median(secs),
            "wall": dk_wall / iters,
            "perplexity": heldout_perplexity(est.components_, X_test),
            "diff": relative(est.components_, sk.components_),
        },
    }


def run_online(X, X_test, k: int, start: np.ndarray, batch_size: int, epochs: int, gensim: bool, seed: int):
    n = X.shape[0]
    common = {"learning_method": "online", "batch_size": batch_size, "total_samples": n}
    out: dict[str, dict[str, float]] = {}

    sk = aligned_sklearn(k, start, **common)
    t0 = time.perf_counter()
    for _ in range(epochs):
        sk.partial_fit(X)
    seconds = time.perf_counter() - t0
    out["sklearn"] = {"docs/s": n * epochs / seconds, "perplexity": heldout_perplexity(sk.components_, X_test)}

    est = daskem.LatentDirichletAllocation(k, components_init=start, **common)
    t0 = time.perf_counter()
    for _ in range(epochs):
        est.partial_fit(X)
    seconds = time.perf_counter() - t0
    out["daskem"] = {
        "docs/s": n * epochs / seconds,
        "perplexity": heldout_perplexity(est.components_, X_test),
        "diff": relative(est.components_, sk.components_),
    }
    if gensim:
        out["gensim"] = run_gensim(X, X_test, k, batch_size, epochs, seed)
    return out


def gensim_or_why() -> str | None:
    """None when gensim can be imported, else why not."""
    try:
        import gensim  # noqa: F401
    except Exception as err:  # not installed, or broken against this NumPy/SciPy
        return f"{type(err).__name__}: {err}"
    return None


def run_gensim(X, X_test, k: int, batch_size: int, epochs: int, seed: int) -> dict[str, float]:
    from gensim.matutils import Sparse2Corpus
    from gensim.models import LdaMulticore

    n, vocab = X.shape
    corpus = Sparse2Corpus(X, documents_columns=False)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lda = LdaMulticore(
            corpus,
            num_topics=k,
            id2word={i: str(i) for i in range(vocab)},
            workers=2,
            chunksize=batch_size,
            passes=epochs,
            alpha=1.0 / k,
            eta=1.0 / k,
            decay=0.7,
            offset=10.0,
            iterations=100,
            gamma_threshold=1e-3,
            eval_every=None,
            random_state=seed,
            dtype=np.float64,
        )
    seconds = time.perf_counter() - t0
    return {"docs/s": n * epochs / seconds, "perplexity": heldout_perplexity(lda.state.get_lambda(), X_test)}


# --- out of core ------------------------------------------------------------------------


def write_corpus(args: argparse.Namespace, path: str, target: int) -> dict[str, int]:
    """Write (or, with ``--keep``, reuse) the out-of-core corpus: at least ``target`` bytes as CSR."""
    settings = {"seed": args.seed, "topics": args.ooc_topics, "vocab": args.vocab, "length": args.length}
    settings["target"] = target
    if args.keep and corpus_attributes(path) is not None:
        stored = dict(zarr.open_group(path, mode="r").attrs.get("bench_lda", {}))
        if stored.pop("settings", None) == settings:
            print(f"reusing {path}", flush=True)
            return stored
    shutil.rmtree(path, ignore_errors=True)
    topics = make_topics(args.ooc_topics, args.vocab, args.seed)
    written = {"bytes": 0, "docs": 0, "nnz": 0}

    def stream() -> Iterator[sparse.csr_matrix]:
        i = 0
        while written["bytes"] < target:
            block = draw_block(topics, GEN_BLOCK, args.length, args.seed, 3, i)
            written["bytes"] += csr_bytes(block) - CSR_BYTES_PER_ROW * (i > 0)
            written["docs"] += block.shape[0]
            written["nnz"] += block.nnz
            i += 1
            yield block

    t0 = time.perf_counter()
    write_csr_zarr(path, stream())
    zarr.open_group(path, mode="r+").attrs["bench_lda"] = {**written, "settings": settings}
    print(f"wrote the corpus in {time.perf_counter() - t0:.0f}s; driver peak {peak_rss() / MiB:.0f} MiB", flush=True)
    return written


def out_of_core(args: argparse.Namespace) -> None:
    limit = parse_bytes(args.memory_limit)
    target = int(args.ratio * args.workers * limit)
    path = os.path.join(args.workdir, "lda-corpus.zarr")
    written = write_corpus(args, path, target)
    disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
    print(
        f"corpus: {written['docs']:,} documents x {args.vocab:,} words, {written['nnz']:,} values "
        f"({format_bytes(written['bytes'])} as CSR float64/int32, {written['bytes'] / (args.workers * limit):.2f}x the "
        f"workers' total limit of {format_bytes(args.workers * limit)}; {format_bytes(disk)} on disk)",
        flush=True,
    )

    est = daskem.LatentDirichletAllocation(
        args.ooc_topics,
        max_iter=args.ooc_iters,
        evaluate_every=-1,
        max_doc_update_iter=args.ooc_doc_iter,
        cache=False,
        random_state=args.seed,
    )
    print(
        f"fitting k={args.ooc_topics}, {args.ooc_iters} iterations, cache=False on {args.workers} workers x "
        f"{format_bytes(limit)} ({pause_note(limit, args.no_pause)})",
        flush=True,
    )
    rows, said = fit_with_peaks(
        lambda callback: est.fit(path, callback=callback),
        args.workers,
        args.memory_limit,
        no_pause=args.no_pause,
        pause_timeout=args.pause_timeout,
        after="final perplexity pass",
    )
    if not args.keep:
        shutil.rmtree(path, ignore_errors=True)

    if not rows:
        print("no iteration finished")
        return
    print(summary(rows, limit) + ("" if said else f"; training perplexity {est.bound_:.1f}"))


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100_000, help="training documents")
    parser.add_argument("--test-docs", type=int, default=5_000, help="held-out documents")
    parser.add_argument("--vocab", type=int, default=20_000, help="words")
    parser.add_argument("--topics", type=int, default=50, help="topics (generating and fitted)")
    parser.add_argument("--length", type=float, default=100.0, help="mean tokens per document (Poisson)")
    parser.add_argument("--parts", nargs="+", choices=("batch", "online"), default=["batch", "online"])
    parser.add_argument("--iters", type=int, default=5, help="batch iterations")
    parser.add_argument("--batch-size", type=int, default=128, help="online mini-batch size")
    parser.add_argument("--epochs", type=int, default=1, help="online passes over the corpus")
    parser.add_argument("--no-gensim", action="store_true", help="leave gensim out of the online part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-of-core", action="store_true", help="only the out-of-core fit of a Zarr corpus")
    parser.add_argument("--ratio", type=float, default=3.0, help="corpus size / total worker memory limit")
    parser.add_argument("--memory-limit", default="768MiB", help="memory limit per worker")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the out-of-core fit")
    parser.add_argument("--ooc-topics", type=int, default=5)
    parser.add_argument("--ooc-iters", type=int, default=2)
    parser.add_argument("--ooc-doc-iter", type=int, default=10, help="max_doc_update_iter of the out-of-core fit")
    parser.add_argument("--keep", action="store_true", help="keep the corpus; reuse one written with the same settings")
    parser.add_argument("--no-pause", action="store_true", help="workers never pause (memory peaks only)")
    parser.add_argument("--pause-timeout", type=float, default=120.0, help="abort when a worker stays paused this long")
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "daskem-bench-lda"))
    args = parser.parse_args()

    dask.config.set(scheduler="threads", num_workers=2)
    if args.out_of_core:
        os.makedirs(args.workdir, exist_ok=True)
        out_of_core(args)
        return

    t0 = time.perf_counter()
    topics = make_topics(args.topics, args.vocab, args.seed)
    X = sparse.vstack(list(blocks(topics, args.docs, args.length, args.seed, 1)), format="csr")
    X_test = sparse.vstack(list(blocks(topics, args.test_docs, args.length, args.seed, 2)), format="csr")
    start = np.random.RandomState(args.seed).gamma(100.0, 0.01, (args.topics, args.vocab))
    print(
        f"corpus: {args.docs:,} documents (+{args.test_docs:,} held out) x {args.vocab:,} words, "
        f"{X.sum() / args.docs:.1f} tokens and {X.nnz / args.docs:.1f} distinct words a document, "
        f"k={args.topics} (drawn in {time.perf_counter() - t0:.0f}s)",
        flush=True,
    )
    print(f"held-out perplexity of the initial topics: {heldout_perplexity(start, X_test):.1f}", flush=True)
    why_no_gensim = "--no-gensim" if args.no_gensim else gensim_or_why()
    if "online" in args.parts and why_no_gensim is not None:
        print(f"gensim skipped: {why_no_gensim}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warm_up(X, args.topics, start)

    if "batch" in args.parts:
        b = run_batch(X, X_test, args.topics, start, args.iters)
        print(f"\nbatch, {args.iters} iterations from the same components_ (s/iter: median; wall: fit / iterations)")
        print(f"{'':>8} {'s/iter':>8} {'wall':>8} {'held-out perplexity':>20}")
        for name, r in b.items():
            print(f"{name:>8} {r['iter']:8.3f} {r['wall']:8.3f} {r['perplexity']:20.2f}", flush=True)
        print(f"daskem's components_ vs scikit-learn's: max relative difference {b['daskem']['diff']:.1e}")
    if "online" in args.parts:
        gensim = why_no_gensim is None
        o = run_online(X, X_test, args.topics, start, args.batch_size, args.epochs, gensim, args.seed)
        print(f"\nonline, batch_size={args.batch_size}, {args.epochs} epoch(s) of partial_fit (gensim: fit)")
        print(f"{'':>8} {'docs/s':>9} {'held-out perplexity':>20}")
        for name, r in o.items():
            print(f"{name:>8} {r['docs/s']:9.0f} {r['perplexity']:20.2f}", flush=True)
        print(f"daskem's components_ vs scikit-learn's: max relative difference {o['daskem']['diff']:.1e}")

    print(f"\nratios ({args.docs:,} documents, {args.vocab:,} words, k={args.topics}):")
    if "batch" in args.parts:
        r = b["daskem"]["iter"] / b["sklearn"]["iter"]
        p = b["daskem"]["perplexity"] / b["sklearn"]["perplexity"]
        print(
            f"  batch s/iter daskem/sklearn {r:.3f} (target <= 0.5: {'met' if r <= 0.5 else 'NOT met'}); "
            f"wall {b['daskem']['wall'] / b['sklearn']['wall']:.3f}; held-out perplexity ratio {p:.4f}"
        )
    if "online" in args.parts:
        r = o["daskem"]["docs/s"] / o["sklearn"]["docs/s"]
        p = o["daskem"]["perplexity"] / o["sklearn"]["perplexity"]
        print(
            f"  online docs/s daskem/sklearn {r:.2f} (target >= 2: {'met' if r >= 2 else 'NOT met'}); "
            f"held-out perplexity ratio {p:.4f}"
        )
        if "gensim" in o:
            g = o["gensim"]
            print(
                f"  online docs/s daskem/gensim {o['daskem']['docs/s'] / g['docs/s']:.2f}; held-out perplexity "
                f"daskem/gensim {o['daskem']['perplexity'] / g['perplexity']:.4f}"
            )


if __name__ == "__main__":
    main()
