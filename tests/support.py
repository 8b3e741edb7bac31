"""Small helpers shared by several test modules."""

from __future__ import annotations


class FakeClock:
    """A clock that moves only when a test moves it: rate limits then do not depend on speed."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now
