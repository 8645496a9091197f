"""Crash-safe checkpoints at library level: fit_em and GaussianMixture with ``checkpoint=``.

Every resumed fit is compared with an uninterrupted fit of the same data, seed, chunking
and split_every (the oracle): final parameters bitwise equal, ``n_iter`` and the
log-likelihood history equal. Damage is done to the files themselves, on the on-disk
layout ``runs/<r>/iterations/<n>/<array>/c/...`` with its ``zarr.json`` documents.

A fit is "interrupted" by a callback that raises after iteration n: the callback runs
after iteration n has been committed, so the checkpoint is exactly what a driver killed
at that moment leaves (real SIGKILLs are in test_checkpoint_kill.py).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import uuid
import warnings
from pathlib import Path

import fsspec
import numpy as np
import pytest
import zarr
from sklearn.exceptions import ConvergenceWarning

import daskem
from daskem import GaussianMixture, GaussianMixtureModel, StoreError, as_source, fit_em, initial_params
from daskem.checkpoint import Checkpoint, CheckpointMismatchError, CorruptCheckpointWarning
from daskem.checkpoint import checkpoint as checkpoint_module
from daskem.checkpoint.checkpoint import HISTORY_FIELDS
from daskem.em.session import FitSession
from daskem.testing import write_mixture_zarr

N_SAMPLES, N_FEATURES, K = 4000, 3, 3
CHUNK_ROWS = 500
SPLIT_EVERY = 2
MAX_ITER = 8
PARAM_NAMES = ("weights", "means", "covariances", "precisions_cholesky")
EST_ATTRS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
MODEL = GaussianMixtureModel(K, "full", 1e-6)


class Interrupted(Exception):
    """Raised by a callback to stop a fit after a committed iteration."""


def stop_after(n):
    def callback(record, params):
        if record.iteration == n:
            raise Interrupted

    return callback


# -- shared data and oracle ----------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory, seed):
    path = tmp_path_factory.mktemp("ckdata") / "X.zarr"
    write_mixture_zarr(path, N_SAMPLES, N_FEATURES, K, seed=seed, chunk_rows=CHUNK_ROWS)
    return str(path)


def make_init(data_path):
    source = as_source(data_path)

    def init():
        (params,) = initial_params(MODEL, source, "kmeans", [np.random.default_rng(0)])
        return params

    return init


def fit(data_path, checkpoint=None, **kw):
    kw = {"max_iter": MAX_ITER, "tol": 0.0, "split_every": SPLIT_EVERY, **kw}
    return fit_em(MODEL, data_path, make_init(data_path), checkpoint=checkpoint, **kw)


def interrupted_fit(data_path, checkpoint, n, **kw):
    with pytest.raises(Interrupted):
        fit(data_path, checkpoint, callback=stop_after(n), **kw)


@pytest.fixture(scope="module")
def interrupted_at_5(data, tmp_path_factory):
    """A checkpoint of the fit interrupted after iteration 5 (iterations 4 and 5 kept), made
    once: a test damages a copy of it (``shutil.copytree``)."""
    ckpt = str(tmp_path_factory.mktemp("interrupted") / "run.zarr")
    interrupted_fit(data, ckpt, 5)
    return ckpt


@pytest.fixture(scope="module")
def oracle(data):
    """The uninterrupted fit, plus the parameters after every iteration."""
    per_iteration = {}

    def record(rec, params):
        per_iteration[rec.iteration] = {k: v.copy() for k, v in params.to_arrays().items()}

    result = fit(data, callback=record)
    assert result.n_iter == MAX_ITER
    return result, per_iteration


def lls(result):
    return [r.log_likelihood for r in result.history]


def assert_bitwise(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype == np.float64
    assert a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def assert_same_result(result, oracle_result):
    for name in PARAM_NAMES:
        assert_bitwise(getattr(result.params, name), getattr(oracle_result.params, name))
    assert result.n_iter == oracle_result.n_iter
    assert result.converged == oracle_result.converged
    assert lls(result) == lls(oracle_result)
    assert [r.change for r in result.history] == [r.change for r in oracle_result.history]
    assert result.lower_bound == oracle_result.lower_bound


def iteration_dir(ckpt, n, run=0):
    return Path(ckpt) / "runs" / str(run) / "iterations" / str(n)


def read_json(path):
    return json.loads(Path(path).read_text())


def write_json(path, doc):
    Path(path).write_text(json.dumps(doc))


@pytest.fixture
def no_warnings():
    """Fail on any warning (a clean resume warns about nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# -- resume equals the uninterrupted fit ---------------------------------------------------


@pytest.mark.parametrize("n", [1, 4, MAX_ITER - 1])
def test_resume_is_bitwise_equal_to_uninterrupted(data, oracle, tmp_path, n, no_warnings):
    ckpt = str(tmp_path / "run.zarr")
    interrupted_fit(data, ckpt, n)
    run = Checkpoint(ckpt).run(0)
    assert run.pointer() == n
    assert run.iterations() == [n - 1, n]  # iteration 0 holds the initial parameters
    state = run.latest()
    assert state.iteration == n
    assert not state.finished
    assert not state.converged
    for name in PARAM_NAMES:
        assert_bitwise(state.params[name], oracle[1][n][name])
    assert list(state.history["log_likelihood"]) == lls(oracle[0])[:n]

    seen = []
    result = fit(data, ckpt, callback=lambda rec, params: seen.append(rec.iteration))
    assert result.resumed_from == n
    assert seen == list(range(n + 1, MAX_ITER + 1))
    assert_same_result(result, oracle[0])
    assert run.latest().finished


def test_commit_order_iteration_invisible_until_complete_pointer_last(data, oracle, tmp_path, monkeypatch):
    """While iteration n's arrays are written, readers see n - 1 and the pointer names n - 1."""
    ckpt = str(tmp_path / "run.zarr")
    run = Checkpoint(ckpt).run(0)
    real_write = checkpoint_module.write_float_array
    observed = []

    def spying_write(group, name, value):
        n = int(group.path.rstrip("/").rsplit("/", 1)[-1])
        state = run.latest()
        observed.append((n, name, run.pointer(), None if state is None else state.iteration))
        with pytest.raises(StoreError, match="incomplete"):
            run.read(n)
        real_write(group, name, value)

    monkeypatch.setattr(checkpoint_module, "write_float_array", spying_write)
    real_group = Checkpoint._group
    pointer_moves = []

    def spying_group(self, path="", mode="r"):
        if path.endswith("pointer") and mode == "w":
            # The pointer moves only once the newest iteration is complete and verifies.
            newest = run.iterations()[-1]
            pointer_moves.append((newest, run.read(newest).iteration))
        return real_group(self, path, mode)

    monkeypatch.setattr(Checkpoint, "_group", spying_group)
    committed = []

    def after(rec, params):
        committed.append((rec.iteration, run.pointer(), run.latest().iteration))

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit(data, ckpt, max_iter=4, callback=after)
    assert result.n_iter == 4
    arrays_per_commit = len(PARAM_NAMES) + len(HISTORY_FIELDS)
    # Iteration 0 (the initial parameters) is committed first, then iterations 1..4.
    assert len(observed) == 5 * arrays_per_commit
    for n, _name, pointer, visible in observed:
        expected = None if n == 0 else n - 1
        assert (pointer, visible) == (expected, expected)
    assert committed == [(n, n, n) for n in range(1, 5)]
    assert pointer_moves == [(n, n) for n in range(5)]


def test_crash_mid_commit_is_invisible_and_resume_matches(data, oracle, tmp_path, monkeypatch, no_warnings):
    """A writer that dies after 3 of the arrays of iteration 5 leaves iteration 4 as newest."""
    ckpt = str(tmp_path / "run.zarr")
    real_write = checkpoint_module.write_float_array
    calls = {"n": 0}

    def dying_write(group, name, value):
        if group.path.rstrip("/").endswith("iterations/5"):
            calls["n"] += 1
            if calls["n"] > 3:
                raise Interrupted
        real_write(group, name, value)

    monkeypatch.setattr(checkpoint_module, "write_float_array", dying_write)
    with pytest.raises(Interrupted):
        fit(data, ckpt)
    monkeypatch.setattr(checkpoint_module, "write_float_array", real_write)
    run = Checkpoint(ckpt).run(0)
    assert run.iterations() == [3, 4, 5]
    assert len([p for p in iteration_dir(ckpt, 5).iterdir() if p.is_dir()]) == 3
    assert read_json(iteration_dir(ckpt, 5) / "zarr.json").get("attributes", {}).get("daskem_iteration") is None
    assert run.pointer() == 4
    assert run.latest().iteration == 4
    result = fit(data, ckpt)
    assert result.resumed_from == 4
    assert_same_result(result, oracle[0])
    assert run.iterations() == [MAX_ITER - 1, MAX_ITER]


def test_crash_before_pointer_moves_reader_scans_to_newest(data, oracle, tmp_path, monkeypatch, no_warnings):
    """Iteration 5 committed (digests written) but the pointer still names 4: the scan finds 5."""
    ckpt = str(tmp_path / "run.zarr")
    real_group = Checkpoint._group

    def group(self, path="", mode="r"):
        if path.endswith("pointer") and mode == "w" and (Path(self._root) / "runs/0/iterations/5").exists():
            raise Interrupted
        return real_group(self, path, mode)

    monkeypatch.setattr(Checkpoint, "_group", group)
    with pytest.raises(Interrupted):
        fit(data, ckpt)
    monkeypatch.setattr(Checkpoint, "_group", real_group)
    run = Checkpoint(ckpt).run(0)
    assert run.pointer() == 4
    assert run.latest().iteration == 5
    result = fit(data, ckpt)
    assert result.resumed_from == 5
    assert_same_result(result, oracle[0])


@pytest.mark.parametrize("damage", ["deleted", "garbage", "stale", "ahead"])
def test_missing_or_stale_pointer_falls_back_to_scan(data, oracle, tmp_path, damage, no_warnings):
    ckpt = str(tmp_path / "run.zarr")
    interrupted_fit(data, ckpt, 5, keep_last=3)
    pointer = Path(ckpt) / "runs/0/pointer"
    if damage == "deleted":
        shutil.rmtree(pointer)
    elif damage == "garbage":
        (pointer / "zarr.json").write_bytes(b"\x00\xffnot json{")
    else:
        doc = read_json(pointer / "zarr.json")
        doc["attributes"]["daskem_pointer"]["iteration"] = 3 if damage == "stale" else 99
        write_json(pointer / "zarr.json", doc)
    run = Checkpoint(ckpt).run(0)
    assert run.pointer() == {"deleted": None, "garbage": None, "stale": 3, "ahead": 99}[damage]
    assert run.latest().iteration == 5
    result = fit(data, ckpt)
    assert result.resumed_from == 5
    assert_same_result(result, oracle[0])
    assert run.pointer() == MAX_ITER


# -- corruption of the newest iteration ----------------------------------------------------


def _truncate_chunk(d):
    chunk = d / "means" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:20])


