#!/usr/bin/env bash
# Runs the linters and the test suite, installing what they need first.
#   ./test.sh           ruff, mypy and the whole suite (the README test command; CI runs it)
#   ./test.sh --quick   ruff, mypy and the tests not marked `slow`: the quick loop while developing
# Other arguments go to pytest (e.g. ./test.sh -k detect; ./test.sh -n 0 runs in one process).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
selection=()
if [ "${1:-}" = --quick ]; then
    shift
    selection=(-m "not slow")
fi
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/ruff format --check src tests benchmarks scripts
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet  # the site in docs/: no broken link or page
# mypy (src, with the settings in pyproject.toml) runs beside pytest, whose workers spend much of
# their time waiting for servers and browsers; its report follows pytest's. Its cache is per user,
# as pip's (mypy checks each entry against the file's contents): a fresh clone's check takes a
# second, not twenty.
mypy_log=$(mktemp)
trap 'rm -f "$mypy_log"' EXIT
.venv/bin/mypy --cache-dir "${XDG_CACHE_HOME:-$HOME/.cache}/facegate/mypy" >"$mypy_log" 2>&1 &
mypy_pid=$!
# Two workers per core (at most 8): the suite spends most of its time waiting for servers to start,
# browsers to draw and images to build (one process used a quarter of the CPU it was given), not
# computing. pyproject.toml's addopts give each worker whole modules, slow ones first.
workers=$(( $(nproc) * 2 ))
pytest_status=0
.venv/bin/python -m pytest -n "$(( workers < 8 ? workers : 8 ))" "${selection[@]}" "$@" || pytest_status=$?
mypy_status=0
wait "$mypy_pid" || mypy_status=$?
cat "$mypy_log"
if [ "$mypy_status" -ne 0 ]; then
    echo "mypy failed (exit $mypy_status)" >&2
fi
if [ "$pytest_status" -ne 0 ]; then exit "$pytest_status"; fi
exit "$mypy_status"
