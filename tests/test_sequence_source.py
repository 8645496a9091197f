"""Sequence boundaries are part of the data source: fingerprinted, stored, restored on resume.

Oracles: an HMM fit resumed from the checkpoint's stored source (as ``daskem resume`` reads
it) equals the uninterrupted fit bitwise; lengths from a sequence-id column equal hmmlearn's
``lengths`` convention; a checkpoint refuses other sequences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import zarr

from daskem import GaussianHMM
from daskem.checkpoint.checkpoint import Checkpoint, CheckpointMismatchError
from daskem.errors import DataError
from daskem.io.sources import as_source, check_lengths, encode_lengths

LENGTHS = np.array([40, 40, 40, 25, 55, 30, 30, 30], dtype=np.int64)


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    rng = np.random.default_rng(3)
    states = rng.integers(0, 2, size=int(LENGTHS.sum()))
    return (np.array([[0.0, 0.0], [3.0, -2.0]])[states] + rng.normal(size=(states.size, 2))).astype(np.float64)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, rows: np.ndarray) -> str:
    path = str(tmp_path_factory.mktemp("seq") / "rows.zarr")
    zarr.create_array(store=path, data=rows, chunks=(60, 2))
    return path


def hmm(n_iter: int, checkpoint: str | None = None) -> GaussianHMM:
    return GaussianHMM(
        n_components=2, covariance_type="diag", n_iter=n_iter, tol=0.0, random_state=0, checkpoint=checkpoint
    )


def test_lengths_round_trip_their_stored_form() -> None:
    encoded = encode_lengths(LENGTHS)
    assert encoded == {"runs": [[40, 3], [25, 1], [55, 1], [30, 3]]}
    np.testing.assert_array_equal(check_lengths(encoded, int(LENGTHS.sum())), LENGTHS)


def test_the_fingerprint_covers_the_lengths(store: str) -> None:
    plain = as_source(store).fingerprint()
    seq = as_source(store, lengths=LENGTHS).fingerprint()
    other = as_source(store, lengths=LENGTHS[::-1].copy()).fingerprint()
    assert "sequences" not in plain
    assert seq["sequences"] == LENGTHS.size
    assert seq["lengths_digest"] != other["lengths_digest"]
    assert {k: v for k, v in seq.items() if k not in ("sequences", "lengths_digest")} == plain


def test_resume_from_the_stored_source_equals_the_uninterrupted_fit(tmp_path, store: str) -> None:
    run = str(tmp_path / "run.zarr")
    hmm(3, run).fit(store, LENGTHS)
    meta = Checkpoint(run).metadata()
    assert meta["source"]["options"]["lengths"] == encode_lengths(LENGTHS)
    # What `daskem resume` does: reopen the data with the stored options only.
    stored = as_source(meta["source"]["location"], **meta["source"]["options"])
    np.testing.assert_array_equal(stored.lengths, LENGTHS)
    resumed = hmm(7, run).fit(stored)
    whole = hmm(7).fit(store, LENGTHS)
    assert resumed.n_iter_ == whole.n_iter_ == 7
    for name in ("startprob_", "transmat_", "means_", "covars_"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(whole, name))


def test_a_checkpoint_refuses_other_sequences(tmp_path, store: str) -> None:
    run = str(tmp_path / "run.zarr")
    hmm(2, run).fit(store, LENGTHS)
    with pytest.raises(CheckpointMismatchError, match=r"lengths_digest|row_chunks|digest"):
        hmm(4, run).fit(store, LENGTHS[::-1].copy())


def test_sequence_ids_of_a_table_give_hmmlearns_lengths(tmp_path, rows: np.ndarray) -> None:
    ids = np.repeat(np.arange(LENGTHS.size) * 7 % 5 + np.arange(LENGTHS.size) * 10, LENGTHS)
    frame = pd.DataFrame({"a": rows[:, 0], "seq": ids, "b": rows[:, 1]})
    path = str(tmp_path / "rows.parquet")
    frame.to_parquet(path)
    source = as_source(path, sequence_ids="seq")
    np.testing.assert_array_equal(source.lengths, LENGTHS)
    np.testing.assert_array_equal(source.array.compute(), rows)  # the id column is not data
    assert source.options == {"sequence_ids": "seq"}
    by_ids = hmm(3).fit(source)
    by_lengths = hmm(3).fit(rows, LENGTHS)
    np.testing.assert_array_equal(by_ids.means_, by_lengths.means_)


def test_bad_sequence_descriptions_are_refused_with_the_fix(tmp_path, store: str, rows: np.ndarray) -> None:
    with pytest.raises(DataError, match="lengths sum to 10 but X has 290 rows"):
        as_source(store, lengths=[10])
    with pytest.raises(DataError, match=r"names a column of a table.*pass lengths"):
        as_source(store, sequence_ids="seq")
    with pytest.raises(DataError, match=r"names a column of a table.*ndarray: pass lengths"):
        as_source(rows, sequence_ids="seq")
    path = str(tmp_path / "t.csv")
    pd.DataFrame({"a": rows[:, 0]}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"sequence-id column 'seq' is not in .*its columns are \['a'\]"):
        as_source(path, sequence_ids="seq")
    with pytest.raises(DataError, match="differ from the lengths passed"):
        hmm(1).fit(as_source(store, lengths=LENGTHS), LENGTHS[::-1].copy())


def test_sample_weights_are_part_of_the_source_and_restored_on_resume(tmp_path, store: str, rows: np.ndarray) -> None:
    from daskem import KMeans

    weights = np.random.default_rng(4).uniform(0.5, 2.0, size=rows.shape[0])
    wpath = str(tmp_path / "w.zarr")
    zarr.create_array(store=wpath, data=weights, chunks=(100,))
    run = str(tmp_path / "km.zarr")

    def km(max_iter: int, checkpoint: str | None = None) -> KMeans:
        return KMeans(3, init="random", n_init=1, max_iter=max_iter, tol=0.0, random_state=0, checkpoint=checkpoint)

    km(2, run).fit(store, sample_weight=wpath)
    meta = Checkpoint(run).metadata()
    assert meta["source"]["options"] == {"sample_weight": wpath}
    stored = as_source(meta["source"]["location"], **meta["source"]["options"])
    resumed = km(6, run).fit(stored)
    whole = km(6).fit(store, sample_weight=wpath)  # same data, same chunking
    np.testing.assert_array_equal(resumed.cluster_centers_, whole.cluster_centers_)
    assert resumed.inertia_ == whole.inertia_
    # Other weights are other data: the checkpoint refuses them.
    with pytest.raises(CheckpointMismatchError, match="digest"):
        km(8, run).fit(store, sample_weight=weights[::-1].copy())
    with pytest.raises(DataError, match=r"sample_weight.shape == \(5,\), expected \(290,\)"):
        as_source(store, sample_weight=np.ones(5))
