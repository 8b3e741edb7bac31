"""Batching across requests: the rows that concurrent callers submit within a few milliseconds go
through the model in one run.

On a GPU one small run is mostly launch overhead, so concurrent requests' crops are worth
gathering. On a CPU a run's time grows with its rows (6.3 ms a face at batch 8 against 7.4 ms at
batch 1, BENCHMARKS.md, Embeddings): gathering would add the wait to every request for little, and
concurrent requests already run side by side on the cores, so a CPU session never batches
(`uses_batching`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

BATCHED_PROVIDER = "CUDAExecutionProvider"
# A batch closes once it holds this many rows: 32 faces and their mirror images, the most the
# benchmark's 32 clients submit at once (benchmarks/gpu_bench.py; not yet measured on a GPU).
MAX_BATCH_ROWS = 64

Run = Callable[[np.ndarray], np.ndarray]


class Session(Protocol):
    """What `ModelRunner` needs of an ONNX Runtime InferenceSession."""

    def get_providers(self) -> list[str]: ...

    def run(self, output_names: None, input_feed: dict[str, np.ndarray]) -> Sequence[np.ndarray]: ...


@dataclass(slots=True)
class _Submission:
    rows: np.ndarray
    result: Future[np.ndarray] = field(default_factory=Future)


class MicroBatcher:
    """Runs `run` (rows in, one output row per input row) on several callers' rows at once.

    A worker thread takes the first waiting submission, gathers others for at most `wait`
    seconds or until `max_rows` rows, runs them as one batch and hands each caller its own rows.
    When a batch of several fails, each submission is run alone, so an error reaches only the
    caller whose rows caused it.
    """

    def __init__(self, run: Run, wait: float, max_rows: int = MAX_BATCH_ROWS, name: str = "batcher") -> None:
        if wait < 0 or max_rows < 1:
            raise ValueError(f"wait must be >= 0 and max_rows >= 1, got {wait} and {max_rows}")
        self._run = run
        self._wait = wait
        self._max_rows = max_rows
        self._queue: queue.SimpleQueue[_Submission | None] = queue.SimpleQueue()
        self._closing = threading.Lock()
        self._closed = False
        # A daemon: a process that never closes its models still exits.
        self._worker = threading.Thread(target=self._serve, name=name, daemon=True)
        self._worker.start()

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """`run(rows)`, possibly in a batch with other callers' rows; blocks until it is done."""
        submission = _Submission(rows)
        with self._closing:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            self._queue.put(submission)
        return submission.result.result()

    def close(self) -> None:
        """Answer what was submitted, then stop the worker; further calls raise RuntimeError."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
            self._queue.put(None)
        self._worker.join()

    def _serve(self) -> None:
        while (first := self._queue.get()) is not None:
            batch, stop = self._gather(first)
            self._answer(batch)
            if stop:
                return

    def _gather(self, first: _Submission) -> tuple[list[_Submission], bool]:
        """`first` and what else arrives within the wait, up to `max_rows` rows; True once closing."""
        batch, rows = [first], len(first.rows)
        deadline = time.monotonic() + self._wait
        while rows < self._max_rows:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            rows += len(item.rows)
        return batch, False

    def _answer(self, batch: list[_Submission]) -> None:
        if len(batch) == 1:
            self._run_alone(batch[0])
            return
        try:
            output = self._run(np.concatenate([item.rows for item in batch]))
            if len(output) != sum(len(item.rows) for item in batch):
                raise ValueError(
                    f"the model returned {len(output)} rows for {sum(len(i.rows) for i in batch)}"
                )
        except Exception:
            log.debug("a batch of %d submissions failed; running them one by one", len(batch), exc_info=True)
            for item in batch:
                self._run_alone(item)
            return
        start = 0
        for item in batch:
            item.result.set_result(output[start : start + len(item.rows)])
            start += len(item.rows)

    def _run_alone(self, item: _Submission) -> None:
        try:
            item.result.set_result(self._run(item.rows))
        except Exception as error:
            item.result.set_exception(error)


def uses_batching(providers: Sequence[str], wait: float) -> bool:
    """Whether a session on `providers` (in ONNX Runtime's order of preference) gathers concurrent
    callers' rows: only on CUDA, and only with a wait above 0."""
    return bool(providers) and providers[0] == BATCHED_PROVIDER and wait > 0


class ModelRunner:
    """One ONNX Runtime session with a single input, run on a batch of rows (its first output).

    On CUDA with `wait` > 0 concurrent callers share runs (`MicroBatcher`); elsewhere every call
    is a run of its own, exactly as `session.run`.
    """

    def __init__(self, session: Session, input_name: str, wait: float, name: str = "model") -> None:
        self.providers: tuple[str, ...] = tuple(session.get_providers())
        self._session = session
        self._input = input_name
        self._batcher = (
            MicroBatcher(self._run, wait, name=f"{name}-batcher")
            if uses_batching(self.providers, wait)
            else None
        )

    @property
    def batched(self) -> bool:
        return self._batcher is not None

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        if self._batcher is None:
            return self._run(rows)
        return self._batcher(rows)

    def _run(self, rows: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: np.ascontiguousarray(rows)})[0]

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()