def _delete_chunk(d):
    (d / "covariances" / "c" / "0" / "0" / "0").unlink()


def _garbage_group_metadata(d):
    (d / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')


def _garbage_array_metadata(d):
    (d / "weights" / "zarr.json").write_bytes(b"\x89PNG garbage")


def _drop_commit_record(d):
    doc = read_json(d / "zarr.json")
    doc["attributes"] = {}
    write_json(d / "zarr.json", doc)


def _rewrite_array(d, name, value):
    """Replace array ``name`` of the iteration in ``d`` and fix its digest: only content checks catch it."""
    group = zarr.open_group(str(d), mode="r+", zarr_format=3)
    del group[name]
    array = group.create_array(name, shape=value.shape, dtype=value.dtype, chunks=value.shape, compressors=None)
    array[...] = value
    info = dict(group.attrs["daskem_iteration"])
    info["digests"] = {**info["digests"], name: checkpoint_module._digest(value.astype(np.float64))}
    group.attrs["daskem_iteration"] = info


def _nan_parameter(d):
    means = zarr.open_array(str(d / "means"), mode="r")[...]
    means[1, 2] = np.nan
    _rewrite_array(d, "means", means)


def _inf_history(d):
    ll = zarr.open_array(str(d / "history_log_likelihood"), mode="r")[...]
    ll[0] = -np.inf
    _rewrite_array(d, "history_log_likelihood", ll)


def _altered_value(d):
    """One bit of the weights flipped, digest left: the digest catches it."""
    chunk = d / "weights" / "c" / "0"
    raw = bytearray(chunk.read_bytes())
    raw[0] ^= 1
    chunk.write_bytes(bytes(raw))


def _int_dtype(d):
    weights = zarr.open_array(str(d / "weights"), mode="r")[...]
    _rewrite_array(d, "weights", (weights * 1000).astype(np.int64))


def _unknown_codec(d):
    doc = read_json(d / "means" / "zarr.json")
    doc["codecs"] = [*doc["codecs"], {"name": "daskem.no_such_codec", "configuration": {}}]
    write_json(d / "means" / "zarr.json", doc)


def _future_iteration_format(d):
    """A history of the wrong length for the iteration number (written by something else)."""
    ll = zarr.open_array(str(d / "history_log_likelihood"), mode="r")[...]
    _rewrite_array(d, "history_log_likelihood", ll[:-1])


CORRUPTIONS = {
    "truncated-chunk": (_truncate_chunk, r"unreadable array data"),
    "deleted-chunk": (_delete_chunk, r"array 'covariances' does not match its digest"),
    "altered-value": (_altered_value, r"array 'weights' does not match its digest"),
    "garbage-group-metadata": (_garbage_group_metadata, r"unreadable metadata"),
    "garbage-array-metadata": (_garbage_array_metadata, r"unreadable array data"),
    "no-commit-record": (_drop_commit_record, r"incomplete \(no commit record"),
    "nan-parameter": (_nan_parameter, r"array 'means' holds NaN or infinite values"),
    "inf-history": (_inf_history, r"array 'history_log_likelihood' holds NaN or infinite values"),
    "int64-array": (_int_dtype, r"array 'weights' has dtype int64; daskem stores float64 only"),
    "unknown-codec": (_unknown_codec, r"daskem\.no_such_codec"),
    "short-history": (_future_iteration_format, r"history has 4 entries, expected 5"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_corrupt_newest_iteration_resumes_from_previous(data, interrupted_at_5, oracle, tmp_path, corruption):
    damage, message = CORRUPTIONS[corruption]
    ckpt = str(tmp_path / "run.zarr")
    shutil.copytree(interrupted_at_5, ckpt)
    run = Checkpoint(ckpt).run(0)
    assert run.iterations() == [4, 5]
    assert run.pointer() == 5
    damage(iteration_dir(ckpt, 5))

    full = rf"iteration 5 of {re.escape(repr(ckpt))} \(run 0\): .*{message}"
    with pytest.warns(CorruptCheckpointWarning, match=full) as caught:
        state = run.latest()
    assert len(caught) == 1
    assert state.iteration == 4
    for name in PARAM_NAMES:
        assert_bitwise(state.params[name], oracle[1][4][name])

    seen = []
    with pytest.warns(CorruptCheckpointWarning, match=full):
        result = fit(data, ckpt, callback=lambda rec, params: seen.append(rec.iteration))
    assert result.resumed_from == 4
    assert seen == list(range(5, MAX_ITER + 1))
    assert_same_result(result, oracle[0])
    # The damaged iteration was rewritten by the resumed fit, then pruned.
    assert run.iterations() == [MAX_ITER - 1, MAX_ITER]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert run.latest().iteration == MAX_ITER


def test_every_kept_iteration_corrupt_starts_over(data, interrupted_at_5, oracle, tmp_path):
    ckpt = str(tmp_path / "run.zarr")
    shutil.copytree(interrupted_at_5, ckpt)
    _nan_parameter(iteration_dir(ckpt, 5))
    _delete_chunk(iteration_dir(ckpt, 4))
    with pytest.warns(CorruptCheckpointWarning) as caught:
        result = fit(data, ckpt)
    messages = [str(w.message) for w in caught if w.category is CorruptCheckpointWarning]
    assert any("iteration 5" in m and "'means' holds NaN" in m for m in messages)
    assert any("iteration 4" in m and "'covariances' does not match its digest" in m for m in messages)
    assert result.resumed_from == 0
    assert_same_result(result, oracle[0])


# -- nothing is unpickled or executed --------------------------------------------------------


class _Bomb:
    """Unpickling this creates the file ``path``."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("variant", ["object-array", "float-array-pickle-codec"])
def test_planted_pickle_is_refused_without_being_read(data, interrupted_at_5, oracle, tmp_path, variant):
    ckpt = str(tmp_path / "run.zarr")
    shutil.copytree(interrupted_at_5, ckpt)
    marker = tmp_path / "EXECUTED"
    payload = pickle.dumps(_Bomb(marker))
    assert b"touch" in payload  # the payload really would run code if unpickled
    d = iteration_dir(ckpt, 5)
    pickle_codec = {"name": "numcodecs.pickle", "configuration": {"protocol": 5}}
    if variant == "object-array":
        doc = read_json(d / "weights" / "zarr.json")
        doc.update(shape=[1], data_type="object", fill_value=None, codecs=[pickle_codec])
        doc["chunk_grid"]["configuration"]["chunk_shape"] = [1]
        (d / "evil" / "c").mkdir(parents=True)
        write_json(d / "evil" / "zarr.json", doc)
        (d / "evil" / "c" / "0").write_bytes(payload)
        expected = r"unreadable array data .*object"
    else:
        doc = read_json(d / "means" / "zarr.json")
        doc["codecs"] = [pickle_codec]
        write_json(d / "means" / "zarr.json", doc)
        (d / "means" / "c" / "0" / "0").write_bytes(payload)
        expected = r"unreadable array data .*numcodecs\.pickle"

    with pytest.warns(CorruptCheckpointWarning, match=rf"iteration 5 .*{expected}"):
        result = fit(data, ckpt)
    assert not marker.exists()
    assert result.resumed_from == 4
    assert_same_result(result, oracle[0])
    assert not marker.exists()


def _set_root_format(ckpt, value):
    doc = read_json(Path(ckpt) / "zarr.json")
    doc["attributes"]["daskem_checkpoint"]["format"] = value
    write_json(Path(ckpt) / "zarr.json", doc)


def test_unknown_root_format_is_refused(data, tmp_path):
    ckpt = str(tmp_path / "run.zarr")
    interrupted_fit(data, ckpt, 3)
    _set_root_format(ckpt, 99)
    message = (
        rf"uses checkpoint format 99; this daskem reads format {checkpoint_module.CHECKPOINT_FORMAT}\. Upgrade daskem"
    )
    with pytest.raises(StoreError, match=message):
        Checkpoint(ckpt).metadata()
    with pytest.raises(StoreError, match=message):
        fit(data, ckpt)
    # Refused, not overwritten: the committed iterations are still there.
    assert Checkpoint(ckpt).run(0).iterations() == [2, 3]


def test_garbage_root_metadata_with_iterations_is_refused(data, tmp_path):
    ckpt = str(tmp_path / "run.zarr")
    interrupted_fit(data, ckpt, 3)
    (Path(ckpt) / "zarr.json").write_text("{]")
    with pytest.raises(StoreError, match=r"checkpoint metadata at .* is unreadable"):
        fit(data, ckpt)
    assert Checkpoint(ckpt).run(0).iterations() == [2, 3]


def test_root_without_iterations_killed_during_creation_restarts(data, oracle, tmp_path):
    ckpt = str(tmp_path / "run.zarr")
    Path(ckpt).mkdir()
    (Path(ckpt) / "zarr.json").write_text('{"zarr_format": 3, "node_ty')
    with pytest.warns(CorruptCheckpointWarning, match="Starting the checkpoint afresh"):
        result = fit(data, ckpt)
    assert result.resumed_from == 0
    assert_same_result(result, oracle[0])


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_load_of_unknown_format_checkpoint_names_the_format(data, tmp_path):
    ckpt = str(tmp_path / "run.zarr")
    GaussianMixture(K, random_state=0, max_iter=2, tol=0, checkpoint=ckpt).fit(data)
    _set_root_format(ckpt, 99)
    with pytest.raises(StoreError, match="format 99"):
        daskem.load(ckpt)


# -- mismatches --------------------------------------------------------------------------


def test_other_data_or_model_is_refused_naming_the_field(data, oracle, tmp_path, seed):
    ckpt = str(tmp_path / "run.zarr")
    interrupted_fit(data, ckpt, 3)
    digest = Checkpoint(ckpt).metadata()["data"]["digest"]
    others = [
        # (n_samples, seed, chunk_rows, dtype, stored value, this fit's value)
        (N_SAMPLES + 500, seed, 500, "float64", "data.shape=[4000, 3]", "data.shape=[4500, 3]"),
        (N_SAMPLES, seed, 500, "float32", "data.dtype='float64'", "data.dtype='float32'"),
        (N_SAMPLES, seed + 1, 500, "float64", f"data.digest={digest!r}", "data.digest='"),
        (N_SAMPLES, seed, 1000, "float64", "data.row_chunks=[[500, 8]]", "data.row_chunks=[[1000, 4]]"),
    ]
    for i, (rows, data_seed, chunk_rows, dtype, old, new) in enumerate(others):
        path = str(tmp_path / f"other-{i}.zarr")
        write_mixture_zarr(path, rows, N_FEATURES, K, seed=data_seed, chunk_rows=chunk_rows, dtype=dtype)
        with pytest.raises(CheckpointMismatchError) as info:
            fit_em(MODEL, path, make_init(path), max_iter=MAX_ITER, tol=0, split_every=2, checkpoint=ckpt)
        text = str(info.value)
        assert f"was written for {old}, but this fit has {new}" in text
        assert "overwrite=True" in text
        assert "--force-restart" in text

    with pytest.raises(
        CheckpointMismatchError, match=re.escape("model.n_components=3, but this fit has model.n_components=2")
    ):
        fit_em(GaussianMixtureModel(2, "full", 1e-6), data, None, max_iter=4, split_every=2, checkpoint=ckpt)
    with pytest.raises(
        CheckpointMismatchError,
        match=re.escape("model.covariance_type='full', but this fit has model.covariance_type='diag'"),
    ):
        fit_em(GaussianMixtureModel(K, "diag", 1e-6), data, None, max_iter=4, split_every=2, checkpoint=ckpt)
    with pytest.raises(
        CheckpointMismatchError, match=re.escape("config.split_every=2, but this fit has config.split_every=3")
    ):
        fit(data, ckpt, split_every=3)
    # Refusals change nothing: the checkpoint still resumes to the oracle.
    assert Checkpoint(ckpt).run(0).iterations() == [2, 3]
    result = fit(data, ckpt)
    assert result.resumed_from == 3
    assert_same_result(result, oracle[0])


def test_overwrite_starts_fresh_on_other_data(data, interrupted_at_5, tmp_path, seed):
    ckpt = str(tmp_path / "run.zarr")
    shutil.copytree(interrupted_at_5, ckpt)
    other = str(tmp_path / "other.zarr")
    write_mixture_zarr(other, N_SAMPLES, N_FEATURES, K, seed=seed + 7, chunk_rows=CHUNK_ROWS)
    expected = fit(other)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit(other, ckpt, overwrite=True)
    assert result.resumed_from == 0
    assert_same_result(result, expected)
    assert Checkpoint(ckpt).metadata()["data"] == {
        k: v for k, v in as_source(other).fingerprint().items() if k != "location"
    }


def test_overwrite_on_same_data_ignores_the_old_iterations(data, interrupted_at_5, oracle, tmp_path):
    ckpt = str(tmp_path / "run.zarr")
    shutil.copytree(interrupted_at_5, ckpt)
    _nan_parameter(iteration_dir(ckpt, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit(data, ckpt, overwrite=True)
    assert result.resumed_from == 0
    assert_same_result(result, oracle[0])


# -- keep_last, checkpoint_every, finished fits --------------------------------------------


@pytest.mark.parametrize(("every", "keep"), [(1, 2), (3, 2), (3, 100), (1, 1), (4, 1)])
def test_keep_last_and_checkpoint_every(data, oracle, tmp_path, every, keep):
    ckpt = str(tmp_path / "run.zarr")
    run = Checkpoint(ckpt).run(0)
    kept_after = {}
    fit(
        data,
        ckpt,
        checkpoint_every=every,
        keep_last=keep,
        callback=lambda rec, params: kept_after.__setitem__(rec.iteration, run.iterations()),
    )
    for i in range(1, MAX_ITER + 1):
        committed = [n for n in range(i + 1) if n % every == 0 or n == MAX_ITER]  # 0: the start
        assert kept_after[i] == committed[-keep:], i
    for n in run.iterations():
        state = run.read(n)
        for name in PARAM_NAMES:
            expected = oracle[1][n][name] if n else make_init(data)().to_arrays()[name]
            assert_bitwise(state.params[name], expected)
        assert list(state.history["log_likelihood"]) == lls(oracle[0])[:n]
        assert state.finished == (n == MAX_ITER)


def test_resume_with_checkpoint_every_goes_back_to_last_multiple(data, oracle, tmp_path, no_warnings):
    ckpt = str(tmp_path / "run.zarr")
    interrupted_fit(data, ckpt, 5, checkpoint_every=3)
    assert Checkpoint(ckpt).run(0).iterations() == [0, 3]
    result = fit(data, ckpt, checkpoint_every=3)
    assert result.resumed_from == 3
    assert_same_result(result, oracle[0])
    assert Checkpoint(ckpt).run(0).iterations() == [6, 8]


def test_resume_after_finished_fit_makes_no_data_pass(data, oracle, tmp_path, monkeypatch, no_warnings):
    ckpt = str(tmp_path / "run.zarr")
    first = fit(data, ckpt)
    assert_same_result(first, oracle[0])

    def no_pass(*args, **kwargs):
        raise AssertionError("a finished checkpoint must not read the data again")

    monkeypatch.setattr(FitSession, "stats", no_pass)
    monkeypatch.setattr(FitSession, "blocks", no_pass)
    called = []
    result = fit(data, ckpt, callback=lambda rec, params: called.append(rec))
    assert called == []
    assert result.resumed_from == result.n_iter == MAX_ITER
    assert_same_result(result, oracle[0])


def test_converged_fit_resumes_as_converged(data, tmp_path, no_warnings, monkeypatch):
    ckpt = str(tmp_path / "run.zarr")
    expected = fit(data, max_iter=100, tol=1e-3)
    assert expected.converged
    assert expected.n_iter < 100
    first = fit(data, ckpt, max_iter=100, tol=1e-3)
    assert_same_result(first, expected)
    state = Checkpoint(ckpt).run(0).latest()
    assert state.converged
    assert state.finished
    assert state.iteration == expected.n_iter
    monkeypatch.setattr(FitSession, "stats", None)
    again = fit(data, ckpt, max_iter=100, tol=1e-3)
    assert again.resumed_from == expected.n_iter
    assert_same_result(again, expected)


# -- fsspec locations ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["path", "pathlike", "file-url", "memory"])
def test_resume_on_fsspec_locations(data, oracle, tmp_path, kind, no_warnings):
    name = f"run-{uuid.uuid4().hex}.zarr"
    location = {
        "path": str(tmp_path / name),
        "pathlike": tmp_path / name,
        "file-url": (tmp_path / name).as_uri(),
        "memory": f"memory://daskem-tests/{name}",
    }[kind]
    try:
        interrupted_fit(data, location, 4)
        run = Checkpoint(location).run(0)
        assert run.iterations() == [3, 4]
        assert run.pointer() == 4
        result = fit(data, location)
        assert result.resumed_from == 4
        assert_same_result(result, oracle[0])
        assert run.iterations() == [MAX_ITER - 1, MAX_ITER]
        if kind != "memory":
            # Everything landed in the directory itself.
            assert (tmp_path / name / "runs" / "0" / "iterations" / str(MAX_ITER) / "zarr.json").is_file()
    finally:
        if kind == "memory":
            fs = fsspec.filesystem("memory")
            if fs.exists(f"/daskem-tests/{name}"):
                fs.rm(f"/daskem-tests/{name}", recursive=True)


def test_memory_checkpoint_damage_is_detected(data, oracle, no_warnings):
    location = f"memory://daskem-tests/run-{uuid.uuid4().hex}.zarr"
    fs, root = fsspec.core.url_to_fs(location)
    try:
        interrupted_fit(data, location, 4)
        fs.rm(f"{root}/runs/0/iterations/4/means/c/0/0")
        with pytest.warns(CorruptCheckpointWarning, match=r"iteration 4 .*array 'means' does not match its digest"):
            result = fit(data, location)
        assert result.resumed_from == 3
        assert_same_result(result, oracle[0])
    finally:
        fs.rm(root, recursive=True)


# -- the estimator -------------------------------------------------------------------------


def _estimator(**kw):
    return GaussianMixture(**{"n_components": K, "random_state": 0, "max_iter": MAX_ITER, "tol": 0.0, **kw})


def _fit_interrupted(est, data_path, after_calls):
    calls = {"n": 0}

    def callback(rec, params):
        calls["n"] += 1
        if calls["n"] == after_calls:
            raise Interrupted

    with pytest.raises(Interrupted):
        est.fit(data_path, callback=callback)


def assert_same_estimator(est, expected):
    for attr in EST_ATTRS:
        assert_bitwise(getattr(est, attr), getattr(expected, attr))
    assert est.n_iter_ == expected.n_iter_
    assert est.lower_bounds_ == expected.lower_bounds_
    assert est.lower_bound_ == expected.lower_bound_
    assert est.converged_ == expected.converged_


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize(("n_init", "after_calls"), [(1, 3), (2, MAX_ITER + 5)])
def test_estimator_resume_is_bitwise_equal(data, tmp_path, n_init, after_calls):
    expected = _estimator(n_init=n_init).fit(data)
    ckpt = str(tmp_path / "run.zarr")
    _fit_interrupted(_estimator(n_init=n_init, checkpoint=ckpt), data, after_calls)
    assert Checkpoint(ckpt).runs() == list(range(n_init))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = _estimator(n_init=n_init, checkpoint=ckpt).fit(data)
    assert_same_estimator(est, expected)
    assert_same_estimator(daskem.load(ckpt), expected)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_random_state_none_resumes_the_same_initialisation(data, tmp_path):
    ckpt = str(tmp_path / "run.zarr")
    _fit_interrupted(_estimator(random_state=None, checkpoint=ckpt), data, 3)
    entropy = Checkpoint(ckpt).metadata()["random"]["entropy"]
    assert Checkpoint(ckpt).metadata()["config"]["random_state"] is None
    est = _estimator(random_state=None, checkpoint=ckpt).fit(data)
    assert_same_estimator(est, _estimator(random_state=entropy).fit(data))


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_mismatch_and_overwrite_checkpoint(data, tmp_path):
    ckpt = str(tmp_path / "run.zarr")
    _fit_interrupted(_estimator(checkpoint=ckpt), data, 3)
    with pytest.raises(
        CheckpointMismatchError, match=re.escape("config.random_state=0, but this fit has config.random_state=1")
    ):
        _estimator(random_state=1, checkpoint=ckpt).fit(data)
    with pytest.raises(
        CheckpointMismatchError, match=re.escape("model.reg_covar=1e-06, but this fit has model.reg_covar=0.001")
    ):
        _estimator(reg_covar=1e-3, checkpoint=ckpt).fit(data)
    with pytest.raises(
        CheckpointMismatchError,
        match=re.escape("config.init_params='kmeans', but this fit has config.init_params='random'"),
    ):
        _estimator(init_params="random", checkpoint=ckpt).fit(data)
    est = _estimator(random_state=1, checkpoint=ckpt, overwrite_checkpoint=True).fit(data)
    assert_same_estimator(est, _estimator(random_state=1).fit(data))
    assert Checkpoint(ckpt).metadata()["config"]["random_state"] == 1


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_load_iteration_and_corrupt_newest(data, tmp_path):
    per_iteration = {}
    expected = _estimator().fit(
        data, callback=lambda rec, params: per_iteration.__setitem__(rec.iteration, params.to_arrays())
    )
    ckpt = str(tmp_path / "run.zarr")
    _fit_interrupted(_estimator(checkpoint=ckpt, keep_last=3), data, 5)
    for n, loaded in [(5, daskem.load(ckpt)), (5, daskem.load(ckpt, iteration=5)), (3, daskem.load(ckpt, iteration=3))]:
        for name in PARAM_NAMES:
            assert_bitwise(getattr(loaded, f"{name}_"), per_iteration[n][name])
        assert loaded.n_iter_ == n
        assert loaded.lower_bounds_ == expected.lower_bounds_[:n]
        assert loaded.converged_ is False
    with pytest.raises(StoreError, match=r"Iteration 2 is not kept .* kept iterations: \[3, 4, 5\]"):
        daskem.load(ckpt, iteration=2)
    _nan_parameter(iteration_dir(ckpt, 5))
    with pytest.warns(CorruptCheckpointWarning, match=r"iteration 5 .*'means' holds NaN"):
        loaded = daskem.load(ckpt)
    assert loaded.n_iter_ == 4
    assert_bitwise(loaded.means_, per_iteration[4]["means"])
    with (
        pytest.raises(StoreError, match=r"iteration 5 .*'means' holds NaN"),
        pytest.warns(CorruptCheckpointWarning, match=r"iteration 5 .*'means' holds NaN"),
    ):
        daskem.load(ckpt, iteration=5)


# -- a new process with no cluster reads the checkpoint -------------------------------------


LOAD_SCRIPT = """
import json, sys
import daskem
from daskem.em.session import current_client
ATTRS = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
out = {}
for key, kw in [("latest", {}), ("iteration", {"iteration": int(sys.argv[2])})]:
    m = daskem.load(sys.argv[1], **kw)
    out[key] = {a: getattr(m, a).tobytes().hex() for a in ATTRS}
    out[key]["n_iter"] = m.n_iter_
    out[key]["lower_bounds"] = [v.hex() for v in m.lower_bounds_]
out["client"] = current_client() is not None
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_new_process_inspects_and_loads_without_cluster(data, tmp_path):
    per_iteration = {}
    expected = _estimator().fit(
        data, callback=lambda rec, params: per_iteration.__setitem__(rec.iteration, params.to_arrays())
    )
    ckpt = str(tmp_path / "run.zarr")
    _fit_interrupted(_estimator(checkpoint=ckpt), data, 6)
    cli = Path(sys.executable).with_name("daskem")
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER_ADDRESS": ""}
    shown = subprocess.run(
        [str(cli), "inspect", ckpt, "--json"], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    summary = json.loads(shown.stdout)
    assert summary["location"] == data
    assert summary["model"] == {"model": "gmm", "n_components": K, "covariance_type": "full", "reg_covar": 1e-6}
    assert summary["data"]["shape"] == [N_SAMPLES, N_FEATURES]
    assert summary["runs"] == [
        {
            "run": 0,
            "iterations": 6,
            "converged": False,
            "finished": False,
            "log_likelihood": expected.lower_bounds_[5],
            "kept": [5, 6],
        }
    ]
    assert [row["iteration"] for row in summary["history"]] == list(range(1, 7))
    assert [row["log_likelihood"] for row in summary["history"]] == expected.lower_bounds_[:6]
    assert summary["history"][0]["change"] is None
    assert summary["estimator"]["kind"] == "GaussianMixture"

    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, ckpt, "5"], capture_output=True, text=True, timeout=120, check=True, env=env
    )
    out = json.loads(loaded.stdout)
    assert out["client"] is False
    in_process = {6: daskem.load(ckpt), 5: daskem.load(ckpt, iteration=5)}
    for key, n in [("latest", 6), ("iteration", 5)]:
        for attr in EST_ATTRS:
            assert out[key][attr] == getattr(in_process[n], attr).tobytes().hex()
        for name in PARAM_NAMES:
            assert bytes.fromhex(out[key][f"{name}_"]) == per_iteration[n][name].tobytes()
        assert out[key]["n_iter"] == n
        assert [float.fromhex(v) for v in out[key]["lower_bounds"]] == expected.lower_bounds_[:n]
