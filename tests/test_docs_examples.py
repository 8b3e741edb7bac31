"""Every shell and Python example of README.md and docs/ runs against a live server, as a reader
pastes it: from a folder beside `shared/` (the photos at ../shared/data/faces), with the key in
data/api_key and in $KEY, $PHOTOS set as Getting started sets it, and 127.0.0.1:8000 the server's
address. A `curl` that gets an HTTP error fails its example. Each example starts on an empty gallery.

An example that cannot run here says why on the line before its fence, `<!-- untested: why -->`;
every other ```bash and ```python block runs, so a new example is tested unless it says otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from facegate.client import FaceGateClient
from tests.data import REPO, SHARED
from tests.servers import api_server

pytestmark = pytest.mark.slow

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(bash|python)\n(.*?)^```$", re.S | re.M)
UNTESTED = re.compile(r"<!-- untested: \S.* -->\n\Z")
DOCUMENTED_ADDRESS = "127.0.0.1:8000"
TOKEN = "docs-" + uuid.uuid4().hex
CURL_FAILS = """curl() {
    case " $* " in
    *" -f "* | *" -sf "* | *" --fail "*) command curl "$@" ;;
    *) command curl --fail-with-body "$@" ;;
    esac
}
"""
RUNNERS = {
    # `set -euo pipefail` as a careful reader's shell; curl fails on an HTTP error (and says why),
    # unless the example already asks for that with -f (curl refuses both at once).
    "bash": ["bash", "-euo", "pipefail", "-c", CURL_FAILS + "{code}"],
    "python": [sys.executable, "-c", "{code}"],
}


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    language: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def examples() -> tuple[list[Example], list[Example]]:
    """(to run, marked untested) over every page."""
    tested, untested = [], []
    for page in PAGES:
        text = page.read_text()
        for match in FENCE.finditer(text):
            example = Example(
                page=page.relative_to(REPO).as_posix(),
                line=text.count("\n", 0, match.start()) + 1,
                language=match[1],
                code=match[2],
            )
            (untested if UNTESTED.search(text[: match.start()]) else tested).append(example)
    return tested, untested


TESTED, _ = examples()


@dataclass(frozen=True)
class Reader:
    url: str
    folder: Path  # where the reader pastes: a clone's root, beside shared/


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reader]:
    root = tmp_path_factory.mktemp("reader")
    (root / "shared").symlink_to(SHARED)
    folder = root / "clone"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "api_key").write_text(TOKEN + "\n")
    with api_server(tmp_path_factory.mktemp("docs-api"), TOKEN) as url:
        yield Reader(url, folder)


def empty_the_gallery(url: str) -> None:
    with FaceGateClient(url, api_key=TOKEN) as client:
        for collection in client.collections().collections:
            while users := client.users(limit=100, collection=collection.name).users:
                for user in users:
                    client.delete_user(user.id, collection=collection.name)
            if collection.name != "default":
                client.delete_collection(collection.name)


@pytest.mark.parametrize("example", TESTED, ids=lambda example: example.id)
def test_example_runs_against_a_live_server(example: Example, reader: Reader) -> None:
    empty_the_gallery(reader.url)
    code = example.code.replace(DOCUMENTED_ADDRESS, reader.url.removeprefix("http://"))
    command = [part.replace("{code}", code) for part in RUNNERS[example.language]]
    env = {
        **os.environ,
        "KEY": TOKEN,
        "PHOTOS": "../shared/data/faces",
        "PYTHONPATH": str(REPO / "src"),  # this checkout's facegate.client
    }
    ran = subprocess.run(
        command, cwd=reader.folder, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert ran.returncode == 0, (
        f"{example.id}:\n{example.code}\n--- stdout\n{ran.stdout}\n--- stderr\n{ran.stderr}"
    )
