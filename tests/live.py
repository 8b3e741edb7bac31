"""Running the real service (uvicorn in a child process) for tests over real HTTP."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.servers import Child, clean_env, free_port, stop, wait_until_up


class LiveServer:
    """`facegate serve` in a child process, with `env` over a clean environment; a context manager."""

    def __init__(
        self, env: Mapping[str, str], log_path: Path, port: int | None = None, workers: int = 1
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = clean_env(**env)
        self.log_path = log_path
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120.0) -> LiveServer:
        command = [sys.executable, "-m", "facegate", "serve", "--port", str(self.port)]
        command += ["--workers", str(self.workers)]
        # Appended: a restarted server's log follows the first one's.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_up(f"{self.url}/health", Child("facegate serve", self.process, self.log_path), timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            stop(self.process, "facegate serve", sig)

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
