#!/usr/bin/env bash
# Runs FaceGate: the API on http://127.0.0.1:8000 and the web UI on http://127.0.0.1:8501, on an
# embedded PostgreSQL in ./data (or DATABASE_URL). Extra arguments go to `facegate up`.
# `./run.sh docs` serves the documentation site (docs/) on http://127.0.0.1:8001 instead.
set -euo pipefail
cd "$(dirname "$0")"
if [ "${1:-}" = docs ]; then
    shift
    scripts/setup.sh docs
    exec .venv/bin/mkdocs serve --dev-addr 127.0.0.1:8001 "$@"
fi
scripts/setup.sh run
exec .venv/bin/facegate up "$@"
