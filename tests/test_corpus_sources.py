"""Sparse text corpora out of core: the Zarr CSR layout, UCI bag-of-words files, ``as_source``
on both, ``daskem corpus`` and ``daskem topics``.

Every reader is checked against the same small document-term matrix, written by hand as a
UCI docword/vocab pair (plain and gzip'ed), for every chunking; per-chunk reads are checked
to open only their chunk's storage; writers are checked never to replace anything.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import zarr
from scipy import sparse

import daskem
from daskem.cli.topics import format_topics, top_words
from daskem.errors import DataError, DestinationExistsError, StoreError
from daskem.io import corpus
from daskem.io.sources import DataSource, as_source
from daskem.testing.cli import invoke_cli

# A hand-made corpus of 7 documents over 5 words: document 3 (1-based) and the last one
# are empty (no line in the docword file); document 5 lists word 2 twice (summed).
DENSE = np.array(
    [
        [2, 0, 1, 0, 0],
        [0, 3, 0, 0, 1],
        [0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [0, 4, 0, 0, 2],
        [5, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ],
    dtype=np.float64,
)
DOCWORD = """7
5
13
1 1 2
1 3 1
2 2 3
2 5 1
4 1 1
4 2 1
4 3 1
4 4 1
4 5 1
5 2 1
5 2 3
5 5 2
6 1 5
"""
WORDS = ("apple", "banana", "cherry", "date", "elder")


@pytest.fixture
def uci(tmp_path: Path) -> dict[str, str]:
    """The hand-made corpus as docword.hand.txt, docword.zipped.txt.gz and vocab.hand.txt."""
    plain = tmp_path / "docword.hand.txt"
    plain.write_text(DOCWORD)
    zipped = tmp_path / "docword.zipped.txt.gz"
    with gzip.open(zipped, "wt") as f:
        f.write(DOCWORD)
    vocab = tmp_path / "vocab.hand.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    return {"plain": str(plain), "gzip": str(zipped), "vocab": str(vocab)}


def _random_csr(n_docs: int = 203, n_words: int = 41, seed: int = 0) -> sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 9, (n_docs, n_words)) * (rng.random((n_docs, n_words)) < 0.12)
    counts[[0, 17, 18, n_docs - 1]] = 0  # empty documents, the last one too
    return sparse.csr_matrix(counts.astype(np.float64))


def assert_same_csr(got: Any, expected: Any) -> None:
    """Equal CSR matrices: shape, row pointers, column indices (sorted) and values."""
    assert sparse.issparse(got)
    got, expected = sparse.csr_matrix(got), sparse.csr_matrix(expected)
    expected.sort_indices()
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)


def blocks_of(array: Any) -> list[Any]:
    return list(dask.compute(*[array.blocks[i, 0] for i in range(array.numblocks[0])], scheduler="sync"))


# -- the Zarr CSR layout ---------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [9, 50, 203, 1000])
def test_zarr_round_trip_gives_the_matrix_in_row_chunks(tmp_path: Path, chunk_rows: int) -> None:
    X = _random_csr()
    path = tmp_path / "c.zarr"
    words = [f"w{i}" for i in range(X.shape[1])]
    assert corpus.write_csr_zarr(path, X, chunk_rows=chunk_rows, vocabulary=words) == X.shape
    array = corpus.read_csr_zarr(path)
    assert array.shape == X.shape
    assert array.chunks[0] == tuple(min(chunk_rows, X.shape[0] - s) for s in range(0, X.shape[0], chunk_rows))
    assert isinstance(array._meta, sparse.csr_matrix)
    blocks = blocks_of(array)
    for block, start in zip(blocks, range(0, X.shape[0], chunk_rows), strict=True):
        assert_same_csr(block, X[start : start + chunk_rows])
    assert_same_csr(array.compute(scheduler="sync"), X)
    assert corpus.CorpusRows(str(path)).vocabulary() == tuple(words)


def test_zarr_written_from_streamed_blocks_of_any_size(tmp_path: Path) -> None:
    X = _random_csr()
    cuts = [0, 3, 4, 60, 61, 150, 203]

    def blocks() -> Any:
        for a, b in itertools.pairwise(cuts):
            yield sparse.csr_array(X[a:b].astype(np.int32))  # arrays too; dtype kept

    corpus.write_csr_zarr(tmp_path / "s.zarr", blocks(), chunk_rows=32)
    array = corpus.read_csr_zarr(tmp_path / "s.zarr")
    assert array.dtype == np.int32
    assert array.chunks[0][:2] == (32, 32)
    assert_same_csr(array.compute(scheduler="sync"), X.astype(np.int32))
    # Read again with other blocks than the stored row chunks: the same matrix.
    assert_same_csr(corpus.read_csr_zarr(tmp_path / "s.zarr", chunk_rows=45).compute(scheduler="sync"), X)


def test_a_chunk_read_opens_only_its_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus, "ELEMENT_CHUNK", 16)  # several storage chunks of values per row chunk
    X = _random_csr()
    path = tmp_path / "c.zarr"
    corpus.write_csr_zarr(path, X, chunk_rows=20)
    array = corpus.read_csr_zarr(path)
    offsets = corpus.CorpusRows(str(path)).offsets

    read: list[str] = []
    original = zarr.storage.LocalStore.get

    async def counting_get(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        read.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(zarr.storage.LocalStore, "get", counting_get)
    for i in (0, 4, array.numblocks[0] - 1):
        read.clear()
        block = array.blocks[i, 0].compute(scheduler="sync")
        assert_same_csr(block, X[20 * i : 20 * (i + 1)])
        chunks = {key for key in read if "/c/" in key}
        values = range(offsets[i] // 16, -(-offsets[i + 1] // 16))
        expected = {f"indptr/c/{i}"} | {f"{name}/c/{j}" for name in ("data", "indices") for j in values}
        assert chunks == expected


def test_writing_never_replaces_anything(tmp_path: Path) -> None:
    X = _random_csr()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("keep me")
    with pytest.raises(DestinationExistsError, match="taken"):
        corpus.write_csr_zarr(taken, X)
    assert sorted(os.listdir(taken)) == ["notes.txt"]
    assert (taken / "notes.txt").read_text() == "keep me"

    written = tmp_path / "c.zarr"
    corpus.write_csr_zarr(written, X, chunk_rows=50)
    before = {p: p.read_bytes() for p in written.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match=r"c\.zarr"):  # DestinationExistsError is a FileExistsError
        corpus.write_csr_zarr(written, X[:10], chunk_rows=5)
    assert {p: p.read_bytes() for p in written.rglob("*") if p.is_file()} == before
    assert_same_csr(corpus.read_csr_zarr(written).compute(scheduler="sync"), X)


def test_an_interrupted_write_is_not_read(tmp_path: Path) -> None:
    X = _random_csr()

    def failing() -> Any:
        yield X[:100]
        raise RuntimeError("source lost")

    with pytest.raises(RuntimeError, match="source lost"):
        corpus.write_csr_zarr(tmp_path / "half.zarr", failing(), chunk_rows=10)
    with pytest.raises(StoreError, match="interrupted write"):
        corpus.read_csr_zarr(tmp_path / "half.zarr")


def test_writer_checks(tmp_path: Path) -> None:
    X = _random_csr()
    with pytest.raises(DataError, match="vocabulary has 2 words"):
        corpus.write_csr_zarr(tmp_path / "a.zarr", X, vocabulary=["a", "b"])
    with pytest.raises(DataError, match="different widths"):
        corpus.write_csr_zarr(tmp_path / "b.zarr", iter([X[:5], X[5:9, :10]]), chunk_rows=5)
    with pytest.raises(DataError, match=r"scipy\.sparse"):
        corpus.write_csr_zarr(tmp_path / "c.zarr", iter([np.ones((2, 2))]))


# -- the UCI bag-of-words format -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["plain", "gzip"])
@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 5, 7, 100])
def test_docword_parses_to_the_hand_made_matrix_for_every_chunking(
    uci: dict[str, str], kind: str, chunk_rows: int
) -> None:
    array = corpus.read_docword(uci[kind], chunk_rows=chunk_rows)
    assert array.shape == DENSE.shape
    assert array.dtype == np.float64
    starts = range(0, 7, chunk_rows)
    assert array.chunks[0] == tuple(min(chunk_rows, 7 - s) for s in starts)
    for block, start in zip(blocks_of(array), starts, strict=True):
        np.testing.assert_array_equal(block.toarray(), DENSE[start : start + chunk_rows])
    streamed = list(corpus.iter_docword(uci[kind], chunk_rows=chunk_rows))
    assert [b.shape[0] for b in streamed] == list(array.chunks[0])
    assert_same_csr(sparse.vstack(streamed, format="csr"), sparse.csr_matrix(DENSE))
    # Rows across chunk boundaries (dask fuses slices into the reads).
    np.testing.assert_array_equal(array[1:6].compute(scheduler="sync").toarray(), DENSE[1:6])


def test_docword_layout(uci: dict[str, str]) -> None:
    for kind in ("plain", "gzip"):
        layout = corpus.scan_docword(uci[kind], chunk_rows=3)
        text = DOCWORD.encode()
        assert layout.shape == (7, 5)
        assert layout.nnz == 13
        # Chunks start at documents 1, 4 and 7 (7 is empty: its chunk is the end of the file).
        assert layout.byte_bounds == (text.index(b"1 1 2"), text.index(b"4 1 1"), len(text), len(text))


def test_docword_errors(tmp_path: Path) -> None:
    unsorted = tmp_path / "docword.bad.txt"
    unsorted.write_text("3\n2\n3\n2 1 1\n1 1 1\n3 2 1\n")
    with pytest.raises(DataError, match="sort"):
        corpus.read_docword(unsorted, chunk_rows=3).compute(scheduler="sync")
    zipped = tmp_path / "docword.bad.txt.gz"
    with gzip.open(zipped, "wt") as f:
        f.write("3\n2\n3\n2 1 1\n1 1 1\n3 2 1\n")
    with pytest.raises(DataError, match="sort"):
        corpus.scan_docword(zipped, chunk_rows=1)
    wrong_word = tmp_path / "docword.word.txt"
    wrong_word.write_text("1\n2\n1\n1 3 1\n")
    with pytest.raises(DataError, match=r"outside 1\.\.2"):
        corpus.read_docword(wrong_word).compute(scheduler="sync")
    malformed = tmp_path / "docword.text.txt"
    malformed.write_text("1\n2\n1\n1 two 1\n")
    with pytest.raises(DataError, match="three integers"):
        corpus.read_docword(malformed).compute(scheduler="sync")
    no_header = tmp_path / "docword.head.txt"
    no_header.write_text("1 1 1\n")
    with pytest.raises(DataError, match="header"):
        corpus.scan_docword(no_header)


def test_docword_to_zarr(uci: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "hand.zarr"
    assert corpus.docword_to_zarr(uci["gzip"], out, vocabulary=uci["vocab"], chunk_rows=2) == (7, 5)
    array = corpus.read_csr_zarr(out)
    assert array.chunks[0] == (2, 2, 2, 1)
    np.testing.assert_array_equal(array.compute(scheduler="sync").toarray(), DENSE)
    assert corpus.CorpusRows(str(out)).vocabulary() == WORDS
    with pytest.raises(DestinationExistsError):
        corpus.docword_to_zarr(uci["plain"], out)


def test_corpus_command(uci: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "cli.zarr"
    done = invoke_cli("corpus", uci["plain"], "-o", out, "--chunk-rows", 3)
    assert done.returncode == 0, done.stderr
    assert "7 documents x 5 words" in done.stderr
    source = as_source(str(out))
    assert source.feature_names == WORDS  # vocab.hand.txt beside docword.hand.txt
    np.testing.assert_array_equal(source.array.compute(scheduler="sync").toarray(), DENSE)
    again = invoke_cli("corpus", uci["plain"], "-o", out)
    assert again.returncode == 1
    assert "never written over" in again.stderr


# -- as_source -------------------------------------------------------------------------------


def test_as_source_opens_both_formats_sparse_with_their_vocabulary(uci: dict[str, str], tmp_path: Path) -> None:
    zarr_path = str(tmp_path / "hand.zarr")
    corpus.docword_to_zarr(uci["plain"], zarr_path, chunk_rows=4)
    opened = {
        "docword": as_source(uci["plain"], chunk_rows=3),
        "docword-gzip": as_source(uci["gzip"], vocabulary=uci["vocab"]),
        "corpus": as_source(zarr_path),
    }
    for name, source in opened.items():
        assert source.sparse, name
        assert source.feature_names == WORDS, name
        assert source.kind == ("corpus" if name == "corpus" else "docword")
        assert source.location is not None
        assert os.path.isabs(source.location)
        assert source.array.dtype == np.float64
        assert isinstance(source.array._meta, sparse.spmatrix | sparse.sparray)
        np.testing.assert_array_equal(source.array.compute(scheduler="sync").toarray(), DENSE)
        # Reopened from what a checkpoint records (resume): the same data, the same fingerprint.
        again = as_source(source.location, **source.options)
        assert again.array.chunks == source.array.chunks
        assert again.feature_names == WORDS
        assert again.fingerprint() == source.fingerprint()
    assert opened["docword"].options == {"chunk_rows": 3}
    assert opened["docword"].array.chunks[0] == (3, 3, 1)
    assert opened["docword-gzip"].options == {"vocabulary": uci["vocab"]}
    assert opened["corpus"].array.chunks[0] == (4, 3)


def test_as_source_refuses_a_corpus_where_sparse_data_are_refused(uci: dict[str, str]) -> None:
    with pytest.raises(DataError, match="Sparse data"):
        as_source(uci["plain"], accept_sparse=False)
    source = as_source(uci["plain"])
    assert as_source(source) is source
    with pytest.raises(DataError, match="Sparse data"):
        as_source(source, accept_sparse=False)
    with pytest.raises(DataError, match="Sparse data"):  # in-memory sparse data: refused unless accepted
        as_source(sparse.csr_matrix(DENSE))


def test_vocabulary_of_any_source() -> None:
    source = as_source(np.ones((4, 3)), vocabulary=["a", "b", "c"])
    assert source.feature_names == ("a", "b", "c")
    assert not source.sparse
    assert as_source(np.ones((4, 3))).feature_names is None
    with pytest.raises(DataError, match="2 words but the data have 3"):
        as_source(np.ones((4, 3)), vocabulary=["a", "b"])


def test_sparse_fingerprint_is_stable_and_sees_the_values() -> None:
    X = _random_csr()
    first = as_source(X, accept_sparse=True, chunk_rows=50).fingerprint()
    assert as_source(X.copy(), accept_sparse=True, chunk_rows=50).fingerprint() == first
    Y = X.copy()
    Y.data[0] += 1
    assert as_source(Y, accept_sparse=True, chunk_rows=50).fingerprint()["digest"] != first["digest"]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_a_checkpointed_fit_of_a_docword_file_resumes(uci: dict[str, str], tmp_path: Path) -> None:
    ckpt = str(tmp_path / "km.zarr")
    init = DENSE[[0, 1]]
    first = daskem.KMeans(2, init=init, max_iter=1, tol=0.0, checkpoint=ckpt).fit(uci["plain"])
    assert first._fit_source == {"location": uci["plain"], "options": {}}
    resumed = daskem.KMeans(2, init=init, max_iter=4, tol=0.0, checkpoint=ckpt).fit(uci["plain"])
    whole = daskem.KMeans(2, init=init, max_iter=4, tol=0.0).fit(sparse.csr_matrix(DENSE))
    np.testing.assert_allclose(resumed.cluster_centers_, whole.cluster_centers_, rtol=1e-12)
    assert resumed.n_iter_ == whole.n_iter_


# -- daskem topics ---------------------------------------------------------------------------

COMPONENTS = np.array(
    [
        [1.0, 6.0, 0.0, 3.0, 0.0],  # banana 0.6, date 0.3, apple 0.1
        [2.0, 2.0, 4.0, 0.0, 0.0],  # cherry 0.5, then apple and banana tie at 0.25 (lower column first)
        [0.0, 0.0, 0.0, 0.0, 0.0],  # all zero: weights stay 0
    ]
)


def test_top_words_by_hand() -> None:
    found = top_words(COMPONENTS, WORDS, top=3)
    assert [[w["word"] for w in t["words"]] for t in found] == [
        ["banana", "date", "apple"],
        ["cherry", "apple", "banana"],
        ["apple", "banana", "cherry"],
    ]
    assert [w["weight"] for w in found[0]["words"]] == pytest.approx([0.6, 0.3, 0.1])
    assert [w["weight"] for w in found[1]["words"]] == pytest.approx([0.5, 0.25, 0.25])
    assert [w["index"] for w in found[1]["words"]] == [2, 0, 1]
    assert all(w["weight"] == 0.0 for w in found[2]["words"])
    indexed = top_words(COMPONENTS[:1], None, top=10)
    assert [w["word"] for w in indexed[0]["words"]] == ["1", "3", "0", "2", "4"]
    text = format_topics(found)
    assert text.splitlines()[0] == "topic 0  banana (0.6000), date (0.3000), apple (0.1000)"
    with pytest.raises(ValueError, match="vocabulary has 2 words"):
        top_words(COMPONENTS, ["a", "b"])


class _FittedStandIn:
    """What the topics command reads of a fitted LDA: components_ and the data's record."""

    def __init__(self, location: str | None, components: np.ndarray = COMPONENTS) -> None:
        self.components_ = components
        self._fit_source = None if location is None else {"location": location, "options": {}}


