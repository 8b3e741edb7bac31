"""Batching across requests (`facegate.batching.MicroBatcher`), driven by a fake session: a plain
callable standing in for ONNX Runtime, recording the batches it was given."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from facegate.batching import MicroBatcher

# Long enough that every submission of a test arrives before a batch closes by time: the batches
# these tests expect close on their row count.
PATIENT = 30.0


class FakeModel:
    """One output row per input row (each row's sum and its first value); refuses negative rows."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self._lock = threading.Lock()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        with self._lock:
            self.batches.append(len(rows))
        if (rows < 0).any():
            raise ValueError("negative input")
        return self.expected(rows)

    @staticmethod
    def expected(rows: np.ndarray) -> np.ndarray:
        flat = rows.reshape(len(rows), -1).astype(np.float64)
        return np.stack([flat.sum(axis=1), flat[:, 0]], axis=1)


@pytest.fixture
def model() -> FakeModel:
    return FakeModel()


@pytest.fixture
def batcher_of(model: FakeModel) -> Iterator[Callable[..., MicroBatcher]]:
    made: list[MicroBatcher] = []

    def make(wait: float, max_rows: int = 64) -> MicroBatcher:
        made.append(MicroBatcher(model, wait, max_rows))
        return made[-1]

    yield make
    for batcher in made:
        batcher.close()


def caller_rows(caller: int, count: int) -> np.ndarray:
    """Rows no other caller submits: every value encodes the caller."""
    return np.full((count, 2, 3), caller * 10 + 1, np.int64) + np.arange(count)[:, None, None]


def run_concurrently(
    batcher: MicroBatcher, submissions: list[np.ndarray]
) -> list[np.ndarray | BaseException]:
    def call(rows: np.ndarray) -> np.ndarray | BaseException:
        try:
            return batcher(rows)
        except Exception as error:
            return error

    with ThreadPoolExecutor(len(submissions)) as pool:
        return list(pool.map(call, submissions))


def test_concurrent_callers_share_one_run_and_get_their_own_rows(
    model: FakeModel, batcher_of: Callable[..., MicroBatcher]
) -> None:
    submissions = [caller_rows(caller, 1 + caller % 3) for caller in range(8)]
    total = sum(len(rows) for rows in submissions)
    results = run_concurrently(batcher_of(PATIENT, max_rows=total), submissions)
    assert model.batches == [total]  # one run for all of them
    for rows, result in zip(submissions, results, strict=True):
        np.testing.assert_array_equal(result, FakeModel.expected(rows))  # as unbatched, not mixed


def test_many_callers_in_many_batches_never_get_each_others_rows(
    model: FakeModel, batcher_of: Callable[..., MicroBatcher]
) -> None:
    rng = np.random.default_rng(0)
    submissions = [caller_rows(caller, int(rng.integers(1, 6))) for caller in range(64)]
    results = run_concurrently(batcher_of(0.002, max_rows=16), submissions)
    for rows, result in zip(submissions, results, strict=True):
        np.testing.assert_array_equal(result, FakeModel.expected(rows))
    assert sum(model.batches) == sum(len(rows) for rows in submissions)


def test_a_batch_closes_at_max_rows(model: FakeModel, batcher_of: Callable[..., MicroBatcher]) -> None:
    run_concurrently(batcher_of(PATIENT, max_rows=4), [caller_rows(caller, 1) for caller in range(12)])
    assert model.batches == [4, 4, 4]


def test_a_lone_caller_waits_at_most_the_wait(
    model: FakeModel, batcher_of: Callable[..., MicroBatcher]
) -> None:
    wait = 0.05
    batcher = batcher_of(wait)
    started = time.monotonic()
    result = batcher(caller_rows(1, 3))
    elapsed = time.monotonic() - started
    np.testing.assert_array_equal(result, FakeModel.expected(caller_rows(1, 3)))
    assert model.batches == [3]
    assert elapsed < wait + 2.0  # generous: the bound is the wait, not the machine's speed


def test_an_error_reaches_only_the_caller_that_caused_it(
    model: FakeModel, batcher_of: Callable[..., MicroBatcher]
) -> None:
    submissions = [caller_rows(caller, 2) for caller in range(4)]
    submissions[2] = -submissions[2]
    results = run_concurrently(batcher_of(PATIENT, max_rows=8), submissions)
    assert isinstance(results[2], ValueError) and "negative input" in str(results[2])
    for caller in (0, 1, 3):
        np.testing.assert_array_equal(results[caller], FakeModel.expected(submissions[caller]))
    assert model.batches[0] == 8  # tried together first, then one by one


def test_a_model_that_drops_rows_is_an_error_not_a_misattribution(
    batcher_of: Callable[..., MicroBatcher],
) -> None:
    batcher = MicroBatcher(lambda rows: rows[:1].reshape(1, -1), PATIENT, max_rows=4)
    try:
        results = run_concurrently(batcher, [caller_rows(caller, 2) for caller in range(2)])
    finally:
        batcher.close()
    # Together, the rows cannot be handed out; alone, each caller gets what the model returned.
    for caller, result in enumerate(results):
        np.testing.assert_array_equal(result, caller_rows(caller, 2)[:1].reshape(1, -1))


def test_close_answers_what_was_submitted_then_refuses(model: FakeModel) -> None:
    running, release = threading.Event(), threading.Event()

    def gated(rows: np.ndarray) -> np.ndarray:
        running.set()
        release.wait(timeout=PATIENT)
        return model(rows)

    batcher = MicroBatcher(gated, PATIENT, max_rows=1)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(batcher, caller_rows(0, 1))
        assert running.wait(timeout=PATIENT)  # the worker is busy with the first caller
        queued = [pool.submit(batcher, caller_rows(caller, 1)) for caller in (1, 2)]
        while batcher._queue.qsize() < 2:  # both submitted behind it
            time.sleep(0.005)
        closing = pool.submit(batcher.close)
        release.set()
        results = [future.result(timeout=PATIENT) for future in [first, *queued]]
        closing.result(timeout=PATIENT)
    for caller, result in enumerate(results):
        np.testing.assert_array_equal(result, FakeModel.expected(caller_rows(caller, 1)))
    with pytest.raises(RuntimeError, match="closed"):
        batcher(caller_rows(0, 1))
    batcher.close()  # a second close is harmless
    assert not batcher._worker.is_alive()


def test_invalid_settings_are_refused(model: FakeModel) -> None:
    with pytest.raises(ValueError):
        MicroBatcher(model, -1.0)
    with pytest.raises(ValueError):
        MicroBatcher(model, 0.001, max_rows=0)
