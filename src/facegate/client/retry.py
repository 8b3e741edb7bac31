"""When and how long the client waits before sending a call again (tenacity does the looping).

- 429 and 503 are retried for every call: the server refused before doing anything. The wait is
  the answer's `Retry-After` plus up to a quarter more, so that clients refused together do not
  come back together; never less, since sooner would only be refused again. A `Retry-After` over
  `max_wait` is not waited for: the error is raised at once, with its `retry_after`.
- A connection that failed or broke is retried only for idempotent calls (`Call.idempotent`): the
  server may have done a `register` whose answer was lost. The wait grows exponentially, jittered.
- A timeout is not retried: the server is working on the request, and would be given it again.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from facegate.client.errors import NetworkError, RequestTimeoutError, RetryableError

logger = logging.getLogger(__name__)

_JITTER = 0.25  # the most a Retry-After wait is lengthened, as a fraction of it


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 3
    max_wait: float = 30.0  # the longest single wait, Retry-After included
    backoff: float = 0.5  # the first wait after a connection error (at most; it doubles each time)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 (no retries) or more")

    def tenacity_options(self, idempotent: bool) -> dict[str, Any]:
        """Keyword arguments of `tenacity.Retrying` / `AsyncRetrying` for a call."""
        return {
            "stop": stop_after_attempt(self.max_retries + 1),
            "retry": retry_if_exception(lambda exc: self._retries(exc, idempotent)),
            "wait": self._wait,
            "before_sleep": _log_retry,
            "reraise": True,  # the caller sees the last FaceGateError, not tenacity's RetryError
        }

    def _retries(self, exc: BaseException, idempotent: bool) -> bool:
        if isinstance(exc, RetryableError):
            return exc.retry_after is None or exc.retry_after <= self.max_wait
        return isinstance(exc, NetworkError) and not isinstance(exc, RequestTimeoutError) and idempotent

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return exc.retry_after * random.uniform(1.0, 1.0 + _JITTER)
        return wait_random_exponential(multiplier=self.backoff, max=self.max_wait)(state)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    logger.info("attempt %d failed (%s); retrying in %.1f s", state.attempt_number, exc, wait)