def _stand_in(monkeypatch: pytest.MonkeyPatch, est: Any) -> None:
    import daskem.cli.reporting
    import daskem.estimators._base

    monkeypatch.setattr(daskem.estimators._base, "load", lambda run: est)
    monkeypatch.setattr(daskem.cli.reporting, "_histories", lambda run, e: ([], 0, e._fit_source or {}))


def test_topics_command_with_a_stand_in_model(
    uci: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "model.zarr"
    run.mkdir()
    _stand_in(monkeypatch, _FittedStandIn(uci["plain"]))  # the words of vocab.hand.txt
    shown = invoke_cli("topics", run, "--top", 2)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        "topic 0  banana (0.6000), date (0.3000)",
        "topic 1  cherry (0.5000), apple (0.2500)",
        "topic 2  apple (0.0000), banana (0.0000)",
    ]
    other = tmp_path / "other.txt"
    other.write_text("a\nb\nc\nd\ne\n")
    as_json = invoke_cli("topics", run, "--top", 1, "--vocab", other, "--json")
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    assert found["vocabulary"] == str(other)
    assert [t["words"][0]["word"] for t in found["topics"]] == ["b", "c", "a"]

    _stand_in(monkeypatch, _FittedStandIn(None))  # in-memory data: word indices
    assert invoke_cli("topics", run, "--top", 1).stdout.splitlines()[0] == "topic 0  1 (0.6000)"
    bad = invoke_cli("topics", run, "--vocab", other, "--top", 1)
    assert bad.returncode == 0
    short = tmp_path / "short.txt"
    short.write_text("a\nb\n")
    refused = invoke_cli("topics", run, "--vocab", short)
    assert refused.returncode == 1
    assert "vocabulary has 2 words" in refused.stderr

    class NotTopics:
        _fit_source = None

    _stand_in(monkeypatch, NotTopics())
    refused = invoke_cli("topics", run)
    assert refused.returncode == 1
    assert "not a topic model" in refused.stderr


