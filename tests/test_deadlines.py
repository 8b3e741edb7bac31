"""The request time budget (`RequestDeadline`): a 504 in JSON when a request runs over it."""

from __future__ import annotations

import time

import anyio
from fastapi.testclient import TestClient
from starlette.types import Receive, Scope, Send

from facegate.api.middleware import RequestDeadline


async def _sleep_then_answer(scope: Scope, receive: Receive, send: Send) -> None:
    await anyio.sleep(30)


async def _answer_slowly(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await anyio.sleep(0.5)
    await send({"type": "http.response.body", "body": b"complete"})


async def _two_thread_steps(scope: Scope, receive: Receive, send: Send) -> None:
    await anyio.to_thread.run_sync(time.sleep, 0.6)
    await anyio.to_thread.run_sync(time.sleep, 3)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"late"})


def test_a_request_over_its_time_budget_gets_504_json() -> None:
    started = time.monotonic()
    response = TestClient(RequestDeadline(_sleep_then_answer, seconds=0.2)).get("/")
    assert response.status_code == 504 and "0.2 s" in response.json()["detail"]
    assert time.monotonic() - started < 5


def test_a_started_response_is_not_cut_off() -> None:
    response = TestClient(RequestDeadline(_answer_slowly, seconds=0.2)).get("/")
    assert response.status_code == 200 and response.content == b"complete"


def test_the_budget_lets_a_thread_finish_its_step_and_skips_the_rest() -> None:
    # Threads cannot be interrupted: the 504 comes when the step under way is done, not before.
    started = time.monotonic()
    response = TestClient(RequestDeadline(_two_thread_steps, seconds=0.1)).get("/")
    assert response.status_code == 504
    assert 0.5 < time.monotonic() - started < 2.5
