"""The command line as users run it: stopping cleanly, and `facegate enroll`'s report."""

from __future__ import annotations

import csv
import shutil
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import psutil
import pytest

from tests.data import FACES
from tests.servers import API_START_TIMEOUT, child, clean_env, free_port, postmasters, wait_until_up

KEY = "cli-test-key"
PORTRAITS = FACES / "portraits"


def facegate(*args: str) -> list[str]:
    return [sys.executable, "-m", "facegate", *args]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("command", ["ui", "up", "serve"])
def test_sigterm_stops_every_child_and_frees_the_ports(
    command: str, tmp_path: Path, pgdata_dir: Path
) -> None:
    api_port, ui_port = free_port(), free_port()
    api_health, ui_health = (
        f"http://127.0.0.1:{api_port}/health",
        f"http://127.0.0.1:{ui_port}/_stcore/health",
    )
    argv, ready, ports = {
        "ui": (["ui", "--port", str(ui_port)], [ui_health], [ui_port]),
        "up": (
            ["up", "--api-port", str(api_port), "--ui-port", str(ui_port)],
            [api_health, ui_health],
            [api_port, ui_port],
        ),
        "serve": (["serve", "--port", str(api_port), "--workers", "2"], [api_health], [api_port]),
    }[command]
    data_dir = pgdata_dir  # outside pytest's folder, which a concurrent pytest session makes private
    env = clean_env(APP_TOKEN=KEY, FACEGATE_DATA_DIR=str(data_dir))
    with child("facegate", facegate(*argv), tmp_path, env) as server:
        for url in ready:
            wait_until_up(url, server, API_START_TIMEOUT)
        family = psutil.Process(server.process.pid).children(recursive=True)
        # `ui` becomes Streamlit itself (exec: a container's PID 1 must get docker stop's SIGTERM);
        # `up` and `serve` run their servers in child processes.
        assert family or command == "ui", "the command runs its servers in child processes"
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=60)
    _, alive = psutil.wait_procs(family, timeout=30)
    for orphan in alive:  # a failing run must not leave them to the next tests
        orphan.kill()
    assert [process.pid for process in alive] == []
    assert not any(listening(port) for port in ports)
    # PostgreSQL is no child (pg_ctl daemonises it) and gets the same 30 s: `pg_ctl stop -w` returns
    # once the server's pid file is gone, a moment before its process is (a loaded machine found it).
    _, lingering = psutil.wait_procs(postmasters(data_dir), timeout=30)
    assert lingering == []
    log = server.log.read_text()
    # A quiet start: where the key is, said once; no initdb/pg_ctl transcripts, no platformdirs noise.
    assert log.count("API key") == (0 if command == "ui" else 1), log
    assert "Running commandline" not in log and "XDG_RUNTIME_DIR" not in log, log


@pytest.mark.slow
def test_enroll_names_each_skipped_photo_with_its_reason(tmp_path: Path, pgdata_dir: Path) -> None:
    people = tmp_path / "people"
    obama = people / "Barack_Obama"
    obama.mkdir(parents=True)
    shutil.copy(PORTRAITS / "Barack_Obama" / "fr_obama_small.jpg", obama / "good.jpg")
    (obama / "broken.jpg").write_bytes(b"not a photo at all")
    shutil.copy(FACES / "noface" / "mtcnn_no-faces.jpg", obama / "landscape.jpg")
    shutil.copy(FACES / "groups" / "fr_two_people.jpg", obama / "group.jpg")
    (people / "Nobody").mkdir()
    report = tmp_path / "skipped.csv"
    env = clean_env(APP_TOKEN=KEY, FACEGATE_DATA_DIR=str(pgdata_dir))
    done = subprocess.run(
        facegate("enroll", str(people), "--report", str(report)),
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=API_START_TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "people enrolled: 1" in done.stdout and "skipped: 4" in done.stdout
    lines = {line.split(": ", 1)[0].strip(): line for line in done.stdout.splitlines() if "skipped " in line}
    assert "unreadable image" in lines[f"skipped {obama / 'broken.jpg'}"]
    assert "no face" in lines[f"skipped {obama / 'landscape.jpg'}"]
    assert "2 faces" in lines[f"skipped {obama / 'group.jpg'}"]
    assert "no usable photo" in lines[f"skipped {people / 'Nobody'}"]
    with report.open() as handle:
        rows = {row["photo"]: row["reason"] for row in csv.DictReader(handle)}
    assert set(rows) == {str(obama / name) for name in ("broken.jpg", "landscape.jpg", "group.jpg")} | {
        str(people / "Nobody")
    }
    # The progress bar and the summary do not share lines: every summary line is whole.
    assert all(
        line.startswith(("people enrolled", "  skipped", "skipped photos"))
        for line in done.stdout.splitlines()
    )


@pytest.mark.slow
def test_recognize_names_the_enrolled_person_and_no_one_else(tmp_path: Path, pgdata_dir: Path) -> None:
    """`facegate recognize` decides as /recognize does (recognition.Recognizer): the enrolled man is
    named in another photo of him, a stranger is nobody."""
    obama = tmp_path / "people" / "Barack_Obama"
    obama.mkdir(parents=True)
    shutil.copy(PORTRAITS / "Barack_Obama" / "fr_obama_small.jpg", obama / "a.jpg")
    env = clean_env(APP_TOKEN=KEY, FACEGATE_DATA_DIR=str(pgdata_dir))
    run = partial(
        subprocess.run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=API_START_TIMEOUT
    )
    assert run(facegate("enroll", str(obama.parent))).returncode == 0
    another, stranger = (
        PORTRAITS / "Barack_Obama" / "fr_obama2.jpg",
        PORTRAITS / "Amy_Adams" / "openface_adams.jpg",
    )
    done = run(facegate("recognize", str(another), str(stranger)))
    assert done.returncode == 0, done.stderr
    verdicts = dict(zip(done.stdout.splitlines()[::2], done.stdout.splitlines()[1::2], strict=True))
    assert "] Barack Obama (distance" in verdicts[f"{another}: 1 face(s)"]
    assert "] unknown (nearest: distance" in verdicts[f"{stranger}: 1 face(s)"]


def test_enroll_pick_center_takes_the_face_nearest_the_centre_and_says_so(
    tmp_path: Path, pgdata_dir: Path
) -> None:
    people = tmp_path / "people"
    (people / "Barack_Obama").mkdir(parents=True)
    group = people / "Barack_Obama" / "group.jpg"
    shutil.copy(FACES / "groups" / "fr_obama_and_biden.jpg", group)
    env = clean_env(APP_TOKEN=KEY, FACEGATE_DATA_DIR=str(pgdata_dir))
    enroll = partial(
        subprocess.run, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=API_START_TIMEOUT
    )
    refused = enroll(facegate("enroll", str(people)))
    assert refused.returncode == 0, refused.stderr
    assert "people enrolled: 0" in refused.stdout and "faces of similar size" in refused.stdout
    done = enroll(facegate("enroll", str(people), "--pick", "center"))
    assert done.returncode == 0, done.stderr
    assert "people enrolled: 1" in done.stdout and "skipped: 0" in done.stdout
    (picked,) = [line for line in done.stdout.splitlines() if line.startswith("  picked")]
    assert str(group) in picked and "nearest the centre at [" in picked