@pytest.mark.skipif(
    not hasattr(daskem, "LatentDirichletAllocation"),
    reason="daskem.LatentDirichletAllocation is not there yet (being written alongside): the topics command is "
    "tested with a stand-in fitted model meanwhile",
)
def test_topics_of_a_fitted_lda_end_to_end(uci: dict[str, str], tmp_path: Path) -> None:
    corpus_path = str(tmp_path / "hand.zarr")
    corpus.docword_to_zarr(uci["plain"], corpus_path, chunk_rows=3)
    lda = daskem.LatentDirichletAllocation(n_components=2, max_iter=3, random_state=0).fit(corpus_path)
    model = tmp_path / "lda.zarr"
    lda.save(model)
    done = invoke_cli("topics", model, "--top", 5, "--json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["vocabulary"] == corpus_path
    expected = top_words(lda.components_, WORDS, top=5)
    for got, want in zip(found["topics"], expected, strict=True):
        assert [w["word"] for w in got["words"]] == [w["word"] for w in want["words"]]
        assert [w["weight"] for w in got["words"]] == pytest.approx([w["weight"] for w in want["words"]])
        assert sorted(w["word"] for w in got["words"]) == sorted(WORDS)
        assert sum(w["weight"] for w in got["words"]) == pytest.approx(1.0)


def test_data_source_default_has_no_feature_names() -> None:
    assert DataSource(as_source(np.ones((3, 2))).array, "numpy").feature_names is None


def test_memory_of_a_corpus_is_its_stored_values(uci: dict[str, str], tmp_path: Path) -> None:
    from daskem.em.session import ComputeResources, should_cache
    from daskem.worker_memory import largest_block_bytes

    out = str(tmp_path / "c.zarr")
    corpus.docword_to_zarr(uci["plain"], out, chunk_rows=2)
    for location in (uci["plain"], out):
        source = as_source(location, accept_sparse=True)
        X = sparse.csr_matrix(source.array.compute())
        # The metadata's count (the docword header counts a repeated triple twice).
        assert source.nnz in (X.nnz, X.nnz + 1)
        assert source.stored_nbytes == source.nnz * 12 + 8 * (X.shape[0] + 1)
        rows = max(source.array.chunks[0])
        assert largest_block_bytes(source) == int(rows * (source.nnz / X.shape[0] * 12 + 8))
        # Dense, the same rows would count n_features values each.
        assert largest_block_bytes(source) < rows * X.shape[1] * 8
        assert should_cache(source, "auto", ComputeResources(memory=1e9, threads=2, thread_memory=5e8))
    # Sparse blocks of unknown size: nothing to check, never cached by "auto".
    unknown = DataSource(as_source(uci["plain"], accept_sparse=True).array, "dask", sparse=True)
    assert largest_block_bytes(unknown) == 0
    assert not should_cache(unknown, "auto", ComputeResources(memory=1e12, threads=2, thread_memory=5e11))
