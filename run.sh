#!/usr/bin/env bash
# Runs FaceGate: the API on http://127.0.0.1:8000 and the web UI on http://127.0.0.1:8501, on an
# embedded PostgreSQL in ./data (or DATABASE_URL). Extra arguments go to `facegate up`.
set -euo pipefail
cd "$(dirname "$0")"
scripts/setup.sh run
exec .venv/bin/facegate up "$@"
