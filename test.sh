#!/usr/bin/env bash
# Runs the linters and the whole test suite, installing what they need first.
# Extra arguments go to pytest (e.g. ./test.sh -k detect).
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh test
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/ruff format --check src tests benchmarks scripts
.venv/bin/mypy  # src, with the settings in pyproject.toml
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet  # the site in docs/: no broken link or page
exec .venv/bin/python -m pytest "$@"
